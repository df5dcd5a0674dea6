"""The Redis backplane (docs/scaling.md): hubs sharing publications through
a real redis-server that each test starts on a free loopback port, and how
they behave when Redis is down at start, restarted while they run, or too
slow to answer."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest

import wshub
from helpers import RawWS, wait_until
from redis_server import free_port, needs_redis, redis_server  # noqa: F401 (fixture)

pytestmark = needs_redis


def data_of(messages: list[dict]) -> list:
    return [m["data"] for m in messages]


def assert_seq_increases(messages: list[dict]) -> None:
    """seq strictly increases on each topic."""
    for topic in {m["topic"] for m in messages}:
        seqs = [m["seq"] for m in messages if m["topic"] == topic]
        assert all(a < b for a, b in zip(seqs, seqs[1:])), (topic, seqs)


def drain(client, timeout: float = 0.5) -> list[dict]:
    """Every publication that arrives until ``timeout`` passes in silence."""
    out = []
    while True:
        try:
            frame = client.recv_json(timeout=timeout)
        except AssertionError:
            return out
        assert frame["type"] == "message", frame
        out.append(frame)


# --------------------------------------------------------------------------
# options and start
# --------------------------------------------------------------------------


def test_start_fails_with_connection_error_when_redis_is_down():
    port = free_port()  # nothing listens there
    started = time.monotonic()
    with pytest.raises(ConnectionError) as info:
        wshub.Server(0, backplane=f"redis://127.0.0.1:{port}/0")
    assert time.monotonic() - started < 6
    assert isinstance(info.value, OSError)
    text = str(info.value)
    assert f"127.0.0.1:{port}" in text and "backplane" in text, text


@pytest.mark.parametrize("options, fragment", [
    ({"backplane": "http://127.0.0.1:6379"}, "Redis URL"),
    ({"backplane": "redis://127.0.0.1:1/0", "backplane_prefix": "a*"}, "backplane_prefix"),
    ({"backplane": "redis://127.0.0.1:1/0", "backplane_prefix": ""}, "backplane_prefix"),
    ({"reuse_port": True}, "needs a backplane"),
])
def test_bad_backplane_options_are_value_errors(options, fragment):
    with pytest.raises(ValueError, match=fragment):
        wshub.Server(0, **options)


def test_a_hub_without_backplane_reports_it_disconnected(make_hub):
    stats = make_hub().stats()
    assert stats["backplane_connected"] is False
    for key in ("backplane_published", "backplane_received", "backplane_dropped",
                "backplane_missed", "backplane_reconnects"):
        assert stats[key] == 0, key


def test_second_process_on_a_taken_port_gets_eaddrinuse_naming_both_remedies(make_hub):
    hub = make_hub()
    script = textwrap.dedent(f"""
        import errno, sys, wshub
        try:
            wshub.start({hub.port})
        except OSError as e:
            print(e.errno == errno.EADDRINUSE, str(e))
            sys.exit(0)
        sys.exit("started on a taken port")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    ok, _, message = result.stdout.partition(" ")
    assert ok == "True", result.stdout
    assert "already listens on this port" in message
    assert "pick another port or start the hub in one process only" in message
    assert "reuse_port=True together with a backplane" in message


# --------------------------------------------------------------------------
# delivery
# --------------------------------------------------------------------------


def test_publications_from_two_hubs_reach_every_client_once_in_seq_order(
        redis_server, make_hub, connect):
    a = make_hub(backplane=redis_server.url)
    b = make_hub(backplane=redis_server.url)
    clients = [connect(a, ["t"]), connect(b, ["t"]), connect(b, ["t", "u"])]
    expected = []
    for i in range(20):
        hub = a if i % 2 else b
        assert hub.broadcast("t", {"i": i}) == (1 if hub is a else 2)
        expected.append({"i": i})
    b.broadcast("u", "null")
    for client in clients:
        messages = client.recv_messages(21 if client is clients[2] else 20)
        assert_seq_increases(messages)
        on_t = [m for m in messages if m["topic"] == "t"]
        assert sorted(data_of(on_t), key=lambda d: d["i"]) == expected
        assert [m["seq"] for m in on_t] == list(range(1, 21))
    assert {"type": "message", "topic": "u", "seq": 1, "data": None} in messages
    stats = a.stats()
    assert stats["backplane_connected"] is True
    assert stats["published"] == stats["backplane_published"] == 10
    wait_until(lambda: a.stats()["backplane_received"] == 21)


def test_hubs_with_another_prefix_do_not_see_each_other(redis_server, make_hub, connect):
    a = make_hub(backplane=redis_server.url, backplane_prefix="feed1:")
    b = make_hub(backplane=redis_server.url, backplane_prefix="feed2:")
    ca, cb = connect(a, ["t"]), connect(b, ["t"])
    a.broadcast("t", "1")
    b.broadcast("t", "2")
    assert ca.recv_json()["data"] == 1
    assert cb.recv_json()["data"] == 2
    assert drain(ca, 0.3) == [] and drain(cb, 0.3) == []


# --------------------------------------------------------------------------
# failures
# --------------------------------------------------------------------------


def test_redis_restart_is_survived_and_losses_are_counted(redis_server, make_hub, connect):
    a = make_hub(backplane=redis_server.url)
    b = make_hub(backplane=redis_server.url)
    hubs = {"a": a, "b": b}
    clients = {"a": connect(a, ["t"]), "b": connect(b, ["t"])}
    for i in range(10):
        (a if i % 2 else b).broadcast("t", {"before": i})
    for client in clients.values():
        assert len(client.recv_messages(10)) == 10

    redis_server.kill()
    wait_until(lambda: not a.stats()["backplane_connected"]
               and not b.stats()["backplane_connected"], timeout=15,
               message="both hubs notice that Redis is gone")
    # Published while Redis is away: queued by hub a, sent once it is back.
    for i in range(3):
        assert a.broadcast("t", {"outage": i}) == 1

    redis_server.start()  # same port, empty: the seq counters are gone
    wait_until(lambda: all(h.stats()["backplane_connected"]
                           and h.stats()["backplane_reconnects"] >= 1
                           for h in hubs.values()),
               timeout=20, message=lambda: str({n: h.stats() for n, h in hubs.items()}))
    for i in range(10):
        (a if i % 2 else b).broadcast("t", {"after": i})

    for name, client in clients.items():
        messages = drain(client, timeout=1.0)
        # seq keeps increasing although Redis restarted without its data.
        assert messages and messages[0]["seq"] > 10, messages
        assert_seq_increases(messages)
        data = data_of(messages)
        after = [d for d in data if "after" in d]
        assert sorted(after, key=lambda d: d["after"]) == [{"after": i} for i in range(10)], data
        outage = [d for d in data if "outage" in d]
        assert len(set(map(str, data))) == len(data), data  # no duplicates
        # Nothing lost silently: what this hub's client did not get was
        # counted, as missed here or as dropped by the publishing hub.
        stats = hubs[name].stats()
        assert len(outage) + stats["backplane_missed"] + a.stats()["backplane_dropped"] == 3, (
            name, data, stats)


def test_a_stalled_redis_never_blocks_broadcast_and_overflow_is_counted(
        redis_server, make_hub, connect):
    hub = make_hub(backplane=redis_server.url, publish_queue=100)
    client = connect(hub, ["t"])
    hub.broadcast("t", '"warm-up"')
    assert client.recv_json()["data"] == "warm-up"

    redis_server.pause()  # SIGSTOP: connections stay open, nothing answers
    try:
        slowest = 0.0
        for i in range(1000):
            started = time.perf_counter()
            assert hub.broadcast("t", {"i": i}) == 1
            slowest = max(slowest, time.perf_counter() - started)
        assert slowest < 0.05, f"broadcast took {slowest:.3f}s with Redis stalled"
        stats = hub.stats()
        assert stats["published"] == 1001
        # At most publish_queue (100) waiting, and one batch taken from
        # that queue in flight; the rest was dropped and counted.
        assert 800 <= stats["backplane_dropped"] < 1000, stats
    finally:
        redis_server.resume()

    # Once Redis answers again, what was queued goes out, in order.
    wait_until(lambda: hub.stats()["backplane_published"] + hub.stats()["backplane_dropped"] == 1001,
               timeout=15, message=lambda: str(hub.stats()))
    dropped = hub.stats()["backplane_dropped"]
    hub.broadcast("t", '"after"')
    messages = client.recv_messages(1000 - dropped + 1, timeout=15)
    assert_seq_increases(messages)
    data = data_of(messages)
    assert data[-1] == "after"
    indexes = [d["i"] for d in data[:-1]]
    assert indexes == sorted(indexes) and indexes[0] == 0, indexes
    assert drain(client, 0.3) == []
    assert hub.stats()["backplane_dropped"] == dropped


def test_stop_is_prompt_while_redis_is_stalled(redis_server, make_hub):
    hub = make_hub(backplane=redis_server.url, shutdown_timeout=0.5)
    hub.broadcast("t", "1")
    wait_until(lambda: hub.stats()["backplane_published"] == 1)
    redis_server.pause()
    try:
        for i in range(10):
            hub.broadcast("t", str(i))
        started = time.monotonic()
        hub.stop()
        assert time.monotonic() - started < 4
    finally:
        redis_server.resume()


# --------------------------------------------------------------------------
# recovery through another hub
# --------------------------------------------------------------------------


def test_a_client_recovers_on_another_hub_of_the_feed(redis_server, make_hub, connect):
    a = make_hub(backplane=redis_server.url)
    b = make_hub(backplane=redis_server.url)
    on_a = connect(a, ["t"])
    # Hub b holds the topic too (someone reads it there), so it keeps what
    # the feed publishes on it.
    on_b = connect(b, ["t"])
    epoch = on_a.streams["t"]["epoch"]
    assert on_b.streams["t"]["epoch"] == epoch  # one epoch for the feed
    for n in range(1, 6):
        a.broadcast("t", {"n": n})
    assert [m["seq"] for m in on_a.recv_messages(5)] == [1, 2, 3, 4, 5]
    on_b.recv_messages(5)
    on_a.close()
    for n in range(6, 11):
        b.broadcast("t", {"n": n})
    on_b.recv_messages(5)
    # The client comes back on the other hub with where it was.
    back = connect(b, query=f"topics=t&since=t:5:{epoch}")
    assert back.ack["recovered"] == {"t": True}
    assert back.streams["t"] == {"epoch": epoch, "seq": 10}
    assert [(m["seq"], m["data"]["n"]) for m in back.recv_messages(5)] == [
        (n, n) for n in range(6, 11)]
    # A hub that never held a topic has nothing to recover it from.
    c = make_hub(backplane=redis_server.url)
    fresh = connect(c, query=f"topics=t&since=t:5:{epoch}")
    assert fresh.ack["recovered"] == {"t": False}
    assert fresh.streams["t"]["epoch"] == epoch
    for client in (on_b, back, fresh):
        client.close()


def test_the_feed_epoch_lives_in_redis_and_survives_the_hubs(redis_server, make_hub, connect):
    first = make_hub(backplane=redis_server.url)
    epoch = connect(first, ["x"]).streams["x"]["epoch"]
    first.stop()
    second = make_hub(backplane=redis_server.url)
    assert connect(second, ["x"]).streams["x"]["epoch"] == epoch
    other = make_hub(backplane=redis_server.url, backplane_prefix="other:")
    assert connect(other, ["x"]).streams["x"]["epoch"] != epoch


def test_retained_values_and_clears_reach_every_hub(redis_server, make_hub, connect):
    a = make_hub(backplane=redis_server.url)
    b = make_hub(backplane=redis_server.url)
    # Nobody subscribed anywhere: each hub keeps the values it receives.
    a.broadcast("odds", {"m": 1, "p": 1.5}, key=1, retain=True)
    b.broadcast("odds", {"m": 2, "p": 2.0}, key=2, retain=True)
    a.broadcast("odds", {"m": 1, "p": 1.6}, key=1, retain=True)
    a.broadcast("odds", {"m": 3}, key=3)  # not retained
    for hub in (a, b):
        wait_until(lambda hub=hub: hub.stats()["retained_values"] == 2)
    on_a, on_b = connect(a, ["odds"]), connect(b, ["odds"])
    for client in (on_a, on_b):
        values = client.recv_messages(2)
        # The two hubs' publications interleave in Redis in either order.
        assert all(m["retained"] for m in values)
        assert_seq_increases(values)
        assert sorted(data_of(values), key=lambda d: d["m"]) == [
            {"m": 1, "p": 1.6}, {"m": 2, "p": 2.0}]
    # A clear made on one hub applies on both, in order with publications.
    b.clear_retained("odds", key=1)
    a.broadcast("odds", {"m": 2, "p": 2.1}, key=2, retain=True)
    for client in (on_a, on_b):
        assert data_of(client.recv_messages(1)) == [{"m": 2, "p": 2.1}]
    for hub in (a, b):
        wait_until(lambda hub=hub: hub.stats()["retained_values"] == 1)
        late = connect(hub, ["odds"])
        assert data_of(late.recv_messages(1)) == [{"m": 2, "p": 2.1}]
        late.ping()
        late.close()
    for client in (on_a, on_b):
        client.close()


def test_the_conflation_key_travels_through_redis(redis_server, make_hub):
    """A client of the other hub that does not read keeps only the newest
    publication per key, as it would on the publishing hub."""
    a = make_hub(backplane=redis_server.url)
    b = make_hub(backplane=redis_server.url, slow_client="conflate", send_queue=4)
    stalled = RawWS(b.port, query="topics=t", rcvbuf=4096)
    wait_until(lambda: b.stats()["topics"].get("t") == 1)
    for round_ in range(200):
        for key in ("x", "y"):
            a.broadcast("t", {"k": key, "r": round_, "pad": "z" * 20_000}, key=key)
    wait_until(lambda: b.stats()["conflated"] > 0)
    stalled.sock.settimeout(10)
    newest: dict[str, int] = {}
    seqs: list[int] = []
    while newest != {"x": 199, "y": 199}:
        _, payload = stalled.read_frame()
        message = json.loads(payload)
        if message["type"] != "message":
            continue
        seqs.append(message["seq"])
        newest[message["data"]["k"]] = message["data"]["r"]
    # Fewer than were published: the rest was conflated away, per key
    # (without the key, "x" and "y" would have replaced each other).
    assert len(seqs) < 400 and seqs == sorted(seqs)
    stalled.close()
