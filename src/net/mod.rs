//! Networking: the accept loop, the HTTP handshake and endpoints, and one
//! connection's read and write paths. It sits on the core (topics,
//! subscriptions, the fan-out) and knows nothing of the backplane or of
//! the Python and C bindings.
//!
//! - [`listener`]: binding and the accept loop.
//! - [`http`]: the request head, handshake statuses, `/metrics`, `/healthz`.
//! - [`client_js`]: the browser client served at `<path>/client.js`.
//! - [`connection`]: one WebSocket client, from handshake to close.
//! - [`session`]: a client's queue and subscriptions, whatever carries
//!   them.
//! - [`inflate`]: a compressing client's messages inflated for tungstenite
//!   (permessage-deflate).
//! - [`socket`]: a client's socket, where tungstenite's frames and ours
//!   never interleave.
//! - [`writer`]: a client's queued frames written with vectored writes.
//! - [`sse`]: the feed as Server-Sent Events, for clients without
//!   WebSockets.
//! - [`stream`]: a client's bytes, plain TCP or TLS.
//! - [`tls`]: the certificate, its reload, and each TLS handshake.
//! - [`rate_limit`]: the token buckets for a client's messages.
//! - [`metrics`]: the stats snapshot in the Prometheus text format.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::core::config::Config;
use crate::core::hub::Hub;
use crate::core::token::TokenCheck;

pub(crate) mod client_js;
pub(crate) mod connection;
pub(crate) mod http;
pub(crate) mod inflate;
pub(crate) mod listener;
pub(crate) mod metrics;
pub(crate) mod rate_limit;
pub(crate) mod session;
pub(crate) mod socket;
pub(crate) mod sse;
pub(crate) mod stream;
pub(crate) mod tls;
pub(crate) mod writer;

/// What every task of one hub shares.
pub(crate) struct Shared {
    pub config: Config,
    pub hub: Arc<Hub>,
    /// Cancelled once `stop()` has closed the hub and the fan-out has
    /// delivered what was accepted before; every task selects on it.
    pub shutdown: CancellationToken,
    /// Every connection task, so `stop()` can wait for them.
    pub tracker: TaskTracker,
    /// Source of connection ids.
    pub next_id: AtomicU64,
    /// The built-in token check, when `jwt_key` is set.
    pub tokens: Option<TokenCheck>,
    /// TLS, when `certfile` is set.
    pub tls: Option<tls::Tls>,
}

impl Shared {
    pub fn next_conn_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}
