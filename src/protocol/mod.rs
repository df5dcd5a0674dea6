//! Wire protocol v1 (see `docs/protocol.md`): topic names, the messages a
//! client may send, and the JSON text of every frame the server sends.
//!
//! Server frames are built as text directly rather than through serde
//! structs: a publication frame is assembled once per `broadcast` around the
//! publisher's JSON, which must go out byte for byte.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::io::Write as _;

pub mod deflate;
pub mod frame;

/// Longest topic name: long enough for `tenant:feed:item` style names, short
/// enough that a subscription list cannot be used to make us allocate a lot.
pub const MAX_TOPIC_LEN: usize = 128;

/// Whether `name` is a valid topic: 1-[`MAX_TOPIC_LEN`] chars of
/// `[A-Za-z0-9_.:-]`. The alphabet needs no escaping inside JSON strings or
/// URLs, which is what lets frames be assembled without an encoder.
pub fn is_valid_topic(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_TOPIC_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// Checks that `data` is one JSON value (leading/trailing whitespace
/// allowed), without building it.
///
/// # Errors
/// The parser's message, for the caller's exception text.
pub fn validate_json(data: &str) -> Result<(), String> {
    serde_json::from_str::<&RawValue>(data)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The error codes of protocol v1's `error` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Not JSON, or JSON that is not an object.
    InvalidJson,
    /// No string `type`, or one the server does not know.
    UnknownType,
    /// `subscribe`/`unsubscribe` without an array of strings in `topics`.
    InvalidTopics,
    /// The client sent a binary frame.
    BinaryNotSupported,
    /// The client sends faster than `rate_limit`; the message was dropped.
    RateLimited,
    /// A `since` (in `subscribe`, or the handshake's query) that is not
    /// `{topic: {"seq": N, "epoch": E}}` for topics being subscribed.
    InvalidSince,
    /// A `refresh` whose token the hub refused (or a hub that checks no
    /// tokens); the connection keeps its current token.
    InvalidToken,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::InvalidTopics => "invalid_topics",
            ErrorCode::BinaryNotSupported => "binary_not_supported",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::InvalidSince => "invalid_since",
            ErrorCode::InvalidToken => "invalid_token",
        }
    }
}

/// A request a client sent in a text frame, already checked.
#[derive(Debug, PartialEq)]
pub enum ClientMessage {
    /// `{"type":"ping"}`, with the `id` to echo if one was given.
    Ping {
        /// The raw JSON text of any value, echoed verbatim in the pong.
        id: Option<String>,
    },
    /// `{"type":"subscribe","topics":[...]}`, with the positions the
    /// client had reached (`"since":{topic:{"seq":N,"epoch":E}}`) for the
    /// topics it wants to recover.
    Subscribe {
        /// The topics asked for.
        topics: Vec<String>,
        /// Where the client was, per topic of `topics` (at most one each).
        since: Vec<(String, Position)>,
    },
    /// `{"type":"unsubscribe","topics":[...]}`
    Unsubscribe(Vec<String>),
    /// `{"type":"refresh","token":T}`: a new token before the current one
    /// expires.
    Refresh {
        /// The new token.
        token: String,
    },
}

/// A client message that could not be understood; it becomes an `error`
/// frame and the connection stays open.
#[derive(Debug, PartialEq, Eq)]
pub struct ProtocolError {
    /// The wire code.
    pub code: ErrorCode,
    /// A human-readable explanation for the client's developer.
    pub message: String,
}

impl ProtocolError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ProtocolError {
            code,
            message: message.into(),
        }
    }
}

// The envelope is parsed in two steps (first `type`, then the fields of that
// type) so that each failure maps to the right error code.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<&'a RawValue>,
    // `deserialize_with` keeps `"id":null` as Some(null): a plain Option
    // would read null as absent and the pong would lose it.
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    topics: Option<&'a RawValue>,
    #[serde(borrow, default)]
    since: Option<&'a RawValue>,
    #[serde(borrow, default)]
    token: Option<&'a RawValue>,
}

fn present<'de, D>(deserializer: D) -> Result<Option<&'de RawValue>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    <&RawValue>::deserialize(deserializer).map(Some)
}

/// Parses one text frame from a client.
///
/// # Errors
/// A [`ProtocolError`] with the code protocol v1 prescribes.
pub fn parse_client_message(text: &str) -> Result<ClientMessage, ProtocolError> {
    let value: &RawValue = serde_json::from_str(text)
        .map_err(|e| ProtocolError::new(ErrorCode::InvalidJson, e.to_string()))?;
    if !value.get().trim_start().starts_with('{') {
        return Err(ProtocolError::new(
            ErrorCode::InvalidJson,
            "expected a JSON object",
        ));
    }
    let envelope: Envelope = serde_json::from_str(value.get())
        .map_err(|e| ProtocolError::new(ErrorCode::InvalidJson, e.to_string()))?;
    let kind = envelope
        .kind
        .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
        .ok_or_else(|| {
            ProtocolError::new(ErrorCode::UnknownType, "missing string field \"type\"")
        })?;
    match kind.as_str() {
        "ping" => Ok(ClientMessage::Ping {
            id: envelope.id.map(|raw| raw.get().to_owned()),
        }),
        "subscribe" => {
            let topics = topic_list(envelope.topics)?;
            let since = match envelope.since {
                Some(raw) => since_list(raw, &topics)?,
                None => Vec::new(),
            };
            Ok(ClientMessage::Subscribe { topics, since })
        }
        "unsubscribe" => Ok(ClientMessage::Unsubscribe(topic_list(envelope.topics)?)),
        "refresh" => envelope
            .token
            .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
            .map(|token| ClientMessage::Refresh { token })
            .ok_or_else(|| {
                ProtocolError::new(ErrorCode::InvalidToken, "missing string field \"token\"")
            }),
        other => Err(ProtocolError::new(
            ErrorCode::UnknownType,
            format!("unknown type {:?}", truncate(other, 64)),
        )),
    }
}

fn topic_list(raw: Option<&RawValue>) -> Result<Vec<String>, ProtocolError> {
    let raw = raw
        .ok_or_else(|| ProtocolError::new(ErrorCode::InvalidTopics, "missing field \"topics\""))?;
    serde_json::from_str::<Vec<String>>(raw.get()).map_err(|_| {
        ProtocolError::new(
            ErrorCode::InvalidTopics,
            "\"topics\" must be an array of strings",
        )
    })
}

/// Where a client had got to in a topic's stream: the `seq` of the last
/// publication it received, in the numbering `epoch` names.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Position {
    /// The last `seq` received (0: none).
    pub seq: u64,
    /// The epoch the hub announced for the topic (`streams` of an answer).
    pub epoch: String,
}

/// Longest epoch a client may send back: the hub's are much shorter, and
/// nothing longer can match.
pub const MAX_EPOCH_LEN: usize = 64;

fn since_list(raw: &RawValue, topics: &[String]) -> Result<Vec<(String, Position)>, ProtocolError> {
    let bad = |why: &str| {
        ProtocolError::new(
            ErrorCode::InvalidSince,
            format!("\"since\" must be {{topic: {{\"seq\": N, \"epoch\": E}}}} for topics in \"topics\": {why}"),
        )
    };
    let entries: std::collections::BTreeMap<String, Position> =
        serde_json::from_str(raw.get()).map_err(|e| bad(truncate(&e.to_string(), 120)))?;
    let mut since = Vec::with_capacity(entries.len());
    for (topic, position) in entries {
        if !topics.contains(&topic) {
            return Err(bad(&format!(
                "{:?} is not in \"topics\"",
                truncate(&topic, MAX_TOPIC_LEN)
            )));
        }
        if position.epoch.len() > MAX_EPOCH_LEN {
            return Err(bad("epoch too long"));
        }
        since.push((topic, position));
    }
    Ok(since)
}

/// The `since` query parameter of a handshake (`since=odds:41:E,news:7:E2`,
/// possibly repeated): topic, last `seq` and epoch per item, split from
/// the right since topic names may hold `:`. Returns the items that parse
/// and how many did not.
pub fn since_from_query(query: Option<&str>) -> (Vec<(String, Position)>, usize) {
    let mut since = Vec::new();
    let mut malformed = 0;
    let Some(query) = query else {
        return (since, malformed);
    };
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        if key != "since" {
            continue;
        }
        for item in value.split(',').filter(|i| !i.is_empty()) {
            let mut parts = item.rsplitn(3, ':');
            let parsed = match (parts.next(), parts.next(), parts.next()) {
                (Some(epoch), Some(seq), Some(topic))
                    if !epoch.is_empty() && epoch.len() <= MAX_EPOCH_LEN && !topic.is_empty() =>
                {
                    seq.parse::<u64>().ok().map(|seq| {
                        (
                            topic.to_owned(),
                            Position {
                                seq,
                                epoch: epoch.to_owned(),
                            },
                        )
                    })
                }
                _ => None,
            };
            match parsed {
                Some(entry) if !since.iter().any(|(t, _)| *t == entry.0) => since.push(entry),
                _ => malformed += 1,
            }
        }
    }
    (since, malformed)
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Splits the `topics` query parameter (`a,b,c`, possibly repeated) of a
/// handshake URL, ignoring empty items. Decoding is `form_urlencoded`'s:
/// the topic alphabet never needs it, but browsers may encode `:` anyway.
pub fn topics_from_query(query: Option<&str>) -> Vec<String> {
    let Some(query) = query else {
        return Vec::new();
    };
    form_urlencoded::parse(query.as_bytes())
        .filter(|(key, _)| key == "topics")
        .flat_map(|(_, value)| {
            value
                .split(',')
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// `{"type":"message","topic":T,"seq":N,"data":D}` as a string: what
/// [`write_publication`] writes, for tests that compare frames with it.
/// Production builds the wire frame directly
/// ([`frame::encode_publication`]).
#[cfg(test)]
pub fn publication_frame(topic: &str, seq: u64, data: &str) -> String {
    let mut frame = Vec::with_capacity(publication_len(topic, seq, data));
    write_publication(&mut frame, topic, seq, data);
    // Only UTF-8 went in: the fixed parts, a valid topic, digits, `data`.
    String::from_utf8(frame).unwrap_or_default()
}

const PUBLICATION_HEAD: &str = r#"{"type":"message","topic":""#;
const PUBLICATION_SEQ: &str = r#"","seq":"#;
const PUBLICATION_DATA: &str = r#","data":"#;

/// The length of a publication's text (see [`write_publication`]), computed without building
/// it, so the wire frame can be allocated once at its final size.
pub fn publication_len(topic: &str, seq: u64, data: &str) -> usize {
    let digits = seq.checked_ilog10().map_or(1, |d| d as usize + 1);
    PUBLICATION_HEAD.len()
        + topic.len()
        + PUBLICATION_SEQ.len()
        + digits
        + PUBLICATION_DATA.len()
        + data.len()
        + 1
}

/// What a retained value's frame adds to its publication's text.
const RETAINED_FLAG: &str = r#","retained":true"#;

/// The length of a retained value's text (see [`write_retained`]).
pub fn retained_len(topic: &str, seq: u64, data: &str) -> usize {
    publication_len(topic, seq, data) + RETAINED_FLAG.len()
}

/// Appends a publication's text, `{"type":"message","topic":T,"seq":N,"data":D}`,
/// to `out`: the one text built per publication and shared by all
/// subscribers. `topic` must be valid (no escaping needed) and `data` valid
/// JSON.
pub fn write_publication(out: &mut Vec<u8>, topic: &str, seq: u64, data: &str) {
    write_message(out, topic, seq, "", data);
}

/// Appends a retained value's text, the publication's with
/// `"retained":true` before `data`:
/// `{"type":"message","topic":T,"seq":N,"retained":true,"data":D}`, what a
/// new subscriber receives of the values kept for it.
pub fn write_retained(out: &mut Vec<u8>, topic: &str, seq: u64, data: &str) {
    write_message(out, topic, seq, RETAINED_FLAG, data);
}

fn write_message(out: &mut Vec<u8>, topic: &str, seq: u64, flags: &str, data: &str) {
    out.extend_from_slice(PUBLICATION_HEAD.as_bytes());
    out.extend_from_slice(topic.as_bytes());
    out.extend_from_slice(PUBLICATION_SEQ.as_bytes());
    let _ = write!(out, "{seq}");
    out.extend_from_slice(flags.as_bytes());
    out.extend_from_slice(PUBLICATION_DATA.as_bytes());
    out.extend_from_slice(data.as_bytes());
    out.push(b'}');
}

/// Why a requested topic was not subscribed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// Not 1-128 characters of `[A-Za-z0-9_.:-]`.
    InvalidName,
    /// Not on the server's allow-list, or not granted by `authorize`.
    NotAllowed,
    /// The connection already has `max_topics_per_connection` topics.
    TooManyTopics,
    /// The hub already holds `max_topics` topics (across all
    /// connections) and this one is not among them.
    HubFull,
}

/// Rejected names an answer lists at most; `rejected_count` says how many
/// there were. A query or `subscribe` full of junk names would otherwise
/// be echoed back several times larger (escaped, and twice: in `rejected`
/// and in `reasons`).
pub const MAX_REJECTED_ECHOED: usize = 16;

/// A requested topic that was not subscribed, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The name as the client sent it.
    pub name: String,
    /// Why.
    pub reason: RejectReason,
}

/// Field order on the wire is the order of the struct fields: `type`
/// first, as in the protocol document.
#[derive(Serialize)]
struct TopicsAnswer<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    topics: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    rejected: Option<Vec<&'a str>>,
    /// Present only when something was rejected, so the common answer
    /// stays short.
    #[serde(skip_serializing_if = "Option::is_none")]
    reasons: Option<BTreeMap<&'a str, RejectReason>>,
    /// How many names were rejected, present only when `rejected` lists
    /// fewer ([`MAX_REJECTED_ECHOED`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    rejected_count: Option<usize>,
    /// Epoch and newest `seq` of each topic newly subscribed.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    streams: BTreeMap<&'a str, StreamState<'a>>,
    /// For each topic asked `since` a position: whether it was recovered.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    recovered: BTreeMap<&'a str, bool>,
}

#[derive(Serialize)]
struct StreamState<'a> {
    epoch: &'a str,
    seq: u64,
}

/// What an answer tells of one topic it newly subscribed: the topic's
/// epoch, the `seq` of its newest publication (0 if none), and, when the
/// client asked to recover from a position, whether it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicStream {
    /// The topic.
    pub topic: String,
    /// Names this lifetime of the topic's numbering.
    pub epoch: std::sync::Arc<str>,
    /// The newest `seq` so far.
    pub seq: u64,
    /// `Some(true)`: what the client missed follows the answer;
    /// `Some(false)`: it could not be recovered; `None`: not asked.
    pub recovered: Option<bool>,
}

fn topics_answer(
    kind: &'static str,
    topics: &[String],
    rejected: Option<&[Rejected]>,
    streams: &[TopicStream],
) -> String {
    // Echo a bounded part of what was rejected: at most
    // MAX_REJECTED_ECHOED names, each cut to MAX_TOPIC_LEN characters
    // (longer names are invalid anyway).
    let echoed = rejected.map(|r| &r[..r.len().min(MAX_REJECTED_ECHOED)]);
    let name = |r: &'_ Rejected| -> usize { truncate(&r.name, MAX_TOPIC_LEN).len() };
    let reasons = echoed
        .filter(|r| !r.is_empty())
        .map(|r| r.iter().map(|r| (&r.name[..name(r)], r.reason)).collect());
    let answer = TopicsAnswer {
        kind,
        topics,
        rejected: echoed.map(|r| r.iter().map(|r| &r.name[..name(r)]).collect()),
        reasons,
        rejected_count: rejected
            .map(<[Rejected]>::len)
            .filter(|&n| n > MAX_REJECTED_ECHOED),
        streams: streams
            .iter()
            .map(|s| {
                (
                    s.topic.as_str(),
                    StreamState {
                        epoch: &s.epoch,
                        seq: s.seq,
                    },
                )
            })
            .collect(),
        recovered: streams
            .iter()
            .filter_map(|s| Some((s.topic.as_str(), s.recovered?)))
            .collect(),
    };
    // Serialising strings and arrays of strings cannot fail.
    serde_json::to_string(&answer).unwrap_or_default()
}

/// `{"type":"connected","topics":[...],"rejected":[...]}`, plus
/// `"reasons":{name: reason}` when something was rejected, and
/// `"rejected_count":N` when more than [`MAX_REJECTED_ECHOED`] were (only
/// that many are listed). `topics` is sorted (as every topic list in the
/// answers). Then `"streams":{topic:{"epoch":E,"seq":N}}` for the topics
/// in `streams` and `"recovered":{topic:bool}` for those asked to recover.
pub fn connected_frame(
    topics: &[String],
    rejected: &[Rejected],
    streams: &[TopicStream],
) -> String {
    topics_answer("connected", topics, Some(rejected), streams)
}

/// `{"type":"subscribed","topics":[...],"rejected":[...]}`, plus
/// `"reasons"`, `"streams"` and `"recovered"` as for [`connected_frame`].
pub fn subscribed_frame(
    topics: &[String],
    rejected: &[Rejected],
    streams: &[TopicStream],
) -> String {
    topics_answer("subscribed", topics, Some(rejected), streams)
}

/// `{"type":"unsubscribed","topics":[...]}`
pub fn unsubscribed_frame(topics: &[String]) -> String {
    topics_answer("unsubscribed", topics, None, &[])
}

/// `{"type":"refreshed","exp":N,"topics":[...]}`: the new token's expiry
/// (seconds since the epoch) and the topics subscribed after it applied.
pub fn refreshed_frame(exp: u64, topics: &[String]) -> String {
    #[derive(Serialize)]
    struct Refreshed<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        exp: u64,
        topics: &'a [String],
    }
    serde_json::to_string(&Refreshed {
        kind: "refreshed",
        exp,
        topics,
    })
    .unwrap_or_default()
}

/// `{"type":"pong"}`, or `{"type":"pong","id":X}` echoing the ping's id.
pub fn pong_frame(id: Option<&str>) -> String {
    match id {
        Some(id) => format!(r#"{{"type":"pong","id":{id}}}"#),
        None => r#"{"type":"pong"}"#.to_owned(),
    }
}

/// `{"type":"error","error":CODE,"message":TEXT}`
pub fn error_frame(error: &ProtocolError) -> String {
    #[derive(Serialize)]
    struct ErrorAnswer<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        error: &'static str,
        message: &'a str,
    }
    let answer = ErrorAnswer {
        kind: "error",
        error: error.code.as_str(),
        message: &error.message,
    };
    serde_json::to_string(&answer).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_alphabet_and_length() {
        assert!(is_valid_topic("odds_updates"));
        assert!(is_valid_topic("a.b:c-d_9"));
        assert!(is_valid_topic(&"x".repeat(MAX_TOPIC_LEN)));
        assert!(!is_valid_topic(&"x".repeat(MAX_TOPIC_LEN + 1)));
        assert!(!is_valid_topic(""));
        assert!(!is_valid_topic("a b"));
        assert!(!is_valid_topic("a\nb"));
        assert!(!is_valid_topic("é"));
        assert!(!is_valid_topic("a\"b"));
    }

    #[test]
    fn publication_frame_embeds_data_verbatim() {
        assert_eq!(
            publication_frame("t", 17, "{ \"a\" : 1 }"),
            r#"{"type":"message","topic":"t","seq":17,"data":{ "a" : 1 }}"#
        );
    }

    #[test]
    fn validate_json_accepts_values_and_rejects_garbage() {
        assert!(validate_json(" {\"a\": [1, 2]} ").is_ok());
        assert!(validate_json("3").is_ok());
        assert!(validate_json("{").is_err());
        assert!(validate_json("").is_err());
        assert!(validate_json("1 2").is_err());
    }

    #[test]
    fn ping_echoes_any_id() {
        let msg = parse_client_message(r#"{"type":"ping","id":{"x":[1]}}"#).unwrap();
        let ClientMessage::Ping { id } = msg else {
            panic!("not a ping")
        };
        assert_eq!(
            pong_frame(id.as_deref()),
            r#"{"type":"pong","id":{"x":[1]}}"#
        );
        assert_eq!(
            parse_client_message(r#"{"type":"ping"}"#).unwrap(),
            ClientMessage::Ping { id: None }
        );
        assert_eq!(
            parse_client_message(r#"{"type":"ping","id":null}"#).unwrap(),
            ClientMessage::Ping {
                id: Some("null".into())
            }
        );
    }

    #[test]
    fn each_bad_message_gets_its_code() {
        let code = |text: &str| parse_client_message(text).unwrap_err().code;
        assert_eq!(code("not json"), ErrorCode::InvalidJson);
        assert_eq!(code("[1,2]"), ErrorCode::InvalidJson);
        assert_eq!(code("\"ping\""), ErrorCode::InvalidJson);
        assert_eq!(code("{}"), ErrorCode::UnknownType);
        assert_eq!(code(r#"{"type":5}"#), ErrorCode::UnknownType);
        assert_eq!(code(r#"{"type":"dance"}"#), ErrorCode::UnknownType);
        assert_eq!(code(r#"{"type":"subscribe"}"#), ErrorCode::InvalidTopics);
        assert_eq!(
            code(r#"{"type":"subscribe","topics":"a"}"#),
            ErrorCode::InvalidTopics
        );
        assert_eq!(
            code(r#"{"type":"unsubscribe","topics":[1]}"#),
            ErrorCode::InvalidTopics
        );
    }

    #[test]
    fn subscribe_lists_are_returned_as_given() {
        assert_eq!(
            parse_client_message(r#"{"type":"subscribe","topics":["b","a","bad name"]}"#).unwrap(),
            ClientMessage::Subscribe {
                topics: vec!["b".into(), "a".into(), "bad name".into()],
                since: Vec::new(),
            }
        );
    }

    #[test]
    fn query_topics_are_split_and_decoded() {
        assert_eq!(
            topics_from_query(Some("x=1&topics=a,,b%3Ac&topics=d")),
            vec!["a", "b:c", "d"]
        );
        assert!(topics_from_query(None).is_empty());
        assert!(topics_from_query(Some("topics=")).is_empty());
        assert_eq!(topics_from_query(Some("topics=%zz")), vec!["%zz"]);
    }

    #[test]
    fn answers_put_type_first() {
        let topics = ["a".to_string(), "b".to_string()];
        let rejected = [Rejected {
            name: "x y".to_string(),
            reason: RejectReason::InvalidName,
        }];
        assert_eq!(
            connected_frame(&topics, &rejected, &[]),
            r#"{"type":"connected","topics":["a","b"],"rejected":["x y"],"reasons":{"x y":"invalid_name"}}"#
        );
        assert_eq!(
            subscribed_frame(&topics, &[], &[]),
            r#"{"type":"subscribed","topics":["a","b"],"rejected":[]}"#
        );
        assert_eq!(
            unsubscribed_frame(&topics),
            r#"{"type":"unsubscribed","topics":["a","b"]}"#
        );
        let error = ProtocolError::new(ErrorCode::InvalidJson, "bad \"quote\"");
        assert_eq!(
            error_frame(&error),
            r#"{"type":"error","error":"invalid_json","message":"bad \"quote\""}"#
        );
    }

    #[test]
    fn answers_echo_a_bounded_part_of_what_was_rejected() {
        let junk: Vec<Rejected> = (0..1000)
            .map(|i| Rejected {
                name: format!("{i}\u{1}{}", "\u{2}".repeat(1000)),
                reason: RejectReason::InvalidName,
            })
            .collect();
        let frame = connected_frame(&[], &junk, &[]);
        let value: serde_json::Value = serde_json::from_str(&frame).unwrap();
        let listed = value["rejected"].as_array().unwrap();
        assert_eq!(listed.len(), MAX_REJECTED_ECHOED);
        assert!(listed
            .iter()
            .all(|n| n.as_str().unwrap().chars().count() == MAX_TOPIC_LEN));
        assert_eq!(value["rejected_count"], 1000);
        // 16 names of 128 escaped control characters, twice.
        assert!(frame.len() < 2 * MAX_REJECTED_ECHOED * 6 * MAX_TOPIC_LEN + 1024);
        let few = &junk[..MAX_REJECTED_ECHOED];
        let value: serde_json::Value =
            serde_json::from_str(&subscribed_frame(&[], few, &[])).unwrap();
        assert!(value.get("rejected_count").is_none());
    }

    #[test]
    fn deeply_nested_json_is_an_error_not_a_crash() {
        let deep = "[".repeat(100_000);
        let text = format!(r#"{{"type":"ping","id":{deep}}}"#);
        assert_eq!(
            parse_client_message(&text).unwrap_err().code,
            ErrorCode::InvalidJson
        );
    }
}
