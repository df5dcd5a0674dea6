"""Shared plumbing for the Python benchmark servers.

Every server:
  * takes --port --topic --payload --mode {closed,rate,burst} --window --rate --count;
  * prints {"event":"listening","port":P} on stdout once it accepts connections;
  * sends each subscriber the ack {"type":"connected","topics":[T],"rejected":[]}
    after it has registered it (wshub does this itself);
  * starts publishing when it reads a line "go" on stdin, and exits (printing
    {"event":"stopped","published":N,...}) on "stop" or end of stdin;
  * publishes payloads {"t":<ns since epoch>,"seq":N,"pad":"xxx"} of about
    --payload bytes (wshub wraps them in its own {"type":"message",...,"data":...}).

Publish modes:
  closed  as fast as possible, but at most --window publications in flight:
          in flight = published - highest seq that *every* subscriber has received,
          which the loadgen reports as a little-endian u64 UDP datagram sent to
          127.0.0.1:<same port number as the WebSocket port> (loadgen --feedback).
  rate    open loop at --rate publications/s; "t" is the scheduled send time, so
          publisher lag shows up as latency (no coordinated omission).
  burst   --count publications back to back, then idle.
  cost    the publisher's own cost (benches/broadcast_cost.py): --runs times,
          time --calls back-to-back calls of the publish function with one
          prebuilt payload, then let the server drain for --settle seconds;
          prints {"event":"cost","ns_per_call":[one figure per run]}.
--count limits the total in every mode (0 = unlimited, except burst where it is required).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import socket
import struct
import sys
import threading
import time

ACK_FMT = '{"type":"connected","topics":[%s],"rejected":[]}'


def parse_args(description: str, extra=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--topic", default="bench")
    p.add_argument("--payload", type=int, default=100, help="bytes of the published JSON (approx.)")
    p.add_argument("--payload-kind", choices=["pad", "json"], default="pad",
                   help="pad: one string of x (compresses ~100x); json: a list of betting markets "
                        "(ids, names, odds; compresses ~3-5x on its own, see Payload)")
    p.add_argument("--mode", choices=["closed", "rate", "burst", "cost"], default="closed")
    p.add_argument("--window", type=int, default=64, help="closed mode: publications in flight")
    p.add_argument("--rate", type=float, default=1000.0, help="rate mode: publications/s")
    p.add_argument("--count", type=int, default=0, help="stop after this many publications (0 = no limit)")
    p.add_argument("--calls", type=int, default=500, help="cost mode: publish calls per run")
    p.add_argument("--runs", type=int, default=11, help="cost mode: runs")
    p.add_argument("--settle", type=float, default=0.3, help="cost mode: seconds to let the server drain after a run")
    if extra:
        extra(p)
    a = p.parse_args()
    if a.mode == "burst" and a.count <= 0:
        p.error("--mode burst needs --count N")
    return a


def emit(**kw) -> None:
    sys.stdout.write(json.dumps(kw) + "\n")
    sys.stdout.flush()


def ack_text(topic: str) -> str:
    return ACK_FMT % json.dumps(topic)


def topics_from_query(query: str | bytes | None, default: str) -> list[str]:
    if isinstance(query, bytes):
        query = query.decode("latin-1")
    for part in (query or "").split("&"):
        k, _, v = part.partition("=")
        if k == "topics":
            names = [t for t in v.split(",") if t]
            if names:
                return names
    return [default]


def markets_json(size: int) -> str:
    """`"markets":[...]` of about `size` bytes: JSON like a live-odds feed, with
    the redundancy such JSON has (repeated keys, similar names, small numbers)
    and no more (values from a fixed Park-Miller sequence). The same bytes as
    node_ws_server.js's marketsJson(), which copies it: integers only, so both
    languages print identical text."""
    x = 12345

    def rnd(n: int) -> int:
        nonlocal x
        x = x * 48271 % 2147483647
        return x % n

    statuses = ("open", "open", "open", "suspended", "closed")
    items: list[str] = []
    used = len('"markets":[]')
    i = 0
    while True:
        odds = ",".join("%d.%02d" % (1 + rnd(9), rnd(100)) for _ in range(3))
        item = ('{"id":%d,"event":"Team %d v Team %d","market":"match-odds","status":"%s",'
                '"odds":[%s],"volume":%d}' % (100000 + i * 7 + rnd(7), rnd(60), rnd(60),
                                              statuses[rnd(5)], odds, rnd(1000000)))
        if items and used + len(item) + 1 > size:
            break
        items.append(item)
        used += len(item) + (1 if len(items) > 1 else 0)
        i += 1
    return '"markets":[' + ",".join(items) + "]"


class Payload:
    """Builds '{"t":...,"seq":...,"pad":"..."}' of roughly `size` bytes
    (kind `json`: '{"t":...,"seq":...,"markets":[...]}', see markets_json)."""

    def __init__(self, size: int, kind: str = "pad"):
        skeleton = len('{"t":1700000000000000000,"seq":100000,"pad":""}')
        if kind == "json":
            self.fmt = '{"t":%d,"seq":%d,' + markets_json(size - skeleton + len('"pad":""')).replace("%", "%%") + "}"
        else:
            self.fmt = '{"t":%d,"seq":%d,"pad":"' + "x" * max(0, size - skeleton) + '"}'

    def build(self, seq: int, t_ns: int) -> str:
        return self.fmt % (t_ns, seq)


class Control:
    """stdin control: 'go' starts publishing; 'stop' / EOF ends the process."""

    def __init__(self):
        self.go = threading.Event()
        self.stop = threading.Event()
        self.published = 0
        self.t_go = None
        self.on_go = []  # callables run (in the stdin thread) when "go" arrives

    def start_stdin_thread(self, on_stop=None):
        def run():
            for line in sys.stdin:
                cmd = line.strip()
                if cmd == "go" and not self.go.is_set():
                    self.t_go = time.monotonic()
                    self.go.set()
                    for cb in self.on_go:
                        cb()
                elif cmd == "stats":
                    emit(event="stats", published=self.published)
                elif cmd == "stop":
                    break
            self.stop.set()
            if on_stop:
                on_stop()
            self.finish()

        threading.Thread(target=run, daemon=True, name="stdin").start()

    def finish(self):
        el = time.monotonic() - self.t_go if self.t_go else 0.0
        emit(event="stopped", published=self.published, elapsed_s=el,
             publications_per_s=(self.published / el if el else 0.0))
        sys.stdout.flush()
        os._exit(0)


# ---------------------------------------------------------------- cost mode


def time_calls(publish, text: str, calls: int) -> float:
    """ns per call of `calls` back-to-back synchronous publish(text) calls."""
    t0 = time.perf_counter_ns()
    for _ in range(calls):
        publish(text)
    return (time.perf_counter_ns() - t0) / calls


# ---------------------------------------------------------------- threaded publisher


def run_thread_publisher(args, ctl: Control, publish) -> threading.Thread:
    """Publisher in a plain Python thread; `publish(text)` is synchronous."""
    pl = Payload(args.payload, args.payload_kind)
    fb = None
    if args.mode == "closed":
        fb = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        fb.bind(("127.0.0.1", args.port))
        fb.setblocking(False)

    def loop():
        ctl.go.wait()
        if args.mode == "cost":
            text = pl.build(1, time.time_ns())
            per_call = []
            for _ in range(args.runs):
                per_call.append(time_calls(publish, text, args.calls))
                time.sleep(args.settle)
            emit(event="cost", ns_per_call=per_call, calls=args.calls)
            return
        delivered = 0
        seq = 0
        limit = args.count or float("inf")
        t0 = time.time_ns()
        period = 1e9 / args.rate if args.mode == "rate" else 0.0
        while seq < limit and not ctl.stop.is_set():
            if fb is not None:
                # No syscall while the window has room; once it is full, read the
                # newest feedback and block (select) only while it stays full.
                while seq - delivered >= args.window and not ctl.stop.is_set():
                    try:
                        while True:
                            delivered = max(delivered, struct.unpack_from("<Q", fb.recv(64))[0])
                    except BlockingIOError:
                        pass
                    if seq - delivered >= args.window:
                        select.select([fb], [], [], 0.05)
                t = time.time_ns()
            elif period:
                due = t0 + int(seq * period)
                now = time.time_ns()
                if due > now:
                    time.sleep((due - now) / 1e9)
                t = due
            else:
                t = time.time_ns()
            seq += 1
            publish(pl.build(seq, t))
            ctl.published = seq

    th = threading.Thread(target=loop, daemon=True, name="publisher")
    th.start()
    return th


# ---------------------------------------------------------------- asyncio publisher


class _Feedback(asyncio.DatagramProtocol):
    def __init__(self):
        self.delivered = 0
        self.event = asyncio.Event()

    def datagram_received(self, data, addr):
        if len(data) >= 8:
            v = struct.unpack_from("<Q", data)[0]
            if v > self.delivered:
                self.delivered = v
                self.event.set()


async def run_async_publisher(args, ctl: Control, publish, is_coro: bool) -> None:
    """Publisher task on the running event loop. `publish(text)` is a coroutine
    function when is_coro, else a plain function (e.g. websockets.broadcast)."""
    loop = asyncio.get_running_loop()
    fb = None
    if args.mode == "closed":
        _, fb = await loop.create_datagram_endpoint(_Feedback, local_addr=("127.0.0.1", args.port))
    go = asyncio.Event()
    ctl.on_go.append(lambda: loop.call_soon_threadsafe(go.set))
    if ctl.go.is_set():
        go.set()
    await go.wait()
    pl = Payload(args.payload, args.payload_kind)
    if args.mode == "cost":
        text = pl.build(1, time.time_ns())
        per_call = []
        for _ in range(args.runs):
            if is_coro:
                t0 = time.perf_counter_ns()
                for _ in range(args.calls):
                    await publish(text)
                per_call.append((time.perf_counter_ns() - t0) / args.calls)
            else:
                per_call.append(time_calls(publish, text, args.calls))
            await asyncio.sleep(args.settle)
        emit(event="cost", ns_per_call=per_call, calls=args.calls)
        return
    seq = 0
    limit = args.count or float("inf")
    t0 = time.time_ns()
    period = 1e9 / args.rate if args.mode == "rate" else 0.0
    while seq < limit:
        if fb is not None:
            while seq - fb.delivered >= args.window:
                fb.event.clear()
                try:
                    await asyncio.wait_for(fb.event.wait(), 0.5)
                except asyncio.TimeoutError:
                    pass
            t = time.time_ns()
        elif period:
            due = t0 + int(seq * period)
            now = time.time_ns()
            if due > now:
                await asyncio.sleep((due - now) / 1e9)
            t = due
        else:
            t = time.time_ns()
        seq += 1
        text = pl.build(seq, t)
        if is_coro:
            await publish(text)
        else:
            publish(text)
        ctl.published = seq
        if not period:
            # let the event loop flush sockets / read feedback between publications
            await asyncio.sleep(0)
