//! The Python module `wshub._native`: a thin facade that converts Python
//! arguments into a [`Config`], calls the core, and maps [`Error`] onto
//! Python exceptions. Anything that can wait (start, stop, a full publish
//! queue) runs with the GIL released.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use pyo3::exceptions::{PyConnectionError, PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyDict, PyString};

use super::py_json;
use crate::core::authorize::{Authorization, Authorizer, HandshakeRequest};
use crate::core::config::{
    seconds, seconds_or_zero, Config, SlowClientPolicy, TlsFiles, TopicPolicy,
};
use crate::core::error::Error;
use crate::core::subscription_events::SubscriptionListener;
use crate::core::token::TokenConfig;
use crate::server::Server;

/// The log target (a Python logger name, `wshub.python`, once
/// through pyo3-log) this module's records have always had, kept apart from
/// the module's path so that moving code does not rename loggers.
const LOG_TARGET: &str = "wshub::python";

impl From<Error> for PyErr {
    fn from(error: Error) -> PyErr {
        let message = error.to_string();
        match error {
            Error::InvalidJson(_)
            | Error::InvalidTopic(_)
            | Error::InvalidConfig(_)
            | Error::NotRetainable(_)
            | Error::Tls(_) => PyValueError::new_err(message),
            Error::NotRunning | Error::Overloaded | Error::Runtime(_) | Error::Forked { .. } => {
                PyRuntimeError::new_err(message)
            }
            Error::Bind { source, .. } => match source.raw_os_error() {
                // (errno, strerror) makes Python fill in OSError.errno and
                // pick the matching subclass (e.g. no subclass for
                // EADDRINUSE, PermissionError for EACCES).
                Some(errno) => PyOSError::new_err((errno, message)),
                None => PyOSError::new_err(message),
            },
            // ConnectionError is an OSError: the network failed.
            Error::Backplane { .. } => PyConnectionError::new_err(message),
        }
    }
}

/// `jwt_key` as bytes: a str (a secret, or a PEM key) is its UTF-8.
fn key_bytes(key: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(text) = key.cast::<PyString>() {
        return Ok(text.to_str()?.as_bytes().to_vec());
    }
    key.extract::<Vec<u8>>()
        .map_err(|_| PyTypeError::new_err("jwt_key must be a str or bytes"))
}

/// A running wshub server: a WebSocket pub/sub hub on its own threads.
///
/// Server(port=0, *, host="127.0.0.1", path="/api/ws", topics=None,
///        allowed_origins=None, max_connections=100000,
///        max_message_bytes=65536, send_queue=1024,
///        send_queue_bytes=16777216, max_topics_per_connection=1024,
///        max_topics=100000, slow_client="disconnect",
///        rate_limit=100.0, rate_burst=200,
///        publish_queue=65536, publish_queue_bytes=67108864,
///        history_size=1024, history_bytes=1048576, history_ttl=None,
///        retained_per_topic=1000, retained_bytes=67108864,
///        compression=False, compression_level=6, compression_min_size=256,
///        jwt_key=None, jwt_algorithms="HS256", jwt_audience=None,
///        jwt_issuer=None, jwt_leeway=0.0, jwt_query="token", jwt_cookie=None,
///        ping_interval=20.0, ping_timeout=20.0,
///        handshake_timeout=10.0, max_handshake_bytes=65536, max_headers=64,
///        shutdown_timeout=2.0, worker_threads=1,
///        on_subscription=None, backplane=None,
///        backplane_prefix="wshub:", reuse_port=False, authorize=None,
///        authorize_timeout=5.0, certfile=None, keyfile=None)
///
/// Starting binds the port at once (OSError, e.g. errno EADDRINUSE, if it
/// cannot). See wshub.start for the meaning of every option.
#[pyclass(name = "Server", module = "wshub._native", frozen, weakref)]
pub struct PyServer {
    /// Shared with [`LIVE_HUBS`], which only holds it weakly.
    server: Arc<Server>,
}

/// Every hub this process started, `wshub.start()` and `Server()` alike,
/// so that interpreter exit can stop them all ([`_stop_all`]) while Python
/// still runs: a hub left to the finaliser would stop with daemon threads
/// still calling it, and on CPython 3.13 a thread that re-attaches to a
/// finalising interpreter is ended with `pthread_exit` inside our frames.
static LIVE_HUBS: Mutex<Vec<Weak<Server>>> = Mutex::new(Vec::new());

fn register_hub(server: &Arc<Server>) {
    let mut hubs = LIVE_HUBS.lock().unwrap_or_else(PoisonError::into_inner);
    hubs.retain(|hub| hub.strong_count() > 0);
    hubs.push(Arc::downgrade(server));
}

/// _stop_all() -> None
///
/// Stops every hub of this process that is still running; `import wshub`
/// registers it with `atexit`, so that no hub outlives the interpreter.
#[pyfunction]
fn _stop_all(py: Python<'_>) {
    let hubs: Vec<Arc<Server>> = LIVE_HUBS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .drain(..)
        .filter_map(|hub| hub.upgrade())
        .collect();
    py.detach(|| hubs.iter().for_each(|hub| hub.stop()));
}

#[pymethods]
impl PyServer {
    #[new]
    #[pyo3(signature = (
        port = 0,
        *,
        host = "127.0.0.1",
        path = "/api/ws",
        topics = None,
        allowed_origins = None,
        max_connections = 100_000,
        max_message_bytes = 65_536,
        send_queue = 1024,
        send_queue_bytes = 16_777_216,
        max_topics_per_connection = 1024,
        max_topics = 100_000,
        slow_client = "disconnect",
        rate_limit = 100.0,
        rate_burst = 200,
        publish_queue = 65_536,
        publish_queue_bytes = 67_108_864,
        history_size = 1024,
        history_bytes = 1_048_576,
        history_ttl = None,
        retained_per_topic = 1000,
        retained_bytes = 67_108_864,
        compression = false,
        compression_level = 6,
        compression_min_size = 256,
        jwt_key = None,
        jwt_algorithms = "HS256",
        jwt_audience = None,
        jwt_issuer = None,
        jwt_leeway = 0.0,
        jwt_query = "token",
        jwt_cookie = None,
        ping_interval = 20.0,
        ping_timeout = 20.0,
        handshake_timeout = 10.0,
        max_handshake_bytes = 65_536,
        max_headers = 64,
        shutdown_timeout = 2.0,
        worker_threads = 1,
        on_subscription = None,
        backplane = None,
        backplane_prefix = "wshub:",
        reuse_port = false,
        authorize = None,
        authorize_timeout = 5.0,
        certfile = None,
        keyfile = None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        port: u16,
        host: &str,
        path: &str,
        topics: Option<Vec<String>>,
        allowed_origins: Option<Vec<String>>,
        max_connections: usize,
        max_message_bytes: usize,
        send_queue: usize,
        send_queue_bytes: usize,
        max_topics_per_connection: usize,
        max_topics: usize,
        slow_client: &str,
        rate_limit: f64,
        rate_burst: u32,
        publish_queue: usize,
        publish_queue_bytes: usize,
        history_size: usize,
        history_bytes: usize,
        history_ttl: Option<f64>,
        retained_per_topic: usize,
        retained_bytes: usize,
        compression: bool,
        compression_level: u32,
        compression_min_size: usize,
        jwt_key: Option<&Bound<'_, PyAny>>,
        jwt_algorithms: &str,
        jwt_audience: Option<String>,
        jwt_issuer: Option<String>,
        jwt_leeway: f64,
        jwt_query: &str,
        jwt_cookie: Option<String>,
        ping_interval: f64,
        ping_timeout: f64,
        handshake_timeout: f64,
        max_handshake_bytes: usize,
        max_headers: usize,
        shutdown_timeout: f64,
        worker_threads: usize,
        on_subscription: Option<Py<PyAny>>,
        backplane: Option<String>,
        backplane_prefix: &str,
        reuse_port: bool,
        authorize: Option<Py<PyAny>>,
        authorize_timeout: f64,
        certfile: Option<PathBuf>,
        keyfile: Option<PathBuf>,
    ) -> PyResult<Self> {
        let authorize = authorize.map(authorizer).transpose()?;
        let on_subscription = on_subscription.map(subscription_listener).transpose()?;
        let config = Config {
            host: host.to_owned(),
            port,
            path: path.to_owned(),
            topics: match topics {
                None => TopicPolicy::Any,
                Some(names) => TopicPolicy::Only(names.into_iter().collect::<BTreeSet<_>>()),
            },
            allowed_origins: allowed_origins.map(|o| o.into_iter().collect()),
            max_connections,
            max_message_bytes,
            send_queue,
            send_queue_bytes,
            max_topics_per_connection,
            max_topics,
            slow_client: match slow_client {
                "disconnect" => SlowClientPolicy::Disconnect,
                "conflate" => SlowClientPolicy::Conflate,
                other => {
                    return Err(PyValueError::new_err(format!(
                        "slow_client must be \"disconnect\" or \"conflate\", got {other:?}"
                    )))
                }
            },
            rate_limit,
            rate_burst,
            publish_queue,
            publish_queue_bytes,
            history_size,
            history_bytes,
            history_ttl: history_ttl
                .map(|ttl| seconds("history_ttl", ttl))
                .transpose()?,
            retained_per_topic,
            retained_bytes,
            compression,
            compression_level,
            compression_min_size,
            jwt: match jwt_key {
                None => None,
                Some(key) => Some(TokenConfig {
                    key: key_bytes(key)?,
                    algorithms: jwt_algorithms.split(',').map(str::to_owned).collect(),
                    audience: jwt_audience.map(|a| vec![a]),
                    issuer: jwt_issuer.map(|i| vec![i]),
                    leeway: seconds_or_zero("jwt_leeway", jwt_leeway)?,
                    query_param: jwt_query.to_owned(),
                    cookie: jwt_cookie,
                }),
            },
            ping_interval: seconds("ping_interval", ping_interval)?,
            ping_timeout: seconds("ping_timeout", ping_timeout)?,
            handshake_timeout: seconds("handshake_timeout", handshake_timeout)?,
            max_handshake_bytes,
            max_headers,
            shutdown_timeout: seconds("shutdown_timeout", shutdown_timeout)?,
            worker_threads,
            on_subscription,
            backplane,
            backplane_prefix: backplane_prefix.to_owned(),
            reuse_port,
            authorize,
            authorize_timeout: seconds("authorize_timeout", authorize_timeout)?,
            tls: match (certfile, keyfile) {
                (None, None) => None,
                (Some(certfile), Some(keyfile)) => Some(TlsFiles { certfile, keyfile }),
                _ => {
                    return Err(PyValueError::new_err(
                        "certfile and keyfile must be given together",
                    ))
                }
            },
        };
        let server = Arc::new(py.detach(|| Server::start(config))?);
        register_hub(&server);
        Ok(PyServer { server })
    }

    /// The bound TCP port (the real one when started with port 0).
    #[getter]
    fn port(&self) -> u16 {
        self.server.port()
    }

    /// The address the server listens on.
    #[getter]
    fn host(&self) -> String {
        self.server.local_addr().ip().to_string()
    }

    /// True until stop() is called.
    #[getter]
    fn running(&self) -> bool {
        self.server.is_running()
    }

    /// broadcast(topic, data, key=None, retain=False) -> int
    ///
    /// Publishes data on topic to every subscribed client and returns how
    /// many subscribers it was queued for. data is a str holding JSON (sent
    /// verbatim) or a value to serialise compactly: what to_json(data)
    /// returns (dict, list, tuple, str, int, float, bool, None, enum,
    /// datetime/date/time, uuid.UUID, decimal.Decimal, dataclasses).
    /// Returns at once: the fan-out runs on the hub's own threads.
    /// With a backplane, the publication goes to Redis and comes back to
    /// every hub's clients; the count is this hub's subscribers, and it
    /// never waits for Redis (see backplane_dropped in stats()).
    /// With slow_client="conflate", key (any value; compared as str) names
    /// what a newer publication replaces for a client that is behind.
    /// With retain=True the publication is also kept as the newest value
    /// of (topic, key) (key None: the topic's one keyless value), and
    /// every client that subscribes later receives it first, flagged
    /// "retained": true (see clear_retained(), retained_per_topic,
    /// retained_bytes).
    /// Raises ValueError for an invalid topic name or invalid JSON, or for
    /// retain=True when retained values are off or the value alone exceeds
    /// retained_bytes; ValueError or TypeError for a value to_json()
    /// refuses, RuntimeError after stop().
    #[pyo3(signature = (topic, data, key = None, retain = false))]
    fn broadcast(
        &self,
        py: Python<'_>,
        topic: &str,
        data: &Bound<'_, PyAny>,
        key: Option<&Bound<'_, PyAny>>,
        retain: bool,
    ) -> PyResult<u64> {
        // Keys are compared as text: a match id may be an int or a str.
        let key = key
            .map(|k| k.str().and_then(|s| s.to_str().map(str::to_owned)))
            .transpose()?;
        let key = key.as_deref();
        // A stopped hub answers without releasing the GIL: a daemon thread
        // that keeps publishing after exit's _stop_all() then never has to
        // re-attach to an interpreter that may be finalising.
        if self.server.is_stopped() {
            return Err(Error::NotRunning.into());
        }
        if let Ok(text) = data.cast::<PyString>() {
            return self.publish(py, topic, text.to_str()?, key, retain, false);
        }
        // Written in a reused buffer: most publications allocate nothing
        // before the core's frame.
        py_json::with_json(data, |text| {
            self.publish(py, topic, text, key, retain, true)
        })?
    }

    /// clear_retained(topic, key=None) -> None
    ///
    /// Forgets the retained value of (topic, key) (key compared as str,
    /// as for broadcast()), or every retained value of topic when key is
    /// None. Applied in order with the publications made before it by
    /// the same thread; with a backplane, on every hub. Clients already
    /// subscribed are not told: retained values only concern clients that
    /// subscribe later. Raises ValueError for an invalid topic name,
    /// RuntimeError after stop().
    #[pyo3(signature = (topic, key = None))]
    fn clear_retained(
        &self,
        py: Python<'_>,
        topic: &str,
        key: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let key = key
            .map(|k| k.str().and_then(|s| s.to_str().map(str::to_owned)))
            .transpose()?;
        Ok(py.detach(|| self.server.clear_retained(topic, key.as_deref()))?)
    }

    /// broadcast_many(items) -> list[int]
    ///
    /// Publishes each (topic, data) pair of items, in order, with one call:
    /// for producers that publish in bursts. data is as for broadcast().
    /// Every pair is checked first, so on ValueError or TypeError nothing
    /// at all is sent. Returns each publication's subscriber count.
    fn broadcast_many(&self, py: Python<'_>, items: &Bound<'_, PyAny>) -> PyResult<Vec<u64>> {
        let mut batch: Vec<(String, String)> = Vec::new();
        for item in items.try_iter()? {
            let item = item?;
            let (topic, data): (String, Bound<'_, PyAny>) = item.extract().map_err(|_| {
                PyTypeError::new_err("broadcast_many takes an iterable of (topic, data) pairs")
            })?;
            let text = match data.cast::<PyString>() {
                Ok(text) => text.to_str()?.to_owned(),
                Err(_) => py_json::to_json(&data)?,
            };
            batch.push((topic, text));
        }
        Ok(py.detach(|| self.server.broadcast_many(&batch))?)
    }

    /// stream(topic) -> tuple[str, int] | None
    ///
    /// Where topic's stream stands, as a client's connected/subscribed
    /// answer tells it: (epoch, seq of the newest publication, 0 if none),
    /// or None when the hub holds no such topic (nobody subscribed and no
    /// history kept).
    fn stream(&self, topic: &str) -> Option<(String, u64)> {
        self.server.stream(topic)
    }

    /// stats() -> dict
    ///
    /// connections (open now), topics (subscribers per topic), published,
    /// sent (publication frames written), dropped (publication frames lost
    /// to closed slow clients), slow_consumer_closes, conflated (pending
    /// publications replaced by a newer one of their key),
    /// subscription_events_dropped (on_subscription calls dropped because
    /// the listener fell behind), connections_opened,
    /// connections_closed, sent_bytes, handshakes_rejected, and for the
    /// Redis backplane: backplane_published, backplane_received,
    /// backplane_dropped, backplane_missed, backplane_reconnects,
    /// backplane_connected (bool), history_bytes (bytes of publication
    /// frames kept in topic histories for clients that recover), and for
    /// retained values: retained_values and retained_bytes (kept now),
    /// retained_evicted (pushed out by a bound), retained_refused (not
    /// kept), retained_unsent (not sent to a new subscriber whose queue
    /// could not take them). topics
    /// holds at most max_topics entries (only topics with subscribers).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        // Walking the registry takes a while with many topics: let other
        // Python threads run meanwhile.
        let stats = py.detach(|| self.server.stats());
        let dict = PyDict::new(py);
        for number in stats.numbers() {
            dict.set_item(number.name, number.value)?;
        }
        dict.set_item("topics", stats.topics)?;
        dict.set_item("handshakes_rejected", stats.handshakes_rejected)?;
        dict.set_item("backplane_connected", stats.backplane_connected)?;
        Ok(dict)
    }

    /// reload_tls() -> None
    ///
    /// Reads certfile and keyfile again: TLS handshakes from now on use
    /// the certificate they hold now (e.g. renewed), while connections
    /// already open keep theirs. Raises ValueError when the files cannot
    /// be read or do not go together (the previous certificate stays in
    /// use), or when the server was started without certfile.
    fn reload_tls(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.server.reload_tls())?;
        Ok(())
    }

    /// stop() -> None
    ///
    /// Refuses further broadcasts, sends close code 1001 to every client,
    /// waits up to shutdown_timeout for them, and joins the hub's threads.
    /// Calling it again does nothing.
    fn stop(&self, py: Python<'_>) {
        py.detach(|| self.server.stop());
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.stop(py);
        false
    }

    fn __repr__(&self) -> String {
        let state = if self.server.is_running() {
            "running"
        } else {
            "stopped"
        };
        format!("<wshub.Server {} {state}>", self.server.local_addr())
    }
}

/// Publications up to this size are checked and queued with the GIL
/// held when the queue can take them at once: releasing and re-taking it
/// would cost more than the publication (a third of a small one's call).
/// Larger JSON is checked with the GIL released, so that other Python
/// threads run meanwhile.
const HELD_GIL_MAX_BYTES: usize = 4096;

impl PyServer {
    /// Checks and publishes JSON text (`serialized`: written by
    /// `py_json`, so not parsed again), without giving up the GIL when
    /// that can be done without waiting.
    fn publish(
        &self,
        py: Python<'_>,
        topic: &str,
        text: &str,
        key: Option<&str>,
        retain: bool,
        serialized: bool,
    ) -> PyResult<u64> {
        let server = &self.server;
        if text.len() > HELD_GIL_MAX_BYTES {
            return Ok(py.detach(|| {
                server.check_broadcast(topic, text, retain, serialized)?;
                server.broadcast_checked(topic, text, key, retain)
            })?);
        }
        server.check_broadcast(topic, text, retain, serialized)?;
        if let Some(published) = server.try_broadcast_checked(topic, text, key, retain) {
            return Ok(published?);
        }
        Ok(py.detach(|| server.broadcast_checked(topic, text, key, retain))?)
    }
}

impl Drop for PyServer {
    /// Python drops a server (garbage, a second `wshub.start()`, exit)
    /// with the GIL held, and stopping waits for threads that may need it
    /// (the events thread calling `on_subscription`, logging): release it.
    fn drop(&mut self) {
        if self.server.is_stopped() {
            return;
        }
        // Dropped on a thread that is not attached (not expected from
        // Python), there is no GIL to release.
        if Python::try_attach(|py| py.detach(|| self.server.stop())).is_none() {
            self.server.stop();
        }
    }
}

/// Wraps a Python callable `(topic: str, subscribers: int) -> None` for
/// the hub's event thread, which attaches to the interpreter for each call.
fn subscription_listener(callback: Py<PyAny>) -> PyResult<SubscriptionListener> {
    Python::attach(|py| {
        if !callback.bind(py).is_callable() {
            return Err(PyTypeError::new_err(
                "on_subscription must be callable as on_subscription(topic, subscribers)",
            ));
        }
        Ok(())
    })?;
    Ok(SubscriptionListener(Arc::new(
        move |topic: &str, subscribers: u64| {
            Python::attach(|py| {
                if let Err(error) = callback.call1(py, (topic, subscribers)) {
                    // Logged through the `wshub` logger, never fatal.
                    tracing::error!(target: LOG_TARGET, %topic, "on_subscription raised: {error}");
                }
            });
        },
    )))
}

/// Wraps a Python callable `(request) -> answer`, or the older
/// `(path, query, headers) -> answer`, as the hub's handshake check. The
/// answer: True or None admits, False refuses with 403, an int refuses
/// with that status, any other iterable of str admits with only those
/// topics. An exception refuses with 403 and is logged.
fn authorizer(callback: Py<PyAny>) -> PyResult<Authorizer> {
    let form = Python::attach(|py| authorize_form(callback.bind(py)))?;
    Ok(Authorizer(Arc::new(move |request: &HandshakeRequest| {
        Python::attach(|py| match ask(py, &callback, form, request) {
            Ok(answer) => answer,
            Err(error) => {
                tracing::error!(target: LOG_TARGET, path = %request.path, "authorize raised: {error}");
                Authorization::Deny(403)
            }
        })
    })))
}

/// The arguments the host's `authorize` takes.
#[derive(Debug, Clone, Copy)]
enum AuthorizeForm {
    /// `authorize(request)`: one `wshub.Request`.
    Request,
    /// `authorize(path, query, headers)`, the first form, kept for the
    /// callers written for it.
    PathQueryHeaders,
}

/// Tells the two forms apart once, from the callable's signature: one
/// that accepts a single positional argument gets the request, one that
/// needs three gets (path, query, headers).
fn authorize_form(callback: &Bound<'_, PyAny>) -> PyResult<AuthorizeForm> {
    const EXPECTED: &str =
        "authorize must be callable as authorize(request) or authorize(path, query, headers)";
    let py = callback.py();
    if !callback.is_callable() {
        return Err(PyTypeError::new_err(EXPECTED));
    }
    let signature = match py
        .import("inspect")?
        .getattr("signature")?
        .call1((callback,))
    {
        Ok(signature) => signature,
        // Some callables (a few builtins) publish no signature: give them
        // the current form.
        Err(e) if e.is_instance_of::<PyValueError>(py) || e.is_instance_of::<PyTypeError>(py) => {
            return Ok(AuthorizeForm::Request)
        }
        Err(e) => return Err(e),
    };
    let none = py.None();
    if signature.call_method1("bind", (&none,)).is_ok() {
        Ok(AuthorizeForm::Request)
    } else if signature
        .call_method1("bind", (&none, &none, &none))
        .is_ok()
    {
        Ok(AuthorizeForm::PathQueryHeaders)
    } else {
        Err(PyTypeError::new_err(EXPECTED))
    }
}

fn ask(
    py: Python<'_>,
    callback: &Py<PyAny>,
    form: AuthorizeForm,
    request: &HandshakeRequest,
) -> PyResult<Authorization> {
    let answer = match form {
        AuthorizeForm::Request => callback.call1(py, (request_object(py, request)?,))?,
        AuthorizeForm::PathQueryHeaders => {
            let headers = PyDict::new(py);
            for (name, value) in &request.headers {
                // Repeated headers are joined, as HTTP allows.
                let joined = match headers.get_item(name)? {
                    Some(previous) => format!("{}, {value}", previous.extract::<String>()?),
                    None => value.clone(),
                };
                headers.set_item(name, joined)?;
            }
            callback.call1(py, (request.path.as_str(), request.query.as_str(), headers))?
        }
    };
    let answer = answer.bind(py);
    if answer.is_none() {
        return Ok(Authorization::Allow);
    }
    if let Ok(allowed) = answer.cast::<PyBool>() {
        return Ok(if allowed.is_true() {
            Authorization::Allow
        } else {
            Authorization::Deny(403)
        });
    }
    if let Ok(status) = answer.extract::<u16>() {
        return Ok(Authorization::Deny(status));
    }
    if answer.is_instance_of::<PyString>() {
        return Err(PyTypeError::new_err(
            "authorize returned a str; return an iterable of topic names",
        ));
    }
    let topics = answer
        .try_iter()?
        .map(|t| t?.extract::<String>())
        .collect::<PyResult<BTreeSet<String>>>()?;
    Ok(Authorization::AllowTopics(topics))
}

/// The `wshub.Request` for `request` (built by python/wshub/_request.py
/// from what the core parsed, so that C hosts see the same values).
fn request_object<'py>(py: Python<'py>, request: &HandshakeRequest) -> PyResult<Bound<'py, PyAny>> {
    static FROM_NATIVE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let build = FROM_NATIVE.get_or_try_init(py, || {
        Ok::<_, PyErr>(
            py.import("wshub._request")?
                .getattr("_from_native")?
                .unbind(),
        )
    })?;
    let client = (request.peer.ip().to_string(), request.peer.port());
    build.bind(py).call1((
        request.path.as_str(),
        request.query.as_str(),
        &request.headers,
        request.query_params(),
        request.cookies(),
        client,
        &request.topics,
    ))
}

/// The bridge from the hub's `tracing` events to Python's `logging`.
/// pyo3-log caches each logger's level so that events below it are
/// dropped without taking the GIL; the handle clears that cache.
static LOG_BRIDGE: std::sync::OnceLock<Option<pyo3_log::ResetHandle>> = std::sync::OnceLock::new();

/// reset_log_cache() -> None
///
/// Makes the hub re-read the levels of the `wshub` loggers (levels are
/// cached so that events below them cost nothing). `import wshub` calls it
/// on every `setLevel`; it is needed only after assigning `logger.level`
/// directly.
#[pyfunction]
fn reset_log_cache() {
    if let Some(Some(handle)) = LOG_BRIDGE.get() {
        handle.reset();
    }
}

/// to_json(value) -> str
///
/// The compact JSON text broadcast(topic, value) publishes for a value
/// that is not a str (a str given to broadcast() is sent as it is; here
/// it becomes a JSON string). The built-in types give what
/// json.dumps(value, separators=(",", ":"), ensure_ascii=False) gives;
/// an enum member its value; datetime, date and time their isoformat()
/// and uuid.UUID its str(), as strings; decimal.Decimal its str() as a
/// number; a dataclass instance an object of its fields. docs/protocol.md
/// shows each byte for byte.
///
/// Raises ValueError for NaN or an infinity (float or Decimal), a
/// circular reference or nesting deeper than 1000 levels; TypeError for
/// any other type, or a dict key that is not str, int, float, bool or
/// None.
#[pyfunction]
fn to_json(value: &Bound<'_, PyAny>) -> PyResult<String> {
    py_json::to_json(value)
}

/// The native part of the `wshub` package; use `wshub` itself.
#[pymodule(gil_used = false)]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // Another extension may have installed its own `log` bridge already;
    // then wshub's events go wherever that one sends them.
    LOG_BRIDGE.get_or_init(|| pyo3_log::try_init().ok());
    m.add_function(wrap_pyfunction!(reset_log_cache, m)?)?;
    m.add_function(wrap_pyfunction!(to_json, m)?)?;
    m.add_function(wrap_pyfunction!(_stop_all, m)?)?;
    m.add_class::<PyServer>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
