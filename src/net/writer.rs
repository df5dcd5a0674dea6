//! Writes a client's queued frames to its socket: frames arrive already
//! encoded (once per publication, shared by every subscriber), and a batch
//! goes out in as few `writev` calls as the socket takes.
//!
//! tungstenite keeps the handshake, the reading side and the control
//! frames (pings, pongs, close); only the copy of publication bytes into a
//! per-connection buffer is skipped. The two never interleave: the writer
//! is owned by [`crate::net::socket::ClientSocket`], which keeps that rule.
//!
//! The writer also tells the client's [`Outbox`] what it finished writing
//! (its bounds count frames being written) and whether the socket takes
//! bytes at all, so that the fan-out's pacing never waits for a client
//! that does not read.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::pin::{pin, Pin};
use std::task::Poll;

use bytes::Buf;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::net::stream::ClientStream;

use crate::core::outbox::{publications_in, OutFrame, Outbox, WriteProgress};
use crate::core::stats::Counters;

/// Queue entries handed to one `writev`: a run of publications is one
/// entry, so this carries a large batch per syscall, well under the
/// kernel's `IOV_MAX` (1024). The slices live on the stack only while the
/// write is polled, never in the connection's future.
const MAX_IOVECS: usize = 64;

/// One connection's frames on their way out.
#[derive(Debug, Default)]
pub struct FrameWriter {
    /// Frames not yet fully written, oldest first. The front one may be
    /// partly written (its `wire` was advanced past what went out).
    pending: VecDeque<OutFrame>,
    /// Whether the front frame is partly written, so that it must be
    /// finished before anything else is written.
    front_started: bool,
}

impl FrameWriter {
    /// The queue to append newly drained frames to.
    pub fn pending_mut(&mut self) -> &mut VecDeque<OutFrame> {
        &mut self.pending
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Publications still waiting (for the `dropped` counter when the
    /// connection ends).
    pub fn pending_publications(&self) -> u64 {
        publications_in(&self.pending)
    }

    /// Writes every pending frame. Cancel-safe: if the future is dropped,
    /// what was written is accounted for and the rest stays pending.
    ///
    /// # Errors
    /// The socket's error; the connection is then unusable.
    pub async fn write_all(
        &mut self,
        stream: &mut ClientStream,
        outbox: &Outbox,
        counters: &Counters,
    ) -> io::Result<()> {
        while !self.pending.is_empty() {
            let pending = &self.pending;
            let written = watched(
                outbox.progress(),
                poll_fn(|cx| {
                    let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                    let mut count = 0;
                    for (slice, frame) in slices.iter_mut().zip(pending) {
                        *slice = IoSlice::new(&frame.wire);
                        count += 1;
                    }
                    Pin::new(&mut *stream).poll_write_vectored(cx, &slices[..count])
                }),
            )
            .await?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.consume(written, outbox, counters);
        }
        Ok(())
    }

    /// Finishes only the half-written front frame, if any.
    ///
    /// # Errors
    /// The socket's error.
    pub async fn finish_frame(
        &mut self,
        stream: &mut ClientStream,
        outbox: &Outbox,
        counters: &Counters,
    ) -> io::Result<()> {
        while self.front_started {
            let Some(front) = self.pending.front() else {
                break;
            };
            let written = stream.write(&front.wire).await?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.consume(written, outbox, counters);
        }
        Ok(())
    }

    /// Drops `written` bytes from the front, counting finished frames and
    /// handing their places in the bounds back to `outbox`.
    fn consume(&mut self, mut written: usize, outbox: &Outbox, counters: &Counters) {
        let mut publications = 0;
        let mut bytes = 0;
        let mut frames = 0;
        let mut frame_bytes = 0;
        while written > 0 {
            let Some(front) = self.pending.front_mut() else {
                break;
            };
            if front.wire.len() > written {
                front.wire.advance(written);
                self.front_started = true;
                break;
            }
            written -= front.wire.len();
            frames += front.frames();
            frame_bytes += front.len;
            if front.publications > 0 {
                publications += u64::from(front.publications);
                bytes += front.len as u64;
            }
            self.pending.pop_front();
            self.front_started = false;
        }
        if frames > 0 {
            outbox.written(frames, frame_bytes);
        }
        Counters::add(&counters.sent, publications);
        Counters::add(&counters.sent_bytes, bytes);
    }
}

/// Polls `write` (one write to the client's socket), telling `progress`
/// whether the socket refused bytes (`Pending`) or took them.
pub async fn watched<F: Future>(progress: &WriteProgress, write: F) -> F::Output {
    let mut write = pin!(write);
    poll_fn(|cx| match write.as_mut().poll(cx) {
        Poll::Pending => {
            progress.blocked();
            Poll::Pending
        }
        ready => {
            progress.progressed();
            ready
        }
    })
    .await
}
