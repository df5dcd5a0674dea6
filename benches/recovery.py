#!/usr/bin/env python3
"""Recovery storm: N clients reconnecting at once, each recovering M missed
publications from a wshub hub (docs/protocol.md, "Recovering after a reconnect").

Each run, on a fresh hub (servers/wshub_recovery_server.py: wshub.start and a
Python publisher thread) pinned to CPU 0, with the client
(loadgen/src/bin/recovery.rs) pinned to CPU 1:

  1. N clients connect to topic T, read their `connected` answer (epoch E,
     seq S) and the one publication the hub then sends (S+1: the topic now
     has a history, as it has in use);
  2. all disconnect; once the hub holds no connection it publishes M
     publications (~200 B JSON) with nobody connected;
  3. all N reconnect at once with `since=T:S+1:E`. Measured from the first
     reconnect attempt until every client has its `"recovered":{"T":true}`
     answer and exactly the publications S+2..S+M+1, in order (a gap, a
     duplicate, another frame or a `recovered:false` fails the run), with
     each client's completion time (p50/p99) and the hub's CPU time.

The baseline (`live`, same run, same sizes) is the delivery cost without a
reconnect: the N clients stay connected and the hub publishes the M live;
measured from the publisher's start until every client has all M.
Recovery answers `false` by design when M exceeds what a client's queue
takes at once (send_queue, default 1,024 frames, minus the answer and the
frames around it): the default M=1,000 fits.

  python3 benches/recovery.py                          # 1,000 clients x 1,000 publications, 3 runs
  python3 benches/recovery.py --clients 20 --count 50 --repeat 1 --out /tmp/x
  python3 benches/recovery.py --markdown BENCHMARKS.md # also write its section there

Writes results/recovery-<time>.json (or --json) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run  # noqa: E402  (process plumbing, pinning, machine info, report helpers)

LOADGEN_DIR = os.path.join(HERE, "loadgen")
CLIENT = os.path.join(LOADGEN_DIR, "target", "release", "recovery")
SERVER = os.path.join(HERE, "servers", "wshub_recovery_server.py")
SECTION = "recovery storm"
# Publications every client receives before it leaves: the topic's history
# (a topic that never had one is forgotten when its last subscriber leaves).
PRIME = 1


class RunFailed(RuntimeError):
    pass


def wait(proc, event, timeout):
    """The next line of `proc` with this event; an `error` line or the
    process's exit fails the run with what it said."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RunFailed(f"{proc.name}: no {event!r} within {timeout:g}s (log: {run.shown_path(proc.err.name)})")
        try:
            msg = proc.lines.get(timeout=left)
        except queue.Empty:
            continue
        ev = msg.get("event")
        if ev == event:
            return msg
        if ev in ("error", "not_idle"):
            raise RunFailed(f"{proc.name}: {msg}")
        if ev == "eof":
            raise RunFailed(f"{proc.name} exited (rc={proc.p.poll()}) before {event!r} "
                            f"(log: {run.shown_path(proc.err.name)})")


def run_once(mode, args, logdir, tag, pin):
    """One hub, one client, one storm (or live delivery): its figures."""
    srv_argv = [run.WSHUB_PY, SERVER, "--port", "0", "--topic", args.topic, "--payload", str(args.payload)]
    if args.send_queue:
        srv_argv += ["--send-queue", str(args.send_queue)]
    srv = run.Proc(run.pin(0, srv_argv, pin), f"hub-{mode}", os.path.join(logdir, f"{tag}.hub.err"))
    cl = None
    try:
        port = wait(srv, "listening", 60)["port"]
        cl = run.Proc(run.pin(1, [CLIENT, "--url", f"ws://127.0.0.1:{port}/api/ws", "--topic", args.topic,
                                  "-c", str(args.clients), "--count", str(args.count), "--mode", mode,
                                  "--prime", str(PRIME), "--timeout", str(args.timeout)], pin),
                      f"client-{mode}", os.path.join(logdir, f"{tag}.client.err"))
        connected = wait(cl, "connected", args.timeout)
        srv.send(f"publish {PRIME}")
        wait(srv, "published", args.timeout)
        primed = wait(cl, "primed", args.timeout)["seq"]
        if mode == "recover":
            wait(cl, "disconnected", args.timeout)
            srv.send("idle")
            wait(srv, "idle", args.timeout)
            srv.send(f"publish {args.count}")
            published = wait(srv, "published", args.timeout)
            cpu0, busy0 = srv.cpu_seconds(), run.cpu_busy()
            cl.send("go")
        else:
            wait(cl, "ready", args.timeout)
            cpu0, busy0 = srv.cpu_seconds(), run.cpu_busy()
            cl.send("go")
            srv.send(f"publish {args.count}")
            published = wait(srv, "published", args.timeout)
        result = wait(cl, "result", args.timeout + 30)
        cpu1, busy1 = srv.cpu_seconds(), run.cpu_busy()
        srv.send("stats")
        stats = wait(srv, "stats", 30)
    finally:
        if cl:
            cl.stop()
        srv.stop()
    if published["seq"] != primed + args.count or published["epoch"] != connected["epoch"]:
        raise RunFailed(f"the hub's stream is at {published['epoch']}:{published['seq']}, "
                        f"expected {connected['epoch']}:{primed + args.count}")
    busy = sum(busy1.values()) - sum(busy0.values())
    hub_cpu = cpu1 - cpu0
    client_cpu = result["cpu"]["user_s"] + result["cpu"]["sys_s"]
    return {
        "mode": mode, "result": result, "hub_cpu_s": hub_cpu, "client_cpu_s": client_cpu,
        # Anything else on the machine meanwhile (the lead's tests, other tenants).
        "other_cpu_s": max(0.0, busy / run.CLK_TCK - hub_cpu - client_cpu),
        "publish_s": published["elapsed_s"],
        "hub_stats": {k: stats.get(k) for k in ("sent", "sent_bytes", "dropped", "slow_consumer_closes",
                                                 "connections_opened", "connections_closed")},
    }


def build_client():
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "recovery",
                    "--manifest-path", os.path.join(LOADGEN_DIR, "Cargo.toml")], check=True)


def summarize(runs):
    out = {}
    for mode in ("recover", "live"):
        rs = [r for r in runs if r["mode"] == mode]
        if not rs:
            continue
        res = [r["result"] for r in rs]
        out[mode] = {
            "runs": len(rs),
            "exact": all(x["exact"] for x in res),
            "total_ms": [x["total_ms"] for x in res],
            "client_p50_ms": [x["client_ms"]["p50"] for x in res if x.get("client_ms")],
            "client_p99_ms": [x["client_ms"]["p99"] for x in res if x.get("client_ms")],
            "answer_p99_ms": [x["answer_ms"]["p99"] for x in res if x.get("answer_ms")],
            "hub_cpu_ms": [r["hub_cpu_s"] * 1e3 for r in rs],
            "hub_ns_per_frame": [r["hub_cpu_s"] * 1e9 / max(1, x["publications_received"]) for r, x in zip(rs, res)],
            "client_cpu_ms": [r["client_cpu_s"] * 1e3 for r in rs],
            "other_cpu_ms": [r["other_cpu_s"] * 1e3 for r in rs],
        }
    if "recover" in out and "live" in out:
        out["ratio_total"] = (statistics.median(out["recover"]["total_ms"])
                              / max(1e-9, statistics.median(out["live"]["total_ms"])))
    return out


def render(summary, args, machine, path):
    n, m = args.clients, args.count
    lines = [
        "### Recovery storm\n",
        f"Generated by `benches/recovery.py` on {machine['date']} (`{run.shown_path(path)}`), "
        f"{machine['cpus']} CPUs ({machine['cpu']}), wshub built `{machine['wshub_profile']}`; "
        f"{args.repeat} run(s), median (min-max).\n",
        f"* `recovery`: {n:,} clients of topic `{args.topic}` disconnect, the hub publishes {m:,} publications "
        f"(~{args.payload} B JSON) with nobody connected, then all {n:,} reconnect at once with `since=`; "
        f"time from the first reconnect attempt until every client has its `recovered:true` answer and exactly "
        f"the {m:,} missed publications, in order (checked frame by frame).",
        f"* `live` (baseline, same run): the {n:,} clients stay connected and the hub publishes the {m:,} "
        "live; time from the publisher's start until every client has all of them (its hub CPU includes the "
        "Python publisher's broadcast calls, the recovery's does not: they were made before the storm).",
        "* Hub (Python process: wshub.start, its Rust threads) on CPU 0, client "
        "(`benches/loadgen` `recovery`, raw frame parser) on CPU 1. Hub CPU is its user+sys time over the "
        "measured interval; `other CPU` is what the rest of the machine used meanwhile.\n",
        "| scenario | all complete (ms) | per-client p50 (ms) | per-client p99 (ms) | hub CPU (ms) "
        "| hub CPU ns/frame | client CPU (ms) | other CPU (ms) | exact |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for mode, label in (("recover", "recovery"), ("live", "live (baseline)")):
        s = summary.get(mode)
        if not s:
            continue
        lines.append(f"| {label} | {run.fmt_range(s['total_ms'], '{:,.1f}')} | "
                     f"{run.fmt_range(s['client_p50_ms'], '{:,.1f}')} | {run.fmt_range(s['client_p99_ms'], '{:,.1f}')} | "
                     f"{run.fmt_range(s['hub_cpu_ms'])} | {run.fmt_range(s['hub_ns_per_frame'])} | "
                     f"{run.fmt_range(s['client_cpu_ms'])} | {run.fmt_range(s['other_cpu_ms'])} | "
                     f"{'yes' if s['exact'] else 'NO'} |")
    if "ratio_total" in summary:
        lines.append(f"\nRecovery takes {summary['ratio_total']:.2f}x the time of delivering the same "
                     f"{n * m:,} frames live (medians).")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--count", type=int, default=1000, help="publications each client misses (M)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--payload", type=int, default=200, help="bytes of each published JSON (approx.)")
    ap.add_argument("--topic", default="t")
    ap.add_argument("--send-queue", type=int, default=None, help="the hub's send_queue (default: wshub's)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the live baseline")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds each step may take")
    ap.add_argument("--no-build", action="store_true", help="do not (re)build the client first")
    ap.add_argument("--out", default=os.path.join(HERE, "results"), help="directory of the results JSON")
    ap.add_argument("--json", help="results file (default: OUT/recovery-<time>.json)")
    ap.add_argument("--markdown", help="also write the table as a section of this file")
    args = ap.parse_args()
    if args.clients < 1 or args.count < 1 or args.repeat < 1:
        ap.error("--clients, --count and --repeat must be at least 1")
    if not args.no_build:
        build_client()
    pin = (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logdir = os.path.join(args.out, "logs", f"recovery-{stamp}")
    os.makedirs(logdir, exist_ok=True)
    machine = run.machine_info()
    runs, failures = [], []
    modes = ["recover"] + ([] if args.no_baseline else ["live"])
    for i in range(args.repeat):
        for mode in modes:
            try:
                r = run_once(mode, args, logdir, f"{mode}-{i}", pin)
            except RunFailed as e:
                failures.append({"mode": mode, "run": i, "error": str(e)})
                print(f"[fail] {mode} run {i}: {e}", file=sys.stderr)
                continue
            r["run"] = i
            runs.append(r)
            res = r["result"]
            print(json.dumps({"mode": mode, "run": i, "exact": res["exact"], "total_ms": round(res["total_ms"], 1),
                              "client_ms": res["client_ms"], "hub_cpu_s": round(r["hub_cpu_s"], 3),
                              "errors": res["errors"][:3]}), file=sys.stderr)
    summary = summarize(runs)
    path = args.json or os.path.join(args.out, f"recovery-{stamp}.json")
    with open(path, "w") as f:
        json.dump({"machine": machine, "args": run.recorded_args(args), "pinned": pin, "prime": PRIME,
                   "summary": summary, "runs": runs, "failures": failures}, f, indent=1)
    text = render(summary, args, machine, path)
    print(text)
    if args.markdown:
        b, e = run.section_markers(SECTION)
        run.write_section(args.markdown, b, e, text)
    print(f"wrote {run.shown_path(path)}", file=sys.stderr)
    ok = not failures and all(s["exact"] for k, s in summary.items() if isinstance(s, dict))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
