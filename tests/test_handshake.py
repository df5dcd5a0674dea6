"""The HTTP handshake with raw sockets: malformed upgrades get their HTTP
status (counted in ``handshakes_rejected``), partial requests cost no CPU
while they wait, and pings do not spend the rate limit of real messages."""

from __future__ import annotations

import base64
import json
import os
import resource
import socket
import subprocess
import sys
import threading
import time

import pytest

import wshub
from helpers import HOST, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, RawWS, close_code, wait_until

KEY = base64.b64encode(b"0123456789abcdef").decode()


def upgrade_request(path: str = "/api/ws?topics=a", *, drop: tuple[str, ...] = (),
                    extra: str = "", **override: str) -> bytes:
    """A valid upgrade request, minus the headers named in ``drop`` (lower
    case), with ``override`` replacing values (``sec_websocket_version=``)."""
    headers = {
        "host": f"{HOST}",
        "upgrade": "websocket",
        "connection": "Upgrade",
        "sec-websocket-key": KEY,
        "sec-websocket-version": "13",
    }
    for name, value in override.items():
        headers[name.replace("_", "-")] = value
    lines = [f"GET {path} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in headers.items() if name not in drop]
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


def read_response(sock: socket.socket, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """Reads until the server closes; returns (status, headers, body). The
    status is 0 if the connection ended without an HTTP answer."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    else:
        raise AssertionError(f"connection still open after {timeout}s: {data[:200]!r}")
    if not data:
        return 0, {}, b""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split(" ")[1]), headers, body


def exchange(hub, request: bytes, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection((HOST, hub.port), timeout=5) as sock:
        sock.sendall(request)
        return read_response(sock, timeout)


def rejected(hub) -> dict[str, int]:
    return {k: v for k, v in hub.stats()["handshakes_rejected"].items() if v}


# --------------------------------------------------------------------------
# malformed upgrades
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_bytes", "status", "reason"),
    [
        (upgrade_request(drop=("sec-websocket-key",)), 400, "key"),
        (upgrade_request(sec_websocket_key="short"), 400, "key"),
        (upgrade_request(drop=("sec-websocket-version",)), 426, "version"),
        (upgrade_request(sec_websocket_version="8"), 426, "version"),
        (b"GET /api/ws HTTP/1.1\r\nHost: x\r\n\r\n", 426, "not_upgrade"),
        (upgrade_request(drop=("connection",)), 426, "not_upgrade"),
        (b"POST /api/ws HTTP/1.1\r\nHost: x\r\ncontent-length: 0\r\n\r\n", 405, "method"),
        (b"GET /api/ws HTTP/1.0\r\nHost: x\r\n\r\n", 400, "invalid"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400, "invalid"),
        (b"GET /api/ws HTTP/1.1\r\nbad header line\r\n\r\n", 400, "invalid"),
    ],
    ids=["no-key", "bad-key", "no-version", "version-8", "plain-get", "no-connection",
         "post", "http-1.0", "tls-hello", "bad-header"],
)
def test_a_malformed_upgrade_gets_its_status_and_is_counted(make_hub, request_bytes, status,
                                                            reason):
    hub = make_hub(handshake_timeout=5.0)
    started = time.monotonic()
    got, headers, body = exchange(hub, request_bytes)
    assert got == status, (got, headers, body)
    assert headers.get("connection") == "close"
    assert time.monotonic() - started < 5.0
    if status == 426 and reason == "version":
        assert headers.get("sec-websocket-version") == "13"
    if status == 426 and reason == "not_upgrade":
        assert headers.get("upgrade") == "websocket"
    if status == 405:
        assert headers.get("allow") == "GET"
    wait_until(lambda: rejected(hub) == {reason: 1}, message=lambda: str(rejected(hub)))
    assert hub.stats()["connections_opened"] == 0


def test_an_oversized_head_gets_431(make_hub):
    hub = make_hub(handshake_timeout=5.0)
    # One header value longer than the 64 KB head cap.
    got, _, _ = exchange(hub, upgrade_request(extra="x-big: " + "a" * 70_000 + "\r\n"))
    assert got == 431
    wait_until(lambda: rejected(hub) == {"too_large": 1}, message=lambda: str(rejected(hub)))


def test_too_many_headers_get_431(make_hub):
    hub = make_hub(handshake_timeout=5.0)
    # Well under 64 KB, but 1,000 headers (this used to be a TCP reset).
    extra = "".join(f"x-h{i}: v\r\n" for i in range(1000))
    got, _, body = exchange(hub, upgrade_request(extra=extra))
    assert got == 431, body
    wait_until(lambda: rejected(hub) == {"too_many_headers": 1},
               message=lambda: str(rejected(hub)))


def test_sixty_four_headers_are_accepted(make_hub):
    hub = make_hub()
    # The five of a WebSocket upgrade plus 59 more is the most allowed.
    extra = "".join(f"x-h{i}: v\r\n" for i in range(59))
    with socket.create_connection((HOST, hub.port), timeout=5) as sock:
        sock.sendall(upgrade_request(extra=extra))
        sock.settimeout(5)
        assert sock.recv(12) == b"HTTP/1.1 101"
    wait_until(lambda: hub.stats()["connections_opened"] == 1)
    assert rejected(hub) == {}


@pytest.mark.parametrize("what", ["one endless header", "endless headers"])
def test_an_endless_head_is_answered_and_closed(make_hub, what):
    hub = make_hub(handshake_timeout=5.0)
    sock = socket.create_connection((HOST, hub.port), timeout=5)
    stop = threading.Event()

    def flood():
        try:
            sock.sendall(upgrade_request()[:-2] + b"x-endless: ")
            while not stop.is_set():
                sock.sendall(b"a" * 4096 if what == "one endless header" else b"1\r\nx-n: " * 400)
        except OSError:
            pass

    sender = threading.Thread(target=flood, daemon=True)
    sender.start()
    try:
        started = time.monotonic()
        got, headers, _ = read_response(sock, timeout=5.0)
        assert got == 431
        assert headers.get("connection") == "close"
        assert time.monotonic() - started < 5.0
    finally:
        stop.set()
        sock.close()
        sender.join(5)
    reason = "too_large" if what == "one endless header" else "too_many_headers"
    wait_until(lambda: rejected(hub) == {reason: 1}, message=lambda: str(rejected(hub)))


def upgrades(hub, request: bytes) -> bool:
    """True if ``request`` is answered 101."""
    with socket.create_connection((HOST, hub.port), timeout=5) as sock:
        sock.sendall(request)
        sock.settimeout(5)
        return sock.recv(12) == b"HTTP/1.1 101"


def test_max_headers_lowered_refuses_what_the_default_accepts(make_hub):
    # The five headers of an upgrade plus 15: 20 headers.
    request = upgrade_request(extra="".join(f"x-h{i}: v\r\n" for i in range(15)))
    assert upgrades(make_hub(), request)
    hub = make_hub(max_headers=16, handshake_timeout=5.0)
    got, _, body = exchange(hub, request)
    assert got == 431, body
    wait_until(lambda: rejected(hub) == {"too_many_headers": 1},
               message=lambda: str(rejected(hub)))
    # 16 headers are still fine.
    assert upgrades(hub, upgrade_request(extra="".join(f"x-h{i}: v\r\n" for i in range(11))))


def test_max_headers_raised_accepts_what_the_default_refuses(make_hub):
    # 5 + 195 = 200 headers, each checked by authorize as well (which
    # parses the head again and must use the same bound).
    request = upgrade_request(extra="".join(f"x-h{i}: v\r\n" for i in range(195)))
    seen = []
    assert exchange(make_hub(), request)[0] == 431
    hub = make_hub(max_headers=200, authorize=lambda r: seen.append(len(r.headers)) or True)
    assert upgrades(hub, request)
    wait_until(lambda: seen == [200], message=lambda: str(seen))
    assert rejected(hub) == {}
    more = upgrade_request(extra="".join(f"x-h{i}: v\r\n" for i in range(196)))
    assert exchange(hub, more)[0] == 431


def test_max_handshake_bytes_lowered_and_raised(make_hub):
    # A 6 KB head: the default (64 KiB) accepts it, 4 KiB does not.
    six_kb = upgrade_request(extra="x-big: " + "a" * 6000 + "\r\n")
    assert upgrades(make_hub(), six_kb)
    small = make_hub(max_handshake_bytes=4096, handshake_timeout=5.0)
    assert exchange(small, six_kb)[0] == 431
    wait_until(lambda: rejected(small) == {"too_large": 1},
               message=lambda: str(rejected(small)))
    assert upgrades(small, upgrade_request())
    # A 100 KB head: refused by default, accepted under 128 KiB.
    big = upgrade_request(extra="x-big: " + "a" * 100_000 + "\r\n")
    assert exchange(make_hub(handshake_timeout=5.0), big)[0] == 431
    assert upgrades(make_hub(max_handshake_bytes=128 * 1024), big)


@pytest.mark.parametrize("option, value", [
    ("max_handshake_bytes", 0),
    ("max_handshake_bytes", 1023),
    ("max_handshake_bytes", 16 * 1024 * 1024 + 1),
    ("max_headers", 0),
    ("max_headers", 7),
    ("max_headers", 1025),
])
def test_request_head_limits_out_of_range_raise_value_error(option, value):
    with pytest.raises(ValueError, match=option):
        wshub.start(0, **{option: value})


def test_rejections_are_prometheus_counters(make_hub):
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    hub = make_hub()
    assert exchange(hub, upgrade_request(drop=("sec-websocket-key",)))[0] == 400
    assert exchange(hub, upgrade_request(sec_websocket_version="7"))[0] == 426
    status, _, body = exchange(hub, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    family = families["wshub_handshakes_rejected"]
    assert family.type == "counter"
    values = {s.labels["reason"]: s.value for s in family.samples if s.name.endswith("_total")}
    assert values["key"] == 1
    assert values["version"] == 1
    assert values["path"] == 0
    stats = hub.stats()["handshakes_rejected"]
    assert set(values) == set(stats)


def test_a_partial_request_is_answered_408_at_the_deadline(make_hub):
    hub = make_hub(handshake_timeout=0.5)
    with socket.create_connection((HOST, hub.port), timeout=5) as sock:
        sock.sendall(b"GET /api/ws HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        got, headers, _ = read_response(sock, timeout=5.0)
        assert got == 408
        assert headers.get("connection") == "close"
        assert time.monotonic() - started < 0.5 + 1.5
    wait_until(lambda: rejected(hub) == {"timeout": 1}, message=lambda: str(rejected(hub)))


def test_a_valid_upgrade_with_a_frame_right_behind_it_is_served(make_hub):
    # A client that pipelines its first frame behind the request: the
    # bytes read past the head belong to the WebSocket stream.
    hub = make_hub()
    frame = json.dumps({"type": "ping", "id": 7}).encode()
    mask = b"\x01\x02\x03\x04"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(frame))
    with socket.create_connection((HOST, hub.port), timeout=5) as sock:
        sock.sendall(upgrade_request() + bytes([0x81, 0x80 | len(frame)]) + mask + masked)
        sock.settimeout(5)
        data = b""
        while data.count(b'"type":"pong"') == 0:
            chunk = sock.recv(4096)
            assert chunk, data
            data += chunk
    assert data.startswith(b"HTTP/1.1 101")
    assert b'{"type":"pong","id":7}' in data


# --------------------------------------------------------------------------
# partial requests cost nothing while they wait
# --------------------------------------------------------------------------

HUB_SCRIPT = """
import resource, sys
import wshub
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
hub = wshub.start(0, handshake_timeout=float(sys.argv[1]))
print(hub.port, flush=True)
sys.stdin.read()
hub.stop()
"""


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of stat(5); fields[0] is field 3.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs /proc")
def test_partial_requests_cost_no_cpu_while_they_wait():
    count = 2000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < count + 256:
        pytest.skip(f"needs {count + 256} file descriptors, the hard limit is {hard}")
    if soft != resource.RLIM_INFINITY and soft < count + 256:
        resource.setrlimit(resource.RLIMIT_NOFILE, (count + 256, hard))
    timeout = 8.0
    # The hub in a process of its own, so its CPU time is only its own.
    proc = subprocess.Popen([sys.executable, "-c", HUB_SCRIPT, str(timeout)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    partial = []
    try:
        port = int(proc.stdout.readline())
        first = time.monotonic()
        for _ in range(count):
            sock = socket.create_connection((HOST, port), timeout=5)
            sock.sendall(b"GET /api")
            partial.append(sock)
        # Let the hub see every request start, then measure a quiet window.
        start_cpu, start = cpu_seconds(proc.pid), time.monotonic()
        window = 3.0
        # A healthy client is served meanwhile.
        client = RawWS(port, query="topics=a")
        client.send_frame(OP_TEXT, b'{"type":"ping"}')
        frames = [client.read_frame(), client.read_frame()]
        assert json.loads(frames[1][1]) == {"type": "pong"}, frames
        client.close()
        remaining = window - (time.monotonic() - start)
        if remaining > 0:
            time.sleep(remaining)  # the measurement window, not synchronisation
        used = cpu_seconds(proc.pid) - start_cpu
        elapsed = time.monotonic() - start
        assert start + elapsed < first + timeout, "connecting took too long to measure"
        share = used / elapsed
        print(f"hub CPU with {count} partial requests: {share:.1%} of a core")
        assert share < 0.10, f"hub used {share:.0%} of a core for {count} partial requests"
        # Every partial request is closed at its deadline.
        for sock in partial:
            sock.settimeout(max(0.1, first + timeout + 5 - time.monotonic()))
            try:
                while sock.recv(4096):
                    pass
            except ConnectionResetError:
                pass
        assert time.monotonic() < first + timeout + 5
    finally:
        for sock in partial:
            sock.close()
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


# --------------------------------------------------------------------------
# pings and the rate limit
# --------------------------------------------------------------------------


def test_pings_do_not_spend_the_tokens_of_real_messages(make_hub):
    # 5 messages in a burst, then one every 10 s: without a bucket of their
    # own, the 5 pings would leave the subscribe rate_limited.
    hub = make_hub(rate_limit=0.1, rate_burst=5)
    ws = RawWS(hub.port, query="")
    try:
        assert json.loads(ws.read_frame()[1])["type"] == "connected"
        for i in range(5):
            ws.send_frame(OP_TEXT, json.dumps({"type": "ping", "id": i}).encode())
            assert json.loads(ws.read_frame()[1]) == {"type": "pong", "id": i}
        for _ in range(5):
            ws.send_frame(OP_PING, b"k")
            assert ws.read_frame() == (OP_PONG, b"k")
        ws.send_frame(OP_TEXT, b'{"type":"subscribe","topics":["a"]}')
        answer = json.loads(ws.read_frame()[1])
        assert answer["type"] == "subscribed", answer
        assert answer["topics"] == ["a"]
    finally:
        ws.close()


@pytest.mark.parametrize("kind", ["protocol", "control"])
def test_a_ping_flood_is_still_bounded(make_hub, kind):
    hub = make_hub(rate_limit=1, rate_burst=5)
    ws = RawWS(hub.port, query="topics=a")
    try:
        assert json.loads(ws.read_frame()[1])["type"] == "connected"
        for i in range(200):
            try:
                if kind == "protocol":
                    ws.send_frame(OP_TEXT, b'{"type":"ping"}')
                else:
                    ws.send_frame(OP_PING, b"")
            except (BrokenPipeError, ConnectionResetError):
                break
        frames, _ = ws.read_until_closed(timeout=5)
    finally:
        ws.close()
    pongs = [f for f in frames if f[0] == OP_PONG or (f[0] == OP_TEXT and b"pong" in f[1])]
    # The burst is answered, the rest is not, and the flood ends the client
    # (tungstenite answers control pings itself and keeps only the newest
    # pending pong, so fewer may arrive).
    assert 1 <= len(pongs) <= 20, len(pongs)
    if kind == "protocol":
        assert len(pongs) >= 5
    # (tungstenite may still answer a ping read while it waits for the
    # client's close frame, so the close is not always the last frame.)
    closes = [payload for op, payload in frames if op == OP_CLOSE]
    assert [close_code(p)[0] for p in closes] == [1008], frames
    if kind == "protocol":
        assert any(f[0] == OP_TEXT and b"rate_limited" in f[1] for f in frames)
