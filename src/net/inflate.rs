//! The read side of permessage-deflate: a client that negotiated it may
//! send compressed messages (RSV1 set; Chromium compresses everything),
//! and tungstenite 0.30 has no deflate support (it fails a connection on
//! any RSV bit). [`InflatingStream`] sits between the socket and tungstenite
//! and hands tungstenite each compressed message as the plain frame it
//! stands for, so the rest of the read path (rate limits, protocol
//! messages, close codes) is the same for every client.
//!
//! Under `client_no_context_takeover` (which the hub always answers) each
//! message inflates on its own, so nothing is kept between messages but
//! the message being collected. Both the compressed message and what it
//! inflates to are bounded by `max_message_bytes`; past it tungstenite is
//! handed a frame header over its own bound, which closes the connection
//! with 1009 exactly as an uncompressed message too large would. A message
//! that is not valid deflate gets 1007 the same way (a payload that is not
//! UTF-8), and a compressed message broken by another data frame gets 1002
//! (a continuation frame with nothing to continue). Writes pass straight
//! through.

use std::io::{self, Cursor};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;

use crate::core::outbox::FrameEncoding;
use crate::net::stream::ClientStream;
use crate::protocol::deflate::{inflate_message, InflateError};

/// Bytes asked of the socket per read while frames are parsed here.
const READ_CHUNK_BYTES: usize = 4096;

/// A client's stream (TCP or TLS) as tungstenite reads it.
#[derive(Debug)]
pub(crate) struct InflatingStream {
    inner: ClientStream,
    /// Only for a client that negotiated permessage-deflate; otherwise the
    /// stream is the socket itself.
    inflate: Option<Box<Inflating>>,
}

/// Reassembly state of a compressing client's frames.
#[derive(Debug)]
struct Inflating {
    /// Bytes read from the socket and not yet looked at.
    raw: BytesMut,
    /// Bytes ready for tungstenite.
    ready: BytesMut,
    /// Payload bytes of an uncompressed frame still to copy as they are.
    passthrough: u64,
    /// The compressed message being collected: its opcode and unmasked
    /// payload so far.
    message: Option<(Data, Vec<u8>)>,
    /// `max_message_bytes`: bounds the compressed and the inflated size.
    max_len: usize,
    /// Set once a refusal was handed to tungstenite: bytes then pass
    /// through untouched (tungstenite has failed the connection).
    failed: bool,
}

/// What tungstenite is handed in place of a message it must refuse.
enum Refusal {
    /// A header over its size bound: 1009.
    TooLarge,
    /// A text frame that is not UTF-8: 1007.
    Invalid,
    /// A continuation with nothing to continue: 1002.
    Protocol,
}

impl InflatingStream {
    /// The stream of a client with `encoding`; `early` holds bytes the
    /// client sent right after its request head.
    pub(crate) fn new(
        inner: ClientStream,
        encoding: FrameEncoding,
        early: Vec<u8>,
        max_len: usize,
    ) -> (Self, Vec<u8>) {
        match encoding {
            FrameEncoding::Plain => (
                InflatingStream {
                    inner,
                    inflate: None,
                },
                early,
            ),
            FrameEncoding::Deflate => {
                let inflate = Inflating {
                    raw: BytesMut::from(&early[..]),
                    ready: BytesMut::new(),
                    passthrough: 0,
                    message: None,
                    max_len,
                    failed: false,
                };
                let stream = InflatingStream {
                    inner,
                    inflate: Some(Box::new(inflate)),
                };
                (stream, Vec::new())
            }
        }
    }

    /// The stream under it, for writes that bypass tungstenite.
    pub(crate) fn inner_mut(&mut self) -> &mut ClientStream {
        &mut self.inner
    }
}

impl Inflating {
    /// Moves what it can from `raw` to `ready`; `false` when more bytes
    /// from the socket are needed first.
    fn step(&mut self) -> bool {
        if self.failed {
            let all = self.raw.split();
            self.ready.extend_from_slice(&all);
            return !all.is_empty();
        }
        if self.passthrough > 0 {
            let n = usize::try_from(self.passthrough)
                .unwrap_or(usize::MAX)
                .min(self.raw.len());
            let bytes = self.raw.split_to(n);
            self.ready.extend_from_slice(&bytes);
            self.passthrough -= n as u64;
            return n > 0;
        }
        let mut cursor = Cursor::new(&self.raw[..]);
        let (header, len) = match FrameHeader::parse(&mut cursor) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => return false,
            // tungstenite parses the same bytes and fails the same way.
            Err(_) => {
                self.failed = true;
                return self.step();
            }
        };
        let header_len = usize::try_from(cursor.position()).unwrap_or(usize::MAX);
        let compressed = match header.opcode {
            OpCode::Data(Data::Continue) => self.message.is_some(),
            OpCode::Data(_) => header.rsv1,
            OpCode::Control(_) => false,
        };
        if !compressed {
            if matches!(header.opcode, OpCode::Data(_)) && self.message.is_some() {
                self.refuse(Refusal::Protocol);
                return true;
            }
            let head = self.raw.split_to(header_len);
            self.ready.extend_from_slice(&head);
            self.passthrough = len;
            return true;
        }
        let so_far = self.message.as_ref().map_or(0, |(_, m)| m.len() as u64);
        if so_far.saturating_add(len) > self.max_len as u64 {
            self.refuse(Refusal::TooLarge);
            return true;
        }
        // Bounded by `max_len` just above.
        let total = header_len + usize::try_from(len).unwrap_or(usize::MAX);
        if self.raw.len() < total {
            self.raw.reserve(total - self.raw.len());
            return false;
        }
        self.raw.advance(header_len);
        let mut payload = self.raw.split_to(total - header_len);
        if let Some(mask) = header.mask {
            for (i, byte) in payload.iter_mut().enumerate() {
                *byte ^= mask[i % 4];
            }
        }
        let (_, message) = self.message.get_or_insert_with(|| {
            let data = match header.opcode {
                OpCode::Data(data) => data,
                OpCode::Control(_) => Data::Binary,
            };
            (data, Vec::new())
        });
        message.extend_from_slice(&payload);
        if header.is_final {
            if let Some((data, compressed)) = self.message.take() {
                match inflate_message(&compressed, self.max_len) {
                    Ok(plain) => self.hand_over(data, &plain),
                    Err(InflateError::TooLarge) => self.refuse(Refusal::TooLarge),
                    Err(InflateError::Invalid) => self.refuse(Refusal::Invalid),
                }
            }
        }
        true
    }

    /// Queues `payload` for tungstenite as one final frame, masked with
    /// a zero key (a server reads only masked frames; XOR with zeros
    /// leaves the payload as it is).
    fn hand_over(&mut self, data: Data, payload: &[u8]) {
        self.frame(data, payload.len() as u64);
        self.ready.extend_from_slice(payload);
    }

    fn frame(&mut self, data: Data, len: u64) {
        let header = FrameHeader {
            is_final: true,
            opcode: OpCode::Data(data),
            mask: Some([0; 4]),
            ..FrameHeader::default()
        };
        let mut head = Vec::with_capacity(14);
        // Writing into a Vec cannot fail.
        let _ = header.format(len, &mut head);
        self.ready.extend_from_slice(&head);
    }

    fn refuse(&mut self, refusal: Refusal) {
        match refusal {
            Refusal::TooLarge => self.frame(Data::Text, self.max_len as u64 + 1),
            Refusal::Invalid => self.hand_over(Data::Text, &[0xff]),
            Refusal::Protocol => self.hand_over(Data::Continue, &[]),
        }
        self.message = None;
        self.failed = true;
    }
}

impl AsyncRead for InflatingStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(inflate) = this.inflate.as_deref_mut() else {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        };
        loop {
            if !inflate.ready.is_empty() {
                let n = inflate.ready.len().min(buf.remaining());
                buf.put_slice(&inflate.ready.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if inflate.step() {
                continue;
            }
            let mut chunk = [0; READ_CHUNK_BYTES];
            let mut read = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) => {
                    if read.filled().is_empty() {
                        // End of stream: tungstenite sees it too.
                        return Poll::Ready(Ok(()));
                    }
                    inflate.raw.extend_from_slice(read.filled());
                }
                other => return other,
            }
        }
    }
}

impl AsyncWrite for InflatingStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
