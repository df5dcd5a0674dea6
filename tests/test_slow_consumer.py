"""A client that stops reading is closed (1008 "slow consumer") without
delaying anybody else."""

from __future__ import annotations

import json
import time

from helpers import OP_CLOSE, OP_PING, OP_TEXT, close_code, publication, wait_until


def test_client_that_stops_reading_is_closed_as_slow_consumer(make_hub, connect, raw_ws):
    hub = make_hub(send_queue=16)
    good = connect(hub, ["t"])
    # Never reads after the handshake; a small receive buffer makes the
    # kernel buffers fill quickly.
    slow = raw_ws(hub, query="topics=t", rcvbuf=4096)
    # Subscribed, not just connected: the slow client must get seq 1 too.
    wait_until(lambda: hub.stats()["topics"].get("t") == 2,
               message=lambda: f"stats: {hub.stats()}")

    n = 0
    worst = 0.0
    while hub.stats()["slow_consumer_closes"] == 0:
        n += 1
        assert n <= 5000, f"slow client not closed after {n - 1} publications: {hub.stats()}"
        data = json.dumps({"i": n, "pad": "x" * 4000})
        assert hub.broadcast("t", data) in (1, 2)
        # the reading client keeps getting every publication, in order,
        # without being held up by the stuck one
        t0 = time.monotonic()
        assert good.recv_text(timeout=5) == publication("t", n, data)
        worst = max(worst, time.monotonic() - t0)
    assert worst < 2.0, f"good client was delayed {worst:.2f}s"

    # the slow client is gone from the hub at once
    wait_until(lambda: hub.stats()["connections"] == 1,
               message=lambda: f"stats: {hub.stats()}")
    stats = hub.stats()
    assert stats["topics"] == {"t": 1}
    assert stats["slow_consumer_closes"] == 1
    assert stats["dropped"] >= 1
    assert stats["connections_closed"] == 1

    # publishing goes on for the good client
    for _ in range(20):
        n += 1
        data = json.dumps({"i": n})
        assert hub.broadcast("t", data) == 1
        assert good.recv_text() == publication("t", n, data)

    # What the slow client got: the ack, an in-order gap-free prefix of the
    # publications, then (maybe) a 1008 "slow consumer" close frame, then EOF.
    frames, _ = slow.read_until_closed(timeout=10)
    texts = [p for op, p in frames if op == OP_TEXT]
    closes = [p for op, p in frames if op == OP_CLOSE]
    assert all(op in (OP_TEXT, OP_CLOSE, OP_PING) for op, _ in frames), \
        [op for op, _ in frames]
    assert json.loads(texts[0])["type"] == "connected"
    seqs = [json.loads(t)["seq"] for t in texts[1:]]
    assert seqs == list(range(1, len(seqs) + 1))
    assert len(seqs) < n
    if closes:
        assert frames[-1][0] == OP_CLOSE, "close frame must be the last frame"
        assert close_code(closes[0]) == (1008, "slow consumer")


def test_slow_consumer_on_one_topic_does_not_affect_other_topics(make_hub, connect, raw_ws):
    hub = make_hub(send_queue=8)
    other = connect(hub, ["quiet"])
    raw_ws(hub, query="topics=busy,quiet", rcvbuf=4096)
    wait_until(lambda: hub.stats()["connections"] == 2)
    n = 0
    while hub.stats()["slow_consumer_closes"] == 0:
        n += 1
        assert n <= 5000, f"slow client not closed: {hub.stats()}"
        hub.broadcast("busy", {"pad": "y" * 8000})
        if n % 10 == 0:
            hub.broadcast("quiet", n)
            assert other.recv_text(timeout=5) == publication("quiet", n // 10, str(n))
    wait_until(lambda: hub.stats()["topics"] == {"quiet": 1},
               message=lambda: f"stats: {hub.stats()}")
    assert hub.broadcast("quiet", '"after"') == 1
    assert other.recv_json()["data"] == "after"


def test_burst_many_times_the_queue_reaches_a_client_that_reads(make_hub, connect):
    # One broadcast_many of 2,000 publications for a client whose queue
    # holds 64: the fan-out hands them out in slices the queue can take,
    # so a client that reads is never mistaken for a slow one.
    hub = make_hub(send_queue=64)
    client = connect(hub, ["t"])
    items = [("t", json.dumps({"i": i})) for i in range(2000)]
    assert hub.broadcast_many(items) == [1] * 2000
    for seq, (_, data) in enumerate(items, start=1):
        assert client.recv_text(timeout=10) == publication("t", seq, data)
    stats = hub.stats()
    assert stats["slow_consumer_closes"] == 0, stats
    assert stats["dropped"] == 0, stats


def test_burst_reaches_every_client_that_reads(make_hub, connect):
    import threading

    hub = make_hub(send_queue=32)
    clients = [connect(hub, ["t"]) for _ in range(8)]
    count = 3000
    received = [0] * len(clients)
    errors: list[str] = []

    def read(k: int) -> None:
        try:
            for seq in range(1, count + 1):
                message = json.loads(clients[k].recv_text(timeout=10))
                if message["seq"] != seq:
                    errors.append(f"client {k}: seq {message['seq']}, expected {seq}")
                    return
                received[k] += 1
        except AssertionError as error:
            errors.append(f"client {k}: {error}")

    readers = [threading.Thread(target=read, args=(k,)) for k in range(len(clients))]
    for reader in readers:
        reader.start()
    hub.broadcast_many([("t", json.dumps({"i": i})) for i in range(count)])
    for reader in readers:
        reader.join(timeout=60)
    assert not errors, errors
    assert received == [count] * len(clients)
    assert hub.stats()["slow_consumer_closes"] == 0


def test_clients_that_never_read_delay_nobody_else(make_hub, connect, raw_ws):
    # Issue 11's scenario: while the host publishes steadily, a new client
    # that never reads arrives every 100 ms, on another topic or on the
    # healthy client's own topic. Each fills its queue and is closed; the
    # healthy client's latency and every broadcast() call stay short, and
    # the publishing takes the time it is meant to. (Before the fix the
    # fan-out paused for every lagging client anywhere: latency grew by
    # seconds and broadcast() blocked on the full publish queue.)
    import threading

    # A publish queue of a second's publications: a fan-out that falls
    # behind shows as blocking broadcast() calls, not only as latency.
    hub = make_hub(publish_queue=8192)
    good = connect(hub, ["feed"])
    rate, seconds = 4000, 4.0
    count = int(rate * seconds)
    latencies: list[float] = []
    errors: list[str] = []

    def read() -> None:
        try:
            for seq in range(1, count + 1):
                message = json.loads(good.recv_text(timeout=30))
                if message["seq"] != seq:
                    errors.append(f"seq {message['seq']}, expected {seq}")
                    return
                latencies.append(time.monotonic() - message["data"]["t"])
        except AssertionError as error:
            errors.append(str(error))

    stop = threading.Event()
    opened: list[str] = []

    def churn() -> None:
        # Never read; a small receive buffer fills their kernel buffers fast.
        while not stop.wait(0.1):
            topic = ("other", "feed")[len(opened) % 2]
            try:
                raw_ws(hub, query=f"topics={topic}", rcvbuf=4096)
            except (AssertionError, OSError) as error:
                errors.append(f"non-reader: {error!r}")
                return
            opened.append(topic)

    reader = threading.Thread(target=read)
    churner = threading.Thread(target=churn)
    reader.start()
    churner.start()
    pad = "x" * 500
    calls: list[float] = []
    start = time.monotonic()
    try:
        for i in range(count):
            ahead = start + i / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
            t0 = time.monotonic()
            hub.broadcast("feed", {"t": t0, "pad": pad})
            hub.broadcast("other", {"i": i, "pad": pad})
            calls.append(time.monotonic() - t0)
        took = time.monotonic() - start
    finally:
        stop.set()
        churner.join(10)
        reader.join(60)
    assert not errors, errors[:5]
    assert len(latencies) == count
    latencies.sort()
    p99 = latencies[int(0.99 * count)]
    stats = hub.stats()
    summary = (f"p50 {latencies[count // 2] * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
               f"max {latencies[-1] * 1000:.0f} ms, slowest broadcast pair "
               f"{max(calls) * 1000:.0f} ms, publishing took {took:.1f} s, "
               f"{len(opened)} non-readers, {stats['slow_consumer_closes']} closed")
    # The non-readers really did fall behind (on both topics).
    assert stats["slow_consumer_closes"] >= 10, summary
    assert p99 < 1.0, summary
    assert max(calls) < 0.2, summary
    assert took < seconds + 2.0, summary
