//! The Redis backplane: what lets several hubs (worker processes on one
//! host, or hosts behind a load balancer) serve one feed, each client
//! receiving every publication whichever hub it was made on.
//!
//! With a backplane, [`crate::core::hub::Hub::publish`] does not fan out locally:
//! it validates the publication, notes the topic's last known `seq` and
//! appends it to this module's bounded [`Outbound`] queue, then returns.
//! One task per hub (`Backplane::run`) owns two connections to Redis:
//!
//! - a publisher, over which it sends the queued publications in pipelined
//!   batches of `EVALSHA` calls of `SCRIPT`, which increments the topic's
//!   counter and publishes `"<seq> <data>"` on the topic's channel in one
//!   atomic step, so a channel's order is its `seq` order (a publication
//!   with a key or to be retained carries them between the two, see
//!   [`Meta`]; a clear of retained values is a plain `PUBLISH` of seq 0 in
//!   the same pipeline, so it keeps its place in that order);
//! - a subscriber holding one pattern subscription (`<prefix>*`), whose
//!   messages it hands to [`crate::core::hub::Hub::ingest`], i.e. to the same
//!   publish queue and fan-out local publications use.
//!
//! So `seq` comes from Redis and every hub (the publishing one included)
//! delivers a publication when it comes back from Redis. When either
//! connection fails the task drops both, reconnects with backoff, and
//! resumes sending only once it is subscribed again, so nothing published
//! after the reconnect goes unseen by this hub. What is lost meanwhile is
//! counted: `backplane_dropped` for publications this hub could not hand
//! to Redis (outbound queue full, or in a batch cut by the failure),
//! `backplane_missed` for publications of other hubs this hub did not
//! receive (a gap in a topic's `seq`). `docs/scaling.md` has the design.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use redis::{AsyncConnectionConfig, Client, RedisResult};
use tokio_util::sync::CancellationToken;

use crate::core::backplane::{Kind, Outbound, Outgoing};
use crate::core::error::Error;
use crate::core::hub::{Hub, Ingested};
use crate::core::stats::Counters;
use crate::core::stream::Epochs;
use crate::protocol::is_valid_topic;
use crate::protocol::MAX_EPOCH_LEN;

/// The log target (a Python logger name, `wshub.backplane`, once
/// through pyo3-log) this module's records have always had, kept apart from
/// the module's path so that moving code does not rename loggers.
const LOG_TARGET: &str = "wshub::backplane";

/// Longest `backplane_prefix`: it is repeated in every command and key.
pub const MAX_PREFIX_LEN: usize = 64;

/// How long a connection to Redis may take, at start and when
/// reconnecting; `start()` fails after this when Redis cannot be reached.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a command may wait for Redis's answer before the connection
/// is taken for dead (and re-established). Long enough for a busy Redis.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Publications per pipelined round trip: large enough to amortise the
/// round trip under load, small enough that one batch lost to a failure
/// is a small loss.
const MAX_BATCH: usize = 1024;

/// Pause before the first reconnection attempt, doubled after each
/// failure up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// How often an idle link is checked with `PING`, so that a Redis that
/// vanished without closing the connection is noticed.
const PING_INTERVAL: Duration = Duration::from_secs(10);

/// Pause before retrying a received publication when the hub's publish
/// queue is full (the fan-out is behind); Redis buffers meanwhile.
const INGEST_RETRY_PAUSE: Duration = Duration::from_millis(1);

/// How long `stop()` lets the task hand what is still queued to Redis.
const FLUSH_ON_STOP_TIMEOUT: Duration = Duration::from_secs(1);

/// Assigns the next `seq` of a topic and publishes, atomically.
///
/// `KEYS[1]` is the topic's counter; `ARGV` are the floor (the highest
/// `seq` the publishing hub has seen on the topic), the channel and the
/// data. The floor keeps `seq` increasing when Redis lost its counters (a
/// restart without persistence): the counter never restarts below what
/// clients have seen. Returns the `seq`, or 0 when the counter is not an
/// integer (someone else wrote the key), without publishing.
pub(crate) const SCRIPT: &str = r"
local seq = redis.pcall('INCR', KEYS[1])
if type(seq) ~= 'number' then return 0 end
local floor = tonumber(ARGV[1])
if seq <= floor then
  seq = floor + 1
  redis.call('SET', KEYS[1], string.format('%d', seq))
end
redis.call('PUBLISH', ARGV[2], string.format('%d', seq) .. ' ' .. ARGV[3])
return seq
";

/// Checks the backplane options without connecting.
///
/// # Errors
/// A message naming the option and why, for [`Error::InvalidConfig`].
pub fn validate(url: &str, prefix: &str) -> Result<(), String> {
    if !(url.starts_with("redis://") || url.starts_with("redis+unix://")) {
        return Err(
            "backplane must be a Redis URL: redis://host:port/db or redis+unix:///path".into(),
        );
    }
    Client::open(url).map_err(|e| format!("backplane URL is invalid: {e}"))?;
    let prefix_ok = !prefix.is_empty()
        && prefix.len() <= MAX_PREFIX_LEN
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
    if !prefix_ok {
        return Err(format!(
            "backplane_prefix must be 1-{MAX_PREFIX_LEN} characters of [A-Za-z0-9_.:-], got {prefix:?}"
        ));
    }
    Ok(())
}

/// The two connections of a live link to Redis.
pub(crate) struct Link {
    /// The feed's epoch, kept in Redis (see [`feed_epoch`]).
    pub(crate) epoch: Arc<str>,
    publisher: MultiplexedConnection,
    /// Kept for `PING`; dropping it would not close the subscription, but
    /// we need it to check the connection.
    sink: PubSubSink,
    messages: PubSubStream,
}

/// Why [`Backplane::serve`] returned.
enum Ended {
    Shutdown,
    Failed(String),
}

/// One hub's backplane: its Redis client, names, and outbound queue.
pub struct Backplane {
    client: Client,
    /// Where Redis is, for logs (never the URL, which may hold a password).
    addr: String,
    prefix: String,
    script: redis::Script,
    outbound: Arc<Outbound>,
}

impl Backplane {
    /// A backplane for `url` whose outbound queue holds `capacity`
    /// publications. Does not connect.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a malformed URL or prefix.
    pub fn new(url: &str, prefix: &str, capacity: usize) -> Result<Self, Error> {
        validate(url, prefix).map_err(Error::InvalidConfig)?;
        let client = Client::open(url).map_err(|e| Error::InvalidConfig(e.to_string()))?;
        Ok(Backplane {
            addr: client.get_connection_info().addr.to_string(),
            client,
            prefix: prefix.to_owned(),
            script: redis::Script::new(SCRIPT),
            outbound: Arc::new(Outbound::new(capacity)),
        })
    }

    /// The queue [`Hub::publish`] feeds.
    pub fn outbound(&self) -> Arc<Outbound> {
        Arc::clone(&self.outbound)
    }

    /// Where Redis is (host:port or socket path), for messages.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Connects both links, subscribes and loads the script.
    ///
    /// # Errors
    /// [`Error::Backplane`] saying what failed, within [`CONNECT_TIMEOUT`].
    pub(crate) async fn connect(&self) -> Result<Link, Error> {
        tokio::time::timeout(CONNECT_TIMEOUT, self.try_connect())
            .await
            .unwrap_or_else(|_| Err("timed out".into()))
            .map_err(|reason| Error::Backplane {
                addr: self.addr.clone(),
                reason,
            })
    }

    async fn try_connect(&self) -> Result<Link, String> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(RESPONSE_TIMEOUT);
        let text = |e: redis::RedisError| e.to_string();
        // Subscribe first: once the publisher can send, this hub must
        // already be listening, or it would miss its own publications.
        let mut pubsub = self.client.get_async_pubsub().await.map_err(text)?;
        pubsub
            .psubscribe(format!("{}*", self.prefix))
            .await
            .map_err(text)?;
        let mut publisher = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(text)?;
        self.script
            .prepare_invoke()
            .load_async(&mut publisher)
            .await
            .map_err(|e| format!("cannot load the Lua script (is EVALSHA allowed?): {e}"))?;
        let epoch = self.feed_epoch(&mut publisher).await?;
        let (sink, messages) = pubsub.split();
        Ok(Link {
            epoch,
            publisher,
            sink,
            messages,
        })
    }

    /// The feed's epoch: one name for the numbering every hub of the feed
    /// shares (`seq` comes from Redis's counters), kept in Redis under
    /// `<prefix>epoch`. The first hub to connect sets it; the others, and
    /// the same hub after a reconnect, read it. A Redis that lost its data
    /// gets a new one, so positions from before are not taken for
    /// positions in what it numbers next.
    async fn feed_epoch(&self, publisher: &mut MultiplexedConnection) -> Result<Arc<str>, String> {
        let key = format!("{}epoch", self.prefix);
        let candidate = Epochs::default().next();
        let (epoch,): (Option<String>,) = redis::pipe()
            .cmd("SET")
            .arg(&key)
            .arg(&*candidate)
            .arg("NX")
            .ignore()
            .cmd("GET")
            .arg(&key)
            .query_async(publisher)
            .await
            .map_err(|e| format!("cannot read the feed's epoch ({key}): {e}"))?;
        match epoch {
            Some(epoch)
                if !epoch.is_empty()
                    && epoch.len() <= MAX_EPOCH_LEN
                    && epoch.bytes().all(|b| b.is_ascii_alphanumeric()) =>
            {
                Ok(Arc::from(epoch))
            }
            other => Err(format!(
                "{key} holds {other:?}, not an epoch wshub wrote (another program uses the prefix?)"
            )),
        }
    }

    /// Serves `link` and then reconnects, with backoff, whenever it fails,
    /// until the hub shuts down.
    pub(crate) async fn run(
        self: Arc<Self>,
        hub: Arc<Hub>,
        shutdown: CancellationToken,
        link: Link,
    ) {
        let shutdown = &shutdown;
        let counters = &hub.counters;
        let mut link = Some(link);
        let mut backoff = BACKOFF_MIN;
        loop {
            let current = match link.take() {
                Some(current) => current,
                None => {
                    let attempt = tokio::select! {
                        () = shutdown.cancelled() => return,
                        attempt = self.connect() => attempt,
                    };
                    match attempt {
                        Ok(current) => {
                            hub.set_feed_epoch(Arc::clone(&current.epoch));
                            Counters::add(&counters.backplane_reconnects, 1);
                            tracing::info!(target: LOG_TARGET, addr = %self.addr, "backplane reconnected to Redis");
                            backoff = BACKOFF_MIN;
                            current
                        }
                        Err(error) => {
                            tracing::warn!(target: LOG_TARGET, %error, retry_in = ?backoff, "backplane reconnection failed");
                            tokio::select! {
                                () = shutdown.cancelled() => return,
                                () = tokio::time::sleep(backoff) => {}
                            }
                            backoff = (backoff * 2).min(BACKOFF_MAX);
                            continue;
                        }
                    }
                }
            };
            counters.backplane_connected.store(true, Ordering::Relaxed);
            let ended = self.serve(&hub, current, shutdown).await;
            counters.backplane_connected.store(false, Ordering::Relaxed);
            match ended {
                Ended::Shutdown => return,
                Ended::Failed(reason) => {
                    tracing::warn!(target: LOG_TARGET, addr = %self.addr, %reason, "backplane lost its connection to Redis; reconnecting");
                }
            }
        }
    }

    /// Moves publications both ways over one live link until it fails or
    /// the hub shuts down.
    async fn serve(&self, hub: &Hub, link: Link, shutdown: &CancellationToken) -> Ended {
        let Link {
            mut publisher,
            mut sink,
            mut messages,
            ..
        } = link;
        let mut batch = Vec::new();
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + PING_INTERVAL, PING_INTERVAL);
        // Publications queued while disconnected (or left by a failed
        // link) have no pending wake-up: give them one.
        self.outbound.wake();
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => {
                    self.flush_on_stop(hub, &mut publisher).await;
                    return Ended::Shutdown;
                }
                message = messages.next() => {
                    let Some(message) = message else {
                        return Ended::Failed("the subscription was closed".into());
                    };
                    if !self.receive(hub, &message, shutdown).await {
                        return Ended::Shutdown;
                    }
                }
                () = self.outbound.ready() => {
                    // A slow Redis must not hold up `stop()`.
                    let sent = shutdown
                        .run_until_cancelled(self.send_all(hub, &mut publisher, &mut batch))
                        .await;
                    match sent {
                        Some(Ok(())) => {}
                        Some(Err(error)) => return Ended::Failed(error.to_string()),
                        None => {
                            let lost = (batch.len() + self.outbound.len()) as u64;
                            Counters::add(&hub.counters.backplane_dropped, lost);
                            return Ended::Shutdown;
                        }
                    }
                }
                _ = ping.tick() => {
                    let Some(alive) = shutdown.run_until_cancelled(ping_both(&mut sink, &mut publisher)).await else {
                        return Ended::Shutdown;
                    };
                    if let Err(reason) = alive {
                        return Ended::Failed(reason);
                    }
                }
            }
        }
    }

    /// Sends everything queued, batch by batch.
    async fn send_all(
        &self,
        hub: &Hub,
        publisher: &mut MultiplexedConnection,
        batch: &mut Vec<Outgoing>,
    ) -> RedisResult<()> {
        loop {
            self.outbound.take(batch, MAX_BATCH);
            if batch.is_empty() {
                return Ok(());
            }
            self.send_batch(hub, publisher, batch).await?;
        }
    }

    /// One pipelined round trip: `SCRIPT LOAD` (so that a Redis that lost
    /// its script cache still runs the batch) and one `EVALSHA` per
    /// publication. On failure the whole batch is counted as dropped:
    /// some of it may have reached Redis, and resending could duplicate.
    async fn send_batch(
        &self,
        hub: &Hub,
        publisher: &mut MultiplexedConnection,
        batch: &mut Vec<Outgoing>,
    ) -> RedisResult<()> {
        let mut pipe = redis::pipe();
        pipe.cmd("SCRIPT").arg("LOAD").arg(SCRIPT).ignore();
        for item in batch.iter() {
            let channel = format!("{}{}", self.prefix, item.topic);
            let meta = Meta {
                kind: item.kind,
                key: item.key.as_deref(),
            };
            if item.kind == Kind::ClearRetained {
                // Its answer (how many hubs heard it) is not a seq.
                pipe.cmd("PUBLISH")
                    .arg(channel)
                    .arg(format!("0 {meta}"))
                    .ignore();
                continue;
            }
            pipe.cmd("EVALSHA")
                .arg(self.script.get_hash())
                .arg(1)
                .arg(format!("{}seq:{}", self.prefix, item.topic))
                .arg(item.floor)
                .arg(channel)
                .arg(format!("{meta}{}", item.data));
        }
        let result = pipe.query_async::<Vec<u64>>(publisher).await;
        let counters = &hub.counters;
        match result {
            Ok(seqs) => {
                let refused = seqs.iter().filter(|&&seq| seq == 0).count() as u64;
                if refused > 0 {
                    tracing::warn!(target: LOG_TARGET, refused,
                        "Redis refused publications: a seq counter key holds a non-integer"
                    );
                }
                // One answer per publication (clears have none).
                Counters::add(&counters.backplane_published, seqs.len() as u64 - refused);
                Counters::add(&counters.backplane_dropped, refused);
                self.outbound.flowing();
                batch.clear();
                Ok(())
            }
            Err(error) => {
                Counters::add(&counters.backplane_dropped, batch.len() as u64);
                batch.clear();
                Err(error)
            }
        }
    }

    /// On `stop()`: hands what is still queued to Redis (for the other
    /// hubs; this one's clients are being closed), within a deadline.
    async fn flush_on_stop(&self, hub: &Hub, publisher: &mut MultiplexedConnection) {
        let mut batch = Vec::new();
        let flushed = tokio::time::timeout(
            FLUSH_ON_STOP_TIMEOUT,
            self.send_all(hub, publisher, &mut batch),
        )
        .await;
        if !matches!(flushed, Ok(Ok(()))) {
            let lost = (batch.len() + self.outbound.len()) as u64;
            Counters::add(&hub.counters.backplane_dropped, lost);
        }
    }

    /// Hands one message from Redis to the hub. Returns `false` when the
    /// hub is shutting down.
    async fn receive(&self, hub: &Hub, message: &redis::Msg, shutdown: &CancellationToken) -> bool {
        let Some(Message {
            topic,
            seq,
            kind,
            key,
            data,
        }) = parse_message(
            &self.prefix,
            message.get_channel_name(),
            message.get_payload_bytes(),
        )
        else {
            tracing::warn!(target: LOG_TARGET, channel = message.get_channel_name(),
                "ignoring a message on the backplane's channels that wshub did not publish"
            );
            return true;
        };
        let counters = &hub.counters;
        loop {
            let ingested = if kind == Kind::ClearRetained {
                hub.queue_clear(topic, key)
                    .map(|()| Ingested::Queued { missed: 0 })
            } else {
                hub.ingest(topic, seq, data, key, kind == Kind::Retain)
            };
            match ingested {
                Ok(Ingested::Queued { missed }) => {
                    Counters::add(&counters.backplane_received, 1);
                    if missed > 0 {
                        Counters::add(&counters.backplane_missed, missed);
                        tracing::warn!(target: LOG_TARGET, topic,
                            missed,
                            "backplane: publications missed (seq gap), e.g. while reconnecting"
                        );
                    }
                    return true;
                }
                // Nobody here listens: received, and delivered to nobody.
                Ok(Ingested::Unwatched) => {
                    Counters::add(&counters.backplane_received, 1);
                    return true;
                }
                Ok(Ingested::Stale) => {
                    Counters::add(&counters.backplane_missed, 1);
                    tracing::warn!(target: LOG_TARGET, topic, seq, "backplane: dropped a publication whose seq is not above the last delivered (Redis lost its counters?)");
                    return true;
                }
                Err(Error::Overloaded) => {
                    tokio::select! {
                        () = shutdown.cancelled() => return false,
                        () = tokio::time::sleep(INGEST_RETRY_PAUSE) => {}
                    }
                }
                Err(Error::NotRunning) => return false,
                Err(error) => {
                    tracing::warn!(target: LOG_TARGET, %error, topic, "ignoring an invalid publication from the backplane");
                    return true;
                }
            }
        }
    }
}

/// Checks that both connections still answer.
async fn ping_both(
    sink: &mut PubSubSink,
    publisher: &mut MultiplexedConnection,
) -> Result<(), String> {
    let subscriber = tokio::time::timeout(RESPONSE_TIMEOUT, sink.ping::<String>()).await;
    if !matches!(subscriber, Ok(Ok(_))) {
        return Err("the subscription did not answer PING".into());
    }
    redis::cmd("PING")
        .query_async::<String>(publisher)
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

/// What a message carries besides its topic, `seq` and data: its kind and
/// key, written between the `seq` and the data as `~` and a letter, then
/// the key's length in bytes, `:` and the key, then a space:
/// `17 ~k5:match {...}` (a key), `17 ~r {...}` (to retain, no key),
/// `17 ~R5:match {...}` (to retain under a key), `0 ~c ` (clear all of the
/// topic's retained values), `0 ~C5:match ` (clear one key). A plain
/// publication has none: `17 {...}`. JSON never starts with `~`, so the
/// two cannot be confused.
struct Meta<'a> {
    kind: Kind,
    key: Option<&'a str>,
}

impl std::fmt::Display for Meta<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let letter = match (self.kind, self.key.is_some()) {
            (Kind::Publish, false) => return Ok(()),
            (Kind::Publish, true) => 'k',
            (Kind::Retain, false) => 'r',
            (Kind::Retain, true) => 'R',
            (Kind::ClearRetained, false) => 'c',
            (Kind::ClearRetained, true) => 'C',
        };
        match self.key {
            Some(key) => write!(f, "~{letter}{}:{key} ", key.len()),
            None => write!(f, "~{letter} "),
        }
    }
}

/// One message of the backplane, parsed.
#[derive(Debug, PartialEq, Eq)]
struct Message<'a> {
    topic: &'a str,
    /// 0 for a clear of retained values.
    seq: u64,
    kind: Kind,
    key: Option<&'a str>,
    data: &'a str,
}

/// Splits a message on `<prefix><topic>` carrying `"<seq> [meta]<data>"`
/// (see [`Meta`]). `None` for anything else (another program publishing
/// on our channels).
fn parse_message<'a>(prefix: &str, channel: &'a str, payload: &'a [u8]) -> Option<Message<'a>> {
    let topic = channel.strip_prefix(prefix)?;
    if !is_valid_topic(topic) {
        return None;
    }
    let payload = std::str::from_utf8(payload).ok()?;
    let (seq, rest) = payload.split_once(' ')?;
    let seq = seq.parse::<u64>().ok()?;
    let (kind, key, data) = match rest.strip_prefix('~') {
        None => (Kind::Publish, None, rest),
        Some(meta) => {
            let mut chars = meta.chars();
            let letter = chars.next()?;
            let meta = chars.as_str();
            let (key, after) = if letter.is_ascii_uppercase() || letter == 'k' {
                let (len, after) = meta.split_once(':')?;
                let len = len.parse::<usize>().ok()?;
                (Some(after.get(..len)?), after.get(len..)?)
            } else {
                (None, meta)
            };
            let data = after.strip_prefix(' ')?;
            let kind = match letter {
                'k' => Kind::Publish,
                'r' | 'R' => Kind::Retain,
                'c' | 'C' => Kind::ClearRetained,
                _ => return None,
            };
            (kind, key, data)
        }
    };
    // Only a clear has no seq (and no data).
    let clear = kind == Kind::ClearRetained;
    if (seq == 0) != clear || (clear && !data.is_empty()) {
        return None;
    }
    Some(Message {
        topic,
        seq,
        kind,
        key,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message<'a>(seq: u64, kind: Kind, key: Option<&'a str>, data: &'a str) -> Message<'a> {
        Message {
            topic: "odds",
            seq,
            kind,
            key,
            data,
        }
    }

    #[test]
    fn kinds_and_keys_travel_in_the_payload() {
        for (seq, kind, key, data) in [
            (17, Kind::Publish, None, "{\"a\": 1}"),
            (17, Kind::Publish, Some("m:1 x"), "[1]"),
            (18, Kind::Retain, None, "2"),
            (19, Kind::Retain, Some(""), "\"é\""),
            (20, Kind::Retain, Some("é~:9 "), "{}"),
            (0, Kind::ClearRetained, None, ""),
            (0, Kind::ClearRetained, Some("k"), ""),
        ] {
            let payload = format!("{seq} {}{data}", Meta { kind, key });
            assert_eq!(
                parse_message("wshub:", "wshub:odds", payload.as_bytes()),
                Some(message(seq, kind, key, data)),
                "{payload}"
            );
        }
        // Malformed metadata is foreign.
        for payload in [
            "1 ~x 2",
            "1 ~k 2",
            "1 ~R9:ab 2",
            "1 ~r2",
            "1 ~c ",
            "0 ~r 2",
            "0 ~c 2",
            "0 2",
        ] {
            assert_eq!(
                parse_message("wshub:", "wshub:odds", payload.as_bytes()),
                None,
                "{payload}"
            );
        }
    }

    #[test]
    fn messages_are_parsed_and_foreign_ones_refused() {
        assert_eq!(
            parse_message("wshub:", "wshub:odds", b"17 {\"a\": 1}"),
            Some(message(17, Kind::Publish, None, "{\"a\": 1}"))
        );
        assert_eq!(parse_message("wshub:", "other:odds", b"1 2"), None);
        assert_eq!(parse_message("wshub:", "wshub:bad topic", b"1 2"), None);
        assert_eq!(parse_message("wshub:", "wshub:t", b"x 2"), None);
        assert_eq!(parse_message("wshub:", "wshub:t", b"0 2"), None);
        assert_eq!(parse_message("wshub:", "wshub:t", b"12"), None);
    }

    #[test]
    fn options_are_validated() {
        assert!(validate(
            "redis://127.0.0.1:6379/0",
            crate::core::config::DEFAULT_BACKPLANE_PREFIX
        )
        .is_ok());
        assert!(validate(
            "http://127.0.0.1",
            crate::core::config::DEFAULT_BACKPLANE_PREFIX
        )
        .is_err());
        assert!(validate("redis://127.0.0.1:6379/0", "").is_err());
        assert!(validate("redis://127.0.0.1:6379/0", "a*").is_err());
    }
}
