//! Zero-allocation parser for server-to-client WebSocket frames (RFC 6455 §5.2)
//! and a byte scanner that pulls `"seq":N` and `"t":N` out of a JSON payload.
//!
//! Frames from a server are never masked. The parser works on a byte slice that
//! holds zero or more complete frames followed by at most one incomplete frame;
//! it reports how many bytes it consumed so the caller can carry the incomplete
//! tail over to the next read.

use std::cell::Cell;

use memchr::memmem;

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub fin: bool,
    pub opcode: u8,
    /// RSV1: the message is compressed (permessage-deflate, RFC 7692); only
    /// ever true from `parse_one_ext(.., true)`.
    pub rsv1: bool,
    pub payload: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// The server set the MASK bit (forbidden for server-to-client frames).
    Masked,
    /// RSV bits set although no extension was negotiated (or RSV2/RSV3, or
    /// RSV1 on a control or continuation frame, with permessage-deflate).
    Reserved,
    /// Unknown opcode.
    Opcode(u8),
    /// 64-bit length with the most significant bit set, or absurdly large.
    Length,
}

/// Upper bound on a single frame we are willing to buffer (guards against garbage).
pub const MAX_FRAME: u64 = 256 << 20;

/// Parse one frame at the start of `buf`.
/// `Ok(None)` means more bytes are needed; `Ok(Some((frame, consumed)))` otherwise.
#[inline]
pub fn parse_one(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, ParseError> {
    parse_one_ext(buf, false)
}

/// `parse_one`, with RSV1 allowed on the first frame of a data message when
/// `deflate` (permessage-deflate was negotiated): it is reported in `Frame::rsv1`.
#[inline]
pub fn parse_one_ext(buf: &[u8], deflate: bool) -> Result<Option<(Frame<'_>, usize)>, ParseError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let b0 = buf[0];
    let b1 = buf[1];
    let opcode = b0 & 0x0F;
    let rsv1 = b0 & 0x40 != 0;
    if b0 & 0x30 != 0 || (rsv1 && !(deflate && (opcode == OP_TEXT || opcode == OP_BINARY))) {
        return Err(ParseError::Reserved);
    }
    if b1 & 0x80 != 0 {
        return Err(ParseError::Masked);
    }
    match opcode {
        OP_CONT | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG => {}
        other => return Err(ParseError::Opcode(other)),
    }
    let len7 = (b1 & 0x7F) as u64;
    let (hdr, len) = match len7 {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (4usize, u16::from_be_bytes([buf[2], buf[3]]) as u64)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (10usize, u64::from_be_bytes(b))
        }
        n => (2usize, n),
    };
    if len > MAX_FRAME {
        return Err(ParseError::Length);
    }
    let total = hdr + len as usize;
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some((
        Frame {
            fin: b0 & 0x80 != 0,
            opcode,
            rsv1,
            payload: &buf[hdr..total],
        },
        total,
    )))
}

/// Parse all complete frames in `buf`, calling `on_frame` for each.
/// Returns the number of bytes consumed (the rest is an incomplete frame).
/// `on_frame` returns `false` to stop early (e.g. after a close frame).
#[inline]
pub fn parse_all<'a, F>(buf: &'a [u8], on_frame: F) -> Result<usize, ParseError>
where
    F: FnMut(Frame<'a>) -> bool,
{
    parse_all_ext(buf, false, on_frame)
}

/// `parse_all` with `parse_one_ext`'s `deflate`.
#[inline]
pub fn parse_all_ext<'a, F>(
    buf: &'a [u8],
    deflate: bool,
    mut on_frame: F,
) -> Result<usize, ParseError>
where
    F: FnMut(Frame<'a>) -> bool,
{
    let mut pos = 0;
    while let Some((frame, n)) = parse_one_ext(&buf[pos..], deflate)? {
        pos += n;
        if !on_frame(frame) {
            break;
        }
    }
    Ok(pos)
}

/// Finds the first `"seq":` and the first `"t":` in a JSON text by scanning bytes.
///
/// A connection's messages share one layout, so each scanner remembers
/// where it last found `"seq":` and `"t":` and looks there first; only when
/// the bytes there differ (the layout moved, e.g. `seq` gained a digit) does
/// it search the payload again. That keeps the per-message cost at a few
/// byte compares, which matters at millions of messages per second on one
/// core. The assumption it rests on: within one connection, a field found at
/// an offset is the first occurrence whenever the same bytes are there again
/// (true for every server's fixed envelope here).
pub struct Scanner {
    seq: memmem::Finder<'static>,
    t: memmem::Finder<'static>,
    connected: memmem::Finder<'static>,
    seq_at: Cell<usize>,
    t_at: Cell<usize>,
}

impl Default for Scanner {
    fn default() -> Self {
        Self::new()
    }
}

/// The value of eight ASCII digits, or None if any byte is not a digit
/// (SWAR: one load and a few multiplies instead of eight dependent steps;
/// the timestamps the publishers send have 19 digits).
#[inline]
fn eight_digits(chunk: &[u8]) -> Option<u64> {
    let v = u64::from_le_bytes(chunk[..8].try_into().ok()?);
    let high = v & 0xF0F0_F0F0_F0F0_F0F0;
    let carried = (v.wrapping_add(0x0606_0606_0606_0606) & 0xF0F0_F0F0_F0F0_F0F0) >> 4;
    if high | carried != 0x3333_3333_3333_3333 {
        return None;
    }
    // First byte is the most significant digit.
    let v = v - 0x3030_3030_3030_3030;
    let v = v.wrapping_mul(10).wrapping_add(v >> 8);
    let v = ((v & 0x0000_00FF_0000_00FF).wrapping_mul(100 + (1_000_000 << 32)))
        .wrapping_add(((v >> 16) & 0x0000_00FF_0000_00FF).wrapping_mul(1 + (10_000 << 32)))
        >> 32;
    Some(v)
}

#[inline]
fn parse_uint(bytes: &[u8]) -> Option<u64> {
    let mut i = 0;
    while i < bytes.len() && (bytes[i] == b' ' || bytes[i] == b'\t') {
        i += 1;
    }
    let start = i;
    let mut v: u64 = 0;
    while i + 8 <= bytes.len() {
        let Some(eight) = eight_digits(&bytes[i..]) else {
            break;
        };
        v = v.wrapping_mul(100_000_000).wrapping_add(eight);
        i += 8;
    }
    while i < bytes.len() {
        let c = bytes[i];
        if !c.is_ascii_digit() {
            break;
        }
        v = v.wrapping_mul(10).wrapping_add((c - b'0') as u64);
        i += 1;
    }
    if i == start {
        None
    } else {
        Some(v)
    }
}

impl Scanner {
    pub fn new() -> Self {
        Scanner {
            seq: memmem::Finder::new(b"\"seq\":").into_owned(),
            t: memmem::Finder::new(b"\"t\":").into_owned(),
            connected: memmem::Finder::new(b"\"connected\"").into_owned(),
            seq_at: Cell::new(usize::MAX),
            t_at: Cell::new(usize::MAX),
        }
    }

    /// First `"seq":<uint>` in the payload (whitespace after the colon allowed).
    #[inline]
    pub fn seq(&self, p: &[u8]) -> Option<u64> {
        let i = Self::locate(&self.seq, &self.seq_at, b"\"seq\":", p)?;
        parse_uint(&p[i + 6..])
    }

    /// First `"t":<uint>` in the payload.
    #[inline]
    pub fn t(&self, p: &[u8]) -> Option<u64> {
        let i = Self::locate(&self.t, &self.t_at, b"\"t\":", p)?;
        parse_uint(&p[i + 4..])
    }

    /// Where `needle` is in `p`: at the remembered offset if it is still
    /// there, else wherever a search finds it first (then remembered).
    #[inline]
    fn locate(
        finder: &memmem::Finder<'_>,
        at: &Cell<usize>,
        needle: &[u8],
        p: &[u8],
    ) -> Option<usize> {
        let cached = at.get();
        if p.get(cached..cached.wrapping_add(needle.len())) == Some(needle) {
            return Some(cached);
        }
        let found = finder.find(p)?;
        at.set(found);
        Some(found)
    }

    /// Whether this frame is the subscription acknowledgement.
    #[inline]
    pub fn is_ack(&self, p: &[u8]) -> bool {
        self.connected.find(p).is_some()
    }
}

/// Build a server-style (unmasked) frame; used by tests and the reference server.
pub fn encode_frame(out: &mut Vec<u8>, fin: bool, opcode: u8, payload: &[u8]) {
    out.push(if fin { 0x80 } else { 0 } | opcode);
    let n = payload.len();
    if n < 126 {
        out.push(n as u8);
    } else if n <= 0xFFFF {
        out.push(126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
}

/// Build a client (masked) frame.
pub fn encode_client_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    out.push(0x80 | opcode);
    let n = payload.len();
    if n < 126 {
        out.push(0x80 | n as u8);
    } else if n <= 0xFFFF {
        out.push(0x80 | 126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
}

/// Feed one chunk as it came off the socket: `carry` holds the incomplete tail of
/// the previous chunk. This is exactly the logic the connection loop uses
/// (there the chunk is read directly after the carried bytes in a shared buffer).
pub fn feed_chunk<F>(
    carry: &mut Vec<u8>,
    work: &mut Vec<u8>,
    chunk: &[u8],
    on_frame: F,
) -> Result<(), ParseError>
where
    F: FnMut(Frame<'_>) -> bool,
{
    work.clear();
    work.extend_from_slice(carry);
    work.extend_from_slice(chunk);
    let consumed = parse_all(work, on_frame)?;
    carry.clear();
    carry.extend_from_slice(&work[consumed..]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seq: u64, t: u64, pad: usize) -> Vec<u8> {
        format!(
            "{{\"type\":\"message\",\"topic\":\"bench\",\"seq\":{seq},\"data\":{{\"t\":{t},\"pad\":\"{}\"}}}}",
            "x".repeat(pad)
        )
        .into_bytes()
    }

    #[test]
    fn lengths_7_16_64() {
        for pad in [10usize, 200, 70_000] {
            let p = msg(7, 1_700_000_000_000_000_123, pad);
            let mut f = Vec::new();
            encode_frame(&mut f, true, OP_TEXT, &p);
            let hdr = f.len() - p.len();
            assert_eq!(
                hdr,
                if p.len() < 126 {
                    2
                } else if p.len() <= 0xFFFF {
                    4
                } else {
                    10
                }
            );
            let (fr, n) = parse_one(&f).unwrap().unwrap();
            assert_eq!(n, f.len());
            assert!(fr.fin);
            assert_eq!(fr.opcode, OP_TEXT);
            assert_eq!(fr.payload, &p[..]);
            let s = Scanner::new();
            assert_eq!(s.seq(fr.payload), Some(7));
            assert_eq!(s.t(fr.payload), Some(1_700_000_000_000_000_123));
            // every strict prefix is incomplete
            for cut in [0, 1, hdr - 1, hdr, f.len() - 1] {
                assert!(parse_one(&f[..cut]).unwrap().is_none(), "cut {cut}");
            }
        }
    }

    #[test]
    fn exact_16bit_boundaries() {
        for len in [125usize, 126, 127, 65535, 65536] {
            let p = vec![b'a'; len];
            let mut f = Vec::new();
            encode_frame(&mut f, true, OP_TEXT, &p);
            let (fr, n) = parse_one(&f).unwrap().unwrap();
            assert_eq!(n, f.len());
            assert_eq!(fr.payload.len(), len);
        }
    }

    #[test]
    fn split_across_chunks_every_boundary() {
        // A stream of frames of mixed sizes plus a ping, fed in chunks of every size.
        let s = Scanner::new();
        let mut stream = Vec::new();
        let mut expect = Vec::new();
        for (i, pad) in [3usize, 150, 5, 400, 66_000, 1, 126, 20].iter().enumerate() {
            let seq = i as u64 + 1;
            encode_frame(&mut stream, true, OP_TEXT, &msg(seq, 1000 + seq, *pad));
            expect.push((seq, 1000 + seq));
            if i == 2 {
                encode_frame(&mut stream, true, OP_PING, b"hi");
            }
        }
        for chunk in [1usize, 2, 3, 7, 64, 1000, 65536, stream.len()] {
            let mut carry = Vec::new();
            let mut work = Vec::new();
            let mut got = Vec::new();
            let mut pings = 0;
            for c in stream.chunks(chunk) {
                feed_chunk(&mut carry, &mut work, c, |f| {
                    match f.opcode {
                        OP_TEXT => got.push((s.seq(f.payload).unwrap(), s.t(f.payload).unwrap())),
                        OP_PING => {
                            assert_eq!(f.payload, b"hi");
                            pings += 1
                        }
                        _ => panic!("unexpected opcode"),
                    }
                    true
                })
                .unwrap();
            }
            assert!(carry.is_empty(), "chunk {chunk}");
            assert_eq!(got, expect, "chunk {chunk}");
            assert_eq!(pings, 1);
        }
    }

    #[test]
    fn close_frame_and_errors() {
        let mut f = Vec::new();
        encode_frame(&mut f, true, OP_CLOSE, &[0x03, 0xF0, b'x']);
        let (fr, _) = parse_one(&f).unwrap().unwrap();
        assert_eq!(fr.opcode, OP_CLOSE);
        assert_eq!(u16::from_be_bytes([fr.payload[0], fr.payload[1]]), 1008);
        let mut m = Vec::new();
        encode_client_frame(&mut m, OP_TEXT, b"abc", [1, 2, 3, 4]);
        assert_eq!(parse_one(&m), Err(ParseError::Masked));
        assert_eq!(parse_one(&[0x83, 0]), Err(ParseError::Opcode(3)));
        assert_eq!(parse_one(&[0xC1, 0]), Err(ParseError::Reserved));
        // permessage-deflate: RSV1 on a data frame only, never RSV2/RSV3
        let (fr, _) = parse_one_ext(&[0xC1, 0], true).unwrap().unwrap();
        assert!(fr.rsv1 && fr.fin && fr.opcode == OP_TEXT);
        assert!(!parse_one_ext(&[0x81, 0], true).unwrap().unwrap().0.rsv1);
        assert_eq!(parse_one_ext(&[0xA1, 0], true), Err(ParseError::Reserved));
        assert_eq!(parse_one_ext(&[0xC9, 0], true), Err(ParseError::Reserved));
        assert_eq!(parse_one_ext(&[0x40, 0], true), Err(ParseError::Reserved));
    }

    #[test]
    fn swar_digits_parse_like_the_byte_loop() {
        fn naive(b: &[u8]) -> Option<u64> {
            let digits: Vec<u8> = b
                .iter()
                .copied()
                .skip_while(|c| *c == b' ')
                .take_while(u8::is_ascii_digit)
                .collect();
            if digits.is_empty() {
                return None;
            }
            Some(digits.iter().fold(0u64, |v, c| {
                v.wrapping_mul(10).wrapping_add(u64::from(c - b'0'))
            }))
        }
        let mut cases: Vec<String> = vec![
            "0".into(),
            "7,".into(),
            "12345678".into(),
            "123456789}".into(),
            "1764412345123456789,".into(),
            "18446744073709551615".into(),
            "99999999999999999999999".into(),
            "  42".into(),
            "x1".into(),
            "".into(),
            "1234567/".into(),
            "12345678:9".into(),
            "1234:678".into(),
        ];
        let mut seed = 0x2545F4914F6CDD1Du64;
        for _ in 0..2000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 22) as usize;
            let s: String = (0..len)
                .map(|k| char::from(b'0' + ((seed >> (k * 2)) % 10) as u8))
                .collect();
            cases.push(format!("{s}\"pad"));
        }
        for case in &cases {
            assert_eq!(
                parse_uint(case.as_bytes()),
                naive(case.as_bytes()),
                "{case:?}"
            );
        }
    }

    #[test]
    fn scanner_finds_fields_again_when_the_layout_moves() {
        let s = Scanner::new();
        for seq in [9u64, 10, 99, 100, 5, 123_456_789] {
            let msg = format!(
                r#"{{"type":"message","topic":"bench","seq":{seq},"data":{{"t":{},"p":"xx"}}}}"#,
                seq * 3
            );
            assert_eq!(s.seq(msg.as_bytes()), Some(seq));
            assert_eq!(s.t(msg.as_bytes()), Some(seq * 3));
        }
        assert_eq!(s.t(br#"{"seq":1}"#), None);
        assert_eq!(s.seq(b"\"seq\""), None);
    }

    #[test]
    fn scanner_variants() {
        let s = Scanner::new();
        // peer servers: seq inside the payload, spaces allowed after the colon
        assert_eq!(s.seq(br#"{"t":5,"seq":   42,"pad":"x"}"#), Some(42));
        assert_eq!(s.t(br#"{"t":5,"seq":42}"#), Some(5));
        assert_eq!(s.seq(br#"{"t":5,"pad":"x"}"#), None);
        // "topic" must not be mistaken for "t"
        assert_eq!(s.t(br#"{"topic":"t","x":1}"#), None);
        // wshub wrapper: the outer seq comes first
        assert_eq!(
            s.seq(br#"{"type":"message","topic":"t","seq":9,"data":{"seq":3}}"#),
            Some(9)
        );
        assert!(s.is_ack(br#"{"type":"connected","topics":["a"],"rejected":[]}"#));
        assert!(!s.is_ack(br#"{"type":"message"}"#));
    }
}
