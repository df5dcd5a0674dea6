//! Plain HTTP on the hub's own port: `GET /metrics` (Prometheus text) and
//! `GET /healthz`. They are told apart from WebSocket upgrades by peeking
//! at the request line, so the upgrade path hands tungstenite an untouched
//! socket and pays one `peek`.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::metrics;
use crate::stats::Stats;

/// Where a new connection is going.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// The WebSocket path: tungstenite's handshake takes over.
    Upgrade,
    /// Any other path: 404, counted as a `path` rejection.
    NotFound,
    /// `GET /metrics`
    Metrics,
    /// `GET /healthz`
    Health,
}

/// Longest request line prefix we peek at; a WebSocket path longer than
/// this cannot be configured (see `Config::validate`).
pub(crate) const MAX_PEEK_BYTES: usize = 512;

/// Longest request head we read (and discard) before answering; browsers
/// and scrapers send far less.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Pause between peeks while a request line trickles in, so a slow client
/// costs a timer, not a spinning core. Real clients send the line in one
/// packet and never wait here.
const PEEK_PAUSE: Duration = Duration::from_millis(5);

/// Reads the request's path without consuming anything, and picks the
/// route. Anything that is not a request line (or not a GET) goes to the
/// WebSocket handshake, which rejects it.
pub(crate) async fn route(stream: &TcpStream, ws_path: &str) -> std::io::Result<Route> {
    let mut buf = [0u8; MAX_PEEK_BYTES];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let seen = &buf[..n];
        if !b"GET ".starts_with(&seen[..n.min(4)]) {
            return Ok(Route::Upgrade);
        }
        // The path ends at the query, the space before the version, or a
        // line end; until one of those arrived, wait for more bytes.
        let rest = seen.get(4..).unwrap_or_default();
        if let Some(end) = rest
            .iter()
            .position(|b| matches!(b, b'?' | b' ' | b'\r' | b'\n'))
        {
            return Ok(match &rest[..end] {
                path if path == ws_path.as_bytes() => Route::Upgrade,
                b"/metrics" => Route::Metrics,
                b"/healthz" => Route::Health,
                _ => Route::NotFound,
            });
        }
        if n == buf.len() {
            return Ok(Route::NotFound);
        }
        tokio::time::sleep(PEEK_PAUSE).await;
    }
}

/// Peeks at the whole request head (up to the blank line) without
/// consuming it, so the WebSocket handshake can still read it.
///
/// # Errors
/// EOF, a socket error, or a head over [`MAX_HEAD_BYTES`].
pub(crate) async fn peek_head(stream: &TcpStream) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; MAX_HEAD_BYTES];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if let Some(end) = buf[..n].windows(4).position(|w| w == b"\r\n\r\n") {
            buf.truncate(end + 4);
            return Ok(buf);
        }
        if n == buf.len() {
            return Err(std::io::Error::other("request head too large"));
        }
        tokio::time::sleep(PEEK_PAUSE).await;
    }
}

/// Refuses a handshake with `status` (and a one-line body) and closes.
pub(crate) async fn refuse(mut stream: TcpStream, status: u16, body: &str) -> std::io::Result<()> {
    read_head(&mut stream).await?;
    let reason = match status {
        401 => "Unauthorized",
        403 => "Forbidden",
        503 => "Service Unavailable",
        _ => "Refused",
    };
    write_response(
        &mut stream,
        &format!("{status} {reason}"),
        "text/plain",
        &format!("{body}\n"),
    )
    .await
}

async fn write_response(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\
         cache-control: no-store\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// Answers a plain HTTP request and closes the connection.
pub(crate) async fn respond(
    mut stream: TcpStream,
    route: Route,
    running: bool,
    stats: impl FnOnce() -> Stats,
) -> std::io::Result<()> {
    read_head(&mut stream).await?;
    let (status, content_type, body) = match route {
        Route::Metrics => ("200 OK", metrics::CONTENT_TYPE, metrics::render(&stats())),
        Route::Health if running => ("200 OK", "text/plain", "ok\n".to_owned()),
        Route::Health => (
            "503 Service Unavailable",
            "text/plain",
            "stopping\n".to_owned(),
        ),
        Route::Upgrade | Route::NotFound => {
            ("404 Not Found", "text/plain", "not found\n".to_owned())
        }
    };
    write_response(&mut stream, status, content_type, &body).await
}

/// Reads up to the blank line that ends the request head (requests here
/// have no body), so that closing does not reset the connection.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_HEAD_BYTES {
            return Err(std::io::Error::other("request head too large"));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&chunk[..n]);
    }
    Ok(())
}
