"""The hub's events reach Python's `logging` under the `wshub` logger."""

from __future__ import annotations

import logging
import textwrap
from typing import Iterator

import pytest
import websockets
from websockets.sync.client import connect as ws_connect

import wshub

from helpers import wait_until

pytest_plugins = ["pytester"]


def messages(caplog: pytest.LogCaptureFixture) -> list[tuple[str, int, str]]:
    return [(r.name, r.levelno, r.getMessage()) for r in caplog.records]


def test_connections_and_rejections_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="wshub")
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


def test_events_below_the_logger_level_are_not_emitted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="wshub")
    with wshub.start(0) as hub:
        with ws_connect(f"ws://127.0.0.1:{hub.port}/api/ws", open_timeout=5) as ws:
            ws.recv(timeout=5)
        wait_until(lambda: hub.stats()["connections_closed"] == 1, timeout=5)
    assert not [m for m in messages(caplog) if m[1] < logging.WARNING and m[0].startswith("wshub")]


@pytest.fixture
def started_hub() -> Iterator[wshub.Server]:
    with wshub.start(0) as hub:
        yield hub


def _connect_and_close(hub: wshub.Server) -> None:
    closed = hub.stats()["connections_closed"]
    with ws_connect(f"ws://127.0.0.1:{hub.port}/api/ws", open_timeout=5) as ws:
        ws.recv(timeout=5)
    wait_until(lambda: hub.stats()["connections_closed"] == closed + 1, timeout=5)


def _opened(caplog: pytest.LogCaptureFixture) -> int:
    return sum(1 for name, level, msg in messages(caplog)
               if name == "wshub.connection" and "connection opened" in msg)


def test_levels_changed_after_start_take_effect_at_once(
        started_hub: wshub.Server, caplog: pytest.LogCaptureFixture) -> None:
    # From an empty cache, as in a fresh process (earlier tests cached other
    # levels), a connection at the default level (WARNING, from the root
    # logger): its debug events are dropped, and the hub caches that level.
    wshub.reset_log_cache()
    _connect_and_close(started_hub)
    assert _opened(caplog) == 0
    caplog.set_level(logging.DEBUG, logger="wshub")
    _connect_and_close(started_hub)
    wait_until(lambda: _opened(caplog) == 1, timeout=5,
               message=lambda: f"no 'connection opened' record: {messages(caplog)}")
    # and back up: the next connection's debug events are dropped again
    logging.getLogger("wshub").setLevel(logging.WARNING)
    _connect_and_close(started_hub)
    assert _opened(caplog) == 1
    # logging.disable() is a level change too
    logging.getLogger("wshub").setLevel(logging.DEBUG)
    logging.disable(logging.INFO)
    try:
        _connect_and_close(started_hub)
        assert _opened(caplog) == 1
    finally:
        logging.disable(logging.NOTSET)
    _connect_and_close(started_hub)
    wait_until(lambda: _opened(caplog) == 2, timeout=5)


def test_caplog_works_with_the_plugins_fixtures_out_of_the_box(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(textwrap.dedent("""
        import logging
        import time

        def test_connection_is_logged(wshub_server, wshub_client, caplog):
            wshub_client(wshub_server).close()  # its events are below WARNING
            caplog.set_level(logging.DEBUG, logger="wshub")
            wshub_client(wshub_server)
            deadline = time.monotonic() + 10
            while not any("connection opened" in r.getMessage() for r in caplog.records):
                assert time.monotonic() < deadline, caplog.records
                time.sleep(0.01)
    """))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(passed=1)
