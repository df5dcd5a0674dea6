//! A client's byte stream, plain TCP or TLS over it, so that everything
//! above (the HTTP head, the upgrade, tungstenite, the frame writer, SSE)
//! is written once for both.
//!
//! TLS buffers what it encrypts: a write may leave bytes with rustls when
//! the socket is full, which go out only on a later write or a flush.
//! Every writer above therefore flushes when it is done (a no-op on plain
//! TCP).

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// One client's connection.
#[derive(Debug)]
pub(crate) enum ClientStream {
    /// A hub without `certfile`.
    Plain(TcpStream),
    /// After a completed TLS handshake. Boxed: rustls' connection state
    /// is a few KiB, and a plain connection should not pay for it.
    Tls(Box<TlsStream<TcpStream>>),
}

impl ClientStream {
    /// Reads what is there into `bytes`, growing it by up to `chunk`;
    /// `Ok(0)` is end of stream. A plain socket allocates nothing until
    /// it is readable, so that an idle connection costs its parked task
    /// only; TLS has its own buffers already.
    ///
    /// # Errors
    /// The socket's (or TLS') error.
    pub(crate) async fn read_some(
        &mut self,
        bytes: &mut Vec<u8>,
        chunk: usize,
    ) -> io::Result<usize> {
        match self {
            ClientStream::Plain(tcp) => loop {
                tcp.readable().await?;
                bytes.reserve(chunk);
                match tcp.try_read_buf(bytes) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    read => return read,
                }
            },
            ClientStream::Tls(tls) => {
                bytes.reserve(chunk);
                tls.read_buf(bytes).await
            }
        }
    }

    /// Writes `bytes` only as far as the socket takes them without
    /// waiting (a best-effort last word to a client being dropped).
    pub(crate) fn write_now(&mut self, bytes: &[u8]) {
        let _ = async {
            self.write_all(bytes).await?;
            self.flush().await
        }
        .now_or_never();
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            ClientStream::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            ClientStream::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            ClientStream::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    /// Both take a batch of frames in one call (`writev` on TCP, one run
    /// of records with TLS), which the frame writer relies on.
    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            ClientStream::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            ClientStream::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}
