//! The C ABI: `extern "C"` functions over the same core the Python binding
//! uses, declared in the committed header `include/wshub.h` (generated from
//! this file by cbindgen; `make header` rewrites it, `make header-check`
//! fails when it is stale).
//!
//! Like `python.rs`, this is a facade that only converts: C arguments become
//! a [`Config`] or `&str`, and an [`Error`] becomes a negative
//! [`wshub_code`] plus a thread-local message for [`wshub_last_error`].
//! What it adds is the discipline a C host needs, so that no argument can
//! crash the host:
//! - every pointer is checked for NULL and every string for UTF-8 before
//!   use, and lengths are checked before a slice is formed;
//! - every body runs inside `catch_unwind` (`guard`), so a panic becomes
//!   [`wshub_code::WSHUB_ERR_PANIC`] instead of unwinding into C;
//! - a hub is an opaque `wshub_server *` owned by the caller from
//!   [`wshub_start`] until [`wshub_stop`], which stops and frees it.
//!
//! The doc comments below are the header's comments: they state the
//! ownership of every pointer for C readers. Every exported item is in
//! this file, in the header's order (cbindgen keeps the source order);
//! what they share is beside it:
//! - `guard`: [`wshub_code`]s with messages, the last-error slot, and the
//!   `catch_unwind` around every body;
//! - `args`: NULL, UTF-8 and length checks, and `wshub_options` into a
//!   [`Config`];
//! - `callbacks`: the host's `on_subscription` and `authorize` behind the
//!   core's hooks, and the gate `wshub_stop` waits on.

// The exported names follow C conventions (`wshub_server`, `WSHUB_OK`),
// which is what cbindgen copies into the header.
#![allow(non_camel_case_types)]

use std::any::Any;
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::{Arc, Condvar, Mutex};

use crate::core::authorize::{Authorization, Authorizer, HandshakeRequest};
use crate::core::config::{seconds, seconds_or_zero, Config, SlowClientPolicy, TopicPolicy};
use crate::core::error::Error;
use crate::core::outbox::lock;
use crate::core::subscription_events::SubscriptionListener;
use crate::protocol;
use crate::server::Server;

/// Result codes. `WSHUB_OK` is 0 and every error is negative, so a function
/// that returns a count or a length returns one of these instead when it
/// fails. `wshub_last_error()` then describes the failure.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum wshub_code {
    /// Success.
    WSHUB_OK = 0,
    /// A required pointer is NULL, or a length or capacity is impossible.
    WSHUB_ERR_INVALID_ARGUMENT = -1,
    /// The payload is not valid JSON (or not UTF-8); nothing was sent.
    WSHUB_ERR_INVALID_JSON = -2,
    /// The topic is not 1-128 characters of `[A-Za-z0-9_.:-]`.
    WSHUB_ERR_INVALID_TOPIC = -3,
    /// An option of `wshub_options` is out of range or malformed.
    WSHUB_ERR_INVALID_CONFIG = -4,
    /// The hub no longer accepts publications.
    WSHUB_ERR_NOT_RUNNING = -5,
    /// The publish queue is full and waiting for room would deadlock.
    WSHUB_ERR_OVERLOADED = -6,
    /// The listening socket could not be set up (bad host, permission...).
    WSHUB_ERR_BIND = -7,
    /// The port is already in use (EADDRINUSE).
    WSHUB_ERR_ADDR_IN_USE = -8,
    /// The hub's threads could not be started, or another internal failure.
    WSHUB_ERR_RUNTIME = -9,
    /// wshub panicked (a bug); the panic was stopped at the API boundary.
    /// A hub that reported this should be stopped.
    WSHUB_ERR_PANIC = -10,
    /// This process is a `fork()` of the one that started a hub: hubs
    /// cannot be used or started here. Start hubs after forking.
    WSHUB_ERR_FORKED = -11,
    /// The Redis backplane (`wshub_options.backplane`) could not be
    /// reached when the hub started.
    WSHUB_ERR_BACKPLANE = -12,
    /// `wshub_broadcast_ex()` with `WSHUB_RETAIN` of a value the hub cannot
    /// keep: retained values are off (`retained_bytes` or
    /// `retained_per_topic` 0), or the value alone exceeds
    /// `retained_bytes`. Nothing was sent.
    WSHUB_ERR_NOT_RETAINABLE = -13,
    /// The TLS certificate or key (`wshub_options.certfile`, `keyfile`)
    /// could not be read or do not go together: `wshub_start()` started
    /// nothing, `wshub_reload_tls()` kept the previous ones. Also
    /// `wshub_reload_tls()` on a hub started without TLS.
    WSHUB_ERR_TLS = -14,
}

use wshub_code::*;

mod args;
mod callbacks;
mod guard;

use args::*;
use callbacks::*;
use guard::*;

/// A running hub. Opaque: created by `wshub_start()`, owned by the caller,
/// freed by `wshub_stop()`.
pub struct wshub_server {
    server: Server,
    /// The host's callbacks running now; `wshub_stop` waits for them.
    callbacks: Arc<CallbackGate>,
}

// The header promises that every function is thread-safe, i.e. that one
// `wshub_server` may be used from several threads at once.
const _: fn() = || {
    fn thread_safe<T: Send + Sync>() {}
    thread_safe::<wshub_server>();
};

/// Options of `wshub_start()`. Fill it with `wshub_options_default()`, then
/// change the fields you need. wshub reads the struct (and the strings it
/// points to) only during the `wshub_start()` call and keeps no pointer
/// into it, so all of it may be freed as soon as `wshub_start()` returns.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct wshub_options {
    /// `sizeof(wshub_options)` as the host was compiled: the struct's
    /// version. `wshub_options_default()` sets it; a host that fills the
    /// struct by hand must set it too. Fields are only appended, so the
    /// sizes of the previous layouts (ending with `publish_queue_bytes`,
    /// and with `max_headers`) are read too, the fields after them taking
    /// their defaults. `wshub_start()`
    /// refuses any other size (`WSHUB_ERR_INVALID_ARGUMENT`), so that a
    /// host built against another version of the header fails cleanly
    /// instead of having its fields misread: rebuild it against the
    /// library's header.
    pub struct_size: usize,
    /// Address to listen on, NUL-terminated UTF-8. Default `"127.0.0.1"`
    /// (loopback, so a hub is never exposed by accident); `"0.0.0.0"`
    /// serves other hosts. Must not be NULL. Borrowed.
    pub host: *const c_char,
    /// TCP port; 0 (the default) asks the OS for a free one, which
    /// `wshub_port()` reports.
    pub port: u16,
    /// The only HTTP path that upgrades to a WebSocket; others get 404.
    /// Default `"/api/ws"`. Must not be NULL. Borrowed.
    pub path: *const c_char,
    /// The topics clients may subscribe to: a NULL-terminated array of
    /// NUL-terminated names, e.g. `(const char *const[]){"a", "b", NULL}`.
    /// NULL (the default) allows any valid name. With a list, a client that
    /// asks for none of the listed names gets all of them. Borrowed.
    pub topics: *const *const c_char,
    /// Browser origins allowed to connect, exact `Origin` values such as
    /// `"https://app.example.com"`, as a NULL-terminated array; a handshake
    /// from another origin gets HTTP 403. Requests without an `Origin`
    /// header (non-browser clients) are allowed. NULL (the default) allows
    /// any origin. Borrowed.
    pub allowed_origins: *const *const c_char,
    /// Open WebSocket connections at most; further handshakes get HTTP 503.
    /// Default 100000.
    pub max_connections: usize,
    /// Largest inbound message in bytes; a larger one closes the client
    /// with 1009. Default 65536, at most 64 MiB.
    pub max_message_bytes: usize,
    /// Frames queued per client at most; a client whose queue is full is
    /// closed with 1008 ("slow consumer"). Default 1024.
    pub send_queue: usize,
    /// Bytes queued per client at most, the same way. Default 16 MiB.
    pub send_queue_bytes: usize,
    /// What happens to a client whose queue is full:
    /// `WSHUB_SLOW_CLIENT_DISCONNECT` (the default: close 1008) or
    /// `WSHUB_SLOW_CLIENT_CONFLATE` (keep the newest publication per
    /// topic and key, see `wshub_broadcast_keyed()`). An int holding a
    /// `wshub_slow_client` value, so that any value can be checked.
    pub slow_client: c_int,
    /// Topics one connection may be subscribed to at once; further names
    /// are answered in `rejected` with reason `too_many_topics`.
    /// Default 1024.
    pub max_topics_per_connection: usize,
    /// Messages per second a client may send on average; a message over
    /// the limit gets an error frame `rate_limited`. Default 100.
    pub rate_limit: f64,
    /// Messages a client may send at once; after this many refusals in a
    /// row it is closed with 1008. Default 200.
    pub rate_burst: u32,
    /// Publications waiting for the fan-out at most; `wshub_broadcast()`
    /// waits for room when it is full. Default 65536.
    pub publish_queue: usize,
    /// Seconds between the server's pings to an idle client. Default 20.
    pub ping_interval: f64,
    /// Seconds a client may stay silent after a ping before it is closed.
    /// Default 20.
    pub ping_timeout: f64,
    /// Seconds a new connection has to complete its HTTP upgrade.
    /// Default 10.
    pub handshake_timeout: f64,
    /// Seconds `wshub_stop()` waits for clients to take their close frame.
    /// Default 2.
    pub shutdown_timeout: f64,
    /// Threads of the hub's own runtime. Default 1, at most 256.
    pub worker_threads: usize,
    /// Called when a topic gains its first subscriber (`subscribers` is 1)
    /// or loses its last one (0), so a producer can work only on watched
    /// topics. Called on a thread of wshub's own, one call at a time, in
    /// the order the changes happened; `topic` is valid only during the
    /// call. It must not block for long (events queue up behind it, and
    /// beyond 4096 are dropped). NULL (the default): no calls.
    pub on_subscription: wshub_subscription_fn,
    /// Passed to `on_subscription` as is. Must stay valid, and usable from
    /// another thread, until `wshub_stop()` returns.
    pub on_subscription_data: *mut c_void,
    /// Checks each WebSocket handshake before it is accepted: called with
    /// the request (path, raw and parsed query, headers, cookies, client
    /// address, requested topics: see `wshub_request`), valid only during
    /// the call, and a grant for `wshub_grant_topic()`. Return
    /// `WSHUB_AUTHORIZE_ALLOW` (0) to accept, `WSHUB_AUTHORIZE_GRANTED` to
    /// accept with only the granted topics, or the HTTP status to refuse
    /// with (401, 403...; anything outside 400-499 is sent as 403). Called
    /// on wshub's blocking threads, possibly several at once with the same
    /// `authorize_data`, so it must be thread-safe. NULL (the default):
    /// everybody is accepted.
    pub authorize: wshub_authorize_fn,
    /// Passed to `authorize` as is, from several threads at once. Must
    /// stay valid, and be safe to use concurrently, until `wshub_stop()`
    /// returns.
    pub authorize_data: *mut c_void,
    /// Seconds `authorize` may take; a slower answer refuses the handshake
    /// with 503. Default 5.
    pub authorize_timeout: f64,
    /// A Redis URL, `"redis://host:port/db"`, through which hubs in several
    /// processes or hosts share their publications: `wshub_broadcast()`
    /// then hands each publication to Redis (which assigns its `seq`) and
    /// every hub delivers what comes back to its clients. `wshub_start()`
    /// fails with `WSHUB_ERR_BACKPLANE` when Redis cannot be reached.
    /// `publish_queue` also bounds the queue of publications waiting for
    /// Redis; beyond it they are dropped and counted (`backplane_dropped`
    /// in the stats), never waited for. NULL (the default): no backplane.
    /// Borrowed. See docs/scaling.md.
    pub backplane: *const c_char,
    /// Prefix of the backplane's Redis channels and keys, 1-64 characters
    /// of `[A-Za-z0-9_.:-]`; only hubs with the same prefix share
    /// publications. NULL means the default, `"wshub:"`. Borrowed.
    pub backplane_prefix: *const c_char,
    /// Set `SO_REUSEPORT`, so that several processes on one host can
    /// listen on the same port (the kernel spreads connections among
    /// them). Requires `backplane`. Default false.
    pub reuse_port: bool,
    /// Topics the hub holds at most, across all connections; only topics
    /// with a subscriber are held (a topic is forgotten when its last
    /// subscriber leaves). Further names are answered in `rejected` with
    /// reason `hub_full`. Default 100000.
    pub max_topics: usize,
    /// Bytes of publications waiting for the fan-out at most;
    /// `wshub_broadcast()` waits for room when it is full, as for
    /// `publish_queue`. One larger publication is still taken when the
    /// queue is empty. Default 64 MiB.
    pub publish_queue_bytes: usize,
    // Fields below were appended after the first versioned layout; a host
    // built with that layout (`struct_size` ending before them) gets their
    // defaults.
    /// Longest HTTP request head (request line and headers) in bytes; a
    /// longer one gets HTTP 431 as soon as this much has arrived.
    /// Default 65536, between 1024 and 16 MiB.
    pub max_handshake_bytes: usize,
    /// Most headers in an HTTP request; one more gets HTTP 431 as soon as
    /// it arrives. Default 64, between 8 and 1024.
    pub max_headers: usize,
    // Fields below were appended after the second layout (ending with
    // `max_headers`); a host built with it gets their defaults.
    /// Publications kept per topic for clients that recover what they
    /// missed (protocol `since`); 0 keeps none. Default 1024, at most
    /// 1000000.
    pub history_size: usize,
    /// Bytes of those publications kept per topic at most. Default 1 MiB,
    /// at most 1 GiB.
    pub history_bytes: usize,
    /// Seconds after which a publication leaves the history; 0 (the
    /// default): never by age.
    pub history_ttl: f64,
    // Fields below were appended after the third layout (ending with
    // `history_ttl`); a host built with it gets their defaults.
    /// Retained values (`wshub_broadcast_ex()` with `WSHUB_RETAIN`) kept
    /// per topic at most; a new key past it pushes out the topic's oldest
    /// value. Default 1000, at most 1000000.
    pub retained_per_topic: usize,
    /// Bytes of retained frames kept across all topics at most; 0 turns
    /// retained values off. Default 64 MiB, at most 4 GiB.
    pub retained_bytes: usize,
    // Fields below were appended after the fourth layout (ending with
    // `retained_bytes`); a host built with it gets their defaults.
    /// Turns on the built-in JWT check of every handshake: the HMAC secret
    /// (HS*) or the PEM public key (RS*, PS*, ES*, EdDSA), `jwt_key_len`
    /// bytes (0: NUL-terminated). NULL (the default): off. Handshakes
    /// without a valid token get HTTP 401; a connection whose token
    /// expires is closed with 4001 unless it sent a `refresh` first.
    pub jwt_key: *const c_char,
    /// Bytes of `jwt_key` (0: up to its NUL).
    pub jwt_key_len: usize,
    /// Comma-separated algorithms accepted, all of the key's family.
    /// Default (and NULL) "HS256".
    pub jwt_algorithms: *const c_char,
    /// The `aud` a token must name; NULL (the default): not checked.
    pub jwt_audience: *const c_char,
    /// The `iss` a token must have; NULL (the default): not checked.
    pub jwt_issuer: *const c_char,
    /// Seconds of clock skew allowed on `exp` and `nbf`. Default 0.
    pub jwt_leeway: f64,
    /// The query parameter a token may come in. Default (and NULL)
    /// "token".
    pub jwt_query: *const c_char,
    /// The cookie a token may come in; NULL (the default): none.
    pub jwt_cookie: *const c_char,
    // Fields below were appended after the fifth layout (ending with
    // `jwt_cookie`); a host built with it gets their defaults.
    /// Serve TLS only (`wss://`, `https://`): the path of a PEM file with
    /// the certificate chain, leaf first. Set with `keyfile`; NULL (the
    /// default): plain TCP. Read at `wshub_start()` (and again by
    /// `wshub_reload_tls()`); a file that cannot be used is
    /// `WSHUB_ERR_TLS`. Borrowed.
    pub certfile: *const c_char,
    /// The PEM private key of `certfile`'s leaf (PKCS#8, PKCS#1 or SEC1).
    /// Borrowed.
    pub keyfile: *const c_char,
    // Fields below were appended after the sixth layout (ending with
    // `keyfile`); a host built with it gets their defaults.
    /// 1: negotiate permessage-deflate with clients that offer it; each
    /// publication is compressed once and its frame shared by every
    /// compressing subscriber. 0 (the default): never. Anything else is
    /// `WSHUB_ERR_INVALID_CONFIG` (an `int`, not a `bool`, so that a host
    /// cannot hand over a bit pattern that is no boolean).
    pub compression: c_int,
    /// Deflate level, 1 (fastest) to 9 (smallest). Default 6.
    pub compression_level: c_int,
    /// Publication frames shorter than this many bytes go uncompressed.
    /// Default 256.
    pub compression_min_size: usize,
}

/// What happens to a client whose queue is full.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum wshub_slow_client {
    /// Close it with 1008 "slow consumer".
    WSHUB_SLOW_CLIENT_DISCONNECT = 0,
    /// Keep only the newest pending publication per (topic, key).
    WSHUB_SLOW_CLIENT_CONFLATE = 1,
}

/// The field is an int, not the enum: a C caller may store any value, and
/// a Rust enum holding an undeclared value would be undefined behaviour.
fn slow_client_policy(raw: c_int) -> Result<SlowClientPolicy, Failure> {
    match raw {
        0 => Ok(SlowClientPolicy::Disconnect),
        1 => Ok(SlowClientPolicy::Conflate),
        other => Err(Failure::new(
            WSHUB_ERR_INVALID_CONFIG,
            format!("opts->slow_client must be WSHUB_SLOW_CLIENT_DISCONNECT or WSHUB_SLOW_CLIENT_CONFLATE, got {other}"),
        )),
    }
}

/// The type of `wshub_options.on_subscription`.
pub type wshub_subscription_fn =
    Option<unsafe extern "C" fn(user_data: *mut c_void, topic: *const c_char, subscribers: u64)>;

/// One name and value of a handshake (a header, a query parameter or a
/// cookie), NUL-terminated UTF-8, owned by wshub.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct wshub_pair {
    /// The name (header names are lower-case).
    pub name: *const c_char,
    /// The value.
    pub value: *const c_char,
}

/// What `authorize` sees of a WebSocket handshake. All of it (the struct,
/// its arrays and strings) is owned by wshub and valid only during the
/// call; copy what you keep. Arrays are never NULL, even when empty.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct wshub_request {
    /// The request path, e.g. `"/api/ws"`.
    pub path: *const c_char,
    /// The raw query, without `?` (`""` when absent).
    pub query: *const c_char,
    /// The query's parameters, percent-decoded, in order (a repeated name
    /// appears once per occurrence). Parameters whose decoded name or value
    /// holds a NUL byte are left out; `query` has everything.
    pub query_params: *const wshub_pair,
    /// The number of `query_params`.
    pub query_params_len: usize,
    /// The headers in request order, names lower-case; headers whose value
    /// is not UTF-8 are left out.
    pub headers: *const wshub_pair,
    /// The number of `headers`.
    pub headers_len: usize,
    /// The cookies of the `Cookie` header(s), in order; a value in double
    /// quotes loses them, pieces that are not `name=value` are skipped.
    pub cookies: *const wshub_pair,
    /// The number of `cookies`.
    pub cookies_len: usize,
    /// The client's IP address (the TCP peer), e.g. `"127.0.0.1"` or
    /// `"::1"`.
    pub client_host: *const c_char,
    /// The client's TCP port.
    pub client_port: u16,
    /// The topics the client asks for in its query (`topics=a,b`), as the
    /// hub reads them, before any check: a NULL-terminated array.
    pub topics: *const *const c_char,
    /// The number of `topics` (not counting the NULL).
    pub topics_len: usize,
}

/// Where `authorize` lists the topics it allows, with
/// `wshub_grant_topic()`. Opaque; owned by wshub and valid only during the
/// `authorize` call it was passed to.
pub struct wshub_grant {
    /// `None` until a topic is granted.
    topics: Mutex<Option<BTreeSet<String>>>,
}

/// What `authorize` returns to accept a handshake (any other value is the
/// HTTP status to refuse it with: 401, 403...; anything outside 400-499 is
/// sent as 403).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum wshub_authorize_answer {
    /// Accept. The client may subscribe to every topic the server allows,
    /// unless `wshub_grant_topic()` was called: then only to the granted
    /// ones.
    WSHUB_AUTHORIZE_ALLOW = 0,
    /// Accept with only the granted topics, none if none was granted. Use
    /// it when the grants are computed, so that granting nothing never
    /// means everything.
    WSHUB_AUTHORIZE_GRANTED = 1,
}

/// The type of `wshub_options.authorize`: decides on one handshake
/// (`request`, see `wshub_request`) and returns a `wshub_authorize_answer`
/// to accept it or an HTTP status to refuse it; `grant` is for
/// `wshub_grant_topic()`. Called on wshub's blocking threads, possibly
/// several at once: it must be thread-safe.
pub type wshub_authorize_fn = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        request: *const wshub_request,
        grant: *mut wshub_grant,
    ) -> c_int,
>;

/// Within an `authorize` call, allows the client to subscribe to `topic`
/// (a NUL-terminated name, borrowed for the call); once any topic was
/// granted, the client may subscribe only to granted topics (and only to
/// those the server's own rules allow). Call it only during the `authorize`
/// call that received `grant`.
///
/// Returns `WSHUB_OK`, `WSHUB_ERR_INVALID_ARGUMENT` (`grant` or `topic`
/// NULL) or `WSHUB_ERR_INVALID_TOPIC` (not 1-128 characters of
/// `[A-Za-z0-9_.:-]`, or not UTF-8); nothing is granted on error.
///
/// # Safety
/// `grant` must be NULL or the grant of an `authorize` call still running;
/// `topic` must be NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn wshub_grant_topic(grant: *mut wshub_grant, topic: *const c_char) -> c_int {
    guard(code_as_int, || {
        // SAFETY: NULL or live during the call by the caller's contract;
        // only shared access (the set is behind a mutex).
        let grant = unsafe { grant.cast_const().as_ref() }
            .ok_or_else(|| Failure::invalid_argument("grant is NULL"))?;
        // SAFETY: NULL or NUL-terminated by the caller's contract.
        let topic = unsafe { c_str(topic, "topic", WSHUB_ERR_INVALID_TOPIC) }?;
        if !protocol::is_valid_topic(topic) {
            return Err(Error::InvalidTopic(topic.to_owned()).into());
        }
        lock(&grant.topics)
            .get_or_insert_with(BTreeSet::new)
            .insert(topic.to_owned());
        Ok(WSHUB_OK as c_int)
    })
}

/// A list of allowed topics longer than this is taken for a list that
/// lacks its NULL terminator, rather than read on until something breaks.
const MAX_TOPIC_LIST_LEN: usize = 1 << 20;

/// The size of the current `wshub_options` layout: its version.
const OPTIONS_SIZE: usize = std::mem::size_of::<wshub_options>();

/// The size of the first versioned layout, which ended with
/// `publish_queue_bytes`. It is still read: that prefix of the current
/// layout, the fields appended since taking their defaults. (To append a
/// field, accept the previous size too in the same way, and say so in the
/// header.)
const OPTIONS_SIZE_V1: usize = std::mem::offset_of!(wshub_options, max_handshake_bytes);

/// The size of the second layout, which ended with `max_headers`.
const OPTIONS_SIZE_V2: usize = std::mem::offset_of!(wshub_options, history_size);

/// The size of the third layout, which ended with `history_ttl`.
const OPTIONS_SIZE_V3: usize = std::mem::offset_of!(wshub_options, retained_per_topic);

/// The size of the fourth layout, which ended with `retained_bytes`.
const OPTIONS_SIZE_V4: usize = std::mem::offset_of!(wshub_options, jwt_key);

/// The size of the fifth layout, which ended with `jwt_cookie`.
const OPTIONS_SIZE_V5: usize = std::mem::offset_of!(wshub_options, certfile);

/// The size of the sixth layout, which ended with `keyfile`.
const OPTIONS_SIZE_V6: usize = std::mem::offset_of!(wshub_options, compression);

// Nor the sixth (a pointer, then an int).
const _: () = assert!(
    OPTIONS_SIZE_V6
        == std::mem::offset_of!(wshub_options, keyfile) + std::mem::size_of::<*const c_char>()
);

// Nor the fifth (a pointer, then a pointer).
const _: () = assert!(
    OPTIONS_SIZE_V5
        == std::mem::offset_of!(wshub_options, jwt_cookie) + std::mem::size_of::<*const c_char>()
);

// Nor the fourth (a size_t, then a pointer).
const _: () = assert!(
    OPTIONS_SIZE_V4
        == std::mem::offset_of!(wshub_options, retained_bytes) + std::mem::size_of::<usize>()
);

// The third had no padding after its last field either (a double, then a
// size_t).
const _: () = assert!(
    OPTIONS_SIZE_V3
        == std::mem::offset_of!(wshub_options, history_ttl) + std::mem::size_of::<f64>()
);

// Nor had the second (its last field is a size_t, as is the next one).
const _: () = assert!(
    OPTIONS_SIZE_V2
        == std::mem::offset_of!(wshub_options, max_headers) + std::mem::size_of::<usize>()
);

// The first layout had no padding after its last field, so its `sizeof`
// (what its hosts pass) is exactly the offset of the first appended field.
const _: () = assert!(
    OPTIONS_SIZE_V1
        == std::mem::offset_of!(wshub_options, publish_queue_bytes) + std::mem::size_of::<usize>()
);

fn check_struct_size(size: usize, name: &str) -> Result<(), Failure> {
    let sizes = [
        OPTIONS_SIZE,
        OPTIONS_SIZE_V1,
        OPTIONS_SIZE_V2,
        OPTIONS_SIZE_V3,
        OPTIONS_SIZE_V4,
        OPTIONS_SIZE_V5,
        OPTIONS_SIZE_V6,
    ];
    if sizes.contains(&size) {
        return Ok(());
    }
    Err(Failure::invalid_argument(format!(
        "{name} is {size}, but this wshub {} reads a wshub_options of {OPTIONS_SIZE} bytes \
         (or {OPTIONS_SIZE_V6}, {OPTIONS_SIZE_V5}, {OPTIONS_SIZE_V4}, {OPTIONS_SIZE_V3}, \
         {OPTIONS_SIZE_V2} or {OPTIONS_SIZE_V1}, the layouts before compression, before \
         certfile, before jwt_key, before \
         retained_per_topic, before history_size and before max_handshake_bytes): fill it with wshub_options_default() and build against the \
         library's wshub.h",
        env!("CARGO_PKG_VERSION")
    )))
}

/// Defaults of the string options, owned by the library for ever.
const DEFAULT_HOST: &CStr = c"127.0.0.1";
const DEFAULT_PATH: &CStr = c"/api/ws";
const DEFAULT_JWT_ALGORITHMS: &CStr = c"HS256";
const DEFAULT_JWT_QUERY: &CStr = c"token";

/// Fills `*out` with the defaults (see each field of `wshub_options`) and
/// sets `out->struct_size`. Its `host` and `path` then point to static
/// strings owned by wshub. Call it as `wshub_options_default(&opts)`, the
/// macro that passes `sizeof opts`: `struct_size` must be the size of the
/// caller's struct, so that a library newer than the header the host was
/// compiled with never writes past the host's struct. The sizes of the
/// previous layouts (before `history_size`, and before
/// `max_handshake_bytes`) are accepted too: then only that many bytes are
/// written.
///
/// Returns `WSHUB_OK`, or `WSHUB_ERR_INVALID_ARGUMENT` when `out` is NULL
/// or `struct_size` is neither the `sizeof(wshub_options)` of this library
/// nor that of a previous layout (then nothing is written).
///
/// # Safety
/// `out` must be NULL or point to `struct_size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn wshub_options_init(out: *mut wshub_options, struct_size: usize) -> c_int {
    guard(code_as_int, || {
        let out = non_null(out, "out")?;
        check_struct_size(struct_size, "struct_size")?;
        let options = wshub_options {
            struct_size,
            ..default_options()
        };
        // SAFETY: the caller promises `struct_size` writable bytes at `out`,
        // and `struct_size` is at most `size_of::<wshub_options>()` bytes
        // (checked above). An untyped copy: it does not read (or drop)
        // what was there, which may be uninitialised.
        unsafe {
            ptr::copy_nonoverlapping(
                ptr::addr_of!(options).cast::<u8>(),
                out.cast::<u8>(),
                struct_size,
            );
        };
        Ok(WSHUB_OK as c_int)
    })
}

/// The defaults of every field, for the current layout.
fn default_options() -> wshub_options {
    let config = Config::default();
    let secs = |d: std::time::Duration| d.as_secs_f64();
    wshub_options {
        struct_size: OPTIONS_SIZE,
        host: DEFAULT_HOST.as_ptr(),
        port: config.port,
        path: DEFAULT_PATH.as_ptr(),
        topics: ptr::null(),
        allowed_origins: ptr::null(),
        max_connections: config.max_connections,
        max_message_bytes: config.max_message_bytes,
        send_queue: config.send_queue,
        send_queue_bytes: config.send_queue_bytes,
        max_topics_per_connection: config.max_topics_per_connection,
        slow_client: wshub_slow_client::WSHUB_SLOW_CLIENT_DISCONNECT as c_int,
        rate_limit: config.rate_limit,
        rate_burst: config.rate_burst,
        publish_queue: config.publish_queue,
        ping_interval: secs(config.ping_interval),
        ping_timeout: secs(config.ping_timeout),
        handshake_timeout: secs(config.handshake_timeout),
        shutdown_timeout: secs(config.shutdown_timeout),
        worker_threads: config.worker_threads,
        on_subscription: None,
        on_subscription_data: ptr::null_mut(),
        authorize: None,
        authorize_data: ptr::null_mut(),
        authorize_timeout: secs(config.authorize_timeout),
        backplane: ptr::null(),
        backplane_prefix: ptr::null(),
        reuse_port: config.reuse_port,
        max_topics: config.max_topics,
        publish_queue_bytes: config.publish_queue_bytes,
        max_handshake_bytes: config.max_handshake_bytes,
        max_headers: config.max_headers,
        history_size: config.history_size,
        history_bytes: config.history_bytes,
        history_ttl: config.history_ttl.map_or(0.0, |ttl| ttl.as_secs_f64()),
        retained_per_topic: config.retained_per_topic,
        retained_bytes: config.retained_bytes,
        jwt_key: ptr::null(),
        jwt_key_len: 0,
        jwt_algorithms: DEFAULT_JWT_ALGORITHMS.as_ptr(),
        jwt_audience: ptr::null(),
        jwt_issuer: ptr::null(),
        jwt_leeway: 0.0,
        jwt_query: DEFAULT_JWT_QUERY.as_ptr(),
        jwt_cookie: ptr::null(),
        certfile: ptr::null(),
        keyfile: ptr::null(),
        compression: c_int::from(config.compression),
        compression_level: c_int::try_from(config.compression_level).unwrap_or(6),
        compression_min_size: config.compression_min_size,
    }
}

/// Starts a hub: checks the options, starts its threads and binds the
/// port before returning, so a taken port fails here.
///
/// `opts` may be NULL for all the defaults; it is only read during the
/// call. Returns a new hub, owned by the caller until `wshub_stop()`, or
/// NULL on failure: then `wshub_last_error()` says why and
/// `wshub_last_error_code()` is one of `WSHUB_ERR_INVALID_ARGUMENT`,
/// `WSHUB_ERR_INVALID_CONFIG`, `WSHUB_ERR_BIND`, `WSHUB_ERR_ADDR_IN_USE`,
/// `WSHUB_ERR_RUNTIME`, `WSHUB_ERR_BACKPLANE`, `WSHUB_ERR_TLS`. An `opts->struct_size`
/// other than this library's `sizeof(wshub_options)` or the previous
/// layout's (whose missing fields take their defaults) is
/// `WSHUB_ERR_INVALID_ARGUMENT`, and nothing after it is read.
///
/// # Safety
/// `opts` must be NULL or point to a readable `wshub_options` whose string
/// pointers are NULL or NUL-terminated, and whose `topics` is NULL or a
/// NULL-terminated array (at least its `struct_size` must be readable).
#[no_mangle]
pub unsafe extern "C" fn wshub_start(opts: *const wshub_options) -> *mut wshub_server {
    guard(
        |_| ptr::null_mut(),
        || {
            let callbacks = Arc::new(CallbackGate::default());
            // SAFETY: forwarded from the caller's contract on `opts`.
            let config = unsafe { config_from(opts, &callbacks) }?;
            let server = Server::start(config)?;
            Ok(Box::into_raw(Box::new(wshub_server { server, callbacks })))
        },
    )
}

/// Reads the hub's `certfile` and `keyfile` again: TLS handshakes from
/// now on use what they hold (a renewed certificate), connections already
/// open keep theirs.
///
/// Returns `WSHUB_OK`, `WSHUB_ERR_INVALID_ARGUMENT` (`server` NULL) or
/// `WSHUB_ERR_TLS` (the files cannot be read or do not go together: the
/// previous certificate stays in use; or the hub has no TLS).
///
/// # Safety
/// `server` must be NULL or a hub from `wshub_start()` not yet stopped.
#[no_mangle]
pub unsafe extern "C" fn wshub_reload_tls(server: *const wshub_server) -> c_int {
    guard(code_as_int, || {
        // SAFETY: forwarded from the caller's contract on `server`.
        let hub = unsafe { hub_ref(server) }?;
        hub.server.reload_tls()?;
        Ok(WSHUB_OK as c_int)
    })
}

/// The bound TCP port (the real one when the hub was started on port 0),
/// or 0 when `server` is NULL.
///
/// # Safety
/// `server` must be NULL or a hub from `wshub_start()` not yet stopped.
#[no_mangle]
pub unsafe extern "C" fn wshub_port(server: *const wshub_server) -> u16 {
    guard(
        |_| 0,
        || {
            // SAFETY: forwarded from the caller's contract on `server`.
            let hub = unsafe { hub_ref(server) }?;
            Ok(hub.server.port())
        },
    )
}

/// Publishes `json` on `topic` to every subscribed client. The frame
/// clients receive is
/// `{"type":"message","topic":<topic>,"seq":<n>,"data":<json>}` with
/// `json` copied byte for byte.
///
/// `topic` is a NUL-terminated name; `json` is `json_len` bytes of UTF-8
/// JSON and need not be NUL-terminated. Both are borrowed for the call
/// only. Returns at once (the fan-out runs on the hub's threads) unless the
/// publish queue is full, in which case it waits for room. With a
/// backplane it never waits: the publication is queued for Redis (or, when
/// that queue is full, dropped and counted in `backplane_dropped`), and the
/// count returned is this hub's subscribers of the topic.
///
/// Returns how many subscribers the publication was queued for (>= 0), or
/// a negative `wshub_code`: `WSHUB_ERR_INVALID_ARGUMENT` (a NULL pointer,
/// or `json_len` larger than `PTRDIFF_MAX`), `WSHUB_ERR_INVALID_TOPIC`
/// (also for a topic that is not UTF-8), `WSHUB_ERR_INVALID_JSON` (also
/// for bytes that are not UTF-8), `WSHUB_ERR_NOT_RUNNING`,
/// `WSHUB_ERR_OVERLOADED`. Nothing is sent on error.
///
/// # Safety
/// `server` must be NULL or a hub from `wshub_start()` not yet stopped;
/// `topic` must be NULL or NUL-terminated; `json` must be NULL or point to
/// `json_len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn wshub_broadcast(
    server: *mut wshub_server,
    topic: *const c_char,
    json: *const c_char,
    json_len: usize,
) -> i64 {
    // SAFETY: forwarded from the caller's contract; no key.
    unsafe { broadcast(server, topic, json, json_len, ptr::null(), 0) }
}

/// `wshub_broadcast()` with a conflation key (e.g. a match id), for hubs
/// started with `slow_client = WSHUB_SLOW_CLIENT_CONFLATE`: a client that
/// is behind keeps only the newest pending publication per (topic, key).
/// `key` is a NUL-terminated UTF-8 string, borrowed for the call; NULL
/// means the topic alone is the key. With the disconnect policy the key is
/// ignored. Returns and fails as `wshub_broadcast()`.
///
/// # Safety
/// As `wshub_broadcast()`; `key` must be NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn wshub_broadcast_keyed(
    server: *mut wshub_server,
    topic: *const c_char,
    json: *const c_char,
    json_len: usize,
    key: *const c_char,
) -> i64 {
    // SAFETY: forwarded from the caller's contract.
    unsafe { broadcast(server, topic, json, json_len, key, 0) }
}

/// `wshub_broadcast_ex()` flag: also keep the publication as the newest
/// retained value of (topic, key) (NULL key: the topic's one keyless
/// value); every client that subscribes later receives it first, as a
/// message with `"retained":true`. Bounded by `retained_per_topic` and
/// `retained_bytes`; forgotten with `wshub_clear_retained()`.
pub const WSHUB_RETAIN: u32 = 1;

/// `wshub_broadcast_keyed()` with `flags`: 0 or `WSHUB_RETAIN`. Returns
/// and fails as `wshub_broadcast()`, and with
/// `WSHUB_ERR_INVALID_ARGUMENT` for an unknown flag bit and
/// `WSHUB_ERR_NOT_RETAINABLE` for a value to retain that the hub cannot
/// keep (nothing is sent then).
///
/// # Safety
/// As `wshub_broadcast_keyed()`.
#[no_mangle]
pub unsafe extern "C" fn wshub_broadcast_ex(
    server: *mut wshub_server,
    topic: *const c_char,
    json: *const c_char,
    json_len: usize,
    key: *const c_char,
    flags: u32,
) -> i64 {
    // SAFETY: forwarded from the caller's contract.
    unsafe { broadcast(server, topic, json, json_len, key, flags) }
}

/// The body of the broadcast entry points.
///
/// # Safety
/// As `wshub_broadcast_keyed()`.
unsafe fn broadcast(
    server: *mut wshub_server,
    topic: *const c_char,
    json: *const c_char,
    json_len: usize,
    key: *const c_char,
    flags: u32,
) -> i64 {
    guard(
        |code| code as i64,
        || {
            // SAFETY (four calls): forwarded from the caller's contract.
            let hub = unsafe { hub_ref(server) }?;
            let topic = unsafe { c_str(topic, "topic", WSHUB_ERR_INVALID_TOPIC) }?;
            let json = unsafe { byte_slice(json, json_len, "json") }?;
            let key = if key.is_null() {
                None
            } else {
                Some(unsafe { c_str(key, "key", WSHUB_ERR_INVALID_ARGUMENT) }?)
            };
            let json = std::str::from_utf8(json).map_err(|e| {
                Failure::new(
                    WSHUB_ERR_INVALID_JSON,
                    format!("invalid JSON: not UTF-8 ({e})"),
                )
            })?;
            if flags & !WSHUB_RETAIN != 0 {
                return Err(Failure::invalid_argument(format!(
                    "unknown flags {flags:#x}: only WSHUB_RETAIN ({WSHUB_RETAIN}) is defined"
                )));
            }
            let retain = flags & WSHUB_RETAIN != 0;
            let subscribers = hub.server.broadcast_keyed(topic, json, key, retain)?;
            Ok(i64::try_from(subscribers).unwrap_or(i64::MAX))
        },
    )
}

/// Forgets the retained value of (topic, `key`), or every retained value
/// of `topic` when `key` is NULL. Applied in order with the publications
/// made before it by the same thread (with a backplane, on every hub).
/// Clients already subscribed are not told.
///
/// Returns `WSHUB_OK`, or `WSHUB_ERR_INVALID_ARGUMENT` (NULL `server` or
/// `topic`, `key` not UTF-8), `WSHUB_ERR_INVALID_TOPIC`,
/// `WSHUB_ERR_NOT_RUNNING`, `WSHUB_ERR_OVERLOADED`.
///
/// # Safety
/// `server` must be NULL or a live hub, `topic` NULL or NUL-terminated,
/// `key` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn wshub_clear_retained(
    server: *mut wshub_server,
    topic: *const c_char,
    key: *const c_char,
) -> c_int {
    guard(code_as_int, || {
        // SAFETY (three calls): forwarded from the caller's contract.
        let hub = unsafe { hub_ref(server) }?;
        let topic = unsafe { c_str(topic, "topic", WSHUB_ERR_INVALID_TOPIC) }?;
        let key = if key.is_null() {
            None
        } else {
            Some(unsafe { c_str(key, "key", WSHUB_ERR_INVALID_ARGUMENT) }?)
        };
        hub.server.clear_retained(topic, key)?;
        Ok(WSHUB_OK as c_int)
    })
}

/// Writes the hub's counters as one line of JSON, with the same fields as
/// the Python `stats()`: `{"connections":N,"connections_opened":N,
/// "connections_closed":N,"published":N,"sent":N,"sent_bytes":N,
/// "dropped":N,"slow_consumer_closes":N,"conflated":N,
/// "subscription_events_dropped":N,"backplane_published":N,
/// "backplane_received":N,"backplane_dropped":N,"backplane_missed":N,
/// "backplane_reconnects":N,"history_bytes":N,"retained_values":N,
/// "retained_bytes":N,"retained_evicted":N,"retained_refused":N,
/// "retained_unsent":N,"token_expired_closes":N,"sse_clients":N,"tokens_refreshed":N,
/// "topics":{"name":subscribers,...},
/// "handshakes_rejected":{"auth":N,"capacity":N,"invalid":N,"key":N,"method":N,
/// "not_upgrade":N,"origin":N,"path":N,"timeout":N,"token_algorithm":N,
/// "token_claims":N,"token_expired":N,"token_malformed":N,"token_missing":N,
/// "token_not_yet_valid":N,"token_signature":N,"too_large":N,
/// "too_many_headers":N,"version":N},"backplane_connected":B}` (keys in that
/// order).
///
/// Contract like `snprintf`: returns the length of the JSON in bytes, not
/// counting the terminating NUL. When that length is less than `cap`, the
/// JSON and a NUL are written to `buf`; otherwise nothing is written but a
/// NUL at `buf[0]` (when `cap > 0`), never a truncated document. So call
/// it with `(server, NULL, 0)` to learn the size, or retry with a buffer of
/// at least the returned length + 1 (and check again: the counters move
/// while clients are served, so the JSON can grow between two calls).
/// `buf` is owned by the caller.
///
/// Returns a negative `wshub_code` on failure: `WSHUB_ERR_INVALID_ARGUMENT`
/// (`server` NULL, or `buf` NULL with `cap > 0`), `WSHUB_ERR_RUNTIME` (the
/// JSON would be longer than `INT_MAX`).
///
/// # Safety
/// `server` must be NULL or a hub from `wshub_start()` not yet stopped;
/// `buf` must be NULL or point to `cap` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn wshub_stats_json(
    server: *const wshub_server,
    buf: *mut c_char,
    cap: usize,
) -> c_int {
    guard(code_as_int, || {
        // SAFETY: forwarded from the caller's contract on `server`.
        let hub = unsafe { hub_ref(server) }?;
        if buf.is_null() && cap > 0 {
            return Err(Failure::invalid_argument("buf is NULL but cap is not 0"));
        }
        let json = serde_json::to_string(&hub.server.stats())
            .map_err(|e| Failure::new(WSHUB_ERR_RUNTIME, format!("cannot encode stats: {e}")))?;
        let needed = c_int::try_from(json.len()).map_err(|_| {
            Failure::new(WSHUB_ERR_RUNTIME, "the stats JSON is longer than INT_MAX")
        })?;
        // SAFETY: `buf` has `cap` writable bytes by the caller's contract
        // (NULL only with `cap == 0`, checked above).
        unsafe { write_c_string(json.as_bytes(), buf, cap) };
        Ok(needed)
    })
}

/// Where `topic`'s stream stands, as a client's `connected`/`subscribed`
/// answer tells it: writes the `seq` of its newest publication (0 if none)
/// to `*seq` and its epoch, NUL-terminated, to `epoch` (`cap` bytes).
///
/// Returns the epoch's length like `snprintf` (when it is not less than
/// `cap` nothing but a NUL at `epoch[0]` is written, if `cap > 0`); 0
/// when the hub holds no such topic (nobody subscribed and no history;
/// `*seq` is then 0); or `WSHUB_ERR_INVALID_ARGUMENT` (NULL `server`,
/// `topic` or `seq`, NULL `epoch` with `cap > 0`), `WSHUB_ERR_INVALID_TOPIC`
/// (`topic` not UTF-8).
///
/// # Safety
/// `server` must be NULL or a live hub, `topic` NULL or NUL-terminated,
/// `epoch` NULL or `cap` writable bytes, `seq` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn wshub_stream(
    server: *const wshub_server,
    topic: *const c_char,
    epoch: *mut c_char,
    cap: usize,
    seq: *mut u64,
) -> c_int {
    guard(code_as_int, || {
        // SAFETY (two calls): forwarded from the caller's contract.
        let hub = unsafe { hub_ref(server) }?;
        let topic = unsafe { c_str(topic, "topic", WSHUB_ERR_INVALID_TOPIC) }?;
        let seq = non_null(seq, "seq")?;
        if epoch.is_null() && cap > 0 {
            return Err(Failure::invalid_argument("epoch is NULL but cap is not 0"));
        }
        let (name, newest) = hub.server.stream(topic).unwrap_or_default();
        // SAFETY: `seq` is non-NULL and writable by the caller's contract.
        unsafe { seq.write(newest) };
        // SAFETY: `epoch` has `cap` writable bytes by the caller's
        // contract (NULL only with `cap == 0`, checked above).
        unsafe { write_c_string(name.as_bytes(), epoch, cap) };
        // Epochs are a few hex digits: far below INT_MAX.
        Ok(c_int::try_from(name.len()).unwrap_or(c_int::MAX))
    })
}

/// Stops the hub and frees it: refuses further publications, sends close
/// code 1001 to every client, waits up to `shutdown_timeout` for them,
/// joins the hub's threads, and waits for callbacks still running (an
/// `authorize` that outlived `authorize_timeout`), so no callback runs
/// once it returns and their data may be freed. `server` is invalid
/// afterwards. NULL does nothing.
///
/// # Safety
/// `server` must be NULL or a hub from `wshub_start()` not yet stopped,
/// and no other thread may be using it or use it afterwards.
#[no_mangle]
pub unsafe extern "C" fn wshub_stop(server: *mut wshub_server) {
    if server.is_null() {
        return;
    }
    guard(
        |_| (),
        || {
            // SAFETY: `server` came from `Box::into_raw` in `wshub_start`
            // and the caller hands its ownership back here. Should `stop`
            // panic, unwinding drops the box, so it is freed either way.
            let hub = unsafe { Box::from_raw(server) };
            hub.server.stop();
            // After the hub is stopped: the subscription events of its
            // last clients are still delivered while it stops.
            hub.callbacks.close_and_wait();
            drop(hub);
            Ok(())
        },
    );
}

/// A description of the last failure of a wshub call on the calling
/// thread, or `""` when none has failed yet. Successful calls leave it
/// unchanged (like `errno`).
///
/// The string is owned by wshub and stays valid until a later wshub call
/// on the same thread fails, or the thread exits; copy it to keep it.
/// Never NULL.
#[no_mangle]
pub extern "C" fn wshub_last_error() -> *const c_char {
    let read = catch_unwind(|| {
        LAST_ERROR
            .try_with(|last| last.try_borrow().ok().map(|e| e.message.as_ptr()))
            .ok()
            .flatten()
    });
    read.ok().flatten().unwrap_or(c"".as_ptr())
}

/// The `wshub_code` of the last failure on the calling thread (the one
/// `wshub_last_error()` describes), or `WSHUB_OK` when none has failed.
#[no_mangle]
pub extern "C" fn wshub_last_error_code() -> c_int {
    let read = catch_unwind(|| {
        LAST_ERROR
            .try_with(|last| last.try_borrow().ok().map(|e| e.code as c_int))
            .ok()
            .flatten()
    });
    read.ok().flatten().unwrap_or(WSHUB_OK as c_int)
}

/// The library version, e.g. `"0.1.0"`: a static string owned by wshub.
#[no_mangle]
pub extern "C" fn wshub_version() -> *const c_char {
    const VERSION: &CStr =
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(version) => version,
            Err(_) => c"unknown",
        };
    VERSION.as_ptr()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last_error() -> String {
        // SAFETY: never NULL, valid until the next failure on this thread.
        unsafe { CStr::from_ptr(wshub_last_error()) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn panic_in_a_body_becomes_a_code_and_a_message() {
        let result = guard(code_as_int, || -> Result<c_int, Failure> {
            panic!("boom");
        });
        assert_eq!(result, WSHUB_ERR_PANIC as c_int);
        assert_eq!(wshub_last_error_code(), WSHUB_ERR_PANIC as c_int);
        assert!(last_error().contains("boom"), "{}", last_error());
    }

    #[test]
    fn null_arguments_are_rejected_with_invalid_argument() {
        let bad = WSHUB_ERR_INVALID_ARGUMENT as i64;
        unsafe {
            assert_eq!(
                i64::from(wshub_options_init(ptr::null_mut(), OPTIONS_SIZE)),
                bad
            );
            assert_eq!(
                wshub_broadcast(ptr::null_mut(), c"t".as_ptr(), c"1".as_ptr(), 1),
                bad
            );
            assert_eq!(
                i64::from(wshub_stats_json(ptr::null(), ptr::null_mut(), 0)),
                bad
            );
            assert_eq!(wshub_port(ptr::null()), 0);
            wshub_stop(ptr::null_mut());
        }
        assert!(last_error().contains("server is NULL"), "{}", last_error());
    }

    #[test]
    fn successful_calls_leave_the_last_error_alone() {
        unsafe {
            let mut opts = std::mem::MaybeUninit::<wshub_options>::uninit();
            assert_eq!(wshub_options_init(ptr::null_mut(), OPTIONS_SIZE), -1);
            assert_eq!(wshub_options_init(opts.as_mut_ptr(), OPTIONS_SIZE), 0);
        }
        assert_eq!(wshub_last_error_code(), WSHUB_ERR_INVALID_ARGUMENT as c_int);
        assert!(last_error().contains("out is NULL"));
    }

    #[test]
    fn options_default_matches_config_default() {
        let mut opts = std::mem::MaybeUninit::<wshub_options>::uninit();
        let config = unsafe {
            assert_eq!(wshub_options_init(opts.as_mut_ptr(), OPTIONS_SIZE), 0);
            config_from(opts.as_ptr(), &Arc::default()).unwrap()
        };
        let default = Config::default();
        assert_eq!(config.host, default.host);
        assert_eq!(config.path, default.path);
        assert_eq!(config.topics, default.topics);
        assert_eq!(config.ping_interval, default.ping_interval);
        assert_eq!(config.shutdown_timeout, default.shutdown_timeout);
        assert_eq!(config.max_message_bytes, default.max_message_bytes);
    }

    #[test]
    fn topic_list_is_read_up_to_its_terminator() {
        let list = [c"b".as_ptr(), c"a".as_ptr(), ptr::null()];
        let names = unsafe { string_set(list.as_ptr(), "topics") }.unwrap();
        assert_eq!(names, Some(["a".to_owned(), "b".to_owned()].into()));
    }

    #[test]
    fn bind_errors_map_address_in_use_apart() {
        let bind = |kind| Error::Bind {
            addr: "x".into(),
            source: io::Error::from(kind),
        };
        let code = |e| Failure::from(e).code;
        assert_eq!(code(bind(io::ErrorKind::AddrInUse)), WSHUB_ERR_ADDR_IN_USE);
        assert_eq!(code(bind(io::ErrorKind::PermissionDenied)), WSHUB_ERR_BIND);
    }

    #[test]
    fn version_is_the_crate_version() {
        let version = unsafe { CStr::from_ptr(wshub_version()) };
        assert_eq!(version.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    }
}
