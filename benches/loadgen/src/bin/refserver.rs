//! Reference server: the cheapest possible WebSocket fan-out source, used to
//! measure the loadgen's own ceiling. Every connection gets the ack frame, and
//! after `go` a stream of pre-framed messages, `--batch` frames per write
//! (per-connection seq counter, publisher timestamp taken once per batch).
//!
//! Frame payload (same shape as wshub's):
//! {"type":"message","topic":"bench","seq":<12 wide>,"data":{"t":<19 digits>,"pad":"xxx"}}

#[path = "../frame.rs"]
#[allow(dead_code)]
mod frame;

use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicU64, Ordering::*};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use clap::Parser;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Parser, Debug, Clone)]
#[command(about = "Reference WebSocket fan-out server (pre-framed batches)")]
struct Args {
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Bytes of the `data` JSON object (approximately).
    #[arg(long, default_value_t = 100)]
    payload: usize,
    /// Frames per write.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Per-connection messages/s (0 = as fast as TCP accepts).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Stop each connection after this many messages (0 = unlimited).
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// `stdin` (wait for a line `go`) or `immediate`.
    #[arg(long, default_value = "stdin")]
    start: String,
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

struct Template {
    frame: Vec<u8>,
    seq_off: usize,
    t_off: usize,
}

const SEQ_W: usize = 12;

fn template(payload: usize) -> Template {
    let head = "{\"type\":\"message\",\"topic\":\"bench\",\"seq\":";
    let seq = " ".repeat(SEQ_W);
    let mid = ",\"data\":{\"t\":";
    let t = "0".repeat(19);
    let data_skel = 4 + 19 + 10; // {"t":<19>,"pad":""}
    let pad = "x".repeat(payload.saturating_sub(data_skel));
    let text = format!("{head}{seq}{mid}{t},\"pad\":\"{pad}\"}}}}");
    let mut frame = Vec::new();
    frame::encode_frame(&mut frame, true, frame::OP_TEXT, text.as_bytes());
    let hdr = frame.len() - text.len();
    Template {
        seq_off: hdr + head.len(),
        t_off: hdr + head.len() + SEQ_W + mid.len(),
        frame,
    }
}

fn put_num(dst: &mut [u8], mut v: u64, pad: u8) {
    for i in (0..dst.len()).rev() {
        if v == 0 && i != dst.len() - 1 {
            dst[i] = pad;
        } else {
            dst[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }
}

async fn handshake(s: &mut TcpStream) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 2048];
    loop {
        let n = s.read(&mut tmp).await?;
        if n == 0 {
            return Err(std::io::Error::other("eof in handshake"));
        }
        buf.extend_from_slice(&tmp[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let key = text
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("sec-websocket-key")
                .then(|| v.trim().to_string())
        })
        .ok_or_else(|| std::io::Error::other("no key"))?;
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let accept = base64::engine::general_purpose::STANDARD.encode(h.finalize());
    let mut resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    )
    .into_bytes();
    frame::encode_frame(
        &mut resp,
        true,
        frame::OP_TEXT,
        br#"{"type":"connected","topics":["bench"],"rejected":[]}"#,
    );
    s.write_all(&resp).await
}

async fn serve(
    mut s: TcpStream,
    args: Arc<Args>,
    go: tokio::sync::watch::Receiver<Option<(Instant, u64)>>,
    sent: Arc<AtomicU64>,
) {
    s.set_nodelay(true).ok();
    if handshake(&mut s).await.is_err() {
        return;
    }
    let mut go = go;
    let (start, start_ns) = loop {
        if let Some(x) = *go.borrow() {
            break x;
        }
        if go.changed().await.is_err() {
            return;
        }
    };
    let tpl = template(args.payload);
    let flen = tpl.frame.len();
    let batch = args.batch.max(1);
    let mut buf = Vec::with_capacity(flen * batch);
    for _ in 0..batch {
        buf.extend_from_slice(&tpl.frame);
    }
    let (mut rd, mut wr) = s.into_split();
    // drain whatever the client sends (pongs, close) so its writes never block
    tokio::spawn(async move {
        let mut b = [0u8; 1024];
        while let Ok(n) = rd.read(&mut b).await {
            if n == 0 {
                break;
            }
        }
    });
    let mut seq: u64 = 0;
    loop {
        let mut n = if args.count > 0 {
            (args.count - seq).min(batch as u64) as usize
        } else {
            batch
        };
        if n == 0 {
            break;
        }
        // open loop: t is the scheduled send time on a grid shared by all
        // connections (so every subscriber sees the same t for the same seq)
        let mut t = now_ns();
        if args.rate > 0.0 {
            let off = Duration::from_secs_f64(seq as f64 / args.rate);
            tokio::time::sleep_until((start + off).into()).await;
            // Only the frames already due go out: a batch ahead of its
            // schedule would stamp send times in the future (and, at low
            // rates, hold the next write back by batch/rate seconds).
            let due = (start.elapsed().as_secs_f64() * args.rate) as u64 + 1;
            n = n.min(due.saturating_sub(seq).max(1) as usize);
        }
        for i in 0..n {
            if args.rate > 0.0 {
                t = start_ns + (seq as f64 * 1e9 / args.rate) as u64;
            }
            seq += 1;
            let f = &mut buf[i * flen..(i + 1) * flen];
            put_num(&mut f[tpl.seq_off..tpl.seq_off + SEQ_W], seq, b' ');
            put_num(&mut f[tpl.t_off..tpl.t_off + 19], t, b'0');
        }
        if wr.write_all(&buf[..n * flen]).await.is_err() {
            break;
        }
        sent.fetch_add(n as u64, Relaxed);
    }
    // keep the connection open until the client goes away
    std::future::pending::<()>().await;
}

fn main() {
    let args = Arc::new(Args::parse());
    unsafe {
        let mut rl: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 {
            rl.rlim_cur = rl.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let sock = tokio::net::TcpSocket::new_v4().expect("socket");
        sock.set_reuseaddr(true).ok();
        sock.bind(
            (
                "127.0.0.1".parse::<std::net::Ipv4Addr>().unwrap(),
                args.port,
            )
                .into(),
        )
        .expect("bind");
        let l = sock.listen(4096).expect("listen");
        let port = l.local_addr().unwrap().port();
        println!("{{\"event\":\"listening\",\"port\":{port}}}");
        std::io::stdout().flush().ok();
        let now = || Some((Instant::now(), now_ns()));
        let (tx, rx) = tokio::sync::watch::channel(if args.start == "immediate" {
            now()
        } else {
            None
        });
        let sent = Arc::new(AtomicU64::new(0));
        let sent2 = sent.clone();
        std::thread::spawn(move || {
            let stdin = std::io::stdin();
            for line in stdin.lock().lines() {
                match line.as_deref().map(str::trim) {
                    Ok("go") => {
                        let _ = tx.send(now());
                    }
                    Ok("stats") => {
                        println!("{{\"event\":\"stats\",\"sent\":{}}}", sent2.load(Relaxed));
                        std::io::stdout().flush().ok();
                    }
                    Ok("stop") | Err(_) => break,
                    _ => {}
                }
            }
            println!(
                "{{\"event\":\"stopped\",\"published\":{}}}",
                sent2.load(Relaxed)
            );
            std::io::stdout().flush().ok();
            std::process::exit(0);
        });
        loop {
            match l.accept().await {
                Ok((s, _)) => {
                    tokio::spawn(serve(s, args.clone(), rx.clone(), sent.clone()));
                }
                Err(e) => {
                    eprintln!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn template_is_valid_json() {
        let mut t = super::template(100);
        let (f, _) = super::frame::parse_one(&t.frame).unwrap().unwrap();
        let hdr = t.frame.len() - f.payload.len();
        let _ = hdr;
        super::put_num(&mut t.frame[t.seq_off..t.seq_off + super::SEQ_W], 42, b' ');
        super::put_num(
            &mut t.frame[t.t_off..t.t_off + 19],
            1_700_000_000_000_000_001,
            b'0',
        );
        let (f, _) = super::frame::parse_one(&t.frame).unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_slice(f.payload).unwrap();
        assert_eq!(v["seq"], 42);
        assert_eq!(v["data"]["t"], 1_700_000_000_000_000_001u64);
        let s = super::frame::Scanner::new();
        assert_eq!(s.seq(f.payload), Some(42));
    }
}
