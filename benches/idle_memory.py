#!/usr/bin/env python3
"""Idle memory per connection: RSS of a server process (never told to publish) before and
after N idle subscribers (loadgen connections) have connected and been acknowledged, for
wshub and each peer of benches/run.py (same server scripts, same pinning).

  .venv/bin/python benches/idle_memory.py --conns 10000 [--servers wshub,node-ws] [--json out.json]
  .venv/bin/python benches/idle_memory.py --conns 10000,19000 --servers wshub,socketify --markdown BENCHMARKS.md

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


def measure(name, argv, conns, settle, logdir):
    """RSS per connection of one server (run.py's process plumbing and pinning)."""
    pin = (os.cpu_count() or 1) >= 2
    srv = run.Proc(run.pin(0, argv + ["--port", str(run.free_port()), "--topic", "idle"], pin),
                   name, os.path.join(logdir, f"{name}-{conns}.server.err"))
    lg = None
    try:
        info = srv.wait_event("listening", 60)
        time.sleep(settle)
        before = rss_kib(srv.p.pid)
        lg = run.Proc(run.pin(1, [LOADGEN, "--url", f"ws://127.0.0.1:{info['port']}/api/ws?topics=idle",
                                  "-c", str(conns), "--start", "stdin", "-d", "1",
                                  "--connect-concurrency", "256"], pin),
                      f"{name}-loadgen", os.path.join(logdir, f"{name}-{conns}.loadgen.err"))
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
    ap.add_argument("--conns", default="10000", help="comma-separated connection counts")
    ap.add_argument("--servers", default="wshub", help="comma-separated, names as in benches/run.py")
    ap.add_argument("--settle", type=float, default=3.0, help="seconds to wait after all are ready")
    ap.add_argument("--json", help="results file (default: results/idle_memory-<time>.json)")
    ap.add_argument("--markdown", help="write the table as a section of this file (e.g. BENCHMARKS.md)")
    ap.add_argument("--section", default="idle memory",
                    help="name of that section (another name keeps the default one as it is)")
    args = ap.parse_args()
    counts = [int(x) for x in args.conns.split(",")]
    # Each child's stderr goes to a file here (not to ours: opening /dev/stderr
    # for writing would truncate a log that our stderr is redirected to).
    logdir = os.path.join(HERE, "results", "logs", "idle-" + time.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(logdir, exist_ok=True)
    results, skipped = [], {}
    for name in [s.strip() for s in args.servers.split(",") if s.strip()]:
        if name not in run.SERVERS or name == "reference":
            sys.exit(f"unknown server {name}; known: {', '.join(k for k in run.SERVERS if k != 'reference')}")
        why = run.available(name)
        if why:
            skipped[name] = why
            print(f"[skip] {name}: {why}", file=sys.stderr)
            continue
        for n in counts:
            try:
                res = measure(name, run.SERVERS[name][0], n, args.settle, logdir)
            except (RuntimeError, TimeoutError) as e:
                skipped[f"{name} at {n:,}"] = str(e)[:200]
                print(f"[fail] {name} at {n}: {e}", file=sys.stderr)
                continue
            res["asked"] = n
            results.append(res)
            print(json.dumps(res))
    out = args.json or os.path.join(HERE, "results", "idle_memory-" + time.strftime("%Y%m%d-%H%M%S") + ".json")
    with open(out, "w") as f:
        json.dump({"conns": counts, "nofile_hard_limit": nofile_hard(), "results": results, "skipped": skipped},
                  f, indent=1)
    if args.markdown:
        b, e = run.section_markers(args.section)
        run.write_section(args.markdown, b, e, render(results, skipped, args.settle, out, args.section))
        print(f"wrote {out} and {args.markdown}", file=sys.stderr)


def nofile_hard():
    import resource
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def render(results, skipped, settle, path, section="idle memory"):
    title = "Idle memory (scenario d)" if section == "idle memory" else section
    out = [f"### {title}\n",
           f"Generated by `benches/idle_memory.py` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
           f"(`{os.path.relpath(path, run.REPO)}`).\n",
           "* RSS of the server process (the scripts of `benches/run.py`, never told to publish) before and after "
           f"N idle subscribers connected and were acknowledged, {settle:g} s to settle; process RSS only, kernel socket "
           "buffers are not in it. KiB per connection = (after - before) / connections.",
           f"* Open files are limited to {nofile_hard():,} per process on this machine (hard limit; raising it is "
           "refused), which caps every server and the loadgen below that: 50,000 connections cannot be held by one "
           "process here.\n"]
    out.append("| server | connections | RSS before -> after (MiB) | KiB per connection |")
    out.append("|---|---:|---:|---:|")
    for r in sorted(results, key=lambda r: (r["asked"], r["kib_per_connection"] or 1e9)):
        short = f" of {r['asked']:,}" if r["connections"] != r["asked"] else ""
        failed = f" ({r['failed']} failed)" if r.get("failed") else ""
        out.append(f"| {r['server']} | {r['connections']:,}{short}{failed} | {r['rss_before_kib'] / 1024:,.1f} -> "
                   f"{r['rss_after_kib'] / 1024:,.1f} | {r['kib_per_connection']:.2f} |")
    for k, v in skipped.items():
        out.append(f"| {k} | failed: {v} | | |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
