//! Tells the host when a topic gains its first subscriber or loses its
//! last one, so a producer can work only on what somebody watches.
//!
//! The hub reports transitions without waiting (a bounded queue; a full
//! queue drops the event and counts it), and one thread of its own calls
//! the host's listener, so a slow or failing listener never touches the
//! runtime's I/O threads.

use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::core::outbox::lock;
use crate::core::stats::Counters;

/// The log target (a Python logger name, `wshub.subscription_events`, once
/// through pyo3-log) this module's records have always had, kept apart from
/// the module's path so that moving code does not rename loggers.
const LOG_TARGET: &str = "wshub::subscription_events";

/// Events waiting for the listener at most; beyond this they are dropped
/// (and counted) rather than queued without bound.
const EVENT_QUEUE: usize = 4096;

/// The host's listener: `(topic, subscribers)`, with `subscribers` 1 when
/// the topic gained its first subscriber and 0 when it lost its last.
#[derive(Clone)]
pub struct SubscriptionListener(pub Arc<ListenerFn>);

/// The listener's signature: `(topic, subscribers)`.
pub type ListenerFn = dyn Fn(&str, u64) + Send + Sync;

/// One event: the topic and its subscriber count (1 or 0).
type Event = (Arc<str>, u64);

impl fmt::Debug for SubscriptionListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SubscriptionListener")
    }
}

/// The sending side, owned by the hub, and the thread that calls the
/// listener.
pub struct SubscriptionEvents {
    sender: Mutex<Option<SyncSender<Event>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl SubscriptionEvents {
    /// Starts the listener's thread.
    ///
    /// # Errors
    /// The OS error if the thread cannot be spawned.
    pub fn start(listener: SubscriptionListener) -> std::io::Result<Self> {
        let (sender, receiver) = sync_channel(EVENT_QUEUE);
        let thread = std::thread::Builder::new()
            .name("wshub-events".to_owned())
            .spawn(move || deliver(&receiver, &listener))?;
        Ok(SubscriptionEvents {
            sender: Mutex::new(Some(sender)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues an event without waiting; counts it in `dropped` if the
    /// queue is full.
    pub fn report(&self, topic: &Arc<str>, subscribers: u64, dropped: &AtomicU64) {
        let sender = lock(&self.sender);
        let Some(sender) = sender.as_ref() else {
            return;
        };
        if let Err(TrySendError::Full(_)) = sender.try_send((Arc::clone(topic), subscribers)) {
            Counters::add(dropped, 1);
        }
    }

    /// Delivers what is queued, then ends the thread and waits for it.
    pub fn stop(&self) {
        drop(lock(&self.sender).take());
        let Some(thread) = lock(&self.thread).take() else {
            return;
        };
        // The listener itself may stop the hub; it cannot wait for itself.
        if thread.thread().id() != std::thread::current().id() {
            let _ = thread.join();
        }
    }
}

fn deliver(receiver: &Receiver<Event>, listener: &SubscriptionListener) {
    while let Ok((topic, subscribers)) = receiver.recv() {
        // A panicking listener must not end the thread for later events.
        let call = std::panic::AssertUnwindSafe(|| (listener.0)(&topic, subscribers));
        if std::panic::catch_unwind(call).is_err() {
            tracing::error!(target: LOG_TARGET, %topic, "subscription listener panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_reach_the_listener_in_order_and_stop_drains_them() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let listener = SubscriptionListener(Arc::new(move |topic: &str, n: u64| {
            lock(&sink).push((topic.to_owned(), n));
        }));
        let events = SubscriptionEvents::start(listener).unwrap();
        let dropped = AtomicU64::new(0);
        let topic: Arc<str> = Arc::from("t");
        events.report(&topic, 1, &dropped);
        events.report(&topic, 0, &dropped);
        events.stop();
        assert_eq!(*lock(&seen), [("t".to_owned(), 1), ("t".to_owned(), 0)]);
        events.report(&topic, 1, &dropped);
    }
}
