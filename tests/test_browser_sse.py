"""Chromium's own `EventSource` against the hub's Server-Sent Events
(docs/protocol.md, "Server-Sent Events"): a page on another origin reads
the feed, loses its TCP connection (cut by a loopback proxy the test owns),
and the browser's own reconnect, with `Last-Event-ID`, recovers exactly
what was published meanwhile."""

from __future__ import annotations

import contextlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import pytest

import wshub
from chromium import launch, require_chromium
from helpers import wait_until
from tcp_proxy import TcpProxy

sync_api = require_chromium()

PAGE = b"""<!doctype html><meta charset="utf-8"><title>sse</title>
<script>
window.got = [];
window.answers = [];
window.ids = [];
window.open_feed = (url) => {
  const feed = new EventSource(url);
  feed.onmessage = (e) => {
    const m = JSON.parse(e.data);
    if (m.type === "message") { window.got.push(m.data.n); window.ids.push(e.lastEventId); }
    else window.answers.push(m);
  };
  window.feed = feed;
};
</script>"""


class _Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def page() -> Iterator[tuple[Any, str]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with sync_api.sync_playwright() as playwright:
            browser = launch(playwright)
            try:
                tab = browser.new_page()
                tab.set_default_timeout(20_000)
                tab.goto(f"http://127.0.0.1:{server.server_address[1]}/")
                yield tab, f"http://127.0.0.1:{server.server_address[1]}"
                with contextlib.suppress(Exception):
                    tab.evaluate("window.feed && window.feed.close()")
            finally:
                browser.close()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_eventsource_resumes_with_last_event_id_after_a_cut(page):
    tab, origin = page
    hub = wshub.start(0, allowed_origins=[origin])
    proxy = TcpProxy(hub.port)
    try:
        tab.evaluate(f"window.open_feed('http://127.0.0.1:{proxy.port}/api/ws/sse?topics=t')")
        wait_until(lambda: hub.stats()["sse_clients"] == 1, timeout=15)
        for n in range(1, 6):
            hub.broadcast("t", {"n": n})
        wait_until(lambda: tab.evaluate("window.got.length") == 5, timeout=15)
        # The link goes: what is published now reaches nobody...
        proxy.down = True
        assert proxy.cut() == 1
        wait_until(lambda: hub.stats()["sse_clients"] == 0, timeout=15)
        for n in range(6, 11):
            hub.broadcast("t", {"n": n})
        # ...until the browser's own retry gets through and sends back its
        # last event id.
        proxy.down = False
        wait_until(lambda: tab.evaluate("window.got.length") >= 10, timeout=20)
        hub.broadcast("t", {"n": 11})
        wait_until(lambda: tab.evaluate("window.got.length") >= 11, timeout=15)
        assert tab.evaluate("window.got") == list(range(1, 12))
        answers = tab.evaluate("window.answers")
        assert [a["type"] for a in answers] == ["connected", "connected"]
        assert "recovered" not in answers[0]
        assert answers[1]["recovered"] == {"t": True}
        epoch = answers[0]["streams"]["t"]["epoch"]
        assert tab.evaluate("window.ids")[-1] == f"t:11:{epoch}"
    finally:
        proxy.close()
        hub.stop()
