//! The client side of permessage-deflate (RFC 7692) for `loadgen --deflate`:
//! the offer, the server's answer, and one inflater per connection.
//!
//! Only inflating: the loadgen's own frames (pong, close) go out uncompressed,
//! which the extension allows (RSV1 clear). The inflater is raw deflate
//! (`flate2`); each message gets the four bytes `00 00 ff ff` the sender
//! stripped (RFC 7692 §7.2.2) appended before it is inflated. With
//! `server_no_context_takeover` each message inflates on its own, so the
//! inflater is reset before every message; without it (Node `ws`'s default)
//! the server's compressor keeps its window across messages and so must ours.

use flate2::{Decompress, FlushDecompress, Status};

/// What the loadgen offers in `Sec-WebSocket-Extensions`.
pub const OFFER: &str = "permessage-deflate; client_max_window_bits";

/// The server's accepted parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    pub server_no_context_takeover: bool,
    pub server_max_window_bits: Option<u8>,
}

/// Parse the server's `Sec-WebSocket-Extensions` answer to `OFFER`.
/// Anything but one `permessage-deflate` with parameters RFC 7692 lets a server
/// answer (and values in range) is an error.
pub fn parse_response(value: &str) -> Result<Negotiated, String> {
    let mut exts = value.split(',').map(str::trim).filter(|e| !e.is_empty());
    let ext = exts.next().ok_or("empty Sec-WebSocket-Extensions")?;
    if exts.next().is_some() {
        return Err(format!("more than one extension accepted: {value}"));
    }
    let mut parts = ext.split(';').map(str::trim);
    if parts.next() != Some("permessage-deflate") {
        return Err(format!("unexpected extension: {value}"));
    }
    let mut n = Negotiated {
        server_no_context_takeover: false,
        server_max_window_bits: None,
    };
    for p in parts.filter(|p| !p.is_empty()) {
        let (k, v) = match p.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim().trim_matches('"'))),
            None => (p, None),
        };
        let bits = |v: Option<&str>| -> Result<u8, String> {
            match v.and_then(|v| v.parse::<u8>().ok()) {
                Some(b @ 8..=15) => Ok(b),
                _ => Err(format!("bad {k} in {value}")),
            }
        };
        match k {
            "server_no_context_takeover" if v.is_none() => n.server_no_context_takeover = true,
            "client_no_context_takeover" if v.is_none() => {}
            "server_max_window_bits" => n.server_max_window_bits = Some(bits(v)?),
            // we offered client_max_window_bits, so the server may name a value
            "client_max_window_bits" => {
                bits(v)?;
            }
            _ => return Err(format!("unexpected parameter {p:?} in {value}")),
        }
    }
    Ok(n)
}

const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// One connection's inflater.
pub struct Inflater {
    d: Decompress,
    reset_each: bool,
    /// The inflated message (reused).
    pub out: Vec<u8>,
}

impl Inflater {
    pub fn new(n: Negotiated) -> Self {
        // A 15-bit window inflates data compressed with any smaller window.
        Inflater {
            d: Decompress::new(false),
            reset_each: n.server_no_context_takeover,
            out: Vec::with_capacity(4096),
        }
    }

    /// Inflate one message (all its frames' payloads, concatenated) into `self.out`.
    pub fn inflate(&mut self, msg: &[u8]) -> Result<&[u8], String> {
        if self.reset_each {
            self.d.reset(false);
        }
        self.out.clear();
        self.feed(msg)?;
        self.feed(&TAIL)?;
        Ok(&self.out)
    }

    fn feed(&mut self, mut input: &[u8]) -> Result<(), String> {
        loop {
            if self.out.capacity() - self.out.len() < 1024 {
                self.out.reserve(self.out.capacity().max(4096));
            }
            let before_in = self.d.total_in();
            let before_out = self.out.len();
            let st = self
                .d
                .decompress_vec(input, &mut self.out, FlushDecompress::Sync)
                .map_err(|e| format!("inflate: {e}"))?;
            let used = (self.d.total_in() - before_in) as usize;
            input = &input[used..];
            if st == Status::StreamEnd {
                // BFINAL set: legal, the next message starts a new stream
                self.d.reset(false);
                if input.is_empty() {
                    return Ok(());
                }
                continue;
            }
            let room_left = self.out.len() < self.out.capacity();
            if input.is_empty() && room_left {
                return Ok(());
            }
            if used == 0 && self.out.len() == before_out && room_left {
                return Err("inflate made no progress".into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compress, Compression, FlushCompress};

    /// Compress one message as a permessage-deflate sender does: sync flush,
    /// the trailing 00 00 ff ff removed.
    fn deflate_msg(c: &mut Compress, msg: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(msg.len() + 64);
        let start_in = c.total_in();
        loop {
            let used = (c.total_in() - start_in) as usize;
            out.reserve(256);
            c.compress_vec(&msg[used..], &mut out, FlushCompress::Sync)
                .unwrap();
            if (c.total_in() - start_in) as usize == msg.len() && out.len() < out.capacity() {
                break;
            }
        }
        assert!(out.ends_with(&TAIL));
        out.truncate(out.len() - 4);
        out
    }

    /// Hex digits from a fixed xorshift: little redundancy inside one
    /// message, all of it between messages (the same pad every time).
    fn noise(len: usize) -> String {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from(b"0123456789abcdef"[(x & 15) as usize])
            })
            .collect()
    }

    fn msg(i: u32, pad: usize) -> Vec<u8> {
        format!(
            "{{\"type\":\"message\",\"topic\":\"bench\",\"seq\":{i},\"data\":{{\"t\":1,\"pad\":\"{}\"}}}}",
            noise(pad)
        )
        .into_bytes()
    }

    #[test]
    fn response_parameters() {
        let n = parse_response(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        )
        .unwrap();
        assert!(n.server_no_context_takeover);
        let n = parse_response("permessage-deflate; client_max_window_bits=15").unwrap();
        assert!(!n.server_no_context_takeover);
        assert_eq!(
            parse_response("permessage-deflate; server_max_window_bits=10")
                .unwrap()
                .server_max_window_bits,
            Some(10)
        );
        assert!(parse_response("permessage-deflate; server_max_window_bits=7").is_err());
        assert!(parse_response("permessage-deflate; foo").is_err());
        assert!(parse_response("x-webkit-deflate-frame").is_err());
        assert!(parse_response("permessage-deflate, permessage-deflate").is_err());
    }

    #[test]
    fn no_context_takeover_each_message_alone() {
        let n = parse_response("permessage-deflate; server_no_context_takeover").unwrap();
        let mut inf = Inflater::new(n);
        for i in 0..20 {
            let m = msg(i, 600);
            let mut c = Compress::new(Compression::new(6), false);
            let z = deflate_msg(&mut c, &m);
            assert!(z.len() < m.len() * 3 / 4);
            assert_eq!(inf.inflate(&z).unwrap(), &m[..]);
        }
    }

    #[test]
    fn context_takeover_keeps_the_window() {
        let n = parse_response("permessage-deflate").unwrap();
        let mut inf = Inflater::new(n);
        let mut c = Compress::new(Compression::new(6), false);
        let mut sizes = vec![];
        for i in 0..50 {
            // large enough to need several output reservations
            let m = msg(i, 20_000);
            let z = deflate_msg(&mut c, &m);
            sizes.push(z.len());
            assert_eq!(inf.inflate(&z).unwrap(), &m[..], "message {i}");
        }
        // later messages refer back into the shared window
        assert!(sizes[10] * 20 < sizes[0], "{sizes:?}");
        // an inflater reset per message cannot read them
        let mut c = Compress::new(Compression::new(6), false);
        let _ = deflate_msg(&mut c, &msg(0, 600));
        let z = deflate_msg(&mut c, &msg(0, 600));
        let mut alone = Inflater::new(
            parse_response("permessage-deflate; server_no_context_takeover").unwrap(),
        );
        assert_ne!(alone.inflate(&z).ok(), Some(&msg(0, 600)[..]));
    }
}
