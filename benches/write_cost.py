#!/usr/bin/env python3
"""What one write to a loopback TCP socket costs the writer here, with no
WebSocket server at all: the floor under every fan-out figure of run.py.

A fan-out to N subscribers needs at least one write per subscriber, and on
loopback the writer's CPU also runs the receiver's TCP processing. This probe
sends fixed-size messages round-robin over K connected sockets (TCP_NODELAY)
from a process pinned to CPU 0 while a reader pinned to CPU 1 drains them with
epoll, and reports the sender's CPU time (user + system) per send(). The figure
includes one Python call per send (a fraction of a microsecond), so it is an
upper bound on the kernel's share.

  python3 benches/write_cost.py
  python3 benches/write_cost.py --sizes 110,16384 --sockets 1,1000 --markdown BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import socket
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run  # noqa: E402  (section writer of benches/run.py)


def reader(port, nsock, total_bytes, cpu):
    """Child: connect nsock sockets, read until total_bytes arrived, exit."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(nsock)]
    sel = selectors.DefaultSelector()
    for c in conns:
        c.setblocking(False)
        sel.register(c, selectors.EVENT_READ)
    got = 0
    while got < total_bytes:
        for key, _ in sel.select(5):
            try:
                got += len(key.fileobj.recv(65536))
            except BlockingIOError:
                pass
    os._exit(0)


def one(size, nsock, sends, pin):
    """Sender CPU ns per send() of `size` bytes round-robin over `nsock` sockets."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(min(nsock, 4096))
    port = ls.getsockname()[1]
    pid = os.fork()
    if pid == 0:
        ls.close()
        reader(port, nsock, size * sends, 1 if pin else None)
    try:
        socks = [ls.accept()[0] for _ in range(nsock)]
        for s in socks:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        msg = b"x" * size
        t0, w0 = time.process_time_ns(), time.perf_counter_ns()
        for i in range(sends):
            socks[i % nsock].sendall(msg)
        cpu, wall = time.process_time_ns() - t0, time.perf_counter_ns() - w0
        _, status = os.waitpid(pid, 0)
        pid = 0
        if status:
            raise RuntimeError(f"reader exited with status {status}")
        for s in socks:
            s.close()
        return {"size": size, "sockets": nsock, "sends": sends, "cpu_ns_per_send": cpu / sends,
                "wall_ns_per_send": wall / sends}
    finally:
        if pid:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        ls.close()


def render(rows, path):
    out = ["### Kernel cost of one loopback write (`benches/write_cost.py`)\n",
           f"Generated on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} (`{os.path.relpath(path, run.REPO)}`).\n",
           "* A Python sender on CPU 0 `send()`s fixed-size messages round-robin over K loopback TCP sockets "
           "(TCP_NODELAY); a reader on CPU 1 drains them with epoll. CPU = the sender's user + system time per "
           "send, median (min-max) of the runs; it includes the receiver's TCP processing, which loopback runs "
           "in the sender's context, and one Python call (a fraction of a microsecond).",
           "* A publication to N subscribers needs at least N writes, so N x this figure is the least CPU a round "
           "of fan-out can take on this machine, whatever the server.\n",
           "| bytes per send | sockets | CPU µs per send | wall µs per send | CPU ms per round of 1,000 writes |",
           "|---:|---:|---:|---:|---:|"]
    for r in rows:
        cpu = [x["cpu_ns_per_send"] / 1000 for x in r["runs"]]
        wall = [x["wall_ns_per_send"] / 1000 for x in r["runs"]]
        out.append(f"| {r['size']:,} | {r['sockets']:,} | {run.fmt_range(cpu, '{:.1f}')} | "
                   f"{run.fmt_range(wall, '{:.1f}')} | {statistics.median(cpu):.1f} |")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="110,16384", help="bytes per send, comma-separated")
    ap.add_argument("--sockets", default="1,1000", help="connections to spread the sends over, comma-separated")
    ap.add_argument("--bytes", type=int, default=32 << 20, help="bytes per run (at most 200,000 sends)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-pin", dest="pin", action="store_false")
    ap.add_argument("--json", help="results file (default: results/write_cost-<time>.json)")
    ap.add_argument("--markdown", help="write the table as a section of this file (e.g. BENCHMARKS.md)")
    args = ap.parse_args()
    pin = args.pin and (os.cpu_count() or 1) >= 2
    if pin:
        os.sched_setaffinity(0, {0})
    rows = []
    for size in [int(x) for x in args.sizes.split(",")]:
        for nsock in [int(x) for x in args.sockets.split(",")]:
            sends = max(nsock, min(200_000, args.bytes // size))
            runs = [one(size, nsock, sends, pin) for _ in range(args.repeat)]
            rows.append({"size": size, "sockets": nsock, "runs": runs})
            cpu = statistics.median(x["cpu_ns_per_send"] for x in runs)
            print(f"{size:>6} B x {nsock:>5} sockets: {cpu / 1000:6.1f} µs CPU per send", flush=True)
    path = args.json or os.path.join(HERE, "results", "write_cost-" + time.strftime("%Y%m%d-%H%M%S") + ".json")
    with open(path, "w") as f:
        json.dump({"pinned": pin, "rows": rows}, f, indent=1)
    if args.markdown:
        b, e = run.section_markers("write cost")
        run.write_section(args.markdown, b, e, render(rows, path))
        print(f"wrote {path} and {args.markdown}", file=sys.stderr)


if __name__ == "__main__":
    main()
