//! The running hub: binds the listening socket synchronously, then serves
//! on a tokio runtime of its own, until [`Server::stop`].
//!
//! Binding before returning means `start(0)` can report the real port and a
//! taken port fails at once in the caller. Shutdown is one cancellation
//! token that every task watches plus a task tracker to wait for them, so
//! `stop()` can promise that clients got their close frame (within
//! `shutdown_timeout`) and that the runtime's threads are gone.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::core::config::{Config, SlowClientPolicy};
use crate::core::error::Error;
use crate::core::hub::{check_publication, check_topic, mark_runtime_thread, Hub};
use crate::core::outbox::lock;
use crate::core::retained::RetainedLimits;
use crate::core::stats::Stats;
use crate::core::stream::HistoryLimits;
use crate::core::subscription_events::SubscriptionEvents;
use crate::core::token::TokenCheck;
use crate::net::listener::{accept_loop, bind, bind_error};
use crate::net::tls::Tls;
use crate::net::Shared;
use crate::scale::{self, Backplane};

/// Extra time `stop()` gives tasks beyond `shutdown_timeout` before the
/// runtime is torn down regardless.
const RUNTIME_SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Forks seen by this process's lineage: bumped in every child `fork()`
/// makes (a `pthread_atfork` handler), so that a publication can tell it
/// runs in a fork with one atomic load instead of a `getpid()` system call.
static FORKS: AtomicU64 = AtomicU64::new(0);

/// The current fork count, with the handler that keeps it registered.
fn forks() -> u64 {
    static WATCH: std::sync::Once = std::sync::Once::new();
    WATCH.call_once(|| {
        #[cfg(unix)]
        // SAFETY: registers a handler that only does an atomic add, which
        // is async-signal-safe as a fork child handler must be.
        unsafe {
            libc::pthread_atfork(None, None, Some(count_fork));
        }
    });
    FORKS.load(Ordering::Acquire)
}

#[cfg(unix)]
unsafe extern "C" fn count_fork() {
    FORKS.fetch_add(1, Ordering::AcqRel);
}

/// Which process has live hubs, and how many: `(pid << 32) | count`, one
/// atomic so that a `fork()` can never leave it locked in the child.
static LIVE_HUBS: AtomicU64 = AtomicU64::new(0);

/// Counts a new hub in this process, unless this process is a fork of one
/// that has live hubs (their runtime threads did not survive the fork, and
/// the inherited sockets and locks are not ours to use).
fn register_hub() -> Result<(), Error> {
    let me = std::process::id();
    LIVE_HUBS
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
            let (pid, count) = ((word >> 32) as u32, word & 0xffff_ffff);
            (count == 0 || pid == me).then(|| (u64::from(me) << 32) | (count + 1))
        })
        .map(|_| ())
        .map_err(|word| Error::Forked {
            parent: (word >> 32) as u32,
            child: me,
        })
}

fn unregister_hub() {
    let _ = LIVE_HUBS.fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
        let count = word & 0xffff_ffff;
        (count > 0).then(|| word - 1)
    });
}

/// A running hub. Dropping it stops it.
pub struct Server {
    shared: Arc<Shared>,
    /// `None` once stopped; taking it out is what makes `stop` idempotent.
    runtime: Mutex<Option<Runtime>>,
    /// Set when `runtime` is taken out: what [`Server::is_stopped`] reads
    /// on every Python publication, without the lock.
    stopped: AtomicBool,
    local_addr: SocketAddr,
    /// The process that started the hub; its threads exist only there.
    pid: u32,
    /// [`forks`] when it started: a different count means this is a child.
    forks_at_start: u64,
}

impl Server {
    /// Starts a hub: validates `config`, starts the runtime and binds.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`], [`Error::Tls`] (unreadable or unusable
    /// `certfile`/`keyfile`), [`Error::Runtime`], or [`Error::Bind`] with
    /// the OS error (e.g. `EADDRINUSE`).
    pub fn start(config: Config) -> Result<Server, Error> {
        config.validate()?;
        let tokens = config
            .jwt
            .as_ref()
            .map(TokenCheck::new)
            .transpose()
            .map_err(Error::InvalidConfig)?;
        if let Some(url) = &config.backplane {
            scale::validate(url, &config.backplane_prefix).map_err(Error::InvalidConfig)?;
        }
        let tls = config.tls.as_ref().map(Tls::load).transpose()?;
        register_hub()?;
        Self::start_registered(config, tokens, tls).inspect_err(|_| unregister_hub())
    }

    fn start_registered(
        config: Config,
        tokens: Option<TokenCheck>,
        tls: Option<Tls>,
    ) -> Result<Server, Error> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.worker_threads)
            .max_blocking_threads(4)
            .thread_name("wshub-worker")
            .on_thread_start(mark_runtime_thread)
            .enable_all()
            .build()
            .map_err(Error::Runtime)?;
        let backplane = connect_backplane(&runtime, &config)?;
        let listener = {
            let _entered = runtime.enter();
            bind(&config.host, config.port, config.reuse_port)?
        };
        let local_addr = listener
            .local_addr()
            .map_err(|source| bind_error(&config.host, config.port, source))?;
        let events = match &config.on_subscription {
            Some(listener) => {
                Some(SubscriptionEvents::start(listener.clone()).map_err(Error::Runtime)?)
            }
            None => None,
        };
        let mut hub = Hub::with_events(config.publish_queue, events);
        if config.compression {
            hub = hub.compressing(config.compression_level, config.compression_min_size);
        }
        let shared = Arc::new(Shared {
            hub: Arc::new(
                hub.conflating(config.slow_client == SlowClientPolicy::Conflate)
                    .paced(config.send_queue, config.send_queue_bytes)
                    .bounded(config.max_topics, config.publish_queue_bytes)
                    .with_history(HistoryLimits {
                        size: config.history_size,
                        bytes: config.history_bytes,
                        ttl: config.history_ttl,
                    })
                    .with_retained(RetainedLimits {
                        per_topic: config.retained_per_topic,
                        bytes: config.retained_bytes,
                    }),
            ),
            config,
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            next_id: AtomicU64::new(1),
            tokens,
            tls,
        });
        let fanout = Arc::clone(&shared);
        shared.tracker.spawn_on(
            // The fan-out ends the hub's life: once it has delivered what
            // was published before `stop()`, connections close.
            async move { fanout.hub.run_fanout(fanout.shutdown.clone()).await },
            runtime.handle(),
        );
        if let Some((backplane, link)) = backplane {
            shared.hub.set_feed_epoch(Arc::clone(&link.epoch));
            shared.hub.set_backplane(backplane.outbound());
            shared.tracker.spawn_on(
                backplane.run(Arc::clone(&shared.hub), shared.shutdown.clone(), link),
                runtime.handle(),
            );
        }
        if let Some(ttl) = shared.config.history_ttl {
            shared
                .tracker
                .spawn_on(expire_histories(Arc::clone(&shared), ttl), runtime.handle());
        }
        shared
            .tracker
            .spawn_on(accept_loop(Arc::clone(&shared), listener), runtime.handle());
        tracing::info!(addr = %local_addr, path = %shared.config.path, "wshub listening");
        Ok(Server {
            shared,
            runtime: Mutex::new(Some(runtime)),
            stopped: AtomicBool::new(false),
            local_addr,
            pid: std::process::id(),
            forks_at_start: forks(),
        })
    }

    /// The address the hub listens on (with the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The bound TCP port.
    pub fn port(&self) -> u16 {
        self.local_addr.port()
    }

    /// Whether the hub accepts publications and connections.
    pub fn is_running(&self) -> bool {
        !self.shared.hub.is_closed()
    }

    /// Whether [`Server::stop`] has run (or begun): nothing is left to stop.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Publishes `data` (JSON text) on `topic` and returns how many
    /// subscribers the topic has now, i.e. how many it will be queued for.
    /// A topic the hub does not hold queues nothing (and uses no `seq`);
    /// one it keeps for its history (see `history_size`) is numbered and
    /// recorded for clients that recover.
    ///
    /// Waits (only) when the publish queue is full, in publications or in
    /// bytes, which bounds memory when publishers outrun the fan-out.
    ///
    /// # Errors
    /// [`Error::InvalidTopic`], [`Error::InvalidJson`] (nothing is sent),
    /// [`Error::NotRunning`] after [`Server::stop`], [`Error::Forked`] in a
    /// forked child, and [`Error::Overloaded`] when the queue is full and
    /// the caller is one of the hub's own runtime threads.
    pub fn broadcast(&self, topic: &str, data: &str) -> Result<u64, Error> {
        self.broadcast_keyed(topic, data, None, false)
    }

    /// Publishes every `(topic, data)` pair in order. All pairs are checked
    /// first, so an invalid one means nothing at all is sent.
    ///
    /// # Errors
    /// As [`Server::broadcast`]; on a validation error nothing is published.
    pub fn broadcast_many(&self, items: &[(String, String)]) -> Result<Vec<u64>, Error> {
        self.check_process()?;
        for (topic, data) in items {
            check_publication(topic, data)?;
        }
        items
            .iter()
            .map(|(topic, data)| self.shared.hub.publish_checked(topic, data, None, false))
            .collect()
    }

    /// [`Server::broadcast`] with a key and, with `retain`, kept as the
    /// newest value of (topic, key) for clients that subscribe later
    /// (`retained_per_topic`, `retained_bytes`). Under the conflate
    /// policy, a client that is behind keeps only the newest publication
    /// per (topic, key). Without a key, the topic is the key.
    ///
    /// # Errors
    /// As [`Server::broadcast`], and [`Error::NotRetainable`] when
    /// retained values are off or the value alone exceeds
    /// `retained_bytes`.
    pub fn broadcast_keyed(
        &self,
        topic: &str,
        data: &str,
        key: Option<&str>,
        retain: bool,
    ) -> Result<u64, Error> {
        self.check_process()?;
        self.shared.hub.publish_keyed(topic, data, key, retain)
    }

    /// Checks a publication as [`Server::broadcast_keyed`] does before
    /// publishing it; with `serialized`, `data` is JSON this library wrote
    /// itself (the Python facade's walk over a value) and is not parsed
    /// again. A facade checks first and then publishes with
    /// [`Server::try_broadcast_checked`] or [`Server::broadcast_checked`].
    #[cfg_attr(
        not(feature = "python"),
        allow(
            dead_code,
            reason = "only the Python facade checks, then publishes without waiting"
        )
    )]
    pub(crate) fn check_broadcast(
        &self,
        topic: &str,
        data: &str,
        retain: bool,
        serialized: bool,
    ) -> Result<(), Error> {
        if serialized {
            check_topic(topic)?;
        } else {
            check_publication(topic, data)?;
        }
        if retain {
            self.shared.hub.check_retainable(topic, data)?;
        }
        Ok(())
    }

    /// Publishes what [`Server::check_broadcast`] accepted, as
    /// [`Server::broadcast_keyed`] does (waiting if the queue is full).
    #[cfg_attr(
        not(feature = "python"),
        allow(
            dead_code,
            reason = "only the Python facade checks, then publishes without waiting"
        )
    )]
    pub(crate) fn broadcast_checked(
        &self,
        topic: &str,
        data: &str,
        key: Option<&str>,
        retain: bool,
    ) -> Result<u64, Error> {
        self.check_process()?;
        self.shared.hub.publish_checked(topic, data, key, retain)
    }

    /// [`Server::broadcast_checked`] without ever waiting: `None` when it
    /// would wait (the lock or the queue is taken, the queue is full) and
    /// for what may wait anyway (a retained value, the backplane). The
    /// Python facade calls it holding the interpreter's lock, which then
    /// need not be released and taken back for each publication.
    #[cfg_attr(
        not(feature = "python"),
        allow(
            dead_code,
            reason = "only the Python facade checks, then publishes without waiting"
        )
    )]
    pub(crate) fn try_broadcast_checked(
        &self,
        topic: &str,
        data: &str,
        key: Option<&str>,
        retain: bool,
    ) -> Option<Result<u64, Error>> {
        if retain {
            return None;
        }
        if let Err(error) = self.check_process() {
            return Some(Err(error));
        }
        self.shared.hub.try_publish_checked(topic, data, key)
    }

    /// Forgets the retained value of (topic, `key`), or every retained
    /// value of `topic` when `key` is `None`. Applied in order with the
    /// publications made before it (with a backplane, on every hub).
    ///
    /// # Errors
    /// [`Error::InvalidTopic`], [`Error::NotRunning`] after
    /// [`Server::stop`], [`Error::Forked`], [`Error::Overloaded`] as for
    /// [`Server::broadcast`].
    pub fn clear_retained(&self, topic: &str, key: Option<&str>) -> Result<(), Error> {
        self.check_process()?;
        self.shared.hub.clear_retained(topic, key)
    }

    /// Fails in a forked child, where the hub's threads do not exist and a
    /// publication would wait for a fan-out that never comes.
    fn check_process(&self) -> Result<(), Error> {
        if FORKS.load(Ordering::Acquire) == self.forks_at_start {
            Ok(())
        } else {
            Err(Error::Forked {
                parent: self.pid,
                child: std::process::id(),
            })
        }
    }

    /// Reads `certfile` and `keyfile` again and serves every TLS
    /// handshake from now on with what they hold (a renewed certificate);
    /// connections already open, or half-way through their handshake,
    /// keep the certificate they started with.
    ///
    /// # Errors
    /// [`Error::Tls`] when the files cannot be read or do not match (the
    /// hub then keeps serving the previous certificate), or when the hub
    /// was started without `certfile`.
    pub fn reload_tls(&self) -> Result<(), Error> {
        match &self.shared.tls {
            Some(tls) => tls.reload(),
            None => Err(Error::Tls(
                "the hub was started without certfile and keyfile: there is nothing to reload"
                    .into(),
            )),
        }
    }

    /// Counters and subscribers per topic.
    pub fn stats(&self) -> Stats {
        self.shared.hub.stats()
    }

    /// Where `topic`'s stream stands: its epoch and the `seq` of its newest
    /// publication (0 if none), as a client's answer tells them; `None`
    /// when the hub holds no such topic (nobody subscribed, no history).
    pub fn stream(&self, topic: &str) -> Option<(String, u64)> {
        self.shared
            .hub
            .stream_position(topic)
            .map(|(epoch, seq)| (epoch.to_string(), seq))
    }

    /// Stops the hub: refuses new publications, delivers the ones already
    /// accepted, sends close 1001 to every client, waits up to
    /// `shutdown_timeout` for all that, then shuts the runtime down and
    /// joins its threads, the subscription-events thread included. Called
    /// from async code it does the same (the waiting on a thread of its
    /// own), so it blocks its caller there too. Calling it again does
    /// nothing.
    pub fn stop(&self) {
        let Some(runtime) = lock(&self.runtime).take() else {
            return;
        };
        self.stopped.store(true, Ordering::Release);
        if self.check_process().is_err() {
            // A forked child: the runtime's threads are not here to join,
            // and shutting it down could wait for them for ever.
            std::mem::forget(runtime);
            return;
        }
        unregister_hub();
        // Closing the hub makes the fan-out drain and then cancel
        // `shutdown`; the connections flush their queues and close.
        self.shared.hub.close();
        self.shared.tracker.close();
        if tokio::runtime::Handle::try_current().is_err() {
            shut_down(&self.shared, runtime);
        } else {
            // Called from async code or from a runtime thread (the hub's
            // own blocking threads run `authorize`): waiting on a runtime
            // or dropping one panics there, so a thread of its own does the
            // waiting and this one waits for that thread. Called on this
            // hub's own runtime, the runtime's shutdown gives up on the
            // calling thread after `RUNTIME_SHUTDOWN_GRACE`, so this ends.
            self.stop_on_a_thread(runtime);
        }
        tracing::info!(addr = %self.local_addr, "wshub stopped");
    }

    /// [`shut_down`] on a new thread, joined. The runtime is handed over
    /// after the thread started, so that if it cannot be spawned (or dies
    /// first) the runtime is still here to be shut down without waiting.
    fn stop_on_a_thread(&self, runtime: Runtime) {
        let (hand_over, take) = std::sync::mpsc::channel::<Runtime>();
        let shared = Arc::clone(&self.shared);
        let stopper = std::thread::Builder::new()
            .name("wshub-stop".to_owned())
            .spawn(move || {
                if let Ok(runtime) = take.recv() {
                    shut_down(&shared, runtime);
                }
            });
        let runtime = match stopper {
            Ok(stopper) => match hand_over.send(runtime) {
                Ok(()) => {
                    let _ = stopper.join();
                    return;
                }
                Err(std::sync::mpsc::SendError(runtime)) => runtime,
            },
            Err(error) => {
                tracing::warn!(%error, "cannot spawn the thread that stops the hub");
                runtime
            }
        };
        // No thread to wait on: tear down without waiting for clients, but
        // still end the events thread (its queue is dropped, so it ends).
        self.shared.shutdown.cancel();
        runtime.shutdown_background();
        self.shared.hub.stop_events();
    }
}

/// Trims idle topics' histories by age, a few times per `ttl`, so that a
/// topic nobody reads any more does not keep its history (and its place in
/// the registry) past it.
async fn expire_histories(shared: Arc<Shared>, ttl: Duration) {
    let every = (ttl / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => return,
            _ = tick.tick() => shared.hub.expire_histories(),
        }
    }
}

/// The blocking part of [`Server::stop`], once the hub is closed: waits up
/// to `shutdown_timeout` for the connections, shuts the runtime down and
/// ends the subscription-events thread. Must not run inside a runtime.
fn shut_down(shared: &Shared, runtime: Runtime) {
    let tracker = shared.tracker.clone();
    let deadline = shared.config.shutdown_timeout;
    let shutdown = shared.shutdown.clone();
    runtime.block_on(async move {
        if tokio::time::timeout(deadline, tracker.wait())
            .await
            .is_err()
        {
            // Clients that did not take their queue and close frame in
            // time are dropped with the runtime.
            shutdown.cancel();
        }
    });
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_GRACE);
    // Every connection has left its topics by now; their "last subscriber
    // gone" events are delivered before stop() returns.
    shared.hub.stop_events();
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Connects to the configured Redis backplane, if any, before the hub
/// starts: a hub with a backplane does not start without it, so that a
/// wrong URL or a Redis that is down is reported by `start()` rather than
/// discovered by missing publications.
///
/// # Errors
/// [`Error::InvalidConfig`] for a bad URL, [`Error::Backplane`] when Redis
/// cannot be reached (within the backplane's connection timeout).
fn connect_backplane(
    runtime: &Runtime,
    config: &Config,
) -> Result<Option<(Arc<Backplane>, scale::Link)>, Error> {
    let Some(url) = &config.backplane else {
        return Ok(None);
    };
    let backplane = Arc::new(Backplane::new(
        url,
        &config.backplane_prefix,
        config.publish_queue,
    )?);
    // Connect on the runtime (redis needs one) and wait here: this also
    // works when `start` is called from inside another runtime.
    let (done, connected) = std::sync::mpsc::channel();
    let connecting = Arc::clone(&backplane);
    runtime.spawn(async move {
        let _ = done.send(connecting.connect().await);
    });
    let link = connected.recv().map_err(|_| Error::Backplane {
        addr: backplane.addr().to_owned(),
        reason: "the connection attempt was abandoned".into(),
    })??;
    tracing::info!(redis = backplane.addr(), prefix = %config.backplane_prefix, "wshub backplane connected");
    Ok(Some((backplane, link)))
}
