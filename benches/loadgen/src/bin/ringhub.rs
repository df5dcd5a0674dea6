//! `ring-ref`, the benchmarks' minimal latency reference: a small pub/sub hub
//! with one bounded ring of pre-framed publications per topic and a cursor
//! per subscriber. A publication is framed once, appended to its topic's
//! ring and announced on the topic's `watch` channel; every subscriber task
//! that wakes up writes its whole backlog (from its cursor to the ring's
//! head) with one `writev`. There is no queue per connection: an idle or
//! stuck subscriber costs a cursor and its socket. A subscriber whose cursor
//! falls out of the ring (more than `--ring` publications behind) is closed
//! with 1008 `slow consumer`.
//!
//! No protocol beyond the benchmarks' (`benches/servers/_common.py`): the
//! upgrade on `--path` with `?topics=T` (one topic per connection), the ack
//! `{"type":"connected","topics":[T],"rejected":[]}` once the cursor is set,
//! then the publications' payloads `{"t":<ns>,"seq":N,"pad":"x..."}` as
//! text frames. Frames from clients are read and discarded; a connection
//! ends when its client closes it.
//!
//! The publisher is a thread in the process, the same loop as
//! `benches/servers/rust_publisher.rs` (the `wshub-rust` row): same CLI
//! (`--port --topic --payload --mode {closed,rate,burst} --window --rate
//! --count --worker-threads`), same payload and stamping, `listening` /
//! `stats` / `stopped` lines on stdout, `go` / `stop` on stdin, and in closed
//! mode the loadgen's UDP feedback on 127.0.0.1:<port>.
//!
//! Built with the loadgen (`benches/setup.sh`); run by
//! `benches/run.py --servers ring-ref`.

#[path = "../frame.rs"]
#[allow(dead_code)]
mod frame;

use std::collections::HashMap;
use std::io::{BufRead, IoSlice};
use std::net::{Ipv4Addr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, ValueEnum};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// Most bytes of an upgrade request (request line and headers) a client may
/// send before its handshake is refused: bounds the memory a client holds
/// before it subscribes.
const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// Most headers httparse parses in an upgrade request.
const MAX_HEADERS: usize = 32;
/// How long a client may take to send its upgrade request.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most topics the hub keeps (each has a ring): bounds what clients asking
/// for new topic names can make it allocate.
const MAX_TOPICS: usize = 1024;
/// Longest topic name accepted.
const MAX_TOPIC_LEN: usize = 128;
/// Bytes read at a time from a client (its frames are discarded): part of
/// every connection's task, so kept small.
const CLIENT_READ_CHUNK: usize = 64;
/// How long the closed-loop publisher blocks on the feedback socket before
/// it looks at the stop flag again.
const FEEDBACK_POLL: Duration = Duration::from_millis(50);
/// Close code and reason for a subscriber that fell out of the ring.
const SLOW_CONSUMER_CODE: u16 = 1008;
const SLOW_CONSUMER_REASON: &[u8] = b"slow consumer";

#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
enum Mode {
    Closed,
    Rate,
    Burst,
}

#[derive(Parser, Debug)]
#[command(
    about = "ring-ref: minimal ring-per-topic pub/sub hub (the benchmarks' latency reference)"
)]
struct Args {
    /// TCP port for WebSocket clients (0 = any free one); in closed mode the
    /// feedback is read on the UDP port with the same number.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// The topic the publisher thread publishes to.
    #[arg(long, default_value = "bench")]
    topic: String,
    /// Bytes of the published JSON (approximately).
    #[arg(long, default_value_t = 100)]
    payload: usize,
    #[arg(long, value_enum, default_value_t = Mode::Closed)]
    mode: Mode,
    /// Closed mode: publications in flight (published, not yet received by
    /// every subscriber).
    #[arg(long, default_value_t = 64)]
    window: u64,
    /// Rate mode: publications/s.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Stop after this many publications (0 = no limit; burst needs one).
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// Tokio worker threads (1 = a current-thread runtime).
    #[arg(long, default_value_t = 1)]
    worker_threads: usize,
    /// Publications kept per topic; a subscriber further behind is closed.
    #[arg(long, default_value_t = 1024)]
    ring: usize,
    /// The WebSocket path; other paths get HTTP 404.
    #[arg(long, default_value = "/api/ws")]
    path: String,
}

/// One publication, framed once and shared by every subscriber that writes it.
type Framed = Arc<[u8]>;

/// The last `slots.len()` publications of a topic: seq `s` (from 1) sits in
/// slot `(s - 1) % slots.len()`.
struct Ring {
    slots: Vec<Option<Framed>>,
    head: u64,
}

struct Topic {
    ring: RwLock<Ring>,
    /// The ring's head after each append: subscribers wait on it.
    head: watch::Sender<u64>,
}

/// Why a subscriber's backlog could not be taken.
struct FellBehind;

impl Topic {
    fn new(capacity: usize) -> Self {
        Topic {
            ring: RwLock::new(Ring {
                slots: vec![None; capacity.max(1)],
                head: 0,
            }),
            head: watch::channel(0).0,
        }
    }

    fn publish(&self, frame: Framed) -> u64 {
        let head = {
            let mut ring = self.ring.write().unwrap_or_else(PoisonError::into_inner);
            let cap = ring.slots.len() as u64;
            let slot = usize::try_from(ring.head % cap).unwrap_or(0);
            ring.slots[slot] = Some(frame);
            ring.head += 1;
            ring.head
        };
        self.head.send_replace(head);
        head
    }

    /// Publications after `sent` up to the head, into `out`; the new cursor.
    fn backlog(&self, sent: u64, out: &mut Vec<Framed>) -> Result<u64, FellBehind> {
        let ring = self.ring.read().unwrap_or_else(PoisonError::into_inner);
        let cap = ring.slots.len() as u64;
        if ring.head - sent > cap {
            return Err(FellBehind);
        }
        for seq in sent..ring.head {
            let slot = usize::try_from(seq % cap).unwrap_or(0);
            if let Some(frame) = &ring.slots[slot] {
                out.push(Arc::clone(frame));
            }
        }
        Ok(ring.head)
    }
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    subscribers: AtomicU64,
    handshake_failures: AtomicU64,
    /// Frames handed to subscribers' sockets.
    sent: AtomicU64,
    /// `writev` calls that carried them (fewer than `sent` when backlogs
    /// were written together).
    writes: AtomicU64,
    slow_closed: AtomicU64,
}

struct Hub {
    topics: Mutex<HashMap<String, Arc<Topic>>>,
    ring: usize,
    path: String,
    counters: Counters,
}

impl Hub {
    /// The topic named `name`, created on first use; `None` once the hub
    /// holds `MAX_TOPICS`.
    fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        let mut topics = self.topics.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(topic) = topics.get(name) {
            return Some(Arc::clone(topic));
        }
        if topics.len() >= MAX_TOPICS {
            return None;
        }
        let topic = Arc::new(Topic::new(self.ring));
        topics.insert(name.to_owned(), Arc::clone(&topic));
        Some(topic)
    }
}

fn valid_topic(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_TOPIC_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b))
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn emit(value: &serde_json::Value) {
    println!("{value}");
}

fn text_frame(text: &[u8]) -> Framed {
    let mut out = Vec::with_capacity(text.len() + 10);
    frame::encode_frame(&mut out, true, frame::OP_TEXT, text);
    out.into()
}

// ------------------------------------------------------------ connections

/// What an upgrade request asked for.
struct Upgrade {
    key: String,
    topics: Vec<String>,
}

/// Reads and parses the upgrade request (httparse); `Err` carries the HTTP
/// status line to answer with, or `None` when the client went away.
async fn read_upgrade(stream: &mut TcpStream, path: &str) -> Result<Upgrade, Option<&'static str>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.map_err(|_| None)?;
        if n == 0 {
            return Err(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => return check_upgrade(&req, path),
            Ok(httparse::Status::Partial) if buf.len() < MAX_REQUEST_BYTES => {}
            Ok(httparse::Status::Partial) => {
                return Err(Some("431 Request Header Fields Too Large"))
            }
            Err(_) => return Err(Some("400 Bad Request")),
        }
    }
}

fn check_upgrade(req: &httparse::Request, path: &str) -> Result<Upgrade, Option<&'static str>> {
    if req.method != Some("GET") {
        return Err(Some("405 Method Not Allowed"));
    }
    let (req_path, query) = req
        .path
        .unwrap_or("")
        .split_once('?')
        .unwrap_or((req.path.unwrap_or(""), ""));
    if req_path != path {
        return Err(Some("404 Not Found"));
    }
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .map(str::trim)
    };
    let upgrade_ok = header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let version_ok = header("sec-websocket-version") == Some("13");
    let key = header("sec-websocket-key").filter(|k| !k.is_empty());
    let (true, true, Some(key)) = (upgrade_ok, version_ok, key) else {
        return Err(Some("400 Bad Request"));
    };
    let topics = query
        .split('&')
        .filter_map(|kv| kv.strip_prefix("topics="))
        .flat_map(|v| v.split(','))
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    Ok(Upgrade {
        key: key.to_owned(),
        topics,
    })
}

async fn refuse(stream: &mut TcpStream, status: &str) {
    let response = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let _ = stream.write_all(response.as_bytes()).await;
}

async fn serve(mut stream: TcpStream, hub: Arc<Hub>, default_topic: Arc<str>) {
    stream.set_nodelay(true).ok();
    let upgrade =
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, read_upgrade(&mut stream, &hub.path)).await {
            Ok(Ok(upgrade)) => upgrade,
            Ok(Err(status)) => {
                hub.counters
                    .handshake_failures
                    .fetch_add(1, Ordering::Relaxed);
                if let Some(status) = status {
                    refuse(&mut stream, status).await;
                }
                return;
            }
            Err(_) => {
                hub.counters
                    .handshake_failures
                    .fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
    // One topic per connection (the benchmarks use one); the others are
    // answered as rejected in the ack.
    let mut names = upgrade.topics.into_iter();
    let first = names.next().unwrap_or_else(|| default_topic.to_string());
    let mut rejected: Vec<String> = names.collect();
    let topic = if valid_topic(&first) {
        hub.topic(&first)
    } else {
        None
    };
    let accepted: Vec<String> = if topic.is_some() {
        vec![first]
    } else {
        rejected.insert(0, first);
        Vec::new()
    };
    // The cursor starts at the head: a subscriber gets what is published
    // after its ack was built.
    let mut head_rx = topic.as_ref().map(|t| t.head.subscribe());
    let mut sent = head_rx.as_mut().map_or(0, |rx| *rx.borrow_and_update());

    let ack = serde_json::json!({"type": "connected", "topics": accepted, "rejected": rejected});
    let mut response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(upgrade.key.as_bytes())
    )
    .into_bytes();
    frame::encode_frame(
        &mut response,
        true,
        frame::OP_TEXT,
        ack.to_string().as_bytes(),
    );
    if stream.write_all(&response).await.is_err() {
        return;
    }
    let counters = &hub.counters;
    counters.connections.fetch_add(1, Ordering::Relaxed);
    if topic.is_some() {
        counters.subscribers.fetch_add(1, Ordering::Relaxed);
    }

    let mut discard = [0u8; CLIENT_READ_CHUNK];
    let mut backlog: Vec<Framed> = Vec::new();
    loop {
        tokio::select! {
            changed = async {
                match head_rx.as_mut() {
                    Some(rx) => rx.changed().await,
                    None => std::future::pending().await,
                }
            } => {
                let (Ok(()), Some(rx), Some(topic)) = (changed, head_rx.as_mut(), topic.as_ref()) else {
                    break;
                };
                rx.borrow_and_update();
                match topic.backlog(sent, &mut backlog) {
                    Ok(head) => sent = head,
                    Err(FellBehind) => {
                        counters.slow_closed.fetch_add(1, Ordering::Relaxed);
                        close_slow(&stream);
                        break;
                    }
                }
                let frames = backlog.len() as u64;
                let written = write_backlog(&mut stream, &backlog).await;
                backlog.clear();
                match written {
                    Ok(calls) => {
                        counters.sent.fetch_add(frames, Ordering::Relaxed);
                        counters.writes.fetch_add(calls, Ordering::Relaxed);
                    }
                    Err(_) => break,
                }
            }
            read = stream.read(&mut discard) => {
                if !matches!(read, Ok(n) if n > 0) {
                    break;
                }
            }
        }
    }
    counters.connections.fetch_sub(1, Ordering::Relaxed);
    if topic.is_some() {
        counters.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Writes `frames` with one `writev` (more only when the socket takes part
/// of them); returns the number of calls.
async fn write_backlog(stream: &mut TcpStream, frames: &[Framed]) -> std::io::Result<u64> {
    let mut slices: Vec<IoSlice<'_>> = frames.iter().map(|f| IoSlice::new(f)).collect();
    let mut rest = &mut slices[..];
    let mut calls = 0;
    while !rest.is_empty() {
        let n = stream.write_vectored(rest).await?;
        calls += 1;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut rest, n);
    }
    Ok(calls)
}

/// Close 1008 `slow consumer`, if the socket has room for it right now: a
/// slow consumer's buffer is likely full, and it is not waited for.
fn close_slow(stream: &TcpStream) {
    let mut body = SLOW_CONSUMER_CODE.to_be_bytes().to_vec();
    body.extend_from_slice(SLOW_CONSUMER_REASON);
    let mut close = Vec::new();
    frame::encode_frame(&mut close, true, frame::OP_CLOSE, &body);
    let _ = stream.try_write(&close);
}

async fn accept_loop(listener: TcpListener, hub: Arc<Hub>, default_topic: Arc<str>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve(stream, Arc::clone(&hub), Arc::clone(&default_topic)));
            }
            Err(error) => {
                // Out of file descriptors, mostly: wait instead of spinning.
                eprintln!("ringhub: accept: {error}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

// ------------------------------------------------------------ publisher

/// The same payload as the other servers' (`_common.py`'s `Payload`,
/// `rust_publisher.rs`): about `size` bytes.
struct Payload {
    pad: String,
}

impl Payload {
    fn new(size: usize) -> Self {
        let skeleton = r#"{"t":1700000000000000000,"seq":100000,"pad":""}"#.len();
        Payload {
            pad: "x".repeat(size.saturating_sub(skeleton)),
        }
    }

    fn build(&self, out: &mut String, seq: u64, t_ns: u64) {
        use std::fmt::Write;
        out.clear();
        let _ = write!(out, r#"{{"t":{t_ns},"seq":{seq},"pad":"{}"}}"#, self.pad);
    }
}

/// `rust_publisher.rs`'s loop, publishing into the topic's ring.
fn publish_loop(
    topic: &Topic,
    args: &Args,
    feedback: Option<&UdpSocket>,
    published: &AtomicU64,
    stop: &AtomicBool,
) {
    let payload = Payload::new(args.payload);
    let limit = if args.count == 0 {
        u64::MAX
    } else {
        args.count
    };
    let period_ns = if args.mode == Mode::Rate {
        1e9 / args.rate
    } else {
        0.0
    };
    let t0 = now_ns();
    let mut delivered = 0u64;
    let mut text = String::new();
    let mut seq = 0u64;
    let mut datagram = [0u8; 64];
    while seq < limit && !stop.load(Ordering::Relaxed) {
        let t = match (args.mode, feedback) {
            (Mode::Closed, Some(sock)) => {
                // No syscall while the window has room; once it is full,
                // block on the feedback socket (with a timeout, to notice
                // `stop`) until it has room again.
                while seq - delivered >= args.window && !stop.load(Ordering::Relaxed) {
                    if let Ok(n) = sock.recv(&mut datagram) {
                        if n >= 8 {
                            let mut v = [0u8; 8];
                            v.copy_from_slice(&datagram[..8]);
                            delivered = delivered.max(u64::from_le_bytes(v));
                        }
                    }
                }
                now_ns()
            }
            (Mode::Rate, _) => {
                // `t` is the scheduled time: publisher lag counts as latency.
                #[allow(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    clippy::cast_precision_loss
                )]
                let due = t0 + (seq as f64 * period_ns) as u64;
                let now = now_ns();
                if due > now {
                    std::thread::sleep(Duration::from_nanos(due - now));
                }
                due
            }
            _ => now_ns(),
        };
        seq += 1;
        payload.build(&mut text, seq, t);
        topic.publish(text_frame(text.as_bytes()));
        published.store(seq, Ordering::Relaxed);
    }
}

// ------------------------------------------------------------ main

fn runtime(worker_threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if worker_threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(worker_threads)
            .enable_all()
            .build()
    }
}

fn fail(message: &str) -> ! {
    eprintln!("ringhub: {message}");
    std::process::exit(1);
}

fn main() {
    let args = Args::parse();
    if args.mode == Mode::Burst && args.count == 0 {
        eprintln!("ringhub: --mode burst needs --count N");
        std::process::exit(2);
    }
    let rt = runtime(args.worker_threads)
        .unwrap_or_else(|e| fail(&format!("cannot start the runtime: {e}")));
    let listener = rt
        .block_on(TcpListener::bind((Ipv4Addr::LOCALHOST, args.port)))
        .unwrap_or_else(|e| fail(&format!("cannot bind port {}: {e}", args.port)));
    let port = listener
        .local_addr()
        .unwrap_or_else(|e| fail(&format!("no local address: {e}")))
        .port();
    let feedback = (args.mode == Mode::Closed).then(|| {
        let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, port))
            .unwrap_or_else(|e| fail(&format!("cannot bind the feedback socket: {e}")));
        sock.set_read_timeout(Some(FEEDBACK_POLL)).ok();
        sock
    });
    let hub = Arc::new(Hub {
        topics: Mutex::new(HashMap::new()),
        ring: args.ring,
        path: args.path.clone(),
        counters: Counters::default(),
    });
    let topic = hub
        .topic(&args.topic)
        .unwrap_or_else(|| fail("cannot create the publisher's topic"));
    let default_topic: Arc<str> = args.topic.as_str().into();
    let server = {
        let hub = Arc::clone(&hub);
        std::thread::Builder::new()
            .name("ringhub-io".into())
            .spawn(move || rt.block_on(accept_loop(listener, hub, default_topic)))
            .unwrap_or_else(|e| fail(&format!("cannot start the I/O thread: {e}")))
    };
    drop(server); // runs until the process exits
    emit(&serde_json::json!({
        "event": "listening",
        "port": port,
        "server": "ring-ref",
        "version": env!("CARGO_PKG_VERSION"),
        "ring": args.ring,
    }));

    let published = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut started: Option<Instant> = None;
    let mut publisher = None;
    let mut to_publisher = Some((args, feedback, topic));
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        match line.trim() {
            "go" if started.is_none() => {
                started = Some(Instant::now());
                let (published, stop) = (Arc::clone(&published), Arc::clone(&stop));
                if let Some((args, feedback, topic)) = to_publisher.take() {
                    publisher = Some(std::thread::spawn(move || {
                        publish_loop(&topic, &args, feedback.as_ref(), &published, &stop);
                    }));
                }
            }
            "stats" => emit(&serde_json::json!({
                "event": "stats",
                "published": published.load(Ordering::Relaxed),
            })),
            "stop" => break,
            _ => {}
        }
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(publisher) = publisher {
        let _ = publisher.join();
    }
    let c = &hub.counters;
    emit(&serde_json::json!({"event": "hub_stats", "stats": {
        "connections": c.connections.load(Ordering::Relaxed),
        "subscribers": c.subscribers.load(Ordering::Relaxed),
        "handshake_failures": c.handshake_failures.load(Ordering::Relaxed),
        "sent": c.sent.load(Ordering::Relaxed),
        "writes": c.writes.load(Ordering::Relaxed),
        "slow_closed": c.slow_closed.load(Ordering::Relaxed),
    }}));
    let elapsed = started.map_or(0.0, |t| t.elapsed().as_secs_f64());
    let published = published.load(Ordering::Relaxed);
    #[allow(clippy::cast_precision_loss)]
    let rate = if elapsed > 0.0 {
        published as f64 / elapsed
    } else {
        0.0
    };
    emit(&serde_json::json!({
        "event": "stopped",
        "published": published,
        "elapsed_s": elapsed,
        "publications_per_s": rate,
    }));
    std::process::exit(0);
}
