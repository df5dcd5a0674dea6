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
    /// Subscription events (`on_subscription` calls) dropped because the
    /// listener fell behind and their bounded queue was full.
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
    /// Requests that were not well-formed HTTP/1.1 (400), or connections
    /// closed or reset before their request head was complete.
    pub rejected_invalid: AtomicU64,
    /// Handshakes not complete within `handshake_timeout` (408 to a client
    /// that sent part of a request, nothing to one that sent nothing).
    pub rejected_timeout: AtomicU64,
    /// Requests with a method other than GET (405).
    pub rejected_method: AtomicU64,
    /// GETs on the WebSocket path that do not ask for an upgrade (426).
    pub rejected_not_upgrade: AtomicU64,
    /// Upgrades without `Sec-WebSocket-Version: 13` (426).
    pub rejected_version: AtomicU64,
    /// Upgrades with a missing or invalid `Sec-WebSocket-Key` (400).
    pub rejected_key: AtomicU64,
    /// Request heads over `max_handshake_bytes` (431).
    pub rejected_too_large: AtomicU64,
    /// Request heads with more than `max_headers` headers (431).
    pub rejected_too_many_headers: AtomicU64,
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
    /// Subscription events (`on_subscription` calls) dropped because the
    /// listener fell behind and their queue was full.
    pub subscription_events_dropped: u64,
    /// Handshakes completed since start.
    pub connections_opened: u64,
    /// Connections ended since start, for any reason.
    pub connections_closed: u64,
    /// Refused handshakes by reason: `path` (404), `origin` (403), `auth`
    /// (the callback's status), `capacity` (503), `invalid` (400, or
    /// closed before a complete request), `timeout` (408 or dropped),
    /// `method` (405), `not_upgrade` (426), `version` (426), `key` (400),
    /// `too_large` and `too_many_headers` (431). Every reason is present.
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
            subscription_events_dropped: get(&c.events_dropped),
            connections_opened: get(&c.connections_opened),
            connections_closed: get(&c.connections_closed),
            handshakes_rejected: [
                ("path", &c.rejected_path),
                ("origin", &c.rejected_origin),
                ("auth", &c.rejected_auth),
                ("capacity", &c.rejected_capacity),
                ("invalid", &c.rejected_invalid),
                ("timeout", &c.rejected_timeout),
                ("method", &c.rejected_method),
                ("not_upgrade", &c.rejected_not_upgrade),
                ("version", &c.rejected_version),
                ("key", &c.rejected_key),
                ("too_large", &c.rejected_too_large),
                ("too_many_headers", &c.rejected_too_many_headers),
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
