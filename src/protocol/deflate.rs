//! permessage-deflate (RFC 7692): choosing what to answer a client's
//! offer, compressing a publication's frame once for every subscriber that
//! negotiated it, and inflating a compressed client message within the
//! hub's message size bound.
//!
//! The hub always answers `server_no_context_takeover`: each message the
//! server sends is compressed with a fresh window, so one compressed frame
//! is valid on every connection and a publication is compressed once, not
//! once per delivery. It also always answers `client_no_context_takeover`,
//! so each client message inflates on its own and a connection keeps no
//! inflate state between messages. The deflate itself is `flate2`'s.

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;

/// The extension's token in `Sec-WebSocket-Extensions`.
pub const EXTENSION: &str = "permessage-deflate";

/// What the hub answers to an acceptable offer (RFC 7692 7.1.1.1 and
/// 7.1.1.2 let the server add both parameters to any offer).
pub const RESPONSE: &str =
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// The tail a sync flush ends a deflate stream with, which RFC 7692 7.2.1
/// has the sender remove and the receiver put back.
const SYNC_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The deflate window the compressor uses: flate2's pure Rust backend
/// always uses the largest, so an offer limiting the server's window below
/// it is declined (RFC 7692 7.1.2.1 lets a server decline).
const SERVER_WINDOW_BITS: u8 = 15;

/// Whether `offers` (the values of every `Sec-WebSocket-Extensions` header
/// of the request) hold a permessage-deflate offer the hub accepts: the
/// first one whose parameters are all known, unrepeated and valid, and
/// that lets the server use a 15-bit window. Invalid offers are declined
/// (the connection goes on uncompressed), as RFC 7692 section 5 allows.
pub fn accepts<'a>(offers: impl IntoIterator<Item = &'a str>) -> bool {
    offers
        .into_iter()
        .flat_map(|header| header.split(','))
        .any(acceptable)
}

/// One offer (`permessage-deflate; param; param=value`).
fn acceptable(offer: &str) -> bool {
    let mut parts = offer.split(';').map(str::trim);
    if !parts
        .next()
        .is_some_and(|name| name.eq_ignore_ascii_case(EXTENSION))
    {
        return false;
    }
    let mut seen: Vec<String> = Vec::new();
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((name, value)) => (name.trim(), Some(unquote(value.trim()))),
            None => (param, None),
        };
        let name = name.to_ascii_lowercase();
        if seen.contains(&name) {
            return false;
        }
        let valid = match (name.as_str(), value) {
            ("server_no_context_takeover" | "client_no_context_takeover", None) => true,
            ("server_max_window_bits", Some(bits)) => window_bits(bits) == Some(SERVER_WINDOW_BITS),
            // The client may take any window we ask for; we ask none (our
            // inflater takes any window).
            ("client_max_window_bits", None) => true,
            ("client_max_window_bits", Some(bits)) => window_bits(bits).is_some(),
            _ => false,
        };
        if !valid {
            return false;
        }
        seen.push(name);
    }
    true
}

/// A parameter value with its optional quotes removed.
fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
}

/// A window size as RFC 7692 spells it: 8 to 15, decimal, no leading zero.
fn window_bits(value: &str) -> Option<u8> {
    if value.starts_with('0') || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok().filter(|bits| (8..=15).contains(bits))
}

/// Compresses frames the server sends. One per hub, used by the fan-out:
/// the compressor's state (hundreds of KiB in the backend) is reset, not
/// reallocated, per publication.
pub struct Deflater {
    compress: Compress,
}

impl std::fmt::Debug for Deflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflater").finish_non_exhaustive()
    }
}

impl Deflater {
    /// A compressor at `level` (1 fastest to 9 smallest).
    pub fn new(level: u32) -> Self {
        Deflater {
            compress: Compress::new(Compression::new(level), false),
        }
    }

    /// The compressed (RSV1) frame of `frame`, a final unmasked text frame
    /// as [`super::frame`] makes them; `None` when the compressed frame
    /// would not be smaller (the uncompressed one is then sent: RFC 7692
    /// lets every message choose).
    pub fn deflate_frame(&mut self, frame: &[u8]) -> Option<Bytes> {
        let payload = payload_of(frame)?;
        self.compress.reset();
        let mut out = Vec::with_capacity(payload.len() / 2 + 64);
        let mut input = payload;
        loop {
            let before = self.compress.total_in();
            let status = self
                .compress
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .ok()?;
            let used = usize::try_from(self.compress.total_in() - before).ok()?;
            input = input.get(used..)?;
            let full = out.len() == out.capacity();
            if input.is_empty() && !full {
                break;
            }
            if status == Status::BufError && !full {
                return None;
            }
            out.reserve(out.capacity().max(64));
        }
        if out.ends_with(&SYNC_TAIL) {
            out.truncate(out.len() - SYNC_TAIL.len());
        }
        let header = FrameHeader {
            is_final: true,
            rsv1: true,
            opcode: OpCode::Data(Data::Text),
            ..FrameHeader::default()
        };
        let len = out.len() as u64;
        let mut wire = Vec::with_capacity(header.len(len) + out.len());
        // Writing into a Vec cannot fail.
        let _ = header.format(len, &mut wire);
        wire.extend_from_slice(&out);
        (wire.len() < frame.len()).then(|| Bytes::from(wire))
    }
}

/// The payload of one unmasked frame.
fn payload_of(frame: &[u8]) -> Option<&[u8]> {
    let mut cursor = std::io::Cursor::new(frame);
    let (header, len) = FrameHeader::parse(&mut cursor).ok()??;
    if header.mask.is_some() {
        return None;
    }
    let start = usize::try_from(cursor.position()).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    frame.get(start..end)
}

/// Why a compressed client message was not inflated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// It inflates to more than the message size bound (close 1009).
    TooLarge,
    /// It is not a valid deflate stream (close 1007).
    Invalid,
}

/// Inflates one compressed client message (`client_no_context_takeover`:
/// each on its own), stopping as soon as the output passes `max_len`, so a
/// small message that inflates hugely (a zip bomb) costs at most
/// `max_len` bytes.
///
/// # Errors
/// [`InflateError::TooLarge`] past `max_len`, [`InflateError::Invalid`]
/// for data that is not deflate.
pub fn inflate_message(compressed: &[u8], max_len: usize) -> Result<Vec<u8>, InflateError> {
    let mut decompress = Decompress::new(false);
    let mut out = Vec::with_capacity(
        compressed
            .len()
            .saturating_mul(2)
            .clamp(64, max_len.max(64)),
    );
    for (part, flush) in [
        (compressed, FlushDecompress::None),
        (&SYNC_TAIL[..], FlushDecompress::Sync),
    ] {
        let mut input = part;
        loop {
            let before = decompress.total_in();
            let status = decompress
                .decompress_vec(input, &mut out, flush)
                .map_err(|_| InflateError::Invalid)?;
            let used = usize::try_from(decompress.total_in() - before)
                .map_err(|_| InflateError::Invalid)?;
            input = input.get(used..).ok_or(InflateError::Invalid)?;
            if out.len() > max_len {
                return Err(InflateError::TooLarge);
            }
            let full = out.len() == out.capacity();
            if full {
                // One byte past the bound is enough to know it is over.
                let room = out.capacity().min(max_len + 1 - out.len()).max(1);
                out.reserve(room);
                continue;
            }
            if input.is_empty() || status == Status::StreamEnd {
                break;
            }
            if status == Status::BufError {
                return Err(InflateError::Invalid);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_are_accepted_or_declined_per_rfc_7692() {
        for offer in [
            "permessage-deflate",
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; server_max_window_bits=15; client_max_window_bits=10",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            "x-webkit-deflate-frame, permessage-deflate",
            "permessage-deflate; server_max_window_bits=\"15\"",
            // The first offer is invalid, the fallback is taken.
            "permessage-deflate; server_max_window_bits=10, permessage-deflate",
        ] {
            assert!(accepts([offer]), "{offer}");
        }
        for offer in [
            "",
            "x-webkit-deflate-frame",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=10",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; client_max_window_bits=09",
            "permessage-deflate; unknown_param",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover=1",
        ] {
            assert!(!accepts([offer]), "{offer}");
        }
    }

    #[test]
    fn a_deflated_frame_inflates_to_its_payload() {
        let data = format!("[{}]", "{\"odds\":1.25},".repeat(200));
        let frame = crate::protocol::frame::encode_publication("odds", 7, &data);
        let text = crate::protocol::publication_frame("odds", 7, &data);
        let mut deflater = Deflater::new(6);
        for _ in 0..2 {
            let wire = deflater.deflate_frame(&frame).unwrap();
            assert!(wire.len() < frame.len() / 5);
            let mut cursor = std::io::Cursor::new(&wire[..]);
            let (header, len) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
            assert!(header.rsv1 && header.is_final);
            let start = cursor.position() as usize;
            assert_eq!(start + len as usize, wire.len());
            let inflated = inflate_message(&wire[start..], 1 << 20).unwrap();
            assert_eq!(inflated, text.as_bytes());
        }
    }

    #[test]
    fn inflate_stops_at_the_bound() {
        let mut deflater = Deflater::new(9);
        let data = format!("\"{}\"", "a".repeat(1_000_000));
        let frame = crate::protocol::frame::encode_publication("t", 1, &data);
        let wire = deflater.deflate_frame(&frame).unwrap();
        let payload = payload_of(&wire).unwrap();
        assert!(payload.len() < 5_000);
        assert_eq!(
            inflate_message(payload, 64 * 1024),
            Err(InflateError::TooLarge)
        );
        assert_eq!(
            inflate_message(b"\xff\xff\xff\xff", 1024),
            Err(InflateError::Invalid)
        );
    }
}
