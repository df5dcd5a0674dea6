//! wshub: a WebSocket pub/sub hub that runs inside another program's
//! process (a Python web app, or any host that can call C).
//!
//! The host calls [`Server::start`] once and then [`Server::broadcast`]
//! from any thread; browsers connected to `ws://host:port/api/ws?topics=...`
//! receive every publication on their topics (protocol in
//! `docs/protocol.md`). The server runs on its own tokio runtime, so the
//! host's threads never carry the fan-out.
//!
//! # Layout
//! Layers, each importing only those listed before it (checked by
//! `tests/test_layers.py`, part of `make test`):
//!
//! 1. [`protocol`]: the wire format. Topic names, client messages, the JSON
//!    of every server frame and the WebSocket frames they travel in; no I/O.
//! 2. `core`: topics, subscriptions, publications and the fan-out, with
//!    the options, counters and errors; no sockets, Redis, Python or C.
//! 3. `net` (on the core): the accept loop, handshake, HTTP endpoints and
//!    one connection's read and write paths.
//!    `scale` (on the core, beside `net`): backplane engines (Redis)
//!    behind the interface the core defines.
//! 4. `server`: [`Server`], the one entry point, which puts the runtime,
//!    the hub, the listener and the backplane together.
//! 5. `bindings`: thin facades over that API, the Python module
//!    `wshub._native` (feature `python`) and the C ABI of
//!    `include/wshub.h` ([`ffi`], `docs/c-api.md`).

mod bindings;
mod core;
mod net;
pub mod protocol;
mod scale;
mod server;

pub use crate::bindings::ffi;
pub use crate::core::authorize::{Authorization, AuthorizeFn, Authorizer, HandshakeRequest};
pub use crate::core::config::{Config, SlowClientPolicy, TlsFiles, TopicPolicy};
pub use crate::core::error::Error;
pub use crate::core::stats::Stats;
pub use crate::core::subscription_events::{ListenerFn, SubscriptionListener};
pub use crate::server::Server;
