#!/usr/bin/env python3
"""Benchmark driver: fan-out throughput and latency of wshub and its peers.

For every server and scenario (subscribers x payload), repeated --repeat times:
  1. start the server pinned to CPU 0 (taskset -c 0) on a free loopback port;
  2. start the loadgen pinned to CPU 1 with N subscribers, wait for "ready";
  3. say "go" to both; the server publishes closed-loop (at most --window
     publications not yet delivered to every subscriber, fed back by the loadgen
     over UDP), the loadgen measures for --duration seconds after --warmup;
  4. collect the loadgen result, the server's CPU use over the window, stop both.

Writes benches/results/run-<timestamp>.json and a markdown table (--markdown).

  python3 benches/run.py                      # quick: 100 and 1000 subscribers, 100 B
  python3 benches/run.py --servers wshub,node-ws --subs 100,1000,10000 --repeat 5
  python3 benches/run.py --markdown BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import queue

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
LOADGEN = os.path.join(HERE, "loadgen", "target", "release", "loadgen")
REFSERVER = os.path.join(HERE, "loadgen", "target", "release", "refserver")
RINGHUB = os.path.join(HERE, "loadgen", "target", "release", "ringhub")
# The Cargo profile wshub and the Rust publisher were built with (make bench:
# `fast`, make bench-full: `release`); recorded with every run.
PROFILE = os.environ.get("WSHUB_BENCH_PROFILE", "release")
RUST_PUBLISHER = os.path.join(REPO, "target", PROFILE, "examples", "rust_publisher")
VENV_PY = os.path.join(HERE, ".venv", "bin", "python")
VENV312_PY = os.path.join(HERE, ".venv312", "bin", "python")
WSHUB_PY = os.environ.get("WSHUB_PYTHON") or os.path.join(REPO, ".venv", "bin", "python")
SRV = os.path.join(HERE, "servers")
CLK_TCK = os.sysconf("SC_CLK_TCK")

# name -> (argv prefix, import check (python, module) or None, description)
SERVERS = {
    "reference": ([REFSERVER], None, "Rust pre-framed writer (loadgen ceiling; not a pub/sub server)"),
    "ring-ref": ([RINGHUB], None,
                 "minimal Rust hub: one ring of pre-framed publications per topic, a cursor per subscriber, "
                 "one writev per wake-up (latency reference; not a product)"),
    "wshub": ([WSHUB_PY, os.path.join(SRV, "wshub_server.py")], (WSHUB_PY, "wshub"),
              "wshub, hub.broadcast() from a Python thread"),
    "wshub-rust": ([RUST_PUBLISHER], None,
                   "wshub's core, Server::broadcast from a Rust thread (no Python): the binding's ceiling"),
    "fastapi": ([VENV_PY, os.path.join(SRV, "fastapi_server.py")], (VENV_PY, "fastapi"),
                "FastAPI + uvicorn (ws=websockets), ConnectionManager loop of await send_text"),
    "websockets": ([VENV_PY, os.path.join(SRV, "websockets_server.py")], (VENV_PY, "websockets"),
                   "websockets asyncio server, websockets.broadcast()"),
    "node-ws": (["node", os.path.join(SRV, "node_ws_server.js")], None, "Node.js npm ws, send() loop"),
    "wshub-deflate": ([WSHUB_PY, os.path.join(SRV, "wshub_server.py"), "--compression"], (WSHUB_PY, "wshub"),
                      "wshub with permessage-deflate: each publication compressed once, the frame shared"),
    "node-ws-deflate": (["node", os.path.join(SRV, "node_ws_server.js"), "--deflate", "1"], None,
                        "Node.js npm ws with perMessageDeflate (compresses per delivery)"),
    "socketify": ([VENV_PY, os.path.join(SRV, "socketify_server.py")], (VENV_PY, "socketify"),
                  "socketify (uWebSockets) app.publish"),
    "wse": ([VENV312_PY, os.path.join(SRV, "wse_peer_server.py")], (VENV312_PY, "wse_server"),
            "wse-server (Python 3.12)"),
}
DEFAULT_SERVERS = "reference,ring-ref,wshub-rust,wshub,fastapi,websockets,node-ws,socketify,wse"
# Loadgen flags a server needs (added to --loadgen-args): the compressing
# servers only compress for a client that offers permessage-deflate.
SERVER_LOADGEN_ARGS = {"wshub-deflate": ["--deflate"], "node-ws-deflate": ["--deflate"]}
# Servers whose script takes --payload-kind (servers/_common.py, node_ws_server.js).
PAYLOAD_KINDS = {"wshub", "wshub-deflate", "fastapi", "websockets", "node-ws", "node-ws-deflate", "socketify", "wse"}


def free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 (UDP carries the feedback)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port")


def _raise_nofile():
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def cpu_busy():
    """Busy (non-idle, non-iowait) jiffies per CPU from /proc/stat."""
    out = {}
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("cpu") and line[3].isdigit():
                    name, *v = line.split()
                    v = [int(x) for x in v]
                    out[name] = sum(v[:8]) - v[3] - v[4]
    except OSError:
        pass
    return out


class Proc:
    """A child process with line-oriented JSON stdout read on a thread."""

    def __init__(self, argv, name, stderr_path):
        self.name = name
        self.err = open(stderr_path, "w")
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=self.err, text=True, bufsize=1, preexec_fn=_raise_nofile)
        self.lines: queue.Queue = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.p.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                self.lines.put(json.loads(line))
            except json.JSONDecodeError:
                self.lines.put({"event": "text", "text": line})
        self.lines.put({"event": "eof"})

    def wait_event(self, event, timeout):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.name}: no {event!r} within {timeout}s")
            try:
                msg = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if msg.get("event") == event:
                return msg
            if msg.get("event") == "eof":
                raise RuntimeError(f"{self.name} exited (rc={self.p.poll()}) before {event!r}; see {self.err.name}")

    def send(self, line):
        try:
            self.p.stdin.write(line + "\n")
            self.p.stdin.flush()
        except (BrokenPipeError, OSError):
            pass

    def cpu_seconds(self):
        try:
            with open(f"/proc/{self.p.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime
        except (OSError, IndexError, ValueError):
            return None

    def stop(self, timeout=5.0):
        try:
            self.p.stdin.close()
        except OSError:
            pass
        try:
            self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.terminate()
            try:
                self.p.wait(3)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        # The child is gone, so the reader reaches end of file.
        self.reader.join(5)
        self.p.stdout.close()
        self.err.close()


def pin(cpu, argv, use_taskset):
    return (["taskset", "-c", str(cpu)] + argv) if use_taskset else argv


def available(name):
    argv, check, _ = SERVERS[name]
    exe = argv[0]
    if shutil.which(exe) is None and not os.path.exists(exe):
        return f"{exe} not found (run benches/setup.sh)"
    if check:
        py, mod = check
        r = subprocess.run([py, "-c", f"import {mod}"], capture_output=True, text=True)
        if r.returncode != 0:
            return f"cannot import {mod} with {py}: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}"
    if name.startswith("node-ws"):
        r = subprocess.run(["node", "-e", "require(process.argv[1])", os.path.join(HERE, "node_modules", "ws")],
                           capture_output=True, text=True)
        if r.returncode != 0:
            return "npm ws not installed (run benches/setup.sh)"
    return None


def run_once(name, subs, args, logdir, tag):
    port = free_port()
    argv, _, _ = SERVERS[name]
    if name == "reference":
        sargv = argv + ["--port", str(port), "--payload", str(args.payload), "--batch", str(args.ref_batch)]
        if args.mode == "rate":
            sargv += ["--rate", str(args.rate)]  # per connection
    else:
        sargv = argv + ["--port", str(port), "--topic", "bench", "--payload", str(args.payload),
                        "--mode", args.mode, "--window", str(args.window), "--rate", str(args.rate)]
        if args.mode == "burst":
            sargv += ["--count", str(args.count)]
        if getattr(args, "payload_kind", "pad") != "pad":
            sargv += ["--payload-kind", args.payload_kind]
    server = Proc(pin(0, sargv, args.taskset), f"{name}-server", os.path.join(logdir, f"{tag}.server.err"))
    loadgen = None
    try:
        info = server.wait_event("listening", 60)
        lg = [LOADGEN, "--url", f"ws://127.0.0.1:{info['port']}/api/ws?topics=bench",
              "-c", str(subs), "--start", "stdin", "--warmup", str(args.warmup), "-d", str(args.duration),
              "--threads", "1"] + args.loadgen_args.split() + SERVER_LOADGEN_ARGS.get(name, [])
        if name != "reference" and args.mode == "closed":
            lg += ["--feedback", f"127.0.0.1:{info['port']}"]
        loadgen = Proc(pin(1, lg, args.taskset), f"{name}-loadgen", os.path.join(logdir, f"{tag}.loadgen.err"))
        ready = loadgen.wait_event("ready", 180)
        if ready["ready"] < subs:
            raise RuntimeError(f"only {ready['ready']}/{subs} subscribers ready: {ready.get('first_error')}")
        server.send("go")
        loadgen.send("go")
        loadgen.wait_event("started", 10)
        time.sleep(args.warmup)
        c0 = server.cpu_seconds()
        b0 = cpu_busy()
        t0 = time.monotonic()
        res = loadgen.wait_event("result", args.duration + 60)
        c1 = server.cpu_seconds()
        b1 = cpu_busy()
        t1 = time.monotonic()
        server.send("stop")
        try:
            stopped = server.wait_event("stopped", 10)
        except (TimeoutError, RuntimeError):
            stopped = {}
        res["server_cpu_pct"] = (100.0 * (c1 - c0) / (t1 - t0)) if c0 is not None and c1 is not None else None
        # CPU used by anything other than server + loadgen while measuring (other
        # tenants, builds): the results are only trustworthy when this is small
        if b0 and b1 and c0 is not None and c1 is not None:
            busy = sum(b1[k] - b0.get(k, 0) for k in b1) / CLK_TCK
            other = busy - (c1 - c0) - (res["cpu"]["user_s"] + res["cpu"]["sys_s"])
            res["other_cpu_pct"] = max(0.0, 100.0 * other / (t1 - t0))
        res["server_info"] = info
        res["server_stopped"] = stopped
        return res
    finally:
        if loadgen:
            loadgen.stop()
        server.stop()


def fmt_range(vals, fmt="{:,.0f}"):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "-"
    med = statistics.median(vals)
    if len(vals) == 1:
        return fmt.format(med)
    return f"{fmt.format(med)} ({fmt.format(min(vals))}-{fmt.format(max(vals))})"


def machine_info():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass

    def ver(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
        except Exception:  # noqa: BLE001
            return None

    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "host": platform.node(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "rustc": ver(["rustc", "--version"]),
        "node": ver(["node", "--version"]),
        "wshub_profile": PROFILE,
    }


def write_markdown(path, machine, rows, args, skipped, results_path=None):
    """The fan-out tables: the head of `path` (everything above KEEP_MARKER), or with
    --section NAME a section of that name below it."""
    out = []
    section = getattr(args, "section", None)
    if section:
        out.append(f"### {section}\n")
        out.append(f"Generated by `benches/run.py` on {machine['date']}"
                   + (f" (`{os.path.relpath(results_path, REPO)}`)" if results_path else "") + ".\n")
    else:
        out.append("# Fan-out benchmarks\n")
        out.append(f"Generated by `benches/run.py` on {machine['date']}.\n")
        out.append(f"* Machine: {machine['host']}, {machine['cpus']} CPUs, {machine['cpu']}")
        out.append(f"* Kernel: {machine['kernel']} ({machine['os']})")
        out.append(f"* Toolchains: Python {machine['python']}, {machine['rustc']}, Node {machine['node']}")
        out.append(f"* wshub and `wshub-rust` built with Cargo's `{machine.get('wshub_profile', 'release')}` profile"
                   + (" (what users install: thin LTO, one codegen unit)"
                      if machine.get("wshub_profile", "release") == "release"
                      else " (no LTO, 16 codegen units: quicker to build than the `release` build users install)"))
    versions = sorted({f"{r['server']} {r['version']}" for r in rows if r.get("version")})
    if versions:
        out.append(f"* Servers: {', '.join(versions)}")
    out.append(f"* Method: server pinned to CPU 0, loadgen (Rust, raw frame parser) pinned to CPU 1"
               f"{'' if args.taskset else ' (taskset disabled!)'}; "
               + {"closed": f"closed loop with at most {args.window} publications in flight (feedback from the loadgen)",
                  "rate": (f"open loop at {args.loads}% of each server's closed-loop deliveries/s at the same "
                           f"subscriber count (from `{shown_path(args.max_from)}`); the publisher stamps each payload with its "
                           "scheduled send time, so publisher lag counts as latency (no coordinated omission)"
                           if getattr(args, "loads", None) else f"open loop at {args.rate:g} publications/s"),
                  "burst": f"a burst of {getattr(args, 'count', 0):,} publications back to back"}[args.mode]
               + (f"; loadgen flags `{args.loadgen_args}`" if args.loadgen_args else "")
               + f"; payload {args.payload} B"
               + (" of betting-market JSON (`--payload-kind json`)" if getattr(args, "payload_kind", "pad") == "json" else "")
               + f"; {args.warmup}s warm-up + {args.duration}s "
               f"measured; {args.repeat} runs, median (min-max).")
    out.append(f"* `reference` is a Rust writer of pre-framed batches ({args.ref_batch} frames per write, no pub/sub): "
               "it shows the measuring setup's own ceiling. Loadgen CPU near 100% means the row is loadgen-bound.")
    ceilings = loadgen_ceilings(rows)
    for r in rows:
        if r["server"] == "reference" and r["runs"]:
            c = ceilings.get(r["subs"])
            if c:
                out.append(f"* Loadgen ceiling at {r['subs']:,} connections, extrapolated from its CPU use "
                           f"(deliveries/s / loadgen CPU share): about {c['ceiling']:,.0f} deliveries/s "
                           f"({c['ns_per_delivery']:,.0f} ns of loadgen CPU per delivery; "
                           f"{args.ref_batch} frames per write).")
    out.append(f"* `bound` column: `LG` = load-generator-bound (median loadgen CPU >= {LG_BOUND_CPU:.0f}% or "
               f"median deliveries/s >= {LG_BOUND_FRAC:.0%} of the loadgen ceiling at that subscriber count), "
               f"`LG?` = loadgen CPU >= {LG_NEAR_CPU:.0f}% (possibly loadgen-bound: CPU 1 is shared with other load), "
               f"`S` = server CPU saturated (median server CPU >= {SRV_BOUND_CPU:.0f}%), "
               "`-` = neither (latency/window-bound or disturbed by other load).")
    out.append("* `loadgen ns/delivery`: loadgen CPU time per delivered frame; 1e9 / that is what the loadgen "
               "could take of this server's frames on a whole core (it depends on how many frames arrive per read).")
    out.append("* `delivered %`: frames received / (received + missing seq numbers), all runs; subscribers "
               "closed during a run or failing to connect are shown as `(N closed)`.")
    if args.mode == "closed":
        out.append("* Closed-loop latency is mostly queueing: about window x subscribers / deliveries/s "
                   "(Little's law). Use `--mode rate` for latency at a given load.")
    out.append("* `other CPU %`: CPU time used by other processes on the machine during the window "
               "(100 = one whole core); large values mean the figures are disturbed.\n")
    if args.mode == "burst":
        write_burst_table(out, rows, args)
    else:
        write_rate_table(out, rows, ceilings)
    write_compression_table(out, rows)
    if skipped:
        out.append("\nNot run:\n")
        for k, v in skipped.items():
            out.append(f"* {k}: {v}")
    if section:
        write_section(path, *section_markers(section), "\n".join(out) + "\n")
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    # Anything below KEEP_MARKER in an existing file (hand-written sections:
    # targets, broadcast cost, memory, chart) is carried over unchanged.
    kept = ""
    try:
        with open(path) as f:
            old = f.read()
        i = old.find(KEEP_MARKER)
        if i >= 0:
            kept = "\n" + old[i:]
    except OSError:
        pass
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n" + kept)


def write_burst_table(out, rows, args):
    """Scenario (c): --count publications back to back; how much arrived and how long the last one took."""
    out.append(f"* Burst: {args.count:,} publications back to back at `go`; `delivered %` = frames received / "
               f"({args.count:,} x subscribers); `last frame after` = the largest latency, i.e. when the last "
               "delivery arrived counted from its publication.\n")
    out.append("| server | subscribers | delivered % | last frame after ms | p50 µs | p99 µs | server CPU % | gaps |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        rs = r["runs"]
        if not rs:
            out.append(f"| {r.get('label', r['server'])} | {r['subs']:,} | failed: {r.get('error', '?')} | | | | | |")
            continue
        want = args.count * r["subs"]
        out.append("| {} | {:,} | {} | {} | {} | {} | {} | {} |".format(
            r.get("label", r["server"]), r["subs"],
            fmt_range([100.0 * x["received_total"] / want for x in rs], "{:.2f}"),
            fmt_range([x["latency_us"]["max"] / 1000 for x in rs], "{:,.1f}"),
            fmt_range([x["latency_us"]["p50"] for x in rs]),
            fmt_range([x["latency_us"]["p99"] for x in rs]),
            fmt_range([x.get("server_cpu_pct") for x in rs]),
            sum(x["gaps"] for x in rs),
        ))


def write_rate_table(out, rows, ceilings):
    out.append("| server | subscribers | deliveries/s | p50 µs | p99 µs | p99.9 µs | max µs | server CPU % | loadgen CPU % | other CPU % | loadgen ns/delivery | delivered % | gaps | bound |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        rs = r["runs"]
        if not rs:
            out.append(f"| {r.get('label', r['server'])} | {r['subs']:,} | failed: {r.get('error', '?')} | | | | | | | | | | | |")
            continue
        lat = lambda k: [x["latency_us"][k] for x in rs]  # noqa: E731
        dl = delivered_pct(rs)
        out.append("| {} | {:,} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
            r.get("label", r["server"]), r["subs"],
            fmt_range([x["deliveries_per_s"] for x in rs]),
            fmt_range(lat("p50")), fmt_range(lat("p99")), fmt_range(lat("p999")), fmt_range(lat("max")),
            fmt_range([x.get("server_cpu_pct") for x in rs]),
            fmt_range([x["cpu"]["pct"] for x in rs]),
            fmt_range([x.get("other_cpu_pct") for x in rs]),
            fmt_range([1e7 * x["cpu"]["pct"] / x["deliveries_per_s"] for x in rs if x["deliveries_per_s"]]),
            ("-" if dl is None else f"{dl:.2f}")
            + (f" ({closed} closed)" if (closed := sum(x.get("closed_during_run", 0) + x.get("failed", 0) for x in rs)) else ""),
            sum(x["gaps"] for x in rs),
            boundness(r, ceilings),
        ))


def write_compression_table(out, rows):
    """With a compressing server among the rows: what the loadgen's subscribers
    negotiated and received compressed (loadgen `--deflate`), and each
    `X-deflate` row's server CPU over row `X`'s at the same subscriber count."""
    def z(x):
        return x.get("deflate") or {}

    zrows = [r for r in rows if any(z(x).get("negotiated") for x in r["runs"])]
    if not zrows:
        return
    out.append("\nCompression (permessage-deflate, as the loadgen's subscribers saw it; `server CPU x` = this row's "
               "median server CPU over the same server's uncompressed row at the same subscriber count):\n")
    out.append("| server | subscribers | negotiated | server_no_context_takeover | compressed messages | "
               "wire B/message | inflated B/message | ratio | server CPU % | server CPU x |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")

    def med_cpu(row):
        v = [x.get("server_cpu_pct") for x in row["runs"] if x.get("server_cpu_pct") is not None]
        return statistics.median(v) if v else None

    for r in zrows:
        rs = r["runs"]
        msgs = sum(z(x).get("compressed_messages", 0) for x in rs)
        wire = sum(z(x).get("wire_bytes", 0) for x in rs)
        infl = sum(z(x).get("inflated_bytes", 0) for x in rs)
        base_name = r["server"].removesuffix("-deflate")
        base = next((b for b in rows if b["server"] == base_name and b["subs"] == r["subs"]
                     and b.get("rate") == r.get("rate") and b["runs"]), None)
        cpu, bcpu = med_cpu(r), (med_cpu(base) if base else None)
        out.append("| {} | {:,} | {} | {} | {:,} | {} | {} | {} | {} | {} |".format(
            r.get("label", r["server"]), r["subs"],
            fmt_range([z(x).get("negotiated", 0) for x in rs]),
            fmt_range([z(x).get("server_no_context_takeover", 0) for x in rs]),
            msgs,
            f"{wire / msgs:,.0f}" if msgs else "-",
            f"{infl / msgs:,.0f}" if msgs else "-",
            f"{infl / wire:.2f}" if wire else "-",
            fmt_range([x.get("server_cpu_pct") for x in rs]),
            f"{cpu / bcpu:.2f}x" if cpu is not None and bcpu else "-",
        ))


KEEP_MARKER = "<!-- run.py keeps everything below this line -->"


def section_markers(name):
    return (f"<!-- benches: {name}: begin (generated, rewritten by the next run) -->",
            f"<!-- benches: {name}: end -->")


def write_section(path, begin, end, text):
    """Replace the begin..end block of `path` with `text`; if absent, insert it before
    '## Targets' below KEEP_MARKER (so that run.py --markdown keeps it), else append."""
    block = f"{begin}\n\n{text}\n{end}\n"
    try:
        with open(path) as f:
            old = f.read()
    except OSError:
        old = ""
    i, j = old.find(begin), old.find(end)
    if i >= 0 and j > i:
        new = old[:i] + block + "\n" + old[j + len(end):].lstrip("\n")
    else:
        if old.find(KEEP_MARKER) < 0:
            old = old.rstrip("\n") + ("\n\n" if old else "") + KEEP_MARKER + "\n"
        k = old.find("\n## Targets", old.find(KEEP_MARKER))
        if k >= 0:
            new = old[:k + 1] + block + "\n" + old[k + 1:]
        else:
            new = old.rstrip("\n") + "\n\n" + block
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(new)
LG_BOUND_CPU = 90.0    # loadgen CPU % (100 = its one core) from which a row counts as loadgen-bound
LG_BOUND_FRAC = 0.70   # ... or deliveries/s at least this share of the loadgen ceiling
LG_NEAR_CPU = 70.0     # loadgen CPU % from which it may have been the limit (CPU 1 is shared with other load)
SRV_BOUND_CPU = 90.0   # server CPU % (100 = CPU 0) from which the server is saturated


def loadgen_ceilings(rows):
    """subs -> {"ceiling": deliveries/s per full loadgen core, "ns_per_delivery"} from the reference rows."""
    out = {}
    for r in rows:
        if r["server"] != "reference" or not r["runs"]:
            continue
        est = [x["deliveries_per_s"] / (x["cpu"]["pct"] / 100.0) for x in r["runs"] if x["cpu"]["pct"] > 1]
        if est:
            c = statistics.median(est)
            out[r["subs"]] = {"ceiling": c, "ns_per_delivery": 1e9 / c}
    return out


def delivered_pct(runs):
    """Frames received / (received + missing seq numbers), over all runs; None without seq numbers.
    A subscriber closed during the run is reported separately (closed_during_run)."""
    got = gaps = 0
    for x in runs:
        if "received_total" not in x or x.get("no_seq") or (x.get("last_seq") or {}).get("max") in (None, 0):
            return None
        got += x["received_total"]
        gaps += x.get("gaps", 0)
    return 100.0 * got / (got + gaps) if got + gaps else None


def boundness(row, ceilings):
    rs = row["runs"]
    if row["server"] == "reference":
        return "LG (by design)"
    flags = []
    lg_cpu = statistics.median([x["cpu"]["pct"] for x in rs])
    rate = statistics.median([x["deliveries_per_s"] for x in rs])
    c = ceilings.get(row["subs"])
    if lg_cpu >= LG_BOUND_CPU or (c and rate >= LG_BOUND_FRAC * c["ceiling"]):
        flags.append("LG")
    elif lg_cpu >= LG_NEAR_CPU:
        flags.append("LG?")
    srv = [x.get("server_cpu_pct") for x in rs if x.get("server_cpu_pct") is not None]
    if srv and statistics.median(srv) >= SRV_BOUND_CPU:
        flags.append("S")
    return "+".join(flags) or "-"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--servers", default=DEFAULT_SERVERS)
    ap.add_argument("--subs", default="100,1000", help="comma-separated subscriber counts")
    ap.add_argument("--payload", type=int, default=100)
    ap.add_argument("--payload-kind", choices=["pad", "json"], default="pad",
                    help="pad: one run of x (compresses ~25x at 1 KiB); json: betting-market JSON "
                         "(compresses ~3x alone; servers/_common.py markets_json). `reference` ignores it; "
                         "servers without it are skipped")
    ap.add_argument("--mode", choices=["closed", "rate", "burst"], default="closed",
                    help="closed: max throughput with --window in flight; rate: open loop at --rate publications/s; "
                         "burst: --count publications back to back, measured until --duration ends")
    ap.add_argument("--count", type=int, default=10000, help="burst mode: publications in the burst")
    ap.add_argument("--window", type=int, default=128)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--loads", help="rate mode: comma-separated percentages of each server's closed-loop "
                                    "deliveries/s (from --max-from) instead of one --rate, e.g. 10,50,80")
    ap.add_argument("--max-from", default="newest", metavar="RESULTS_JSON",
                    help="with --loads: a closed-loop results/run-*.json, or `newest` (the newest closed-loop "
                         "run with this --payload in --out)")
    ap.add_argument("--section", metavar="NAME",
                    help="write the tables as section NAME of --markdown (below its keep line, replaced by the "
                         "next run with the same NAME) instead of the file's head")
    ap.add_argument("--loadgen-args", default="", help='extra loadgen flags, e.g. "--coalesce-us 100"')
    ap.add_argument("--ref-batch", type=int, default=128, help="frames per write of the reference server")
    ap.add_argument("--base-publisher", metavar="PATH",
                    help="a rust_publisher built from another commit (a before/after run): "
                         "measured as server `wshub-rust-base` right after `wshub-rust`")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--no-taskset", dest="taskset", action="store_false")
    ap.add_argument("--render", metavar="RESULTS_JSON",
                    help="run nothing: rewrite --markdown from an earlier results/run-*.json")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--markdown", default=os.path.join(HERE, "results", "BENCHMARKS.sample.md"))
    args = ap.parse_args()
    if args.render:
        ns = args
        with open(args.render) as f:
            old = json.load(f)
        md = args.markdown
        args = argparse.Namespace(**{**vars(ap.parse_args([])), **old["args"]})
        if ns.section:
            args.section = ns.section
        write_markdown(md, old["machine"], old["rows"], args, old.get("skipped", {}), ns.render)
        print(f"wrote {md}", file=sys.stderr)
        return
    if args.taskset and (shutil.which("taskset") is None or (os.cpu_count() or 1) < 2):
        print("taskset unavailable or < 2 CPUs: running unpinned", file=sys.stderr)
        args.taskset = False
    if args.mode == "burst":
        args.warmup = 0.0  # the burst starts at "go": every frame of it is measured
    if not os.path.exists(LOADGEN):
        sys.exit("loadgen not built: run benches/setup.sh (or cargo build --release in benches/loadgen)")
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    logdir = os.path.join(args.out, "logs", stamp)
    os.makedirs(logdir, exist_ok=True)
    machine = machine_info()
    maxima = {}
    if args.loads:
        if args.mode != "rate":
            sys.exit("--loads needs --mode rate")
        if args.max_from == "newest":
            args.max_from = newest_closed_run(args.out, args.payload, [int(x) for x in args.subs.split(",")])
        maxima = closed_loop_maxima(args.max_from)
    rows, skipped = [], {}
    names = [s.strip() for s in args.servers.split(",") if s.strip()]
    if args.base_publisher:
        SERVERS["wshub-rust-base"] = ([os.path.abspath(args.base_publisher)], None,
                                      "wshub-rust built from the base commit of a before/after run")
        at = names.index("wshub-rust") + 1 if "wshub-rust" in names else len(names)
        names.insert(at, "wshub-rust-base")
        if os.environ.get("WSHUB_BENCH_BASE_FIRST"):
            names.remove("wshub-rust-base")
            names.insert(max(at - 1, 0), "wshub-rust-base")
    for name in names:
        if name not in SERVERS:
            sys.exit(f"unknown server {name}; known: {', '.join(SERVERS)}")
        why = available(name)
        if not why and args.payload_kind != "pad" and name not in PAYLOAD_KINDS and name != "reference":
            why = f"no --payload-kind {args.payload_kind}"
        if not why and name == "reference" and args.mode == "burst":
            why = "the reference writer has no burst mode"
        if not why and name == "ring-ref" and args.mode == "burst":
            # Its slow-consumer bound is its ring: a burst longer than the
            # ring closes every subscriber (1008), by design.
            why = "a burst longer than its ring (1,024) closes every subscriber as a slow consumer, by design"
        if why:
            skipped[name] = why
            print(f"[skip] {name}: {why}", file=sys.stderr)
            continue
        for subs, label, rargs in scenarios(name, args, maxima):
            row = {"server": name, "subs": subs, "payload": args.payload, "runs": []}
            if label:
                row["label"], row["rate"] = label, rargs.rate
            for i in range(args.repeat):
                tag = f"{name}-{subs}-{i}" + (f"-{rargs.rate:g}" if label else "")
                try:
                    res = run_once(name, subs, rargs, logdir, tag)
                except Exception as e:  # noqa: BLE001
                    print(f"[fail] {tag}: {e}", file=sys.stderr)
                    row["error"] = str(e)[:200]
                    continue
                row["version"] = res["server_info"].get("version")
                row["runs"].append(res)
                print(f"[run] {tag}: {res['deliveries_per_s']:,.0f} deliveries/s, p50 {res['latency_us']['p50']:.0f}us "
                      f"p99 {res['latency_us']['p99']:.0f}us, gaps {res['gaps']}, server cpu "
                      f"{res['server_cpu_pct'] or 0:.0f}%, loadgen cpu {res['cpu']['pct']:.0f}%, other cpu "
                      f"{res.get('other_cpu_pct') or 0:.0f}%", file=sys.stderr)
            rows.append(row)
        if args.loads and not any(True for _ in scenarios(name, args, maxima)):
            skipped[name] = "no closed-loop figure to take a rate from"
    out_json = os.path.join(args.out, f"run-{stamp}.json")
    with open(out_json, "w") as f:
        json.dump({"machine": machine, "args": recorded_args(args), "rows": rows, "skipped": skipped}, f, indent=1)
    write_markdown(args.markdown, machine, rows, args, skipped, out_json)
    print(f"wrote {out_json} and {args.markdown}", file=sys.stderr)


def scenarios(name, args, maxima):
    """(subscribers, row label or None, args for run_once) for one server: one per --subs,
    or with --loads one per subscriber count and load, at that share of the server's max."""
    for subs in [int(x) for x in args.subs.split(",")]:
        if not args.loads:
            yield subs, None, args
            continue
        best = maxima.get((name, subs))
        if not best:
            continue
        for pct in [float(x) for x in args.loads.split(",")]:
            rate = max(1.0, round(best * pct / 100.0 / subs))
            yield subs, f"{name} ({pct:g}%: {rate:,.0f} pub/s)", argparse.Namespace(**{**vars(args), "rate": rate})


def shown_path(path):
    """`path` as a report may name it: relative to the repository when inside
    it, otherwise only its last component (a machine's layout is no reader's
    business)."""
    if not isinstance(path, str) or not os.path.isabs(path):
        return path
    rel = os.path.relpath(path, REPO)
    return rel if not rel.startswith("..") else os.path.join("...", os.path.basename(path))


def recorded_args(args):
    """The command line as a results file records it, its paths made portable."""
    return {k: shown_path(v) for k, v in vars(args).items()}


def newest_closed_run(outdir, payload, subs):
    """The newest closed-loop results/run-*.json in `outdir` with this payload and these subscriber counts."""
    for path in sorted(glob.glob(os.path.join(outdir, "run-*.json")), reverse=True):
        with open(path) as f:
            data = json.load(f)
        a = data.get("args", {})
        if (a.get("mode", "closed") == "closed" and a.get("payload", 100) == payload
                and set(subs) <= {r["subs"] for r in data.get("rows", [])}):
            return path
    sys.exit(f"--loads: no closed-loop run with payload {payload} and {subs} subscribers in {outdir}; run one first")


def closed_loop_maxima(path):
    """(server, subs) -> median deliveries/s of a closed-loop results file."""
    with open(path) as f:
        data = json.load(f)
    return {(r["server"], r["subs"]): statistics.median([x["deliveries_per_s"] for x in r["runs"]])
            for r in data["rows"] if r["runs"] and r["server"] != "reference"}


if __name__ == "__main__":
    main()
