//! recovery: the client side of `benches/recovery.py`, a reconnect storm
//! against a wshub hub (docs/protocol.md, "Recovering after a reconnect").
//!
//! Protocol with the driver (JSON lines on stdout, command lines on stdin):
//!   1. opens `-c` connections to `URL?topics=T`, reads each `connected`
//!      answer and prints `{"event":"connected","clients":N,"epoch":E,"seq":S}`
//!      (every answer must name the same epoch and seq: nobody publishes yet);
//!      then each reads the `--prime` publications the driver has the hub
//!      send (S+1..S+prime) and it prints `{"event":"primed","seq":S'}`;
//!   2. `--mode recover`: closes them all (close handshake, waits for the end
//!      of each stream), prints `{"event":"disconnected"}`; the driver then
//!      has the hub publish `--count` publications;
//!      `--mode live`: keeps them open and prints `{"event":"ready"}`;
//!   3. waits for a line `go`; the clock starts. `recover`: all N reconnect
//!      at once with `since=T:S:E`, each must be answered
//!      `"recovered":{"T":true}` and then get exactly the publications
//!      S+1..S+count, in order; `live`: each must get exactly those, live;
//!   4. after the last client is complete, waits `--linger-ms` and checks no
//!      client got anything more, prints `{"event":"result",...}`, closes all.
//!
//! Frames are parsed in place by `frame.rs` (no allocation per message); a
//! publication is checked against wshub's envelope
//! `{"type":"message","topic":"T","seq":N,...` byte by byte, so anything
//! else (an error frame, another topic, a duplicate, a gap) fails the client.

#[allow(dead_code)]
#[path = "../frame.rs"]
mod frame;

use std::io::BufRead;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use frame::{OP_CLOSE, OP_CONT, OP_PING, OP_TEXT};

/// Bytes read per `read()`: a recovered backlog of 1,000 ~260 B frames
/// arrives in a few reads.
const READ_CHUNK: usize = 64 * 1024;
/// Largest HTTP upgrade response accepted (anything bigger is not wshub's).
const MAX_HANDSHAKE_RESPONSE: usize = 16 * 1024;
/// Errors listed in the result; the rest are only counted.
const ERRORS_LISTED: usize = 10;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
enum Mode {
    /// Disconnect, let the hub publish, reconnect with `since`.
    Recover,
    /// Stay connected and receive the publications live (the baseline).
    Live,
}

#[derive(Parser, Debug)]
#[command(about = "Reconnect storm: N clients recovering M missed publications from a wshub hub")]
struct Args {
    /// ws://HOST:PORT/PATH, without a query
    #[arg(long)]
    url: String,
    #[arg(long, default_value = "t")]
    topic: String,
    /// Clients
    #[arg(short = 'c', long, default_value_t = 1000)]
    clients: usize,
    /// Publications each client must get (missed ones, or live ones)
    #[arg(long, default_value_t = 1000)]
    count: u64,
    #[arg(long, value_enum, default_value_t = Mode::Recover)]
    mode: Mode,
    /// Publications every client gets while connected first (the topic's history)
    #[arg(long, default_value_t = 1)]
    prime: u64,
    /// Connections opened at a time in step 1 (the storm in step 3 opens all at once)
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// Seconds each step may take before the run fails
    #[arg(long, default_value_t = 120.0)]
    timeout: f64,
    /// After the last client is complete, how long to watch for extra frames
    #[arg(long, default_value_t = 200)]
    linger_ms: u64,
    /// Runtime worker threads
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn emit(v: Value) {
    println!("{v}");
}

fn fail(msg: String) -> ! {
    emit(json!({"event": "error", "error": msg}));
    std::process::exit(1);
}

/// (host, port, path) of a ws:// URL.
fn parse_url(url: &str) -> Result<(String, u16, String), String> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or("url must start with ws://")?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    if path.contains('?') {
        return Err("url must not carry a query (the client adds topics= and since=)".into());
    }
    let (host, port) = hostport.rsplit_once(':').ok_or("url needs a port")?;
    Ok((
        host.to_string(),
        port.parse().map_err(|e| format!("port: {e}"))?,
        path,
    ))
}

/// A connection after the upgrade, with the bytes read past the response.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    have: usize,
}

impl Conn {
    async fn open(host: &str, port: u16, target: &str) -> Result<Conn, String> {
        let mut stream = TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        stream.set_nodelay(true).ok();
        let key = generate_key();
        let req = format!(
            "GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream
            .write_all(req.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut buf = vec![0u8; READ_CHUNK];
        let mut have = 0;
        loop {
            let n = stream
                .read(&mut buf[have..])
                .await
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("closed during the handshake".into());
            }
            have += n;
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&buf[..have]).map_err(|e| format!("http: {e}"))? {
                httparse::Status::Partial if have > MAX_HANDSHAKE_RESPONSE => {
                    return Err("handshake response too large".into())
                }
                httparse::Status::Partial => {}
                httparse::Status::Complete(hlen) => {
                    if resp.code != Some(101) {
                        return Err(format!("handshake status {:?}", resp.code));
                    }
                    let want = derive_accept_key(key.as_bytes());
                    let got = resp
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"))
                        .map(|h| String::from_utf8_lossy(h.value).trim().to_string());
                    if got.as_deref() != Some(want.as_str()) {
                        return Err(format!("bad Sec-WebSocket-Accept {got:?}"));
                    }
                    buf.copy_within(hlen..have, 0);
                    have -= hlen;
                    return Ok(Conn { stream, buf, have });
                }
            }
        }
    }

    /// Feed every complete frame to `on_frame` until it returns `Ok(true)`
    /// (done); the bytes after that frame stay buffered.
    async fn read_until<F>(&mut self, mut on_frame: F) -> Result<(), String>
    where
        F: FnMut(u8, &[u8]) -> Result<bool, String>,
    {
        let mut pongs = Vec::new();
        loop {
            let mut outcome: Result<bool, String> = Ok(false);
            let consumed = frame::parse_all(&self.buf[..self.have], |f| match f.opcode {
                OP_PING => {
                    frame::encode_client_frame(&mut pongs, 0xA, f.payload, [1, 2, 3, 4]);
                    true
                }
                OP_CLOSE => {
                    outcome = Err(format!("closed by the hub: {:?}", close_code(f.payload)));
                    false
                }
                OP_TEXT if f.fin => {
                    outcome = on_frame(f.opcode, f.payload);
                    matches!(outcome, Ok(false))
                }
                OP_TEXT | OP_CONT => {
                    outcome = Err("fragmented frame (wshub sends whole frames)".into());
                    false
                }
                other => {
                    outcome = Err(format!("unexpected opcode {other}"));
                    false
                }
            })
            .map_err(|e| format!("frame: {e:?}"))?;
            self.buf.copy_within(consumed..self.have, 0);
            self.have -= consumed;
            if !pongs.is_empty() {
                self.stream
                    .write_all(&pongs)
                    .await
                    .map_err(|e| format!("write: {e}"))?;
                pongs.clear();
            }
            if outcome? {
                return Ok(());
            }
            if self.have == self.buf.len() {
                // One frame larger than the buffer: make room for it.
                self.buf.resize(self.buf.len() * 2, 0);
            }
            let n = self
                .stream
                .read(&mut self.buf[self.have..])
                .await
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("connection closed by the hub".into());
            }
            self.have += n;
        }
    }

    /// The `connected` answer, parsed.
    async fn answer(&mut self) -> Result<Value, String> {
        let mut answer = Value::Null;
        self.read_until(|_, p| {
            answer = serde_json::from_slice(p).map_err(|e| format!("answer: {e}"))?;
            Ok(true)
        })
        .await?;
        if answer["type"] != "connected" {
            return Err(format!("first frame is not the connected answer: {answer}"));
        }
        Ok(answer)
    }

    /// Exactly the publications `first..first+count` of `topic`, in order.
    async fn publications(&mut self, prefix: &[u8], first: u64, count: u64) -> Result<(), String> {
        if count == 0 {
            return Ok(());
        }
        let mut next = first;
        let last = first + count - 1;
        self.read_until(|_, p| {
            let seq = p
                .strip_prefix(prefix)
                .and_then(leading_uint)
                .ok_or_else(|| format!("not a publication of the topic: {}", shorten(p)))?;
            if seq != next {
                return Err(format!("expected seq {next}, got {seq}"));
            }
            next += 1;
            Ok(seq == last)
        })
        .await
    }

    /// Whether anything but pings arrived since (a frame too many).
    fn extra(&mut self) -> Result<(), String> {
        loop {
            match self.stream.try_read(&mut self.buf[self.have..]) {
                Ok(0) => {
                    return Err("connection closed by the hub after the last publication".into())
                }
                Ok(n) => self.have += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(format!("read: {e}")),
            }
            if self.have == self.buf.len() {
                break;
            }
        }
        let mut extra = None;
        frame::parse_all(&self.buf[..self.have], |f| {
            if f.opcode != OP_PING {
                extra = Some(shorten(f.payload));
            }
            extra.is_none()
        })
        .map_err(|e| format!("frame: {e:?}"))?;
        match extra {
            Some(p) => Err(format!("a frame after the last publication: {p}")),
            None => Ok(()),
        }
    }

    /// Close handshake: send 1000, read until the hub ends the stream.
    async fn close(mut self) {
        let mut out = Vec::new();
        frame::encode_client_frame(&mut out, OP_CLOSE, &1000u16.to_be_bytes(), [5, 6, 7, 8]);
        if self.stream.write_all(&out).await.is_err() {
            return;
        }
        let mut sink = [0u8; 4096];
        while let Ok(n) = self.stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    }
}

fn close_code(p: &[u8]) -> Option<u16> {
    (p.len() >= 2).then(|| u16::from_be_bytes([p[0], p[1]]))
}

/// The decimal number at the start of `p` (at least one digit).
fn leading_uint(p: &[u8]) -> Option<u64> {
    let digits = p.iter().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 || digits > 19 {
        return None;
    }
    std::str::from_utf8(&p[..digits]).ok()?.parse().ok()
}

fn shorten(p: &[u8]) -> String {
    String::from_utf8_lossy(&p[..p.len().min(200)]).into_owned()
}

/// (epoch, seq) of `topic` in a `connected` answer.
fn stream_of(answer: &Value, topic: &str) -> Result<(String, u64), String> {
    let s = &answer["streams"][topic];
    match (s["epoch"].as_str(), s["seq"].as_u64()) {
        (Some(e), Some(q)) => Ok((e.to_string(), q)),
        _ => Err(format!("no stream for {topic} in the answer: {answer}")),
    }
}

/// One client's outcome in step 3.
struct Done {
    conn: Conn,
    /// Since `go`: the answer arrived (recover mode), the last publication arrived.
    answered: Duration,
    complete: Duration,
}

fn percentiles(mut v: Vec<f64>) -> Value {
    if v.is_empty() {
        return Value::Null;
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    json!({"min": v[0], "p50": at(0.5), "p99": at(0.99), "max": v[v.len() - 1]})
}

fn rusage() -> (f64, f64) {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (tv(ru.ru_utime), tv(ru.ru_stime))
}

fn wait_for_go() {
    for line in std::io::stdin().lock().lines() {
        match line {
            Ok(l) if l.trim() == "go" => return,
            Ok(_) => {}
            Err(e) => fail(format!("stdin: {e}")),
        }
    }
    fail("stdin ended before go".into());
}

fn main() {
    let args = Args::parse();
    let (host, port, path) = parse_url(&args.url).unwrap_or_else(|e| fail(e));
    if args.clients == 0 {
        fail("--clients must be at least 1".into());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(format!("runtime: {e}")));
    let step = Duration::from_secs_f64(args.timeout);
    let topic = args.topic.clone();

    // 1. Connect everyone and note the stream's position.
    let plain = format!("{path}?topics={topic}");
    let conns: Vec<(Conn, String, u64)> = rt.block_on(async {
        let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(args.connect_concurrency.max(1)));
        let tasks: Vec<_> = (0..args.clients)
            .map(|_| {
                let (host, plain, topic, sem) =
                    (host.clone(), plain.clone(), topic.clone(), sem.clone());
                tokio::spawn(async move {
                    let _permit = sem.acquire_owned().await.map_err(|e| e.to_string())?;
                    let mut c = Conn::open(&host, port, &plain).await?;
                    let (epoch, seq) = stream_of(&c.answer().await?, &topic)?;
                    Ok::<_, String>((c, epoch, seq))
                })
            })
            .collect();
        let mut out = Vec::with_capacity(tasks.len());
        for t in tasks {
            match tokio::time::timeout(step, t).await {
                Ok(Ok(Ok(x))) => out.push(x),
                Ok(Ok(Err(e))) => fail(format!("connecting: {e}")),
                Ok(Err(e)) => fail(format!("connecting: {e}")),
                Err(_) => fail("connecting: timed out".into()),
            }
        }
        out
    });
    let (epoch, seq) = (conns[0].1.clone(), conns[0].2);
    if let Some((_, e, s)) = conns.iter().find(|(_, e, s)| *e != epoch || *s != seq) {
        fail(format!(
            "answers disagree: {epoch}:{seq} and {e}:{s} (was something published?)"
        ));
    }
    emit(json!({"event": "connected", "clients": conns.len(), "epoch": epoch, "seq": seq}));

    // 1b. Every client gets the `--prime` publications the hub now sends, as
    // a client does before it loses its connection: the topic then has a
    // history, which the hub keeps while nobody is subscribed (a topic that
    // never had a publication is forgotten when its last subscriber leaves).
    let prefix = format!(r#"{{"type":"message","topic":"{topic}","seq":"#).into_bytes();
    let prime = args.prime;
    let conns: Vec<Conn> = rt.block_on(async {
        let tasks: Vec<_> = conns
            .into_iter()
            .map(|(mut c, _, _)| {
                let prefix = prefix.clone();
                tokio::spawn(async move {
                    c.publications(&prefix, seq + 1, prime).await?;
                    Ok::<_, String>(c)
                })
            })
            .collect();
        let deadline = tokio::time::Instant::now() + step;
        let mut out = Vec::with_capacity(tasks.len());
        for t in tasks {
            match tokio::time::timeout_at(deadline, t).await {
                Ok(Ok(Ok(c))) => out.push(c),
                Ok(Ok(Err(e))) => fail(format!("priming: {e}")),
                Ok(Err(e)) => fail(format!("priming: {e}")),
                Err(_) => fail("priming: timed out".into()),
            }
        }
        out
    });
    let seq = seq + prime;
    emit(json!({"event": "primed", "seq": seq}));

    // 2. Recover: everyone leaves while the hub publishes. Live: stay.
    let mut kept: Vec<Conn> = Vec::new();
    if args.mode == Mode::Recover {
        rt.block_on(async {
            let closes: Vec<_> = conns.into_iter().map(|c| tokio::spawn(c.close())).collect();
            for c in closes {
                if tokio::time::timeout(step, c).await.is_err() {
                    fail("closing: timed out".into());
                }
            }
        });
        emit(json!({"event": "disconnected"}));
    } else {
        kept = conns;
        emit(json!({"event": "ready"}));
    }

    // 3. The storm (or the live delivery), timed from `go`.
    wait_for_go();
    let cpu0 = rusage();
    let go = Instant::now();
    let since = format!("{path}?topics={topic}&since={topic}:{seq}:{epoch}");
    let count = args.count;
    let outcomes: Vec<Result<Done, String>> = rt.block_on(async {
        let mut tasks = Vec::with_capacity(args.clients);
        let mut kept = kept.into_iter();
        for _ in 0..args.clients {
            let (host, since, topic, prefix) =
                (host.clone(), since.clone(), topic.clone(), prefix.clone());
            let live = kept.next();
            tasks.push(tokio::spawn(async move {
                let (mut conn, answered) = match live {
                    Some(c) => (c, Duration::ZERO),
                    None => {
                        let mut c = Conn::open(&host, port, &since).await?;
                        let answer = c.answer().await?;
                        if answer["recovered"][&topic] != Value::Bool(true) {
                            return Err(format!("not recovered: {answer}"));
                        }
                        (c, go.elapsed())
                    }
                };
                conn.publications(&prefix, seq + 1, count).await?;
                Ok(Done {
                    conn,
                    answered,
                    complete: go.elapsed(),
                })
            }));
        }
        let deadline = tokio::time::Instant::now() + step;
        let mut out = Vec::with_capacity(tasks.len());
        for t in tasks {
            out.push(match tokio::time::timeout_at(deadline, t).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => Err(format!("task: {e}")),
                Err(_) => Err(format!("not complete within {:?}", step)),
            });
        }
        out
    });
    let wall = go.elapsed();
    let cpu1 = rusage();

    // 4. Nothing more may arrive; then report and leave.
    std::thread::sleep(Duration::from_millis(args.linger_ms));
    let mut errors: Vec<String> = Vec::new();
    let mut done: Vec<Done> = Vec::new();
    for o in outcomes {
        match o {
            Ok(mut d) => match d.conn.extra() {
                Ok(()) => done.push(d),
                Err(e) => errors.push(e),
            },
            Err(e) => errors.push(e),
        }
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let total = done.iter().map(|d| d.complete).max().unwrap_or_default();
    let error_count = errors.len();
    errors.truncate(ERRORS_LISTED);
    emit(json!({
        "event": "result",
        "mode": format!("{:?}", args.mode).to_lowercase(),
        "clients": args.clients,
        "count": count,
        "epoch": epoch,
        "from_seq": seq,
        "complete": done.len(),
        "exact": error_count == 0 && done.len() == args.clients,
        "error_count": error_count,
        "errors": errors,
        "publications_received": done.len() as u64 * count,
        "total_ms": ms(total),
        "wall_ms": ms(wall),
        "client_ms": percentiles(done.iter().map(|d| ms(d.complete)).collect()),
        "answer_ms": if args.mode == Mode::Recover {
            percentiles(done.iter().map(|d| ms(d.answered)).collect())
        } else {
            Value::Null
        },
        "cpu": {"user_s": cpu1.0 - cpu0.0, "sys_s": cpu1.1 - cpu0.1},
    }));
    rt.block_on(async {
        let closes: Vec<_> = done
            .into_iter()
            .map(|d| tokio::spawn(d.conn.close()))
            .collect();
        for c in closes {
            let _ = tokio::time::timeout(Duration::from_secs(5), c).await;
        }
    });
}
