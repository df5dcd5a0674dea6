//! Counters the hub keeps while it runs, and the snapshot `stats()` returns.
//!
//! Counters are relaxed atomics: they are observations, not
//! synchronisation, and must cost nothing on the fan-out path beyond one
//! add per batch.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde::Serialize;

/// Live counters, owned by the hub.
#[derive(Debug, Default)]
pub struct Counters {
    /// WebSocket connections open now.
    pub connections: AtomicU64,
    /// Handshakes completed since start.
    pub connections_opened: AtomicU64,
    /// Connections ended since start, for any reason.
    pub connections_closed: AtomicU64,
    /// Publications accepted by `broadcast`.
    pub published: AtomicU64,
    /// Publication frames written to clients.
    pub sent: AtomicU64,
    /// Bytes of those frames on the wire (WebSocket header included).
    pub sent_bytes: AtomicU64,
    /// Publication frames discarded because their client was closed.
    pub dropped: AtomicU64,
    /// Clients closed with 1008 because their queue was full.
    pub slow_consumer_closes: AtomicU64,
    /// Pending publications replaced by a newer one of the same key
    /// (conflate policy).
    pub conflated: AtomicU64,
    /// Subscription events dropped because the listener fell behind.
    pub events_dropped: AtomicU64,
    /// Handshakes on a path other than the WebSocket path (404).
    pub rejected_path: AtomicU64,
    /// Publications this hub handed to the Redis backplane.
    pub backplane_published: AtomicU64,
    /// Publications received from the backplane (and fanned out here to
    /// whoever is subscribed, possibly nobody).
    pub backplane_received: AtomicU64,
    /// Publications of this hub that never reached Redis: outbound queue
    /// full, or in a batch cut short by a failed connection.
    pub backplane_dropped: AtomicU64,
    /// Publications of the backplane this hub did not deliver: gaps in a
    /// topic's `seq` (e.g. published while this hub was reconnecting), or
    /// a `seq` not above the last one delivered.
    pub backplane_missed: AtomicU64,
    /// Times the backplane re-established its connection to Redis.
    pub backplane_reconnects: AtomicU64,
    /// Whether the backplane is connected to Redis now.
    pub backplane_connected: AtomicBool,
    /// Handshakes from an origin not in `allowed_origins` (403).
    pub rejected_origin: AtomicU64,
    /// Handshakes refused by the host's `authorize` check.
    pub rejected_auth: AtomicU64,
    /// Handshakes over `max_connections` (503).
    pub rejected_capacity: AtomicU64,
    /// Handshakes that timed out or were not valid WebSocket upgrades.
    pub rejected_invalid: AtomicU64,
}

impl Counters {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// A point-in-time copy of the counters, plus subscribers per topic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// WebSocket connections open now.
    pub connections: u64,
    /// Subscribers per topic, for topics with at least one.
    pub topics: BTreeMap<String, u64>,
    /// Publications accepted by `broadcast`.
    pub published: u64,
    /// Publication frames written to clients.
    pub sent: u64,
    /// Bytes of those frames.
    pub sent_bytes: u64,
    /// Publication frames discarded because their client was closed.
    pub dropped: u64,
    /// Clients closed with 1008 because their queue was full.
    pub slow_consumer_closes: u64,
    /// Pending publications replaced by newer ones (conflate policy).
    pub conflated: u64,
    /// Handshakes completed since start.
    pub connections_opened: u64,
    /// Connections ended since start, for any reason.
    pub connections_closed: u64,
    /// Refused handshakes by reason: `path` (404), `origin` (403),
    /// `capacity` (503), `invalid` (timed out or not a WebSocket upgrade).
    pub handshakes_rejected: BTreeMap<String, u64>,
    /// Publications this hub handed to the Redis backplane.
    pub backplane_published: u64,
    /// Publications received from the backplane and fanned out here.
    pub backplane_received: u64,
    /// Publications of this hub that never reached Redis (outbound queue
    /// full, or in a batch cut short by a failed connection).
    pub backplane_dropped: u64,
    /// Publications of the backplane this hub did not deliver (a gap in a
    /// topic's `seq`, e.g. while it was reconnecting).
    pub backplane_missed: u64,
    /// Times the backplane re-established its connection to Redis.
    pub backplane_reconnects: u64,
    /// Whether the backplane is connected to Redis now (always false for
    /// a hub without one).
    pub backplane_connected: bool,
}

impl Stats {
    pub(crate) fn from_counters(c: &Counters, topics: BTreeMap<String, u64>) -> Self {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            connections: get(&c.connections),
            topics,
            published: get(&c.published),
            sent: get(&c.sent),
            sent_bytes: get(&c.sent_bytes),
            dropped: get(&c.dropped),
            slow_consumer_closes: get(&c.slow_consumer_closes),
            conflated: get(&c.conflated),
            connections_opened: get(&c.connections_opened),
            connections_closed: get(&c.connections_closed),
            handshakes_rejected: [
                ("path", &c.rejected_path),
                ("origin", &c.rejected_origin),
                ("auth", &c.rejected_auth),
                ("capacity", &c.rejected_capacity),
                ("invalid", &c.rejected_invalid),
            ]
            .into_iter()
            .map(|(reason, counter)| (reason.to_owned(), get(counter)))
            .collect(),
            backplane_published: get(&c.backplane_published),
            backplane_received: get(&c.backplane_received),
            backplane_dropped: get(&c.backplane_dropped),
            backplane_missed: get(&c.backplane_missed),
            backplane_reconnects: get(&c.backplane_reconnects),
            backplane_connected: c.backplane_connected.load(Ordering::Relaxed),
        }
    }
}
