"""wshub.js in a real, headless Chromium against a real hub.

A small page, served by a stdlib HTTP server on 127.0.0.1 (its own origin,
as an app's would be), imports the client from the hub
(`<path>/client.js`, cross-origin) and records everything the client
reports in `window.log`. The tests publish with the Python API and break
the connection for real: stopping the hub and starting a new one on the
same port, or through tests/tcp_proxy.py, a loopback proxy they own, which
resets the TCP connections, freezes them (a dead link) or refuses new ones.

Every wait polls a condition (generous timeouts: the machine may be busy).
Skipped when the playwright package or the Chromium binary is missing.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlencode

import pytest

import wshub

from chromium import launch, require_chromium
from helpers import wait_until
from tcp_proxy import TcpProxy

sync_api = require_chromium()

TIMEOUT_MS = 20_000

# Quick reconnects, so that a test takes seconds; a keepalive slow enough
# that a busy machine never makes it give up on a live connection (the
# dead-link test shortens it).
FAST = {"reconnectBaseMs": 200, "reconnectMaxMs": 2000, "pingIntervalMs": 5000,
        "pongTimeoutMs": 5000, "connectTimeoutMs": 10000}

PAGE = b"""<!doctype html>
<meta charset="utf-8"><title>wshub.js under test</title>
<script type="module">
  const params = new URLSearchParams(location.search);
  const { tokens, ...options } = JSON.parse(params.get("options"));
  window.log = { status: [], messages: [], recovery: [], errors: [], subscribed: [] };
  // One token per connection attempt, from a list the test fills.
  if (tokens) {
    window.tokens = tokens;
    options.token = async () => window.tokens.shift();
  }
  const wshub = await import(params.get("client"));
  window.hub = wshub.connect(params.get("hub"), {
    ...options,
    onStatus: (s) => log.status.push(s),
    onRecovery: (r) => log.recovery.push(r),
    onError: (e) => log.errors.push({ error: e.error, topic: e.topic, reason: e.reason }),
    onSubscribed: (topics) => log.subscribed.push(topics),
  });
  hub.on("*", (data, meta) => log.messages.push({ data, ...meta }));
</script>
"""


README = Path(__file__).resolve().parent.parent / "README.md"
README_MARKER = "<!-- tested by tests/test_browser_client.py -->"

# Path -> HTML the test origin serves; a test may add pages.
PAGES = {"/": PAGE}


class _PageHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        body = PAGES.get(self.path.split("?")[0])
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("content-type", "text/html; charset=utf-8")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


# --------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def app_origin() -> Iterator[str]:
    """http://127.0.0.1:PORT, serving the test page."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _PageHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture
def page(browser) -> Iterator[Any]:
    """A fresh page; JavaScript errors on it fail the test."""
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield page
        assert errors == [], f"JavaScript errors on the page: {errors}"
    finally:
        with contextlib.suppress(Exception):
            page.evaluate("window.hub && window.hub.close()")
        context.close()


@pytest.fixture
def hubs() -> Iterator[list[wshub.Server]]:
    """Hubs a test starts (append them); all stopped at teardown."""
    started: list[wshub.Server] = []
    yield started
    for server in started:
        with contextlib.suppress(Exception):
            server.stop()


@pytest.fixture
def proxies() -> Iterator[list[TcpProxy]]:
    made: list[TcpProxy] = []
    yield made
    for proxy in made:
        proxy.close()


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def start_hub(hubs: list[wshub.Server], port: int = 0, **options: Any) -> wshub.Server:
    server = wshub.start(port, **options)
    hubs.append(server)
    return server


def open_page(page: Any, app_origin: str, hub_port: int, *, connect_port: int | None = None,
              **options: Any) -> None:
    """Loads the test page: the client from the hub on `hub_port`, a
    connection to `connect_port` (a proxy) or the hub itself."""
    query = urlencode({
        "client": f"http://127.0.0.1:{hub_port}/api/ws/client.js",
        "hub": f"ws://127.0.0.1:{connect_port or hub_port}/api/ws",
        "options": json.dumps({**FAST, **options}),
    })
    page.goto(f"{app_origin}/?{query}")
    page.wait_for_function("() => window.hub !== undefined")


def log(page: Any, what: str) -> Any:
    return page.evaluate(f"() => window.log.{what}")


def wait_js(page: Any, condition: str, arg: Any = None) -> Any:
    """Waits until `condition` (a JS function of `arg`) is truthy."""
    return page.wait_for_function(condition, arg=arg, timeout=TIMEOUT_MS).json_value()


def wait_open(page: Any, opens: int = 1) -> dict[str, Any]:
    """Waits for the `opens`-th "open" status; returns it."""
    return wait_js(page, """(n) => {
        const opened = log.status.filter((s) => s.state === "open");
        return opened.length >= n && opened[n - 1];
    }""", opens)


def wait_messages(page: Any, count: int) -> list[dict[str, Any]]:
    return wait_js(page, "(n) => log.messages.length >= n && log.messages", count)


def wait_subscribers(hub: wshub.Server, topic: str, count: int) -> None:
    wait_until(lambda: hub.stats()["topics"].get(topic, 0) == count, timeout=TIMEOUT_MS / 1000,
               message=lambda: f"{topic} subscribers: {hub.stats()['topics']}")


def seqs(messages: list[dict[str, Any]], topic: str) -> list[int]:
    return [m["seq"] for m in messages if m["topic"] == topic]


# --------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------


def test_the_page_imports_the_client_from_the_hub_and_receives_updates(page, app_origin, hubs):
    hub = start_hub(hubs)
    open_page(page, app_origin, hub.port, topics=["odds", "news"])
    opened = wait_open(page)
    assert opened["topics"] == ["news", "odds"]
    assert opened["recovered"] == {}
    wait_subscribers(hub, "odds", 1)

    hub.broadcast("odds", {"match": 1, "home": 1.85})
    hub.broadcast("news", "\"kick-off\"")
    hub.broadcast("odds", {"match": 1, "home": 1.9})
    messages = wait_messages(page, 3)
    assert [(m["topic"], m["seq"], m["data"]) for m in messages] == [
        ("odds", 1, {"match": 1, "home": 1.85}), ("news", 1, "kick-off"),
        ("odds", 2, {"match": 1, "home": 1.9})]
    assert all(m["retained"] is False and m["recovered"] is False for m in messages)
    assert messages[0]["epoch"] == hub.stream("odds")[0]
    assert page.evaluate("() => hub.position('odds')") == {"epoch": hub.stream("odds")[0], "seq": 2}

    rtt = page.evaluate("() => hub.ping()")
    assert 0 <= rtt < TIMEOUT_MS
    assert [s["state"] for s in log(page, "status")] == ["connecting", "open"]


def test_it_survives_a_hub_restart_and_says_the_state_must_be_reloaded(page, app_origin, hubs):
    hub = start_hub(hubs)
    port = hub.port
    open_page(page, app_origin, port, topics=["odds"])
    wait_open(page)
    wait_subscribers(hub, "odds", 1)
    hub.broadcast("odds", {"v": 1})
    wait_messages(page, 1)
    old_epoch = hub.stream("odds")[0]

    hub.stop()
    reconnecting = wait_js(page, """() => log.status.find((s) => s.state === "reconnecting")""")
    assert reconnecting["code"] == 1001 and reconnecting["reason"] == "server shutting down"
    wait_js(page, "() => log.subscribed.at(-1).length === 0")
    hub = start_hub(hubs, port)
    opened = wait_open(page, 2)
    # A new hub, a new epoch: what was missed cannot be replayed.
    assert opened["recovered"] == {"odds": False}
    [recovery] = log(page, "recovery")
    assert recovery["topic"] == "odds" and recovery["recovered"] is False
    assert recovery["epochChanged"] is True and recovery["epoch"] != old_epoch

    wait_subscribers(hub, "odds", 1)
    hub.broadcast("odds", {"v": 2})
    messages = wait_messages(page, 2)
    assert [(m["seq"], m["data"], m["epoch"]) for m in messages] == [
        (1, {"v": 1}, old_epoch), (1, {"v": 2}, hub.stream("odds")[0])]


def test_a_network_cut_loses_nothing_and_repeats_nothing(page, app_origin, hubs, proxies):
    hub = start_hub(hubs)
    proxy = TcpProxy(hub.port)
    proxies.append(proxy)
    open_page(page, app_origin, hub.port, connect_port=proxy.port, topics=["odds", "news"])
    wait_open(page)
    wait_subscribers(hub, "odds", 1)
    for i in range(1, 6):
        hub.broadcast("odds", {"i": i})
    hub.broadcast("news", {"n": 1})
    wait_messages(page, 6)

    # The network drops the connection, and stays down for a while: the
    # publications made meanwhile reach nobody.
    proxy.down = True
    assert proxy.cut() == 1
    wait_js(page, """() => log.status.at(-1).state === "reconnecting" """)
    wait_subscribers(hub, "odds", 0)
    for i in range(6, 16):
        hub.broadcast("odds", {"i": i})
    proxy.down = False

    opened = wait_open(page, 2)
    assert opened["recovered"] == {"news": True, "odds": True}
    recovery = {r["topic"]: r for r in log(page, "recovery")}
    assert recovery["odds"]["recovered"] is True and recovery["odds"]["missed"] == 10
    assert recovery["news"]["missed"] == 0
    wait_subscribers(hub, "odds", 1)
    for i in range(16, 19):
        hub.broadcast("odds", {"i": i})
    # A control publication after them all: once it is in, any repeat
    # of an earlier one would be too.
    hub.broadcast("news", {"n": 2})
    messages = wait_messages(page, 20)
    assert seqs(messages, "odds") == list(range(1, 19))
    assert [m["data"]["i"] for m in messages if m["topic"] == "odds"] == list(range(1, 19))
    replayed = [m["seq"] for m in messages if m["recovered"]]
    assert replayed == list(range(6, 16))
    assert seqs(messages, "news") == [1, 2]
    assert len(messages) == 20


def test_a_dead_link_is_found_by_the_keepalive_and_recovered(page, app_origin, hubs, proxies):
    hub = start_hub(hubs)
    proxy = TcpProxy(hub.port)
    proxies.append(proxy)
    open_page(page, app_origin, hub.port, connect_port=proxy.port, topics=["odds"],
              pingIntervalMs=1000, pongTimeoutMs=1500)
    wait_open(page)
    wait_subscribers(hub, "odds", 1)
    hub.broadcast("odds", {"i": 1})
    wait_messages(page, 1)

    # Nothing arrives, nothing closes: only the client's ping can tell.
    assert proxy.freeze() == 1
    hub.broadcast("odds", {"i": 2})  # stuck in the frozen link
    reconnecting = wait_js(page, """() => log.status.find((s) => s.state === "reconnecting")""")
    assert reconnecting["reason"] == "ping timeout"
    opened = wait_open(page, 2)
    assert opened["recovered"] == {"odds": True}
    messages = wait_messages(page, 2)
    assert [(m["seq"], m["recovered"]) for m in messages] == [(1, False), (2, True)]
    hub.broadcast("odds", {"i": 3})
    assert [m["data"]["i"] for m in wait_messages(page, 3)] == [1, 2, 3]


def test_recovered_false_once_the_history_is_exceeded(page, app_origin, hubs, proxies):
    hub = start_hub(hubs, history_size=4)
    proxy = TcpProxy(hub.port)
    proxies.append(proxy)
    open_page(page, app_origin, hub.port, connect_port=proxy.port, topics=["odds"])
    wait_open(page)
    wait_subscribers(hub, "odds", 1)
    hub.broadcast("odds", {"i": 1})
    hub.broadcast("odds", {"i": 2})
    wait_messages(page, 2)

    proxy.down = True
    proxy.cut()
    wait_subscribers(hub, "odds", 0)
    for i in range(3, 13):  # 10 missed, the hub keeps 4
        hub.broadcast("odds", {"i": i})
    proxy.down = False

    opened = wait_open(page, 2)
    assert opened["recovered"] == {"odds": False}
    [recovery] = log(page, "recovery")
    assert recovery["recovered"] is False and recovery["epochChanged"] is False
    assert recovery["seq"] == 12 and recovery["missed"] is None
    wait_subscribers(hub, "odds", 1)
    hub.broadcast("odds", {"i": 13})
    messages = wait_messages(page, 3)
    assert [m["seq"] for m in messages] == [1, 2, 13]
    assert page.evaluate("() => hub.position('odds').seq") == 13


def test_an_unsubscribed_topic_stops_arriving_also_after_a_reconnect(
        page, app_origin, hubs, proxies):
    hub = start_hub(hubs)
    proxy = TcpProxy(hub.port)
    proxies.append(proxy)
    open_page(page, app_origin, hub.port, connect_port=proxy.port, topics=["a", "b"])
    wait_open(page)
    wait_subscribers(hub, "a", 1)
    page.evaluate("() => hub.unsubscribe(['a'])")
    wait_js(page, """() => JSON.stringify(log.subscribed.at(-1)) === '["b"]'""")
    assert hub.broadcast("a", {"x": 1}) == 0
    assert hub.broadcast("b", {"x": 2}) == 1
    messages = wait_messages(page, 1)
    assert [(m["topic"], m["data"]) for m in messages] == [("b", {"x": 2})]

    proxy.cut()
    wait_open(page, 2)
    wait_subscribers(hub, "b", 1)
    assert page.evaluate("() => hub.subscribed") == ["b"]
    assert hub.broadcast("a", {"x": 3}) == 0
    hub.broadcast("b", {"x": 4})
    messages = wait_messages(page, 2)
    assert [m["topic"] for m in log(page, "messages")] == ["b", "b"]


def test_it_backs_off_while_the_hub_is_down(page, app_origin, hubs, proxies):
    hub = start_hub(hubs)
    port = hub.port
    proxy = TcpProxy(port)
    proxies.append(proxy)
    base, cap = 200, 2000
    open_page(page, app_origin, port, connect_port=proxy.port, topics=["odds"],
              reconnectBaseMs=base, reconnectMaxMs=cap)
    wait_open(page)

    # Nothing listens on the hub's port: the proxy takes each attempt and
    # resets it, and counts it.
    hub.stop()
    down_at = time.monotonic()
    window = 6.0
    wait_until(lambda: time.monotonic() - down_at >= window, timeout=window + 5, interval=0.2)
    attempts = proxy.accepts_between(down_at, down_at + window)
    # Full jitter under a doubling ceiling (0.2, 0.4, 0.8, 1.6, then 2 s)
    # makes about 8 attempts in 6 s, and at least 4; a client without
    # backoff at 200 ms would make 30, one without a delay hundreds.
    assert 3 <= attempts <= 16, attempts
    retries = [s for s in log(page, "status") if s["state"] == "reconnecting"]
    assert len(retries) >= 3
    for status in retries:
        ceiling = min(cap, base * 2 ** (status["attempt"] - 1))
        assert 0 <= status["delay"] < ceiling, status
    assert [s["attempt"] for s in retries] == list(range(1, len(retries) + 1))
    assert {s["reason"] for s in retries[1:]} == {"handshake failed"}

    hub = start_hub(hubs, port)
    wait_open(page, 2)
    wait_subscribers(hub, "odds", 1)


def test_a_refused_client_is_not_retried(page, app_origin, hubs, proxies):
    hub = start_hub(hubs, rate_limit=1, rate_burst=2)
    proxy = TcpProxy(hub.port)
    proxies.append(proxy)
    open_page(page, app_origin, hub.port, connect_port=proxy.port, topics=["a"])
    wait_open(page)
    # A page that keeps asking is rate limited, then closed with 1008.
    page.evaluate("() => { for (let i = 0; i < 20; i++) hub.subscribe(['t' + i]); }")
    closed = wait_js(page, """() => log.status.find((s) => s.state === "closed")""")
    assert closed == {"state": "closed", "code": 1008, "reason": "rate limit exceeded"}
    assert "rate_limited" in {e["error"] for e in log(page, "errors")}
    accepts = len(proxy.accepts)
    settle = time.monotonic()
    wait_until(lambda: time.monotonic() - settle >= 3, timeout=10, interval=0.2)
    assert len(proxy.accepts) == accepts == 1
    assert page.evaluate("() => hub.state") == "closed"


def test_the_readme_snippet_runs_as_written(page, app_origin, hubs):
    text = README.read_text()
    match = re.search(re.escape(README_MARKER) + r"\n```html\n(.*?)```", text, re.S)
    assert match, f"no html block after {README_MARKER!r} in README.md"
    hub = start_hub(hubs)
    port = hub.port
    snippet = match.group(1).replace("localhost:8765", f"127.0.0.1:{port}")
    # The page's own functions the snippet calls.
    app = """<script>
      window.rendered = []; window.reloaded = [];
      window.render = (data, seq) => rendered.push([data, seq]);
      window.reload = (topic) => reloaded.push(topic);
    </script>"""
    PAGES["/readme"] = (app + snippet).encode()
    page.goto(f"{app_origin}/readme")
    wait_subscribers(hub, "odds_updates", 1)
    hub.broadcast("odds_updates", {"match": 1, "home": 1.85})
    assert wait_js(page, "() => rendered.length === 1 && rendered") == [
        [{"match": 1, "home": 1.85}, 1]]

    hub.stop()
    hub = start_hub(hubs, port)
    assert wait_js(page, "() => reloaded.length === 1 && reloaded") == ["odds_updates"]
    wait_subscribers(hub, "odds_updates", 1)
    hub.broadcast("odds_updates", {"match": 1, "home": 2.0})
    assert wait_js(page, "() => rendered.length === 2 && rendered[1]") == [
        {"match": 1, "home": 2.0}, 1]


def test_retained_values_come_first_and_again_when_recovery_fails(page, app_origin, hubs, proxies):
    hub = start_hub(hubs, history_size=2)
    hub.broadcast("odds", {"m": 1, "home": 1.5}, key=1, retain=True)
    hub.broadcast("odds", {"m": 2, "home": 2.5}, key=2, retain=True)
    proxy = TcpProxy(hub.port)
    proxies.append(proxy)
    open_page(page, app_origin, hub.port, connect_port=proxy.port, topics=["odds"])
    messages = wait_messages(page, 2)
    assert [(m["seq"], m["data"]["m"], m["retained"]) for m in messages] == [
        (1, 1, True), (2, 2, True)]
    hub.broadcast("odds", {"m": 1, "home": 1.6}, key=1, retain=True)
    assert [(m["seq"], m["retained"]) for m in wait_messages(page, 3)][2] == (3, False)

    # Away for longer than the history: no replay, but the current values.
    proxy.down = True
    proxy.cut()
    wait_subscribers(hub, "odds", 0)
    for home in (1.7, 1.8, 1.9):
        hub.broadcast("odds", {"m": 1, "home": home}, key=1, retain=True)
    proxy.down = False
    opened = wait_open(page, 2)
    assert opened["recovered"] == {"odds": False}
    messages = wait_messages(page, 5)
    assert [(m["seq"], m["data"], m["retained"]) for m in messages[3:]] == [
        (2, {"m": 2, "home": 2.5}, True), (6, {"m": 1, "home": 1.9}, True)]
    assert page.evaluate("() => hub.position('odds').seq") == 6


def test_an_expiring_token_is_replaced_and_nothing_is_missed(page, app_origin, hubs):
    jwt = pytest.importorskip("jwt", reason="PyJWT not installed (requirements-dev.txt)")
    secret = "a-secret-for-tests-only-" * 3

    def token(ttl: float) -> str:
        return jwt.encode({"sub": "u1", "exp": int(time.time() + ttl)}, secret, algorithm="HS256")

    hub = start_hub(hubs, jwt_key=secret)
    open_page(page, app_origin, hub.port, topics=["odds"], tokens=[token(4), token(600)])
    wait_open(page)
    wait_subscribers(hub, "odds", 1)
    hub.broadcast("odds", {"i": 1})
    wait_messages(page, 1)

    # At the first token's exp the hub closes with 4001; the client comes
    # back with the next token, where it was.
    reconnecting = wait_js(page, """() => log.status.find((s) => s.state === "reconnecting")""")
    assert (reconnecting["code"], reconnecting["reason"]) == (4001, "token expired")
    hub.broadcast("odds", {"i": 2})  # while away, or just back: delivered either way
    opened = wait_open(page, 2)
    assert opened["recovered"] == {"odds": True}
    wait_subscribers(hub, "odds", 1)
    hub.broadcast("odds", {"i": 3})
    assert [m["data"]["i"] for m in wait_messages(page, 3)] == [1, 2, 3]
    assert len(log(page, "messages")) == 3

    # A refresh instead keeps the connection.
    answer = page.evaluate("(t) => hub.refresh(t)", token(900))
    assert answer["topics"] == ["odds"] and answer["exp"] > time.time() + 800
    assert hub.stats()["tokens_refreshed"] == 1
    assert [s["state"] for s in log(page, "status")].count("open") == 2
