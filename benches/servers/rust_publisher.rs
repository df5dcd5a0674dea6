//! The ceiling line of the benchmarks: wshub's core driven by a Rust
//! publisher thread, no Python anywhere. Next to the Python-driven row
//! (`wshub_server.py`, same core, one worker thread) it shows what the
//! binding costs.
//!
//! It speaks the benchmark servers' protocol (`benches/servers/_common.py`):
//! `--port --topic --payload --mode {closed,rate,burst} --window --rate
//! --count --worker-threads`; prints `{"event":"listening","port":P,...}`;
//! publishes `{"t":<ns>,"seq":N,"pad":"x..."}` once it reads `go` on stdin;
//! in closed mode keeps at most `--window` publications in flight, reading
//! the loadgen's feedback (the highest seq every subscriber has, a
//! little-endian u64 UDP datagram) on 127.0.0.1:<port>; on `stop` or end
//! of input prints `{"event":"stopped",...}` and exits.
//!
//! Built by `benches/setup.sh` (`cargo build --release --example
//! rust_publisher`); run by `benches/run.py --servers wshub-rust`.

use std::io::BufRead;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wshub::{Config, Server};

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Closed,
    Rate,
    Burst,
}

struct Args {
    port: u16,
    topic: String,
    payload: usize,
    mode: Mode,
    window: u64,
    rate: f64,
    count: u64,
    worker_threads: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        port: 0,
        topic: "bench".into(),
        payload: 100,
        mode: Mode::Closed,
        window: 64,
        rate: 1000.0,
        count: 0,
        worker_threads: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--port" => args.port = value.parse().map_err(|e| bad(&e))?,
            "--topic" => args.topic = value,
            "--payload" => args.payload = value.parse().map_err(|e| bad(&e))?,
            "--window" => args.window = value.parse().map_err(|e| bad(&e))?,
            "--rate" => args.rate = value.parse().map_err(|e| bad(&e))?,
            "--count" => args.count = value.parse().map_err(|e| bad(&e))?,
            "--worker-threads" => args.worker_threads = value.parse().map_err(|e| bad(&e))?,
            "--mode" => {
                args.mode = match value.as_str() {
                    "closed" => Mode::Closed,
                    "rate" => Mode::Rate,
                    "burst" => Mode::Burst,
                    _ => return Err(bad(&"expected closed, rate or burst")),
                }
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if args.mode == Mode::Burst && args.count == 0 {
        return Err("--mode burst needs --count N".into());
    }
    Ok(args)
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn emit(value: &serde_json::Value) {
    println!("{value}");
}

/// The same payload as the Python servers' `Payload`: about `size` bytes.
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

fn publish_loop(
    server: &Server,
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
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
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
        if server.broadcast(&args.topic, &text).is_err() {
            break;
        }
        published.store(seq, Ordering::Relaxed);
    }
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("rust_publisher: {message}");
            std::process::exit(2);
        }
    };
    let config = Config {
        port: args.port,
        worker_threads: args.worker_threads,
        ..Config::default()
    };
    let server = match Server::start(config) {
        Ok(server) => Arc::new(server),
        Err(error) => {
            eprintln!("rust_publisher: cannot start the hub: {error}");
            std::process::exit(1);
        }
    };
    let feedback = if args.mode == Mode::Closed {
        let sock = UdpSocket::bind(("127.0.0.1", server.port())).unwrap_or_else(|error| {
            eprintln!("rust_publisher: cannot bind the feedback socket: {error}");
            std::process::exit(1);
        });
        sock.set_read_timeout(Some(Duration::from_millis(50))).ok();
        Some(sock)
    } else {
        None
    };
    emit(&serde_json::json!({
        "event": "listening",
        "port": server.port(),
        "server": "wshub-rust",
        "version": env!("CARGO_PKG_VERSION"),
    }));

    let published = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut started: Option<Instant> = None;
    let mut publisher = None;
    let mut args = Some(args);
    let mut feedback = Some(feedback);
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        match line.trim() {
            "go" if started.is_none() => {
                started = Some(Instant::now());
                let (server, published, stop) = (
                    Arc::clone(&server),
                    Arc::clone(&published),
                    Arc::clone(&stop),
                );
                let (args, feedback) = (args.take(), feedback.take());
                publisher = Some(std::thread::spawn(move || {
                    if let (Some(args), Some(feedback)) = (args, feedback) {
                        publish_loop(&server, &args, feedback.as_ref(), &published, &stop);
                    }
                }));
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
    let stats = serde_json::to_value(server.stats()).unwrap_or_default();
    emit(&serde_json::json!({"event": "hub_stats", "stats": stats}));
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
    server.stop();
}
