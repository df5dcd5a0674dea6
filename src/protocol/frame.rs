//! WebSocket frames as the hub writes them: final, unmasked text frames,
//! encoded once (a publication on the publisher's thread, a reply on its
//! connection's) and then written as they are to every socket.
//!
//! This is the one place that turns text into frame bytes; the header
//! itself is formatted by tungstenite's [`FrameHeader`], so the framing
//! rules are the library's, not ours.

use bytes::Bytes;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;

/// Upper bound of a WebSocket frame header the server writes (opcode
/// byte, 127 and a 64-bit length): what a publication's frame adds to its
/// text, for the publish queue's byte bound.
pub const MAX_FRAME_HEADER_LEN: usize = 10;

/// Encodes JSON text as one final, unmasked WebSocket text frame (a reply
/// to one client).
pub fn encode_text_frame(text: String) -> Bytes {
    text_frame(text.len(), |wire| wire.extend_from_slice(text.as_bytes()))
}

/// One final, unmasked text frame of `len` payload bytes in one
/// allocation: the header formatted by tungstenite's own [`FrameHeader`],
/// then the payload, which `payload` appends.
fn text_frame(len: usize, payload: impl FnOnce(&mut Vec<u8>)) -> Bytes {
    let header = FrameHeader {
        is_final: true,
        opcode: OpCode::Data(Data::Text),
        ..FrameHeader::default()
    };
    let size = header.len(len as u64) + len;
    let mut wire = Vec::with_capacity(size);
    // Writing into a Vec cannot fail.
    let _ = header.format(len as u64, &mut wire);
    payload(&mut wire);
    debug_assert_eq!(wire.len(), size);
    Bytes::from(wire)
}

/// A publication's whole WebSocket frame, with the JSON text of
/// [`super::write_publication`] written straight after the header. Done once per publication, on the
/// publisher's thread, so it is kept to one allocation and one pass over
/// `data`.
pub fn encode_publication(topic: &str, seq: u64, data: &str) -> Bytes {
    let len = super::publication_len(topic, seq, data);
    text_frame(len, |wire| super::write_publication(wire, topic, seq, data))
}

/// A retained value's frame (see [`super::write_retained`]): what a new
/// subscriber is sent of the values a topic keeps. Encoded once, when the
/// publication that carries it is made.
pub fn encode_retained(topic: &str, seq: u64, data: &str) -> Bytes {
    let len = super::retained_len(topic, seq, data);
    text_frame(len, |wire| super::write_retained(wire, topic, seq, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The frame tungstenite itself makes of `text`.
    fn tungstenite_frame(text: String) -> Vec<u8> {
        use tokio_tungstenite::tungstenite::protocol::frame::Frame;
        let frame = Frame::message(Bytes::from(text), OpCode::Data(Data::Text), true);
        let mut wire = Vec::new();
        frame.format(&mut wire).unwrap();
        wire
    }

    #[test]
    fn encoded_frames_are_tungstenites_frames_of_their_text() {
        for (seq, data) in [(1, "1"), (9, "[]"), (10, "{}"), (123_456_789, "\"x\"")] {
            let text = crate::protocol::publication_frame("t", seq, data);
            assert_eq!(
                encode_publication("t", seq, data),
                tungstenite_frame(text),
                "{seq}"
            );
        }
        // Payloads past both short-length thresholds (126 and 65,536).
        for size in [100, 200, 70_000] {
            let data = format!("\"{}\"", "x".repeat(size));
            let text = crate::protocol::publication_frame("topic", u64::MAX, &data);
            assert_eq!(
                encode_publication("topic", u64::MAX, &data),
                tungstenite_frame(text.clone())
            );
            assert_eq!(encode_text_frame(text.clone()), tungstenite_frame(text));
        }
    }

    #[test]
    fn a_retained_frame_is_its_publication_flagged() {
        for data in ["1", "{\"a\":[1,2]}", &format!("\"{}\"", "y".repeat(200))] {
            let wire = encode_retained("odds", 42, data);
            let text = format!(
                r#"{{"type":"message","topic":"odds","seq":42,"retained":true,"data":{data}}}"#
            );
            let value: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(value["retained"], true);
            assert_eq!(wire, tungstenite_frame(text));
        }
    }
}
