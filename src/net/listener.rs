//! The listening socket and its accept loop: one task per accepted
//! connection, tracked so that `stop()` can wait for every one.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::core::error::Error;
use crate::net::connection;
use crate::net::Shared;

/// The log target (a Python logger name, `wshub.server`, once
/// through pyo3-log) this module's records have always had, kept apart from
/// the module's path so that moving code does not rename loggers.
const LOG_TARGET: &str = "wshub::server";

/// Backlog of the listening socket: enough for a burst of browsers
/// reconnecting at once after a deploy.
const LISTEN_BACKLOG: u32 = 4096;

/// Pause after `accept` fails (e.g. out of file descriptors), so the loop
/// does not spin while the condition lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

pub(crate) fn bind(host: &str, port: u16, reuse_port: bool) -> Result<TcpListener, Error> {
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|source| bind_error(host, port, source))?
        .next()
        .ok_or_else(|| {
            bind_error(
                host,
                port,
                std::io::Error::new(std::io::ErrorKind::NotFound, "host has no address"),
            )
        })?;
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .map_err(|source| bind_error(host, port, source))?;
    // SO_REUSEADDR only lets us rebind over TIME_WAIT leftovers of a
    // previous run; a port held by a live listener still fails.
    socket
        .set_reuseaddr(true)
        .and_then(|()| set_reuse_port(&socket, reuse_port))
        .and_then(|()| socket.bind(addr))
        .and_then(|()| socket.listen(LISTEN_BACKLOG))
        .map_err(|source| bind_error(host, port, source))
}

/// `SO_REUSEPORT`: every process that binds the port with it shares the
/// port, the kernel spreading new connections among them. (Validation
/// refuses `reuse_port` where this is not available.)
fn set_reuse_port(socket: &tokio::net::TcpSocket, reuse_port: bool) -> std::io::Result<()> {
    #[cfg(unix)]
    if reuse_port {
        return socket.set_reuseport(true);
    }
    let _ = (socket, reuse_port);
    Ok(())
}

pub(crate) fn bind_error(host: &str, port: u16, source: std::io::Error) -> Error {
    Error::Bind {
        addr: format!("{host}:{port}"),
        source,
    }
}

pub(crate) async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            () = shared.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                shared
                    .tracker
                    .spawn(connection::serve(Arc::clone(&shared), stream, peer));
            }
            Err(error) => {
                tracing::warn!(target: LOG_TARGET, %error, "accept failed");
                tokio::select! {
                    () = shared.shutdown.cancelled() => return,
                    () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => {}
                }
            }
        }
    }
}
