"""authorize: the host admits, limits or refuses each handshake."""

from __future__ import annotations

import json
import logging
import threading

import pytest
import websockets
from websockets.sync.client import connect as ws_connect

import wshub


def url(hub: wshub.Server, query: str = "") -> str:
    return f"ws://127.0.0.1:{hub.port}/api/ws{query}"


def status_of(hub: wshub.Server, query: str = "", **kw) -> int:
    with pytest.raises(websockets.InvalidStatus) as info:
        ws_connect(url(hub, query), open_timeout=5, **kw)
    return info.value.response.status_code


def test_request_form_sees_params_headers_cookies_client_and_topics() -> None:
    seen: list[wshub.Request] = []

    def check(request: wshub.Request) -> object:
        seen.append(request)
        if request.cookies.get("session") != "s3cret":
            return 401
        allowed = request.query_params.getlist("allow")
        return [t for t in request.topics if t in allowed]

    with wshub.start(0, authorize=check) as hub:
        query = "?topics=odds,news&topics=secret&allow=odds&allow=secret&token=a%20b&token=c"
        with ws_connect(url(hub, query), open_timeout=5, additional_headers={
            "Cookie": 'session=s3cret; theme="dark"', "X-Trace": "one",
            "x-trace": "two",
        }) as ws:
            ack = json.loads(ws.recv(timeout=5))
            local_port = ws.local_address[1]
        assert ack["topics"] == ["odds", "secret"]
        assert ack["reasons"] == {"news": "not_allowed"}
        assert status_of(hub, "?topics=odds", additional_headers={"Cookie": "session=x"}) == 401
        assert status_of(hub, "?topics=odds") == 401

    request = seen[0]
    assert isinstance(request, wshub.Request)
    assert request.path == "/api/ws"
    assert request.query_string == query[1:]
    assert request.topics == ["odds", "news", "secret"]
    params = request.query_params
    assert params["token"] == "c" and params.get("token") == "c"  # the last, as Starlette
    assert params.getlist("token") == ["a b", "c"]
    assert params.get("missing") is None and params.getlist("missing") == []
    headers = request.headers
    assert headers["Upgrade"].lower() == "websocket"
    assert headers["X-TRACE"] == "one" and headers.getlist("X-Trace") == ["one", "two"]
    assert "cookie" in headers and "Cookie" in headers and 42 not in headers
    assert request.cookies == {"session": "s3cret", "theme": "dark"}
    assert request.client == ("127.0.0.1", local_port)
    assert (request.client.host, request.client.port) == ("127.0.0.1", local_port)
    assert seen[1].cookies == {"session": "x"} and seen[2].cookies == {}


def test_the_form_is_told_apart_by_signature() -> None:
    calls: list[tuple] = []

    class Checker:
        def __call__(self, request: wshub.Request) -> bool:
            calls.append(("object", request.path))
            return True

    def legacy(path: str, query: str, headers: dict[str, str]) -> bool:
        calls.append(("legacy", path, query, headers["upgrade"].lower()))
        return True

    def legacy_with_default(path: str, query: str, headers: dict, extra: int = 0) -> bool:
        calls.append(("legacy_default", type(headers).__name__))
        return True

    for check in (Checker(), legacy, legacy_with_default, lambda *args: calls.append(args)):
        with wshub.start(0, authorize=check) as hub:
            with ws_connect(url(hub, "?topics=a"), open_timeout=5) as ws:
                assert json.loads(ws.recv(timeout=5))["topics"] == ["a"]
    assert calls[:3] == [("object", "/api/ws"), ("legacy", "/api/ws", "topics=a", "websocket"),
                         ("legacy_default", "dict")]
    # *args can take one argument: it gets the request.
    assert len(calls[3]) == 1 and isinstance(calls[3][0], wshub.Request)

    with pytest.raises(TypeError, match=r"authorize\(request\)"):
        wshub.start(0, authorize=lambda path, query: True)  # type: ignore[arg-type]


def test_check_sees_path_query_and_headers_and_decides() -> None:
    seen: list[tuple[str, str, dict[str, str]]] = []
    threads: set[str] = set()

    def check(path: str, query: str, headers: dict[str, str]) -> object:
        seen.append((path, query, headers))
        threads.add(threading.current_thread().name)
        token = headers.get("authorization", "")
        if token == "Bearer admin":
            return True
        if token == "Bearer odds-only":
            return ["odds"]
        if token == "Bearer expired":
            return 401
        return False

    with wshub.start(0, authorize=check) as hub:
        assert status_of(hub, "?topics=odds") == 403
        assert status_of(hub, additional_headers={"Authorization": "Bearer expired"}) == 401
        with ws_connect(url(hub, "?topics=odds,secret"), open_timeout=5,
                        additional_headers={"Authorization": "Bearer odds-only"}) as ws:
            ack = json.loads(ws.recv(timeout=5))
            assert ack["topics"] == ["odds"]
            assert ack["reasons"] == {"secret": "not_allowed"}
            ws.send('{"type":"subscribe","topics":["secret"]}')
            assert json.loads(ws.recv(timeout=5))["rejected"] == ["secret"]
        with ws_connect(url(hub, "?topics=odds,secret"), open_timeout=5,
                        additional_headers={"Authorization": "Bearer admin"}) as ws:
            assert json.loads(ws.recv(timeout=5))["topics"] == ["odds", "secret"]
        assert hub.stats()["handshakes_rejected"]["auth"] == 2
    path, query, headers = seen[0]
    assert (path, query) == ("/api/ws", "topics=odds")
    assert headers["upgrade"] == "websocket"
    assert not any(name.startswith("wshub-worker") for name in threads)


def test_a_raising_check_refuses_with_403_and_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="wshub")
    wshub.reset_log_cache()

    def broken(path: str, query: str, headers: dict[str, str]) -> bool:
        raise RuntimeError("database down")

    with wshub.start(0, authorize=broken) as hub:
        assert status_of(hub) == 403
        assert status_of(hub) == 403
    assert any("database down" in r.getMessage() for r in caplog.records)


def test_a_slow_check_times_out_with_503_and_others_still_connect() -> None:
    release = threading.Event()

    def slow(path: str, query: str, headers: dict[str, str]) -> bool:
        if "slow" in query:
            release.wait(10)
        return True

    try:
        with wshub.start(0, authorize=slow, authorize_timeout=0.3) as hub:
            assert status_of(hub, "?slow=1") == 503
            with ws_connect(url(hub, "?topics=a"), open_timeout=5) as ws:
                assert json.loads(ws.recv(timeout=5))["type"] == "connected"
            release.set()
    finally:
        release.set()


def test_authorize_must_be_callable() -> None:
    with pytest.raises(TypeError, match="authorize"):
        wshub.start(0, authorize=42)  # type: ignore[arg-type]
