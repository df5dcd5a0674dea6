//! loadgen: opens N WebSocket subscriber connections, parses server frames
//! itself (no per-message allocation), counts deliveries, checks `seq` for gaps
//! and records publisher-to-subscriber latency (`now - t`) in an HDR histogram.
//!
//! Protocol with a driver (all lines on stdout are JSON):
//!   1. connects, waits for every connection's ack, prints `{"event":"ready",...}`
//!      (and creates `--ready-file` if given);
//!   2. with `--start stdin` waits for a line `go` on stdin (immediate otherwise),
//!      prints `{"event":"started"}`;
//!   3. warm-up, measurement window, optional drain;
//!   4. prints `{"event":"result",...}` and exits.

mod deflate;
#[allow(dead_code)]
mod frame;

use std::collections::BTreeMap;
use std::io::{BufRead, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering::*};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use clap::Parser;
use hdrhistogram::Histogram;
use serde_json::json;
use sha1::{Digest, Sha1};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use frame::{Scanner, OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_TEXT};

#[derive(Parser, Debug, Clone)]
#[command(
    name = "loadgen",
    about = "WebSocket fan-out load generator and latency meter"
)]
struct Args {
    /// ws://HOST:PORT/PATH?QUERY
    #[arg(long, default_value = "ws://127.0.0.1:8000/api/ws?topics=bench")]
    url: String,
    /// Number of subscriber connections (raw parser).
    #[arg(short = 'c', long, default_value_t = 100)]
    connections: usize,
    /// Measurement window in seconds.
    #[arg(short = 'd', long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds after start before measuring (messages counted only in lifetime totals).
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// Seconds to keep reading after the window (lifetime totals only); useful with --verify.
    #[arg(long, default_value_t = 0.0)]
    drain: f64,
    /// OS threads, each running a single-threaded tokio runtime with its share of connections.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// `connected`: a connection is ready when a frame containing "connected" arrived;
    /// `none`: ready right after the HTTP upgrade.
    #[arg(long, default_value = "connected")]
    ack: String,
    /// `immediate` or `stdin` (wait for a line `go`).
    #[arg(long, default_value = "immediate")]
    start: String,
    /// File to create once all connections are ready.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Source addresses: `auto` (127.0.0.1, .2, ... every --conns-per-ip connections),
    /// `none` (let the kernel choose) or a comma-separated list.
    #[arg(long, default_value = "auto")]
    src_ips: String,
    #[arg(long, default_value_t = 25000)]
    conns_per_ip: usize,
    /// Concurrent handshakes per thread while connecting.
    #[arg(long, default_value_t = 128)]
    connect_concurrency: usize,
    /// Give up waiting for connections after this many seconds.
    #[arg(long, default_value_t = 120.0)]
    connect_timeout: f64,
    /// Closed-loop feedback: send the highest seq delivered to *every* subscriber
    /// (u64 little-endian UDP datagram) to this address.
    #[arg(long)]
    feedback: Option<SocketAddr>,
    /// Also open this many tokio-tungstenite clients and compare their totals with the raw clients.
    #[arg(long, default_value_t = 0)]
    verify: usize,
    /// Read size in bytes.
    #[arg(long, default_value_t = 65536)]
    chunk: usize,
    /// Sleep this many microseconds each time a shard runs out of work, before it
    /// waits for socket events, so that several frames accumulate per read.
    /// Cuts the loadgen's per-frame kernel cost for servers that write one frame
    /// per syscall, at the price of up to this much added latency. 0 = off.
    #[arg(long, default_value_t = 0)]
    coalesce_us: u64,
    /// Never sleep in epoll_wait: each shard polls its sockets in a loop
    /// (100% of its core). On loopback a server's write also pays for waking a
    /// sleeping reader (on a VM an inter-processor interrupt); with this flag
    /// the server's figures show what it costs without that wake-up, as with
    /// clients on other machines.
    #[arg(long)]
    busy_poll: bool,
    /// Offer `permessage-deflate; client_max_window_bits` in the handshake and,
    /// where the server accepts it, inflate the messages it sends compressed
    /// (RSV1) before they are counted and scanned like any other. One inflater
    /// per connection, reset before each message only when the server said
    /// `server_no_context_takeover`.
    #[arg(long)]
    deflate: bool,
}

const PH_CONNECT: u8 = 0;
const PH_WARMUP: u8 = 1;
const PH_MEASURE: u8 = 2;
const PH_DONE: u8 = 3;

/// Per-client counters (lifetime = everything after the ack).
#[derive(Clone, Default, Debug)]
struct ConnStats {
    total: u64,
    window: u64,
    bytes: u64,
    first_seq: Option<u64>,
    last_seq: u64,
    gaps: u64,
    out_of_order: u64,
    no_seq: u64,
    seq_sum: u64,
    t_sum: u64,
    tracker_last: u64,
    close_code: Option<u16>,
    error: Option<String>,
}

impl ConnStats {
    #[inline]
    fn on_message(&mut self, seq: Option<u64>, len: usize, t: Option<u64>) {
        self.total += 1;
        self.bytes += len as u64;
        self.t_sum = self.t_sum.wrapping_add(t.unwrap_or(0));
        match seq {
            Some(s) => {
                self.seq_sum = self.seq_sum.wrapping_add(s);
                match self.first_seq {
                    None => self.first_seq = Some(s),
                    Some(_) => {
                        if s > self.last_seq + 1 {
                            self.gaps += s - self.last_seq - 1;
                        } else if s <= self.last_seq {
                            self.out_of_order += 1;
                        }
                    }
                }
                if s > self.last_seq {
                    self.last_seq = s;
                }
            }
            None => self.no_seq += 1,
        }
    }
}

struct ShardState {
    hist: Histogram<u64>,
    negative_latency: u64,
    no_t: u64,
    conns: Vec<ConnStats>,
    /// --deflate: messages that arrived compressed, their bytes on the wire
    /// (frame payloads) and inflated.
    deflate_msgs: u64,
    deflate_wire_bytes: u64,
    deflate_inflated_bytes: u64,
}

/// Tracks the highest seq every live subscriber has received, for closed-loop publishers.
struct Tracker {
    ring: Vec<AtomicU32>,
    delivered: AtomicU64, // u64::MAX = not yet initialised
    expected: AtomicU32,
    lock: Mutex<()>,
    sock: UdpSocket,
    target: SocketAddr,
    last_send_ns: AtomicU64,
}

const RING: u64 = 1 << 20;

impl Tracker {
    fn new(target: SocketAddr) -> std::io::Result<Self> {
        let sock = UdpSocket::bind("127.0.0.1:0")?;
        sock.set_nonblocking(true)?;
        Ok(Tracker {
            ring: (0..RING).map(|_| AtomicU32::new(0)).collect(),
            delivered: AtomicU64::new(u64::MAX),
            expected: AtomicU32::new(0),
            lock: Mutex::new(()),
            sock,
            target,
            last_send_ns: AtomicU64::new(0),
        })
    }

    /// Client `cs` received `seq`: count it (and any seqs it skipped) as delivered to it.
    #[inline]
    fn mark(&self, cs: &mut ConnStats, seq: u64) {
        let mut d = self.delivered.load(Acquire);
        if d == u64::MAX {
            let _g = self.lock.lock().unwrap();
            d = self.delivered.load(Acquire);
            if d == u64::MAX {
                d = seq.saturating_sub(1);
                self.delivered.store(d, Release);
            }
        }
        let from = cs.tracker_last.max(d) + 1;
        if seq >= from {
            let to = seq.min(d + RING - 1);
            for s in from..=to {
                self.ring[(s % RING) as usize].fetch_add(1, Relaxed);
            }
            cs.tracker_last = seq;
        }
    }

    /// Advance the fully-delivered pointer; send feedback if it moved (rate-limited).
    fn advance(&self, now_ns: u64) {
        let d = self.delivered.load(Acquire);
        if d == u64::MAX {
            return;
        }
        let exp = self.expected.load(Relaxed).max(1);
        if self.ring[((d + 1) % RING) as usize].load(Relaxed) < exp {
            return;
        }
        let Ok(_g) = self.lock.try_lock() else { return };
        let mut d = self.delivered.load(Acquire);
        while self.ring[((d + 1) % RING) as usize].load(Relaxed) >= exp {
            self.ring[((d + 1) % RING) as usize].store(0, Relaxed);
            d += 1;
        }
        self.delivered.store(d, Release);
        if now_ns.saturating_sub(self.last_send_ns.load(Relaxed)) >= 20_000 {
            self.send(now_ns);
        }
    }

    fn send(&self, now_ns: u64) {
        let d = self.delivered.load(Acquire);
        if d == u64::MAX {
            return;
        }
        self.last_send_ns.store(now_ns, Relaxed);
        let _ = self.sock.send_to(&d.to_le_bytes(), self.target);
    }
}

struct Shared {
    args: Args,
    host: String,
    port: u16,
    path: String,
    phase: AtomicU8,
    ready: AtomicUsize,
    failed: AtomicUsize,
    closed_after_ready: AtomicUsize,
    /// --deflate: connections whose server accepted permessage-deflate, and of
    /// those the ones with server_no_context_takeover.
    deflate_conns: AtomicUsize,
    deflate_no_takeover: AtomicUsize,
    tracker: Option<Tracker>,
    stop: AtomicBool,
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// (user s, sys s, involuntary context switches) of this process.
fn rusage_secs() -> (f64, f64, i64) {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (tv(ru.ru_utime), tv(ru.ru_stime), ru.ru_nivcsw as i64)
}

/// Raise RLIMIT_NOFILE as far as allowed; returns the soft limit in force.
fn raise_nofile(want: u64) -> u64 {
    unsafe {
        let mut rl: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
            return 0;
        }
        if (rl.rlim_max as u64) < want {
            // needs CAP_SYS_RESOURCE; fine if it fails
            let hi = libc::rlimit {
                rlim_cur: want as libc::rlim_t,
                rlim_max: want as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &hi) == 0 {
                return want;
            }
        }
        if rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl);
        rl.rlim_cur as u64
    }
}

fn parse_url(url: &str) -> Result<(String, u16, String), String> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or("url must start with ws://")?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h.to_string(), p.parse::<u16>().map_err(|e| e.to_string())?),
        None => (hostport.to_string(), 80),
    };
    Ok((host, port, path))
}

/// Small xorshift PRNG: handshake keys and mask keys need not be cryptographic here.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

fn accept_key(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(WS_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// Connect (from `src` if given) and perform the client side of the upgrade.
/// Returns the stream, any bytes that followed the HTTP response, and the
/// permessage-deflate parameters if (offered with --deflate and) accepted.
async fn connect_ws(
    sh: &Shared,
    src: Option<IpAddr>,
    seed: u64,
) -> Result<(TcpStream, Vec<u8>, Option<deflate::Negotiated>), String> {
    let addr: SocketAddr = tokio::net::lookup_host((sh.host.as_str(), sh.port))
        .await
        .map_err(|e| format!("resolve: {e}"))?
        .find(|a| a.is_ipv4())
        .ok_or("no IPv4 address")?;
    let sock = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    if let Some(ip) = src {
        // Let connect() pick the port so each source address has its own port space.
        #[cfg(target_os = "linux")]
        unsafe {
            use std::os::fd::AsRawFd;
            let one: libc::c_int = 1;
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                &one as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        sock.bind(SocketAddr::new(ip, 0))
            .map_err(|e| format!("bind {ip}: {e}"))?;
    }
    let mut stream = sock
        .connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).ok();
    let mut rng = Rng(seed | 1);
    let mut keyb = [0u8; 16];
    keyb[..8].copy_from_slice(&rng.next().to_le_bytes());
    keyb[8..].copy_from_slice(&rng.next().to_le_bytes());
    let key = base64::engine::general_purpose::STANDARD.encode(keyb);
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}:{}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n{}\r\n",
        sh.path,
        sh.host,
        sh.port,
        key,
        if sh.args.deflate {
            format!("Sec-WebSocket-Extensions: {}\r\n", deflate::OFFER)
        } else {
            String::new()
        }
    );
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::with_capacity(1024);
    let mut tmp = [0u8; 4096];
    loop {
        let n = stream
            .read(&mut tmp)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed during handshake".into());
        }
        buf.extend_from_slice(&tmp[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf).map_err(|e| format!("http: {e}"))? {
            httparse::Status::Partial => {
                if buf.len() > 16384 {
                    return Err("handshake response too large".into());
                }
            }
            httparse::Status::Complete(hlen) => {
                if resp.code != Some(101) {
                    return Err(format!("handshake status {:?}", resp.code));
                }
                let want = accept_key(&key);
                let got = resp
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"))
                    .map(|h| String::from_utf8_lossy(h.value).trim().to_string());
                if got.as_deref() != Some(want.as_str()) {
                    return Err(format!("bad Sec-WebSocket-Accept {got:?}"));
                }
                let mut negotiated = None;
                if let Some(ext) = resp
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-extensions"))
                {
                    let value = String::from_utf8_lossy(ext.value);
                    if !sh.args.deflate {
                        return Err(format!("server negotiated an extension: {value}"));
                    }
                    negotiated = Some(deflate::parse_response(&value)?);
                }
                return Ok((stream, buf[hlen..].to_vec(), negotiated));
            }
        }
    }
}

thread_local! {
    static WORK: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

enum Step {
    Continue,
    Eof,
    Closed,
    Err(String),
}

/// One raw subscriber connection.
async fn run_conn(
    sh: Arc<Shared>,
    state: Arc<Mutex<ShardState>>,
    idx: usize,
    gid: usize,
    src: Option<IpAddr>,
    sem: Arc<tokio::sync::Semaphore>,
) {
    let permit = sem.acquire_owned().await.unwrap();
    let (stream, mut carry, negotiated) =
        match connect_ws(&sh, src, 0x9E37_79B9_7F4A_7C15 ^ ((gid as u64 + 1) * 7919)).await {
            Ok(x) => x,
            Err(e) => {
                state.lock().unwrap().conns[idx].error = Some(e);
                sh.failed.fetch_add(1, SeqCst);
                return;
            }
        };
    // Own readiness handling: after a short read the socket is drained, so clear
    // readiness ourselves instead of paying for a second read() that returns EAGAIN
    // (tokio's edge-triggered registration re-arms on the next arrival).
    let afd = match stream.into_std().and_then(|s| {
        s.set_nonblocking(true)?;
        // SAFETY: the AsyncFd owns the std TcpStream, whose fd stays open and
        // unchanged until the AsyncFd is dropped.
        unsafe { AsyncFd::register_with_interest(s, Interest::READABLE) }.map_err(|e| e.into())
    }) {
        Ok(a) => a,
        Err(e) => {
            state.lock().unwrap().conns[idx].error = Some(format!("asyncfd: {e}"));
            sh.failed.fetch_add(1, SeqCst);
            return;
        }
    };
    if let Some(n) = negotiated {
        sh.deflate_conns.fetch_add(1, SeqCst);
        if n.server_no_context_takeover {
            sh.deflate_no_takeover.fetch_add(1, SeqCst);
        }
    }
    let mut inflater = negotiated.map(deflate::Inflater::new);
    let deflate_on = inflater.is_some();
    // a compressed message in several frames, gathered until its last frame
    let mut zfrag: Vec<u8> = Vec::new();
    let mut in_zfrag = false;
    let mut inflate_error: Option<String> = None;
    let scanner = Scanner::new();
    let want_ack = sh.args.ack != "none";
    let mut acked = !want_ack;
    let mut permit = Some(permit);
    if acked {
        drop(permit.take());
        sh.ready.fetch_add(1, SeqCst);
    }
    let chunk = sh.args.chunk;
    let mut rng = Rng(gid as u64 * 31 + 17);
    let mut out: Vec<u8> = Vec::new();
    let tracker = sh.tracker.as_ref();
    // bytes that arrived with the handshake response are processed first
    let mut pending_initial = !carry.is_empty();
    let mut in_fragment = false;
    loop {
        let mut guard = None;
        if !pending_initial {
            match afd.readable().await {
                Ok(g) => guard = Some(g),
                Err(e) => {
                    state.lock().unwrap().conns[idx].error = Some(format!("readable: {e}"));
                    break;
                }
            }
        }
        let mut drained = false;
        let step = WORK.with(|w| {
            let mut w = w.borrow_mut();
            let cl = carry.len();
            if w.len() < cl + chunk {
                w.resize(cl + chunk, 0);
            }
            w[..cl].copy_from_slice(&carry);
            let n = if pending_initial {
                pending_initial = false;
                0
            } else {
                match afd.get_ref().read(&mut w[cl..cl + chunk]) {
                    Ok(0) => return Step::Eof,
                    Ok(n) => {
                        drained = n < chunk;
                        n
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        drained = true;
                        return Step::Continue;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return Step::Continue,
                    Err(e) => return Step::Err(format!("read: {e}")),
                }
            };
            let data = &w[..cl + n];
            let now = now_ns();
            let phase = sh.phase.load(Relaxed);
            let mut st = state.lock().unwrap();
            let st = &mut *st;
            let mut close: Option<u16> = None;
            let res = frame::parse_all_ext(data, deflate_on, |f| {
                match f.opcode {
                    OP_TEXT | OP_BINARY | OP_CONT => {
                        // the message's payload: the frame's own, or inflated
                        let zmsg: &[u8] = if f.opcode == OP_CONT {
                            if in_zfrag {
                                zfrag.extend_from_slice(f.payload);
                                if !f.fin {
                                    return true;
                                }
                                in_zfrag = false;
                                &zfrag
                            } else {
                                if f.fin {
                                    in_fragment = false;
                                }
                                return true;
                            }
                        } else if f.rsv1 {
                            if !f.fin {
                                in_zfrag = true;
                                zfrag.clear();
                                zfrag.extend_from_slice(f.payload);
                                return true;
                            }
                            f.payload
                        } else {
                            if !f.fin {
                                in_fragment = true;
                            }
                            &[]
                        };
                        let payload: &[u8] = if f.rsv1 || f.opcode == OP_CONT {
                            let Some(inf) = inflater.as_mut() else {
                                return true;
                            };
                            match inf.inflate(zmsg) {
                                Ok(p) => {
                                    st.deflate_msgs += 1;
                                    st.deflate_wire_bytes += zmsg.len() as u64;
                                    st.deflate_inflated_bytes += p.len() as u64;
                                    p
                                }
                                Err(e) => {
                                    inflate_error = Some(e);
                                    return false;
                                }
                            }
                        } else {
                            f.payload
                        };
                        if !acked {
                            if scanner.is_ack(payload) {
                                acked = true;
                                sh.ready.fetch_add(1, SeqCst);
                            }
                            return true;
                        }
                        let seq = scanner.seq(payload);
                        let t = scanner.t(payload);
                        let cs = &mut st.conns[idx];
                        cs.on_message(seq, payload.len(), t);
                        if let (Some(tr), Some(s)) = (tracker, seq) {
                            tr.mark(cs, s);
                        }
                        if phase == PH_MEASURE {
                            cs.window += 1;
                            match t {
                                Some(t) if t <= now => {
                                    st.hist.saturating_record((now - t).max(1));
                                }
                                Some(_) => st.negative_latency += 1,
                                None => st.no_t += 1,
                            }
                        }
                    }
                    OP_PING => {
                        let m = rng.next().to_le_bytes();
                        frame::encode_client_frame(
                            &mut out,
                            0xA,
                            f.payload,
                            [m[0], m[1], m[2], m[3]],
                        );
                    }
                    OP_CLOSE => {
                        let code = if f.payload.len() >= 2 {
                            u16::from_be_bytes([f.payload[0], f.payload[1]])
                        } else {
                            1005
                        };
                        let m = rng.next().to_le_bytes();
                        let body = if f.payload.len() >= 2 {
                            &f.payload[..2]
                        } else {
                            &[][..]
                        };
                        frame::encode_client_frame(
                            &mut out,
                            OP_CLOSE,
                            body,
                            [m[0], m[1], m[2], m[3]],
                        );
                        close = Some(code);
                        return false;
                    }
                    _ => {}
                }
                true
            });
            if let Some(tr) = tracker {
                tr.advance(now);
            }
            match res {
                Ok(_) if inflate_error.is_some() => Step::Err(inflate_error.take().unwrap()),
                Ok(consumed) => {
                    carry.clear();
                    carry.extend_from_slice(&data[consumed..]);
                    match close {
                        Some(c) => {
                            st.conns[idx].close_code = Some(c);
                            Step::Closed
                        }
                        None => Step::Continue,
                    }
                }
                Err(e) => Step::Err(format!("frame: {e:?}")),
            }
        });
        let _ = in_fragment;
        if acked && permit.is_some() {
            drop(permit.take());
        }
        if let Some(mut g) = guard.take() {
            if drained {
                g.clear_ready();
            }
        }
        if !out.is_empty() {
            // pong / close replies: a few bytes, the send buffer has room
            let _ = afd.get_ref().write_all(&out);
            out.clear();
        }
        match step {
            Step::Continue => {}
            Step::Eof => {
                state.lock().unwrap().conns[idx]
                    .error
                    .get_or_insert_with(|| "eof".into());
                break;
            }
            Step::Closed => break,
            Step::Err(e) => {
                state.lock().unwrap().conns[idx].error = Some(e);
                break;
            }
        }
        if sh.stop.load(Relaxed) {
            return;
        }
    }
    if acked {
        if sh.phase.load(Relaxed) >= PH_WARMUP {
            sh.closed_after_ready.fetch_add(1, SeqCst);
            if let Some(tr) = tracker {
                tr.expected.fetch_sub(1, Relaxed);
            }
        }
    } else {
        sh.failed.fetch_add(1, SeqCst);
    }
}

/// tokio-tungstenite subscriber for --verify: same counters, computed from a full JSON parse.
async fn run_verify_conn(sh: Arc<Shared>, stats: Arc<Mutex<Vec<ConnStats>>>, idx: usize) {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let url = sh.args.url.clone();
    let (mut ws, _) = match tokio_tungstenite::connect_async(url).await {
        Ok(x) => x,
        Err(e) => {
            stats.lock().unwrap()[idx].error = Some(format!("tungstenite connect: {e}"));
            sh.failed.fetch_add(1, SeqCst);
            return;
        }
    };
    let mut acked = sh.args.ack == "none";
    if acked {
        sh.ready.fetch_add(1, SeqCst);
    }
    let get = |v: &serde_json::Value, k: &str| -> Option<u64> {
        v.get(k).and_then(|x| x.as_u64()).or_else(|| {
            v.get("data")
                .and_then(|d| d.get(k))
                .and_then(|x| x.as_u64())
        })
    };
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(Message::Text(s)) => {
                let v: serde_json::Value = match serde_json::from_str(&s) {
                    Ok(v) => v,
                    Err(e) => {
                        stats.lock().unwrap()[idx].error = Some(format!("json: {e}"));
                        continue;
                    }
                };
                if !acked {
                    if v.get("type").and_then(|t| t.as_str()) == Some("connected") {
                        acked = true;
                        sh.ready.fetch_add(1, SeqCst);
                    }
                    continue;
                }
                stats.lock().unwrap()[idx].on_message(get(&v, "seq"), s.len(), get(&v, "t"));
            }
            Ok(Message::Close(c)) => {
                stats.lock().unwrap()[idx].close_code =
                    Some(c.map(|c| u16::from(c.code)).unwrap_or(1005));
                break;
            }
            Ok(_) => {}
            Err(e) => {
                stats.lock().unwrap()[idx].error = Some(format!("tungstenite: {e}"));
                break;
            }
        }
    }
}

fn source_ip(args: &Args, list: &[Ipv4Addr], gid: usize) -> Option<IpAddr> {
    match args.src_ips.as_str() {
        "none" => None,
        "auto" => {
            let k = gid / args.conns_per_ip.max(1);
            if k == 0 {
                None
            } else {
                Some(IpAddr::V4(Ipv4Addr::new(
                    127,
                    0,
                    (k / 254) as u8,
                    (k % 254) as u8 + 1,
                )))
            }
        }
        _ => Some(IpAddr::V4(
            list[(gid / args.conns_per_ip.max(1)) % list.len()],
        )),
    }
}

fn pct(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        return 0.0;
    }
    h.value_at_quantile(q) as f64 / 1000.0
}

fn emit(v: serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

fn main() {
    let args = Args::parse();
    let nofile = raise_nofile((args.connections + args.verify) as u64 + 1024);
    if nofile < (args.connections + args.verify) as u64 + 16 {
        eprintln!(
            "warning: RLIMIT_NOFILE is {nofile}, too low for {} connections (raise the hard limit)",
            args.connections + args.verify
        );
    }
    let (host, port, path) = match parse_url(&args.url) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("bad --url: {e}");
            std::process::exit(2);
        }
    };
    let src_list: Vec<Ipv4Addr> = if args.src_ips != "auto" && args.src_ips != "none" {
        args.src_ips
            .split(',')
            .map(|s| s.trim().parse().expect("bad --src-ips entry"))
            .collect()
    } else {
        vec![]
    };
    let tracker = args
        .feedback
        .map(|a| Tracker::new(a).expect("feedback socket"));
    let threads = args.threads.max(1);
    let sh = Arc::new(Shared {
        args: args.clone(),
        host,
        port,
        path,
        phase: AtomicU8::new(PH_CONNECT),
        ready: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        closed_after_ready: AtomicUsize::new(0),
        deflate_conns: AtomicUsize::new(0),
        deflate_no_takeover: AtomicUsize::new(0),
        tracker,
        stop: AtomicBool::new(false),
    });

    // shards
    let mut states = Vec::new();
    for shard in 0..threads {
        let ids: Vec<usize> = (0..args.connections)
            .filter(|g| g % threads == shard)
            .collect();
        let st = Arc::new(Mutex::new(ShardState {
            hist: Histogram::new_with_bounds(1, 3_600_000_000_000, 3).unwrap(),
            negative_latency: 0,
            no_t: 0,
            conns: vec![ConnStats::default(); ids.len()],
            deflate_msgs: 0,
            deflate_wire_bytes: 0,
            deflate_inflated_bytes: 0,
        }));
        states.push(st.clone());
        let sh2 = sh.clone();
        let src: Vec<Option<IpAddr>> = ids
            .iter()
            .map(|&g| source_ip(&args, &src_list, g))
            .collect();
        std::thread::Builder::new()
            .name(format!("shard{shard}"))
            .spawn(move || {
                let mut b = tokio::runtime::Builder::new_current_thread();
                b.enable_all();
                let co = sh2.args.coalesce_us;
                if co > 0 {
                    b.on_thread_park(move || std::thread::sleep(Duration::from_micros(co)));
                }
                let rt = b.build().unwrap();
                rt.block_on(async move {
                    if sh2.args.busy_poll {
                        // yield_now defers its wake-up until the I/O driver has
                        // been polled, so the runtime polls epoll with a zero
                        // timeout instead of parking.
                        tokio::spawn(async {
                            loop {
                                tokio::task::yield_now().await;
                            }
                        });
                    }
                    let sem = Arc::new(tokio::sync::Semaphore::new(
                        sh2.args.connect_concurrency.max(1),
                    ));
                    let mut hs = Vec::new();
                    for (i, &g) in ids.iter().enumerate() {
                        hs.push(tokio::spawn(run_conn(
                            sh2.clone(),
                            st.clone(),
                            i,
                            g,
                            src[i],
                            sem.clone(),
                        )));
                    }
                    for h in hs {
                        let _ = h.await;
                    }
                    // keep the runtime alive until the process exits
                    std::future::pending::<()>().await;
                });
            })
            .unwrap();
    }
    // verify clients
    let vstats = Arc::new(Mutex::new(vec![ConnStats::default(); args.verify]));
    if args.verify > 0 {
        let sh2 = sh.clone();
        let vs = vstats.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                for i in 0..sh2.args.verify {
                    tokio::spawn(run_verify_conn(sh2.clone(), vs.clone(), i));
                }
                std::future::pending::<()>().await;
            });
        });
    }

    // wait for connections
    let total = args.connections + args.verify;
    let t_conn = Instant::now();
    let deadline = t_conn + Duration::from_secs_f64(args.connect_timeout);
    loop {
        let r = sh.ready.load(SeqCst);
        let f = sh.failed.load(SeqCst);
        if r + f >= total || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let ready = sh.ready.load(SeqCst);
    let failed = sh.failed.load(SeqCst);
    let connect_s = t_conn.elapsed().as_secs_f64();
    let first_error = states
        .iter()
        .flat_map(|s| {
            s.lock()
                .unwrap()
                .conns
                .iter()
                .filter_map(|c| c.error.clone())
                .next()
        })
        .next();
    if let Some(tr) = &sh.tracker {
        tr.expected
            .store(ready.saturating_sub(args.verify.min(ready)) as u32, SeqCst);
    }
    emit(
        json!({"event":"ready","connections":args.connections,"verify":args.verify,
        "ready":ready,"failed":failed,"pending":total.saturating_sub(ready+failed),
        "connect_s":connect_s,"first_error":first_error,"nofile_limit":nofile}),
    );
    if let Some(p) = &args.ready_file {
        let _ = std::fs::write(p, format!("{ready}\n"));
    }
    if ready == 0 {
        emit(
            json!({"event":"result","error":"no connection became ready","first_error":first_error}),
        );
        std::process::exit(1);
    }

    if args.start == "stdin" {
        let stdin = std::io::stdin();
        let mut line = String::new();
        loop {
            line.clear();
            match stdin.lock().read_line(&mut line) {
                Ok(0) => {
                    emit(json!({"event":"aborted","reason":"stdin closed before go"}));
                    std::process::exit(1);
                }
                Ok(_) if line.trim() == "go" => break,
                Ok(_) => continue,
                Err(_) => std::process::exit(1),
            }
        }
    }
    // periodic feedback heartbeat
    if sh.tracker.is_some() {
        let sh2 = sh.clone();
        std::thread::spawn(move || loop {
            if let Some(tr) = &sh2.tracker {
                tr.send(now_ns());
            }
            std::thread::sleep(Duration::from_millis(1));
        });
    }
    sh.phase.store(PH_WARMUP, SeqCst);
    emit(json!({"event":"started"}));
    if args.warmup > 0.0 {
        std::thread::sleep(Duration::from_secs_f64(args.warmup));
    }
    let (u0, s0, iv0) = rusage_secs();
    let t0 = Instant::now();
    sh.phase.store(PH_MEASURE, SeqCst);
    std::thread::sleep(Duration::from_secs_f64(args.duration));
    sh.phase.store(PH_DONE, SeqCst);
    let wall = t0.elapsed().as_secs_f64();
    let (u1, s1, iv1) = rusage_secs();
    if args.drain > 0.0 {
        std::thread::sleep(Duration::from_secs_f64(args.drain));
    }

    // aggregate
    let mut hist = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).unwrap();
    let mut all: Vec<ConnStats> = Vec::new();
    let (mut neg, mut no_t) = (0u64, 0u64);
    let (mut z_msgs, mut z_wire, mut z_inflated) = (0u64, 0u64, 0u64);
    for s in &states {
        let s = s.lock().unwrap();
        hist.add(&s.hist).unwrap();
        neg += s.negative_latency;
        no_t += s.no_t;
        z_msgs += s.deflate_msgs;
        z_wire += s.deflate_wire_bytes;
        z_inflated += s.deflate_inflated_bytes;
        all.extend(s.conns.iter().cloned());
    }
    sh.stop.store(true, SeqCst);
    let received: u64 = all.iter().map(|c| c.window).sum();
    let live: Vec<&ConnStats> = all
        .iter()
        .filter(|c| c.first_seq.is_some() || c.total > 0)
        .collect();
    let per_min = all.iter().map(|c| c.window).min().unwrap_or(0);
    let per_max = all.iter().map(|c| c.window).max().unwrap_or(0);
    let mut closes: BTreeMap<String, u64> = BTreeMap::new();
    for c in &all {
        if let Some(code) = c.close_code {
            *closes.entry(code.to_string()).or_default() += 1;
        }
    }
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for c in &all {
        if let Some(e) = &c.error {
            *errors.entry(e.clone()).or_default() += 1;
        }
    }
    let cpu_s = (u1 - u0) + (s1 - s0);
    let mut result = json!({
        "event": "result",
        "url": args.url,
        "connections": args.connections,
        "ready": ready,
        "failed": failed,
        "closed_during_run": sh.closed_after_ready.load(SeqCst),
        "close_codes": closes,
        "errors": errors,
        "threads": threads,
        "coalesce_us": args.coalesce_us,
        "duration_s": wall,
        "received": received,
        "deliveries_per_s": received as f64 / wall,
        "per_client": {"min": per_min, "max": per_max,
                        "mean": if all.is_empty() {0.0} else {received as f64 / all.len() as f64}},
        "received_total": all.iter().map(|c| c.total).sum::<u64>(),
        "gaps": all.iter().map(|c| c.gaps).sum::<u64>(),
        "clients_with_gaps": all.iter().filter(|c| c.gaps > 0).count(),
        "out_of_order": all.iter().map(|c| c.out_of_order).sum::<u64>(),
        "no_seq": all.iter().map(|c| c.no_seq).sum::<u64>(),
        "no_t": no_t,
        "negative_latency": neg,
        "first_seq": {"min": live.iter().filter_map(|c| c.first_seq).min(), "max": live.iter().filter_map(|c| c.first_seq).max()},
        "last_seq": {"min": live.iter().map(|c| c.last_seq).min(), "max": live.iter().map(|c| c.last_seq).max()},
        "latency_us": {
            "samples": hist.len(),
            "p50": pct(&hist, 0.5), "p90": pct(&hist, 0.9), "p99": pct(&hist, 0.99),
            "p999": pct(&hist, 0.999),
            "max": if hist.is_empty() {0.0} else {hist.max() as f64 / 1000.0},
            "mean": if hist.is_empty() {0.0} else {hist.mean() / 1000.0},
        },
        "cpu": {"user_s": u1 - u0, "sys_s": s1 - s0, "pct": 100.0 * cpu_s / wall,
                "involuntary_ctx_switches": iv1 - iv0},
        "feedback_delivered": sh.tracker.as_ref().map(|t| t.delivered.load(SeqCst)),
        "deflate": {
            "offered": args.deflate,
            "negotiated": sh.deflate_conns.load(SeqCst),
            "server_no_context_takeover": sh.deflate_no_takeover.load(SeqCst),
            "compressed_messages": z_msgs,
            "wire_bytes": z_wire,
            "inflated_bytes": z_inflated,
        },
    });
    if args.verify > 0 {
        let vs = vstats.lock().unwrap().clone();
        let key = |c: &ConnStats| {
            (
                c.total,
                c.bytes,
                c.seq_sum,
                c.t_sum,
                c.gaps,
                c.first_seq,
                c.last_seq,
            )
        };
        let mut distinct: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for c in &all {
            distinct.entry(format!("{:?}", key(c))).or_default().0 += 1;
        }
        for c in &vs {
            distinct.entry(format!("{:?}", key(c))).or_default().1 += 1;
        }
        let ok = distinct.len() == 1 && vs.iter().all(|c| c.total > 0);
        result["verify"] = json!({
            "ok": ok,
            "note": "each key is (total, bytes, seq_sum, t_sum, gaps, first_seq, last_seq) -> [raw clients, tungstenite clients]",
            "distinct": distinct,
            "tungstenite_errors": vs.iter().filter_map(|c| c.error.clone()).collect::<Vec<_>>(),
        });
    }
    emit(result);
    std::process::exit(0);
}
