"""Starting, stopping, resources, and how connections end."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

import pytest
import websockets

import wshub
from helpers import (
    HOST, close_code, connect_client, fd_count, open_ws, publication,
    thread_count, wait_until, wshub_thread_names,
)


# --------------------------------------------------------------------------
# stop()
# --------------------------------------------------------------------------


def test_stop_sends_close_code_1001_to_every_client(make_hub, connect):
    hub = make_hub()
    clients = [connect(hub, ["t"]) for _ in range(3)] + [connect(hub)]
    hub.stop()
    for client in clients:
        closed = client.expect_closed(timeout=5)
        assert closed.rcvd is not None, f"no close frame received: {closed!r}"
        assert closed.rcvd.code == 1001


def test_stop_delivers_publications_queued_before_it(make_hub, connect):
    # Inferred from "stop() is graceful" and broadcast() returning the number
    # of subscribers a publication "was queued for": publications accepted
    # before stop() reach connected clients ahead of the 1001 close frame.
    hub = make_hub()
    client = connect(hub, ["t"])
    for i in range(20):
        hub.broadcast("t", str(i))
    hub.stop()
    texts = []
    closed = None
    while closed is None:
        try:
            texts.append(client.ws.recv(timeout=5))
        except websockets.ConnectionClosed as exc:
            closed = exc
    assert texts == [publication("t", i + 1, str(i)) for i in range(20)]
    assert closed.rcvd is not None and closed.rcvd.code == 1001


def test_stop_sets_running_false_and_is_idempotent(make_hub):
    hub = make_hub()
    assert hub.running is True
    hub.stop()
    assert hub.running is False
    hub.stop()
    hub.stop()
    assert hub.running is False


def test_stop_closes_the_listening_socket(make_hub):
    hub = make_hub()
    port = hub.port
    hub.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((HOST, port), timeout=5).close()


def test_stop_joins_the_runtime_threads(make_hub):
    before = len(wshub_thread_names())
    hub = make_hub(worker_threads=2)
    # a new thread sets its own name, so it may show up a moment later
    wait_until(lambda: len(wshub_thread_names()) - before >= 2,
               message=lambda: f"runtime threads not named wshub*: {wshub_thread_names()}")
    hub.stop()
    # stop() joins: no wait needed
    assert len(wshub_thread_names()) <= before, wshub_thread_names()


def test_same_port_can_be_reused_right_after_stop(make_hub, connect):
    hub = make_hub()
    port = hub.port
    client = connect(hub, ["t"])
    hub.broadcast("t", "1")
    client.recv_text()
    hub.stop()
    client.expect_closed()
    again = make_hub(port)
    assert again.port == port
    client2 = connect(again, ["t"])
    again.broadcast("t", "2")
    assert client2.recv_text() == publication("t", 1, "2")


def test_context_manager_stops_on_exit(connect):
    with wshub.start(0) as hub:
        assert isinstance(hub, wshub.Server)
        assert hub.running
        client = connect(hub, ["t"])
        hub.broadcast("t", "1")
        assert client.recv_text() == publication("t", 1, "1")
    assert hub.running is False
    assert client.expect_closed().rcvd.code == 1001
    with pytest.raises(RuntimeError):
        hub.broadcast("t", "2")


def test_context_manager_stops_when_body_raises():
    with pytest.raises(KeyError):
        with wshub.start(0) as hub:
            raise KeyError("boom")
    assert hub.running is False


def test_server_constructor_works_as_context_manager():
    with wshub.Server(0) as hub:
        assert hub.running
    assert hub.running is False


def test_start_stop_50_times_does_not_leak_threads_or_fds():
    def cycle(with_client: bool) -> None:
        hub = wshub.start(0, worker_threads=2)
        try:
            if with_client:
                client = connect_client(hub, ["t"])
                hub.broadcast("t", "1")
                assert client.recv_text() == publication("t", 1, "1")
        finally:
            hub.stop()
        if with_client:
            assert client.expect_closed().rcvd.code == 1001
            client.close()

    cycle(True)  # warm-up: lazily created process-wide resources
    threads_before, fds_before = thread_count(), fd_count()
    for i in range(50):
        cycle(with_client=i % 2 == 0)
    # the websockets client threads end shortly after their connection does
    wait_until(lambda: thread_count() <= threads_before + 2,
               message=lambda: f"threads: {threads_before} -> {thread_count()}")
    assert fd_count() <= fds_before + 3, f"fds: {fds_before} -> {fd_count()}"


def test_failed_starts_do_not_leak_threads_or_fds():
    blocker = socket.socket()
    blocker.bind((HOST, 0))
    blocker.listen()
    try:
        port = blocker.getsockname()[1]
        with pytest.raises(OSError):
            wshub.start(port)
        threads_before, fds_before = thread_count(), fd_count()
        for _ in range(20):
            with pytest.raises(OSError):
                wshub.start(port)
        assert thread_count() <= threads_before + 1
        assert fd_count() <= fds_before + 1
    finally:
        blocker.close()


def test_stop_from_another_thread_while_broadcasting(make_hub, connect):
    hub = make_hub()
    client = connect(hub, ["t"])
    stop_now = threading.Event()
    outcome = {}

    def publish():
        n = 0
        try:
            while True:
                hub.broadcast("t", str(n))
                n += 1
                if n == 50:
                    stop_now.set()
                if n > 20_000:
                    outcome["error"] = "never stopped"
                    return
                # pacing, not synchronisation: stay far below send_queue
                time.sleep(0.0005)
        except RuntimeError:
            outcome["published"] = n

    thread = threading.Thread(target=publish)
    thread.start()
    stop_now.wait(10)
    hub.stop()
    thread.join(10)
    assert not thread.is_alive()
    assert "published" in outcome, outcome
    # the client saw an in-order prefix of the publications, then 1001
    seq = 0
    while True:
        try:
            text = client.ws.recv(timeout=5)
        except websockets.ConnectionClosed as exc:
            if exc.rcvd is not None:
                assert exc.rcvd.code == 1001
            break
        seq += 1
        assert text == publication("t", seq, str(seq - 1))
    assert seq <= outcome["published"]


# --------------------------------------------------------------------------
# connections ending
# --------------------------------------------------------------------------


def test_client_close_removes_it_from_every_topic(hub, connect):
    stay = connect(hub, ["a"])
    leave = connect(hub, ["a", "b", "c"])
    wait_until(lambda: hub.stats()["topics"] == {"a": 2, "b": 1, "c": 1},
               message=lambda: f"stats: {hub.stats()}")
    leave.close()
    wait_until(lambda: hub.stats()["topics"] == {"a": 1},
               message=lambda: f"stats: {hub.stats()}")
    stats = hub.stats()
    assert stats["connections"] == 1
    assert stats["connections_closed"] == 1
    assert hub.broadcast("a", "1") == 1
    assert hub.broadcast("b", "1") == 0
    assert stay.recv_text() == publication("a", 1, "1")


def test_tcp_reset_removes_client_from_every_topic(hub, connect, raw_ws):
    stay = connect(hub, ["a"])
    gone = raw_ws(hub, query="topics=a,b,c")
    wait_until(lambda: hub.stats()["topics"] == {"a": 2, "b": 1, "c": 1},
               message=lambda: f"stats: {hub.stats()}")
    gone.reset()
    wait_until(lambda: hub.stats()["topics"] == {"a": 1},
               message=lambda: f"stats: {hub.stats()}")
    wait_until(lambda: hub.stats()["connections"] == 1,
               message=lambda: f"stats: {hub.stats()}")
    assert hub.stats()["connections_closed"] == 1
    assert hub.broadcast("a", "1") == 1
    assert stay.recv_text() == publication("a", 1, "1")


def test_tcp_reset_while_publishing_is_survived(hub, connect, raw_ws):
    stay = connect(hub, ["a"])
    gone = raw_ws(hub, query="topics=a")
    for i in range(50):
        hub.broadcast("a", str(i))
    gone.reset()
    for i in range(50, 100):
        hub.broadcast("a", str(i))
    assert [m["data"] for m in stay.recv_messages(100)] == list(range(100))
    wait_until(lambda: hub.stats()["topics"] == {"a": 1},
               message=lambda: f"stats: {hub.stats()}")


def test_max_connections_refuses_handshakes_beyond_the_limit(make_hub, connect):
    hub = make_hub(max_connections=2)
    first = connect(hub, ["a"])
    connect(hub, ["a"])
    with pytest.raises(websockets.InvalidStatus) as info:
        open_ws(hub.port, ["a"])
    assert info.value.response.status_code == 503
    assert hub.stats()["connections"] == 2
    assert hub.broadcast("a", "1") == 2
    # a freed slot can be used again
    first.close()
    wait_until(lambda: hub.stats()["connections"] == 1,
               message=lambda: f"stats: {hub.stats()}")
    third = connect(hub, ["a"])
    assert third.ack["topics"] == ["a"]


def test_many_connections_open_and_close_cleanly(hub, connect):
    clients = [connect(hub, ["a"]) for _ in range(40)]
    wait_until(lambda: hub.stats()["connections"] == 40)
    for client in clients:
        client.close()
    wait_until(lambda: hub.stats()["connections"] == 0,
               message=lambda: f"stats: {hub.stats()}")
    stats = hub.stats()
    assert stats["topics"] == {}
    assert stats["connections_opened"] == stats["connections_closed"] == 40


def test_close_frame_from_raw_client_is_answered(hub, raw_ws):
    client = raw_ws(hub, query="topics=a")
    client.send_frame(8, (1000).to_bytes(2, "big") + b"bye")
    frames, _ = client.read_until_closed(timeout=5)
    closes = [payload for op, payload in frames if op == 8]
    assert closes, frames
    assert close_code(closes[0])[0] == 1000
    wait_until(lambda: hub.stats()["connections"] == 0)


def test_stop_returns_promptly_with_stuck_and_half_open_clients(make_hub, connect, raw_ws):
    hub = make_hub()
    normal = connect(hub, ["t"])
    stuck = raw_ws(hub, query="topics=t", rcvbuf=4096)  # never reads
    half_open = socket.create_connection((HOST, hub.port), timeout=5)  # no handshake
    try:
        wait_until(lambda: hub.stats()["connections"] == 2)
        # fill the stuck client's TCP window and part of its queue, staying
        # well below the default send_queue so it is not closed as slow
        for i in range(200):
            hub.broadcast("t", {"i": i, "pad": "z" * 8000})
        normal.recv_messages(200)
        t0 = time.monotonic()
        hub.stop()
        took = time.monotonic() - t0
        # default shutdown allowance is a couple of seconds; never unbounded
        assert took < 6, f"stop() took {took:.1f}s"
        assert hub.running is False
        assert normal.expect_closed().rcvd.code == 1001
        # the half-open TCP connection is dropped too
        half_open.settimeout(5)
        try:
            assert half_open.recv(1) == b""
        except ConnectionResetError:
            pass
        # the stuck client's connection ends (possibly after data and a
        # close frame it never read)
        stuck.read_until_closed(timeout=5)
    finally:
        half_open.close()


def test_module_stop_only_stops_the_latest_started_server(make_hub, connect):
    first = make_hub()
    second = make_hub()
    wshub.stop()
    assert second.running is False
    assert first.running is True
    client = connect(first, ["t"])
    assert first.broadcast("t", "1") == 1
    assert client.recv_text() == publication("t", 1, "1")
    with pytest.raises(RuntimeError):
        wshub.broadcast("t", "2")


# --------------------------------------------------------------------------
# the GIL on every path that stops a hub
# --------------------------------------------------------------------------

# A hub with on_subscription and connected clients, dropped by a second
# wshub.start() (the module let go of the only reference): its stop() must
# not hold the GIL while it waits for the events thread, which needs the
# GIL to report "t" losing its subscribers. Then interpreter exit with a
# hub in the same state (atexit stops it).
_DROP_SCRIPT = r"""
import sys, threading
from websockets.sync.client import connect
import wshub

events = []
gained = threading.Event()

def on_subscription(topic, subscribers):
    events.append((topic, subscribers))
    if subscribers:
        gained.set()

def start_with_clients():
    hub = wshub.start(0, on_subscription=on_subscription, shutdown_timeout=0.5)
    clients = [connect(f"ws://127.0.0.1:{hub.port}/api/ws?topics=t", open_timeout=5)
               for _ in range(3)]
    for ws in clients:
        ws.recv(timeout=5)
    assert gained.wait(5), "no subscription event"
    gained.clear()
    return clients

clients = start_with_clients()
wshub.start(0)  # drops the first hub: nothing else refers to it
assert events == [("t", 1), ("t", 0)], events
print("dropped", flush=True)
clients += start_with_clients()
print("exiting", flush=True)
"""


def test_dropping_or_exiting_with_a_busy_on_subscription_hub_does_not_deadlock():
    try:
        done = subprocess.run([sys.executable, "-c", _DROP_SCRIPT], capture_output=True,
                              text=True, timeout=60)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"deadlock: the process did not finish in 60 s; stdout: {exc.stdout!r}")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["dropped", "exiting"]
