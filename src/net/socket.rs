//! A client's socket, and the one rule of writing to it: WebSocket frames
//! from two writers never interleave.
//!
//! Two writers share the socket. tungstenite writes its control frames
//! (pongs it answers by itself, our pings, the close frame); the
//! [`FrameWriter`] writes the pre-encoded publications and replies straight
//! from the shared buffers. A frame of one written into the middle of a
//! frame of the other would corrupt the stream, so [`ClientSocket`] owns
//! both and is the only way to reach the socket:
//!
//! - our frames go out only after tungstenite has flushed what it holds;
//! - anything tungstenite may write (a read that answers a ping with a
//!   pong, a ping, a close) waits until our half-written frame, if any, is
//!   finished.

use crate::net::inflate::InflatingStream;
use futures_util::{SinkExt, StreamExt};
use std::collections::VecDeque;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::core::outbox::{OutFrame, Outbox};
use crate::core::stats::Counters;
use crate::net::writer::{watched, FrameWriter};

/// The WebSocket stream of one client, over TCP or TLS (through
/// [`InflatingStream`], which inflates a compressing client's messages).
pub(crate) type Ws = WebSocketStream<InflatingStream>;

/// One client's socket: tungstenite's stream and our frame writer.
pub(crate) struct ClientSocket {
    ws: Ws,
    writer: FrameWriter,
    /// Whether tungstenite may hold bytes it has not written (a pong it
    /// queued while reading): only then must our frames wait for its
    /// flush. Most wake-ups of a subscriber only write, and skip it.
    ws_may_hold: bool,
}

impl ClientSocket {
    pub(crate) fn new(ws: Ws) -> Self {
        ClientSocket {
            ws,
            writer: FrameWriter::default(),
            ws_may_hold: true,
        }
    }

    /// The queue to append frames drained from the outbox to.
    pub(crate) fn pending_mut(&mut self) -> &mut VecDeque<OutFrame> {
        self.writer.pending_mut()
    }

    /// Whether none of our frames waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.writer.is_empty()
    }

    /// Publications still waiting (lost when the connection ends).
    pub(crate) fn pending_publications(&self) -> u64 {
        self.writer.pending_publications()
    }

    /// Writes every pending frame, after what tungstenite holds (pongs).
    /// Cancel-safe, as [`FrameWriter::write_all`].
    ///
    /// # Errors
    /// The socket's error; the connection is then unusable.
    pub(crate) async fn write_pending(
        &mut self,
        outbox: &Outbox,
        counters: &Counters,
    ) -> std::io::Result<()> {
        if self.ws_may_hold {
            watched(outbox.progress(), self.ws.flush())
                .await
                .map_err(std::io::Error::other)?;
            self.ws_may_hold = false;
        }
        let stream = self.ws.get_mut().inner_mut();
        self.writer.write_all(stream, outbox, counters).await?;
        // TLS may hold the last records of the batch (see `stream`).
        watched(outbox.progress(), tokio::io::AsyncWriteExt::flush(stream)).await
    }

    /// The client's next message. A read can make tungstenite write (it
    /// answers pings by itself), so a frame of ours cut short is finished
    /// first.
    pub(crate) async fn next(
        &mut self,
        outbox: &Outbox,
        counters: &Counters,
    ) -> Option<Result<Message, WsError>> {
        if let Err(error) = self
            .writer
            .finish_frame(self.ws.get_mut().inner_mut(), outbox, counters)
            .await
        {
            return Some(Err(WsError::Io(error)));
        }
        let message = self.ws.next().await;
        // A ping read leaves its pong with tungstenite (it writes it on
        // its next read or flush). It queues one only in the poll that
        // returns the message, so a read cancelled while waiting holds
        // nothing new.
        self.ws_may_hold |= message.is_some();
        message
    }

    /// Sends a message through tungstenite (a ping, a close frame), once a
    /// frame of ours cut short is finished.
    ///
    /// # Errors
    /// The socket's or tungstenite's error.
    pub(crate) async fn send(
        &mut self,
        message: Message,
        outbox: &Outbox,
        counters: &Counters,
    ) -> Result<(), WsError> {
        self.writer
            .finish_frame(self.ws.get_mut().inner_mut(), outbox, counters)
            .await?;
        // A send cut short (cancelled, or a full socket) leaves bytes
        // with tungstenite.
        self.ws_may_hold = true;
        self.ws.send(message).await
    }
}
