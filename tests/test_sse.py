"""Server-Sent Events (`GET <path>/sse`): the same feed, read-only, for
clients without WebSockets. Read by a raw-socket client that parses the
event stream as the HTML spec says, and by `curl`.

Every test uses a real hub; the positions in the events' ids resume
through recovery when sent back as `Last-Event-ID`.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time

import pytest

from helpers import RawWS, wait_until


class EventStream:
    """A minimal EventSource over a raw socket: events as (id, event, data)."""

    def __init__(self, port: int, query: str = "", headers: dict | None = None,
                 path: str = "/api/ws/sse", rcvbuf: int | None = None):
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        lines = [f"GET {path}{'?' + query if query else ''} HTTP/1.1",
                 f"Host: 127.0.0.1:{port}", "Accept: text/event-stream"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.buffer = b""
        head = self._until(b"\r\n\r\n")
        status_line, *header_lines = head.decode().split("\r\n")
        self.status = int(status_line.split()[1])
        self.headers = {k.lower(): v.strip() for k, v in
                        (h.split(":", 1) for h in header_lines if ":" in h)}

    def _until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("stream ended")
            self.buffer += chunk
        item, self.buffer = self.buffer.split(marker, 1)
        return item

    def event(self) -> tuple[str | None, str, str]:
        """The next event (comments and retry fields skipped)."""
        while True:
            block = self._until(b"\n\n").decode()
            id_, kind, data = None, "message", []
            for line in block.split("\n"):
                if line.startswith(":"):
                    continue
                field, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if field == "id":
                    id_ = value
                elif field == "event":
                    kind = value
                elif field == "data":
                    data.append(value)
            if data:
                return id_, kind, "\n".join(data)

    def json(self) -> tuple[str | None, dict]:
        id_, kind, data = self.event()
        assert kind == "message", (kind, data)
        return id_, json.loads(data)

    def close(self) -> None:
        self.sock.close()


def test_an_sse_client_gets_the_answer_then_publications_with_positions(make_hub):
    hub = make_hub()
    client = EventStream(hub.port, "topics=odds,news")
    assert client.status == 200
    assert client.headers["content-type"] == "text/event-stream"
    id_, answer = client.json()
    assert id_ is None and answer["type"] == "connected"
    assert answer["topics"] == ["news", "odds"]
    epochs = {t: s["epoch"] for t, s in answer["streams"].items()}
    wait_until(lambda: hub.stats()["sse_clients"] == 1)
    assert hub.stats()["connections"] == 1
    hub.broadcast("odds", {"p": 1.5})
    hub.broadcast("news", json.dumps("escaped\nline break"))
    hub.broadcast("odds", json.dumps({"p": 1.6}, indent=2))  # raw line breaks
    ids, messages = zip(*(client.json() for _ in range(3)))
    assert [m["data"] for m in messages] == [{"p": 1.5}, "escaped\nline break", {"p": 1.6}]
    assert ids[-1] == f"news:1:{epochs['news']},odds:2:{epochs['odds']}"
    client.close()
    wait_until(lambda: hub.stats()["sse_clients"] == 0 and hub.stats()["connections"] == 0)


def test_last_event_id_resumes_exactly_where_the_client_was(make_hub):
    hub = make_hub()
    client = EventStream(hub.port, "topics=t")
    client.json()
    for n in range(1, 6):
        hub.broadcast("t", {"n": n})
    last_id = None
    for _ in range(5):
        last_id, _ = client.json()
    client.close()
    wait_until(lambda: hub.stats()["sse_clients"] == 0)
    for n in range(6, 11):
        hub.broadcast("t", {"n": n})
    back = EventStream(hub.port, "topics=t", headers={"Last-Event-ID": last_id})
    _, answer = back.json()
    assert answer["recovered"] == {"t": True}
    got = [back.json()[1] for _ in range(5)]
    assert [(m["seq"], m["data"]["n"]) for m in got] == [(n, n) for n in range(6, 11)]
    hub.broadcast("t", {"n": 11})
    assert back.json()[1]["seq"] == 11
    back.close()
    # An id from another epoch (a restarted hub) is not recovered.
    lost = EventStream(hub.port, "topics=t", headers={"Last-Event-ID": "t:3:other"})
    assert lost.json()[1]["recovered"] == {"t": False}
    lost.close()


def test_retained_values_and_rejections_as_over_websockets(make_hub):
    hub = make_hub(topics=["odds", "news"])
    hub.broadcast("odds", {"m": 1}, key=1, retain=True)
    wait_until(lambda: hub.stats()["retained_values"] == 1)
    client = EventStream(hub.port, "topics=odds,bad%20name,other")
    _, answer = client.json()
    assert answer["topics"] == ["odds"]
    assert answer["reasons"] == {"bad name": "invalid_name", "other": "not_allowed"}
    _, value = client.json()
    assert value["retained"] is True and value["data"] == {"m": 1}
    client.close()


def test_a_stuck_sse_client_is_closed_as_a_slow_consumer(make_hub):
    hub = make_hub(send_queue=16, send_queue_bytes=1 << 20)
    stuck = EventStream(hub.port, "topics=t", rcvbuf=4096)
    wait_until(lambda: hub.stats()["topics"].get("t") == 1)
    payload = {"pad": "x" * 20_000}
    deadline = time.monotonic() + 20
    while hub.stats()["slow_consumer_closes"] == 0:
        assert time.monotonic() < deadline, "never closed"
        hub.broadcast("t", payload)
    # It reads what was sent, then the goodbye event.
    stuck.sock.settimeout(10)
    while True:
        _, kind, data = stuck.event()
        if kind == "close":
            assert json.loads(data) == {"type": "close", "code": 1008, "reason": "slow consumer"}
            break
    stuck.close()
    wait_until(lambda: hub.stats()["sse_clients"] == 0)


def test_stop_says_goodbye_and_a_jwt_guards_the_stream(make_hub):
    hub = make_hub()
    client = EventStream(hub.port, "topics=t")
    client.json()
    hub.stop()
    _, kind, data = client.event()
    client.close()
    assert kind == "close" and json.loads(data)["code"] == 1001
    jwt = pytest.importorskip("jwt")
    secret = "an-sse-test-secret-" * 4
    guarded = make_hub(jwt_key=secret)
    refused = EventStream(guarded.port, "topics=t")
    assert refused.status == 401
    refused.close()
    token = jwt.encode({"exp": int(time.time()) + 60}, secret, algorithm="HS256")
    ok = EventStream(guarded.port, f"topics=t&token={token}")
    assert ok.status == 200 and ok.json()[1]["type"] == "connected"
    ok.close()
    assert guarded.stats()["handshakes_rejected"]["token_missing"] == 1


def test_origins_are_checked_and_allowed_ones_get_cors(make_hub):
    hub = make_hub(allowed_origins=["https://app.example"])
    good = EventStream(hub.port, "topics=t", headers={"Origin": "https://app.example"})
    assert good.status == 200
    assert good.headers["access-control-allow-origin"] == "https://app.example"
    good.close()
    bad = EventStream(hub.port, "topics=t", headers={"Origin": "https://evil.example"})
    assert bad.status == 403
    bad.close()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_reads_the_feed(make_hub):
    hub = make_hub()
    curl = subprocess.Popen(
        ["curl", "--silent", "--no-buffer", "--noproxy", "*",
         f"http://127.0.0.1:{hub.port}/api/ws/sse?topics=t"],
        stdout=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: hub.stats()["sse_clients"] == 1, timeout=10)
        hub.broadcast("t", {"hello": "curl"})
        lines = []
        while not any(line.startswith("data: {\"type\":\"message\"") for line in lines):
            line = curl.stdout.readline()
            assert line, "curl ended"
            lines.append(line)
        message = json.loads(lines[-1][len("data: "):])
        assert message["data"] == {"hello": "curl"}
        assert any(line.startswith("id: t:1:") for line in lines)
    finally:
        curl.terminate()
        curl.wait(timeout=10)
        curl.stdout.close()
    wait_until(lambda: hub.stats()["sse_clients"] == 0)


def test_the_websocket_path_still_upgrades_and_sse_is_not_an_upgrade(make_hub):
    hub = make_hub()
    ws = RawWS(hub.port, query="topics=t")
    ws.close()
    # An upgrade request on the SSE path is served as an event stream
    # too: the path decides.
    client = EventStream(hub.port, "topics=t", headers={"Upgrade": "websocket"})
    assert client.status == 200
    client.close()
