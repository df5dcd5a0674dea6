"""Server pings, handshake timeout and inbound size limit."""

from __future__ import annotations

import json
import socket
import struct
import time

import websockets

from helpers import (
    HOST, OP_CLOSE, OP_PING, OP_TEXT, close_code, publication, wait_until,
)

# --------------------------------------------------------------------------
# keep-alive: server pings
# --------------------------------------------------------------------------


def test_client_that_never_answers_pings_is_closed(make_hub, raw_ws):
    hub = make_hub(ping_interval=0.2, ping_timeout=0.2)
    client = raw_ws(hub, query="topics=a,b")
    wait_until(lambda: hub.stats()["topics"] == {"a": 1, "b": 1})
    frames, elapsed = client.read_until_closed(timeout=4)
    ops = [op for op, _ in frames]
    assert OP_PING in ops, f"server never pinged: {ops}"
    # silent for ping_interval + ping_timeout = 0.4 s: not closed much earlier
    assert elapsed >= 0.25, f"closed after only {elapsed:.2f}s"
    wait_until(lambda: hub.stats()["connections"] == 0,
               message=lambda: f"stats: {hub.stats()}")
    assert hub.stats()["topics"] == {}


def test_client_that_answers_pings_stays_connected(make_hub, connect):
    hub = make_hub(ping_interval=0.2, ping_timeout=0.2)
    # websockets answers the server's pings automatically; it sends no pings
    # of its own (ping_interval=None) and no messages while we wait.
    client = connect(hub, ["a"])
    try:
        frame = client.ws.recv(timeout=1.5)
    except TimeoutError:
        pass  # nothing to read and still open: expected
    except websockets.ConnectionClosed as exc:
        raise AssertionError(f"responsive client was closed: {exc!r}") from None
    else:
        raise AssertionError(f"unexpected frame {frame!r}")
    client.ping("alive")
    assert hub.broadcast("a", "1") == 1
    assert client.recv_text() == publication("a", 1, "1")


def test_client_that_sends_messages_but_no_pongs_stays_connected(make_hub, raw_ws):
    hub = make_hub(ping_interval=0.2, ping_timeout=0.2)
    client = raw_ws(hub, query="topics=a")
    assert json.loads(client.read_frame()[1])["type"] == "connected"
    deadline = time.monotonic() + 1.2
    pings_seen = 0
    k = 0
    while time.monotonic() < deadline:
        k += 1
        client.send_frame(OP_TEXT, json.dumps({"type": "ping", "id": k}).encode())
        while True:  # skip the server's WebSocket pings, never answer them
            frame = client.read_frame()
            assert frame is not None, f"closed after {k} pings although it kept talking"
            op, payload = frame
            if op == OP_PING:
                pings_seen += 1
                continue
            assert op == OP_TEXT and json.loads(payload) == {"type": "pong", "id": k}
            break
        time.sleep(0.1)  # pacing: talk every 0.1 s < 0.4 s
    assert pings_seen >= 1
    # now it goes silent and is closed
    frames, _ = client.read_until_closed(timeout=4)
    assert all(op in (OP_PING, OP_CLOSE) for op, _ in frames)


# --------------------------------------------------------------------------
# handshake timeout
# --------------------------------------------------------------------------


def _wait_for_disconnect(sock: socket.socket, timeout: float) -> float:
    start = time.monotonic()
    sock.settimeout(timeout)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                break
    except ConnectionResetError:
        pass
    except socket.timeout:
        raise AssertionError(f"still connected after {timeout}s") from None
    return time.monotonic() - start


def test_tcp_client_that_sends_nothing_is_disconnected_after_handshake_timeout(make_hub):
    hub = make_hub(handshake_timeout=0.5)
    with socket.create_connection((HOST, hub.port), timeout=5) as sock:
        elapsed = _wait_for_disconnect(sock, timeout=0.5 + 3)
    assert elapsed >= 0.3, f"disconnected after only {elapsed:.2f}s"
    assert hub.stats()["connections"] == 0


def test_incomplete_http_request_is_disconnected_after_handshake_timeout(make_hub):
    hub = make_hub(handshake_timeout=0.5)
    with socket.create_connection((HOST, hub.port), timeout=5) as sock:
        sock.sendall(b"GET /api/ws?topics=a HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        elapsed = _wait_for_disconnect(sock, timeout=0.5 + 3)
    assert elapsed >= 0.3, f"disconnected after only {elapsed:.2f}s"


def test_handshake_timeout_does_not_apply_after_the_handshake(make_hub, connect):
    hub = make_hub(handshake_timeout=0.3)
    client = connect(hub, ["a"])
    try:
        frame = client.ws.recv(timeout=1.0)
    except TimeoutError:
        pass
    else:
        raise AssertionError(f"unexpected frame {frame!r}")
    client.ping(1)


def test_stalled_handshake_does_not_block_other_clients(make_hub, connect):
    hub = make_hub(handshake_timeout=5)
    with socket.create_connection((HOST, hub.port), timeout=5):
        client = connect(hub, ["a"])
        assert hub.broadcast("a", "1") == 1
        assert client.recv_text() == publication("a", 1, "1")


# --------------------------------------------------------------------------
# max_message_bytes
# --------------------------------------------------------------------------


def _ping_of_size(size: int) -> str:
    text = json.dumps({"type": "ping", "id": ""})
    text = json.dumps({"type": "ping", "id": "x" * (size - len(text))})
    assert len(text.encode()) == size
    return text


def test_message_at_max_message_bytes_is_accepted(make_hub, connect):
    hub = make_hub(max_message_bytes=1024)
    client = connect(hub)
    text = _ping_of_size(1024)
    assert client.request(text) == {"type": "pong", "id": json.loads(text)["id"]}


def _send_and_expect_close(client, message):
    """Send (the server may close while we are still sending) and return the
    ConnectionClosed the client ends up with."""
    try:
        client.ws.send(message)
    except websockets.ConnectionClosed as exc:
        return exc
    return client.expect_closed()


def test_message_over_max_message_bytes_closes_with_1009(make_hub, connect):
    hub = make_hub(max_message_bytes=1024)
    client = connect(hub, ["a"])
    closed = _send_and_expect_close(client, _ping_of_size(1025))
    assert closed.rcvd is not None, f"no close frame: {closed!r}"
    assert closed.rcvd.code == 1009
    wait_until(lambda: hub.stats()["connections"] == 0,
               message=lambda: f"stats: {hub.stats()}")
    assert hub.stats()["topics"] == {}


def test_fragmented_message_over_max_message_bytes_closes_with_1009(make_hub, connect):
    hub = make_hub(max_message_bytes=1024)
    client = connect(hub)
    # one text message in two frames
    closed = _send_and_expect_close(client, ["x" * 600, "y" * 600])
    assert closed.rcvd is not None and closed.rcvd.code == 1009


def test_binary_message_over_max_message_bytes_closes_with_1009(make_hub, connect):
    hub = make_hub(max_message_bytes=1024)
    client = connect(hub)
    closed = _send_and_expect_close(client, b"\x00" * 2000)
    assert closed.rcvd is not None and closed.rcvd.code == 1009


def test_frame_announcing_oversized_payload_closes_with_1009_without_waiting(
        make_hub, raw_ws):
    hub = make_hub(max_message_bytes=1024)
    client = raw_ws(hub)
    # header of a masked text frame announcing 10 MB, then only a few bytes
    client.sock.sendall(bytes([0x81, 0x80 | 127]) + struct.pack("!Q", 10_000_000)
                        + b"\x00\x00\x00\x00" + b"{}")
    frames, _ = client.read_until_closed(timeout=5)
    closes = [p for op, p in frames if op == OP_CLOSE]
    assert closes, f"no close frame: {[op for op, _ in frames]}"
    assert close_code(closes[0])[0] == 1009
