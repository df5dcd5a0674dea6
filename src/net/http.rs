//! Plain HTTP on the hub's own port: reading a request head, routing it
//! (`GET /metrics`, `GET /healthz`, the browser client at
//! `<path>/client.js`, the WebSocket path), checking that a
//! request on the WebSocket path is a valid upgrade, and the answers that
//! end a connection (`/metrics`, `/healthz`, refusals with their status).
//!
//! The head is read into a buffer, each read awaiting the socket's
//! readiness, so a client that trickles its request (or stops half-way)
//! costs a parked task until the handshake deadline, not polling. Bytes the
//! client sent after the head are handed to the WebSocket stream.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::error::{Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::handshake::server::{create_response, Request, Response};
use tokio_tungstenite::tungstenite::http::{self, HeaderName, HeaderValue};

use crate::core::stats::{Rejection, Stats};
use crate::net::stream::ClientStream;
use crate::net::{client_js, metrics};

/// How much of a request head is read before answering 431: the
/// `max_handshake_bytes` and `max_headers` options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeadLimits {
    /// Longest request head (request line and headers).
    pub(crate) max_bytes: usize,
    /// Most header lines; more get 431 as soon as they arrive.
    pub(crate) max_headers: usize,
}

/// Bytes reserved per read while a head arrives: a typical head in one.
const READ_CHUNK_BYTES: usize = 2048;

/// After refusing a request, how long we keep reading (and discarding)
/// what the client still sends, so that closing with unread bytes does not
/// reset the connection before the client has read our answer.
const LINGER: Duration = Duration::from_millis(500);

/// At most this much is discarded while lingering; a client that sends
/// more is cut off.
const LINGER_BYTES: usize = 256 * 1024;

/// Where a new connection is going.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// The WebSocket path: checked as an upgrade.
    Upgrade,
    /// Any other path: 404, counted as a `path` rejection.
    NotFound,
    /// `GET /metrics`
    Metrics,
    /// `GET /healthz`
    Health,
    /// `GET <path>/client.js`: the browser client.
    ClientJs,
    /// `GET <path>/sse`: the feed as Server-Sent Events.
    Sse,
}

/// Why a request head was refused before any host code saw it; the label
/// of `handshakes_rejected` and the HTTP status each gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Malformed {
    /// Not a well-formed HTTP/1.1 request (400).
    Invalid,
    /// A method other than GET (405).
    Method,
    /// A GET on the WebSocket path without `Upgrade: websocket` and
    /// `Connection: Upgrade` (426).
    NotUpgrade,
    /// `Sec-WebSocket-Version` missing or not 13 (426).
    Version,
    /// `Sec-WebSocket-Key` missing or not 16 bytes in base64 (400).
    Key,
    /// A head over `max_handshake_bytes` (431).
    TooLarge,
    /// More than `max_headers` headers (431).
    TooManyHeaders,
}

impl Malformed {
    /// The reason it is counted under.
    pub(crate) fn rejection(self) -> Rejection {
        match self {
            Malformed::Invalid => Rejection::Invalid,
            Malformed::Method => Rejection::Method,
            Malformed::NotUpgrade => Rejection::NotUpgrade,
            Malformed::Version => Rejection::Version,
            Malformed::Key => Rejection::Key,
            Malformed::TooLarge => Rejection::TooLarge,
            Malformed::TooManyHeaders => Rejection::TooManyHeaders,
        }
    }

    fn status(self) -> u16 {
        match self {
            Malformed::Invalid | Malformed::Key => 400,
            Malformed::Method => 405,
            Malformed::NotUpgrade | Malformed::Version => 426,
            Malformed::TooLarge | Malformed::TooManyHeaders => 431,
        }
    }

    fn body(self) -> &'static str {
        match self {
            Malformed::Invalid => "malformed request",
            Malformed::Method => "only GET is served",
            Malformed::NotUpgrade => "this is a WebSocket endpoint: send a WebSocket upgrade",
            Malformed::Version => "unsupported Sec-WebSocket-Version",
            Malformed::Key => "missing or invalid Sec-WebSocket-Key",
            Malformed::TooLarge => "request head too large",
            Malformed::TooManyHeaders => "too many headers",
        }
    }

    /// Headers the status calls for: 426 names what to upgrade to.
    fn headers(self) -> &'static str {
        match self {
            Malformed::Method => "allow: GET\r\n",
            Malformed::NotUpgrade => "upgrade: websocket\r\n",
            Malformed::Version => "sec-websocket-version: 13\r\n",
            _ => "",
        }
    }
}

/// How reading a head ended without one.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The client closed or reset the connection first.
    Io,
    /// The head is refused: answer with its status.
    Malformed(Malformed),
}

/// A request head read from a connection.
pub(crate) struct Head {
    /// Everything read: the head, then whatever followed it.
    bytes: Vec<u8>,
    /// Length of the head, blank line included.
    len: usize,
    /// The parsed head (method, target, headers).
    pub(crate) request: Request,
}

impl Head {
    /// The raw head, up to and including the blank line.
    pub(crate) fn raw(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or_default()
    }

    /// Bytes the client sent after the head (the start of the WebSocket
    /// stream of a client that did not wait for our answer), in a buffer of
    /// their size: tungstenite keeps the buffer it is given as its read
    /// buffer for the connection's life, and the head's (2 KiB and more)
    /// was most of an idle connection's memory.
    pub(crate) fn into_rest(self) -> Vec<u8> {
        self.bytes
            .get(self.len..)
            .map_or_else(Vec::new, <[u8]>::to_vec)
    }

    /// Where the request goes.
    pub(crate) fn route(&self, ws_path: &str) -> Route {
        match self.request.uri().path() {
            path if path == ws_path => Route::Upgrade,
            path if path.strip_prefix(ws_path.trim_end_matches('/')) == Some("/sse") => Route::Sse,
            "/metrics" => Route::Metrics,
            "/healthz" => Route::Health,
            path if client_js::is_client_path(ws_path, path) => Route::ClientJs,
            _ => Route::NotFound,
        }
    }

    /// The 101 answer to a valid WebSocket upgrade, or why it is not one.
    pub(crate) fn upgrade_response(&self) -> Result<Response, Malformed> {
        create_response(&self.request).map_err(|error| match error {
            WsError::Protocol(ProtocolError::WrongHttpMethod) => Malformed::Method,
            WsError::Protocol(
                ProtocolError::MissingConnectionUpgradeHeader
                | ProtocolError::MissingUpgradeWebSocketHeader,
            ) => Malformed::NotUpgrade,
            WsError::Protocol(ProtocolError::MissingSecWebSocketVersionHeader) => {
                Malformed::Version
            }
            WsError::Protocol(
                ProtocolError::MissingSecWebSocketKey | ProtocolError::InvalidSecWebSocketKey,
            ) => Malformed::Key,
            _ => Malformed::Invalid,
        })
    }
}

/// Reads one request head, at most `limits.max_bytes` long with at most
/// `limits.max_headers` headers. The caller bounds it in time (the
/// handshake deadline); `received` tells it afterwards whether any byte
/// came, so that a request cut short by the deadline can be answered 408.
pub(crate) async fn read_head(
    stream: &mut ClientStream,
    limits: HeadLimits,
    received: &mut bool,
) -> Result<Head, ReadError> {
    // Nothing is allocated until the client sends something: an idle
    // socket costs its parked task only.
    let mut bytes = Vec::new();
    let mut scanned = 0;
    let mut lines = 0;
    loop {
        match stream.read_some(&mut bytes, READ_CHUNK_BYTES).await {
            Ok(0) | Err(_) => return Err(ReadError::Io),
            Ok(_) => *received = true,
        }
        if let Some(len) = find_head_end(&bytes, &mut scanned, &mut lines) {
            if len > limits.max_bytes {
                return Err(ReadError::Malformed(Malformed::TooLarge));
            }
            return parse_head(bytes, len, limits.max_headers).map_err(ReadError::Malformed);
        }
        // The request line, the headers, and the blank line still to come.
        if lines > limits.max_headers + 1 {
            return Err(ReadError::Malformed(Malformed::TooManyHeaders));
        }
        if bytes.len() >= limits.max_bytes {
            return Err(ReadError::Malformed(Malformed::TooLarge));
        }
    }
}

/// Looks for the blank line that ends a head in the bytes not yet
/// scanned, counting line ends on the way; returns the head's length.
/// Each byte is looked at once, however the head is split into reads.
fn find_head_end(bytes: &[u8], scanned: &mut usize, lines: &mut usize) -> Option<usize> {
    for i in *scanned..bytes.len() {
        if bytes[i] != b'\n' {
            continue;
        }
        *lines += 1;
        // "\n\n" or "\n\r\n": a line end right after a line end.
        let blank = match i.checked_sub(1).map(|j| bytes[j]) {
            Some(b'\n') => true,
            Some(b'\r') => i >= 2 && bytes[i - 2] == b'\n',
            _ => false,
        };
        if blank {
            return Some(i + 1);
        }
    }
    *scanned = bytes.len();
    None
}

/// Parses a complete head (`bytes[..len]`) with httparse into an
/// `http::Request`, the type tungstenite's upgrade checks take; more than
/// `max_headers` headers is [`Malformed::TooManyHeaders`].
fn parse_head(bytes: Vec<u8>, len: usize, max_headers: usize) -> Result<Head, Malformed> {
    // On the heap, as `max_headers` is the host's choice (at most
    // `config::MAX_HEADERS_RANGE`), and only while the head is parsed.
    let mut headers = vec![httparse::EMPTY_HEADER; max_headers];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(bytes.get(..len).unwrap_or_default()) {
        Ok(httparse::Status::Complete(_)) => {}
        Err(httparse::Error::TooManyHeaders) => return Err(Malformed::TooManyHeaders),
        Ok(httparse::Status::Partial) | Err(_) => return Err(Malformed::Invalid),
    }
    let (Some(method), Some(target), Some(version)) = (parsed.method, parsed.path, parsed.version)
    else {
        return Err(Malformed::Invalid);
    };
    if method != "GET" {
        return Err(Malformed::Method);
    }
    // WebSocket needs HTTP/1.1; httparse knows only 1.0 and 1.1.
    if version != 1 {
        return Err(Malformed::Invalid);
    }
    let mut request = Request::new(());
    *request.uri_mut() = target.parse().map_err(|_| Malformed::Invalid)?;
    *request.version_mut() = http::Version::HTTP_11;
    let map = request.headers_mut();
    for header in parsed.headers.iter() {
        let name =
            HeaderName::from_bytes(header.name.as_bytes()).map_err(|_| Malformed::Invalid)?;
        let value = HeaderValue::from_bytes(header.value).map_err(|_| Malformed::Invalid)?;
        map.append(name, value);
    }
    Ok(Head {
        bytes,
        len,
        request,
    })
}

/// Answers the 101 of an accepted upgrade.
pub(crate) async fn switch_protocols(
    stream: &mut ClientStream,
    response: &Response,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(256);
    tokio_tungstenite::tungstenite::handshake::server::write_response(&mut head, response)
        .map_err(std::io::Error::other)?;
    stream.write_all(&head).await?;
    stream.flush().await
}

/// Refuses a malformed request with its status and closes.
pub(crate) async fn refuse_malformed(stream: ClientStream, why: Malformed) -> std::io::Result<()> {
    let status = why.status();
    write_and_close(stream, status, why.headers(), why.body()).await
}

/// Refuses a handshake with `status` (and a one-line body) and closes.
pub(crate) async fn refuse(stream: ClientStream, status: u16, body: &str) -> std::io::Result<()> {
    write_and_close(stream, status, "", body).await
}

/// Answers 408 to a request the deadline cut short, without waiting: the
/// socket's buffer takes so small an answer at once, and a client that
/// does not read gets nothing. Then the connection closes.
pub(crate) fn refuse_timed_out(stream: &mut ClientStream) {
    let response = response_head(408, "", "request timeout\n".len());
    stream.write_now(format!("{response}request timeout\n").as_bytes());
}

async fn write_and_close(
    mut stream: ClientStream,
    status: u16,
    headers: &str,
    body: &str,
) -> std::io::Result<()> {
    let body = format!("{body}\n");
    let head = response_head(status, headers, body.len());
    stream.write_all(format!("{head}{body}").as_bytes()).await?;
    linger(stream).await
}

/// Says we are done writing, then reads and discards what the client
/// still sends (briefly and boundedly), so that our answer is not lost to
/// a reset caused by closing with unread bytes.
async fn linger(mut stream: ClientStream) -> std::io::Result<()> {
    stream.shutdown().await?;
    let until = Instant::now() + LINGER;
    let mut discard = [0u8; 4096];
    let mut discarded = 0;
    while discarded < LINGER_BYTES {
        match tokio::time::timeout_at(until, stream.read(&mut discard)).await {
            Ok(Ok(n)) if n > 0 => discarded += n,
            _ => break,
        }
    }
    Ok(())
}

fn reason_phrase(status: u16) -> &'static str {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Refused")
}

fn response_head(status: u16, headers: &str, content_length: usize) -> String {
    format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: text/plain\r\ncontent-length: {content_length}\r\n\
         {headers}cache-control: no-store\r\nconnection: close\r\n\r\n",
        reason_phrase(status)
    )
}

/// Answers a plain HTTP request and closes the connection.
pub(crate) async fn respond(
    mut stream: ClientStream,
    route: Route,
    request: &Request,
    running: bool,
    stats: impl FnOnce() -> Stats,
) -> std::io::Result<()> {
    let (status, content_type, body) = match route {
        Route::ClientJs => return client_js::serve(stream, request).await,
        Route::Metrics => ("200 OK", metrics::CONTENT_TYPE, metrics::render(&stats())),
        Route::Health if running => ("200 OK", "text/plain", "ok\n".to_owned()),
        Route::Health => (
            "503 Service Unavailable",
            "text/plain",
            "stopping\n".to_owned(),
        ),
        Route::Upgrade | Route::Sse | Route::NotFound => {
            ("404 Not Found", "text/plain", "not found\n".to_owned())
        }
    };
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\
         cache-control: no-store\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default `max_headers`.
    const MAX_HEADERS: usize = 64;

    fn head(text: &[u8]) -> Result<Head, Malformed> {
        head_with(text, MAX_HEADERS)
    }

    fn head_with(text: &[u8], max_headers: usize) -> Result<Head, Malformed> {
        let (mut scanned, mut lines) = (0, 0);
        let len = find_head_end(text, &mut scanned, &mut lines).ok_or(Malformed::Invalid)?;
        parse_head(text.to_vec(), len, max_headers)
    }

    #[test]
    fn the_end_of_a_head_is_found_across_reads() {
        let text = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nrest";
        let (mut scanned, mut lines) = (0, 0);
        for cut in 1..text.len() {
            let found = find_head_end(&text[..cut], &mut scanned, &mut lines);
            if cut < text.len() - 4 {
                assert_eq!(found, None, "cut {cut}");
            } else {
                assert_eq!(found, Some(text.len() - 4));
                break;
            }
        }
        assert_eq!(lines, 3);
        assert_eq!(
            find_head_end(b"GET / HTTP/1.1\nHost: x\n\n", &mut 0, &mut 0),
            Some(24)
        );
    }

    #[test]
    fn routes_and_rest() {
        let h = head(b"GET /api/ws?topics=a HTTP/1.1\r\nHost: x\r\n\r\n\x81\x00").unwrap();
        assert_eq!(h.route("/api/ws"), Route::Upgrade);
        assert_eq!(h.raw().len(), 42);
        let rest = h.into_rest();
        assert_eq!(rest, b"\x81\x00");
        // Sized to what is left, not to the head's buffer: tungstenite
        // keeps it as the connection's read buffer.
        assert_eq!(rest.capacity(), rest.len());
        let route = |t: &[u8]| head(t).unwrap().route("/api/ws");
        assert_eq!(route(b"GET /metrics?x HTTP/1.1\r\n\r\n"), Route::Metrics);
        assert_eq!(route(b"GET /healthz HTTP/1.1\r\n\r\n"), Route::Health);
        assert_eq!(route(b"GET /api/wsx HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(
            route(b"GET /api/ws/client.js?v=1 HTTP/1.1\r\n\r\n"),
            Route::ClientJs
        );
        assert_eq!(
            route(b"GET /api/ws/sse?topics=a HTTP/1.1\r\n\r\n"),
            Route::Sse
        );
        // A path with a trailing slash has its stream under it, not "//sse".
        let slashed = head(b"GET /api/ws/sse HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(slashed.route("/api/ws/"), Route::Sse);
    }

    #[test]
    fn malformed_heads_are_told_apart() {
        let upgrade = |extra: &str| {
            let text = format!("GET /api/ws HTTP/1.1\r\nHost: x\r\n{extra}\r\n");
            head(text.as_bytes()).and_then(|h| h.upgrade_response().map(|_| ()))
        };
        let good = "Upgrade: websocket\r\nConnection: Upgrade\r\n";
        let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
        let v13 = "Sec-WebSocket-Version: 13\r\n";
        assert_eq!(upgrade(&format!("{good}{key}{v13}")), Ok(()));
        assert_eq!(upgrade(&format!("{good}{v13}")), Err(Malformed::Key));
        assert_eq!(upgrade(&format!("{good}{key}")), Err(Malformed::Version));
        assert_eq!(upgrade(&format!("{key}{v13}")), Err(Malformed::NotUpgrade));
        assert_eq!(upgrade("bad line\r\n").err(), Some(Malformed::Invalid));
        let err = |t: &[u8]| head(t).err();
        assert_eq!(err(b"POST / HTTP/1.1\r\n\r\n"), Some(Malformed::Method));
        assert_eq!(err(b"GET / HTTP/1.0\r\n\r\n"), Some(Malformed::Invalid));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x{i}: y\r\n")).collect();
        let text = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(err(text.as_bytes()), Some(Malformed::TooManyHeaders));
        assert!(head_with(text.as_bytes(), MAX_HEADERS + 1).is_ok());
        assert_eq!(
            head_with(b"GET / HTTP/1.1\r\na: 1\r\nb: 2\r\n\r\n", 1).err(),
            Some(Malformed::TooManyHeaders)
        );
    }

    #[test]
    fn each_refusal_is_counted_under_its_label() {
        use Malformed::*;
        for why in [
            Invalid,
            Method,
            NotUpgrade,
            Version,
            Key,
            TooLarge,
            TooManyHeaders,
        ] {
            let counters = crate::core::stats::Counters::default();
            counters.reject(why.rejection());
            let stats = Stats::from_counters(&counters, Default::default());
            let counted: Vec<_> = stats
                .handshakes_rejected
                .iter()
                .filter(|(_, n)| **n > 0)
                .collect();
            assert_eq!(
                counted,
                [(&why.rejection().as_str().to_owned(), &1)],
                "{why:?}"
            );
        }
    }
}
