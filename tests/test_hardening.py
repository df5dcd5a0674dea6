"""Limits and defences of issue 5 that the foundation did not have yet:
origin checks, the inbound rate limit, the byte bound of a client's queue,
and fork safety."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import websockets
from websockets.sync.client import connect as ws_connect

import wshub

from helpers import wait_until


def url(hub: wshub.Server, query: str = "") -> str:
    return f"ws://127.0.0.1:{hub.port}/api/ws{query}"


def test_foreign_origin_gets_403_and_listed_origin_connects():
    with wshub.start(0, allowed_origins=["https://app.example.com"]) as hub:
        with pytest.raises(websockets.InvalidStatus) as info:
            ws_connect(url(hub), origin="https://evil.example.net", open_timeout=5)
        assert info.value.response.status_code == 403
        with ws_connect(url(hub), origin="https://app.example.com", open_timeout=5) as ws:
            assert json.loads(ws.recv(timeout=5))["type"] == "connected"
        # Non-browser clients send no Origin and are not affected.
        with ws_connect(url(hub), open_timeout=5) as ws:
            assert json.loads(ws.recv(timeout=5))["type"] == "connected"
        assert hub.stats()["connections_opened"] == 2


def test_any_origin_is_allowed_by_default():
    with wshub.start(0) as hub:
        with ws_connect(url(hub), origin="https://anywhere.example", open_timeout=5) as ws:
            assert json.loads(ws.recv(timeout=5))["type"] == "connected"


def test_allowed_origins_must_be_exact_origins():
    with pytest.raises(ValueError, match="allowed_origins"):
        wshub.start(0, allowed_origins=["https://app.example.com/"])


def test_flooding_client_is_rate_limited_then_closed_with_1008():
    with wshub.start(0, rate_limit=5.0, rate_burst=3) as hub:
        with ws_connect(url(hub), open_timeout=5) as ws:
            ws.recv(timeout=5)
            for i in range(3):
                ws.send(json.dumps({"type": "ping", "id": i}))
            answers = [json.loads(ws.recv(timeout=5)) for _ in range(3)]
            assert answers == [{"type": "pong", "id": i} for i in range(3)]
            ws.send(json.dumps({"type": "ping", "id": 99}))
            limited = json.loads(ws.recv(timeout=5))
            assert limited["type"] == "error" and limited["error"] == "rate_limited"
            with pytest.raises(websockets.ConnectionClosed) as info:
                for _ in range(50):
                    ws.send('{"type":"ping"}')
                while True:
                    ws.recv(timeout=5)
            assert info.value.rcvd is not None
            assert info.value.rcvd.code == 1008


def test_rate_limit_recovers_after_a_pause():
    with wshub.start(0, rate_limit=20.0, rate_burst=5) as hub:
        with ws_connect(url(hub), open_timeout=5) as ws:
            ws.recv(timeout=5)
            for i in range(5):
                ws.send(json.dumps({"type": "ping", "id": i}))
                assert json.loads(ws.recv(timeout=5)) == {"type": "pong", "id": i}
            ws.send('{"type":"ping","id":5}')
            assert json.loads(ws.recv(timeout=5))["error"] == "rate_limited"

            def answered() -> bool:
                ws.send('{"type":"ping","id":3}')
                return json.loads(ws.recv(timeout=5)).get("type") == "pong"

            # One token comes back every 50 ms; a refusal or two while
            # polling stays well under the 5 allowed in a row.
            wait_until(answered, timeout=5, interval=0.06)


def test_client_queue_is_bounded_in_bytes_too():
    big = json.dumps({"pad": "x" * 60_000})
    with wshub.start(0, send_queue=10_000, send_queue_bytes=256 * 1024) as hub:
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect(("127.0.0.1", hub.port))
        slow.sendall(
            b"GET /api/ws?topics=t HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        wait_until(lambda: hub.stats()["topics"].get("t") == 1, timeout=5)
        try:
            # Far fewer frames than send_queue, far more bytes than the bound.
            for _ in range(200):
                hub.broadcast("t", big)
            wait_until(lambda: hub.stats()["slow_consumer_closes"] == 1, timeout=10)
            wait_until(lambda: hub.stats()["connections"] == 0, timeout=10)
        finally:
            slow.close()


def test_forked_child_cannot_use_or_start_a_hub():
    script = textwrap.dedent(
        """
        import os, sys, wshub
        hub = wshub.start(0)
        pid = os.fork()
        if pid == 0:
            codes = []
            for action in (lambda: hub.broadcast("t", "1"), lambda: wshub.start(0)):
                try:
                    action()
                    codes.append("ok")
                except RuntimeError as e:
                    codes.append("fork" if "fork" in str(e) else repr(e))
            hub.stop()  # must not hang on threads that do not exist here
            os.write(1, (",".join(codes) + "\\n").encode())
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert hub.broadcast("t", "1") == 0
        hub.stop()
        again = wshub.start(0)
        again.stop()
        print("parent", os.waitstatus_to_exitcode(status))
        """
    )
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", script],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["fork,fork", "parent", "0"]


def test_topics_past_the_per_connection_limit_are_rejected_with_the_reason():
    with wshub.start(0, max_topics_per_connection=2) as hub:
        with ws_connect(url(hub, "?topics=a,b,c"), open_timeout=5) as ws:
            ack = json.loads(ws.recv(timeout=5))
            assert set(ack.pop("streams")) == {"a", "b"}
            assert ack == {"type": "connected", "topics": ["a", "b"], "rejected": ["c"],
                           "reasons": {"c": "too_many_topics"}}
            ws.send('{"type":"subscribe","topics":["a","d"]}')
            assert json.loads(ws.recv(timeout=5)) == {
                "type": "subscribed", "topics": ["a", "b"], "rejected": ["d"],
                "reasons": {"d": "too_many_topics"}}
            ws.send('{"type":"unsubscribe","topics":["a"]}')
            ws.recv(timeout=5)
            ws.send('{"type":"subscribe","topics":["d"]}')
            assert json.loads(ws.recv(timeout=5))["topics"] == ["b", "d"]
            assert hub.broadcast("c", "1") == 0
