"""Chromium's own WebSocket against a hub with ``compression=True``
(docs/protocol.md, "Compression"): the browser offers permessage-deflate,
the hub accepts it, Chromium sends its messages compressed (the hub
inflates them) and decodes the shared compressed publication frames to
exactly what was published."""

from __future__ import annotations

import json
from typing import Any, Iterator

import pytest

from chromium import launch, require_chromium

sync_api = require_chromium()

OPEN = """(url) => new Promise((resolve, reject) => {
  window.got = [];
  window.answers = [];
  const ws = new WebSocket(url);
  ws.onmessage = (e) => {
    const m = JSON.parse(e.data);
    if (m.type === "message") window.got.push(m);
    else window.answers.push(m);
  };
  ws.onopen = () => resolve(ws.extensions);
  ws.onerror = () => reject(new Error("websocket error"));
  window.ws = ws;
})"""


@pytest.fixture
def tab() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            page = browser.new_page()
            page.set_default_timeout(20_000)
            yield page
            page.evaluate("window.ws && window.ws.close()")
        finally:
            browser.close()


def test_chromium_negotiates_deflate_and_reads_shared_compressed_frames(make_hub, tab):
    hub = make_hub(compression=True, compression_min_size=0)
    extensions = tab.evaluate(OPEN, f"ws://127.0.0.1:{hub.port}/api/ws?topics=")
    assert "permessage-deflate" in extensions
    assert "server_no_context_takeover" in extensions
    # Chromium compresses what it sends once deflate is negotiated: the
    # subscribe arrives compressed and is answered like any other.
    topics = [f"odds.{i}" for i in range(40)]
    tab.evaluate("(m) => window.ws.send(m)", json.dumps({"type": "subscribe", "topics": topics}))
    tab.wait_for_function("window.answers.some((m) => m.type === 'subscribed')")
    answer = next(m for m in tab.evaluate("window.answers") if m["type"] == "subscribed")
    assert answer["topics"] == sorted(topics)
    sent = [{"market": i, "prices": [1.5 + i / 100] * 50} for i in range(5)]
    for data in sent:
        assert hub.broadcast("odds.7", data) == 1
    tab.wait_for_function("window.got.length === 5")
    got = tab.evaluate("window.got")
    assert [m["data"] for m in got] == sent
    assert [m["seq"] for m in got] == [1, 2, 3, 4, 5]
    stats = hub.stats()
    assert stats["deflate_clients"] == 1
    assert stats["compressed_publications"] == 5
    assert 0 < stats["compression_bytes_out"] < stats["compression_bytes_in"]
