//! The core: topics, subscriptions, publications and the fan-out, with
//! their options, counters and errors. It knows nothing of sockets, Redis,
//! Python or C: the networking ([`crate::net`]) and the backplane engines
//! ([`crate::scale`]) sit on it, the bindings sit on top.
//!
//! - [`config`]: every option, its default and its validation.
//! - [`error`]: the one error type.
//! - [`hub`]: the topic registry, the publish queue and the fan-out.
//! - [`outbox`]: one subscriber's bounded queue, and the pacing of the
//!   fan-out by the clients that lag.
//! - [`stream`]: a topic's last publications and its epoch, for clients
//!   that recover what they missed.
//! - [`retained`]: the newest value per (topic, key) kept for subscribers
//!   that come later.
//! - [`backplane`]: what the core asks of a backplane engine.
//! - [`authorize`]: the host's check of each handshake (what it sees and
//!   answers).
//! - [`token`]: the built-in JWT check of handshakes and refreshes.
//! - [`subscription_events`]: first/last subscriber notifications to the
//!   host.
//! - [`stats`]: counters and the `stats()` snapshot.

pub(crate) mod authorize;
pub(crate) mod backplane;
pub(crate) mod config;
pub(crate) mod error;
pub(crate) mod hub;
pub(crate) mod outbox;
pub(crate) mod retained;
pub(crate) mod stats;
pub(crate) mod stream;
pub(crate) mod subscription_events;
pub(crate) mod token;
