#!/usr/bin/env python3
"""Idle memory per connection: RSS of a server process (never told to publish) before and
after N idle subscribers (loadgen connections) have connected and been acknowledged, for
wshub and each peer of benches/run.py (same server scripts, same pinning).

  .venv/bin/python benches/idle_memory.py --conns 10000 [--servers wshub,node-ws] [--json out.json]

Open files are limited per process on the benchmark machine (see benches/README.md), so
N is capped below that limit; the per-connection figure is (RSS after - RSS before) / N.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run  # noqa: E402  (the server table and helpers of benches/run.py)

LOADGEN = os.path.join(HERE, "loadgen", "target", "release", "loadgen")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def measure(name, argv, conns, settle):
    """RSS per connection of one server (run.py's process plumbing and pinning)."""
    pin = (os.cpu_count() or 1) >= 2
    srv = run.Proc(run.pin(0, argv + ["--port", str(run.free_port()), "--topic", "idle"], pin),
                   name, "/dev/stderr")
    lg = None
    try:
        info = srv.wait_event("listening", 60)
        time.sleep(settle)
        before = rss_kib(srv.p.pid)
        lg = run.Proc(run.pin(1, [LOADGEN, "--url", f"ws://127.0.0.1:{info['port']}/api/ws?topics=idle",
                                  "-c", str(conns), "--start", "stdin", "-d", "1",
                                  "--connect-concurrency", "256"], pin),
                      f"{name}-loadgen", "/dev/stderr")
        ready = lg.wait_event("ready", 300)
        time.sleep(settle)
        after = rss_kib(srv.p.pid)
        n = ready["ready"]
        return {"server": name, "version": info.get("version"), "connections": n, "failed": ready.get("failed"),
                "rss_before_kib": before, "rss_after_kib": after,
                "kib_per_connection": (after - before) / n if n else None,
                "bytes_per_connection": 1024.0 * (after - before) / n if n else None}
    finally:
        if lg:
            lg.stop()
        srv.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--servers", default="wshub", help="comma-separated, names as in benches/run.py")
    ap.add_argument("--settle", type=float, default=3.0, help="seconds to wait after all are ready")
    ap.add_argument("--json")
    args = ap.parse_args()
    results, skipped = [], {}
    for name in [s.strip() for s in args.servers.split(",") if s.strip()]:
        if name not in run.SERVERS or name == "reference":
            sys.exit(f"unknown server {name}; known: {', '.join(k for k in run.SERVERS if k != 'reference')}")
        why = run.available(name)
        if why:
            skipped[name] = why
            print(f"[skip] {name}: {why}", file=sys.stderr)
            continue
        try:
            res = measure(name, run.SERVERS[name][0], args.conns, args.settle)
        except (RuntimeError, TimeoutError) as e:
            skipped[name] = str(e)
            print(f"[fail] {name}: {e}", file=sys.stderr)
            continue
        results.append(res)
        print(json.dumps(res))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"conns": args.conns, "results": results, "skipped": skipped}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
