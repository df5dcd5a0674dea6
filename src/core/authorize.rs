//! The host's say on who may connect: an optional check that sees each
//! handshake's path, query (raw and parsed), headers, cookies, client
//! address and requested topics, and answers allow,
//! allow-only-these-topics, or deny with an HTTP status.
//!
//! The parsing is done here once, so that the Python and the C bindings
//! hand their hosts the same query parameters and cookies.
//!
//! The check is host code (Python, C) that may block or fail, so it runs on
//! the runtime's blocking pool with a timeout, never on an I/O thread, and a
//! failure denies the handshake instead of reaching the server.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::protocol;

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
    /// The client's address (the TCP peer: a proxy's, behind one).
    pub peer: SocketAddr,
    /// The topics the client asks for in its query, as the hub reads them
    /// (`topics=a,b`, possibly repeated), before any check.
    pub topics: Vec<String>,
}

impl HandshakeRequest {
    /// The query's parameters, percent-decoded, in order; a repeated name
    /// appears once per occurrence.
    pub fn query_params(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(self.query.as_bytes())
            .into_owned()
            .collect()
    }

    /// The cookies of every `Cookie` header, in order, as (name, value);
    /// a value in double quotes loses them, and pieces that are not
    /// `name=value` are skipped. Values are not percent-decoded (browsers
    /// send what the server set).
    pub fn cookies(&self) -> Vec<(String, String)> {
        self.headers
            .iter()
            .filter(|(name, _)| name == "cookie")
            .flat_map(|(_, value)| cookie::Cookie::split_parse(value.as_str()))
            .filter_map(Result::ok)
            .map(|c| (c.name().to_owned(), c.value_trimmed().to_owned()))
            .collect()
    }
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

/// Parses a complete request head (up to and including the blank line)
/// from `peer`. Returns `None` when it is not a well-formed HTTP/1.x
/// request with at most `max_headers` headers (the hub's `max_headers`,
/// which the head was already checked against).
pub fn parse_request(
    head: &[u8],
    peer: SocketAddr,
    max_headers: usize,
) -> Option<HandshakeRequest> {
    let mut headers = vec![httparse::EMPTY_HEADER; max_headers];
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
        peer,
        topics: protocol::topics_from_query(Some(query)),
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

    fn peer() -> SocketAddr {
        "127.0.0.1:4242".parse().unwrap()
    }

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn request_head_is_split_into_path_query_and_headers() {
        let head = b"GET /api/ws?topics=a&token=x HTTP/1.1\r\nHost: h\r\nCookie: s=1\r\n\r\n";
        let request = parse_request(head, peer(), 64).unwrap();
        assert_eq!(request.path, "/api/ws");
        assert_eq!(request.query, "topics=a&token=x");
        assert_eq!(request.headers, pairs(&[("host", "h"), ("cookie", "s=1")]));
        assert_eq!(request.peer, peer());
        assert!(parse_request(b"garbage\r\n\r\n", peer(), 64).is_none());
        assert!(parse_request(b"GET / HTTP/1.1\r\nHost: h\r\n", peer(), 64).is_none());
    }

    #[test]
    fn query_params_cookies_and_topics_are_parsed() {
        let head = b"GET /ws?topics=a,b&topics=c&t=x%20y&t=2&flag HTTP/1.1\r\n\
            Cookie: session=abc; theme=\"dark\"; junk\r\nCookie: late=1\r\n\r\n";
        let request = parse_request(head, peer(), 64).unwrap();
        assert_eq!(request.topics, ["a", "b", "c"]);
        assert_eq!(
            request.query_params(),
            pairs(&[
                ("topics", "a,b"),
                ("topics", "c"),
                ("t", "x y"),
                ("t", "2"),
                ("flag", "")
            ])
        );
        assert_eq!(
            request.cookies(),
            pairs(&[("session", "abc"), ("theme", "dark"), ("late", "1")])
        );
        let bare = parse_request(b"GET /ws HTTP/1.1\r\n\r\n", peer(), 64).unwrap();
        assert!(bare.topics.is_empty() && bare.query_params().is_empty());
        assert!(bare.cookies().is_empty());
    }

    #[test]
    fn deny_status_stays_a_client_error() {
        assert_eq!(Authorization::deny_status(401), 401);
        assert_eq!(Authorization::deny_status(200), 403);
        assert_eq!(Authorization::deny_status(503), 403);
    }
}
