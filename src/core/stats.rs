//! Counters the hub keeps while it runs, and the snapshot `stats()` returns.
//!
//! Each number is described once, in the [`numbers!`] list below: its name
//! (the key of Python's `stats()` and of the C JSON, and the `/metrics`
//! series `wshub_<name>`), whether it is a gauge or a counter, its help
//! text and its doc. The live [`Counters`], the [`Stats`] snapshot, the
//! copy from one to the other and [`Stats::numbers`], which the bindings
//! and `/metrics` walk, are all made from that list, so a number cannot be
//! added to one of them and forgotten in another.
//!
//! Counters are relaxed atomics: they are observations, not
//! synchronisation, and must cost nothing on the fan-out path beyond one
//! add per batch.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde::Serialize;

/// Whether a number goes up only (a counter: `/metrics` names it
/// `..._total`) or up and down (a gauge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Counts since start.
    Counter,
    /// A level now.
    Gauge,
}

/// One number of a [`Stats`], as the bindings and `/metrics` show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Number {
    /// The `stats()` key, and the `/metrics` name after `wshub_`.
    pub name: &'static str,
    /// Counter or gauge.
    pub kind: Kind,
    /// The `/metrics` help text.
    pub help: &'static str,
    /// Its value in the snapshot.
    pub value: u64,
}

/// Why a handshake was refused: the keys of `handshakes_rejected` (and the
/// `reason` label of `wshub_handshakes_rejected_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// A path other than the WebSocket path (404).
    Path,
    /// An origin not in `allowed_origins` (403).
    Origin,
    /// Refused by the host's `authorize` check (its status).
    Auth,
    /// Over `max_connections` (503).
    Capacity,
    /// Not well-formed HTTP/1.1 (400), or closed or reset before the
    /// request head was complete.
    Invalid,
    /// Not complete within `handshake_timeout` (408 to a client that sent
    /// part of a request, nothing to one that sent nothing).
    Timeout,
    /// A method other than GET (405).
    Method,
    /// A GET on the WebSocket path that does not ask for an upgrade (426).
    NotUpgrade,
    /// An upgrade without `Sec-WebSocket-Version: 13` (426).
    Version,
    /// A missing or invalid `Sec-WebSocket-Key` (400).
    Key,
    /// A request head over `max_handshake_bytes` (431).
    TooLarge,
    /// More headers than `max_headers` (431).
    TooManyHeaders,
    /// `jwt_key` set and no token in the request (401).
    TokenMissing,
    /// A token that is not a JWT, or lacks `exp` (401).
    TokenMalformed,
    /// A token whose signature does not verify (401).
    TokenSignature,
    /// A token signed with an algorithm not in `jwt_algorithms` (401).
    TokenAlgorithm,
    /// An expired token (401).
    TokenExpired,
    /// A token whose `nbf` is still to come (401).
    TokenNotYetValid,
    /// A token whose `aud` or `iss` is not one configured (401).
    TokenClaims,
    /// A TLS handshake that failed (not TLS at all, such as plain HTTP on
    /// a TLS port, or refused by rustls) on a hub with `certfile`; the
    /// connection is closed, after a TLS alert where rustls sends one.
    Tls,
}

impl Rejection {
    /// Every reason, in the order `stats()` lists them.
    pub const ALL: [Rejection; 20] = [
        Rejection::Path,
        Rejection::Origin,
        Rejection::Auth,
        Rejection::Capacity,
        Rejection::Invalid,
        Rejection::Timeout,
        Rejection::Method,
        Rejection::NotUpgrade,
        Rejection::Version,
        Rejection::Key,
        Rejection::TooLarge,
        Rejection::TooManyHeaders,
        Rejection::TokenMissing,
        Rejection::TokenMalformed,
        Rejection::TokenSignature,
        Rejection::TokenAlgorithm,
        Rejection::TokenExpired,
        Rejection::TokenNotYetValid,
        Rejection::TokenClaims,
        Rejection::Tls,
    ];

    /// The reason's name in `stats()` and `/metrics`.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Path => "path",
            Rejection::Origin => "origin",
            Rejection::Auth => "auth",
            Rejection::Capacity => "capacity",
            Rejection::Invalid => "invalid",
            Rejection::Timeout => "timeout",
            Rejection::Method => "method",
            Rejection::NotUpgrade => "not_upgrade",
            Rejection::Version => "version",
            Rejection::Key => "key",
            Rejection::TooLarge => "too_large",
            Rejection::TooManyHeaders => "too_many_headers",
            Rejection::TokenMissing => "token_missing",
            Rejection::TokenMalformed => "token_malformed",
            Rejection::TokenSignature => "token_signature",
            Rejection::TokenAlgorithm => "token_algorithm",
            Rejection::TokenExpired => "token_expired",
            Rejection::TokenNotYetValid => "token_not_yet_valid",
            Rejection::TokenClaims => "token_claims",
            Rejection::Tls => "tls",
        }
    }
}

/// Makes [`Counters`], [`Stats`] and their conversions from one list of
/// `doc, name: Kind = "help"` entries.
macro_rules! numbers {
    ($( $(#[doc = $doc:literal])+ $name:ident : $kind:ident = $help:literal; )+) => {
        /// Live counters, owned by the hub.
        #[derive(Debug, Default)]
        pub struct Counters {
            $( $(#[doc = $doc])+ pub $name: AtomicU64, )+
            /// Whether the backplane is connected to Redis now.
            pub backplane_connected: AtomicBool,
            /// Refused handshakes, indexed by [`Rejection`].
            handshakes_rejected: [AtomicU64; Rejection::ALL.len()],
        }

        /// A point-in-time copy of the counters, plus subscribers per topic.
        #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
        pub struct Stats {
            $( $(#[doc = $doc])+ pub $name: u64, )+
            /// Subscribers per topic, for topics with at least one.
            pub topics: BTreeMap<String, u64>,
            /// Refused handshakes by reason: `path` (404), `origin` (403),
            /// `auth` (the callback's status), `capacity` (503), `invalid`
            /// (400, or closed before a complete request), `timeout` (408
            /// or dropped), `method` (405), `not_upgrade` (426), `version`
            /// (426), `key` (400), `too_large` and `too_many_headers`
            /// (431), and with `jwt_key` the token's: `token_missing`,
            /// `token_malformed`, `token_signature`, `token_algorithm`,
            /// `token_expired`, `token_not_yet_valid`, `token_claims`
            /// (401). Every reason is present.
            pub handshakes_rejected: BTreeMap<String, u64>,
            /// Whether the backplane is connected to Redis now (always
            /// false for a hub without one).
            pub backplane_connected: bool,
        }

        impl Stats {
            pub(crate) fn from_counters(c: &Counters, topics: BTreeMap<String, u64>) -> Self {
                Stats {
                    $( $name: c.$name.load(Ordering::Relaxed), )+
                    topics,
                    handshakes_rejected: Rejection::ALL
                        .iter()
                        .map(|&r| (r.as_str().to_owned(), c.rejected(r)))
                        .collect(),
                    backplane_connected: c.backplane_connected.load(Ordering::Relaxed),
                }
            }

            /// Every plain number of the snapshot, in the list's order,
            /// with what `/metrics` needs to show it. `topics`,
            /// `handshakes_rejected` and `backplane_connected` are apart:
            /// they are not one number each.
            pub fn numbers(&self) -> impl Iterator<Item = Number> {
                [$(
                    Number {
                        name: stringify!($name),
                        kind: Kind::$kind,
                        help: $help,
                        value: self.$name,
                    },
                )+]
                .into_iter()
            }
        }
    };
}

numbers! {
    /// WebSocket connections open now.
    connections: Gauge = "Open WebSocket connections";
    /// Handshakes completed since start.
    connections_opened: Counter = "Handshakes completed";
    /// Connections ended since start, for any reason.
    connections_closed: Counter = "Connections ended, for any reason";
    /// Publications accepted by `broadcast`.
    published: Counter = "Publications accepted by broadcast";
    /// Publication frames written to clients.
    sent: Counter = "Publication frames written to clients";
    /// Bytes of those frames on the wire (WebSocket header included).
    sent_bytes: Counter = "Bytes of publication frames written to clients, headers included";
    /// Publication frames discarded because their client was closed.
    dropped: Counter = "Publication frames lost to closed slow clients";
    /// Clients closed with 1008 because their queue was full.
    slow_consumer_closes: Counter = "Clients closed with 1008 for a full queue";
    /// Pending publications replaced by a newer one of the same key
    /// (conflate policy).
    conflated: Counter = "Pending publications replaced by newer ones of their key";
    /// Subscription events (`on_subscription` calls) dropped because the
    /// listener fell behind and their queue was full.
    subscription_events_dropped: Counter =
        "Subscription events dropped because on_subscription fell behind";
    /// Publications this hub handed to the Redis backplane.
    backplane_published: Counter = "Publications handed to the Redis backplane";
    /// Publications received from the backplane (and fanned out here to
    /// whoever is subscribed, possibly nobody).
    backplane_received: Counter = "Publications received from the Redis backplane";
    /// Publications of this hub that never reached Redis: outbound queue
    /// full, or in a batch cut short by a failed connection.
    backplane_dropped: Counter = "Publications of this hub that never reached Redis";
    /// Publications of the backplane this hub did not deliver: gaps in a
    /// topic's `seq` (e.g. published while this hub was reconnecting), or
    /// a `seq` not above the last one delivered.
    backplane_missed: Counter =
        "Publications of the backplane this hub did not deliver (seq gaps)";
    /// Times the backplane re-established its connection to Redis.
    backplane_reconnects: Counter = "Times the backplane re-established its connection to Redis";
    /// Bytes of publication frames kept in topic histories now, for
    /// clients that recover (`history_size`, `history_bytes`).
    history_bytes: Gauge = "Bytes of publication frames kept in topic histories";
    /// Retained values kept now (`broadcast(..., retain=True)`).
    retained_values: Gauge = "Retained values kept for new subscribers";
    /// Bytes of their frames (`retained_bytes` bounds it).
    retained_bytes: Gauge = "Bytes of retained frames kept";
    /// Retained values pushed out by a bound (`retained_per_topic`,
    /// `retained_bytes`) or with their topic (evicted from a full
    /// registry), rather than replaced or cleared.
    retained_evicted: Counter = "Retained values pushed out by a bound";
    /// Retained publications that could not be kept (delivered live all
    /// the same): the hub's bytes were all held by other topics, or the
    /// registry was full.
    retained_refused: Counter = "Retained publications that could not be kept";
    /// Retained values not sent to a new subscriber because its queue
    /// could not take them all at once (`send_queue`).
    retained_unsent: Counter = "Retained values a new subscriber's queue could not take";
    /// Connections closed with 4001 because their token expired
    /// (`jwt_key`).
    token_expired_closes: Counter = "Connections closed because their token expired";
    /// Clients reading the feed as Server-Sent Events now (`<path>/sse`;
    /// also counted in `connections`).
    sse_clients: Gauge = "Clients reading the feed as Server-Sent Events";
    /// Tokens a connection replaced with a `refresh` message.
    tokens_refreshed: Counter = "Tokens replaced by a refresh message";
    /// WebSocket clients connected now that negotiated permessage-deflate
    /// (`compression`).
    deflate_clients: Gauge = "Connected clients that negotiated permessage-deflate";
    /// Publications compressed (once each, however many subscribers
    /// receive the compressed frame).
    compressed_publications: Counter = "Publications compressed once for their compressing subscribers";
    /// Bytes of those publications' frames before compression.
    compression_bytes_in: Counter = "Bytes of publication frames before compression";
    /// Bytes of the same frames after compression (RSV1 frames).
    compression_bytes_out: Counter = "Bytes of publication frames after compression";
}

impl Counters {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Counts a refused handshake.
    pub fn reject(&self, why: Rejection) {
        Counters::add(&self.handshakes_rejected[why as usize], 1);
    }

    /// Handshakes refused for `why` so far.
    pub fn rejected(&self, why: Rejection) -> u64 {
        self.handshakes_rejected[why as usize].load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rejection_has_its_own_slot_and_name() {
        let counters = Counters::default();
        for (i, &why) in Rejection::ALL.iter().enumerate() {
            assert_eq!(why as usize, i, "{why:?}: ALL is in declaration order");
            for _ in 0..=i {
                counters.reject(why);
            }
        }
        let stats = Stats::from_counters(&counters, BTreeMap::new());
        assert_eq!(stats.handshakes_rejected.len(), Rejection::ALL.len());
        for (i, why) in Rejection::ALL.iter().enumerate() {
            assert_eq!(stats.handshakes_rejected[why.as_str()], i as u64 + 1);
        }
    }

    #[test]
    fn numbers_are_the_snapshot_fields_by_name() {
        let counters = Counters::default();
        Counters::add(&counters.sent, 3);
        Counters::add(&counters.connections, 2);
        let stats = Stats::from_counters(&counters, BTreeMap::new());
        let numbers: BTreeMap<_, _> = stats.numbers().map(|n| (n.name, n)).collect();
        assert_eq!(numbers["sent"].value, 3);
        assert_eq!(numbers["connections"].kind, Kind::Gauge);
        assert_eq!(numbers["sent"].kind, Kind::Counter);
        // The JSON of the snapshot (the C stats) has every number too.
        let json = serde_json::to_value(&stats).unwrap();
        for number in stats.numbers() {
            assert_eq!(json[number.name], number.value, "{}", number.name);
        }
    }
}
