//! Everything a host can tune about a hub, with the defaults and the checks
//! that keep a bad value from reaching the runtime.
//!
//! The bindings (Python, C) build a [`Config`] from their own argument
//! conventions and hand it to [`crate::Server::start`]; nothing else in the
//! core reads options from anywhere.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use crate::core::authorize::Authorizer;
use crate::core::error::Error;
use crate::core::subscription_events::SubscriptionListener;
use crate::core::token::TokenConfig;
use crate::protocol::is_valid_topic;

/// Which topic names clients may subscribe to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TopicPolicy {
    /// Any syntactically valid name; a client that asks for none starts
    /// with no subscriptions.
    #[default]
    Any,
    /// Only these names; a client that asks for none of them gets all.
    Only(BTreeSet<String>),
}

/// What happens when a client's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlowClientPolicy {
    /// Close it with 1008 "slow consumer" (the default).
    #[default]
    Disconnect,
    /// Keep only the newest pending publication per (topic, key) and never
    /// close it for being slow: for "latest value" feeds such as odds.
    Conflate,
}

/// The PEM files a hub serves `wss://` and `https://` with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub certfile: PathBuf,
    /// The private key of the leaf certificate (PKCS#8, PKCS#1 or SEC1).
    pub keyfile: PathBuf,
}

/// Options of one hub. `Config::default()` is what `wshub.start(port)` uses.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on. Loopback by default so that a hub is never
    /// exposed by accident; set `0.0.0.0` to serve other hosts.
    pub host: String,
    /// TCP port; 0 asks the OS for a free one (read it back from
    /// [`crate::Server::port`]).
    pub port: u16,
    /// The only HTTP path that upgrades to a WebSocket; others get 404.
    pub path: String,
    /// Which topics clients may subscribe to.
    pub topics: TopicPolicy,
    /// Browser origins allowed to connect (exact `Origin` header values,
    /// e.g. `https://app.example.com`); others get HTTP 403. `None` allows
    /// any origin. Requests without an `Origin` header (non-browser
    /// clients) are always allowed: the check exists to stop other sites'
    /// pages from reading the feed with the visitor's cookies.
    pub allowed_origins: Option<BTreeSet<String>>,
    /// Open WebSocket connections at most; the next handshake gets 503.
    pub max_connections: usize,
    /// Largest inbound message (and frame) in bytes; over it the client is
    /// closed with 1009.
    pub max_message_bytes: usize,
    /// Frames waiting to be written to one client at most; a client whose
    /// queue is full is closed with 1008 so it cannot delay anybody else.
    pub send_queue: usize,
    /// Topics one connection may be subscribed to at once; requests past
    /// it are answered in `rejected` with reason `too_many_topics`.
    pub max_topics_per_connection: usize,
    /// Topics the hub holds at most, across all connections (only topics
    /// with a subscriber are held: a topic is forgotten when its last
    /// subscriber leaves). Requests past it are answered in `rejected`
    /// with reason `hub_full`, so clients asking for made-up names cannot
    /// grow the hub's memory without bound.
    pub max_topics: usize,
    /// What happens to a client whose queue is full.
    pub slow_client: SlowClientPolicy,
    /// Bytes queued for one client at most, the same way: a few huge
    /// publications must not pile up unbounded memory either.
    pub send_queue_bytes: usize,
    /// Messages per second a client may send on average (pings, protocol
    /// and WebSocket, are counted in a bucket of their own with the same
    /// rate and burst, so they never use up what other messages need)...
    pub rate_limit: f64,
    /// ...and in a burst. A message beyond both gets a `rate_limited`
    /// error; a client that sends `rate_burst` more while limited is
    /// closed with 1008.
    pub rate_burst: u32,
    /// Publications waiting for the fan-out at most; `broadcast` waits for
    /// room when the fan-out cannot keep up, so memory stays bounded.
    pub publish_queue: usize,
    /// Bytes of publications waiting for the fan-out at most, the same
    /// way: a burst of large publications waits for room instead of
    /// piling up. One publication larger than this is still taken when
    /// the queue is empty.
    pub publish_queue_bytes: usize,
    /// Publications kept per topic for clients that recover what they
    /// missed (`since`); 0 keeps none. A topic with a history stays in
    /// the registry while nobody is subscribed, until the registry needs
    /// its place (`max_topics`) or its history expires.
    pub history_size: usize,
    /// Bytes of those publications' frames kept per topic at most.
    pub history_bytes: usize,
    /// Age after which a publication leaves the history (`None`: kept
    /// until `history_size` or `history_bytes` push it out).
    pub history_ttl: Option<Duration>,
    /// Retained values (`broadcast(..., retain=True)`) kept per topic at
    /// most: a new key past it pushes out the topic's oldest value. A new
    /// subscriber receives them within what its queue takes at once
    /// (`send_queue`).
    pub retained_per_topic: usize,
    /// Bytes of retained frames kept across all topics at most; 0 turns
    /// retained values off (`retain=True` is then an error).
    pub retained_bytes: usize,
    /// The built-in JWT check of every handshake (`None`: off).
    pub jwt: Option<TokenConfig>,
    /// Serve TLS (`wss://`, `https://`) with these files; `None` (the
    /// default) serves plain TCP. The TLS handshake counts against
    /// `handshake_timeout` like the HTTP upgrade.
    pub tls: Option<TlsFiles>,
    /// How often the server pings an idle client.
    pub ping_interval: Duration,
    /// How long after a ping a silent client is given before it is closed.
    pub ping_timeout: Duration,
    /// How long a new TCP connection may take to finish its HTTP upgrade.
    pub handshake_timeout: Duration,
    /// Longest HTTP request head (request line and headers) in bytes;
    /// a longer one gets 431 as soon as this much has arrived. Browsers
    /// send 1-2 KB; the default 64 KiB leaves room for large cookies.
    pub max_handshake_bytes: usize,
    /// Most headers in an HTTP request; one more gets 431 as soon as it
    /// arrives. A browser's upgrade has about 15.
    pub max_headers: usize,
    /// How long `stop()` waits for clients to receive their close frame.
    pub shutdown_timeout: Duration,
    /// Threads of the hub's own tokio runtime.
    pub worker_threads: usize,
    /// A Redis URL (`redis://host:port/db`) through which hubs in several
    /// processes or hosts share their publications, or `None` for a hub
    /// on its own. With it, `broadcast` hands publications to Redis and
    /// every hub delivers what comes back, with `seq` assigned by Redis
    /// (see `docs/scaling.md`); `publish_queue` also bounds the queue of
    /// publications waiting for Redis, beyond which they are dropped and
    /// counted rather than waited for.
    pub backplane: Option<String>,
    /// Prefix of the backplane's Redis channels (`<prefix><topic>`) and
    /// keys (`<prefix>seq:<topic>`), so that several feeds can share one
    /// Redis. Only hubs with the same prefix see each other.
    pub backplane_prefix: String,
    /// Set `SO_REUSEPORT`, so that several processes on one host can
    /// listen on the same port and the kernel spreads connections among
    /// them. Requires `backplane`, or each process would only deliver its
    /// own publications to its own share of the clients.
    pub reuse_port: bool,
    /// The host's check of each handshake (path, query, headers), run off
    /// the I/O threads; `None` admits everyone.
    pub authorize: Option<Authorizer>,
    /// How long `authorize` may take before the handshake gets 503.
    pub authorize_timeout: Duration,
    /// Called (on a thread of its own) when a topic gains its first
    /// subscriber or loses its last one.
    pub on_subscription: Option<SubscriptionListener>,
    /// Whether permessage-deflate (RFC 7692) is negotiated with clients
    /// that offer it. Off by default: it costs CPU per publication.
    pub compression: bool,
    /// Deflate level of compressed publications, 1 (fastest) to 9
    /// (smallest).
    pub compression_level: u32,
    /// Publication frames shorter than this many bytes go uncompressed
    /// even to clients that negotiated compression (deflate cannot save
    /// much on them and costs the same per call).
    pub compression_min_size: usize,
}

/// Range of `compression_level` (zlib's levels).
pub const COMPRESSION_LEVELS: std::ops::RangeInclusive<u32> = 1..=9;

/// Channel and key prefix of the backplane when the host sets none.
pub const DEFAULT_BACKPLANE_PREFIX: &str = "wshub:";

/// Upper bound on `history_size`: publications kept per topic.
pub const MAX_HISTORY_SIZE: usize = 1_000_000;

/// Upper bound on `history_bytes`: bytes kept per topic.
pub const MAX_HISTORY_BYTES: usize = 1024 * 1024 * 1024;

/// Upper bound on `retained_per_topic`.
pub const MAX_RETAINED_PER_TOPIC: usize = 1_000_000;

/// Upper bound on `retained_bytes`, across the hub.
pub const MAX_RETAINED_BYTES: usize = 4 * 1024 * 1024 * 1024;

/// Upper bound on `max_message_bytes`: tungstenite buffers a whole message
/// before handing it over, so this is also a per-client memory bound.
pub const MAX_MESSAGE_BYTES_LIMIT: usize = 64 * 1024 * 1024;

/// Longest WebSocket path (a configuration sanity bound; request heads
/// themselves are capped by `max_handshake_bytes`).
pub const MAX_PATH_LEN: usize = 256;

/// Bounds of `max_handshake_bytes`: below 1 KiB a browser's own upgrade
/// would not fit; above 16 MiB each handshake could hold that much memory,
/// which is a mistake, not a tuning choice.
pub const MAX_HANDSHAKE_BYTES_RANGE: std::ops::RangeInclusive<usize> = 1024..=16 * 1024 * 1024;

/// Bounds of `max_headers`: a WebSocket upgrade needs about 6 headers and
/// a browser sends about 15; the parser's header table is `max_headers`
/// entries, so thousands would only cost memory per handshake.
pub const MAX_HEADERS_RANGE: std::ops::RangeInclusive<usize> = 8..=1024;

/// Upper bound on `worker_threads`; more than this is a configuration
/// mistake, not a tuning choice.
pub const MAX_WORKER_THREADS: usize = 256;

impl Default for Config {
    fn default() -> Self {
        Config {
            host: "127.0.0.1".to_owned(),
            port: 0,
            path: "/api/ws".to_owned(),
            topics: TopicPolicy::Any,
            allowed_origins: None,
            max_connections: 100_000,
            max_message_bytes: 64 * 1024,
            send_queue: 1024,
            send_queue_bytes: 16 * 1024 * 1024,
            max_topics_per_connection: 1024,
            max_topics: 100_000,
            slow_client: SlowClientPolicy::Disconnect,
            rate_limit: 100.0,
            rate_burst: 200,
            publish_queue: 65_536,
            publish_queue_bytes: 64 * 1024 * 1024,
            history_size: 1024,
            history_bytes: 1024 * 1024,
            history_ttl: None,
            retained_per_topic: 1000,
            retained_bytes: 64 * 1024 * 1024,
            compression: false,
            compression_level: 6,
            compression_min_size: 256,
            jwt: None,
            tls: None,
            ping_interval: Duration::from_secs(20),
            ping_timeout: Duration::from_secs(20),
            handshake_timeout: Duration::from_secs(10),
            max_handshake_bytes: 64 * 1024,
            max_headers: 64,
            shutdown_timeout: Duration::from_secs(2),
            worker_threads: 1,
            backplane: None,
            backplane_prefix: DEFAULT_BACKPLANE_PREFIX.to_owned(),
            reuse_port: false,
            on_subscription: None,
            authorize: None,
            authorize_timeout: Duration::from_secs(5),
        }
    }
}

impl Config {
    /// Checks every option, so that a bad value is reported to the caller
    /// instead of misbehaving later on the runtime.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the option and why.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |msg: String| Err(Error::InvalidConfig(msg));
        if self.host.is_empty() {
            return bad("host must not be empty".into());
        }
        if let Some(tls) = &self.tls {
            if tls.certfile.as_os_str().is_empty() || tls.keyfile.as_os_str().is_empty() {
                return bad("certfile and keyfile must both be set (or neither)".into());
            }
        }
        let path_ok = self.path.starts_with('/')
            && self.path.len() < MAX_PATH_LEN
            && !self
                .path
                .bytes()
                .any(|b| matches!(b, b'?' | b' ' | b'#') || b.is_ascii_control());
        if !path_ok || matches!(self.path.as_str(), "/metrics" | "/healthz") {
            return bad(format!(
                "path must start with '/', be shorter than {MAX_PATH_LEN} bytes, have no query, \
                 spaces or control characters, and not be /metrics or /healthz; got {:?}",
                self.path
            ));
        }
        if let TopicPolicy::Only(names) = &self.topics {
            if names.is_empty() {
                return bad("topics must list at least one name (or be None for any)".into());
            }
            if let Some(name) = names.iter().find(|n| !is_valid_topic(n)) {
                return bad(format!(
                    "invalid topic name {name:?}: use 1-128 characters of [A-Za-z0-9_.:-]"
                ));
            }
            if names.len() > self.max_topics {
                return bad(format!(
                    "topics lists {} names, more than max_topics ({}): raise max_topics",
                    names.len(),
                    self.max_topics
                ));
            }
        }
        for (name, value) in [
            ("max_connections", self.max_connections),
            ("send_queue", self.send_queue),
            ("send_queue_bytes", self.send_queue_bytes),
            ("max_topics_per_connection", self.max_topics_per_connection),
            ("max_topics", self.max_topics),
            ("rate_burst", self.rate_burst as usize),
            ("publish_queue", self.publish_queue),
            ("publish_queue_bytes", self.publish_queue_bytes),
            ("max_message_bytes", self.max_message_bytes),
            ("worker_threads", self.worker_threads),
        ] {
            if value == 0 {
                return bad(format!("{name} must be at least 1"));
            }
        }
        if !COMPRESSION_LEVELS.contains(&self.compression_level) {
            return bad(format!(
                "compression_level must be 1 to 9, got {}",
                self.compression_level
            ));
        }
        if self.history_size > MAX_HISTORY_SIZE {
            return bad(format!(
                "history_size must be at most {MAX_HISTORY_SIZE}, got {}",
                self.history_size
            ));
        }
        if self.history_bytes > MAX_HISTORY_BYTES {
            return bad(format!(
                "history_bytes must be at most {MAX_HISTORY_BYTES}, got {}",
                self.history_bytes
            ));
        }
        if self.retained_per_topic > MAX_RETAINED_PER_TOPIC {
            return bad(format!(
                "retained_per_topic must be at most {MAX_RETAINED_PER_TOPIC}, got {}",
                self.retained_per_topic
            ));
        }
        if self.retained_bytes > MAX_RETAINED_BYTES {
            return bad(format!(
                "retained_bytes must be at most {MAX_RETAINED_BYTES}, got {}",
                self.retained_bytes
            ));
        }
        if !self.rate_limit.is_finite() || self.rate_limit <= 0.0 {
            return bad(format!(
                "rate_limit must be a positive number of messages per second, got {}",
                self.rate_limit
            ));
        }
        if let Some(origins) = &self.allowed_origins {
            if let Some(origin) = origins.iter().find(|o| o.is_empty() || o.ends_with('/')) {
                return bad(format!(
                    "allowed_origins entries are exact origins like \"https://app.example.com\" (no trailing slash), got {origin:?}"
                ));
            }
        }
        if self.max_message_bytes > MAX_MESSAGE_BYTES_LIMIT {
            return bad(format!(
                "max_message_bytes must be at most {MAX_MESSAGE_BYTES_LIMIT}"
            ));
        }
        for (name, value, range) in [
            (
                "max_handshake_bytes",
                self.max_handshake_bytes,
                MAX_HANDSHAKE_BYTES_RANGE,
            ),
            ("max_headers", self.max_headers, MAX_HEADERS_RANGE),
        ] {
            if !range.contains(&value) {
                return bad(format!(
                    "{name} must be between {} and {}, got {value}",
                    range.start(),
                    range.end()
                ));
            }
        }
        if self.worker_threads > MAX_WORKER_THREADS {
            return bad(format!(
                "worker_threads must be at most {MAX_WORKER_THREADS}"
            ));
        }
        // The URL and prefix themselves are the engine's to check (see
        // `Server::start`): the core does not know what a Redis URL is.
        if self.backplane.is_none() && self.reuse_port {
            return bad(
                "reuse_port=True needs a backplane (e.g. backplane=\"redis://127.0.0.1:6379/0\"): \
                 without one, each process sharing the port delivers only its own publications \
                 to only its own share of the clients"
                    .into(),
            );
        }
        if self.reuse_port && !cfg!(unix) {
            return bad("reuse_port is only supported on Unix".into());
        }
        for (name, value) in [
            ("ping_interval", self.ping_interval),
            ("ping_timeout", self.ping_timeout),
            ("handshake_timeout", self.handshake_timeout),
            ("authorize_timeout", self.authorize_timeout),
        ] {
            if value.is_zero() {
                return bad(format!("{name} must be greater than 0"));
            }
        }
        Ok(())
    }
}

/// Converts a duration given in seconds by a binding into a [`Duration`].
///
/// # Errors
/// [`Error::InvalidConfig`] for negative, NaN, infinite or absurdly large
/// values, which `Duration::from_secs_f64` would panic on.
pub fn seconds(name: &str, value: f64) -> Result<Duration, Error> {
    // A day is far beyond any sensible timeout and far below overflow.
    const MAX_SECONDS: f64 = 86_400.0;
    if !value.is_finite() || value <= 0.0 || value > MAX_SECONDS {
        return Err(Error::InvalidConfig(format!(
            "{name} must be a number of seconds in (0, {MAX_SECONDS}], got {value}"
        )));
    }
    Ok(Duration::from_secs_f64(value))
}

/// [`seconds`] where 0 is allowed too (a clock-skew allowance).
///
/// # Errors
/// [`Error::InvalidConfig`] naming the option.
pub fn seconds_or_zero(name: &str, value: f64) -> Result<Duration, Error> {
    if value == 0.0 {
        return Ok(Duration::ZERO);
    }
    seconds(name, value).map_err(|_| {
        Error::InvalidConfig(format!(
            "{name} must be a number of seconds in [0, 86400], got {value}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn zero_limits_are_rejected_with_their_name() {
        let cfg = Config {
            send_queue: 0,
            ..Config::default()
        };
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("send_queue"), "{err}");
    }

    #[test]
    fn new_bounds_must_be_positive_and_fit_the_allow_list() {
        for cfg in [
            Config {
                max_topics: 0,
                ..Config::default()
            },
            Config {
                publish_queue_bytes: 0,
                ..Config::default()
            },
            Config {
                topics: TopicPolicy::Only(["a".to_string(), "b".to_string()].into()),
                max_topics: 1,
                ..Config::default()
            },
        ] {
            assert!(cfg.validate().is_err(), "{cfg:?}");
        }
    }

    #[test]
    fn request_head_limits_must_be_in_their_range() {
        for (bytes, headers, bad) in [
            (0, 64, Some("max_handshake_bytes")),
            (1023, 64, Some("max_handshake_bytes")),
            (16 * 1024 * 1024 + 1, 64, Some("max_handshake_bytes")),
            (65_536, 0, Some("max_headers")),
            (65_536, 7, Some("max_headers")),
            (65_536, 1025, Some("max_headers")),
            (1024, 8, None),
            (16 * 1024 * 1024, 1024, None),
        ] {
            let cfg = Config {
                max_handshake_bytes: bytes,
                max_headers: headers,
                ..Config::default()
            };
            match bad {
                Some(name) => {
                    let err = cfg.validate().unwrap_err().to_string();
                    assert!(err.contains(name), "{err}");
                }
                None => cfg.validate().unwrap(),
            }
        }
    }

    #[test]
    fn allow_list_with_bad_name_is_rejected() {
        let cfg = Config {
            topics: TopicPolicy::Only(["ok".to_string(), "not ok".to_string()].into()),
            ..Config::default()
        };
        assert!(cfg.validate().is_err());
    }

    #[test]
    fn reuse_port_without_a_backplane_is_rejected() {
        let cfg = Config {
            reuse_port: true,
            ..Config::default()
        };
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("backplane"), "{err}");
        let cfg = Config {
            reuse_port: true,
            backplane: Some("redis://127.0.0.1:6379/0".into()),
            ..Config::default()
        };
        cfg.validate().unwrap();
    }

    #[test]
    fn seconds_rejects_nan_negative_and_huge() {
        assert!(seconds("x", f64::NAN).is_err());
        assert!(seconds("x", -1.0).is_err());
        assert!(seconds("x", 0.0).is_err());
        assert!(seconds("x", 1e300).is_err());
        assert_eq!(seconds("x", 0.5).unwrap(), Duration::from_millis(500));
    }
}
