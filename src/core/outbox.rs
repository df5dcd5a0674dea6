//! One client's outbound queue: bounded, filled by the fan-out and by the
//! connection's own replies, drained in whole batches by the connection's
//! writer.
//!
//! The queue is the only thing a publication touches per subscriber, so a
//! push is a short mutex section and a refcount bump; and one push can
//! carry a whole run of publications (several frames back to back in one
//! buffer), so under load the cost per delivery shrinks with the batch. A
//! full queue closes the client instead of waiting for it: one slow socket
//! must never delay anybody else.

use std::collections::VecDeque;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use std::sync::Arc;

use bytes::Bytes;
use indexmap::IndexMap;
use tokio::sync::Notify;

use crate::protocol::frame::encode_text_frame;

/// Which frames of a publication a client takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FrameEncoding {
    /// The plain text frame.
    #[default]
    Plain,
    /// The permessage-deflate (RSV1) frame, compressed once per
    /// publication and shared (the client negotiated it).
    Deflate,
}

/// One or more text frames waiting to be written, already encoded for
/// the wire.
#[derive(Debug, Clone)]
pub struct OutFrame {
    /// Headers and JSON payloads, shared with every other recipient (a
    /// clone is a refcount bump). The writer advances it past what it
    /// wrote.
    pub wire: Bytes,
    /// The whole `wire` length as queued, for the byte counters.
    pub len: usize,
    /// How many publications `wire` holds, for `sent`/`dropped`: 0 for a
    /// reply, 1 for one publication, more for a run of one topic's
    /// publications sent back to back.
    pub publications: u32,
    /// For the conflate policy: publications with the same key replace
    /// each other while the client is behind (`topic` NUL `key`). Only
    /// single publications carry one.
    pub key: Option<Arc<str>>,
}

impl OutFrame {
    /// A publication frame, encoded by [`encode_publication`].
    pub fn publication(wire: Bytes, key: Option<Arc<str>>) -> Self {
        OutFrame {
            len: wire.len(),
            wire,
            publications: 1,
            key,
        }
    }

    /// `publications` frames of one topic encoded back to back in `wire`.
    pub fn run(wire: Bytes, publications: u32) -> Self {
        OutFrame {
            len: wire.len(),
            wire,
            publications,
            key: None,
        }
    }

    /// A reply built for this client only.
    pub fn reply(text: String) -> Self {
        let wire = encode_text_frame(text);
        OutFrame {
            len: wire.len(),
            wire,
            publications: 0,
            key: None,
        }
    }

    /// How many places in the queue this takes: one per frame.
    pub fn frames(&self) -> usize {
        self.publications.max(1) as usize
    }

    /// The JSON text of each frame inside (for tests): server frames are
    /// unmasked, so each payload follows a 2-, 4- or 10-byte header.
    #[cfg(test)]
    pub fn texts(&self) -> Vec<&str> {
        let mut texts = Vec::new();
        let mut rest = &self.wire[..];
        while rest.len() >= 2 {
            let (header, len) = match rest[1] & 0x7f {
                126 => (4, usize::from(u16::from_be_bytes([rest[2], rest[3]]))),
                127 => (10, {
                    let mut n = [0; 8];
                    n.copy_from_slice(&rest[2..10]);
                    usize::try_from(u64::from_be_bytes(n)).unwrap()
                }),
                n => (2, usize::from(n)),
            };
            texts.push(std::str::from_utf8(&rest[header..header + len]).unwrap());
            rest = &rest[header + len..];
        }
        texts
    }
}

/// What pushes did, summed over subscribers for the hub's counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Publications discarded (`dropped`).
    pub dropped: u64,
    /// Outboxes closed as slow consumers (`slow_consumer_closes`).
    pub overflowed: u64,
    /// Pending values replaced by a newer one of their key (`conflated`).
    pub conflated: u64,
}

impl Tally {
    /// Adds what one push did.
    pub fn add(&mut self, pushed: Pushed) {
        match pushed {
            Pushed::Queued => {}
            Pushed::Overflowed { dropped } => {
                self.dropped += dropped;
                self.overflowed += 1;
            }
            Pushed::Refused => self.dropped += 1,
            Pushed::Conflated { replaced, evicted } => {
                self.conflated += replaced;
                self.dropped += evicted;
            }
        }
    }
}

/// Why an outbox stopped taking frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// The queue overflowed: the client does not read fast enough.
    SlowConsumer,
    /// The connection is ending for another reason.
    Gone,
}

/// Result of [`Outbox::push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// The frame is queued.
    Queued,
    /// The queue was full: it is now closed as a slow consumer and the
    /// publications it held (plus this one, if a publication) are dropped.
    Overflowed {
        /// Publications discarded, for the `dropped` counter.
        dropped: u64,
    },
    /// The outbox was already closed; the frame was discarded.
    Refused,
    /// Conflate policy, queue full: kept as the newest value of its key.
    /// `replaced` older pending values of that key were discarded, and
    /// `evicted` values of the oldest keys to stay within the bound.
    Conflated {
        /// 1 when an older pending value of the same key was replaced.
        replaced: u64,
        /// Values of other keys dropped to keep the backlog bounded.
        evicted: u64,
    },
}

#[derive(Debug, Default)]
struct State {
    frames: VecDeque<OutFrame>,
    /// Frames in `frames` (a run counts each of its publications).
    queued: usize,
    /// Bytes of text in `frames`.
    bytes: usize,
    /// Conflate policy: once `frames` is full, the newest pending value per
    /// key, oldest key first, delivered after `frames`.
    latest: IndexMap<Arc<str>, OutFrame>,
    /// Bytes in `latest`.
    latest_bytes: usize,
    /// Frames drained by the writer and not yet fully written: they still
    /// count against the bounds, so that the bounds are what the client
    /// holds in all, not only what waits in `frames`.
    in_flight: usize,
    /// Bytes of those frames.
    in_flight_bytes: usize,
    closed: Option<Closed>,
}

/// How long a writer may find its socket full (no byte accepted) before
/// its client counts as not reading: the pacing then stops waiting for it.
/// A client that reads empties its kernel buffers within a few
/// milliseconds of falling that far behind; one that stopped reading never
/// does. This is the most a client that stops reading can delay the
/// others, once (and only if its queue fills to half within it).
pub const STUCK_AFTER: Duration = Duration::from_millis(10);

/// Whether a connection's writer is waiting for its socket to take bytes,
/// and since when: set by the writer (see [`crate::net::writer`]), read by the
/// pacing.
#[derive(Debug, Default)]
pub struct WriteProgress {
    /// Nanoseconds since [`epoch`] (at least 1) at which the socket last
    /// went from accepting bytes to refusing them; 0 while it accepts them
    /// (or nothing is being written).
    blocked_since: AtomicU64,
}

/// The reference point of [`WriteProgress`]'s timestamps.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl WriteProgress {
    /// The socket refused bytes (a write returned `Pending`). Keeps the
    /// first such moment: the client is as stuck as the longest it has
    /// not read.
    pub fn blocked(&self) {
        if self.blocked_since.load(Ordering::Relaxed) == 0 {
            let nanos = u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.blocked_since.store(nanos.max(1), Ordering::Relaxed);
        }
    }

    /// The socket took bytes (or the write ended).
    pub fn progressed(&self) {
        if self.blocked_since.load(Ordering::Relaxed) != 0 {
            self.blocked_since.store(0, Ordering::Relaxed);
        }
    }

    /// Since when the socket refuses bytes, if it does.
    fn blocked_at(&self) -> Option<Instant> {
        match self.blocked_since.load(Ordering::Relaxed) {
            0 => None,
            nanos => Some(epoch() + Duration::from_nanos(nanos)),
        }
    }
}

/// The hub's outboxes that are lagging, i.e. more than half full
/// (counting what their writer is still writing), so that the fan-out can
/// pace itself to its clients: it hands out the next slice of a burst only
/// once no client that is still reading is that far behind (or a short
/// pause has passed). A burst then reaches clients at the speed they read
/// instead of landing in their queues at once and closing healthy clients
/// as slow consumers.
///
/// A lagging client whose socket has taken no byte for [`STUCK_AFTER`] is
/// not waited for: it is not reading, waiting cannot help it, and it must
/// not delay anybody else. Its queue fills and it is closed (or conflated)
/// as before; should it read again, it is waited for again.
#[derive(Debug, Default)]
pub struct Pacing {
    /// The write progress of each lagging outbox (a few at a time, so a
    /// Vec searched by pointer).
    lagging: Mutex<Vec<Arc<WriteProgress>>>,
    /// Notified when an outbox stops lagging.
    changed: Notify,
}

impl Pacing {
    /// Outboxes more than half full.
    pub fn lagging(&self) -> usize {
        lock(&self.lagging).len()
    }

    /// When the lagging clients that are still reading must be looked at
    /// again (the earliest moment one of them may have become stuck), or
    /// `None` when no lagging client is worth waiting for.
    fn recheck_at(&self, now: Instant) -> Option<Instant> {
        lock(&self.lagging)
            .iter()
            .filter_map(|progress| match progress.blocked_at() {
                // Writing (or about to): worth waiting for; it may still
                // get stuck, so look again within `STUCK_AFTER`.
                None => Some(now + STUCK_AFTER),
                Some(since) => Some(since + STUCK_AFTER).filter(|stuck| *stuck > now),
            })
            .min()
    }

    /// Resolves once no lagging client is worth waiting for (every lagging
    /// one caught up or is stuck), or after `longest`.
    pub async fn settled(&self, longest: Duration) {
        let deadline = Instant::now() + longest;
        loop {
            // Registered before the check, so a catch-up between the two
            // still wakes this (`notify_waiters` keeps no permit).
            let changed = self.changed.notified();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            let now = Instant::now();
            let Some(recheck) = self.recheck_at(now) else {
                return;
            };
            if now >= deadline {
                return;
            }
            let until = tokio::time::Instant::from_std(recheck.min(deadline));
            let _ = tokio::time::timeout_at(until, changed).await;
        }
    }

    fn update(&self, was: bool, is: bool, progress: &Arc<WriteProgress>) {
        if !was && is {
            lock(&self.lagging).push(Arc::clone(progress));
        } else if was && !is {
            let mut lagging = lock(&self.lagging);
            if let Some(at) = lagging.iter().position(|p| Arc::ptr_eq(p, progress)) {
                lagging.swap_remove(at);
            }
            drop(lagging);
            self.changed.notify_waiters();
        }
    }
}

/// An outbox's locked state that, when released, tells the pacing whether
/// the outbox started or stopped lagging meanwhile.
struct Held<'a> {
    state: MutexGuard<'a, State>,
    was_lagging: bool,
    outbox: &'a Outbox,
}

impl Deref for Held<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        &self.state
    }
}

impl DerefMut for Held<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.state
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let is_lagging = self.outbox.is_lagging(&self.state);
        self.outbox
            .pacing
            .update(self.was_lagging, is_lagging, &self.outbox.progress);
    }
}

/// A bounded queue of frames for one client.
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    /// Shared with the hub's other outboxes (see [`Pacing`]).
    pacing: Arc<Pacing>,
    /// Whether this client's writer gets its frames out (see [`Pacing`]).
    progress: Arc<WriteProgress>,
    /// Wakes the writer when the queue goes from empty to non-empty or
    /// closes. `notify_one` keeps a permit, so a wake-up between the
    /// writer's drain and its next wait is never lost.
    ready: Notify,
    /// Set, and `closing` notified, when the outbox closes, so a writer
    /// blocked on a full socket gives up at once. (A flag and a `Notify`
    /// rather than a cancellation token: every idle connection has an
    /// outbox, and this needs no allocation of its own.)
    is_closed: AtomicBool,
    closing: Notify,
    capacity: usize,
    capacity_bytes: usize,
    /// Whether the client negotiated permessage-deflate: the fan-out then
    /// queues it a publication's shared compressed frame.
    encoding: FrameEncoding,
}

impl Outbox {
    /// An empty outbox holding at most `capacity` frames and
    /// `capacity_bytes` bytes, counting both what is queued and what the
    /// writer took and has not finished writing (but always at least one
    /// frame, however big, when it holds nothing else). Publications with
    /// a conflation key (conflate policy) never close it: past the bounds,
    /// the newest value per key is kept instead, in a map of its own
    /// bounded by `capacity` values and `capacity_bytes` bytes.
    pub fn new(capacity: usize, capacity_bytes: usize) -> Self {
        Outbox {
            state: Mutex::new(State::default()),
            pacing: Arc::default(),
            progress: Arc::default(),
            ready: Notify::new(),
            is_closed: AtomicBool::new(false),
            closing: Notify::new(),
            capacity,
            capacity_bytes,
            encoding: FrameEncoding::Plain,
        }
    }

    /// Sets which publication frames the client takes (set before the
    /// outbox is used).
    #[must_use]
    pub fn encoded(mut self, encoding: FrameEncoding) -> Self {
        self.encoding = encoding;
        self
    }

    /// Whether its client takes compressed publication frames.
    pub fn deflates(&self) -> bool {
        self.encoding == FrameEncoding::Deflate
    }

    /// Reports lagging to `pacing` (the hub's) instead of to a pacing of
    /// its own. Set before the outbox is used.
    #[must_use]
    pub fn paced_by(mut self, pacing: &Arc<Pacing>) -> Self {
        self.pacing = Arc::clone(pacing);
        self
    }

    fn hold(&self) -> Held<'_> {
        let state = lock(&self.state);
        Held {
            was_lagging: self.is_lagging(&state),
            state,
            outbox: self,
        }
    }

    /// The writer's progress, which it reports as it writes.
    pub fn progress(&self) -> &WriteProgress {
        &self.progress
    }

    /// More than half full, in frames or in bytes, counting what is being
    /// written (a closed outbox holds nothing, so it never lags).
    fn is_lagging(&self, state: &State) -> bool {
        state.queued + state.in_flight + state.latest.len() > self.capacity / 2
            || state.bytes + state.in_flight_bytes + state.latest_bytes > self.capacity_bytes / 2
    }

    /// Queues a frame, or closes the outbox if it is full.
    pub fn push(&self, frame: OutFrame) -> Pushed {
        let mut state = self.hold();
        if state.closed.is_some() {
            return Pushed::Refused;
        }
        let full = !self.fits(&state, &frame);
        if let Some(key) = frame.key.clone() {
            if full || !state.latest.is_empty() {
                return self.conflate(&mut state, key, frame);
            }
        }
        if full {
            let pending = publications_in(&state.frames);
            let this = u64::from(frame.publications);
            state.frames.clear();
            state.queued = 0;
            state.bytes = 0;
            state.in_flight = 0;
            state.in_flight_bytes = 0;
            state.closed = Some(Closed::SlowConsumer);
            drop(state);
            self.signal_closed();
            self.ready.notify_one();
            return Pushed::Overflowed {
                dropped: pending + this,
            };
        }
        self.enqueue(state, frame);
        Pushed::Queued
    }

    /// Queues a run of publications (see [`OutFrame::run`]): as one entry
    /// when it fits whole, otherwise split into single publications by
    /// `split` and pushed one by one, so that the bounds, the slow-client
    /// policy and the counters come out exactly as if each publication had
    /// been pushed alone.
    pub fn push_run(
        &self,
        run: OutFrame,
        split: impl FnOnce() -> Vec<OutFrame>,
        tally: &mut Tally,
    ) {
        let state = self.hold();
        if state.closed.is_some() {
            tally.dropped += u64::from(run.publications);
            return;
        }
        if state.latest.is_empty() && self.fits(&state, &run) {
            self.enqueue(state, run);
            return;
        }
        drop(state);
        for frame in split() {
            tally.add(self.push(frame));
        }
    }

    /// Whether `frame` fits within both bounds, next to what is queued and
    /// what is being written (a lone frame always does).
    fn fits(&self, state: &State, frame: &OutFrame) -> bool {
        let alone = state.frames.is_empty() && state.in_flight == 0;
        state.queued + state.in_flight + frame.frames() <= self.capacity
            && (alone || state.bytes + state.in_flight_bytes + frame.len <= self.capacity_bytes)
    }

    fn enqueue(&self, mut state: Held<'_>, frame: OutFrame) {
        let was_empty = state.frames.is_empty();
        state.queued += frame.frames();
        state.bytes += frame.len;
        state.frames.push_back(frame);
        drop(state);
        if was_empty {
            self.ready.notify_one();
        }
    }

    /// Keeps `frame` as the newest value of `key`, after the pending
    /// frames; drops the oldest keys' values beyond the bounds.
    fn conflate(&self, state: &mut State, key: Arc<str>, frame: OutFrame) -> Pushed {
        let was_empty = state.latest.is_empty();
        let mut replaced = 0;
        if let Some(old) = state.latest.shift_remove(&key) {
            state.latest_bytes -= old.len;
            replaced = 1;
        }
        state.latest_bytes += frame.len;
        state.latest.insert(key, frame);
        let mut evicted = 0;
        while state.latest.len() > 1
            && (state.latest.len() > self.capacity || state.latest_bytes > self.capacity_bytes)
        {
            if let Some((_, old)) = state.latest.shift_remove_index(0) {
                state.latest_bytes -= old.len;
                evicted += 1;
            }
        }
        if was_empty && state.frames.is_empty() {
            self.ready.notify_one();
        }
        Pushed::Conflated { replaced, evicted }
    }

    /// Marks the outbox closed (the connection is ending) and returns how
    /// many publications were still queued, for the `dropped` counter.
    pub fn close(&self) -> u64 {
        let mut state = self.hold();
        state.closed.get_or_insert(Closed::Gone);
        state.queued = 0;
        state.bytes = 0;
        state.latest_bytes = 0;
        state.in_flight = 0;
        state.in_flight_bytes = 0;
        let latest = state.latest.drain(..).count() as u64;
        let pending = latest + publications_in(&state.frames);
        state.frames.clear();
        drop(state);
        self.signal_closed();
        pending
    }

    fn signal_closed(&self) {
        self.is_closed.store(true, Ordering::Release);
        self.closing.notify_waiters();
    }

    /// Moves every queued frame into `into` and reports whether the outbox
    /// has closed. The frames still count against the bounds until the
    /// writer reports them [`written`](Outbox::written).
    pub fn drain(&self, into: &mut VecDeque<OutFrame>) -> Option<Closed> {
        let mut state = self.hold();
        if state.closed.is_none() {
            state.in_flight += state.queued + state.latest.len();
            state.in_flight_bytes += state.bytes + state.latest_bytes;
        }
        into.append(&mut state.frames);
        into.extend(state.latest.drain(..).map(|(_, frame)| frame));
        state.queued = 0;
        state.bytes = 0;
        state.latest_bytes = 0;
        state.closed
    }

    /// The writer finished writing drained frames: `frames` places
    /// ([`OutFrame::frames`]) and `bytes` ([`OutFrame::len`]) are free again.
    pub fn written(&self, frames: usize, bytes: usize) {
        let mut state = self.hold();
        state.in_flight = state.in_flight.saturating_sub(frames);
        state.in_flight_bytes = state.in_flight_bytes.saturating_sub(bytes);
    }

    /// Resolves once frames are waiting or the outbox closed.
    pub async fn ready(&self) {
        self.ready.notified().await;
    }

    /// Resolves once the outbox is closed.
    pub async fn closed(&self) {
        loop {
            // Registered before the flag is read, so a close between the
            // two still wakes this (`notify_waiters` keeps no permit).
            let notified = self.closing.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.is_closed.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

/// Publications held by `frames`, for the `dropped` and `sent` counters.
pub fn publications_in(frames: &VecDeque<OutFrame>) -> u64 {
    frames.iter().map(|f| u64::from(f.publications)).sum()
}

/// Locks a mutex, ignoring poisoning: every critical section here leaves
/// the state consistent, so a panic elsewhere must not wedge the hub.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drains `outbox` as its writer does and reports everything written.
    fn write_out(outbox: &Outbox) -> VecDeque<OutFrame> {
        let mut out = VecDeque::new();
        outbox.drain(&mut out);
        let frames = out.iter().map(OutFrame::frames).sum();
        outbox.written(frames, out.iter().map(|f| f.len).sum());
        out
    }

    fn keyed(s: &str, key: &str) -> OutFrame {
        OutFrame::publication(encode_text_frame(s.to_owned()), Some(Arc::from(key)))
    }

    #[test]
    fn conflate_keeps_the_newest_value_per_key_in_order_and_never_closes() {
        let outbox = Outbox::new(2, usize::MAX);
        assert_eq!(outbox.push(keyed("a1", "a")), Pushed::Queued);
        assert_eq!(outbox.push(keyed("b1", "b")), Pushed::Queued);
        let conflated = |replaced, evicted| Pushed::Conflated { replaced, evicted };
        assert_eq!(outbox.push(keyed("a2", "a")), conflated(0, 0));
        assert_eq!(outbox.push(keyed("b2", "b")), conflated(0, 0));
        assert_eq!(outbox.push(keyed("a3", "a")), conflated(1, 0));
        // A third key beyond the bound of 2 evicts the oldest key's value.
        assert_eq!(outbox.push(keyed("c1", "c")), conflated(0, 1));
        let out = write_out(&outbox);
        let texts: Vec<_> = out.iter().flat_map(OutFrame::texts).collect();
        assert_eq!(texts, ["a1", "b1", "a3", "c1"]);
        assert_eq!(outbox.push(keyed("a4", "a")), Pushed::Queued);
    }

    #[test]
    fn byte_bound_overflows_but_always_takes_one_frame() {
        let outbox = Outbox::new(100, 8);
        assert_eq!(outbox.push(publication("too big")), Pushed::Queued);
        assert_eq!(
            outbox.push(publication("x")),
            Pushed::Overflowed { dropped: 2 }
        );
        let outbox = Outbox::new(100, 8);
        assert_eq!(outbox.push(publication("ab")), Pushed::Queued);
        assert_eq!(outbox.push(publication("cd")), Pushed::Queued);
        write_out(&outbox);
        assert_eq!(outbox.push(publication("efg")), Pushed::Queued);
    }

    fn publication(s: &'static str) -> OutFrame {
        OutFrame::publication(encode_text_frame(s.to_owned()), None)
    }

    #[test]
    fn overflow_closes_and_counts_dropped_publications() {
        let outbox = Outbox::new(2, usize::MAX);
        assert_eq!(outbox.push(publication("a")), Pushed::Queued);
        assert_eq!(outbox.push(OutFrame::reply("r".into())), Pushed::Queued);
        assert_eq!(
            outbox.push(publication("b")),
            Pushed::Overflowed { dropped: 2 }
        );
        assert_eq!(outbox.push(publication("c")), Pushed::Refused);
        let mut out = VecDeque::new();
        assert_eq!(outbox.drain(&mut out), Some(Closed::SlowConsumer));
        assert!(out.is_empty());
    }

    #[test]
    fn drain_takes_everything_in_order() {
        let outbox = Outbox::new(8, usize::MAX);
        for s in ["1", "2", "3"] {
            outbox.push(OutFrame::reply(s.into()));
        }
        let mut out = VecDeque::new();
        assert_eq!(outbox.drain(&mut out), None);
        let texts: Vec<_> = out.iter().flat_map(OutFrame::texts).collect();
        assert_eq!(texts, ["1", "2", "3"]);
        assert_eq!(outbox.push(publication("4")), Pushed::Queued);
    }

    #[test]
    fn pacing_counts_outboxes_more_than_half_full() {
        let pacing = Arc::new(Pacing::default());
        let a = Outbox::new(4, usize::MAX).paced_by(&pacing);
        let b = Outbox::new(4, 100).paced_by(&pacing);
        a.push(publication("1"));
        a.push(publication("2"));
        assert_eq!(pacing.lagging(), 0);
        a.push(publication("3"));
        assert_eq!(pacing.lagging(), 1);
        // Half the bytes is lagging too.
        b.push(OutFrame::publication(
            encode_text_frame("x".repeat(60)),
            None,
        ));
        assert_eq!(pacing.lagging(), 2);
        // Taken by the writer but not yet written: still behind.
        let mut taken = VecDeque::new();
        a.drain(&mut taken);
        assert_eq!(pacing.lagging(), 2);
        a.written(taken.len(), taken.iter().map(|f| f.len).sum());
        assert_eq!(pacing.lagging(), 1);
        b.close();
        assert_eq!(pacing.lagging(), 0);
    }

    #[test]
    fn bounds_count_what_the_writer_took_and_has_not_written() {
        // 4 frames or 40 bytes per client in all: a frame of 12 bytes
        // ("x" * 10 and a 2-byte header).
        let frame = || OutFrame::publication(encode_text_frame("x".repeat(10)), None);
        let outbox = Outbox::new(4, 40);
        for _ in 0..3 {
            assert_eq!(outbox.push(frame()), Pushed::Queued);
        }
        // The writer takes all three and is stuck writing them: the queue
        // is empty, but the client still holds 36 bytes, so a fourth frame
        // (48 bytes in all) is over the bound.
        let mut taken = VecDeque::new();
        outbox.drain(&mut taken);
        assert_eq!(outbox.push(frame()), Pushed::Overflowed { dropped: 1 });

        // By frames too: 4 in all.
        let outbox = Outbox::new(4, usize::MAX);
        for _ in 0..3 {
            outbox.push(frame());
        }
        outbox.drain(&mut VecDeque::new());
        assert_eq!(outbox.push(frame()), Pushed::Queued);
        assert_eq!(outbox.push(frame()), Pushed::Overflowed { dropped: 2 });

        // Once written, the room is back.
        let outbox = Outbox::new(4, 40);
        for _ in 0..3 {
            outbox.push(frame());
        }
        let taken = write_out(&outbox);
        assert_eq!(taken.len(), 3);
        for _ in 0..3 {
            assert_eq!(outbox.push(frame()), Pushed::Queued);
        }

        // A lone frame over the bound is taken only when the client holds
        // nothing else.
        let big = || OutFrame::publication(encode_text_frame("y".repeat(100)), None);
        let outbox = Outbox::new(4, 40);
        assert_eq!(outbox.push(big()), Pushed::Queued);
        let mut taken = VecDeque::new();
        outbox.drain(&mut taken);
        assert_eq!(outbox.push(frame()), Pushed::Overflowed { dropped: 1 });
    }

    #[test]
    fn pacing_stops_waiting_for_a_client_whose_socket_takes_nothing() {
        let pacing = Arc::new(Pacing::default());
        let outbox = Outbox::new(2, usize::MAX).paced_by(&pacing);
        outbox.push(publication("1"));
        outbox.push(publication("2"));
        assert_eq!(pacing.lagging(), 1);
        let now = Instant::now();
        // Writing, or about to: waited for, looked at again soon.
        assert_eq!(pacing.recheck_at(now), Some(now + STUCK_AFTER));
        outbox.progress().blocked();
        let blocked = outbox.progress().blocked_at().unwrap();
        assert!(blocked <= Instant::now());
        // Blocked for less than STUCK_AFTER: waited for until then.
        assert_eq!(pacing.recheck_at(blocked), Some(blocked + STUCK_AFTER));
        // Blocked longer: not waited for, although it still lags.
        assert_eq!(pacing.recheck_at(blocked + STUCK_AFTER), None);
        assert_eq!(pacing.lagging(), 1);
        // A later refusal keeps the first moment.
        outbox.progress().blocked();
        assert_eq!(outbox.progress().blocked_at(), Some(blocked));
        // Reading again: waited for again.
        outbox.progress().progressed();
        let later = blocked + 2 * STUCK_AFTER;
        assert_eq!(pacing.recheck_at(later), Some(later + STUCK_AFTER));
    }

    #[tokio::test]
    async fn settled_waits_for_clients_that_read_and_not_for_stuck_ones() {
        let pacing = Arc::new(Pacing::default());
        let outbox = Outbox::new(2, usize::MAX).paced_by(&pacing);
        outbox.push(publication("1"));
        outbox.push(publication("2"));
        // A lagging client that writes: waited for, up to the pause.
        let pause = Duration::from_millis(200);
        let start = Instant::now();
        pacing.settled(pause).await;
        assert!(start.elapsed() >= pause);
        // Stuck: not waited for (beyond STUCK_AFTER), however long the
        // pause may be.
        outbox.progress().blocked();
        let start = Instant::now();
        pacing.settled(Duration::from_secs(30)).await;
        assert!(start.elapsed() < Duration::from_secs(5));
        // A client that catches up ends the wait at once.
        outbox.progress().progressed();
        let waiting = pacing.settled(Duration::from_secs(30));
        let catch_up = async {
            tokio::task::yield_now().await;
            write_out(&outbox);
        };
        let start = Instant::now();
        tokio::join!(waiting, catch_up);
        assert!(start.elapsed() < Duration::from_secs(5));
        assert_eq!(pacing.lagging(), 0);
    }

    #[test]
    fn close_reports_pending_publications() {
        let outbox = Outbox::new(8, usize::MAX);
        outbox.push(publication("a"));
        outbox.push(OutFrame::reply("r".into()));
        assert_eq!(outbox.close(), 1);
        assert_eq!(outbox.push(publication("b")), Pushed::Refused);
    }
}
