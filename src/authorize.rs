//! The host's say on who may connect: an optional check that sees each
//! handshake's path, query and headers (cookies, tokens) and answers allow,
//! allow-only-these-topics, or deny with an HTTP status.
//!
//! The check is host code (Python, C) that may block or fail, so it runs on
//! the runtime's blocking pool with a timeout, never on an I/O thread, and a
//! failure denies the handshake instead of reaching the server.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

/// What the check sees of a handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeRequest {
    /// The request path, e.g. `/api/ws`.
    pub path: String,
    /// The query string without `?` (empty when absent).
    pub query: String,
    /// Header names (lower-case) and values, in request order; values that
    /// are not UTF-8 are left out.
    pub headers: Vec<(String, String)>,
}

/// The check's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorization {
    /// Connect, with the server's topic rules.
    Allow,
    /// Connect, but subscribe only to these topics (within the server's
    /// rules); other names are rejected as `not_allowed`.
    AllowTopics(BTreeSet<String>),
    /// Refuse the handshake with this HTTP status (a 4xx; anything else is
    /// sent as 403).
    Deny(u16),
}

/// The host's check.
#[derive(Clone)]
pub struct Authorizer(pub Arc<AuthorizeFn>);

/// The check's signature.
pub type AuthorizeFn = dyn Fn(&HandshakeRequest) -> Authorization + Send + Sync;

impl fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Authorizer")
    }
}

impl Authorization {
    /// The status to refuse with, kept within 4xx.
    pub fn deny_status(status: u16) -> u16 {
        if (400..500).contains(&status) {
            status
        } else {
            403
        }
    }
}

/// Parses a complete request head (up to and including the blank line).
/// Returns `None` when it is not a well-formed HTTP/1.x request.
pub fn parse_request(head: &[u8]) -> Option<HandshakeRequest> {
    // Enough for real browsers; a request with more is refused.
    const MAX_HEADERS: usize = 64;
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return None,
    }
    let target = request.path?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Some(HandshakeRequest {
        path: path.to_owned(),
        query: query.to_owned(),
        headers: request
            .headers
            .iter()
            .filter_map(|h| {
                let value = std::str::from_utf8(h.value).ok()?;
                Some((h.name.to_ascii_lowercase(), value.to_owned()))
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_head_is_split_into_path_query_and_headers() {
        let head = b"GET /api/ws?topics=a&token=x HTTP/1.1\r\nHost: h\r\nCookie: s=1\r\n\r\n";
        let request = parse_request(head).unwrap();
        assert_eq!(request.path, "/api/ws");
        assert_eq!(request.query, "topics=a&token=x");
        assert_eq!(
            request.headers,
            [("host".into(), "h".into()), ("cookie".into(), "s=1".into())]
        );
        assert!(parse_request(b"garbage\r\n\r\n").is_none());
        assert!(parse_request(b"GET / HTTP/1.1\r\nHost: h\r\n").is_none());
    }

    #[test]
    fn deny_status_stays_a_client_error() {
        assert_eq!(Authorization::deny_status(401), 401);
        assert_eq!(Authorization::deny_status(200), 403);
        assert_eq!(Authorization::deny_status(503), 403);
    }
}
