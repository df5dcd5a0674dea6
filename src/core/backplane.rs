//! What the core asks of a backplane, the link that lets hubs in several
//! processes share one feed (`docs/scaling.md`).
//!
//! The core defines the interface and an engine implements it (the Redis
//! one in `crate::scale`): with a backplane, [`crate::core::hub::Hub::publish`]
//! does not fan out itself but pushes onto the [`Outbound`] queue, which
//! the engine drains, and the engine hands every publication it receives,
//! numbered, to [`crate::core::hub::Hub::ingest`]. Nothing here knows
//! which engine is on the other side.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tokio::sync::Notify;

use crate::core::outbox::lock;

/// The log target (a Python logger name, `wshub.backplane`, once
/// through pyo3-log) this module's records have always had, kept apart from
/// the module's path so that moving code does not rename loggers.
const LOG_TARGET: &str = "wshub::backplane";

/// What an [`Outgoing`] item asks of every hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Deliver the publication.
    Publish,
    /// Deliver it and keep it as the newest retained value of its key.
    Retain,
    /// Forget the retained value of its key (of all keys, without one);
    /// nothing is delivered and no `seq` is used.
    ClearRetained,
}

/// A publication (or a clear of retained values) waiting to be sent to
/// Redis.
pub(crate) struct Outgoing {
    pub(crate) topic: Box<str>,
    /// The highest `seq` this hub had seen on the topic (the backplane keeps `seq` above it).
    pub(crate) floor: u64,
    pub(crate) data: Box<str>,
    /// The conflation and retain key, which every hub needs too.
    pub(crate) key: Option<Box<str>>,
    pub(crate) kind: Kind,
}

/// The bounded hand-off from publishers to the backplane task. Pushing
/// never waits: when Redis is slow or away the queue fills, and what does
/// not fit is dropped and counted, so `broadcast` never blocks on Redis.
pub struct Outbound {
    items: Mutex<VecDeque<Outgoing>>,
    /// Wakes the task when the queue becomes non-empty.
    ready: Notify,
    capacity: usize,
    /// Set while publications are being dropped, so that the warning is
    /// logged once per episode rather than once per publication.
    overflowing: AtomicBool,
}

impl Outbound {
    pub(crate) fn new(capacity: usize) -> Self {
        Outbound {
            items: Mutex::new(VecDeque::new()),
            ready: Notify::new(),
            capacity,
            overflowing: AtomicBool::new(false),
        }
    }

    /// Queues an item; `false` when the queue is full (nothing was
    /// queued and the caller counts a drop).
    pub(crate) fn push(&self, item: Outgoing) -> bool {
        let mut items = lock(&self.items);
        if items.len() >= self.capacity {
            drop(items);
            if !self.overflowing.swap(true, Ordering::Relaxed) {
                tracing::warn!(target: LOG_TARGET, capacity = self.capacity,
                    "backplane outbound queue full (Redis slow or unreachable): dropping publications"
                );
            }
            return false;
        }
        let was_empty = items.is_empty();
        items.push_back(item);
        drop(items);
        if was_empty {
            self.ready.notify_one();
        }
        true
    }

    /// Moves up to `max` queued publications into `batch`.
    pub(crate) fn take(&self, batch: &mut Vec<Outgoing>, max: usize) {
        let mut items = lock(&self.items);
        let n = items.len().min(max);
        batch.extend(items.drain(..n));
    }

    /// Publications waiting.
    pub(crate) fn len(&self) -> usize {
        lock(&self.items).len()
    }

    /// Resolves once a push finds the queue empty (or [`Outbound::wake`]).
    pub(crate) async fn ready(&self) {
        self.ready.notified().await;
    }

    /// Wakes the engine's [`Outbound::ready`] wait, e.g. to look at its
    /// queue again after reconnecting.
    pub(crate) fn wake(&self) {
        self.ready.notify_one();
    }

    /// The engine handed publications to the far end again: the next
    /// overflow is a new episode, worth a new warning.
    pub(crate) fn flowing(&self) {
        self.overflowing.store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(data: &str) -> Outgoing {
        Outgoing {
            topic: "t".into(),
            floor: 0,
            data: data.into(),
            key: None,
            kind: Kind::Publish,
        }
    }

    #[test]
    fn outbound_queue_is_bounded_and_never_waits() {
        let outbound = Outbound::new(2);
        assert!(outbound.push(item("1")));
        assert!(outbound.push(item("2")));
        assert!(!outbound.push(item("3")));
        let mut batch = Vec::new();
        outbound.take(&mut batch, 1024);
        assert_eq!(batch.len(), 2);
        assert!(outbound.push(item("4")));
    }
}
