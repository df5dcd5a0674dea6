//! Server-Sent Events: the same feed for clients that cannot open a
//! WebSocket (corporate proxies that block them, `curl`, a browser's
//! `EventSource`). `GET <path>/sse?topics=...` is read-only: every frame the
//! protocol would send (the `connected` answer, publications, retained
//! values, errors) becomes one event whose `data` is the same JSON, with
//! the same bounds and slow-client policies, because the client is a
//! [`Session`] like a WebSocket one.
//!
//! Each publication's event `id` is the client's position in every topic
//! it reads, `topic:seq:epoch,...` (the query's `since` format), so the
//! browser's own reconnect, which sends it back as `Last-Event-ID`,
//! resumes through the recovery of topic streams: nothing missed, nothing
//! twice.

use crate::core::outbox::FrameEncoding;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;

use crate::net::stream::ClientStream;
use tokio::time::{interval_at, Instant, MissedTickBehavior};

use crate::core::outbox::{Closed, OutFrame};
use crate::core::stats::Counters;
use crate::net::session::Session;
use crate::net::writer::watched;
use crate::net::Shared;
use crate::protocol;

/// The log target of this module's records (`wshub.sse` in Python).
const LOG_TARGET: &str = "wshub::sse";

/// How long the goodbye event may take to leave before the stream is cut.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(1);

/// What the handshake decided for an SSE client.
pub(crate) struct Admitted {
    /// The query string.
    pub query: Option<String>,
    /// The `Last-Event-ID` header: where the client was.
    pub last_event_id: Option<String>,
    /// The request's `Origin`, echoed for a page on an allowed origin.
    pub origin: Option<String>,
    /// Topics the client may subscribe to (`None`: no limit).
    pub granted: Option<BTreeSet<String>>,
    /// When its token expires (`jwt_key`), if it has one.
    pub expires: Option<Duration>,
}

/// Serves one SSE client until it goes, the hub stops, its token
/// expires, or it falls behind under the disconnect policy.
pub(crate) async fn serve(shared: Arc<Shared>, mut stream: ClientStream, admitted: Admitted) {
    let counters = &shared.hub.counters;
    Counters::add(&counters.connections_opened, 1);
    counters
        .sse_clients
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut session = Session::new(&shared, admitted.granted, FrameEncoding::Plain);
    let mut positions = Positions::from_since(admitted.last_event_id.as_deref());
    if write_flushed(
        &mut stream,
        response_head(admitted.origin.as_deref()).as_bytes(),
    )
    .await
    .is_ok()
    {
        session.start(admitted.query.as_deref(), admitted.last_event_id.as_deref());
        let reason = stream_events(
            &shared,
            &mut stream,
            &session,
            &mut positions,
            admitted.expires,
        )
        .await;
        tracing::debug!(target: LOG_TARGET, id = session.id, reason, "SSE client gone");
    }
    session.finish(0);
    counters
        .sse_clients
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
}

/// 200 with the event-stream type, no caching and no proxy buffering;
/// the body lasts until the connection closes (no length).
fn response_head(origin: Option<&str>) -> String {
    let mut head = String::from(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-store\r\n\
         x-accel-buffering: no\r\nconnection: close\r\n",
    );
    if let Some(origin) = origin {
        head.push_str(&format!(
            "access-control-allow-origin: {origin}\r\naccess-control-allow-credentials: true\r\n\
             vary: origin\r\n"
        ));
    }
    // A browser retries a second after a cut (its default is about 3 s).
    head.push_str("\r\nretry: 1000\n\n");
    head
}

/// The loop: queued frames out as events, a comment now and then so that
/// proxies keep the stream open and a dead peer is noticed.
async fn stream_events(
    shared: &Shared,
    stream: &mut ClientStream,
    session: &Session,
    positions: &mut Positions,
    expires: Option<Duration>,
) -> &'static str {
    let interval = shared.config.ping_interval;
    let mut keepalive = interval_at(Instant::now() + interval, interval);
    keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let expiry = tokio::time::sleep(expires.unwrap_or(Duration::MAX / 4));
    tokio::pin!(expiry);
    let outbox = Arc::clone(&session.outbox);
    let counters = &shared.hub.counters;
    let mut pending = VecDeque::new();
    let mut read_buf = [0u8; 512];
    loop {
        tokio::select! {
            biased;
            () = shared.shutdown.cancelled() => {
                outbox.drain(&mut pending);
                let _ = write_events(stream, session, positions, &mut pending, counters).await;
                goodbye(stream, 1001, "server shutting down").await;
                return "hub stopping";
            }
            () = outbox.ready() => {
                let closed = outbox.drain(&mut pending);
                if write_events(stream, session, positions, &mut pending, counters).await.is_err() {
                    return "write failed";
                }
                match closed {
                    Some(Closed::SlowConsumer) => {
                        tracing::warn!(target: LOG_TARGET, id = session.id, "closing slow SSE consumer");
                        goodbye(stream, 1008, "slow consumer").await;
                        return "slow consumer";
                    }
                    Some(Closed::Gone) => return "closed",
                    None => {}
                }
            }
            () = &mut expiry, if expires.is_some() => {
                Counters::add(&counters.token_expired_closes, 1);
                goodbye(stream, 4001, "token expired").await;
                return "token expired";
            }
            _ = keepalive.tick() => {
                if write_flushed(stream, b": keepalive\n\n").await.is_err() {
                    return "write failed";
                }
            }
            read = stream.read(&mut read_buf) => {
                // The client sends nothing on an event stream: what comes
                // is discarded, and end of stream means it left.
                match read {
                    Ok(0) | Err(_) => return "closed by client",
                    Ok(_) => {}
                }
            }
        }
    }
}

/// A last event, `close`, saying why the stream ends (the code a WebSocket
/// client would get), within [`GOODBYE_TIMEOUT`].
async fn goodbye(stream: &mut ClientStream, code: u16, reason: &str) {
    let event = format!(
        "event: close\ndata: {}\n\n",
        serde_json::json!({"type": "close", "code": code, "reason": reason})
    );
    let _ = tokio::time::timeout(GOODBYE_TIMEOUT, write_flushed(stream, event.as_bytes())).await;
}

/// Writes `bytes` and flushes them (TLS may hold the last record).
async fn write_flushed(stream: &mut ClientStream, bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}

/// Writes `pending` as events and hands their places in the bounds back.
async fn write_events(
    stream: &mut ClientStream,
    session: &Session,
    positions: &mut Positions,
    pending: &mut VecDeque<OutFrame>,
    counters: &Counters,
) -> std::io::Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let mut events = Vec::new();
    let (mut frames, mut bytes, mut publications) = (0, 0, 0);
    for frame in pending.drain(..) {
        for text in frame_texts(&frame.wire) {
            positions.event(text, &mut events);
        }
        frames += frame.frames();
        bytes += frame.len;
        publications += u64::from(frame.publications);
    }
    let written = watched(session.outbox.progress(), write_flushed(stream, &events)).await;
    session.outbox.written(frames, bytes);
    written?;
    Counters::add(&counters.sent, publications);
    Counters::add(&counters.sent_bytes, events.len() as u64);
    Ok(())
}

/// The payloads of the WebSocket frames the hub encoded back to back
/// (final, unmasked text frames: a 2-, 4- or 10-byte header each).
fn frame_texts(mut wire: &[u8]) -> Vec<&str> {
    let mut texts = Vec::new();
    while wire.len() >= 2 {
        let (header, len): (usize, usize) = match wire[1] & 0x7f {
            126 if wire.len() >= 4 => (4, usize::from(u16::from_be_bytes([wire[2], wire[3]]))),
            127 if wire.len() >= 10 => {
                let mut n = [0; 8];
                n.copy_from_slice(&wire[2..10]);
                (
                    10,
                    usize::try_from(u64::from_be_bytes(n)).unwrap_or(usize::MAX),
                )
            }
            126 | 127 => break,
            n => (2, usize::from(n)),
        };
        let Some(payload) = wire.get(header..header.saturating_add(len)) else {
            break;
        };
        // The hub only encodes UTF-8 text.
        if let Ok(text) = std::str::from_utf8(payload) {
            texts.push(text);
        }
        wire = &wire[header + len..];
    }
    texts
}

/// Where the client is in each topic it reads, for the events' ids.
#[derive(Debug, Default)]
struct Positions {
    /// topic -> (epoch, seq of the last publication sent).
    topics: BTreeMap<String, (String, u64)>,
}

impl Positions {
    /// Starts from the positions the client came back with (its
    /// `Last-Event-ID`), so that an id sent before its recovered
    /// publications arrive still says where it really is.
    fn from_since(last_event_id: Option<&str>) -> Self {
        let query = last_event_id.map(|id| {
            format!(
                "since={}",
                form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>()
            )
        });
        let (since, _) = protocol::since_from_query(query.as_deref());
        Positions {
            topics: since
                .into_iter()
                .map(|(topic, p)| (topic, (p.epoch, p.seq)))
                .collect(),
        }
    }

    /// Appends one frame's event to `out`, following the answers' streams
    /// and each publication's seq.
    fn event(&mut self, text: &str, out: &mut Vec<u8>) {
        if let Some((topic, seq)) = publication_position(text) {
            if let Some(position) = self.topics.get_mut(topic) {
                position.1 = seq;
            }
            out.extend_from_slice(b"id: ");
            out.extend_from_slice(self.id().as_bytes());
            out.push(b'\n');
        } else {
            self.follow_answer(text);
        }
        // A JSON text may hold raw line breaks between its tokens; each
        // line becomes a `data:` line, which the client joins with "\n".
        for line in text.split(['\n', '\r']) {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
        out.push(b'\n');
    }

    /// Takes each newly subscribed topic's epoch (and, unless the client
    /// recovers it, its seq) from a `connected`/`subscribed` answer, and
    /// drops topics an `unsubscribed` answer no longer lists.
    fn follow_answer(&mut self, text: &str) {
        #[derive(serde::Deserialize)]
        struct Answer {
            #[serde(rename = "type")]
            kind: String,
            #[serde(default)]
            topics: Vec<String>,
            #[serde(default)]
            streams: BTreeMap<String, Stream>,
            #[serde(default)]
            recovered: BTreeMap<String, bool>,
        }
        #[derive(serde::Deserialize)]
        struct Stream {
            epoch: String,
            seq: u64,
        }
        let Ok(answer) = serde_json::from_str::<Answer>(text) else {
            return;
        };
        if !matches!(
            answer.kind.as_str(),
            "connected" | "subscribed" | "unsubscribed"
        ) {
            return;
        }
        for (topic, stream) in answer.streams {
            let recovered = answer.recovered.get(&topic).copied().unwrap_or(false);
            if !(recovered && self.topics.contains_key(&topic)) {
                self.topics.insert(topic, (stream.epoch, stream.seq));
            }
        }
        self.topics.retain(|topic, _| answer.topics.contains(topic));
    }

    /// `topic:seq:epoch,...` of every topic read.
    fn id(&self) -> String {
        let items: Vec<String> = self
            .topics
            .iter()
            .map(|(topic, (epoch, seq))| format!("{topic}:{seq}:{epoch}"))
            .collect();
        items.join(",")
    }
}

/// The topic and seq of a publication's text, which the hub writes as
/// `{"type":"message","topic":T,"seq":N,...` (see
/// [`protocol::write_publication`]); `None` for any other frame.
fn publication_position(text: &str) -> Option<(&str, u64)> {
    let rest = text.strip_prefix(r#"{"type":"message","topic":""#)?;
    let (topic, rest) = rest.split_once('"')?;
    let rest = rest.strip_prefix(r#","seq":"#)?;
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    Some((topic, rest[..end].parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::{encode_publication, encode_retained, encode_text_frame};

    #[test]
    fn frames_become_events_with_the_position_of_every_topic() {
        let mut positions = Positions::from_since(Some("a:3:E1"));
        let mut wire = Vec::new();
        let answer = r#"{"type":"connected","topics":["a","b"],"rejected":[],"streams":{"a":{"epoch":"E1","seq":9},"b":{"epoch":"E2","seq":4}},"recovered":{"a":true}}"#;
        wire.extend_from_slice(&encode_text_frame(answer.to_owned()));
        wire.extend_from_slice(&encode_publication("a", 4, "{\"x\":\n1}"));
        wire.extend_from_slice(&encode_retained(
            "b",
            4,
            &format!("\"{}\"", "y".repeat(300)),
        ));
        let mut out = Vec::new();
        for text in frame_texts(&wire) {
            positions.event(text, &mut out);
        }
        let out = String::from_utf8(out).unwrap();
        let events: Vec<&str> = out.split("\n\n").filter(|e| !e.is_empty()).collect();
        assert_eq!(events.len(), 3, "{out}");
        assert_eq!(events[0], format!("data: {answer}"));
        // The recovered topic keeps the position the client came with
        // until its publications arrive.
        assert_eq!(
            events[1],
            "id: a:4:E1,b:4:E2\ndata: {\"type\":\"message\",\"topic\":\"a\",\"seq\":4,\"data\":{\"x\":\ndata: 1}}"
        );
        assert!(events[2].starts_with("id: a:4:E1,b:4:E2\ndata: {\"type\":\"message\",\"topic\":\"b\",\"seq\":4,\"retained\":true"));
    }

    #[test]
    fn only_publications_have_a_position() {
        assert_eq!(
            publication_position(r#"{"type":"message","topic":"t.1","seq":17,"data":1}"#),
            Some(("t.1", 17))
        );
        assert_eq!(publication_position(r#"{"type":"pong"}"#), None);
    }
}
