//! TLS for a hub started with `certfile`/`keyfile`: loading the PEM
//! files into a rustls server configuration, swapping it on
//! `reload_tls()`, and the TLS handshake of each accepted connection.
//!
//! The configuration sits behind an [`ArcSwap`]: a handshake takes the
//! one current when it starts and keeps it, so a reload never disturbs a
//! connection that is open or half-way through its handshake, and the
//! next handshake sees the new certificate.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::core::config::TlsFiles;
use crate::core::error::Error;

/// The first byte of every TLS connection: a handshake record. Anything
/// else is not TLS (most often plain HTTP on a TLS port), answered in
/// plain HTTP rather than with a TLS alert the client cannot read.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// The hub's TLS setup: where the files are and what they last held.
pub(crate) struct Tls {
    /// Read again by every reload.
    files: TlsFiles,
    /// The configuration new handshakes use.
    config: ArcSwap<ServerConfig>,
}

/// How one connection's TLS handshake ended.
pub(crate) enum Accepted {
    /// A TLS connection, ready for HTTP.
    Tls(Box<TlsStream<TcpStream>>),
    /// The client did not start with a TLS handshake: the socket, to be
    /// answered in plain HTTP.
    NotTls(TcpStream),
    /// The handshake failed (rustls sent an alert where it could).
    Failed(std::io::Error),
}

impl Tls {
    /// Reads `files`.
    ///
    /// # Errors
    /// [`Error::Tls`] naming the file and what is wrong with it.
    pub(crate) fn load(files: &TlsFiles) -> Result<Tls, Error> {
        Ok(Tls {
            config: ArcSwap::from_pointee(server_config(files)?),
            files: files.clone(),
        })
    }

    /// Reads the files again and, if they make a valid configuration,
    /// uses it for every handshake from now on. Open connections keep the
    /// session they have.
    ///
    /// # Errors
    /// [`Error::Tls`]; the configuration in use is then unchanged.
    pub(crate) fn reload(&self) -> Result<(), Error> {
        self.config.store(Arc::new(server_config(&self.files)?));
        Ok(())
    }

    /// Runs the TLS handshake on `tcp` with the current configuration.
    /// The caller bounds it in time (the handshake deadline).
    pub(crate) async fn accept(&self, tcp: TcpStream) -> Accepted {
        let mut first = [0u8; 1];
        match tcp.peek(&mut first).await {
            Ok(0) => {
                return Accepted::Failed(std::io::ErrorKind::UnexpectedEof.into());
            }
            Ok(_) if first[0] != TLS_HANDSHAKE_RECORD => return Accepted::NotTls(tcp),
            Ok(_) => {}
            Err(error) => return Accepted::Failed(error),
        }
        let acceptor = TlsAcceptor::from(self.config.load_full());
        match acceptor.accept(tcp).await {
            Ok(stream) => Accepted::Tls(Box::new(stream)),
            Err(error) => Accepted::Failed(error),
        }
    }
}

/// A server configuration from the certificate chain and key in `files`,
/// with the ring provider and rustls' safe defaults (TLS 1.2 and 1.3).
fn server_config(files: &TlsFiles) -> Result<ServerConfig, Error> {
    let certfile = files.certfile.display();
    let keyfile = files.keyfile.display();
    let certs = CertificateDer::pem_file_iter(&files.certfile)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| Error::Tls(format!("certfile {certfile}: {e}")))?;
    if certs.is_empty() {
        return Err(Error::Tls(format!(
            "certfile {certfile}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it"
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&files.keyfile)
        .map_err(|e| Error::Tls(format!("keyfile {keyfile}: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            Error::Tls(format!(
                "certfile {certfile} with keyfile {keyfile}: {e} (is the key the certificate's?)"
            ))
        })?;
    // The hub speaks HTTP/1.1 only (the WebSocket upgrade needs it).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(cert: &str, key: &str) -> TlsFiles {
        TlsFiles {
            certfile: cert.into(),
            keyfile: key.into(),
        }
    }

    #[test]
    fn missing_files_name_the_file() {
        let Err(Error::Tls(why)) = Tls::load(&files("/nonexistent/c.pem", "/nonexistent/k.pem"))
        else {
            panic!("a missing certfile must fail");
        };
        assert!(why.contains("certfile /nonexistent/c.pem"), "{why}");
    }

    #[test]
    fn a_file_without_pem_is_refused() {
        let dir = std::env::temp_dir().join(format!("wshub-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("empty.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let path = path.to_string_lossy().into_owned();
        let result = Tls::load(&files(&path, &path));
        std::fs::remove_dir_all(&dir).unwrap();
        let Err(Error::Tls(why)) = result else {
            panic!("a file without a certificate must fail");
        };
        assert!(why.contains("no PEM certificate"), "{why}");
    }
}
