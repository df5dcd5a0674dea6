//! Topics, their subscribers, and the fan-out of publications.
//!
//! `publish` runs on the caller's thread and does O(1) work in the number
//! of subscribers: it assigns the topic's next `seq`, builds the frame once
//! and appends it to a bounded queue. A single fan-out task on the runtime
//! takes publications from that queue in batches and appends a refcounted
//! copy to each subscriber's [`Outbox`]. Consecutive publications of one
//! topic in a batch (a run) are copied once into one buffer and reach each
//! subscriber as one entry, so under load a delivery costs a fraction of a
//! queue push and the writer hands the kernel one large slice instead of
//! many small ones.
//!
//! The registry holds only topics somebody is subscribed to (or is about
//! to be, see [`Reserved`]) or that keep a history for clients that will
//! recover (see [`crate::core::stream`]), at most `max_topics` of them: a
//! publication on a topic the hub does not hold is counted and dropped
//! without creating an entry, a topic is forgotten when its last
//! subscriber leaves unless it keeps a history, and a full registry evicts
//! the longest-idle topic kept for its history. So neither clients
//! (made-up names) nor hosts (per-entity topics such as `match:123`) can
//! grow it without bound.
//!
//! The fan-out appends each publication to its topic's stream under the
//! topic's lock, where subscribers are added: a subscriber that recovers
//! gets the stream's entries after its position, and everything numbered
//! later through the fan-out, with no gap and no repeat.
//!
//! Ordering guarantees come from two locks: `seq` is assigned and the
//! publication queued under the queue lock (so the queue is in `seq` order
//! per topic), and a topic's subscriber list is locked both while fanning a
//! publication out and while (un)subscribing (so a client that got its
//! `subscribed`/`unsubscribed` answer sees exactly the publications fanned
//! out after it).

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, RwLock, TryLockError, Weak};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::core::backplane::{Kind, Outbound, Outgoing};
use crate::core::error::Error;
use crate::core::outbox::{lock, OutFrame, Outbox, Pacing, Tally};
use crate::core::retained::{Kept, Retained, RetainedLimits, Value};
use crate::core::stats::{Counters, Stats};
use crate::core::stream::{Epochs, HistoryLimits, Stream};
use crate::core::subscription_events::SubscriptionEvents;
use crate::protocol::deflate::Deflater;
use crate::protocol::frame::{encode_publication, encode_retained, MAX_FRAME_HEADER_LEN};
use crate::protocol::{
    is_valid_topic, publication_len, retained_len, validate_json, Position, TopicStream,
};

/// Deliveries the fan-out makes before it lets the writers run: large
/// enough that each client's write carries many frames (one syscall for
/// many publications), small enough that a burst does not fill queues.
const DELIVERIES_PER_SLICE: u64 = 32 * 1024;

/// Publications per slice when the hub is not told its clients' queue
/// size (see [`Hub::paced`]).
const DEFAULT_PUBLICATIONS_PER_SLICE: usize = 256;

/// The longest the fan-out waits for lagging clients (more than half a
/// queue behind) before it goes on regardless. A client that reads catches
/// up within it. One that stopped reading is not waited for at all once
/// its socket has taken nothing for [`crate::core::outbox::STUCK_AFTER`] (see
/// [`Pacing`]): its bounded queue then decides (it is closed as a slow
/// consumer, or conflated), and the others never wait for it.
const MAX_PACING_PAUSE: Duration = Duration::from_millis(50);

/// The registry's table is shrunk when fewer than a quarter of its slots
/// are used, but never below this many: a hub whose topics come and go
/// gives memory back after a peak without rehashing on every change.
const MIN_REGISTRY_CAPACITY: usize = 1024;

/// Checks a publication's topic name and JSON, before anything is queued.
///
/// # Errors
/// [`Error::InvalidTopic`] or [`Error::InvalidJson`].
pub fn check_publication(topic: &str, data: &str) -> Result<(), Error> {
    if !is_valid_topic(topic) {
        return Err(Error::InvalidTopic(topic.to_owned()));
    }
    validate_json(data).map_err(Error::InvalidJson)
}

/// Checks a topic name for a publication whose data needs no JSON check.
///
/// # Errors
/// [`Error::InvalidTopic`].
#[cfg_attr(
    not(feature = "python"),
    allow(
        dead_code,
        reason = "only the Python facade checks, then publishes without waiting"
    )
)]
pub fn check_topic(topic: &str) -> Result<(), Error> {
    if is_valid_topic(topic) {
        Ok(())
    } else {
        Err(Error::InvalidTopic(topic.to_owned()))
    }
}

/// Whether a publishing call may wait for the queue's lock and room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    Allowed,
    Never,
}

/// Identifies one connection within a hub.
pub type ConnId = u64;

thread_local! {
    /// Set on the hub runtimes' own threads, where `publish` must not wait
    /// for the fan-out (which may need this very thread).
    static ON_RUNTIME_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// Marks the current thread as a runtime thread (called from the
/// runtime's `on_thread_start`).
pub(crate) fn mark_runtime_thread() {
    ON_RUNTIME_THREAD.with(|f| f.set(true));
}

fn on_runtime_thread() -> bool {
    ON_RUNTIME_THREAD.with(Cell::get)
}

/// One topic: its sequence counter, its subscribers and its stream.
#[derive(Debug)]
struct Topic {
    /// Its name, shared with the registry's key.
    name: Arc<str>,
    /// Names this lifetime of the topic's numbering (see
    /// [`crate::core::stream`]): a topic forgotten and registered anew
    /// gets a new one, and its `seq` restarts at 1.
    epoch: Arc<str>,
    /// Next `seq` to assign; only touched under the publish-queue lock.
    next_seq: AtomicU64,
    /// Mirrors `subscribers.len()` so `publish` can answer without locking.
    subscriber_count: AtomicU64,
    /// Set (under the publish-queue lock) once a publication to be
    /// retained is queued: from then on a new subscriber starts right
    /// after the retained values it is given (see
    /// [`Hub::subscribe_reserved`]).
    retains: AtomicBool,
    subscribers: Mutex<Subscribers>,
}

/// One subscriber of a topic.
#[derive(Debug)]
struct Subscriber {
    id: ConnId,
    outbox: Arc<Outbox>,
    /// The first `seq` this subscriber receives: publications made before
    /// it subscribed (still queued for the fan-out) are not for it, as
    /// `broadcast`'s subscriber count already said.
    from_seq: u64,
}

/// A dense list for fast iteration plus an index for O(1) removal, and
/// what decides whether the topic stays in the registry.
#[derive(Debug, Default)]
struct Subscribers {
    list: Vec<Subscriber>,
    index: HashMap<ConnId, usize>,
    /// Places held by [`Reserved`] for connections about to subscribe:
    /// they keep the topic registered until they subscribe.
    reserved: usize,
    /// Set when the topic lost its last subscriber and leaves the
    /// registry: nobody may subscribe to this entry any more; a newcomer
    /// registers a fresh one under the same name.
    forgotten: bool,
    /// The last publications, for clients that recover (appended by the
    /// fan-out under this lock, so a subscriber's `from_seq` and what
    /// the stream holds agree).
    stream: Stream,
    /// The newest value per key kept for subscribers to come (changed by
    /// the fan-out under this lock, like the stream).
    retained: Retained,
    /// Publications to be retained that are queued and not yet fanned
    /// out: they keep the topic registered, so the value is not lost
    /// with a topic forgotten meanwhile.
    pending_retains: usize,
}

impl Subscribers {
    fn insert(&mut self, subscriber: Subscriber) -> bool {
        if self.index.contains_key(&subscriber.id) {
            return false;
        }
        self.index.insert(subscriber.id, self.list.len());
        self.list.push(subscriber);
        true
    }

    fn remove(&mut self, id: ConnId) -> bool {
        let Some(pos) = self.index.remove(&id) else {
            return false;
        };
        self.list.swap_remove(pos);
        if let Some(moved) = self.list.get(pos) {
            self.index.insert(moved.id, pos);
        }
        true
    }
}

impl Topic {
    fn new(name: Arc<str>, epoch: Arc<str>) -> Self {
        Topic {
            name,
            epoch,
            next_seq: AtomicU64::new(1),
            subscriber_count: AtomicU64::new(0),
            retains: AtomicBool::new(false),
            subscribers: Mutex::new(Subscribers::default()),
        }
    }
}

impl Subscribers {
    /// Nobody subscribed and nobody about to: the topic has no reader.
    fn is_idle(&self) -> bool {
        self.list.is_empty() && self.reserved == 0
    }

    /// Idle and keeping no history and no retained value (nor about to):
    /// the topic can leave the registry (its `seq` numbering restarts, in
    /// a new epoch, if it is subscribed again).
    fn is_unused(&self) -> bool {
        self.is_idle()
            && self.stream.is_empty()
            && self.retained.is_empty()
            && self.pending_retains == 0
    }
}

/// A place on a topic held for one connection between the answer that
/// lists the topic and the subscription itself (see [`Hub::reserve`]);
/// the topic stays registered meanwhile. Give it to
/// [`Hub::subscribe_reserved`] (at once: until then the topic cannot be
/// forgotten).
#[derive(Debug)]
#[must_use]
pub struct Reserved {
    topic: Arc<Topic>,
    /// What the answer says of the topic's stream.
    stream: TopicStream,
    /// A recovery promised: the first `seq` to send from the stream.
    recover_from: Option<u64>,
    /// What that recovery, or else the retained values, send at once:
    /// frames and bytes (the most the subscription may send before live
    /// publications).
    backlog: (usize, usize),
}

impl Reserved {
    /// Frames and bytes the promised recovery or the retained values send
    /// at once (zero without either), for the connection's budget over
    /// several topics.
    pub fn backlog(&self) -> (usize, usize) {
        self.backlog
    }

    /// The topic's epoch and newest `seq`, and whether the position asked
    /// for (if any) will be recovered, for the answer.
    pub fn stream(&self) -> &TopicStream {
        &self.stream
    }
}

/// How much a recovery may send a client at once: what its queue holds.
#[derive(Debug, Clone, Copy)]
pub struct Backlog {
    /// Publications at most.
    pub frames: usize,
    /// Bytes at most.
    pub bytes: usize,
}

/// A run's frames, each alone and all copied once into one buffer.
struct Concatenated {
    frames: Vec<Bytes>,
    wire: Bytes,
    /// `starts[i]`: where frame i begins in `wire`.
    starts: Vec<usize>,
}

impl Concatenated {
    fn of(frames: Vec<Bytes>) -> Self {
        let mut starts = Vec::with_capacity(frames.len());
        let mut wire = BytesMut::with_capacity(frames.iter().map(Bytes::len).sum());
        for frame in &frames {
            starts.push(wire.len());
            wire.extend_from_slice(frame);
        }
        Concatenated {
            frames,
            wire: wire.freeze(),
            starts,
        }
    }

    /// The frames from the `skip`th on, as one buffer.
    fn from(&self, skip: usize) -> Bytes {
        let start = self.starts.get(skip).copied().unwrap_or(self.wire.len());
        self.wire.slice(start..)
    }
}

/// A publication on its way to the fan-out.
struct Publication {
    topic: Arc<Topic>,
    seq: u64,
    /// Conflation key (`topic` NUL `key`), only under the conflate policy.
    key: Option<Arc<str>>,
    /// The encoded WebSocket frame, shared by every subscriber (empty for
    /// a [`Retain::Clear`], which is delivered to nobody).
    frame: Bytes,
    /// What it does to the topic's retained values, if anything.
    retain: Option<Retain>,
}

/// A queued change to a topic's retained values, made by the fan-out in
/// publication order (so a clear after a retained publication of the
/// same thread clears it, and one before does not).
enum Retain {
    /// Keep this publication as the newest value of `key` (`None`: the
    /// topic's keyless value); `frame` is its retained frame.
    Keep { key: Option<Arc<str>>, frame: Bytes },
    /// Forget the value of `key`, or all of the topic's (`None`).
    Clear { key: Option<Arc<str>> },
}

impl Publication {
    /// A clear of retained values: it changes the topic, and nobody
    /// receives it.
    fn is_clear(&self) -> bool {
        matches!(self.retain, Some(Retain::Clear { .. }))
    }
}

#[derive(Default)]
struct QueueState {
    items: VecDeque<Publication>,
    /// Bytes of the queued frames.
    bytes: usize,
    closed: bool,
}

impl QueueState {
    fn push(&mut self, publication: Publication) {
        self.bytes += publication.frame.len();
        self.items.push_back(publication);
    }

    fn pop(&mut self) -> Option<Publication> {
        let publication = self.items.pop_front()?;
        self.bytes -= publication.frame.len();
        Some(publication)
    }
}

/// The bounded hand-off between publishers and the fan-out task.
struct PublishQueue {
    state: Mutex<QueueState>,
    /// Publishers waiting for room.
    not_full: Condvar,
    /// Wakes the fan-out task when the queue becomes non-empty.
    ready: Notify,
    /// `state.closed`, readable without the lock (set under it): for the
    /// checks that only report it, such as a publication nobody watches.
    closed: AtomicBool,
    /// Publications queued at most...
    capacity: usize,
    /// ...and bytes of their frames at most.
    capacity_bytes: usize,
}

impl PublishQueue {
    /// Whether a frame of `len` bytes may join the queue now. An empty
    /// queue takes anything, so one publication larger than the byte bound
    /// still goes through (alone).
    fn has_room(&self, state: &QueueState, len: usize) -> bool {
        state.items.is_empty()
            || (state.items.len() < self.capacity
                && state.bytes.saturating_add(len) <= self.capacity_bytes)
    }
}

/// The topic registry and the fan-out.
pub struct Hub {
    topics: RwLock<HashMap<Arc<str>, Arc<Topic>>>,
    /// Topics the registry holds at most (see [`Hub::reserve`]).
    max_topics: usize,
    queue: PublishQueue,
    /// Shared with connections and the server.
    pub counters: Counters,
    /// Where first-subscriber/last-subscriber transitions go, if anywhere.
    events: Option<SubscriptionEvents>,
    /// Set when the hub has a Redis backplane: `publish` then hands
    /// publications to it instead of the local queue (see [`Hub::ingest`]).
    backplane: OnceLock<Arc<Outbound>>,
    /// Whether publications carry conflation keys (conflate policy).
    conflate: bool,
    /// Which subscribers' outboxes are lagging, for the pacing.
    pacing: Arc<Pacing>,
    /// At most this many publications per slice, and about this many
    /// bytes: a quarter of a client's queue, so that one slice never
    /// overflows a client that is not lagging.
    publications_per_slice: usize,
    bytes_per_slice: usize,
    /// How much of each topic's stream is kept.
    history: HistoryLimits,
    /// How many retained values are kept.
    retained: RetainedLimits,
    /// Names each topic's epoch.
    epochs: Epochs,
    /// With a backplane, the feed's one epoch, which every topic created
    /// from then on takes (the numbering is Redis's, shared by every hub).
    feed_epoch: RwLock<Option<Arc<str>>>,
    /// Topics without a subscriber kept for their history, oldest first,
    /// to be evicted when the registry is full or their history expires.
    /// Entries may be stale (the topic got a subscriber, or was forgotten
    /// since): they are checked when taken.
    idle: Mutex<VecDeque<Weak<Topic>>>,
    /// With `compression`, the fan-out's compressor: a publication is
    /// compressed once, at its first compressing subscriber, and that
    /// frame is shared by all of them (see [`crate::protocol::deflate`]).
    deflater: Option<Mutex<Deflater>>,
    /// Frames shorter than this go uncompressed (`compression_min_size`).
    compression_min_size: usize,
}

/// What [`Hub::ingest`] did with a publication from the backplane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingested {
    /// Queued for the fan-out. `missed` publications of the topic came
    /// before it and never arrived (a gap in `seq`; 0 normally).
    Queued {
        /// How many `seq` numbers were skipped.
        missed: u64,
    },
    /// Not queued: its `seq` is not above the topic's last one, and
    /// clients must see `seq` increase.
    Stale,
    /// Not queued: nobody here is subscribed to the topic.
    Unwatched,
}

impl Hub {
    /// A hub whose publish queue holds at most `publish_queue` publications
    /// (and no byte bound until [`Hub::bounded`] sets one).
    #[cfg(test)]
    pub fn new(publish_queue: usize) -> Self {
        Self::with_events(publish_queue, None)
    }

    /// A hub that also reports topics gaining their first subscriber or
    /// losing their last one to `events`.
    pub fn with_events(publish_queue: usize, events: Option<SubscriptionEvents>) -> Self {
        Hub {
            topics: RwLock::new(HashMap::new()),
            max_topics: usize::MAX,
            queue: PublishQueue {
                state: Mutex::new(QueueState::default()),
                not_full: Condvar::new(),
                ready: Notify::new(),
                closed: AtomicBool::new(false),
                capacity: publish_queue,
                capacity_bytes: usize::MAX,
            },
            counters: Counters::default(),
            events,
            backplane: OnceLock::new(),
            conflate: false,
            pacing: Arc::default(),
            publications_per_slice: DEFAULT_PUBLICATIONS_PER_SLICE,
            bytes_per_slice: usize::MAX,
            history: HistoryLimits::NONE,
            retained: RetainedLimits::NONE,
            epochs: Epochs::default(),
            feed_epoch: RwLock::new(None),
            idle: Mutex::new(VecDeque::new()),
            deflater: None,
            compression_min_size: 0,
        }
    }

    /// Compresses publications for clients that negotiated
    /// permessage-deflate, at `level`, when their frame has at least
    /// `min_size` bytes (set once, at start).
    #[must_use]
    pub fn compressing(mut self, level: u32, min_size: usize) -> Self {
        self.deflater = Some(Mutex::new(Deflater::new(level)));
        self.compression_min_size = min_size;
        self
    }

    /// The frame of `frame` a compressing subscriber gets: its compressed
    /// frame, made once and kept in `cache` for the next subscriber, or
    /// `frame` itself when it is short or does not shrink.
    fn deflated(&self, frame: &Bytes, cache: &mut Option<Bytes>) -> Bytes {
        if let Some(done) = cache {
            return done.clone();
        }
        let compressed = match &self.deflater {
            Some(deflater) if frame.len() >= self.compression_min_size => {
                lock(deflater).deflate_frame(frame)
            }
            _ => None,
        };
        let chosen = match compressed {
            Some(compressed) => {
                Counters::add(&self.counters.compressed_publications, 1);
                Counters::add(&self.counters.compression_bytes_in, frame.len() as u64);
                Counters::add(
                    &self.counters.compression_bytes_out,
                    compressed.len() as u64,
                );
                compressed
            }
            None => frame.clone(),
        };
        cache.insert(chosen).clone()
    }

    /// Keeps each topic's last publications within `limits`, for clients
    /// that recover (set once, at start).
    #[must_use]
    pub fn with_history(mut self, limits: HistoryLimits) -> Self {
        self.history = limits;
        self
    }

    /// Keeps retained values within `limits` (set once, at start).
    #[must_use]
    pub fn with_retained(mut self, limits: RetainedLimits) -> Self {
        self.retained = limits;
        self
    }

    /// Whether topics keep a history (and publications on a topic that
    /// has one are numbered even while nobody is subscribed).
    fn keeps_history(&self) -> bool {
        self.history.size > 0
    }

    /// Sizes the fan-out's slices for clients whose queues hold
    /// `client_queue` frames and `client_queue_bytes` bytes: a quarter of
    /// that per slice (at least one publication), so a burst reaches a
    /// client in steps its queue can take.
    #[must_use]
    pub fn paced(mut self, client_queue: usize, client_queue_bytes: usize) -> Self {
        self.publications_per_slice = (client_queue / 4).max(1);
        self.bytes_per_slice = client_queue_bytes / 4;
        self
    }

    /// Bounds the registry to `max_topics` topics and the publish queue to
    /// `publish_queue_bytes` bytes of frames (set once, at start).
    #[must_use]
    pub fn bounded(mut self, max_topics: usize, publish_queue_bytes: usize) -> Self {
        self.max_topics = max_topics;
        self.queue.capacity_bytes = publish_queue_bytes;
        self
    }

    /// The pacing a connection's outbox reports to (see
    /// [`Outbox::paced_by`]).
    pub fn pacing(&self) -> &Arc<Pacing> {
        &self.pacing
    }

    /// Turns on the conflate policy's keys (set once, at start).
    pub fn conflating(mut self, on: bool) -> Self {
        self.conflate = on;
        self
    }

    fn conflation_key(&self, topic: &str, key: Option<&str>) -> Option<Arc<str>> {
        if !self.conflate {
            return None;
        }
        Some(match key {
            Some(key) => Arc::from(format!("{topic}\0{key}")),
            None => Arc::from(topic),
        })
    }

    /// Ends the subscription-event thread after it delivered what is
    /// queued (part of the server's stop).
    pub fn stop_events(&self) {
        if let Some(events) = &self.events {
            events.stop();
        }
    }

    fn report(&self, topic: &str, subscribers: u64) {
        if let Some(events) = &self.events {
            events.report(
                &Arc::from(topic),
                subscribers,
                &self.counters.subscription_events_dropped,
            );
        }
    }

    /// Publishes `data` (JSON text) on `topic` and returns how many
    /// subscribers the topic has now, i.e. how many it will be queued for.
    /// A topic the hub does not hold queues nothing (and uses no `seq`);
    /// one kept for its history is numbered and recorded.
    ///
    /// Waits (only) when the publish queue is full, in publications or in
    /// bytes, which bounds memory when publishers outrun the fan-out.
    ///
    /// # Errors
    /// [`Error::InvalidTopic`], [`Error::InvalidJson`] (nothing is sent),
    /// [`Error::NotRunning`] after [`Hub::close`], and [`Error::Overloaded`]
    /// when the queue is full and the caller is a runtime thread.
    #[cfg(test)]
    pub fn publish(&self, topic: &str, data: &str) -> Result<u64, Error> {
        self.publish_keyed(topic, data, None, false)
    }

    /// [`Hub::publish`] with a key and, with `retain`, kept as the newest
    /// value of (topic, key) for subscribers to come (see
    /// [`crate::core::retained`]); a topic the hub does not hold is then
    /// registered for it. Under the conflate policy, a client that is
    /// behind keeps only the newest publication per (topic, key). Without
    /// a key, the topic is the key.
    ///
    /// # Errors
    /// As [`Hub::publish`], and [`Error::NotRetainable`] (nothing is
    /// sent) for a value to retain that the bounds can never hold.
    pub fn publish_keyed(
        &self,
        topic: &str,
        data: &str,
        key: Option<&str>,
        retain: bool,
    ) -> Result<u64, Error> {
        check_publication(topic, data)?;
        if retain {
            self.check_retainable(topic, data)?;
        }
        self.publish_checked(topic, data, key, retain)
    }

    /// Whether a publication of `data` on `topic` can be retained at all:
    /// retained values are on and its frame alone fits their bytes.
    ///
    /// # Errors
    /// [`Error::NotRetainable`] saying which bound.
    pub fn check_retainable(&self, topic: &str, data: &str) -> Result<(), Error> {
        let limits = &self.retained;
        if limits.bytes == 0 || limits.per_topic == 0 {
            return Err(Error::NotRetainable(
                "retained values are off (retained_bytes or retained_per_topic is 0)".into(),
            ));
        }
        let len = retained_len(topic, u64::MAX, data) + MAX_FRAME_HEADER_LEN;
        if len > limits.bytes {
            return Err(Error::NotRetainable(format!(
                "its frame (up to {len} bytes) is larger than retained_bytes ({})",
                limits.bytes
            )));
        }
        Ok(())
    }

    /// [`Hub::publish_keyed`] for a publication [`check_publication`] (and,
    /// to retain, [`Hub::check_retainable`]) already accepted: a batch
    /// checks all its items before publishing any.
    ///
    /// # Errors
    /// [`Error::NotRunning`], [`Error::Overloaded`].
    pub fn publish_checked(
        &self,
        topic: &str,
        data: &str,
        key: Option<&str>,
        retain: bool,
    ) -> Result<u64, Error> {
        if let Some(outbound) = self.backplane.get() {
            // Retained when it comes back from the backplane, by every hub.
            let entry = self.lookup(topic);
            let item = Outgoing {
                topic: topic.into(),
                floor: 0,
                data: data.into(),
                key: key.map(Into::into),
                kind: if retain { Kind::Retain } else { Kind::Publish },
            };
            return self.publish_to_backplane(outbound, entry.as_deref(), item);
        }
        // Looked up, never created: a topic without subscribers must not
        // cost a registry entry per publication. One to retain is the
        // exception: the value is for subscribers to come.
        let entry = if retain {
            self.hold_for_retain(topic)
        } else {
            self.lookup(topic)
        };
        let Some(entry) = entry else {
            if retain {
                Counters::add(&self.counters.retained_refused, 1);
            }
            return self.publish_unwatched();
        };
        let published = self
            .enqueue(&entry, topic, data, key, retain, Waiting::Allowed)
            .map(|count| count.expect("a publication allowed to wait is always queued"));
        if retain && published.is_err() {
            self.release_retain(&entry);
        }
        published
    }

    /// [`Hub::publish_checked`] for a publication that must not wait: for
    /// a caller that holds something others need while it waits (the
    /// Python facade, the interpreter's lock, which it then need not give
    /// up and take back per publication). `None` when it would have to
    /// wait, for a lock or for room in the queue, and when it goes
    /// through the backplane or is retained (those may wait): the caller
    /// then publishes with [`Hub::publish_checked`].
    ///
    /// # Errors
    /// [`Error::NotRunning`].
    #[cfg_attr(
        not(feature = "python"),
        allow(
            dead_code,
            reason = "only the Python facade checks, then publishes without waiting"
        )
    )]
    pub fn try_publish_checked(
        &self,
        topic: &str,
        data: &str,
        key: Option<&str>,
    ) -> Option<Result<u64, Error>> {
        if self.backplane.get().is_some() {
            return None;
        }
        let entry = match self.topics.try_read() {
            Ok(topics) => topics.get(topic).cloned(),
            Err(TryLockError::Poisoned(topics)) => topics.into_inner().get(topic).cloned(),
            Err(TryLockError::WouldBlock) => return None,
        };
        match entry {
            Some(entry) => self
                .enqueue(&entry, topic, data, key, false, Waiting::Never)
                .transpose(),
            None => Some(self.publish_unwatched()),
        }
    }

    /// Waits for room for a frame of `len` bytes in the publish queue and
    /// returns it locked; never waits on a runtime thread.
    ///
    /// # Errors
    /// [`Error::NotRunning`], [`Error::Overloaded`].
    /// With [`Waiting::Never`], `None` instead of waiting for the lock
    /// or for room.
    fn queue_with_room(
        &self,
        len: usize,
        waiting: Waiting,
    ) -> Result<Option<MutexGuard<'_, QueueState>>, Error> {
        let mut state = match waiting {
            Waiting::Allowed => lock(&self.queue.state),
            Waiting::Never => match self.queue.state.try_lock() {
                Ok(state) => state,
                Err(TryLockError::Poisoned(state)) => state.into_inner(),
                Err(TryLockError::WouldBlock) => return Ok(None),
            },
        };
        loop {
            if state.closed {
                return Err(Error::NotRunning);
            }
            if self.queue.has_room(&state, len) {
                return Ok(Some(state));
            }
            if on_runtime_thread() {
                return Err(Error::Overloaded);
            }
            if waiting == Waiting::Never {
                return Ok(None);
            }
            state = self
                .queue
                .not_full
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Numbers a publication and queues it for the fan-out; `None` (only
    /// with [`Waiting::Never`]) when that would mean waiting.
    fn enqueue(
        &self,
        entry: &Arc<Topic>,
        topic: &str,
        data: &str,
        key: Option<&str>,
        retain: bool,
        waiting: Waiting,
    ) -> Result<Option<u64>, Error> {
        // The frame's size before its `seq` is known: with the longest seq.
        let len = publication_len(topic, u64::MAX, data) + MAX_FRAME_HEADER_LEN;
        let Some(mut state) = self.queue_with_room(len, waiting)? else {
            return Ok(None);
        };
        // Read under the queue lock, where `subscribe` changes it: a
        // subscriber counted here is one the fan-out delivers to.
        let subscribers = entry.subscriber_count.load(Ordering::Relaxed);
        // A topic kept for its history (nobody subscribed now) still
        // numbers and records what is published, for whoever recovers.
        if subscribers == 0 && !self.keeps_history() && !retain {
            drop(state);
            Counters::add(&self.counters.published, 1);
            return Ok(Some(0));
        }
        let seq = entry.next_seq.fetch_add(1, Ordering::Relaxed);
        let frame = encode_publication(topic, seq, data);
        let retain = retain.then(|| {
            entry.retains.store(true, Ordering::Relaxed);
            Retain::Keep {
                key: key.map(Arc::from),
                frame: encode_retained(topic, seq, data),
            }
        });
        let was_empty = state.items.is_empty();
        state.push(Publication {
            topic: Arc::clone(entry),
            seq,
            key: self.conflation_key(topic, key),
            frame,
            retain,
        });
        drop(state);
        Counters::add(&self.counters.published, 1);
        if was_empty {
            self.queue.ready.notify_one();
        }
        Ok(Some(subscribers))
    }

    /// A publication on a topic nobody here is subscribed to: accepted and
    /// counted, nothing queued.
    fn publish_unwatched(&self) -> Result<u64, Error> {
        if self.is_closed() {
            return Err(Error::NotRunning);
        }
        Counters::add(&self.counters.published, 1);
        Ok(0)
    }

    /// Forgets the retained value of (topic, `key`), or all of the topic's
    /// when `key` is `None`: queued like a publication, so it applies
    /// after the publications queued before it (of the same thread) and
    /// before later ones. With a backplane it goes through Redis to every
    /// hub.
    ///
    /// # Errors
    /// [`Error::InvalidTopic`], [`Error::NotRunning`] after
    /// [`Hub::close`], [`Error::Overloaded`] as for [`Hub::publish`].
    pub fn clear_retained(&self, topic: &str, key: Option<&str>) -> Result<(), Error> {
        if !is_valid_topic(topic) {
            return Err(Error::InvalidTopic(topic.to_owned()));
        }
        if let Some(outbound) = self.backplane.get() {
            let item = Outgoing {
                topic: topic.into(),
                floor: 0,
                data: "".into(),
                key: key.map(Into::into),
                kind: Kind::ClearRetained,
            };
            if self.is_closed() {
                return Err(Error::NotRunning);
            }
            if !outbound.push(item) {
                Counters::add(&self.counters.backplane_dropped, 1);
            }
            return Ok(());
        }
        self.queue_clear(topic, key)
    }

    /// Queues a clear of retained values for the fan-out (a local one, or
    /// one the backplane received).
    ///
    /// # Errors
    /// [`Error::NotRunning`], [`Error::Overloaded`].
    pub fn queue_clear(&self, topic: &str, key: Option<&str>) -> Result<(), Error> {
        // A topic the hub does not hold retains nothing, and has nothing
        // on its way to be retained (that would hold it).
        let Some(entry) = self.lookup(topic) else {
            return if self.is_closed() {
                Err(Error::NotRunning)
            } else {
                Ok(())
            };
        };
        let mut state = self
            .queue_with_room(0, Waiting::Allowed)?
            .expect("a queue allowed to wait always has room");
        let was_empty = state.items.is_empty();
        state.push(Publication {
            topic: entry,
            seq: 0,
            key: None,
            frame: Bytes::new(),
            retain: Some(Retain::Clear {
                key: key.map(Arc::from),
            }),
        });
        drop(state);
        if was_empty {
            self.queue.ready.notify_one();
        }
        Ok(())
    }

    /// The topic's entry, registered if needed, held for a publication to
    /// be retained until the fan-out keeps it (so that it cannot be
    /// forgotten meanwhile); `None` when the registry is full.
    fn hold_for_retain(&self, topic: &str) -> Option<Arc<Topic>> {
        loop {
            let entry = self.register(topic)?;
            let mut subscribers = lock(&entry.subscribers);
            let forgotten = subscribers.forgotten;
            if !forgotten {
                subscribers.pending_retains += 1;
            }
            drop(subscribers);
            if !forgotten {
                return Some(entry);
            }
            self.forget(&entry);
        }
    }

    /// Gives back a [`Hub::hold_for_retain`] whose publication was not
    /// queued.
    fn release_retain(&self, entry: &Arc<Topic>) {
        let mut subscribers = lock(&entry.subscribers);
        subscribers.pending_retains -= 1;
        self.forget_if_unused(entry, subscribers);
    }

    /// Names the numbering of the topics created from now on with the
    /// backplane's epoch, shared by every hub of the feed, so that a
    /// position a client had on one hub is understood by the others.
    pub fn set_feed_epoch(&self, epoch: Arc<str>) {
        *write(&self.feed_epoch) = Some(epoch);
    }

    /// The epoch for a topic created now.
    fn new_epoch(&self) -> Arc<str> {
        match &*read(&self.feed_epoch) {
            Some(epoch) => Arc::clone(epoch),
            None => self.epochs.next(),
        }
    }

    /// Routes this hub's publications through a backplane from now on.
    /// Called once, when the server starts; later calls are ignored.
    pub fn set_backplane(&self, outbound: Arc<Outbound>) {
        let _ = self.backplane.set(outbound);
    }

    /// `publish` with a backplane: queues the publication for Redis, which
    /// assigns its `seq` and sends it back to every hub (this one too,
    /// through [`Hub::ingest`]). Never waits: when the backplane's queue is
    /// full the publication is dropped and counted in `backplane_dropped`,
    /// and the call still succeeds. Returns the topic's local subscribers.
    fn publish_to_backplane(
        &self,
        outbound: &Outbound,
        entry: Option<&Topic>,
        mut item: Outgoing,
    ) -> Result<u64, Error> {
        if self.is_closed() {
            return Err(Error::NotRunning);
        }
        // The highest seq seen here, so Redis never numbers below it (0
        // when nobody here listens: what this hub's clients saw of a
        // forgotten topic no longer matters to them).
        item.floor = entry.map_or(0, |e| e.next_seq.load(Ordering::Relaxed) - 1);
        if !outbound.push(item) {
            Counters::add(&self.counters.backplane_dropped, 1);
        }
        Counters::add(&self.counters.published, 1);
        Ok(entry.map_or(0, |e| e.subscriber_count.load(Ordering::Relaxed)))
    }

    /// Queues a publication numbered elsewhere (by the backplane) for the
    /// local fan-out, exactly like a local one: same queue, same order,
    /// same `subscribe` semantics, same conflation key and, with
    /// `retain`, kept as the topic's newest value of `key` here too. Never
    /// waits. A publication on a topic nobody here is subscribed to is
    /// [`Ingested::Unwatched`] and costs nothing (no registry entry),
    /// unless it is to be retained.
    ///
    /// # Errors
    /// [`Error::InvalidTopic`], [`Error::InvalidJson`],
    /// [`Error::NotRunning`] after [`Hub::close`], and
    /// [`Error::Overloaded`] when the queue is full (retry later).
    pub fn ingest(
        &self,
        topic: &str,
        seq: u64,
        data: &str,
        key: Option<&str>,
        retain: bool,
    ) -> Result<Ingested, Error> {
        check_publication(topic, data)?;
        let retain = retain && self.check_retainable(topic, data).is_ok();
        let entry = if retain {
            self.hold_for_retain(topic)
        } else {
            self.lookup(topic)
        };
        let Some(entry) = entry else {
            if retain {
                Counters::add(&self.counters.retained_refused, 1);
            }
            return if self.is_closed() {
                Err(Error::NotRunning)
            } else {
                Ok(Ingested::Unwatched)
            };
        };
        let ingested = self.enqueue_numbered(&entry, topic, seq, data, key, retain);
        if retain && !matches!(ingested, Ok(Ingested::Queued { .. })) {
            self.release_retain(&entry);
        }
        ingested
    }

    fn enqueue_numbered(
        &self,
        entry: &Arc<Topic>,
        topic: &str,
        seq: u64,
        data: &str,
        key: Option<&str>,
        retain: bool,
    ) -> Result<Ingested, Error> {
        let frame = encode_publication(topic, seq, data);
        let mut state = lock(&self.queue.state);
        if state.closed {
            return Err(Error::NotRunning);
        }
        // `next_seq` is only touched under the queue lock (see `subscribe`).
        let next = entry.next_seq.load(Ordering::Relaxed);
        if seq < next {
            return Ok(Ingested::Stale);
        }
        if entry.subscriber_count.load(Ordering::Relaxed) == 0 && !self.keeps_history() && !retain {
            return Ok(Ingested::Unwatched);
        }
        if !self.queue.has_room(&state, frame.len()) {
            return Err(Error::Overloaded);
        }
        // The first publication seen on a topic is no gap: earlier ones
        // were made before this hub was listening.
        let missed = if next == 1 { 0 } else { seq - next };
        entry.next_seq.store(seq + 1, Ordering::Relaxed);
        let retain = retain.then(|| {
            entry.retains.store(true, Ordering::Relaxed);
            Retain::Keep {
                key: key.map(Arc::from),
                frame: encode_retained(topic, seq, data),
            }
        });
        let was_empty = state.items.is_empty();
        state.push(Publication {
            topic: Arc::clone(entry),
            seq,
            key: self.conflation_key(topic, key),
            frame,
            retain,
        });
        drop(state);
        if was_empty {
            self.queue.ready.notify_one();
        }
        Ok(Ingested::Queued { missed })
    }

    /// Refuses further publications and wakes publishers waiting for room.
    pub fn close(&self) {
        let mut state = lock(&self.queue.state);
        state.closed = true;
        self.queue.closed.store(true, Ordering::Release);
        drop(state);
        self.queue.not_full.notify_all();
        self.queue.ready.notify_one();
    }

    /// Whether [`Hub::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.queue.closed.load(Ordering::Acquire)
    }

    /// Delivers queued publications to subscribers until the hub is
    /// closed and every publication accepted before that is delivered;
    /// then cancels `drained`, which starts the connections' shutdown.
    pub async fn run_fanout(&self, drained: CancellationToken) {
        let mut batch = VecDeque::new();
        loop {
            self.queue.ready.notified().await;
            loop {
                self.pace().await;
                let (closed, emptied) = self.take_slice(&mut batch);
                self.fan_out_batch(batch.make_contiguous());
                batch.clear();
                if emptied {
                    if closed {
                        drained.cancel();
                        return;
                    }
                    break;
                }
            }
        }
    }

    /// Lets the writers send what the last slice queued before the next
    /// one, and waits (at most [`MAX_PACING_PAUSE`]; not at all once the
    /// hub is stopping) while some client that still reads is more than
    /// half a queue behind: a burst then flows through at the speed clients
    /// read instead of piling up in every client's queue and closing them
    /// as slow consumers while their writers wait for this task. Clients
    /// that do not read are not waited for (see [`Pacing`]).
    async fn pace(&self) {
        tokio::task::yield_now().await;
        if self.pacing.lagging() > 0 && !self.is_closed() {
            self.pacing.settled(MAX_PACING_PAUSE).await;
        }
    }

    /// Moves the next slice of publications (about
    /// [`DELIVERIES_PER_SLICE`] deliveries, at least one publication) into
    /// `batch`; returns whether the hub is closed and the queue now empty.
    fn take_slice(&self, batch: &mut VecDeque<Publication>) -> (bool, bool) {
        let mut state = lock(&self.queue.state);
        let mut budget = DELIVERIES_PER_SLICE;
        let mut bytes = 0;
        while batch.len() < self.publications_per_slice
            && (batch.is_empty() || bytes < self.bytes_per_slice)
        {
            let Some(publication) = state.pop() else {
                break;
            };
            bytes += publication.frame.len();
            let deliveries = publication
                .topic
                .subscriber_count
                .load(Ordering::Relaxed)
                .max(1);
            batch.push_back(publication);
            budget = budget.saturating_sub(deliveries);
            if budget == 0 {
                break;
            }
        }
        let result = (state.closed, state.items.is_empty());
        drop(state);
        self.queue.not_full.notify_all();
        result
    }

    /// Fans out a batch in order, one run of same-topic publications at a
    /// time: the order each client sees across topics is the publish order.
    /// Clears of retained values apply in their place in that order.
    fn fan_out_batch(&self, batch: &[Publication]) {
        let mut tally = Tally::default();
        let now = Instant::now();
        let mut rest = batch;
        while let Some(first) = rest.first() {
            if first.is_clear() {
                self.clear(first);
                rest = &rest[1..];
                continue;
            }
            let len = rest
                .iter()
                .position(|p| !Arc::ptr_eq(&p.topic, &first.topic) || p.is_clear())
                .unwrap_or(rest.len());
            let (run, after) = rest.split_at(len);
            if let [publication] = run {
                self.fan_out(publication, &mut tally, now);
            } else {
                self.fan_out_run(run, &mut tally, now);
            }
            rest = after;
        }
        self.count(tally);
    }

    fn fan_out(&self, publication: &Publication, tally: &mut Tally, now: Instant) {
        let mut subscribers = lock(&publication.topic.subscribers);
        let mut deflated = None;
        for subscriber in &subscribers.list {
            if publication.seq < subscriber.from_seq {
                continue;
            }
            let wire = if subscriber.outbox.deflates() {
                self.deflated(&publication.frame, &mut deflated)
            } else {
                publication.frame.clone()
            };
            tally.add(
                subscriber
                    .outbox
                    .push(OutFrame::publication(wire, publication.key.clone())),
            );
        }
        let newly_idle = self.record(&mut subscribers, publication, now);
        drop(subscribers);
        if newly_idle {
            self.mark_idle(&publication.topic);
        }
    }

    /// Appends a fanned-out publication to its topic's stream and, if it
    /// is to be retained, keeps it. Returns whether that made an idle
    /// topic one kept for its retained values (it joins the idle list,
    /// once the caller let go of the topic's lock).
    fn record(
        &self,
        subscribers: &mut Subscribers,
        publication: &Publication,
        now: Instant,
    ) -> bool {
        let mut newly_idle = false;
        if let Some(Retain::Keep { key, frame }) = &publication.retain {
            subscribers.pending_retains -= 1;
            if !subscribers.forgotten {
                let had_none = subscribers.retained.is_empty();
                let value = Value {
                    seq: publication.seq,
                    frame: frame.clone(),
                    conflation: publication.key.clone(),
                };
                self.keep_retained(&mut subscribers.retained, key.as_ref(), value);
                newly_idle = had_none && !subscribers.retained.is_empty() && subscribers.is_idle();
            }
        }
        // A forgotten entry's history would be kept by nobody (and never
        // leave the `history_bytes` gauge).
        if !subscribers.forgotten {
            self.tracked(&mut subscribers.stream, |stream| {
                stream.append(
                    publication.seq,
                    publication.frame.clone(),
                    publication.key.clone(),
                    &self.history,
                    now,
                );
            });
        }
        newly_idle
    }

    /// Keeps a retained value within the bounds, counting what they push
    /// out or refuse.
    fn keep_retained(&self, retained: &mut Retained, key: Option<&Arc<str>>, value: Value) {
        let used = usize::try_from(self.counters.retained_bytes.load(Ordering::Relaxed))
            .unwrap_or(usize::MAX);
        self.tracked_retained(retained, |r| {
            match r.keep(key, value, &self.retained, used) {
                Kept::Stored { evicted } => Counters::add(&self.counters.retained_evicted, evicted),
                Kept::Refused => Counters::add(&self.counters.retained_refused, 1),
            }
        });
    }

    /// Applies a queued clear of retained values.
    fn clear(&self, publication: &Publication) {
        let Some(Retain::Clear { key }) = &publication.retain else {
            return;
        };
        let mut subscribers = lock(&publication.topic.subscribers);
        self.tracked_retained(&mut subscribers.retained, |r| {
            r.clear(key.as_deref());
        });
        if subscribers.is_unused() {
            self.forget_if_unused(&publication.topic, subscribers);
        }
    }

    /// Runs `change` on a stream and follows its size in the
    /// `history_bytes` gauge.
    fn tracked(&self, stream: &mut Stream, change: impl FnOnce(&mut Stream)) {
        let before = stream.bytes();
        change(stream);
        follow(&self.counters.history_bytes, before, stream.bytes());
    }

    /// Runs `change` on a topic's retained values and follows them in the
    /// `retained_values` and `retained_bytes` gauges.
    fn tracked_retained(&self, retained: &mut Retained, change: impl FnOnce(&mut Retained)) {
        let (values, bytes) = (retained.len(), retained.bytes());
        change(retained);
        follow(&self.counters.retained_values, values, retained.len());
        follow(&self.counters.retained_bytes, bytes, retained.bytes());
    }

    /// Fans out consecutive publications of one topic (in `seq` order):
    /// their frames are copied once into one buffer, and each subscriber
    /// gets the part from its `from_seq` on as a single queue entry.
    fn fan_out_run(&self, run: &[Publication], tally: &mut Tally, now: Instant) {
        let mut subscribers = lock(&run[0].topic.subscribers);
        let mut newly_idle = false;
        for publication in run {
            newly_idle |= self.record(&mut subscribers, publication, now);
        }
        if newly_idle {
            drop(subscribers);
            self.mark_idle(&run[0].topic);
            return;
        }
        if subscribers.list.is_empty() {
            return;
        }
        let plain: Vec<Bytes> = run.iter().map(|p| p.frame.clone()).collect();
        let plain = Concatenated::of(plain);
        // The compressed frames, made at the first compressing subscriber.
        let mut deflated: Option<Concatenated> = None;
        for subscriber in &subscribers.list {
            let skip = run.partition_point(|p| p.seq < subscriber.from_seq);
            if skip == run.len() {
                continue;
            }
            let frames = if subscriber.outbox.deflates() {
                deflated.get_or_insert_with(|| {
                    Concatenated::of(
                        run.iter()
                            .map(|p| self.deflated(&p.frame, &mut None))
                            .collect(),
                    )
                })
            } else {
                &plain
            };
            let publications = u32::try_from(run.len() - skip).unwrap_or(u32::MAX);
            let frame = OutFrame::run(frames.from(skip), publications);
            let split = || {
                run[skip..]
                    .iter()
                    .zip(&frames.frames[skip..])
                    .map(|(p, wire)| OutFrame::publication(wire.clone(), p.key.clone()))
                    .collect()
            };
            subscriber.outbox.push_run(frame, split, tally);
        }
    }

    fn lookup(&self, name: &str) -> Option<Arc<Topic>> {
        read(&self.topics).get(name).cloned()
    }

    /// Holds a place on `topic` for a connection that is about to
    /// subscribe, registering the topic if needed; `None` when the registry
    /// already holds `max_topics` topics and none of them can be evicted
    /// (the name is then rejected with `hub_full`). A connection answers
    /// with the topics it holds places on before it subscribes, so that no
    /// publication precedes the answer.
    ///
    /// With `since`, decides whether the client's position can be
    /// recovered: same epoch, every later publication still in the stream,
    /// and no more of them than `backlog` (what the client's queue takes at
    /// once). If so, the stream keeps them until
    /// [`Hub::subscribe_reserved`] sends them.
    pub fn reserve(
        &self,
        topic: &str,
        since: Option<&Position>,
        backlog: Backlog,
    ) -> Option<Reserved> {
        loop {
            let entry = self.register(topic)?;
            let mut subscribers = lock(&entry.subscribers);
            if !subscribers.forgotten {
                subscribers.reserved += 1;
                let newest = entry.next_seq.load(Ordering::Relaxed) - 1;
                let recover_from = since
                    .filter(|position| {
                        self.recoverable(&entry, &subscribers.stream, position, newest, backlog)
                    })
                    .map(|position| position.seq + 1);
                let sends = if let Some(from) = recover_from {
                    subscribers.stream.pin(from);
                    subscribers.stream.backlog(from - 1)
                } else {
                    // The retained values instead, as far as the queue
                    // takes them (see `subscribe_reserved`).
                    let retained = &subscribers.retained;
                    (
                        retained.len().min(backlog.frames),
                        retained.bytes().min(backlog.bytes),
                    )
                };
                drop(subscribers);
                let stream = TopicStream {
                    topic: topic.to_owned(),
                    epoch: Arc::clone(&entry.epoch),
                    seq: newest,
                    recovered: since.map(|_| recover_from.is_some()),
                };
                return Some(Reserved {
                    topic: entry,
                    stream,
                    recover_from,
                    backlog: sends,
                });
            }
            // Lost its last subscriber just now: take it out of the
            // registry (if its unsubscriber has not yet) and register anew.
            drop(subscribers);
            self.forget(&entry);
        }
    }

    /// The registry's entry for `topic`, registered if needed; `None` when
    /// the registry holds `max_topics` topics and none can be evicted.
    fn register(&self, topic: &str) -> Option<Arc<Topic>> {
        loop {
            if let Some(entry) = self.lookup(topic) {
                return Some(entry);
            }
            let mut topics = write(&self.topics);
            match topics.get(topic) {
                Some(entry) => return Some(Arc::clone(entry)),
                None if topics.len() >= self.max_topics => {
                    drop(topics);
                    if !self.evict_idle() {
                        return None;
                    }
                }
                None => {
                    let name: Arc<str> = Arc::from(topic);
                    let entry = Arc::new(Topic::new(Arc::clone(&name), self.new_epoch()));
                    topics.insert(name, Arc::clone(&entry));
                    return Some(entry);
                }
            }
        }
    }

    /// Whether a client at `position` can be sent exactly what it missed.
    fn recoverable(
        &self,
        entry: &Topic,
        stream: &Stream,
        position: &Position,
        newest: u64,
        backlog: Backlog,
    ) -> bool {
        if *position.epoch != *entry.epoch || position.seq > newest {
            return false;
        }
        let now = Instant::now();
        if !stream.covers(position.seq, &self.history, now) {
            return false;
        }
        let (frames, bytes) = stream.backlog(position.seq);
        frames < backlog.frames && bytes <= backlog.bytes
    }

    /// The epoch of `topic` and the `seq` of its newest publication, if the
    /// hub holds the topic.
    pub fn stream_position(&self, topic: &str) -> Option<(Arc<str>, u64)> {
        let entry = self.lookup(topic)?;
        let newest = entry.next_seq.load(Ordering::Relaxed) - 1;
        Some((Arc::clone(&entry.epoch), newest))
    }

    /// Adds a connection to a topic (a no-op if it is already there) and
    /// returns true; false when the registry is full (see
    /// [`Hub::reserve`]). It receives exactly the publications `publish`
    /// counts it for: those made from now on.
    #[cfg(test)]
    pub fn subscribe(&self, topic: &str, id: ConnId, outbox: &Arc<Outbox>) -> bool {
        let unbounded = Backlog {
            frames: 0,
            bytes: 0,
        };
        match self.reserve(topic, None, unbounded) {
            Some(reserved) => {
                self.subscribe_reserved(topic, reserved, id, outbox);
                true
            }
            None => false,
        }
    }

    /// [`Hub::subscribe`] on a place [`Hub::reserve`] held. When that
    /// promised a recovery, the publications the client missed are queued
    /// first, then everything later, with no gap and no repeat; otherwise
    /// the topic's retained values (oldest first), then everything fanned
    /// out after them.
    pub fn subscribe_reserved(
        &self,
        topic: &str,
        reserved: Reserved,
        id: ConnId,
        outbox: &Arc<Outbox>,
    ) {
        let entry = reserved.topic;
        let mut subscribers = lock(&entry.subscribers);
        subscribers.reserved -= 1;
        let now = Instant::now();
        if subscribers.index.contains_key(&id) {
            if let Some(from) = reserved.recover_from {
                self.tracked(&mut subscribers.stream, |s| {
                    s.unpin(from, &self.history, now)
                });
            }
            return;
        }
        // Read the next seq and bump the count under the queue lock, which
        // `publish` holds while it does the same, so the two agree.
        let queue = lock(&self.queue.state);
        let mut from_seq = entry.next_seq.load(Ordering::Relaxed);
        let retains = entry.retains.load(Ordering::Relaxed);
        let before = entry.subscriber_count.fetch_add(1, Ordering::Relaxed);
        drop(queue);
        let mut tally = Tally::default();
        if let Some(from) = reserved.recover_from {
            // What the stream holds from `from` on goes first; what is
            // numbered but not yet fanned out (still in the publish queue)
            // comes through the fan-out, as to every subscriber.
            let missed: Vec<_> = subscribers
                .stream
                .after(from - 1)
                .map(|e| (&e.frame, &e.key))
                .collect();
            push_in_one_run(outbox, &missed, &mut tally);
            from_seq = subscribers.stream.last().max(from - 1) + 1;
            self.tracked(&mut subscribers.stream, |s| {
                s.unpin(from, &self.history, now)
            });
        } else if retains {
            // The values kept so far, then every publication the fan-out
            // has not reached yet, even one numbered before this
            // subscription (its value is not among these yet): per key,
            // nothing older after something newer, nothing twice.
            let (frames, bytes) = reserved.backlog;
            let mut sent = 0;
            let mut room = bytes;
            let newest: Vec<_> = subscribers
                .retained
                .values()
                .rev()
                .take_while(|v| {
                    let fits = sent < frames && v.frame.len() <= room;
                    if fits {
                        sent += 1;
                        room -= v.frame.len();
                    }
                    fits
                })
                .map(|v| (&v.frame, &v.conflation))
                .collect();
            let unsent = subscribers.retained.len() - newest.len();
            Counters::add(&self.counters.retained_unsent, unsent as u64);
            let oldest_first: Vec<_> = newest.into_iter().rev().collect();
            push_in_one_run(outbox, &oldest_first, &mut tally);
            from_seq = subscribers.stream.last() + 1;
        }
        self.count(tally);
        subscribers.insert(Subscriber {
            id,
            outbox: Arc::clone(outbox),
            from_seq,
        });
        // Reported under the topic's lock, so events of one topic reach the
        // listener in the order they happened.
        if before == 0 {
            self.report(topic, 1);
        }
    }

    fn count(&self, tally: Tally) {
        Counters::add(&self.counters.conflated, tally.conflated);
        Counters::add(&self.counters.dropped, tally.dropped);
        Counters::add(&self.counters.slow_consumer_closes, tally.overflowed);
    }

    /// Removes a connection from a topic (a no-op if it is not there); the
    /// topic is forgotten when that was its last subscriber, unless it
    /// keeps a history (then it waits, idle, for its subscribers to come
    /// back, until evicted or expired).
    pub fn unsubscribe(&self, topic: &str, id: ConnId) {
        let Some(entry) = self.lookup(topic) else {
            return;
        };
        let mut subscribers = lock(&entry.subscribers);
        if !subscribers.remove(id) {
            return;
        }
        if entry.subscriber_count.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.report(topic, 0);
        }
        self.forget_if_unused(&entry, subscribers);
    }

    /// Marks an unused topic forgotten (under its lock, so nobody can
    /// subscribe to it any more) and takes it out of the registry; an idle
    /// one with a history or retained values joins the idle list.
    fn forget_if_unused(&self, entry: &Arc<Topic>, mut subscribers: MutexGuard<'_, Subscribers>) {
        if !subscribers.is_unused() {
            if subscribers.is_idle() {
                drop(subscribers);
                self.mark_idle(entry);
            }
            return;
        }
        subscribers.forgotten = true;
        // Not under the topic's lock: the registry's lock is taken first
        // everywhere else (see `reserve`).
        drop(subscribers);
        self.forget(entry);
    }

    fn mark_idle(&self, entry: &Arc<Topic>) {
        let mut idle = lock(&self.idle);
        // Stale entries (topics subscribed again, or gone) are dropped
        // when they would outnumber the registry.
        if idle.len() >= self.max_topics.saturating_mul(2).max(MIN_REGISTRY_CAPACITY) {
            idle.retain(|weak| {
                weak.upgrade()
                    .is_some_and(|t| lock(&t.subscribers).is_idle())
            });
        }
        idle.push_back(Arc::downgrade(entry));
    }

    /// Forgets the oldest idle topic, history, retained values and all, to
    /// make room in a full registry; false when no topic is idle.
    fn evict_idle(&self) -> bool {
        loop {
            let Some(weak) = lock(&self.idle).pop_front() else {
                return false;
            };
            let Some(entry) = weak.upgrade() else {
                continue;
            };
            let mut subscribers = lock(&entry.subscribers);
            // One with a value on its way to be retained is in use (it
            // joins the list again once the value is kept).
            if !subscribers.is_idle() || subscribers.forgotten || subscribers.pending_retains > 0 {
                continue;
            }
            // Its history and retained values go with it.
            self.tracked(&mut subscribers.stream, |s| *s = Stream::default());
            let values = subscribers.retained.len() as u64;
            self.tracked_retained(&mut subscribers.retained, |r| *r = Retained::default());
            Counters::add(&self.counters.retained_evicted, values);
            subscribers.forgotten = true;
            drop(subscribers);
            self.forget(&entry);
            return true;
        }
    }

    /// Trims every idle topic's history by age and forgets those left
    /// unused; called now and then when histories expire (`history_ttl`).
    pub fn expire_histories(&self) {
        let now = Instant::now();
        let idle: Vec<_> = lock(&self.idle).iter().cloned().collect();
        for weak in idle {
            let Some(entry) = weak.upgrade() else {
                continue;
            };
            let mut subscribers = lock(&entry.subscribers);
            if subscribers.forgotten || !subscribers.is_idle() {
                continue;
            }
            self.tracked(&mut subscribers.stream, |s| s.trim(&self.history, now));
            if subscribers.is_unused() {
                subscribers.forgotten = true;
                drop(subscribers);
                self.forget(&entry);
            }
        }
        lock(&self.idle).retain(|weak| {
            weak.upgrade()
                .is_some_and(|t| !lock(&t.subscribers).forgotten)
        });
    }

    /// Removes `entry` from the registry if it is still the one under its
    /// name (a newcomer may have registered a fresh one already).
    fn forget(&self, entry: &Arc<Topic>) {
        let mut topics = write(&self.topics);
        if topics
            .get(&entry.name)
            .is_some_and(|t| Arc::ptr_eq(t, entry))
        {
            topics.remove(&entry.name);
            // Give memory back after a peak (amortised: only when the
            // table is mostly empty, to half of what it had).
            if topics.capacity() > MIN_REGISTRY_CAPACITY && topics.len() * 4 < topics.capacity() {
                let target = (topics.len() * 2).max(MIN_REGISTRY_CAPACITY);
                topics.shrink_to(target);
                drop(topics);
                give_back_memory();
            }
        }
    }

    /// Topics in the registry now (with a subscriber, or about to get
    /// one): at most `max_topics`.
    #[cfg(test)]
    pub fn topic_count(&self) -> usize {
        read(&self.topics).len()
    }

    /// A snapshot of the counters and of subscribers per topic (at most
    /// `max_topics` of them: only topics with subscribers are registered).
    pub fn stats(&self) -> Stats {
        let topics: BTreeMap<String, u64> = read(&self.topics)
            .iter()
            .map(|(name, t)| (name.to_string(), t.subscriber_count.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect();
        Stats::from_counters(&self.counters, topics)
    }
}

/// Asks the allocator to return freed memory to the OS. glibc keeps what
/// many small frees (a registry of made-up topics, their subscribers)
/// released in its heaps, so without this RSS stays at the peak after the
/// topics are gone. Called only when the registry's table shrinks (a
/// logarithmic number of times on the way down from a peak).
fn give_back_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it has no
    // preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Queues frames (with their conflation keys) for one subscriber as one
/// run, as the fan-out does (one buffer, one queue entry), split into
/// single frames only if the client's policy needs it.
fn push_in_one_run(outbox: &Outbox, frames: &[(&Bytes, &Option<Arc<str>>)], tally: &mut Tally) {
    if frames.is_empty() {
        return;
    }
    let mut wire = BytesMut::with_capacity(frames.iter().map(|(f, _)| f.len()).sum());
    for (frame, _) in frames {
        wire.extend_from_slice(frame);
    }
    let publications = u32::try_from(frames.len()).unwrap_or(u32::MAX);
    let split = || {
        frames
            .iter()
            .map(|(frame, key)| OutFrame::publication((*frame).clone(), (*key).clone()))
            .collect()
    };
    outbox.push_run(OutFrame::run(wire.freeze(), publications), split, tally);
}

/// Moves a gauge by the change of what it follows from `before` to `after`.
fn follow(gauge: &AtomicU64, before: usize, after: usize) {
    if after > before {
        gauge.fetch_add((after - before) as u64, Ordering::Relaxed);
    } else if before > after {
        gauge.fetch_sub((before - after) as u64, Ordering::Relaxed);
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(outbox: &Outbox) -> Vec<String> {
        let mut out = VecDeque::new();
        outbox.drain(&mut out);
        out.iter()
            .flat_map(OutFrame::texts)
            .map(str::to_owned)
            .collect()
    }

    fn fan_out_all(hub: &Hub) {
        let mut batch = VecDeque::new();
        while !hub.take_slice(&mut batch).1 {}
        hub.fan_out_batch(batch.make_contiguous());
    }

    fn with_history(size: usize) -> Hub {
        Hub::new(64).with_history(HistoryLimits {
            size,
            bytes: usize::MAX,
            ttl: None,
        })
    }

    const ROOMY: Backlog = Backlog {
        frames: 1000,
        bytes: usize::MAX,
    };

    fn seqs(outbox: &Outbox) -> Vec<u64> {
        texts(outbox)
            .iter()
            .map(|t| {
                let v: serde_json::Value = serde_json::from_str(t).unwrap();
                v["seq"].as_u64().unwrap()
            })
            .collect()
    }

    #[test]
    fn a_recovery_takes_the_stream_then_what_is_still_queued_without_gap_or_repeat() {
        let hub = with_history(16);
        let first = Arc::new(Outbox::new(64, usize::MAX));
        assert!(hub.subscribe("t", 1, &first));
        for n in 1..=5 {
            hub.publish("t", &n.to_string()).unwrap();
        }
        fan_out_all(&hub);
        let epoch = hub.stream_position("t").unwrap().0;
        // Two more are numbered but still in the publish queue when the
        // client comes back from seq 2.
        hub.publish("t", "6").unwrap();
        hub.publish("t", "7").unwrap();
        let back = Arc::new(Outbox::new(64, usize::MAX));
        let since = Position {
            seq: 2,
            epoch: epoch.to_string(),
        };
        let place = hub.reserve("t", Some(&since), ROOMY).unwrap();
        assert_eq!(place.stream().recovered, Some(true));
        assert_eq!(place.stream().seq, 7);
        assert_eq!(place.backlog().0, 3);
        hub.subscribe_reserved("t", place, 2, &back);
        hub.publish("t", "8").unwrap();
        fan_out_all(&hub);
        assert_eq!(seqs(&back), [3, 4, 5, 6, 7, 8]);
    }

    #[test]
    fn a_promised_recovery_survives_trimming_until_it_is_taken() {
        let hub = with_history(4);
        let a = Arc::new(Outbox::new(64, usize::MAX));
        assert!(hub.subscribe("t", 1, &a));
        for n in 1..=4 {
            hub.publish("t", &n.to_string()).unwrap();
        }
        fan_out_all(&hub);
        let epoch = hub.stream_position("t").unwrap().0.to_string();
        let since = Position { seq: 0, epoch };
        let place = hub.reserve("t", Some(&since), ROOMY).unwrap();
        assert_eq!(place.stream().recovered, Some(true));
        // Four more fanned out before the subscription: without the pin
        // they would have pushed 1..4 out of a history of 4.
        for n in 5..=8 {
            hub.publish("t", &n.to_string()).unwrap();
        }
        fan_out_all(&hub);
        let back = Arc::new(Outbox::new(64, usize::MAX));
        hub.subscribe_reserved("t", place, 2, &back);
        assert_eq!(seqs(&back), [1, 2, 3, 4, 5, 6, 7, 8]);
        // Released: the history is back within its bound.
        let late = Position {
            seq: 3,
            epoch: hub.stream_position("t").unwrap().0.to_string(),
        };
        let refused = hub.reserve("t", Some(&late), ROOMY).unwrap();
        assert_eq!(refused.stream().recovered, Some(false));
        hub.subscribe_reserved("t", refused, 3, &back);
        // Four frames of one byte of data each, two-byte headers.
        let frame = message("t", 5, "5").len() + 2;
        assert_eq!(
            hub.counters.history_bytes.load(Ordering::Relaxed),
            4 * frame as u64
        );
    }

    #[test]
    fn a_recovery_larger_than_the_backlog_is_refused() {
        let hub = with_history(16);
        let a = Arc::new(Outbox::new(64, usize::MAX));
        assert!(hub.subscribe("t", 1, &a));
        for n in 1..=10 {
            hub.publish("t", &n.to_string()).unwrap();
        }
        fan_out_all(&hub);
        let epoch = hub.stream_position("t").unwrap().0.to_string();
        let since = Position { seq: 0, epoch };
        let small = Backlog {
            frames: 10,
            bytes: usize::MAX,
        };
        let place = hub.reserve("t", Some(&since), small).unwrap();
        assert_eq!(place.stream().recovered, Some(false));
        hub.subscribe_reserved("t", place, 2, &a);
    }

    #[test]
    fn publish_counts_subscribers_and_numbers_per_topic() {
        let hub = Hub::new(16);
        let a = Arc::new(Outbox::new(16, usize::MAX));
        hub.subscribe("t", 1, &a);
        hub.subscribe("t", 1, &a);
        assert_eq!(hub.publish("t", "1").unwrap(), 1);
        assert_eq!(hub.publish("u", "2").unwrap(), 0);
        assert_eq!(hub.publish("t", "3").unwrap(), 1);
        fan_out_all(&hub);
        assert_eq!(
            texts(&a),
            [
                r#"{"type":"message","topic":"t","seq":1,"data":1}"#,
                r#"{"type":"message","topic":"t","seq":2,"data":3}"#
            ]
        );
    }

    #[test]
    fn bad_input_is_rejected_before_anything_is_queued() {
        let hub = Hub::new(16);
        assert!(matches!(
            hub.publish("bad topic", "1"),
            Err(Error::InvalidTopic(_))
        ));
        assert!(matches!(hub.publish("t", "{"), Err(Error::InvalidJson(_))));
        assert!(lock(&hub.queue.state).items.is_empty());
        assert_eq!(hub.publish("t", "1").unwrap(), 0);
    }

    #[test]
    fn publication_queued_before_subscribing_is_not_delivered() {
        let hub = Hub::new(16);
        let a = Arc::new(Outbox::new(16, usize::MAX));
        let b = Arc::new(Outbox::new(16, usize::MAX));
        hub.subscribe("t", 1, &a);
        assert_eq!(hub.publish("t", "1").unwrap(), 1);
        hub.subscribe("t", 2, &b);
        assert_eq!(hub.publish("t", "2").unwrap(), 2);
        fan_out_all(&hub);
        assert_eq!(texts(&a), [message("t", 1, "1"), message("t", 2, "2")]);
        assert_eq!(texts(&b), [message("t", 2, "2")]);
    }

    #[test]
    fn publications_nobody_listens_to_register_and_queue_nothing() {
        let hub = Hub::new(16);
        for i in 0..10_000 {
            assert_eq!(hub.publish(&format!("match:{i}"), "1").unwrap(), 0);
        }
        assert_eq!(hub.topic_count(), 0);
        assert!(lock(&hub.queue.state).items.is_empty());
        assert_eq!(hub.stats().published, 10_000);
        // Nor do those of the backplane.
        assert_eq!(
            hub.ingest("match:1", 7, "1", None, false).unwrap(),
            Ingested::Unwatched
        );
        assert_eq!(hub.topic_count(), 0);
        hub.close();
        assert!(matches!(hub.publish("x", "1"), Err(Error::NotRunning)));
        assert!(matches!(
            hub.ingest("x", 1, "1", None, false),
            Err(Error::NotRunning)
        ));
    }

    #[test]
    fn published_topics_are_forgotten_with_their_last_subscriber() {
        let hub = Hub::new(16);
        let a = Arc::new(Outbox::new(16, usize::MAX));
        hub.subscribe("t", 1, &a);
        hub.publish("t", "1").unwrap();
        hub.publish("t", "2").unwrap();
        hub.unsubscribe("t", 1);
        assert_eq!(hub.topic_count(), 0);
        // Gone before the fan-out: not delivered, as for any unsubscriber.
        fan_out_all(&hub);
        assert!(texts(&a).is_empty());
        // Subscribed again: a fresh topic, whose numbering restarts.
        hub.subscribe("t", 1, &a);
        hub.publish("t", "3").unwrap();
        fan_out_all(&hub);
        assert_eq!(texts(&a), [message("t", 1, "3")]);
    }

    #[test]
    fn the_registry_holds_at_most_max_topics() {
        let hub = Hub::new(16).bounded(3, usize::MAX);
        let a = Arc::new(Outbox::new(16, usize::MAX));
        let b = Arc::new(Outbox::new(16, usize::MAX));
        for name in ["x", "y", "z"] {
            assert!(hub.subscribe(name, 1, &a));
        }
        assert!(!hub.subscribe("w", 1, &a));
        assert!(hub
            .reserve(
                "w",
                None,
                Backlog {
                    frames: 0,
                    bytes: 0
                }
            )
            .is_none());
        // Topics it already holds are still open to others.
        assert!(hub.subscribe("x", 2, &b));
        hub.unsubscribe("y", 1);
        assert!(hub.subscribe("w", 2, &b));
        assert_eq!(hub.topic_count(), 3);
        for (name, id) in [("x", 1), ("x", 2), ("z", 1), ("w", 2)] {
            hub.unsubscribe(name, id);
        }
        assert_eq!(hub.topic_count(), 0);
    }

    #[test]
    fn a_subscriber_never_lands_on_a_forgotten_topic() {
        // Subscribing, publishing and leaving one topic from several
        // threads at once: whoever has subscribed is on the registered
        // topic, so a publication counts (and reaches) it.
        let hub = Arc::new(Hub::new(1 << 20));
        let threads: Vec<_> = (0..4)
            .map(|id| {
                let hub = Arc::clone(&hub);
                std::thread::spawn(move || {
                    let outbox = Arc::new(Outbox::new(1 << 20, usize::MAX));
                    for _ in 0..5_000 {
                        assert!(hub.subscribe("t", id, &outbox));
                        assert!(hub.publish("t", "1").unwrap() >= 1);
                        hub.unsubscribe("t", id);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(hub.topic_count(), 0);
    }

    #[test]
    fn the_publish_queue_is_bounded_in_bytes() {
        let mib = 1024 * 1024;
        let hub = Hub::new(1024).bounded(usize::MAX, 3 * mib);
        let a = Arc::new(Outbox::new(1024, usize::MAX));
        hub.subscribe("t", 1, &a);
        let data = format!("\"{}\"", "x".repeat(mib));
        mark_runtime_thread();
        hub.publish("t", &data).unwrap();
        hub.publish("t", &data).unwrap();
        assert!(matches!(hub.publish("t", &data), Err(Error::Overloaded)));
        assert!(matches!(
            hub.ingest("t", 99, &data, None, false),
            Err(Error::Overloaded)
        ));
        assert!(lock(&hub.queue.state).bytes <= 3 * mib);
        // Small ones still fit, and the fan-out makes room.
        hub.publish("t", "1").unwrap();
        fan_out_all(&hub);
        assert_eq!(lock(&hub.queue.state).bytes, 0);
        hub.publish("t", &data).unwrap();
    }

    #[test]
    fn one_publication_over_the_byte_bound_goes_through_alone() {
        let hub = Hub::new(1024).bounded(usize::MAX, 1000);
        let a = Arc::new(Outbox::new(1024, usize::MAX));
        hub.subscribe("t", 1, &a);
        let big = format!("\"{}\"", "x".repeat(10_000));
        mark_runtime_thread();
        hub.publish("t", &big).unwrap();
        assert!(matches!(hub.publish("t", "1"), Err(Error::Overloaded)));
        fan_out_all(&hub);
        hub.publish("t", "1").unwrap();
        assert_eq!(texts(&a).len(), 1);
    }

    #[test]
    fn unsubscribed_connection_receives_nothing_more() {
        let hub = Hub::new(16);
        let a = Arc::new(Outbox::new(16, usize::MAX));
        hub.subscribe("t", 7, &a);
        hub.unsubscribe("t", 7);
        hub.publish("t", "1").unwrap();
        fan_out_all(&hub);
        assert!(texts(&a).is_empty());
        assert!(hub.stats().topics.is_empty());
    }

    #[test]
    fn topics_are_forgotten_when_empty() {
        let hub = Hub::new(16);
        let a = Arc::new(Outbox::new(16, usize::MAX));
        for i in 0..100 {
            let name = format!("junk{i}");
            hub.subscribe(&name, 1, &a);
            hub.unsubscribe(&name, 1);
        }
        assert!(read(&hub.topics).is_empty());
    }

    #[test]
    fn ingested_publications_keep_their_seq_and_count_gaps() {
        let hub = Hub::new(16);
        let a = Arc::new(Outbox::new(16, usize::MAX));
        hub.subscribe("t", 1, &a);
        assert_eq!(
            hub.ingest("t", 5, "1", None, false).unwrap(),
            Ingested::Queued { missed: 0 }
        );
        assert_eq!(
            hub.ingest("t", 6, "2", None, false).unwrap(),
            Ingested::Queued { missed: 0 }
        );
        assert_eq!(
            hub.ingest("t", 9, "3", None, false).unwrap(),
            Ingested::Queued { missed: 2 }
        );
        assert_eq!(
            hub.ingest("t", 9, "4", None, false).unwrap(),
            Ingested::Stale
        );
        assert_eq!(
            hub.ingest("t", 2, "5", None, false).unwrap(),
            Ingested::Stale
        );
        fan_out_all(&hub);
        assert_eq!(
            texts(&a),
            [
                r#"{"type":"message","topic":"t","seq":5,"data":1}"#,
                r#"{"type":"message","topic":"t","seq":6,"data":2}"#,
                r#"{"type":"message","topic":"t","seq":9,"data":3}"#
            ]
        );
    }

    #[test]
    fn ingest_never_waits_for_a_full_queue() {
        let hub = Hub::new(1);
        let a = Arc::new(Outbox::new(16, usize::MAX));
        hub.subscribe("t", 1, &a);
        hub.ingest("t", 1, "1", None, false).unwrap();
        assert!(matches!(
            hub.ingest("t", 2, "2", None, false),
            Err(Error::Overloaded)
        ));
        assert!(matches!(
            hub.ingest("t", 2, "{", None, false),
            Err(Error::InvalidJson(_))
        ));
    }

    #[test]
    fn with_a_backplane_publish_queues_for_redis_not_locally() {
        let hub = Hub::new(16);
        let outbound = Arc::new(Outbound::new(1));
        hub.set_backplane(Arc::clone(&outbound));
        let a = Arc::new(Outbox::new(16, usize::MAX));
        hub.subscribe("t", 1, &a);
        assert_eq!(hub.publish("t", "1").unwrap(), 1);
        // Full: counted, not waited for, still a success.
        assert_eq!(hub.publish("t", "2").unwrap(), 1);
        assert!(matches!(hub.publish("t", "{"), Err(Error::InvalidJson(_))));
        assert!(lock(&hub.queue.state).items.is_empty());
        let stats = hub.stats();
        assert_eq!((stats.published, stats.backplane_dropped), (2, 1));
    }

    #[test]
    fn closed_hub_refuses_publications() {
        let hub = Hub::new(16);
        hub.close();
        assert!(matches!(hub.publish("t", "1"), Err(Error::NotRunning)));
    }

    #[test]
    fn full_queue_on_a_runtime_thread_is_an_error_not_a_deadlock() {
        let hub = Hub::new(1);
        let a = Arc::new(Outbox::new(16, usize::MAX));
        hub.subscribe("t", 1, &a);
        hub.publish("t", "1").unwrap();
        mark_runtime_thread();
        assert!(matches!(hub.publish("t", "2"), Err(Error::Overloaded)));
    }

    fn message(topic: &str, seq: u64, data: &str) -> String {
        format!(r#"{{"type":"message","topic":"{topic}","seq":{seq},"data":{data}}}"#)
    }

    #[test]
    fn a_run_reaches_each_subscriber_from_its_own_seq_as_one_entry() {
        let hub = Hub::new(16);
        let early = Arc::new(Outbox::new(16, usize::MAX));
        let late = Arc::new(Outbox::new(16, usize::MAX));
        hub.subscribe("t", 1, &early);
        hub.publish("t", "1").unwrap();
        hub.subscribe("t", 2, &late);
        hub.publish("t", "2").unwrap();
        hub.publish("t", "3").unwrap();
        fan_out_all(&hub);
        let mut entries = VecDeque::new();
        early.drain(&mut entries);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].publications, 3);
        let run: Vec<_> = entries[0].texts().into_iter().map(str::to_owned).collect();
        assert_eq!(
            run,
            [
                message("t", 1, "1"),
                message("t", 2, "2"),
                message("t", 3, "3")
            ]
        );
        assert_eq!(texts(&late), [message("t", 2, "2"), message("t", 3, "3")]);
    }

    #[test]
    fn runs_keep_the_publish_order_across_topics() {
        let hub = Hub::new(16);
        let both = Arc::new(Outbox::new(16, usize::MAX));
        hub.subscribe("t", 1, &both);
        hub.subscribe("u", 1, &both);
        for (topic, data) in [("t", "1"), ("t", "2"), ("u", "3"), ("t", "4"), ("t", "5")] {
            hub.publish(topic, data).unwrap();
        }
        fan_out_all(&hub);
        assert_eq!(
            texts(&both),
            [
                message("t", 1, "1"),
                message("t", 2, "2"),
                message("u", 1, "3"),
                message("t", 3, "4"),
                message("t", 4, "5")
            ]
        );
    }

    #[test]
    fn a_run_that_does_not_fit_is_conflated_one_publication_at_a_time() {
        let hub = Hub::new(16).conflating(true);
        let small = Arc::new(Outbox::new(2, usize::MAX));
        hub.subscribe("t", 1, &small);
        for data in ["1", "2", "3", "4"] {
            hub.publish_keyed("t", data, Some("k"), false).unwrap();
        }
        fan_out_all(&hub);
        assert_eq!(
            texts(&small),
            [
                message("t", 1, "1"),
                message("t", 2, "2"),
                message("t", 4, "4")
            ]
        );
        let stats = hub.stats();
        assert_eq!(
            (stats.conflated, stats.dropped, stats.slow_consumer_closes),
            (1, 0, 0)
        );
    }

    #[test]
    fn slow_subscriber_is_closed_and_counted() {
        let hub = Hub::new(16);
        let slow = Arc::new(Outbox::new(1, usize::MAX));
        let fast = Arc::new(Outbox::new(16, usize::MAX));
        hub.subscribe("t", 1, &slow);
        hub.subscribe("t", 2, &fast);
        for i in 0..3 {
            hub.publish("t", &i.to_string()).unwrap();
        }
        fan_out_all(&hub);
        assert_eq!(texts(&fast).len(), 3);
        let stats = hub.stats();
        assert_eq!(stats.slow_consumer_closes, 1);
        assert_eq!(stats.dropped, 3);
    }

    fn retaining() -> Hub {
        Hub::new(64).with_retained(RetainedLimits {
            per_topic: 100,
            bytes: 1 << 20,
        })
    }

    fn retain(hub: &Hub, topic: &str, data: &str, key: Option<&str>) {
        hub.publish_keyed(topic, data, key, true).unwrap();
    }

    /// (data, retained) of each frame an outbox holds.
    fn messages(outbox: &Outbox) -> Vec<(String, bool)> {
        texts(outbox)
            .iter()
            .map(|t| {
                let v: serde_json::Value = serde_json::from_str(t).unwrap();
                (v["data"].to_string(), v["retained"] == true)
            })
            .collect()
    }

    fn subscribe_new(hub: &Hub, topic: &str, id: ConnId) -> Arc<Outbox> {
        let outbox = Arc::new(Outbox::new(64, usize::MAX));
        let place = hub.reserve(topic, None, ROOMY).unwrap();
        hub.subscribe_reserved(topic, place, id, &outbox);
        outbox
    }

    #[test]
    fn a_new_subscriber_gets_the_newest_value_per_key_oldest_first_then_live() {
        let hub = retaining();
        // Nobody subscribed: the values are kept all the same.
        retain(&hub, "odds", "1", Some("a"));
        retain(&hub, "odds", "2", Some("b"));
        retain(&hub, "odds", "3", Some("a"));
        hub.publish("odds", "4").unwrap();
        fan_out_all(&hub);
        assert_eq!(hub.counters.retained_values.load(Ordering::Relaxed), 2);
        let outbox = subscribe_new(&hub, "odds", 1);
        hub.publish("odds", "5").unwrap();
        fan_out_all(&hub);
        let got = messages(&outbox);
        let want = [("2", true), ("3", true), ("5", false)];
        assert_eq!(got, want.map(|(d, r)| (d.to_owned(), r)));
    }

    #[test]
    fn a_value_still_queued_at_subscribe_time_is_not_lost() {
        let hub = retaining();
        retain(&hub, "odds", "1", Some("a"));
        fan_out_all(&hub);
        // Numbered before the subscription, fanned out after it: its
        // value is not among the retained ones the subscriber is given, so
        // it must come live, or the client would keep "1" for "a".
        retain(&hub, "odds", "2", Some("a"));
        let outbox = subscribe_new(&hub, "odds", 1);
        fan_out_all(&hub);
        let got = messages(&outbox);
        assert_eq!(got, [("1".to_owned(), true), ("2".to_owned(), false)]);
    }

    #[test]
    fn clears_apply_in_publication_order() {
        let hub = retaining();
        retain(&hub, "odds", "1", Some("a"));
        retain(&hub, "odds", "2", Some("b"));
        retain(&hub, "odds", "3", None);
        hub.clear_retained("odds", Some("a")).unwrap();
        retain(&hub, "odds", "4", Some("a"));
        fan_out_all(&hub);
        let got: Vec<_> = messages(&subscribe_new(&hub, "odds", 1))
            .into_iter()
            .map(|(d, _)| d)
            .collect();
        assert_eq!(got, ["2", "3", "4"]);
        hub.clear_retained("odds", None).unwrap();
        fan_out_all(&hub);
        assert!(messages(&subscribe_new(&hub, "odds", 2)).is_empty());
        assert_eq!(hub.counters.retained_values.load(Ordering::Relaxed), 0);
        assert_eq!(hub.counters.retained_bytes.load(Ordering::Relaxed), 0);
        // A clear of a topic the hub does not hold is a no-op.
        hub.clear_retained("other", None).unwrap();
        assert!(matches!(
            hub.clear_retained("bad topic", None),
            Err(Error::InvalidTopic(_))
        ));
    }

    #[test]
    fn a_recovery_gets_what_it_missed_not_the_retained_values() {
        let hub = with_history(16).with_retained(RetainedLimits {
            per_topic: 100,
            bytes: 1 << 20,
        });
        let first = subscribe_new(&hub, "t", 1);
        retain(&hub, "t", "1", None);
        retain(&hub, "t", "2", None);
        fan_out_all(&hub);
        drop(first);
        let epoch = hub.stream_position("t").unwrap().0.to_string();
        let since = Position { seq: 1, epoch };
        let back = Arc::new(Outbox::new(64, usize::MAX));
        let place = hub.reserve("t", Some(&since), ROOMY).unwrap();
        hub.subscribe_reserved("t", place, 2, &back);
        assert_eq!(messages(&back), [("2".to_owned(), false)]);
    }

    #[test]
    fn retained_values_within_the_queue_budget_newest_first() {
        let hub = retaining();
        for n in 1..=10 {
            retain(&hub, "t", &n.to_string(), Some(&n.to_string()));
        }
        fan_out_all(&hub);
        let outbox = Arc::new(Outbox::new(64, usize::MAX));
        let budget = Backlog {
            frames: 4,
            bytes: usize::MAX,
        };
        let place = hub.reserve("t", None, budget).unwrap();
        assert_eq!(place.backlog().0, 4);
        hub.subscribe_reserved("t", place, 1, &outbox);
        let got: Vec<_> = messages(&outbox).into_iter().map(|(d, _)| d).collect();
        assert_eq!(got, ["7", "8", "9", "10"]);
        assert_eq!(hub.counters.retained_unsent.load(Ordering::Relaxed), 6);
    }

    #[test]
    fn retaining_is_refused_when_off_or_too_large() {
        let off = Hub::new(8);
        assert!(matches!(
            off.publish_keyed("t", "1", None, true),
            Err(Error::NotRetainable(_))
        ));
        let small = Hub::new(8).with_retained(RetainedLimits {
            per_topic: 10,
            bytes: 100,
        });
        let big = format!("\"{}\"", "x".repeat(100));
        assert!(matches!(
            small.publish_keyed("t", &big, None, true),
            Err(Error::NotRetainable(_))
        ));
        // Nothing was published.
        assert_eq!(small.counters.published.load(Ordering::Relaxed), 0);
        assert_eq!(small.topic_count(), 0);
    }

    #[test]
    fn a_topic_kept_for_its_retained_values_is_evicted_from_a_full_registry() {
        let hub = retaining().bounded(2, usize::MAX);
        retain(&hub, "a", "1", None);
        retain(&hub, "b", "2", None);
        fan_out_all(&hub);
        assert_eq!(hub.topic_count(), 2);
        // A third topic takes the place of the longest idle one.
        let _c = subscribe_new(&hub, "c", 1);
        assert_eq!(hub.topic_count(), 2);
        assert!(hub.stream_position("a").is_none());
        assert_eq!(hub.counters.retained_evicted.load(Ordering::Relaxed), 1);
        assert_eq!(hub.counters.retained_values.load(Ordering::Relaxed), 1);
        // A full registry with nothing idle refuses a value to retain.
        let _b = subscribe_new(&hub, "b", 2);
        retain(&hub, "d", "3", None);
        assert_eq!(hub.counters.retained_refused.load(Ordering::Relaxed), 1);
    }
}
