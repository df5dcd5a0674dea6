#!/usr/bin/env python3
"""Microbenchmark: nanoseconds per hub.broadcast(topic, str) call, as seen by the
calling Python thread, for a 100-byte JSON str at 0, 1,000 and 10,000 subscribers,
next to each peer's own publish call (--servers).

The subscribers are loadgen connections (benches/loadgen, pinned to CPU 1); this
process and the hub's threads are pinned to CPU 0. Each run times a burst of
--calls broadcasts, then waits until the hub has written every frame of the burst
(hub.stats()["sent"]) so that the next burst starts from empty queues. Bursts are
kept below wshub's send_queue so no subscriber is closed as a slow consumer.

  .venv/bin/python benches/broadcast_cost.py
  .venv/bin/python benches/broadcast_cost.py --subs 0,1000,10000 --runs 15 --calls 500 --json out.json
  .venv/bin/python benches/broadcast_cost.py --servers wshub,fastapi,websockets,node-ws,socketify,wse \
      --markdown BENCHMARKS.md

--servers runs each server's script of benches/run.py in `--mode cost`
(servers/_common.py): its publisher thread or task times --calls back-to-back
calls of its publish function (wshub: hub.broadcast; FastAPI: await
manager.broadcast, a loop of await send_text; websockets: websockets.broadcast;
socketify: app.publish; wse-server: broadcast_local; Node ws: a loop of
client.send, timed in JavaScript) with one prebuilt payload, --server-runs times,
letting the server drain for --settle seconds between runs. A peer whose publish
call is the fan-out itself costs O(subscribers) per call, so the calls per run
are capped at --budget / subscribers (at least 10).

What `broadcast(topic, value)` costs for a dict or another Python value,
next to json.dumps and orjson.dumps of it, is benches/value_cost.py.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run  # noqa: E402  (the server table and process helpers of benches/run.py)

LOADGEN = os.path.join(HERE, "loadgen", "target", "release", "loadgen")
COST_SERVERS = ("wshub", "fastapi", "websockets", "node-ws", "socketify", "wse")  # scripts with --mode cost


def start_loadgen(port, n, pin, logdir):
    """n loadgen subscribers on topic `cost` (reading, never told to measure)."""
    lg = run.Proc(run.pin(1, [LOADGEN, "--url", f"ws://127.0.0.1:{port}/api/ws?topics=cost", "-c", str(n),
                              "--start", "stdin", "-d", "1", "--connect-concurrency", "256"], pin),
                  f"loadgen-{n}", os.path.join(logdir, f"inproc-{n}.loadgen.err"))
    ready = lg.wait_event("ready", 300)
    if ready["ready"] < n:
        lg.stop()
        raise RuntimeError(f"only {ready['ready']}/{n} subscribers connected: {ready.get('first_error')}")
    return lg


CLK_TCK = os.sysconf("SC_CLK_TCK")


def machine_busy_s():
    """Busy (non-idle, non-iowait) CPU seconds of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / CLK_TCK


def proc_cpu_s(pid):
    """utime + stime of a process (all its threads), seconds; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


def wait_sent(hub, target, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if hub.stats().get("sent", 0) >= target:
            return True
        time.sleep(0.002)
    return False


def server_cost(name, n, args, pin, logdir):
    """Publish-call cost of one server's script (--mode cost) with n idle-reading subscribers."""
    calls = max(10, min(args.calls, args.budget // max(n, 1)))
    argv = run.SERVERS[name][0] + ["--port", str(run.free_port()), "--topic", "cost", "--payload", str(args.payload),
                                   "--mode", "cost", "--calls", str(calls), "--runs", str(args.server_runs),
                                   "--settle", str(args.settle)]
    srv = run.Proc(run.pin(0, argv, pin), name, os.path.join(logdir, f"{name}-{n}.server.err"))
    lg = None
    try:
        info = srv.wait_event("listening", 60)
        if n:
            lg = run.Proc(run.pin(1, [LOADGEN, "--url", f"ws://127.0.0.1:{info['port']}/api/ws?topics=cost",
                                      "-c", str(n), "--start", "stdin", "-d", "1", "--connect-concurrency", "256"],
                                  pin), f"{name}-loadgen", os.path.join(logdir, f"{name}-{n}.loadgen.err"))
            ready = lg.wait_event("ready", 300)
            if ready["ready"] < n:
                raise RuntimeError(f"only {ready['ready']}/{n} subscribers connected: {ready.get('first_error')}")
        srv.send("go")
        # allow 100 µs per delivery: 2-3x the slowest peer's cost
        res = srv.wait_event("cost", 60 + args.server_runs * (args.settle + calls * max(n, 1) * 100e-6))
        per_call = res["ns_per_call"]
        return {"server": name, "version": info.get("version"), "subscribers": n, "calls_per_run": calls,
                "runs": len(per_call), "ns_per_call": per_call, "ns_per_call_median": statistics.median(per_call),
                "ns_per_call_min": min(per_call), "ns_per_call_max": max(per_call)}
    finally:
        if lg:
            lg.stop()
        srv.stop()


def render(inproc, servers, args, results_path):
    subs = sorted({int(x) for x in args.subs.split(",")} | {r["subscribers"] for r in servers})
    out = ["### Publish call cost (scenario e)\n",
           f"Generated by `benches/broadcast_cost.py` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
           + (f" (`{os.path.relpath(results_path, run.REPO)}`)" if results_path else "") + ".\n",
           f"* ns per publish call as seen by the caller, {args.payload}-byte JSON str, median (min-max) over runs; "
           "the caller and the server's threads pinned to CPU 0, the subscribers (loadgen) on CPU 1.",
           f"* `wshub (in-process)`: `hub.broadcast` called directly, {args.runs} runs x {args.calls} calls, each run "
           "waiting until the hub has written every frame (`stats()['sent']`) before the next.",
           f"* The other rows: each server's script in `--mode cost` ({args.server_runs} runs; calls per run = "
           f"min({args.calls}, {args.budget:,} / subscribers), at least 10; {args.settle:g} s to drain between runs). "
           "FastAPI's `ConnectionManager.broadcast`, `websockets.broadcast`, socketify's `app.publish` and Node's "
           "`send()` loop do the fan-out inside the call, so their cost grows with the subscribers; wshub and "
           "wse-server hand the publication to their own threads.\n"]
    out.append("| server | publish call | " + " | ".join(f"{n:,} subscribers" for n in subs) + " |")
    out.append("|---|---|" + "---:|" * len(subs))
    calls = {"wshub": "hub.broadcast (Python)", "fastapi": "await manager.broadcast (Python)",
             "websockets": "websockets.broadcast (Python)", "socketify": "app.publish (Python)",
             "wse": "broadcast_local (Python)", "node-ws": "send() loop (JavaScript)"}
    rows = []
    if inproc:
        rows.append(("wshub (in-process)", "hub.broadcast (Python)", {r["subscribers"]: r for r in inproc}))
    for name in dict.fromkeys(r["server"] for r in servers):
        rows.append((name, calls.get(name, "?"), {r["subscribers"]: r for r in servers if r["server"] == name}))
    for label, call, by in rows:
        cells = []
        for n in subs:
            r = by.get(n)
            cells.append("-" if not r else "{:,.0f} ({:,.0f}-{:,.0f})".format(
                r["ns_per_call_median"], r["ns_per_call_min"], r["ns_per_call_max"]))
        out.append(f"| {label} | {call} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subs", default="0,1000,10000")
    ap.add_argument("--runs", type=int, default=11)
    ap.add_argument("--calls", type=int, default=500, help="broadcasts per run (keep below send_queue)")
    ap.add_argument("--payload", type=int, default=100)
    ap.add_argument("--worker-threads", type=int, default=1)
    ap.add_argument("--no-pin", dest="pin", action="store_false")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--servers", default="", help=f"also measure these servers' publish call, of {','.join(COST_SERVERS)}")
    ap.add_argument("--no-inproc", dest="inproc", action="store_false", help="skip the in-process wshub measurement")
    ap.add_argument("--pause", type=float, default=0.0,
                    help="in-process: also sleep this long between runs, so each burst starts with the hub idle")
    ap.add_argument("--server-runs", type=int, default=5)
    ap.add_argument("--server-subs", help="subscriber counts for --servers (default: --subs)")
    ap.add_argument("--budget", type=int, default=200_000, help="deliveries per run at most, for --servers")
    ap.add_argument("--settle", type=float, default=0.3)
    ap.add_argument("--markdown", help="write the table as a section of this file (e.g. BENCHMARKS.md)")
    args = ap.parse_args()
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    for name in servers:
        if name not in COST_SERVERS:
            sys.exit(f"--servers: {name} has no cost mode; known: {','.join(COST_SERVERS)}")

    import resource

    import wshub

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    pin = args.pin and (os.cpu_count() or 1) >= 2
    if pin:
        os.sched_setaffinity(0, {0})  # the hub's threads inherit this
    if not os.path.exists(LOADGEN):
        sys.exit("loadgen not built: cd benches/loadgen && cargo build --release")
    logdir = os.path.join(HERE, "results", "logs", "cost-" + time.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(logdir, exist_ok=True)
    results = inproc(args, pin, wshub, logdir) if args.inproc else []
    server_rows, skipped = [], {}
    for name in servers:
        why = run.available(name)
        if why:
            skipped[name] = why
            print(f"[skip] {name}: {why}", file=sys.stderr)
            continue
        for n in [int(x) for x in (args.server_subs or args.subs).split(",")]:
            try:
                row = server_cost(name, n, args, pin, logdir)
            except (RuntimeError, TimeoutError) as e:
                skipped[f"{name} at {n}"] = str(e)[:200]
                print(f"[fail] {name} at {n}: {e}", file=sys.stderr)
                continue
            server_rows.append(row)
            print(f"{name:>10} {n:>6} subscribers: {row['ns_per_call_median']:>12,.0f} ns/call median "
                  f"(min {row['ns_per_call_min']:,.0f}, max {row['ns_per_call_max']:,.0f}, "
                  f"{row['calls_per_run']} calls x {row['runs']} runs)", flush=True)
    out_json = args.json or os.path.join(HERE, "results", "broadcast_cost-" + time.strftime("%Y%m%d-%H%M%S") + ".json")
    with open(out_json, "w") as f:
        json.dump({"wshub": getattr(wshub, "__version__", None), "pinned": pin, "args": run.recorded_args(args),
                   "results": results, "servers": server_rows, "skipped": skipped}, f, indent=1)
    if args.markdown:
        b, e = run.section_markers("publish call cost")
        run.write_section(args.markdown, b, e, render(results, server_rows, args, out_json))
        print(f"wrote {out_json} and {args.markdown}", file=sys.stderr)


def inproc(args, pin, wshub, logdir):
    """hub.broadcast in this process, each run waiting for the hub to write every frame."""
    hub = wshub.start(0, worker_threads=args.worker_threads)
    pad = "x" * max(0, args.payload - len('{"t":0,"pad":""}'))
    data = '{"t":0,"pad":"%s"}' % pad
    assert len(data) == args.payload or args.payload < 16
    results = []
    try:
        for n in [int(x) for x in args.subs.split(",")]:
            lg = start_loadgen(hub.port, n, pin, logdir) if n > 0 else None
            try:
                bc = hub.broadcast
                topic = "cost"
                # warm up (the count of frames written is read before, as the
                # hub may write some of them before the loop ends)
                sent_target = hub.stats().get("sent", 0) + 50 * n
                for _ in range(50):
                    bc(topic, data)
                wait_sent(hub, sent_target)
                per_call = []
                # CPU used by anything but this process and the loadgen while measuring
                pids = [os.getpid()] + ([lg.p.pid] if lg else [])
                m0, o0, w0 = machine_busy_s(), sum(proc_cpu_s(p) for p in pids), time.monotonic()
                for _ in range(args.runs):
                    base = hub.stats().get("sent", 0)
                    t0 = time.perf_counter_ns()
                    for _ in range(args.calls):
                        bc(topic, data)
                    t1 = time.perf_counter_ns()
                    per_call.append((t1 - t0) / args.calls)
                    if n and not wait_sent(hub, base + args.calls * n):
                        print(f"warning: hub did not write all frames for n={n}", file=sys.stderr)
                    if args.pause:
                        time.sleep(args.pause)
                m1, o1, w1 = machine_busy_s(), sum(proc_cpu_s(p) for p in pids), time.monotonic()
                other_pct = max(0.0, 100.0 * ((m1 - m0) - (o1 - o0)) / (w1 - w0))
                st = hub.stats()
                row = {"other_cpu_pct": other_pct, "subscribers": n, "ns_per_call_median": statistics.median(per_call),
                       "ns_per_call_min": min(per_call), "ns_per_call_max": max(per_call),
                       "runs": args.runs, "calls_per_run": args.calls, "payload": len(data),
                       "slow_consumer_closes": st.get("slow_consumer_closes"), "dropped": st.get("dropped")}
                results.append(row)
                print(f"{n:>6} subscribers: {row['ns_per_call_median']:>9,.0f} ns/call median "
                      f"(min {row['ns_per_call_min']:,.0f}, max {row['ns_per_call_max']:,.0f})"
                      f"  slow_consumer_closes={row['slow_consumer_closes']}  other cpu {other_pct:.0f}%", flush=True)
            finally:
                if lg:
                    lg.stop()
                # let the hub notice the closed connections before the next size
                deadline = time.monotonic() + 10
                while hub.stats().get("connections", 0) > 0 and time.monotonic() < deadline:
                    time.sleep(0.05)
    finally:
        hub.stop()
    return results


if __name__ == "__main__":
    main()
