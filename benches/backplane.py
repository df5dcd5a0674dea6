#!/usr/bin/env python3
"""Fan-out through wshub's Redis backplane, next to the single-instance figure.

Setups, each for every subscriber count, repeated --repeat times:

  single   one hub, no backplane: the publisher and the subscribers on hub A
           (what benches/run.py measures as "wshub").
  bp1      one hub with a backplane: publisher and subscribers on hub A; every
           broadcast goes to Redis and comes back (the cost of the round trip).
  bp2      two hubs on the same backplane: the publisher on hub A, all the
           subscribers on hub B, so every delivery crossed Redis.

For each run a private redis-server is started on a free loopback port
(`--save '' --appendonly no`, its own temporary directory, a fresh counter),
then the hub(s) (benches/servers/wshub_server.py --backplane URL), then the
loadgen with N subscribers on the subscribers' hub. Closed loop as in run.py:
the publisher on hub A keeps at most --window publications not yet delivered
to every subscriber, fed back by the loadgen over UDP to hub A's port (the
loadgen's --feedback address is independent of the hub it is connected to).
`--mode rate --rate R` runs open loop instead.

Pinning (2-core machine): hub A, hub B and redis-server all on --server-cpu
(default 0), the loadgen on --loadgen-cpu (default 1); so every setup has one
core for the serving side, as in run.py. CPU time of each process (from
/proc/PID/stat) is reported over the measurement window, plus "other": what
anything else on the machine used meanwhile.

  .venv/bin/python benches/backplane.py                       # 100,1000 subs, 3 x 5 s, single/bp1/bp2
  .venv/bin/python benches/backplane.py --setups single,bp2 --subs 1000 --repeat 5
  .venv/bin/python benches/backplane.py --markdown BENCHMARKS.md   # also (re)write its section there
  .venv/bin/python benches/backplane.py --render benches/results/backplane-X.json --markdown BENCHMARKS.md

Writes benches/results/backplane-<timestamp>.json; logs in benches/results/logs/<timestamp>-backplane/.
Only processes started here are stopped.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run as R  # noqa: E402  (Proc, free_port, cpu_busy, pin, machine_info, fmt_range, LOADGEN, ...)

WSHUB_SERVER = [R.WSHUB_PY, os.path.join(R.SRV, "wshub_server.py")]
REDIS_SERVER = shutil.which("redis-server")
SETUPS = {
    "single": "1 hub, no backplane",
    "bp1": "1 hub + Redis backplane (subscribers on the publishing hub)",
    "bp2": "2 hubs + Redis backplane (publisher on hub A, subscribers on hub B)",
}
BEGIN = "<!-- benches/backplane.py: begin (rewritten by backplane.py --markdown) -->"
END = "<!-- benches/backplane.py: end -->"


def proc_cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / R.CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


def _pong(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class Redis:
    """A private redis-server on a free loopback port, no persistence, own temp dir."""

    def __init__(self, cpu, taskset, logdir, tag):
        self.port = R.free_port()
        self.dir = tempfile.mkdtemp(prefix="wshub-bench-redis-")
        self.log = open(os.path.join(logdir, f"{tag}.redis.log"), "wb")
        argv = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", self.dir, "--daemonize", "no"]
        self.p = subprocess.Popen(R.pin(cpu, argv, taskset), stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while not _pong(self.port):
            if self.p.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer on port {self.port}; see {self.log.name}")
            time.sleep(0.05)

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def cpu_seconds(self):
        return proc_cpu_seconds(self.p.pid)

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def start_hub(name, args, logdir, tag, backplane=None, prefix=None):
    port = R.free_port()
    argv = WSHUB_SERVER + ["--port", str(port), "--topic", "bench", "--payload", str(args.payload),
                           "--mode", args.mode, "--window", str(args.window), "--rate", str(args.rate)]
    if backplane:
        argv += ["--backplane", backplane, "--backplane-prefix", prefix]
    hub = R.Proc(R.pin(args.server_cpu, argv, args.taskset), name, os.path.join(logdir, f"{tag}.{name}.err"))
    hub.info = hub.wait_event("listening", 60)
    return hub


def stop_hub(hub):
    """Ask for stats + exit; returns the hub's stats() dict ({} if it did not say)."""
    hub.send("stop")
    stats = {}
    try:
        stats = hub.wait_event("hub_stats", 10)
        hub.wait_event("stopped", 10)
    except (TimeoutError, RuntimeError):
        pass
    hub.stop()
    stats.pop("event", None)
    return stats


def run_once(setup, subs, args, logdir, tag):
    redis = hub_a = hub_b = loadgen = None
    try:
        if setup != "single":
            redis = Redis(args.server_cpu, args.taskset, logdir, tag)
            prefix = f"bench{os.getpid()}{tag.replace('-', '')}:"
            hub_a = start_hub("hubA", args, logdir, tag, redis.url, prefix)
            if setup == "bp2":
                hub_b = start_hub("hubB", args, logdir, tag, redis.url, prefix)
        else:
            hub_a = start_hub("hubA", args, logdir, tag)
        sub_hub = hub_b or hub_a
        lg = [R.LOADGEN, "--url", f"ws://127.0.0.1:{sub_hub.info['port']}/api/ws?topics=bench",
              "-c", str(subs), "--start", "stdin", "--warmup", str(args.warmup), "-d", str(args.duration),
              "--threads", "1"]
        if args.mode == "closed":
            lg += ["--feedback", f"127.0.0.1:{hub_a.info['port']}"]  # the publisher is on hub A
        loadgen = R.Proc(R.pin(args.loadgen_cpu, lg, args.taskset), "loadgen", os.path.join(logdir, f"{tag}.loadgen.err"))
        ready = loadgen.wait_event("ready", 180)
        if ready["ready"] < subs:
            raise RuntimeError(f"only {ready['ready']}/{subs} subscribers ready: {ready.get('first_error')}")
        hub_a.send("go")
        loadgen.send("go")
        loadgen.wait_event("started", 10)
        time.sleep(args.warmup)
        procs = {"hub_a": hub_a.p.pid}
        if hub_b:
            procs["hub_b"] = hub_b.p.pid
        if redis:
            procs["redis"] = redis.p.pid
        c0 = {k: proc_cpu_seconds(pid) for k, pid in procs.items()}
        b0 = R.cpu_busy()
        t0 = time.monotonic()
        res = loadgen.wait_event("result", args.duration + 60)
        c1 = {k: proc_cpu_seconds(pid) for k, pid in procs.items()}
        b1 = R.cpu_busy()
        el = time.monotonic() - t0
        cpu = {k: (100.0 * (c1[k] - c0[k]) / el if c0[k] is not None and c1[k] is not None else None) for k in procs}
        res["cpu_pct"] = cpu
        if b0 and b1 and all(v is not None for v in cpu.values()):
            busy = sum(b1[k] - b0.get(k, 0) for k in b1) / R.CLK_TCK
            ours = sum(c1[k] - c0[k] for k in procs) + res["cpu"]["user_s"] + res["cpu"]["sys_s"]
            res["other_cpu_pct"] = max(0.0, 100.0 * (busy - ours) / el)
        res["server_info"] = hub_a.info
        loadgen.stop()
        loadgen = None
        res["hub_stats"] = {"hub_a": stop_hub(hub_a)}
        hub_a = None
        if hub_b:
            res["hub_stats"]["hub_b"] = stop_hub(hub_b)
            hub_b = None
        return res
    finally:
        if loadgen:
            loadgen.stop()
        for h in (hub_a, hub_b):
            if h:
                h.stop()
        if redis:
            redis.stop()


# ------------------------------------------------------------------ markdown


def _med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def render(machine, rows, args, results_path):
    out = []
    out.append("## Through the Redis backplane\n")
    out.append(f"Generated by `benches/backplane.py` on {machine['date']} ({machine['cpus']} CPUs, "
               f"{machine['cpu']}; wshub {next((r['version'] for r in rows if r.get('version')), '?')}; "
               f"redis-server {machine.get('redis', '?')}).\n")
    out.append("* Setups: `single` = one hub, no backplane (as `run.py`'s wshub row); "
               "`bp1` = one hub with `backplane=` (publisher and subscribers on the same hub, every broadcast "
               "goes to Redis and back); `bp2` = two hub processes on the same Redis, the publisher on hub A "
               "and all subscribers on hub B, so every delivery crossed Redis. A private redis-server "
               "(`--save '' --appendonly no`, loopback) per run.")
    pin = (f"hub A, hub B and redis-server share CPU {args.server_cpu}, loadgen on CPU {args.loadgen_cpu}"
           if args.taskset else "unpinned (taskset disabled!)")
    mode = (f"closed loop, at most {args.window} publications in flight (loadgen feedback to hub A)"
            if args.mode == "closed" else f"open loop at {args.rate:g} publications/s")
    out.append(f"* Method: {pin}; {mode}; payload {args.payload} B; {args.warmup:g}s warm-up + "
               f"{args.duration:g}s measured; {args.repeat} runs, median (min-max).")
    out.append("* CPU columns: % of one core over the window from /proc/PID/stat; `serving ns/delivery` = "
               "(hub A + hub B + redis CPU) / deliveries; `other CPU %` = what other processes on the machine "
               "used meanwhile (100 = one core), large values mean disturbed figures.")
    out.append("* `bp dropped/missed`: sum over runs and hubs of `backplane_dropped` / `backplane_missed` "
               "from `hub.stats()` at the end of each run.\n")
    out.append("| setup | subscribers | deliveries/s | vs single | p50 µs | p99 µs | p99.9 µs | hub A CPU % | "
               "hub B CPU % | redis CPU % | loadgen CPU % | other CPU % | serving ns/delivery | delivered % | "
               "gaps | bp dropped/missed |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    single = {r["subs"]: _med([x["deliveries_per_s"] for x in r["runs"]]) for r in rows
              if r["setup"] == "single" and r["runs"]}
    for r in rows:
        rs = r["runs"]
        if not rs:
            out.append(f"| {r['setup']} | {r['subs']:,} | failed: {r.get('error', '?')} |" + " |" * 13)
            continue
        lat = lambda k: [x["latency_us"][k] for x in rs]  # noqa: E731
        rate = _med([x["deliveries_per_s"] for x in rs])
        base = single.get(r["subs"])
        vs = f"{rate / base:.2f}x" if base and r["setup"] != "single" else "-"
        cpu = lambda k: [x["cpu_pct"].get(k) for x in rs]  # noqa: E731
        serving = [1e7 * sum(v for v in x["cpu_pct"].values() if v is not None) / x["deliveries_per_s"]
                   for x in rs if x["deliveries_per_s"]]
        dl = R.delivered_pct(rs)
        closed = sum(x.get("closed_during_run", 0) + x.get("failed", 0) for x in rs)
        if r["setup"] == "single":
            bp = "-"
        else:
            st = [h for x in rs for h in x.get("hub_stats", {}).values()]
            bp = f"{sum(h.get('backplane_dropped', 0) for h in st)}/{sum(h.get('backplane_missed', 0) for h in st)}"
        out.append("| {} | {:,} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
            r["setup"], r["subs"], R.fmt_range([x["deliveries_per_s"] for x in rs]), vs,
            R.fmt_range(lat("p50")), R.fmt_range(lat("p99")), R.fmt_range(lat("p999")),
            R.fmt_range(cpu("hub_a")),
            R.fmt_range(cpu("hub_b")) if r["setup"] == "bp2" else "-",
            R.fmt_range(cpu("redis")) if r["setup"] != "single" else "-",
            R.fmt_range([x["cpu"]["pct"] for x in rs]),
            R.fmt_range([x.get("other_cpu_pct") for x in rs]),
            R.fmt_range(serving),
            ("-" if dl is None else f"{dl:.2f}") + (f" ({closed} closed)" if closed else ""),
            sum(x["gaps"] for x in rs), bp))
    out.append(f"\nRaw: `{os.path.relpath(results_path, R.REPO)}`. Command: `.venv/bin/python benches/backplane.py"
               f"{' --subs ' + args.subs if args.subs != '100,1000' else ''}"
               f"{' --setups ' + args.setups if args.setups != 'single,bp1,bp2' else ''}"
               f"{' --mode rate --rate %g' % args.rate if args.mode == 'rate' else ''}"
               f"{' --repeat %d' % args.repeat if args.repeat != 3 else ''}"
               f"{' --duration %g' % args.duration if args.duration != 5 else ''} --markdown BENCHMARKS.md`.")
    return "\n".join(out) + "\n"


def write_section(path, text):
    R.write_section(path, BEGIN, END, text)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setups", default="single,bp1,bp2", help=f"comma-separated, of {','.join(SETUPS)}")
    ap.add_argument("--subs", default="100,1000")
    ap.add_argument("--payload", type=int, default=100)
    ap.add_argument("--mode", choices=["closed", "rate"], default="closed")
    ap.add_argument("--window", type=int, default=128)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--server-cpu", type=int, default=0, help="CPU for hub A, hub B and redis-server")
    ap.add_argument("--loadgen-cpu", type=int, default=1)
    ap.add_argument("--no-taskset", dest="taskset", action="store_false")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--markdown", default=None, help="file whose 'Through the Redis backplane' section to (re)write")
    ap.add_argument("--render", metavar="RESULTS_JSON", help="run nothing: render an earlier backplane-*.json")
    args = ap.parse_args()
    if args.render:
        with open(args.render) as f:
            old = json.load(f)
        oargs = argparse.Namespace(**{**vars(ap.parse_args([])), **old["args"]})
        text = render(old["machine"], old["rows"], oargs, os.path.abspath(args.render))
        if args.markdown:
            write_section(args.markdown, text)
            print(f"wrote {args.markdown}", file=sys.stderr)
        else:
            sys.stdout.write(text)
        return
    setups = [s.strip() for s in args.setups.split(",") if s.strip()]
    for s in setups:
        if s not in SETUPS:
            sys.exit(f"unknown setup {s}; known: {', '.join(SETUPS)}")
    if any(s != "single" for s in setups) and REDIS_SERVER is None:
        sys.exit("redis-server not found (Debian package redis-server)")
    if not os.path.exists(R.LOADGEN):
        sys.exit("loadgen not built: run benches/setup.sh (or cargo build --release in benches/loadgen)")
    if args.taskset and (shutil.which("taskset") is None or (os.cpu_count() or 1) < 2):
        print("taskset unavailable or < 2 CPUs: running unpinned", file=sys.stderr)
        args.taskset = False
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    logdir = os.path.join(args.out, "logs", f"{stamp}-backplane")
    os.makedirs(logdir, exist_ok=True)
    machine = R.machine_info()
    if REDIS_SERVER:
        v = subprocess.run([REDIS_SERVER, "--version"], capture_output=True, text=True).stdout
        machine["redis"] = next((w[2:] for w in v.split() if w.startswith("v=")), v.strip())
    rows = []
    for subs in [int(x) for x in args.subs.split(",")]:
        for setup in setups:
            row = {"setup": setup, "subs": subs, "payload": args.payload, "runs": []}
            for i in range(args.repeat):
                tag = f"{setup}-{subs}-{i}"
                try:
                    res = run_once(setup, subs, args, logdir, tag)
                except Exception as e:  # noqa: BLE001
                    print(f"[fail] {tag}: {e}", file=sys.stderr)
                    row["error"] = str(e)[:200]
                    continue
                row["version"] = res["server_info"].get("version")
                row["runs"].append(res)
                cpu = ", ".join(f"{k} {v:.0f}%" for k, v in res["cpu_pct"].items() if v is not None)
                print(f"[run] {tag}: {res['deliveries_per_s']:,.0f} deliveries/s, p50 {res['latency_us']['p50']:.0f}us "
                      f"p99 {res['latency_us']['p99']:.0f}us, gaps {res['gaps']}, cpu {cpu}, loadgen "
                      f"{res['cpu']['pct']:.0f}%, other {res.get('other_cpu_pct') or 0:.0f}%", file=sys.stderr)
            rows.append(row)
    out_json = os.path.join(args.out, f"backplane-{stamp}.json")
    with open(out_json, "w") as f:
        json.dump({"machine": machine, "args": R.recorded_args(args), "rows": rows}, f, indent=1)
    text = render(machine, rows, args, out_json)
    if args.markdown:
        write_section(args.markdown, text)
    sys.stdout.write(text)
    print(f"wrote {out_json}" + (f" and {args.markdown}" if args.markdown else ""), file=sys.stderr)


if __name__ == "__main__":
    main()
