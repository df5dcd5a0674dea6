"""on_subscription: the host hears when a topic gains its first subscriber
or loses its last one."""

from __future__ import annotations

import logging
import threading

import pytest
from websockets.sync.client import connect as ws_connect

import wshub

from helpers import wait_until


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []
        self.threads: set[str] = set()
        self.lock = threading.Lock()

    def __call__(self, topic: str, subscribers: int) -> None:
        with self.lock:
            self.events.append((topic, subscribers))
            self.threads.add(threading.current_thread().name)


def test_first_and_last_subscriber_are_reported_in_order() -> None:
    seen = Recorder()
    hub = wshub.start(0, on_subscription=seen)
    try:
        url = f"ws://127.0.0.1:{hub.port}/api/ws?topics=odds"
        with ws_connect(url, open_timeout=5) as a:
            a.recv(timeout=5)
            wait_until(lambda: seen.events == [("odds", 1)], timeout=5)
            with ws_connect(url, open_timeout=5) as b:  # second subscriber: no event
                b.recv(timeout=5)
                b.send('{"type":"subscribe","topics":["scores"]}')
                b.recv(timeout=5)
                wait_until(lambda: seen.events == [("odds", 1), ("scores", 1)], timeout=5)
            wait_until(lambda: ("scores", 0) in seen.events, timeout=5)
            assert ("odds", 0) not in seen.events
        wait_until(lambda: seen.events[-1] == ("odds", 0), timeout=5)
        assert seen.events == [("odds", 1), ("scores", 1), ("scores", 0), ("odds", 0)]
        assert not any(name.startswith("wshub-worker") for name in seen.threads)
    finally:
        hub.stop()


def test_a_raising_listener_is_logged_and_the_hub_keeps_serving(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="wshub")
    wshub.reset_log_cache()

    def broken(topic: str, subscribers: int) -> None:
        raise ValueError(f"boom {topic}")

    with wshub.start(0, on_subscription=broken) as hub:
        for _ in range(2):
            with ws_connect(f"ws://127.0.0.1:{hub.port}/api/ws?topics=t", open_timeout=5) as ws:
                ws.recv(timeout=5)
                hub.broadcast("t", "1")
                assert '"seq"' in ws.recv(timeout=5)
        wait_until(lambda: sum("boom t" in r.getMessage() for r in caplog.records) >= 4,
                   timeout=5)


def test_on_subscription_must_be_callable() -> None:
    with pytest.raises(TypeError, match="on_subscription"):
        wshub.start(0, on_subscription="not callable")  # type: ignore[arg-type]


def test_stopping_from_inside_the_listener_does_not_deadlock() -> None:
    holder: dict[str, wshub.Server] = {}
    done = threading.Event()

    def stop_on_first(topic: str, subscribers: int) -> None:
        if subscribers == 1:
            holder["hub"].stop()
            done.set()

    hub = wshub.start(0, on_subscription=stop_on_first)
    holder["hub"] = hub
    with ws_connect(f"ws://127.0.0.1:{hub.port}/api/ws?topics=t", open_timeout=5) as ws:
        ws.recv(timeout=5)
        assert done.wait(10)
    wait_until(lambda: not hub.running, timeout=10)
    hub.stop()
