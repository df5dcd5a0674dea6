//! The properties the fuzz targets check, kept here so that the targets
//! (nightly, libFuzzer) and the regression tests (`cargo test` on any
//! toolchain) check exactly the same thing.
//!
//! - [`check_client_message`]: `parse_client_message` on any text never
//!   panics, fails only with a code protocol v1 documents for text frames,
//!   agrees with a plain JSON parse about what it saw, produces bounded
//!   error frames and valid JSON answers, and what it accepts round-trips.
//! - [`check_query`]: `topics_from_query` never panics and returns only
//!   non-empty names without commas.
//! - [`NearValid`]: a structured client message, almost right, that the
//!   structured target renders and checks against the outcome its shape
//!   prescribes.

use arbitrary::Arbitrary;
use serde_json::Value;
use wshub::protocol::{
    error_frame, parse_client_message, pong_frame, topics_from_query, ClientMessage, ErrorCode,
};

/// Largest error frame the server may send in answer to anything: the
/// message quotes at most 64 characters of the client's text, so a client
/// cannot make the server echo a large payload back.
pub const MAX_ERROR_FRAME_BYTES: usize = 2048;

/// The codes a text frame can earn (`binary_not_supported` and
/// `rate_limited` come from the connection, never from the parser).
const TEXT_FRAME_CODES: [&str; 5] = [
    "invalid_json",
    "unknown_type",
    "invalid_topics",
    "invalid_since",
    "invalid_token",
];

/// Checks every property of `parse_client_message` on `text`; panics (the
/// fuzzer's crash) on the first one broken.
pub fn check_client_message(text: &str) {
    let parsed = parse_client_message(text);
    let plain = serde_json::from_str::<Value>(text).ok();
    match parsed {
        Ok(message) => check_accepted(text, &message, plain.as_ref()),
        Err(error) => {
            let frame = error_frame(&error);
            assert!(
                TEXT_FRAME_CODES.contains(&error.code.as_str()),
                "undocumented code for a text frame: {error:?}"
            );
            assert!(
                frame.len() <= MAX_ERROR_FRAME_BYTES,
                "error frame of {} bytes",
                frame.len()
            );
            let value: Value = serde_json::from_str(&frame).expect("error frame is JSON");
            assert_eq!(value["type"], "error");
            assert_eq!(value["error"], error.code.as_str());
            check_rejected(error.code, plain.as_ref());
        }
    }
}

/// What was accepted must be what a plain parse sees, and must round-trip.
fn check_accepted(text: &str, message: &ClientMessage, plain: Option<&Value>) {
    let kind = match message {
        ClientMessage::Ping { .. } => "ping",
        ClientMessage::Subscribe { .. } => "subscribe",
        ClientMessage::Unsubscribe(_) => "unsubscribe",
        ClientMessage::Refresh { .. } => "refresh",
    };
    // serde_json::Value refuses numbers beyond f64 (e.g. an id of 1e400)
    // that the parser accepts as raw JSON; only compare when it parsed.
    if let Some(value) = plain {
        assert!(value.is_object(), "accepted a non-object: {text:?}");
        assert_eq!(value["type"], kind, "accepted with another type: {text:?}");
        match message {
            ClientMessage::Ping { id: Some(id) } => {
                let id: Value = serde_json::from_str(id).expect("echoed id is JSON");
                assert_eq!(Some(&id), value.get("id"));
            }
            ClientMessage::Ping { id: None } => assert!(value.get("id").is_none()),
            ClientMessage::Subscribe { topics, .. } | ClientMessage::Unsubscribe(topics) => {
                let listed: Vec<String> =
                    serde_json::from_value(value["topics"].clone()).expect("topics are strings");
                assert_eq!(topics, &listed);
            }
            ClientMessage::Refresh { token } => {
                assert_eq!(value["token"].as_str(), Some(token.as_str()));
            }
        }
    }
    if let ClientMessage::Ping { id } = message {
        let pong = pong_frame(id.as_deref());
        assert!(
            wshub::protocol::validate_json(&pong).is_ok(),
            "pong is not JSON: {pong:?}"
        );
    }
    let again = parse_client_message(&render(message));
    assert_eq!(again.as_ref(), Ok(message), "does not round-trip: {text:?}");
}

/// A refusal must be the one the plain parse calls for.
fn check_rejected(code: ErrorCode, plain: Option<&Value>) {
    let Some(value) = plain else {
        // Not JSON to serde_json either (or a number it cannot hold):
        // only invalid_json is possible, except for the out-of-range
        // numbers that the parser's raw values let through.
        return;
    };
    let Some(object) = value.as_object() else {
        assert_eq!(code, ErrorCode::InvalidJson, "non-object: {value}");
        return;
    };
    let kind = object.get("type").and_then(Value::as_str);
    match code {
        // Duplicate keys: serde_json::Value keeps the last, the parser refuses.
        ErrorCode::InvalidJson => {}
        ErrorCode::UnknownType => assert!(
            !matches!(kind, Some("ping" | "subscribe" | "unsubscribe" | "refresh")),
            "unknown_type for a known type: {value}"
        ),
        ErrorCode::InvalidTopics => assert!(
            matches!(kind, Some("subscribe" | "unsubscribe")),
            "invalid_topics for type {kind:?}"
        ),
        ErrorCode::InvalidSince => assert!(
            kind == Some("subscribe") && object.contains_key("since"),
            "invalid_since without a subscribe's since: {value}"
        ),
        ErrorCode::InvalidToken => assert!(
            kind == Some("refresh") && !object.get("token").is_some_and(Value::is_string),
            "invalid_token for a refresh with a string token: {value}"
        ),
        other => panic!("parser produced {other:?}"),
    }
}

/// A canonical text for an accepted message.
pub fn render(message: &ClientMessage) -> String {
    match message {
        ClientMessage::Ping { id: None } => r#"{"type":"ping"}"#.to_owned(),
        ClientMessage::Ping { id: Some(id) } => format!(r#"{{"type":"ping","id":{id}}}"#),
        ClientMessage::Subscribe { topics, since } if since.is_empty() => {
            topics_message("subscribe", topics)
        }
        ClientMessage::Subscribe { topics, since } => {
            let list = serde_json::to_string(topics).unwrap_or_default();
            let since: serde_json::Map<String, Value> = since
                .iter()
                .map(|(topic, p)| {
                    (
                        topic.clone(),
                        serde_json::json!({"seq": p.seq, "epoch": p.epoch}),
                    )
                })
                .collect();
            format!(
                r#"{{"type":"subscribe","topics":{list},"since":{}}}"#,
                Value::Object(since)
            )
        }
        ClientMessage::Unsubscribe(topics) => topics_message("unsubscribe", topics),
        ClientMessage::Refresh { token } => {
            serde_json::json!({"type": "refresh", "token": token}).to_string()
        }
    }
}

fn topics_message(kind: &str, topics: &[String]) -> String {
    let list = serde_json::to_string(topics).unwrap_or_default();
    format!(r#"{{"type":"{kind}","topics":{list}}}"#)
}

/// Checks `topics_from_query` on `query`.
pub fn check_query(query: &str) {
    for query in [Some(query), None] {
        for topic in topics_from_query(query) {
            assert!(!topic.is_empty(), "empty topic from {query:?}");
            assert!(!topic.contains(','), "comma in {topic:?} from {query:?}");
        }
    }
    // A plain list of valid names comes back as given, in order.
    if !query.is_empty()
        && query
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-' | b','))
    {
        let expected: Vec<&str> = query.split(',').filter(|t| !t.is_empty()).collect();
        assert_eq!(
            topics_from_query(Some(&format!("topics={query}"))),
            expected
        );
    }
}

/// A client message that is nearly right: each part may be correct, of
/// the wrong kind, or missing.
#[derive(Debug, Arbitrary)]
pub struct NearValid {
    kind: Kind,
    id: Option<Json>,
    topics: Option<Topics>,
    /// An unknown extra field, which the parser must ignore.
    extra: Option<(String, Json)>,
    /// Repeat the `type` field (serde refuses duplicates: invalid_json).
    duplicate_type: bool,
    /// Reverse the field order.
    reversed: bool,
    /// Whitespace around and between the parts.
    spacing: Spacing,
    /// Cut the text after this many bytes (at a char boundary).
    truncate: Option<u16>,
}

#[derive(Debug, Arbitrary)]
enum Kind {
    Ping,
    Subscribe,
    Unsubscribe,
    Other(String),
    NotAString(Json),
    Missing,
}

#[derive(Debug, Arbitrary)]
enum Topics {
    Names(Vec<String>),
    Mixed(Vec<Json>),
    NotAList(Json),
}

/// A JSON value.
#[derive(Debug, Arbitrary)]
enum Json {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
    /// Nesting up to 4096 brackets deep (far beyond serde_json's
    /// recursion limit of 128, which only typed parsing has).
    Deep(u16),
}

#[derive(Debug, Arbitrary)]
enum Spacing {
    None,
    Spaces,
    Newlines,
}

impl Json {
    fn render(&self, out: &mut String) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Int(i) => out.push_str(&i.to_string()),
            // NaN and infinities have no JSON form; serde_json writes null.
            Json::Float(f) => out.push_str(&serde_json::to_string(f).unwrap_or_default()),
            Json::Str(s) => out.push_str(&quote(s)),
            Json::Array(items) => out.push_str(&array_text(items)),
            Json::Object(fields) => {
                out.push('{');
                for (i, (key, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&quote(key));
                    out.push(':');
                    value.render(out);
                }
                out.push('}');
            }
            Json::Deep(depth) => {
                let depth = deep_levels(*depth);
                out.push_str(&"[".repeat(depth));
                out.push_str(&"]".repeat(depth));
            }
        }
    }

    fn text(&self) -> String {
        let mut out = String::new();
        self.render(&mut out);
        out
    }
}

/// Levels of a [`Json::Deep`]: at least one, so it is always a value.
fn deep_levels(depth: u16) -> usize {
    1 + usize::from(depth % 4096)
}

fn array_text(items: &[Json]) -> String {
    let mut out = String::from("[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        item.render(&mut out);
    }
    out.push(']');
    out
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// What the parser must answer for a [`NearValid`] message.
#[derive(Debug, PartialEq)]
enum Expected {
    Accept,
    Code(ErrorCode),
    /// Truncated, or a case the shape alone does not decide.
    Any,
}

impl NearValid {
    /// The message's text.
    pub fn render(&self) -> String {
        let (open, sep, close) = match self.spacing {
            Spacing::None => ("", "", ""),
            Spacing::Spaces => (" ", " ", " "),
            Spacing::Newlines => ("\n", "\n\t", "\r\n"),
        };
        let mut fields = Vec::new();
        if let Some(kind) = self.kind_text() {
            fields.push(format!(r#""type"{sep}:{sep}{kind}"#));
            if self.duplicate_type {
                fields.push(format!(r#""type":{kind}"#));
            }
        }
        if let Some(id) = &self.id {
            fields.push(format!(r#""id":{}"#, id.text()));
        }
        if let Some(topics) = &self.topics {
            fields.push(format!(r#""topics":{}"#, topics.text()));
        }
        if let Some((key, value)) = self.extra_field() {
            fields.push(format!("{}:{}", quote(key), value.text()));
        }
        if self.reversed {
            fields.reverse();
        }
        let mut text = format!(
            "{open}{{{sep}{}{sep}}}{close}",
            fields.join(&format!(",{sep}"))
        );
        if let Some(cut) = self.truncate {
            let mut cut = usize::from(cut).min(text.len());
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        text
    }

    /// The extra field, unless its name is one the parser knows.
    fn extra_field(&self) -> Option<(&String, &Json)> {
        self.extra
            .as_ref()
            .filter(|(key, _)| !matches!(key.as_str(), "type" | "id" | "topics"))
            .map(|(key, value)| (key, value))
    }

    fn kind_text(&self) -> Option<String> {
        match &self.kind {
            Kind::Ping => Some(quote("ping")),
            Kind::Subscribe => Some(quote("subscribe")),
            Kind::Unsubscribe => Some(quote("unsubscribe")),
            Kind::Other(s) => Some(quote(s)),
            Kind::NotAString(json) => Some(json.text()),
            Kind::Missing => None,
        }
    }

    fn expected(&self) -> Expected {
        if self.truncate.is_some() {
            return Expected::Any;
        }
        // Nesting depth does not matter: the parser skips over values it
        // keeps raw (`id`, unknown fields) without recursing.
        if self.duplicate_type && !matches!(self.kind, Kind::Missing) {
            return Expected::Code(ErrorCode::InvalidJson);
        }
        let topics_ok = match &self.topics {
            Some(Topics::Names(_)) => true,
            Some(Topics::Mixed(items)) => items.iter().all(|j| matches!(j, Json::Str(_))),
            Some(Topics::NotAList(_)) | None => false,
        };
        match &self.kind {
            Kind::Ping => Expected::Accept,
            Kind::Subscribe | Kind::Unsubscribe if topics_ok => Expected::Accept,
            Kind::Subscribe | Kind::Unsubscribe => Expected::Code(ErrorCode::InvalidTopics),
            Kind::Other(s) if matches!(s.as_str(), "ping" | "subscribe" | "unsubscribe") => {
                Expected::Any
            }
            Kind::Other(_) | Kind::NotAString(_) | Kind::Missing => {
                Expected::Code(ErrorCode::UnknownType)
            }
        }
    }

    /// Renders the message, checks the general properties, then the
    /// outcome this shape prescribes.
    pub fn check(&self) {
        let text = self.render();
        check_client_message(&text);
        let got = parse_client_message(&text);
        match self.expected() {
            Expected::Any => {}
            Expected::Accept => assert!(got.is_ok(), "refused {text:?}: {got:?}"),
            Expected::Code(code) => {
                assert_eq!(got.as_ref().map_err(|e| e.code), Err(code), "for {text:?}")
            }
        }
    }
}

impl Topics {
    fn text(&self) -> String {
        match self {
            Topics::Names(names) => serde_json::to_string(names).unwrap_or_default(),
            Topics::Mixed(items) => array_text(items),
            Topics::NotAList(json) => match json {
                // An array of strings (or the empty array) would be a
                // valid list after all.
                Json::Array(_) => "{}".to_owned(),
                Json::Deep(_) => format!("[{}]", json.text()),
                other => other.text(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    //! Replays every input in `corpus/` and `regressions/` through the same
    //! checks as the fuzzers, on the stable toolchain.

    use std::path::Path;

    use super::*;

    fn replay(dir: &str, check: fn(&str)) -> usize {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return 0;
        };
        let mut n = 0;
        for entry in entries.flatten() {
            let bytes = std::fs::read(entry.path()).expect("readable input");
            if let Ok(text) = std::str::from_utf8(&bytes) {
                check(text);
                n += 1;
            }
        }
        n
    }

    #[test]
    fn seed_corpus_and_regressions_pass_the_checks() {
        let n = replay("corpus/client_message", check_client_message)
            + replay("regressions/client_message", check_client_message);
        assert!(n > 0, "no inputs replayed");
        replay("corpus/query_topics", check_query);
        replay("regressions/query_topics", check_query);
    }

    #[test]
    fn hand_picked_edge_cases() {
        for text in [
            "",
            "{",
            "[]",
            "null",
            "{}",
            r#"{"type":"ping","type":"ping"}"#,
            r#"{"type":"ping","id":1e400}"#,
            r#"{"type":"subscribe","topics":["a\u0000b","\n"]}"#,
            r#"{"type":"unsubscribe","topics":[]}"#,
            r#" {"topics":["x"],"type":"subscribe"} "#,
            &format!(r#"{{"type":"ping","id":{}}}"#, "[".repeat(100_000)),
            &format!(r#"{{"type":"{}"}}"#, "\u{1F600}".repeat(1000)),
        ] {
            check_client_message(text);
        }
        for query in [
            "",
            "topics=",
            "topics=a%2Cb",
            "topics=%zz,,",
            "a=1&topics=x&topics=y",
        ] {
            check_query(query);
        }
    }
}
