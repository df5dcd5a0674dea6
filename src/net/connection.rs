//! One client, from TCP accept to the end: the HTTP upgrade, the ack, then
//! a loop that writes what the fan-out queued, answers what the client
//! sends, and pings it when it goes quiet.
//!
//! Reading and writing share one task: the writer drains the whole outbox
//! and flushes once, so a burst of publications costs one `write` per
//! client rather than one per frame.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::{interval_at, Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Bytes, Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::core::authorize::{parse_request, Authorization, Authorizer};
use crate::core::config::Config;
use crate::core::outbox::{Closed, FrameEncoding};
use crate::core::stats::{Counters, Rejection};
use crate::core::token::{Claims, Refusal, SUBPROTOCOL};
use crate::net::http::{self, Route};
use crate::net::inflate::InflatingStream;
use crate::net::rate_limit::{TokenBucket, Verdict};
use crate::net::session::Session;
use crate::net::socket::{ClientSocket, Ws};
use crate::net::sse;
use crate::net::stream::ClientStream;
use crate::net::tls::Accepted;
use crate::net::Shared;
use crate::protocol::deflate;
use crate::protocol::{self, ClientMessage, ErrorCode, ProtocolError};

/// The log target (a Python logger name, `wshub.connection`, once
/// through pyo3-log) this module's records have always had, kept apart from
/// the module's path so that moving code does not rename loggers.
const LOG_TARGET: &str = "wshub::connection";

/// Bytes tungstenite reserves up front for reading. Clients send little
/// (pings, subscribe lists), and this is paid by every idle connection;
/// larger messages grow the buffer as needed.
const READ_BUFFER_BYTES: usize = 256;

/// Bytes tungstenite collects before it writes to the socket on its own.
/// It only writes control frames now (publications and replies go through
/// `writer`), so nothing is worth holding back.
const WRITE_BUFFER_BYTES: usize = 0;

/// The close code of a connection whose token expired (`jwt_key`) and
/// was not refreshed in time: in the range RFC 6455 leaves to
/// applications, so that a client tells it from the hub's other closes.
const TOKEN_EXPIRED: u16 = 4001;

/// How long a closing connection waits for the client's close frame (or
/// for its socket to take ours) before dropping the TCP connection.
const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);

/// Serves one accepted TCP connection until it ends.
pub(crate) async fn serve(shared: Arc<Shared>, stream: TcpStream, peer: SocketAddr) {
    // Every connection's task is as large as the largest state it can be
    // in, and the handshake's (HTTP parsing, authorize, tungstenite's
    // handshake machine) is several KiB. Boxed, it lives only while the
    // handshake runs, so an idle connection holds just what `run` needs.
    let Some((mut conn, slot)) = Box::pin(open(shared, stream, peer)).await else {
        return;
    };
    let reason = conn.run().await;
    conn.finish();
    drop(slot);
    tracing::debug!(target: LOG_TARGET, %peer, id = conn.session.id, reason, "connection closed");
}

/// Reads the request head, routes and answers a plain HTTP request, or
/// checks the WebSocket upgrade and returns the open connection (ack
/// queued, topics subscribed).
async fn open(
    shared: Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
) -> Option<(Connection, ConnectionSlot)> {
    // One deadline for the whole handshake (TLS, reading the head,
    // authorize, the upgrade), and every phase gives up at once when the
    // hub stops.
    let deadline = Instant::now() + shared.config.handshake_timeout;
    let counters = &shared.hub.counters;
    let mut stream = secure(&shared, deadline, tcp, peer).await?;
    let mut received = false;
    let limits = http::HeadLimits {
        max_bytes: shared.config.max_handshake_bytes,
        max_headers: shared.config.max_headers,
    };
    let read = http::read_head(&mut stream, limits, &mut received);
    let head = match before(&shared, deadline, read).await {
        Some(Ok(head)) => head,
        Some(Err(http::ReadError::Malformed(why))) => {
            counters.reject(why.rejection());
            tracing::debug!(target: LOG_TARGET, %peer, reason = why.rejection().as_str(), "handshake refused: malformed request");
            before(&shared, deadline, http::refuse_malformed(stream, why)).await;
            return None;
        }
        Some(Err(http::ReadError::Io)) => {
            counters.reject(Rejection::Invalid);
            return None;
        }
        None => {
            // Timed out (or the hub is stopping): a client that sent part
            // of a request is told why it is being dropped.
            if received && !shared.shutdown.is_cancelled() {
                http::refuse_timed_out(&mut stream);
            }
            counters.reject(Rejection::Timeout);
            tracing::debug!(target: LOG_TARGET, %peer, "handshake timed out");
            return None;
        }
    };
    let sse = match head.route(&shared.config.path) {
        Route::Upgrade => false,
        Route::Sse => true,
        route => {
            if route == Route::NotFound {
                counters.reject(Rejection::Path);
            }
            let running = !shared.hub.is_closed();
            let served =
                http::respond(stream, route, &head.request, running, || shared.hub.stats());
            before(&shared, deadline, served).await;
            return None;
        }
    };
    let mut response = match head.upgrade_response() {
        Ok(response) => response,
        // An event stream is a plain GET: no upgrade to check.
        Err(_) if sse => Response::default(),
        Err(why) => {
            counters.reject(why.rejection());
            tracing::debug!(target: LOG_TARGET, %peer, reason = why.rejection().as_str(), "handshake refused: not a valid upgrade");
            before(&shared, deadline, http::refuse_malformed(stream, why)).await;
            return None;
        }
    };
    select_subprotocol(&head.request, &mut response);
    let encoding = negotiate_deflate(&shared.config, &head.request, &mut response);
    let claims = match &shared.tokens {
        None => None,
        Some(check) => {
            let found = parse_request(head.raw(), peer, shared.config.max_headers)
                .and_then(|request| check.find(&request));
            match found.ok_or(Refusal::Missing).and_then(|t| check.verify(&t)) {
                Ok(claims) => Some(claims),
                Err(why) => {
                    counters.reject(why.rejection());
                    tracing::debug!(target: LOG_TARGET, %peer, reason = why.as_str(), "handshake refused: token");
                    before(&shared, deadline, http::refuse(stream, 401, why.message())).await;
                    return None;
                }
            }
        }
    };
    let authorized = match &shared.config.authorize {
        None => None,
        Some(authorizer) => {
            let check = authorize(&shared, head.raw(), peer, authorizer);
            match before(&shared, deadline, check).await {
                Some(Ok(granted)) => granted,
                Some(Err((status, why))) => {
                    counters.reject(Rejection::Auth);
                    tracing::warn!(target: LOG_TARGET, %peer, status, why, "handshake rejected by authorize");
                    before(&shared, deadline, http::refuse(stream, status, why)).await;
                    return None;
                }
                None => {
                    counters.reject(Rejection::Timeout);
                    return None;
                }
            }
        }
    };
    if sse {
        let granted = both(claims.as_ref().and_then(|c| c.topics.clone()), authorized);
        match admit(&shared, &head.request) {
            Ok(slot) => {
                let header = |name| {
                    let value = head.request.headers().get(name)?;
                    value.to_str().ok().map(str::to_owned)
                };
                let admitted = sse::Admitted {
                    query: head.request.uri().query().map(str::to_owned),
                    last_event_id: header("last-event-id"),
                    origin: header("origin"),
                    granted,
                    expires: claims.as_ref().map(Claims::remaining),
                };
                sse::serve(Arc::clone(&shared), stream, admitted).await;
                drop(slot);
            }
            Err((status, why)) => {
                before(&shared, deadline, http::refuse(stream, status, why)).await;
            }
        }
        return None;
    }
    let upgraded = match admit(&shared, &head.request) {
        Ok(slot) => {
            let query = head.request.uri().query().map(str::to_owned);
            let upgrade = upgrade(&shared, stream, &response, head.into_rest(), encoding);
            match before(&shared, deadline, upgrade).await {
                Some(Ok(ws)) => (ws, query, slot),
                Some(Err(error)) => {
                    counters.reject(Rejection::Invalid);
                    tracing::debug!(target: LOG_TARGET, %peer, %error, "handshake failed");
                    return None;
                }
                None => {
                    counters.reject(Rejection::Timeout);
                    tracing::debug!(target: LOG_TARGET, %peer, "handshake timed out");
                    return None;
                }
            }
        }
        Err((status, why)) => {
            before(&shared, deadline, http::refuse(stream, status, why)).await;
            return None;
        }
    };
    let (ws, query, mut slot) = upgraded;
    slot.set_encoding(encoding);
    let granted = both(
        claims.as_ref().and_then(|c| c.topics.clone()),
        authorized.clone(),
    );
    let token = claims.map(|claims| {
        Box::new(Token {
            sub: claims.sub.clone(),
            authorized,
            expiry: Box::pin(tokio::time::sleep(claims.remaining())),
        })
    });
    Counters::add(&shared.hub.counters.connections_opened, 1);
    tracing::debug!(target: LOG_TARGET, %peer, "connection opened");
    let mut conn = Connection {
        session: Session::new(&shared, granted, encoding),
        token,
        socket: ClientSocket::new(ws),
        last_heard: Instant::now(),
        inbound: TokenBucket::new(
            shared.config.rate_limit,
            shared.config.rate_burst,
            std::time::Instant::now(),
        ),
        pings: TokenBucket::new(
            shared.config.rate_limit,
            shared.config.rate_burst,
            std::time::Instant::now(),
        ),
    };
    conn.session.start(query.as_deref(), None);
    Some((conn, slot))
}

/// Runs `work` until it finishes, `deadline` passes or the hub stops;
/// `None` in the last two cases.
async fn before<F: std::future::Future>(
    shared: &Shared,
    deadline: Instant,
    work: F,
) -> Option<F::Output> {
    tokio::select! {
        () = shared.shutdown.cancelled() => None,
        r = tokio::time::timeout_at(deadline, work) => r.ok(),
    }
}

/// Runs the host's check on the request head, off the I/O threads and
/// within `authorize_timeout`. `Ok` carries the topics granted (`None`:
/// no restriction); `Err` the status to refuse with and why.
async fn authorize(
    shared: &Shared,
    head: &[u8],
    peer: SocketAddr,
    authorizer: &Authorizer,
) -> Result<Option<BTreeSet<String>>, (u16, &'static str)> {
    let request =
        parse_request(head, peer, shared.config.max_headers).ok_or((400, "malformed request"))?;
    let check = Arc::clone(&authorizer.0);
    let decision = tokio::task::spawn_blocking(move || check(&request));
    match tokio::time::timeout(shared.config.authorize_timeout, decision).await {
        Ok(Ok(Authorization::Allow)) => Ok(None),
        Ok(Ok(Authorization::AllowTopics(topics))) => Ok(Some(topics)),
        Ok(Ok(Authorization::Deny(status))) => {
            Err((Authorization::deny_status(status), "not authorized"))
        }
        Ok(Err(_)) => Err((403, "authorize failed")),
        Err(_) => Err((503, "authorize timed out")),
    }
}

/// Holds one of the `max_connections` places until dropped.
struct ConnectionSlot {
    shared: Arc<Shared>,
    /// Counted in `deflate_clients` (the client negotiated
    /// permessage-deflate) until the slot is freed.
    encoding: FrameEncoding,
}

impl ConnectionSlot {
    fn try_take(shared: &Arc<Shared>) -> Option<Self> {
        let max = shared.config.max_connections as u64;
        let connections = &shared.hub.counters.connections;
        connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(ConnectionSlot {
            shared: Arc::clone(shared),
            encoding: FrameEncoding::Plain,
        })
    }

    /// Counts the connection in `deflate_clients` when it negotiated
    /// compression.
    fn set_encoding(&mut self, encoding: FrameEncoding) {
        if encoding == FrameEncoding::Deflate && self.encoding == FrameEncoding::Plain {
            Counters::add(&self.shared.hub.counters.deflate_clients, 1);
        }
        self.encoding = encoding;
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let counters = &self.shared.hub.counters;
        if self.encoding == FrameEncoding::Deflate {
            counters.deflate_clients.fetch_sub(1, Ordering::AcqRel);
        }
        counters.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

fn ws_config(max_message_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_message_size(Some(max_message_bytes))
        .max_frame_size(Some(max_message_bytes))
}

/// The checks of the hub's own rules on a valid upgrade: 403 for an origin
/// not allowed, 503 over `max_connections`. `Ok` holds the connection's
/// slot; `Err` the status to refuse with and why.
fn admit(shared: &Arc<Shared>, request: &Request) -> Result<ConnectionSlot, (u16, &'static str)> {
    let counters = &shared.hub.counters;
    if !origin_allowed(&shared.config, request) {
        tracing::warn!(target: LOG_TARGET, origin = ?request.headers().get("origin"), "handshake rejected: origin not allowed");
        counters.reject(Rejection::Origin);
        return Err((403, "origin not allowed"));
    }
    ConnectionSlot::try_take(shared).ok_or_else(|| {
        tracing::warn!(target: LOG_TARGET, "handshake rejected: max_connections reached");
        counters.reject(Rejection::Capacity);
        (503, "too many connections")
    })
}

/// The client's stream: the TCP connection itself, or TLS over it once
/// the TLS handshake (within the handshake deadline) succeeded. `None`
/// when it failed: counted, and the connection dropped; a client that
/// spoke plain HTTP to the TLS port is first told so in plain HTTP.
async fn secure(
    shared: &Shared,
    deadline: Instant,
    tcp: TcpStream,
    peer: SocketAddr,
) -> Option<ClientStream> {
    let Some(tls) = &shared.tls else {
        return Some(ClientStream::Plain(tcp));
    };
    let counters = &shared.hub.counters;
    match before(shared, deadline, tls.accept(tcp)).await {
        Some(Accepted::Tls(stream)) => Some(ClientStream::Tls(stream)),
        Some(Accepted::NotTls(tcp)) => {
            counters.reject(Rejection::Tls);
            tracing::debug!(target: LOG_TARGET, %peer, "TLS handshake failed: not TLS");
            let refusal = http::refuse(ClientStream::Plain(tcp), 400, NOT_TLS);
            before(shared, deadline, refusal).await;
            None
        }
        Some(Accepted::Failed(error)) => {
            counters.reject(Rejection::Tls);
            tracing::debug!(target: LOG_TARGET, %peer, %error, "TLS handshake failed");
            None
        }
        None => {
            counters.reject(Rejection::Timeout);
            tracing::debug!(target: LOG_TARGET, %peer, "TLS handshake timed out");
            None
        }
    }
}

/// The plain-HTTP answer to a client that is not speaking TLS to a hub
/// that serves only TLS.
const NOT_TLS: &str = "this port serves TLS only: use https:// or wss://";

/// Answers 101 and hands the socket (and any bytes the client sent after
/// its request) to tungstenite.
async fn upgrade(
    shared: &Shared,
    mut stream: ClientStream,
    response: &Response,
    rest: Vec<u8>,
    encoding: FrameEncoding,
) -> std::io::Result<Ws> {
    http::switch_protocols(&mut stream, response).await?;
    let max = shared.config.max_message_bytes;
    let (stream, rest) = InflatingStream::new(stream, encoding, rest, max);
    let config = ws_config(max);
    Ok(WebSocketStream::from_partially_read(stream, rest, Role::Server, Some(config)).await)
}

/// Browsers always send `Origin`; a request without one is not a page on
/// another site riding on the visitor's cookies, so only present origins
/// are checked.
fn origin_allowed(config: &Config, request: &Request) -> bool {
    let (Some(allowed), Some(origin)) = (&config.allowed_origins, request.headers().get("origin"))
    else {
        return true;
    };
    origin.to_str().is_ok_and(|o| allowed.contains(o))
}

/// The client's token, with `jwt_key`: who it is and until when.
struct Token {
    /// Its subject: a refreshed token must have the same.
    sub: Option<String>,
    /// What `authorize` granted at the handshake (a refreshed token's
    /// `topics` claim is combined with it again).
    authorized: Option<BTreeSet<String>>,
    /// Fires when the token expires.
    expiry: std::pin::Pin<Box<tokio::time::Sleep>>,
}

/// Topics allowed by two grants (`None`: no restriction).
fn both(a: Option<BTreeSet<String>>, b: Option<BTreeSet<String>>) -> Option<BTreeSet<String>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.intersection(&b).cloned().collect()),
        (a, b) => a.or(b),
    }
}

/// Answers `Sec-WebSocket-Protocol: wshub` to a client that offers it: a
/// browser sending its token as a subprotocol (`bearer.<token>`) must
/// offer one the server selects, or it drops the connection.
fn select_subprotocol(request: &Request, response: &mut Response) {
    let offered = request
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == SUBPROTOCOL);
    if offered {
        response.headers_mut().insert(
            "sec-websocket-protocol",
            tokio_tungstenite::tungstenite::http::HeaderValue::from_static(SUBPROTOCOL),
        );
    }
}

/// With `compression` on, answers an acceptable permessage-deflate offer
/// (see [`deflate::accepts`]); an invalid or unacceptable one is declined
/// by leaving the extension out of the answer, and the connection goes on
/// uncompressed (RFC 7692 section 5).
fn negotiate_deflate(config: &Config, request: &Request, response: &mut Response) -> FrameEncoding {
    if !config.compression {
        return FrameEncoding::Plain;
    }
    let offers = request
        .headers()
        .get_all("sec-websocket-extensions")
        .iter()
        .filter_map(|v| v.to_str().ok());
    if !deflate::accepts(offers) {
        return FrameEncoding::Plain;
    }
    response.headers_mut().insert(
        "sec-websocket-extensions",
        tokio_tungstenite::tungstenite::http::HeaderValue::from_static(deflate::RESPONSE),
    );
    FrameEncoding::Deflate
}

/// Resolves when `token` expires; never without one.
async fn expired(token: &mut Option<Box<Token>>) {
    match token {
        Some(token) => token.expiry.as_mut().await,
        None => std::future::pending().await,
    }
}

struct Connection {
    /// Its queue and topics, and what it may subscribe to.
    session: Session,
    /// With `jwt_key`, the client's token (boxed: an idle connection
    /// without one pays a pointer).
    token: Option<Box<Token>>,
    /// The only way to the client's socket.
    socket: ClientSocket,
    /// When the client last sent anything; drives the ping timeout.
    last_heard: Instant,
    /// Limits how fast the client's messages are handled.
    inbound: TokenBucket,
    /// The same limit, for pings only (see `admit`).
    pings: TokenBucket,
}

/// How a connection ends, for the log.
type Reason = &'static str;

impl Connection {
    async fn run(&mut self) -> Reason {
        let interval = self.session.shared.config.ping_interval;
        let silence_limit = interval + self.session.shared.config.ping_timeout;
        let mut ping = interval_at(Instant::now() + interval, interval);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let shutdown = self.session.shared.shutdown.clone();
        let outbox = Arc::clone(&self.session.outbox);
        loop {
            tokio::select! {
                biased;
                // The ending paths are boxed: their futures (close
                // handshakes, timeouts) would otherwise be part of every
                // idle connection's state.
                () = shutdown.cancelled() => {
                    return Box::pin(self.shut_down()).await;
                }
                () = outbox.ready() => {
                    let closed = outbox.drain(self.socket.pending_mut());
                    if !self.socket.is_empty() && !self.write().await {
                        return "write failed";
                    }
                    if let Some(why) = closed {
                        return Box::pin(self.close_for(why)).await;
                    }
                }
                message = self.socket.next(&outbox, &self.session.shared.hub.counters) => {
                    self.last_heard = Instant::now();
                    match message {
                        Some(Ok(message)) => {
                            if let Err(reason) = self.admit(message) {
                                return Box::pin(self.close(CloseCode::Policy, reason)).await;
                            }
                        }
                        Some(Err(error)) => return Box::pin(self.fail(error)).await,
                        None => return "closed by client",
                    }
                }
                () = expired(&mut self.token) => {
                    Counters::add(&self.session.shared.hub.counters.token_expired_closes, 1);
                    let code = CloseCode::from(TOKEN_EXPIRED);
                    return Box::pin(self.close(code, "token expired")).await;
                }
                _ = ping.tick() => {
                    if self.last_heard.elapsed() >= silence_limit {
                        return Box::pin(self.close(CloseCode::Error, "ping timeout")).await;
                    }
                    let ping = self.socket.send(Message::Ping(Bytes::new()), &outbox, &self.session.shared.hub.counters);
                    let ping = Box::pin(tokio::time::timeout(interval, ping));
                    if ping.await.map_or(true, |r| r.is_err()) {
                        return "ping failed";
                    }
                }
            }
        }
    }

    /// Writes every pending frame; gives up as soon as the outbox closes
    /// (slow consumer: the close path then finishes a half-written frame
    /// if it can). Returns false when the connection is unusable.
    async fn write(&mut self) -> bool {
        let counters = &self.session.shared.hub.counters;
        let write_all = self.socket.write_pending(&self.session.outbox, counters);
        tokio::select! {
            r = write_all => r.is_ok(),
            () = self.session.outbox.closed() => true,
        }
    }

    /// Applies the rate limit, then handles the message. Pongs and close
    /// frames are free: they answer us. Pings (protocol `ping` messages
    /// and WebSocket ping frames) take their tokens from a bucket of their
    /// own, so a client that keeps alive by pinging is never refused a
    /// subscribe for it, and a ping flood is still bounded.
    fn admit(&mut self, message: Message) -> Result<(), Reason> {
        let parsed = match &message {
            Message::Pong(_) | Message::Close(_) => return Ok(()),
            Message::Text(text) => Some(protocol::parse_client_message(text)),
            _ => None,
        };
        let is_ping = matches!(message, Message::Ping(_))
            || matches!(parsed, Some(Ok(ClientMessage::Ping { .. })));
        let bucket = if is_ping {
            &mut self.pings
        } else {
            &mut self.inbound
        };
        match bucket.check(std::time::Instant::now()) {
            Verdict::Allow => self.handle(message, parsed),
            // tungstenite has answered a control ping already; only its
            // count matters.
            Verdict::Limited if matches!(message, Message::Ping(_)) => {}
            Verdict::Limited => self.reply(protocol::error_frame(&ProtocolError {
                code: ErrorCode::RateLimited,
                message: format!(
                    "more than {} messages per second; message dropped",
                    self.session.shared.config.rate_limit
                ),
            })),
            Verdict::Exceeded => return Err("rate limit exceeded"),
        }
        Ok(())
    }

    /// Handles an admitted message; `parsed` is a text message's parse.
    fn handle(&mut self, message: Message, parsed: Option<Result<ClientMessage, ProtocolError>>) {
        match (message, parsed) {
            (Message::Text(_), Some(Ok(request))) => self.answer(request),
            (Message::Text(_), Some(Err(error))) => self.reply(protocol::error_frame(&error)),
            (Message::Text(_), None) => {}
            (Message::Binary(_), _) => self.reply(protocol::error_frame(&ProtocolError {
                code: ErrorCode::BinaryNotSupported,
                message: "send JSON in text frames".to_owned(),
            })),
            // tungstenite answers pings and close frames itself.
            (Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_), _) => {}
        }
    }

    fn answer(&mut self, request: ClientMessage) {
        match request {
            ClientMessage::Ping { id } => self.reply(protocol::pong_frame(id.as_deref())),
            ClientMessage::Subscribe { topics, since } => self.session.subscribe(topics, &since),
            ClientMessage::Refresh { token } => self.refresh(&token),
            ClientMessage::Unsubscribe(names) => self.session.unsubscribe(names),
        }
    }

    /// Replaces the client's token with a newer one: its expiry and its
    /// `topics` claim apply from now on (subscriptions it no longer allows
    /// end), its `sub` must be the current one's. A token the hub refuses
    /// changes nothing: the connection keeps its current token, and is
    /// closed when that one expires.
    fn refresh(&mut self, token: &str) {
        let refused = |why: &str| {
            protocol::error_frame(&ProtocolError {
                code: ErrorCode::InvalidToken,
                message: why.to_owned(),
            })
        };
        let (Some(check), Some(current)) = (&self.session.shared.tokens, self.token.as_mut())
        else {
            self.reply(refused("this hub checks no tokens (jwt_key is not set)"));
            return;
        };
        let claims: Claims = match check.verify(token) {
            Ok(claims) if claims.sub == current.sub => claims,
            Ok(_) => {
                self.reply(refused("invalid token: its sub is not the connection's"));
                return;
            }
            Err(why) => {
                self.reply(refused(why.message()));
                return;
            }
        };
        current
            .expiry
            .as_mut()
            .reset(Instant::now() + claims.remaining());
        let granted = both(claims.topics.clone(), current.authorized.clone());
        self.session.restrict(granted);
        Counters::add(&self.session.shared.hub.counters.tokens_refreshed, 1);
        self.reply(protocol::refreshed_frame(
            claims.exp,
            &self.session.subscriptions,
        ));
    }

    fn reply(&self, text: String) {
        self.session.reply(text);
    }

    /// The hub is stopping: write what is still queued (publications
    /// accepted before `stop()`), then say goodbye with 1001.
    async fn shut_down(&mut self) -> Reason {
        if self
            .session
            .outbox
            .drain(self.socket.pending_mut())
            .is_none()
            && !self.socket.is_empty()
        {
            match tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, self.write()).await {
                Ok(true) => {}
                _ => return "write failed while stopping",
            }
        }
        self.close(CloseCode::Away, "server shutting down").await
    }

    async fn close_for(&mut self, why: Closed) -> Reason {
        match why {
            Closed::SlowConsumer => {
                tracing::warn!(target: LOG_TARGET, id = self.session.id, "closing slow consumer");
                self.close(CloseCode::Policy, "slow consumer").await
            }
            Closed::Gone => "closed",
        }
    }

    /// Maps a read error to the close code protocol v1 prescribes.
    async fn fail(&mut self, error: WsError) -> Reason {
        match error {
            WsError::Capacity(_) => self.close(CloseCode::Size, "message too big").await,
            WsError::Utf8(_) => self.close(CloseCode::Invalid, "invalid UTF-8").await,
            WsError::Protocol(_) => self.close(CloseCode::Protocol, "protocol error").await,
            WsError::ConnectionClosed | WsError::AlreadyClosed => "closed by client",
            _ => "connection error",
        }
    }

    /// Sends a close frame and waits briefly for the client's answer, so
    /// the client reads our frame before the TCP connection goes away.
    async fn close(&mut self, code: CloseCode, reason: &'static str) -> Reason {
        // Leave every topic first: the client gets nothing more, and
        // `broadcast` stops counting it while the goodbye is under way.
        self.session.leave_topics();
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let socket = &mut self.socket;
        let outbox = &*self.session.outbox;
        let counters = &self.session.shared.hub.counters;
        let handshake = async move {
            // `send` finishes a frame cut short by a slow-consumer close
            // first, or the close frame would land inside it.
            socket
                .send(Message::Close(Some(frame)), outbox, counters)
                .await?;
            while socket
                .next(outbox, counters)
                .await
                .is_some_and(|m| m.is_ok())
            {}
            Ok::<(), WsError>(())
        };
        let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, handshake).await;
        reason
    }

    /// Leaves every topic and releases what the connection held.
    fn finish(&mut self) {
        self.session.finish(self.socket.pending_publications());
    }
}
