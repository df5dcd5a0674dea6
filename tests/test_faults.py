"""Faults around the hub: peers that vanish mid-write, stop() racing
publishers, interpreter exit with a live hub, sockets that never speak,
and a port that is taken. Each test checks the hub neither hangs nor
crashes, and that what should be freed is freed."""

from __future__ import annotations

import errno
import fcntl
import os
import resource
import socket
import struct
import subprocess
import sys
import termios
import textwrap
import threading
import time

import pytest

import wshub

from helpers import OP_TEXT, RawWS, connect_client, wait_until


def unread_bytes(sock: socket.socket) -> int:
    """Bytes waiting in the socket's receive queue (FIONREAD)."""
    raw = fcntl.ioctl(sock.fileno(), termios.FIONREAD, struct.pack("i", 0))
    return struct.unpack("i", raw)[0]


def assert_hub_serves(hub, topic: str = "check") -> None:
    client = connect_client(hub, [topic])
    try:
        hub.broadcast(topic, '"ok"')
        assert client.recv_json()["data"] == "ok"
    finally:
        client.close()


# --------------------------------------------------------------------------
# a peer that resets while the server writes to it
# --------------------------------------------------------------------------


def test_reset_while_server_writes_a_large_backlog(make_hub):
    hub = make_hub(send_queue=4096, send_queue_bytes=64 * 1024 * 1024)
    readers = [RawWS(hub.port, query="topics=big", rcvbuf=4096) for _ in range(8)]
    try:
        wait_until(lambda: hub.stats()["topics"].get("big") == len(readers))
        good = connect_client(hub, ["small"])
        payload = '{"pad":"' + "x" * 32_000 + '"}'
        for _ in range(100):  # 3.2 MB each: far more than the socket takes
            hub.broadcast("big", payload)
        # The server is mid-write: every reader's window is full.
        for reader in readers:
            wait_until(lambda: unread_bytes(reader.sock) > 0)
        wait_until(lambda: hub.stats()["published"] == 100)
        for reader in readers:
            reader.reset()
        wait_until(lambda: hub.stats()["connections"] == 1, timeout=10,
                   message=lambda: f"stats: {hub.stats()}")
        stats = hub.stats()
        assert "big" not in stats["topics"]
        assert stats["slow_consumer_closes"] == 0
        # The survivor is served, and further publications to the dead
        # topic go nowhere.
        assert hub.broadcast("big", payload) == 0
        hub.broadcast("small", "1")
        assert good.recv_json()["data"] == 1
        good.close()
        assert_hub_serves(hub)
    finally:
        for reader in readers:
            reader.close()


def test_reset_during_close_handshake_is_survived(make_hub):
    hub = make_hub(rate_limit=0.1, rate_burst=1)
    ws = RawWS(hub.port)
    ws.read_frame()
    # Over the rate limit: the server sends close 1008 and waits for ours;
    # we reset instead.
    for _ in range(3):
        ws.send_frame(OP_TEXT, b'{"type":"ping"}')
    ws.reset()
    wait_until(lambda: hub.stats()["connections"] == 0)
    assert_hub_serves(hub)


# --------------------------------------------------------------------------
# stop() against publishers
# --------------------------------------------------------------------------


def run_publishers(hub, n_threads: int, start: threading.Barrier | None = None,
                   payload: str = '{"n":1}'):
    """Threads that broadcast until the hub refuses; returns (threads,
    unexpected exceptions, publication counts)."""
    errors: list[BaseException] = []
    counts = [0] * n_threads

    def publish(i: int) -> None:
        if start is not None:
            start.wait(timeout=10)
        try:
            while True:
                hub.broadcast(f"t{i % 3}", payload)
                counts[i] += 1
        except RuntimeError:
            return  # the documented answer after stop()
        except BaseException as exc:  # noqa: BLE001 - recorded for the test
            errors.append(exc)

    threads = [threading.Thread(target=publish, args=(i,), daemon=True)
               for i in range(n_threads)]
    for thread in threads:
        thread.start()
    return threads, errors, counts


def join_all(threads, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    alive = [t.name for t in threads if t.is_alive()]
    assert not alive, f"publishers still running after {timeout}s: {alive}"


def test_stop_during_heavy_broadcast_from_several_threads(make_hub):
    hub = make_hub(publish_queue=256, worker_threads=2)
    clients = [connect_client(hub, ["t0", "t1", "t2"]) for _ in range(3)]
    slow = [RawWS(hub.port, query="topics=t0,t1", rcvbuf=4096) for _ in range(3)]
    try:
        wait_until(lambda: hub.stats()["topics"].get("t0") == 6)
        threads, errors, counts = run_publishers(hub, 6)
        wait_until(lambda: sum(counts) > 5_000, timeout=10)
        started = time.monotonic()
        hub.stop()
        took = time.monotonic() - started
        join_all(threads, timeout=10)
        assert errors == []
        assert took < 2.0 + 1.0 + 2.0, f"stop() took {took:.1f}s"
        assert not hub.running
        with pytest.raises(RuntimeError):
            hub.broadcast("t0", "1")
    finally:
        for client in clients:
            client.close()
        for ws in slow:
            ws.close()


@pytest.mark.parametrize("round_", range(20))
def test_broadcast_racing_stop_from_many_threads(round_):
    hub = wshub.Server(0, publish_queue=64)
    try:
        clients = [connect_client(hub, ["t0", "t1", "t2"]) for _ in range(2)]
        go = threading.Barrier(17)
        threads, errors, counts = run_publishers(hub, 16, start=go)
        go.wait(timeout=10)
        # Let the race run for a moment of varying length, then two
        # threads call stop() at once.
        time.sleep(0.002 * (round_ % 5))
        stoppers = [threading.Thread(target=hub.stop) for _ in range(2)]
        for stopper in stoppers:
            stopper.start()
        join_all(stoppers + threads, timeout=15)
        assert errors == []
        assert not hub.running
        for client in clients:
            client.close()
    finally:
        hub.stop()


def test_threads_of_a_stopped_hub_are_gone(make_hub):
    before = {t for t in os.listdir("/proc/self/task")}
    hub = make_hub(worker_threads=4)
    threads, errors, _ = run_publishers(hub, 4)
    time.sleep(0.1)
    hub.stop()
    join_all(threads, timeout=10)
    assert errors == []
    wait_until(lambda: {t for t in os.listdir("/proc/self/task")} <= before, timeout=5,
               message=lambda: f"{set(os.listdir('/proc/self/task')) - before}")


# --------------------------------------------------------------------------
# interpreter exit with the hub still running
# --------------------------------------------------------------------------

EXIT_SCRIPT = textwrap.dedent(
    """
    import logging, sys, threading, time
    sys.path.insert(0, {tests!r})
    import wshub
    from helpers import RawWS, connect_client

    logging.basicConfig(level=logging.{level})
    hub = {make}
    client = connect_client(hub.port, ["t"])
    slow = RawWS(hub.port, query="topics=t", rcvbuf=4096)
    ready = threading.Event()

    def listen():
        ready.set()
        while True:  # until the hub goes away with the interpreter
            client.ws.recv()

    threading.Thread(target=listen, daemon=True).start()
    ready.wait()

    def publish():
        while True:
            hub.broadcast("t", '{{"pad":"' + "x" * 1000 + '"}}')

    threading.Thread(target=publish, daemon=True).start()
    time.sleep(0.2)
    print("leaving", flush=True)
    """
)


@pytest.mark.parametrize("make", ["wshub.start(0)", "wshub.Server(0)"])
@pytest.mark.parametrize("level", ["WARNING", "DEBUG"])
def test_interpreter_exit_with_hub_running_and_clients_connected(make, level):
    script = EXIT_SCRIPT.format(tests=os.path.dirname(__file__), make=make, level=level)
    started = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-c", script], capture_output=True,
                              text=True, timeout=20)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"interpreter did not exit within 20 s: {exc.stderr!r}")
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "leaving"
    assert took < 10, f"exit took {took:.1f}s"


# --------------------------------------------------------------------------
# sockets that never send a byte
# --------------------------------------------------------------------------


def ensure_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"needs {needed} file descriptors, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def test_idle_sockets_do_not_block_a_real_client_and_are_dropped(make_hub):
    # Both ends of every socket live in this process.
    ensure_fd_limit(2 * 1000 + 256)
    hub = make_hub(handshake_timeout=0.5)
    idle = []
    try:
        for _ in range(1000):
            sock = socket.create_connection(("127.0.0.1", hub.port), timeout=5)
            idle.append(sock)
        opened = time.monotonic()
        # A real client gets through while all 1000 are still open.
        client = connect_client(hub, ["live"])
        hub.broadcast("live", "1")
        assert client.recv_json()["data"] == 1
        assert time.monotonic() - opened < 0.5 + 0.5
        wait_until(lambda: hub.stats()["handshakes_rejected"]["timeout"] >= 1000,
                   timeout=5, message=lambda: str(hub.stats()["handshakes_rejected"]))
        dropped_after = time.monotonic() - opened
        # Every idle socket sees the server close it.
        for sock in idle:
            sock.settimeout(5)
            try:
                assert sock.recv(1) == b""
            except ConnectionResetError:
                pass
        assert dropped_after < 3, f"idle sockets dropped after {dropped_after:.1f}s"
        # The real client was not among them.
        hub.broadcast("live", "2")
        assert client.recv_json()["data"] == 2
        assert hub.stats()["connections"] == 1
        client.close()
    finally:
        for sock in idle:
            sock.close()


def test_stop_is_not_delayed_by_a_socket_that_never_spoke(make_hub):
    hub = make_hub(shutdown_timeout=3.0)
    sock = socket.create_connection(("127.0.0.1", hub.port), timeout=5)
    try:
        time.sleep(0.1)  # accepted; its task now waits for a request line
        started = time.monotonic()
        hub.stop()
        took = time.monotonic() - started
    finally:
        sock.close()
    assert took < 1.0, f"stop() took {took:.2f}s with one silent socket open"


def test_slow_loris_handshake_is_dropped_at_the_timeout(make_hub):
    hub = make_hub(handshake_timeout=1.0)
    sock = socket.create_connection(("127.0.0.1", hub.port), timeout=5)
    try:
        started = time.monotonic()
        sock.sendall(b"GET /api/ws?topics=a HTTP/1.1\r\nHost: x\r\n")
        # One header byte every 100 ms: never a complete request. The hub
        # answers 408 at the deadline (or resets a socket it gave up on).
        answer = b""
        try:
            for _ in range(100):
                sock.sendall(b"X")
                sock.settimeout(0.1)
                try:
                    answer = sock.recv(64)
                except socket.timeout:
                    continue
                break
        except (BrokenPipeError, ConnectionResetError):
            pass
        # One deadline for the whole handshake, not one per phase (which
        # took 2 x handshake_timeout).
        assert time.monotonic() - started < 1.8
        assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer
        wait_until(lambda: hub.stats()["handshakes_rejected"]["timeout"] == 1)
    finally:
        sock.close()
    assert_hub_serves(hub)


# --------------------------------------------------------------------------
# a taken port
# --------------------------------------------------------------------------


def test_second_start_on_a_taken_port_raises_eaddrinuse(make_hub):
    hub = make_hub()
    for make in (lambda: wshub.start(hub.port), lambda: wshub.Server(hub.port)):
        with pytest.raises(OSError) as info:
            make()
        assert info.value.errno == errno.EADDRINUSE
    # The first hub is unaffected, and a failed start leaves no threads.
    assert hub.running
    assert_hub_serves(hub)
