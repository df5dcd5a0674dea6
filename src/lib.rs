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
//! - [`authorize`]: the host's optional check of each handshake.
//! - [`config`]: options, defaults and their validation.
//! - [`error`]: the core's one error type.
//! - [`protocol`]: topic names, client messages, server frame text.
//! - [`hub`]: topics, subscribers, the publish queue and the fan-out.
//! - [`backplane`]: the optional Redis link that lets hubs in several
//!   processes or hosts share one feed (`docs/scaling.md`).
//! - [`outbox`]: one client's bounded outbound queue, frames encoded once.
//! - [`writer`]: writes a client's queued frames with vectored writes.
//! - [`rate_limit`]: the per-connection token bucket for inbound messages.
//! - `connection`: one client's handshake and read/write loop.
//! - [`server`]: binding, the runtime, the accept loop, shutdown.
//! - [`stats`]: counters and the `stats()` snapshot.
//! - [`subscription_events`]: first/last subscriber notifications to the host.
//! - [`metrics`]: the snapshot in the Prometheus text format.
//! - `http`: `GET /metrics` and `GET /healthz` on the hub's port.
//! - `python` (feature `python`): the Python module `wshub._native`.
//! - [`ffi`]: the C ABI declared in `include/wshub.h` (`docs/c-api.md`).

pub mod authorize;
pub mod backplane;
pub mod config;
mod connection;
pub mod error;
pub mod ffi;
mod http;
pub mod hub;
pub mod metrics;
pub mod outbox;
pub mod protocol;
pub mod rate_limit;
pub mod server;
pub mod stats;
pub mod subscription_events;
pub mod writer;

#[cfg(feature = "python")]
mod python;

pub use config::{Config, SlowClientPolicy, TopicPolicy};
pub use error::Error;
pub use server::Server;
pub use stats::Stats;
