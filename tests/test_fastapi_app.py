"""Tests of the FastAPI integration example (examples/fastapi_app/app.py).

The app runs under uvicorn in a background thread on a socket bound to
127.0.0.1 port 0, with its hub on port 0 and the simulated scraper off (so
every publication, and its seq, comes from the test). Needs the packages of
requirements-examples.txt; skipped when they are missing.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Iterator

import pytest

pytest.importorskip("fastapi", reason="fastapi not installed (requirements-examples.txt)")
pytest.importorskip("uvicorn", reason="uvicorn not installed (requirements-examples.txt)")
httpx = pytest.importorskip("httpx", reason="httpx not installed (requirements-examples.txt)")

import wshub  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402
from websockets.sync.client import connect as ws_connect  # noqa: E402

from helpers import APP_PATH, load_example  # noqa: E402

TIMEOUT = 10.0

# Never go through a proxy: everything here is on loopback.
_WS_KW: dict[str, Any] = (
    {"proxy": None} if "proxy" in inspect.signature(ws_connect).parameters else {})


example = load_example()


def wait_for(predicate: Callable[[], Any], timeout: float = TIMEOUT,
             what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        time.sleep(0.01)


@pytest.fixture
def serve() -> Iterator[Callable[..., tuple[Any, str, Any]]]:
    """Factory: ``serve(**settings)`` -> (app, base_url, http_client) for an
    app running in a thread (hub on port 0, simulator off unless asked).
    Everything is shut down at teardown."""
    with contextlib.ExitStack() as stack:
        def factory(**overrides: Any) -> tuple[Any, str, Any]:
            overrides.setdefault("ws_port", 0)
            overrides.setdefault("ws_host", "127.0.0.1")
            overrides.setdefault("simulate", False)
            overrides.setdefault("enable_admin", False)
            overrides.setdefault("public_ws_url", "")
            app = example.create_app(**overrides)
            base = stack.enter_context(example.serve_in_thread(app))
            client = stack.enter_context(
                httpx.Client(base_url=base, trust_env=False, timeout=TIMEOUT))
            return app, base, client
        yield factory


def publish(client: Any, topic: str, data: Any) -> dict[str, Any]:
    response = client.post("/publish", json={"topic": topic, "data": data})
    assert response.status_code == 200, response.text
    return response.json()


def recv_json(ws: Any, timeout: float = TIMEOUT) -> dict[str, Any]:
    import json
    return json.loads(ws.recv(timeout=timeout))


# --------------------------------------------------------------------------


def test_config_exposes_the_real_hub_port(serve):
    app, base, client = serve()
    hub = app.state.ws_manager
    assert isinstance(hub, wshub.Server) and hub.running
    assert hub.port != 0
    config = client.get("/config").json()
    assert config["ws_url"] == f"ws://127.0.0.1:{hub.port}/api/ws"
    assert config["topics"] == ["scrape_progress", "odds_updates"]
    assert config["hub_running"] is True
    assert config["reconnect"]["initial_ms"] > 0


def test_config_uses_the_request_host(serve):
    app, base, client = serve()
    port = app.state.ws_manager.port
    config = client.get("/config", headers={"Host": "localhost:1234"}).json()
    assert config["ws_url"] == f"ws://localhost:{port}/api/ws"


def test_public_ws_url_overrides_the_derived_one(serve):
    _, _, client = serve(public_ws_url="wss://example.invalid/hub")
    assert client.get("/config").json()["ws_url"] == "wss://example.invalid/hub"


def test_page_and_static_files_are_served(serve):
    _, _, client = serve()
    page = client.get("/")
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    for marker in ('id="status"', 'id="odds-table"', 'data-topic="odds_updates"',
                   'data-topic="scrape_progress"', "/static/app.js"):
        assert marker in page.text
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/style.css").status_code == 200


def test_publish_reaches_a_websocket_client(serve):
    app, _, client = serve()
    ws_url = client.get("/config").json()["ws_url"]
    with ws_connect(ws_url + "?topics=odds_updates", open_timeout=TIMEOUT,
                    **_WS_KW) as ws:
        ack = recv_json(ws)
        assert set(ack.pop("streams")) == {"odds_updates"}
        assert ack == {"type": "connected", "topics": ["odds_updates"],
                       "rejected": []}
        odds = {"match": "Test FC v Example United", "market": "1X2",
                "prices": {"home": 1.85, "draw": 3.4, "away": 4.2},
                "timestamp": 1700000000.0}
        assert publish(client, "odds_updates", odds) == {
            "topic": "odds_updates", "delivered": 1}
        assert recv_json(ws) == {"type": "message", "topic": "odds_updates",
                                 "seq": 1, "data": odds}
        # Not subscribed to scrape_progress: queued for nobody.
        assert publish(client, "scrape_progress", {"job_id": "j"})["delivered"] == 0
        # Publishing from Python directly through the hub object works too.
        assert app.state.ws_manager.broadcast("odds_updates", {"match": "B"}) == 1
        assert recv_json(ws)["data"] == {"match": "B"}
        # A JSON string value is published as a JSON string.
        publish(client, "odds_updates", "hello")
        assert recv_json(ws)["data"] == "hello"


def test_publish_rejects_bad_requests(serve):
    _, _, client = serve()
    assert client.post("/publish", json={"topic": "nope", "data": {}}).status_code == 400
    assert client.post("/publish", json={"topic": "odds_updates"}).status_code == 422
    assert client.post("/publish", content=b"{", headers={
        "content-type": "application/json"}).status_code == 422


def test_stats_endpoint(serve):
    _, _, client = serve()
    publish(client, "odds_updates", {"match": "x"})
    stats = client.get("/stats").json()
    assert stats["published"] == 1
    assert stats["connections"] == 0


def test_admin_endpoints_are_off_by_default(serve):
    _, _, client = serve()
    assert client.post("/admin/hub/stop").status_code == 404
    assert client.post("/admin/hub/start").status_code == 404


def test_simulated_scraper_publishes_both_topics(serve):
    app, _, client = serve(simulate=True, simulate_interval=0.01)
    ws_url = client.get("/config").json()["ws_url"]
    seen: dict[str, dict[str, Any]] = {}
    with ws_connect(ws_url, open_timeout=TIMEOUT, **_WS_KW) as ws:
        assert recv_json(ws)["type"] == "connected"
        deadline = time.monotonic() + TIMEOUT
        while len(seen) < 2 and time.monotonic() < deadline:
            frame = recv_json(ws)
            seen[frame["topic"]] = frame["data"]
    assert set(seen) == {"scrape_progress", "odds_updates"}
    progress = seen["scrape_progress"]
    assert set(progress) == {"job_id", "pages_done", "pages_total", "status"}
    assert 0 <= progress["pages_done"] <= progress["pages_total"]
    assert progress["status"] in ("running", "done")
    odds = seen["odds_updates"]
    assert set(odds) == {"match", "market", "prices", "timestamp"}
    assert all(isinstance(p, float) and p > 1 for p in odds["prices"].values())
    assert app.state.scraper.is_alive()


def test_lifespan_shutdown_stops_hub_and_scraper():
    app = example.create_app(ws_port=0, ws_host="127.0.0.1", simulate=True,
                             simulate_interval=0.01, enable_admin=False,
                             public_ws_url="")
    with contextlib.ExitStack() as stack:
        with example.serve_in_thread(app) as base:
            hub = app.state.ws_manager
            scraper = app.state.scraper
            port = hub.port
            with httpx.Client(base_url=base, trust_env=False,
                              timeout=TIMEOUT) as client:
                ws_url = client.get("/config").json()["ws_url"]
            ws = stack.enter_context(
                ws_connect(ws_url, open_timeout=TIMEOUT, **_WS_KW))
            assert recv_json(ws)["type"] == "connected"
            wait_for(lambda: scraper.published > 0, what="scraper publishing")
        # Leaving the block ran the lifespan shutdown: the hub said goodbye.
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=TIMEOUT)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    assert not hub.running
    assert not scraper.is_alive()
    with pytest.raises(RuntimeError):
        hub.broadcast("odds_updates", {"match": "late"})
    # The port is free again.
    again = wshub.start(port, host="127.0.0.1")
    try:
        assert again.port == port
    finally:
        again.stop()


def test_admin_restart_keeps_the_port(serve):
    app, _, client = serve(enable_admin=True)
    port = app.state.ws_manager.port
    ws_url = client.get("/config").json()["ws_url"]
    with ws_connect(ws_url, open_timeout=TIMEOUT, **_WS_KW) as ws:
        assert recv_json(ws)["type"] == "connected"
        assert client.post("/admin/hub/stop").json() == {"running": False, "port": port}
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=TIMEOUT)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    assert app.state.ws_manager is None
    assert client.get("/config").json()["hub_running"] is False
    assert client.post("/publish", json={"topic": "odds_updates",
                                         "data": {}}).status_code == 503
    assert client.get("/stats").status_code == 503

    assert client.post("/admin/hub/start").json() == {"running": True, "port": port}
    assert app.state.ws_manager.port == port
    assert client.get("/config").json()["ws_url"] == ws_url
    with ws_connect(ws_url + "?topics=scrape_progress", open_timeout=TIMEOUT,
                    **_WS_KW) as ws:
        assert recv_json(ws)["topics"] == ["scrape_progress"]
        assert publish(client, "scrape_progress", {"job_id": "after"})["delivered"] == 1
        frame = recv_json(ws)
        # A new hub: seq starts again from 1.
        assert frame["seq"] == 1 and frame["data"] == {"job_id": "after"}


def test_command_line_prints_urls_and_serves(tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    for key in list(env):
        if key.startswith("WSHUB_"):
            del env[key]
    proc = subprocess.Popen(
        [sys.executable, str(APP_PATH), "--port", "0", "--ws-port", "0",
         "--no-simulate", "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        cwd=tmp_path)
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(
        target=lambda: [lines.put(line) for line in proc.stdout],  # type: ignore[union-attr]
        daemon=True)
    reader.start()
    output: list[str] = []
    try:
        urls: dict[str, str] = {}
        deadline = time.monotonic() + 30
        while len(urls) < 2:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or proc.poll() is not None and lines.empty():
                raise AssertionError(f"no URLs printed: {''.join(output)}")
            try:
                line = lines.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                continue
            output.append(line)
            for label in ("page", "websocket"):
                if line.startswith(label + ":"):
                    urls[label] = line.split(None, 1)[1].strip()
        assert urls["page"].startswith("http://127.0.0.1:")
        assert urls["websocket"].startswith("ws://127.0.0.1:")
        assert urls["websocket"].endswith("/api/ws?topics=scrape_progress,odds_updates")
        with httpx.Client(trust_env=False, timeout=TIMEOUT) as client:
            assert client.get(urls["page"]).status_code == 200
            config = client.get(urls["page"] + "config").json()
        assert urls["websocket"].startswith(config["ws_url"] + "?")
        with ws_connect(urls["websocket"], open_timeout=TIMEOUT, **_WS_KW) as ws:
            assert recv_json(ws)["type"] == "connected"
        proc.send_signal(signal.SIGINT)
        # uvicorn shuts down gracefully, then re-raises the signal it caught.
        assert proc.wait(timeout=30) in (0, -signal.SIGINT), "".join(output)
        reader.join(timeout=10)
        while not lines.empty():
            output.append(lines.get())
        assert any(line.startswith("stopped:") for line in output), "".join(output)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        reader.join(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_bind_socket_picks_a_free_port():
    sock = example.bind_socket("127.0.0.1", 0)
    try:
        host, port = sock.getsockname()[:2]
        assert host == "127.0.0.1" and port > 0
        assert sock.type == socket.SOCK_STREAM
    finally:
        sock.close()
