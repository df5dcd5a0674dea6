#!/usr/bin/env python3
"""Soak test: churn against one in-process hub for N seconds, then check
that memory, file descriptors and threads came back to where they were.

    python benches/soak/soak.py 60            # 60 s of churn
    python benches/soak/soak.py 20 --out r.json

Load, all on 127.0.0.1 and bounded in time:
  * churners: clients that connect (websockets), subscribe/unsubscribe a
    few times, sometimes reset instead of closing, and reconnect;
  * flippers: long-lived clients that subscribe and unsubscribe in a loop
    while reading everything they are sent;
  * publishers: threads broadcasting on a handful of topics;
  * slow readers: raw sockets that subscribe and never read, so the hub
    closes them as slow consumers; they are replaced as they go.

RSS (VmRSS of /proc/self/status), open fds (/proc/self/fd) and threads
(/proc/self/task) are sampled after a warm-up run of the same load and
again after the N seconds, both times with the load stopped and every
client gone (the hub still running), plus once under load for reference.
The result is printed as JSON; the exit status is 1 if any grew past its
slack, if clients stayed connected, or if the clients saw many errors.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import random
import socket
import struct
import sys
import threading
import time

from websockets.sync.client import connect as ws_connect

import wshub

HOST = "127.0.0.1"
TOPICS = [f"soak{i}" for i in range(8)]

# Growth allowed between the two samples. RSS: the allocator keeps some of
# what churn freed; a leak of a few kB per connection over thousands of
# connections still shows. fds/threads: the process itself may open a few
# (e.g. lazily started Python threads); a leak per connection does not fit.
SLACK = {"rss_kb": 30 * 1024, "fds": 20, "threads": 2}

WARMUP_SECONDS = 3.0


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def sample() -> dict:
    return {
        "rss_kb": rss_kb(),
        "fds": len(os.listdir("/proc/self/fd")),
        "threads": len(os.listdir("/proc/self/task")),
    }


class Load:
    """The worker threads and their shared stop flag and counters."""

    def __init__(self, hub: wshub.Server, seed: int):
        self.hub = hub
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.counts = {"connects": 0, "resets": 0, "flips": 0, "slow_readers": 0,
                       "broadcasts": 0, "received": 0, "errors": 0}
        self.errors: list[str] = []
        self.seed = seed
        self.threads: list[threading.Thread] = []

    def count(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.counts[key] += n

    def error(self, where: str, exc: BaseException) -> None:
        with self.lock:
            self.counts["errors"] += 1
            if len(self.errors) < 20:
                self.errors.append(f"{where}: {exc!r}")

    def spawn(self, name: str, target, *args) -> None:
        thread = threading.Thread(target=self.guard, args=(name, target, *args),
                                  name=name, daemon=True)
        self.threads.append(thread)
        thread.start()

    def guard(self, name: str, target, *args) -> None:
        rng = random.Random(f"{self.seed}-{name}")
        while not self.stop.is_set():
            try:
                target(rng, *args)
            except Exception as exc:  # noqa: BLE001 - counted, the soak goes on
                if not self.stop.is_set():
                    self.error(name, exc)
                    time.sleep(0.05)

    def url(self, topics) -> str:
        return f"ws://{HOST}:{self.hub.port}/api/ws?topics={','.join(topics)}"

    def open(self, topics):
        options = dict(open_timeout=5, close_timeout=1, ping_interval=None, max_size=None)
        try:
            return ws_connect(self.url(topics), proxy=None, **options)
        except TypeError:  # websockets < 15 has no proxy option
            return ws_connect(self.url(topics), **options)

    # -- workers ------------------------------------------------------------

    def churner(self, rng: random.Random) -> None:
        ws = self.open(rng.sample(TOPICS, 2))
        self.count("connects")
        try:
            ws.recv(timeout=5)  # the ack
            for _ in range(rng.randint(0, 3)):
                ws.send(json.dumps({"type": "subscribe", "topics": rng.sample(TOPICS, 2)}))
                ws.send(json.dumps({"type": "unsubscribe", "topics": rng.sample(TOPICS, 2)}))
                self.count("flips")
            self.drain(ws, rng.uniform(0.0, 0.2))
        finally:
            if rng.random() < 0.3:
                sock = ws.socket
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
                self.count("resets")
            ws.close()

    def flipper(self, rng: random.Random) -> None:
        ws = self.open([])
        self.count("connects")
        try:
            ws.recv(timeout=5)
            while not self.stop.is_set():
                topic = rng.choice(TOPICS)
                ws.send(json.dumps({"type": "subscribe", "topics": [topic]}))
                self.drain(ws, 0.02)
                ws.send(json.dumps({"type": "unsubscribe", "topics": [topic]}))
                self.count("flips")
                self.drain(ws, 0.02)
        finally:
            ws.close()

    def drain(self, ws, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                ws.recv(timeout=left)
                self.count("received")
            except TimeoutError:
                return

    def publisher(self, rng: random.Random) -> None:
        pad = "x" * rng.choice([10, 100, 1000, 4000])
        while not self.stop.is_set():
            self.hub.broadcast(rng.choice(TOPICS), json.dumps({"pad": pad, "t": time.time()}))
            self.count("broadcasts")
            time.sleep(0.0005)

    def slow_reader(self, rng: random.Random) -> None:
        sock = socket.create_connection((HOST, self.hub.port), timeout=5)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.count("slow_readers")
        try:
            key = base64.b64encode(os.urandom(16)).decode()
            sock.sendall(
                f"GET /api/ws?topics={','.join(TOPICS)} HTTP/1.1\r\nHost: {HOST}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
            # Never read; wait for the hub to give up on us (slow consumer),
            # which shows as EOF/reset once we finally look.
            deadline = time.monotonic() + rng.uniform(2.0, 6.0)
            while not self.stop.is_set() and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            sock.close()


def run_load(hub: wshub.Server, seconds: float, seed: int) -> tuple[Load, dict, list[str]]:
    """Runs the load for ``seconds``; returns it, a sample taken under load,
    and the names of load threads that did not stop."""
    load = Load(hub, seed)
    for i in range(4):
        load.spawn(f"churner{i}", load.churner)
    for i in range(4):
        load.spawn(f"flipper{i}", load.flipper)
    for i in range(3):
        load.spawn(f"publisher{i}", load.publisher)
    for i in range(3):
        load.spawn(f"slow{i}", load.slow_reader)
    time.sleep(seconds / 2)
    under_load = sample()
    time.sleep(seconds / 2)
    load.stop.set()
    for thread in load.threads:
        thread.join(10)
    return load, under_load, [t.name for t in load.threads if t.is_alive()]


def quiet_sample(hub: wshub.Server) -> dict:
    """A sample once every client is gone (the hub still running)."""
    wait_for(lambda: hub.stats()["connections"] == 0, 10)
    result = sample()
    result["hub_connections"] = hub.stats()["connections"]
    return result


def run(seconds: float, seed: int) -> dict:
    hub = wshub.Server(0, send_queue=256, send_queue_bytes=1024 * 1024,
                       rate_limit=1000.0, rate_burst=1000, worker_threads=2)
    # Warm-up: the same load, so that lazily created state (runtime
    # threads, allocator arenas, Python imports) exists before the first
    # sample. Both samples are taken with the load stopped and no client
    # connected, so they count the same threads and sockets.
    run_load(hub, WARMUP_SECONDS, seed)
    start = quiet_sample(hub)
    start_stats = hub.stats()
    started = time.monotonic()
    load, under_load, stuck = run_load(hub, seconds, seed + 1)
    took = time.monotonic() - started
    end = quiet_sample(hub)
    stats = hub.stats()
    hub.stop()
    growth = {k: end[k] - start[k] for k in SLACK}
    failures = [f"{k} grew by {growth[k]} (slack {SLACK[k]})"
                for k in SLACK if growth[k] > SLACK[k]]
    if stuck:
        failures.append(f"load threads did not stop: {stuck}")
    if end["hub_connections"]:
        failures.append(f"connections still open after the load: {end['hub_connections']}")
    if load.counts["errors"] > load.counts["connects"] // 10 + 5:
        failures.append(f"too many client errors: {load.errors}")
    hub_delta = {}
    for key in ("connections_opened", "connections_closed", "published", "sent",
                "sent_bytes", "dropped", "slow_consumer_closes"):
        hub_delta[key] = stats[key] - start_stats[key]
    return {
        "seconds": round(took, 1),
        "warmup_seconds": WARMUP_SECONDS,
        "start": start,
        "under_load": under_load,
        "end": end,
        "growth": growth,
        "slack": SLACK,
        "load": load.counts,
        "client_errors": load.errors,
        "hub": hub_delta,
        "failures": failures,
        "ok": not failures,
    }


def wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def main() -> int:
    # Resets make the websockets client log tracebacks, and slow readers
    # make the hub warn; both are expected here and counted instead.
    logging.getLogger("websockets").setLevel(logging.CRITICAL)
    logging.getLogger("wshub").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("seconds", type=float, help="how long to run (at least 5)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", help="also write the JSON result to this file")
    args = parser.parse_args()
    if args.seconds < 5:
        parser.error("run for at least 5 seconds")
    result = run(args.seconds, args.seed)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
