"""on_subscription: the host hears when a topic gains its first subscriber
or loses its last one."""

from __future__ import annotations

import http.client
import json
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


# Events the hub queues for its listener at most (EVENT_QUEUE in
# src/subscription_events.rs, documented in docs/reliability.md).
EVENT_QUEUE = 4096


def test_events_a_blocked_listener_cannot_take_are_dropped_and_counted() -> None:
    release = threading.Event()
    seen = Recorder()

    def blocked(topic: str, subscribers: int) -> None:
        seen(topic, subscribers)
        # Waiting releases the GIL; the hub must not wait for it.
        release.wait(30)

    topics = [f"t{i}" for i in range(EVENT_QUEUE + 2000)]
    hub = wshub.start(0, on_subscription=blocked, max_topics_per_connection=len(topics),
                      max_message_bytes=1 << 20)
    try:
        with ws_connect(f"ws://127.0.0.1:{hub.port}/api/ws", open_timeout=5,
                        max_size=None) as ws:
            ws.recv(timeout=5)
            # One subscribe: every name is a first subscriber, one event each.
            ws.send(json.dumps({"type": "subscribe", "topics": topics}))
            answer = json.loads(ws.recv(timeout=10))
            assert answer["type"] == "subscribed" and len(answer["topics"]) == len(topics)
            wait_until(lambda: len(seen.events) == 1, timeout=5)
            # One event in the listener, EVENT_QUEUE waiting, the rest dropped
            # (one more if the listener had not taken the first one yet).
            dropped = hub.stats()["subscription_events_dropped"]
            assert len(topics) - EVENT_QUEUE - 1 <= dropped <= len(topics) - EVENT_QUEUE
            status, text = metrics(hub.port)
            assert status == 200
            assert f"wshub_subscription_events_dropped_total {dropped}\n" in text
            # The hub serves clients meanwhile.
            hub.broadcast("t0", "1")
            assert json.loads(ws.recv(timeout=5))["seq"] == 1
            release.set()
            # What was queued is still delivered.
            wait_until(lambda: len(seen.events) == len(topics) - dropped, timeout=10)
            with seen.lock:
                assert all(n == 1 for _, n in seen.events)
    finally:
        release.set()
        hub.stop()


def metrics(port: int) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()
