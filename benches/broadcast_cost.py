#!/usr/bin/env python3
"""Microbenchmark: nanoseconds per hub.broadcast(topic, str) call, as seen by the
calling Python thread, for a 100-byte JSON str at 0, 1,000 and 10,000 subscribers.

The subscribers are loadgen connections (benches/loadgen, pinned to CPU 1); this
process and the hub's threads are pinned to CPU 0. Each run times a burst of
--calls broadcasts, then waits until the hub has written every frame of the burst
(hub.stats()["sent"]) so that the next burst starts from empty queues. Bursts are
kept below wshub's send_queue so no subscriber is closed as a slow consumer.

  .venv/bin/python benches/broadcast_cost.py
  .venv/bin/python benches/broadcast_cost.py --subs 0,1000,10000 --runs 15 --calls 500 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
LOADGEN = os.path.join(HERE, "loadgen", "target", "release", "loadgen")


def start_loadgen(port, n, pin):
    argv = [LOADGEN, "--url", f"ws://127.0.0.1:{port}/api/ws?topics=cost", "-c", str(n),
            "--start", "stdin", "-d", "1", "--connect-concurrency", "256"]
    if pin:
        argv = ["taskset", "-c", "1"] + argv
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    q: queue.Queue = queue.Queue()

    def rd():
        for line in p.stdout:
            try:
                q.put(json.loads(line))
            except json.JSONDecodeError:
                pass
        q.put({"event": "eof"})

    threading.Thread(target=rd, daemon=True).start()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            m = q.get(timeout=1)
        except queue.Empty:
            continue
        if m.get("event") == "ready":
            if m["ready"] < n:
                raise RuntimeError(f"only {m['ready']}/{n} subscribers connected: {m.get('first_error')}")
            return p
        if m.get("event") == "eof":
            raise RuntimeError("loadgen exited before ready")
    raise TimeoutError("loadgen not ready")


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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subs", default="0,1000,10000")
    ap.add_argument("--runs", type=int, default=11)
    ap.add_argument("--calls", type=int, default=500, help="broadcasts per run (keep below send_queue)")
    ap.add_argument("--payload", type=int, default=100)
    ap.add_argument("--worker-threads", type=int, default=1)
    ap.add_argument("--no-pin", dest="pin", action="store_false")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

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
    hub = wshub.start(0, worker_threads=args.worker_threads)
    pad = "x" * max(0, args.payload - len('{"t":0,"pad":""}'))
    data = '{"t":0,"pad":"%s"}' % pad
    assert len(data) == args.payload or args.payload < 16
    results = []
    try:
        for n in [int(x) for x in args.subs.split(",")]:
            lg = start_loadgen(hub.port, n, pin) if n > 0 else None
            try:
                bc = hub.broadcast
                topic = "cost"
                # warm up
                for _ in range(50):
                    bc(topic, data)
                sent_target = hub.stats().get("sent", 0) + 50 * n
                wait_sent(hub, sent_target)
                per_call = []
                # CPU used by anything but this process and the loadgen while measuring
                pids = [os.getpid()] + ([lg.pid] if lg else [])
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
                    lg.stdin.close()
                    try:
                        lg.wait(10)
                    except subprocess.TimeoutExpired:
                        lg.kill()
                        lg.wait()
                # let the hub notice the closed connections before the next size
                deadline = time.monotonic() + 10
                while hub.stats().get("connections", 0) > 0 and time.monotonic() < deadline:
                    time.sleep(0.05)
    finally:
        hub.stop()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"wshub": getattr(wshub, "__version__", None), "pinned": pin, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
