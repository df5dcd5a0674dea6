"""The hub's events reach Python's `logging` under the `wshub` logger."""

from __future__ import annotations

import logging

import pytest
import websockets
from websockets.sync.client import connect as ws_connect

import wshub

from helpers import wait_until


def messages(caplog: pytest.LogCaptureFixture) -> list[tuple[str, int, str]]:
    return [(r.name, r.levelno, r.getMessage()) for r in caplog.records]


def test_connections_and_rejections_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="wshub")
    wshub.reset_log_cache()
    try:
        with wshub.start(0, allowed_origins=["https://ok.example"]) as hub:
            with ws_connect(f"ws://127.0.0.1:{hub.port}/api/ws", open_timeout=5) as ws:
                ws.recv(timeout=5)
            with pytest.raises(websockets.InvalidStatus):
                ws_connect(f"ws://127.0.0.1:{hub.port}/api/ws", origin="https://x.example",
                           open_timeout=5)

            def seen(level: int, text: str) -> bool:
                return any(name.startswith("wshub") and lvl == level and text in msg
                           for name, lvl, msg in messages(caplog))

            wait_until(lambda: seen(logging.DEBUG, "connection opened"), timeout=5)
            wait_until(lambda: seen(logging.DEBUG, "connection closed"), timeout=5)
            wait_until(lambda: seen(logging.WARNING, "origin not allowed"), timeout=5)
    finally:
        caplog.set_level(logging.WARNING, logger="wshub")
        wshub.reset_log_cache()


def test_events_below_the_logger_level_are_not_emitted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="wshub")
    wshub.reset_log_cache()
    with wshub.start(0) as hub:
        with ws_connect(f"ws://127.0.0.1:{hub.port}/api/ws", open_timeout=5) as ws:
            ws.recv(timeout=5)
        wait_until(lambda: hub.stats()["connections_closed"] == 1, timeout=5)
    assert not [m for m in messages(caplog) if m[1] < logging.WARNING and m[0].startswith("wshub")]
