"""Fan-out: many clients, concurrent publishers, ordering, subscription
changes racing publications, and use from asyncio."""

from __future__ import annotations

import asyncio
import inspect
import json
import threading
from collections import defaultdict

import pytest
from websockets.asyncio.client import connect as async_connect

import wshub
from helpers import publication, wait_until, ws_url, without_streams

TOPICS = [f"t{i}" for i in range(5)]


def test_many_clients_each_receive_exactly_their_topics_in_order(hub, connect):
    subscriptions = []
    clients = []
    for i in range(30):
        topics = sorted({TOPICS[i % 5], TOPICS[(i * 3 + 1) % 5]} | ({"t4"} if i % 7 == 0 else set()))
        subscriptions.append(set(topics))
        clients.append(connect(hub, topics + ["end"]))
    expected_subscribers = {t: sum(t in s for s in subscriptions) for t in TOPICS}

    published = []  # (topic, seq, data) in call order, from this one thread
    seq = defaultdict(int)
    for k in range(40):
        for topic in TOPICS:
            data = json.dumps({"k": k, "topic": topic}, separators=(",", ":"))
            assert hub.broadcast(topic, data) == expected_subscribers[topic]
            seq[topic] += 1
            published.append((topic, seq[topic], data))
    assert hub.broadcast("end", "null") == 30

    for client, topics in zip(clients, subscriptions):
        expected = [publication(t, s, d) for t, s, d in published if t in topics]
        received = []
        while True:
            text = client.recv_text(timeout=10)
            if text == publication("end", 1, "null"):
                break
            received.append(text)
        assert received == expected, f"client subscribed to {sorted(topics)}"

    wait_until(lambda: hub.stats()["sent"] == 30 + sum(
        len([p for p in published if p[0] in s]) for s in subscriptions),
        message=lambda: f"stats: {hub.stats()}")


@pytest.mark.parametrize("worker_threads", [1, 3])
def test_concurrent_broadcasts_from_threads_all_arrive_in_seq_order(
        make_hub, connect, worker_threads):
    n_threads, per_thread = 6, 150
    hub = make_hub(worker_threads=worker_threads)
    own = [f"own{k}" for k in range(n_threads)]
    # 3 clients see everything, 2 only the shared topic
    full = [connect(hub, ["shared"] + own) for _ in range(3)]
    shared_only = [connect(hub, ["shared"]) for _ in range(2)]

    barrier = threading.Barrier(n_threads)
    returns: dict[int, list] = defaultdict(list)
    errors = []

    def publisher(k: int) -> None:
        try:
            barrier.wait(timeout=10)
            for i in range(per_thread):
                topic = "shared" if i % 2 == 0 else own[k]
                n = hub.broadcast(topic, {"k": k, "i": i})
                returns[k].append((topic, n))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=publisher, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)

    for k in range(n_threads):
        assert len(returns[k]) == per_thread
        for topic, n in returns[k]:
            assert n == (5 if topic == "shared" else 3), (topic, n)

    total_shared = n_threads * (per_thread // 2)
    total_own = per_thread - per_thread // 2

    def check(client, topics):
        n_expected = sum(total_shared if t == "shared" else total_own for t in topics)
        messages = client.recv_messages(n_expected, timeout=15)
        seqs = defaultdict(list)
        last_i = {}
        for m in messages:
            assert m["topic"] in topics, m
            seqs[m["topic"]].append(m["seq"])
            k, i = m["data"]["k"], m["data"]["i"]
            # calls from one thread keep their order
            assert i > last_i.get(k, -1), (m, last_i.get(k))
            last_i[k] = i
        for topic in topics:
            n = total_shared if topic == "shared" else total_own
            # strictly increasing per topic, and subscribed throughout: no gaps
            assert seqs[topic] == list(range(1, n + 1)), topic
        # every (k, i) exactly once
        pairs = sorted((m["data"]["k"], m["data"]["i"]) for m in messages)
        assert len(pairs) == len(set(pairs)) == n_expected

    for client in full:
        check(client, ["shared"] + own)
    for client in shared_only:
        check(client, ["shared"])

    stats = wait_until(lambda: (s := hub.stats())["sent"] == 3 * n_threads * per_thread
                       + 2 * total_shared and s,
                       message=lambda: f"stats: {hub.stats()}")
    assert stats["published"] == n_threads * per_thread
    assert stats["dropped"] == 0 and stats["slow_consumer_closes"] == 0


class Publisher(threading.Thread):
    """Publishes ``data = index`` on ``topic`` at a modest pace until told to
    stop. ``started`` is the number of broadcast calls begun so far."""

    def __init__(self, hub, topic: str, limit: int = 2000):
        super().__init__(daemon=True)
        self.hub, self.topic, self.limit = hub, topic, limit
        self.started = 0
        self.stop_event = threading.Event()
        self.error = None

    def run(self) -> None:
        try:
            while not self.stop_event.is_set() and self.started < self.limit:
                self.started += 1
                self.hub.broadcast(self.topic, str(self.started))
                # pacing, not synchronisation: keep the client's queue short
                self.stop_event.wait(0.001)
        except BaseException as exc:
            self.error = exc

    def finish(self) -> int:
        self.stop_event.set()
        self.join(timeout=10)
        assert self.error is None, self.error
        return self.started


def test_every_publication_after_subscribed_answer_is_delivered(hub, connect):
    client = connect(hub, ["fence"])
    pub = Publisher(hub, "t")
    pub.start()
    try:
        wait_until(lambda: pub.started >= 30)
        client.send_json({"type": "subscribe", "topics": ["t"]})
        answer = client.recv_json()
        started_when_answered = pub.started
        assert answer == {"type": "subscribed", "topics": ["fence", "t"], "rejected": []}
        wait_until(lambda: pub.started >= started_when_answered + 30)
    finally:
        total = pub.finish()
    hub.broadcast("fence", "0")
    seqs = []
    while True:
        m = client.recv_json()
        if m["topic"] == "fence":
            break
        # The publisher's data is its call index; seq counts only what
        # was published while somebody was subscribed (protocol.md).
        seqs.append((m["data"], m["seq"]))
    assert seqs, "nothing delivered after subscribing"
    first = seqs[0]
    assert seqs == [(first[0] + i, first[1] + i) for i in range(total + 1 - first[0])], \
        "gap after subscribing"
    assert first[0] <= started_when_answered + 1


def test_no_publication_after_unsubscribed_answer_is_delivered(hub, connect):
    client = connect(hub, ["t", "fence"])
    pub = Publisher(hub, "t")
    pub.start()
    try:
        wait_until(lambda: pub.started >= 30)
        client.send_json({"type": "unsubscribe", "topics": ["t"]})
        before = []
        while True:
            m = client.recv_json()
            if m["type"] == "unsubscribed":
                assert m == {"type": "unsubscribed", "topics": ["fence"]}
                break
            assert m["type"] == "message" and m["topic"] == "t", m
            before.append(m["seq"])
        wait_until(lambda: pub.started >= max(before, default=0) + 60)
    finally:
        pub.finish()
    assert before == list(range(1, len(before) + 1))
    hub.broadcast("fence", "0")
    assert client.recv_text() == publication("fence", 1, "0")


def test_broadcast_from_asyncio_coroutine_without_await(hub):
    url = ws_url(hub.port, ["t", "u"])
    options = {"proxy": None} if "proxy" in inspect.signature(async_connect).parameters else {}

    async def main():
        async with async_connect(url, ping_interval=None, close_timeout=1, **options) as ws:
            ack = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert without_streams(ack) == {"type": "connected", "topics": ["t", "u"],
                                            "rejected": []}
            # plain calls inside the coroutine: no await, must not block the loop
            assert wshub.broadcast("t", {"from": "asyncio"}) == 1
            assert hub.broadcast("u", "[1]") == 1
            first = await asyncio.wait_for(ws.recv(), 5)
            second = await asyncio.wait_for(ws.recv(), 5)
            assert first == publication("t", 1, '{"from":"asyncio"}')
            assert second == publication("u", 1, "[1]")

            # many tasks broadcasting concurrently on the loop
            async def task(j):
                await asyncio.sleep(0)
                return wshub.broadcast("t", str(j))

            results = await asyncio.gather(*(task(j) for j in range(50)))
            assert results == [1] * 50
            seqs = [json.loads(await asyncio.wait_for(ws.recv(), 5))["seq"]
                    for _ in range(50)]
            assert seqs == list(range(2, 52))

    asyncio.run(asyncio.wait_for(main(), 30))


def test_unsubscribe_under_load_never_delivers_after_the_answer(make_hub, connect):
    # Publications made before the unsubscribe may or may not arrive before
    # the "unsubscribed" answer, but none may arrive after it. The hub is kept
    # busy with another topic so that fan-out lags behind.
    hub = make_hub(send_queue=1_000_000)
    sinks = [connect(hub, ["busy"]) for _ in range(5)]
    client = connect(hub, ["fence"])
    fence = 0
    for _ in range(30):
        assert client.subscribe(["a"])["topics"] == ["a", "fence"]
        for _ in range(200):
            hub.broadcast("busy", "0")
        assert hub.broadcast("a", '"maybe"') == 1
        client.send_json({"type": "unsubscribe", "topics": ["a"]})
        while True:
            m = client.recv_json()
            if m["type"] == "unsubscribed":
                assert m["topics"] == ["fence"]
                break
            assert m["type"] == "message" and m["data"] == "maybe", m
        assert hub.broadcast("a", '"never"') == 0
        fence += 1
        hub.broadcast("fence", fence)
        assert client.recv_text() == publication("fence", fence, str(fence))
    assert len(sinks[0].recv_messages(30 * 200, timeout=20)) == 30 * 200


def test_ack_comes_first_and_delivery_is_gap_free_while_topic_is_busy(hub, connect):
    pub = Publisher(hub, "t", limit=5000)
    pub.start()
    clients = []
    try:
        wait_until(lambda: pub.started >= 10)
        for _ in range(15):
            # connect() asserts that the first frame is the ack
            client = connect(hub, ["t", "fence"])
            assert client.ack["topics"] == ["fence", "t"]
            clients.append((client, pub.started))
        wait_until(lambda: pub.started >= clients[-1][1] + 20)
    finally:
        total = pub.finish()
    hub.broadcast("fence", "0")
    for client, started_at_ack in clients:
        seqs = []
        while True:
            m = client.recv_json()
            assert m["type"] == "message", m
            if m["topic"] == "fence":
                break
            seqs.append((m["data"], m["seq"]))
        assert seqs, "nothing delivered after the ack"
        # data is the publisher's call index; seq counts from the first
        # publication the topic had a subscriber for (protocol.md).
        first = seqs[0]
        assert seqs == [(first[0] + i, first[1] + i) for i in range(total + 1 - first[0])], \
            "gap in delivery"
        # publications started after the ack arrived are all delivered
        assert first[0] <= started_at_ack + 1
