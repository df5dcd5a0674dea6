"""Both slow-client policies under a client that never reads while 500 MB
are broadcast: memory stays bounded and every other client gets
everything, in order."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from websockets.sync.client import connect as ws_connect

import wshub

from helpers import RawWS, wait_until

PAYLOAD = 64 * 1024
TOTAL = 500 * 1024 * 1024
COUNT = TOTAL // PAYLOAD  # 8000 publications
# What the process may grow by while 500 MB go through it: the queues are
# bounded at a few MB; the rest is allocator slack and the readers' buffers.
RSS_SLACK = 150 * 1024 * 1024


def rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def read_all(ws, expected: int, got: list[int], topic: str) -> None:
    for _ in range(expected):
        message = json.loads(ws.recv(timeout=30))
        if message["type"] == "message" and message["topic"] == topic:
            got.append(message["seq"])


# Publications ahead of the healthy client at most: the producer runs as
# fast as a healthy client reads (the stuck one must not slow it down),
# well within send_queue, so only the stuck client ever falls behind.
WINDOW = 16


def pump(hub: wshub.Server, keys: int, got: list[int]) -> None:
    pad = "x" * (PAYLOAD - 64)
    for i in range(COUNT):
        wait_until(lambda: len(got) >= i - WINDOW, timeout=30)
        hub.broadcast("odds", json.dumps({"match": i % keys, "i": i, "pad": pad}),
                      key=i % keys)


@contextmanager
def broadcast_500_mb_past_a_stuck_client(hub: wshub.Server, keys: int) -> Iterator[RawWS]:
    """Connects a healthy client and one that never reads, broadcasts 500 MB
    and checks the healthy one got everything in order while the process
    stayed within RSS_SLACK. Yields the stuck client, still unread, while
    the healthy one is still connected."""
    with ws_connect(f"ws://127.0.0.1:{hub.port}/api/ws?topics=odds",
                    open_timeout=5, max_size=None) as good:
        good.recv(timeout=5)
        stuck = RawWS(hub.port, query="topics=odds", rcvbuf=4096)
        wait_until(lambda: hub.stats()["topics"].get("odds") == 2, timeout=5)
        before = rss()
        got: list[int] = []
        reader = threading.Thread(target=read_all, args=(good, COUNT, got, "odds"))
        reader.start()
        pump(hub, keys=keys, got=got)
        reader.join(120)
        assert got == list(range(1, COUNT + 1))
        assert rss() - before < RSS_SLACK
        try:
            yield stuck
        finally:
            stuck.close()


def test_disconnect_policy_closes_the_stuck_client_and_stays_bounded() -> None:
    with wshub.start(0, send_queue=64, send_queue_bytes=4 * 1024 * 1024) as hub, \
            broadcast_500_mb_past_a_stuck_client(hub, keys=50):
        stats = hub.stats()
        assert stats["slow_consumer_closes"] == 1
        assert stats["connections"] == 1


def test_conflate_policy_keeps_the_newest_value_per_key_and_never_closes() -> None:
    keys = 50
    with wshub.start(0, send_queue=64, send_queue_bytes=4 * 1024 * 1024,
                     slow_client="conflate") as hub, \
            broadcast_500_mb_past_a_stuck_client(hub, keys=keys) as stuck:
        stats = hub.stats()
        assert stats["slow_consumer_closes"] == 0
        assert stats["connections"] == 2
        assert stats["conflated"] > 0

        # The stuck client catches up: an in-order prefix, then the
        # newest value of every key, still in seq order, and it stays
        # connected.
        stuck.sock.settimeout(30)
        last_by_match: dict[int, int] = {}
        seqs: list[int] = []
        while len(last_by_match) < keys or last_by_match.get(
                (COUNT - 1) % keys) != COUNT:
            op, payload = stuck.read_frame()
            message = json.loads(payload)
            if message.get("type") != "message":
                continue
            seqs.append(message["seq"])
            last_by_match[message["data"]["match"]] = message["seq"]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        newest = {m: max(s for s in range(1, COUNT + 1) if (s - 1) % keys == m)
                  for m in range(keys)}
        assert last_by_match == newest
        assert len(seqs) < COUNT
        assert hub.stats()["connections"] == 2
