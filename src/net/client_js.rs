//! The browser client, `wshub.js`, served on the hub's own port at
//! `<path>/client.js` (`/api/ws/client.js` by default), so that a page
//! needs no build step and gets the client made for its hub.
//!
//! The file lives in the Python package (`python/wshub/client/`, where
//! apps that serve it themselves find it with `wshub.client_js_path()`);
//! the hub embeds that same file at compile time, so there is one copy.
//! Browsers may keep it for [`MAX_AGE_SECONDS`], then revalidate with
//! `If-None-Match` and get a 304 while it is unchanged.

use std::sync::LazyLock;

use crate::net::stream::ClientStream;
use sha1::{Digest, Sha1};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::handshake::server::Request;
use tokio_tungstenite::tungstenite::http::header::IF_NONE_MATCH;

/// The client, as shipped in the Python package.
pub(crate) const SOURCE: &[u8] = include_bytes!("../../python/wshub/client/wshub.js");

/// Where, under the WebSocket path, the client is served.
const FILE_NAME: &str = "/client.js";

/// How long a browser may use its copy without asking: the URL carries no
/// version, so an upgraded hub's client reaches pages within this time
/// (and at once for a page whose cache was emptied).
const MAX_AGE_SECONDS: u32 = 600;

/// A strong validator of [`SOURCE`]: its SHA-1, quoted. It depends on the
/// bytes only, so every hub built from the same file (several behind one
/// load balancer) gives the same.
static ETAG: LazyLock<String> = LazyLock::new(|| {
    let digest = Sha1::digest(SOURCE);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
});

/// Whether `path` (a request's, without its query) is the client's, for a
/// hub whose WebSocket path is `ws_path`.
pub(crate) fn is_client_path(ws_path: &str, path: &str) -> bool {
    path.strip_suffix(FILE_NAME) == Some(ws_path.trim_end_matches('/'))
}

/// Whether an `If-None-Match` value names our current copy: `*`, or a
/// list of entity tags of which one is ours (weak or strong, as RFC 9110
/// compares them for this header).
fn is_current(if_none_match: &str) -> bool {
    if_none_match
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == ETAG.as_str())
}

/// Answers a GET of the client: 200 with the file, or 304 when the
/// browser's copy is current; then closes the connection.
pub(crate) async fn serve(mut stream: ClientStream, request: &Request) -> std::io::Result<()> {
    let current = request
        .headers()
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(is_current);
    let (status, body) = if current {
        ("304 Not Modified", &[][..])
    } else {
        ("200 OK", SOURCE)
    };
    // A page on another origin (the app's port) imports the module with
    // CORS, which it is free to: the file is public.
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/javascript; charset=utf-8\r\n\
         content-length: {}\r\netag: {}\r\ncache-control: public, max-age={MAX_AGE_SECONDS}\r\n\
         access-control-allow-origin: *\r\nx-content-type-options: nosniff\r\n\
         connection: close\r\n\r\n",
        body.len(),
        ETAG.as_str()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_sits_under_the_websocket_path() {
        assert!(is_client_path("/api/ws", "/api/ws/client.js"));
        assert!(is_client_path("/api/ws/", "/api/ws/client.js"));
        assert!(is_client_path("/", "/client.js"));
        assert!(!is_client_path("/api/ws", "/client.js"));
        assert!(!is_client_path("/api/ws", "/api/wsx/client.js"));
        assert!(!is_client_path("/api/ws", "/api/ws/client.jsx"));
        assert!(!is_client_path("/api/ws", "/api/ws"));
    }

    #[test]
    fn the_etag_follows_the_bytes_and_is_recognised_in_a_list() {
        let etag = ETAG.as_str();
        assert_eq!(etag.len(), 42);
        assert!(etag.starts_with('"') && etag.ends_with('"'));
        assert!(is_current(etag));
        assert!(is_current(&format!("W/{etag}")));
        assert!(is_current(&format!("\"old\", {etag}")));
        assert!(is_current("*"));
        assert!(!is_current("\"old\""));
        assert!(!is_current(""));
        assert!(!is_current(&etag[1..41]));
    }

    #[test]
    fn the_embedded_file_is_the_module() {
        let text = std::str::from_utf8(SOURCE).unwrap();
        assert!(text.contains("export function connect("));
    }
}
