"""`GET /metrics` and `GET /healthz` on the hub's own port, beside the
WebSocket endpoint."""

from __future__ import annotations

import http.client
import json

import pytest
import websockets
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from websockets.sync.client import connect as ws_connect

import wshub

from helpers import wait_until


def get(hub: wshub.Server, path: str) -> tuple[int, str, str]:
    conn = http.client.HTTPConnection("127.0.0.1", hub.port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.getheader("content-type") or "", response.read().decode()
    finally:
        conn.close()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_healthz_answers_200_while_running():
    with wshub.start(0) as hub:
        status, ctype, body = get(hub, "/healthz")
        assert (status, body) == (200, "ok\n")
        assert ctype.startswith("text/plain")


def test_metrics_parse_and_follow_the_hub():
    with wshub.start(0, allowed_origins=["https://ok.example"]) as hub:
        with ws_connect(f"ws://127.0.0.1:{hub.port}/api/ws?topics=odds", open_timeout=5) as ws:
            ws.recv(timeout=5)
            hub.broadcast("odds", '{"p":1}')
            assert json.loads(ws.recv(timeout=5))["seq"] == 1
            with pytest.raises(websockets.InvalidStatus):
                ws_connect(f"ws://127.0.0.1:{hub.port}/api/ws", origin="https://bad.example",
                           open_timeout=5)
            with pytest.raises(websockets.InvalidStatus):
                ws_connect(f"ws://127.0.0.1:{hub.port}/elsewhere", open_timeout=5)
            wait_until(lambda: hub.stats()["sent"] == 1, timeout=5)
            status, ctype, text = get(hub, "/metrics")
        assert status == 200
        assert ctype.startswith("application/openmetrics-text")
        got = samples(text)
        assert got[("wshub_connections", ())] == 1
        assert got[("wshub_published_total", ())] == 1
        assert got[("wshub_sent_total", ())] == 1
        # The frame on the wire: a 2-byte header, then the JSON.
        frame = '{"type":"message","topic":"odds","seq":1,"data":{"p":1}}'
        assert got[("wshub_sent_bytes_total", ())] == 2 + len(frame)
        assert got[("wshub_topic_subscribers", (("topic", "odds"),))] == 1
        assert got[("wshub_handshakes_rejected_total", (("reason", "origin"),))] == 1
        assert got[("wshub_handshakes_rejected_total", (("reason", "path"),))] == 1
        stats = hub.stats()
        assert stats["handshakes_rejected"] == {
            "path": 1, "origin": 1, "auth": 0, "capacity": 0, "invalid": 0, "timeout": 0,
            "method": 0, "not_upgrade": 0, "version": 0, "key": 0, "too_large": 0,
            "too_many_headers": 0, "token_missing": 0, "token_malformed": 0,
            "token_signature": 0, "token_algorithm": 0, "token_expired": 0,
            "token_not_yet_valid": 0, "token_claims": 0, "tls": 0}
        assert stats["sent_bytes"] == got[("wshub_sent_bytes_total", ())]


def test_every_stats_number_has_its_metrics_series_with_the_same_value():
    with wshub.start(0) as hub:
        with ws_connect(f"ws://127.0.0.1:{hub.port}/api/ws?topics=odds", open_timeout=5) as ws:
            ws.recv(timeout=5)
            hub.broadcast("odds", '{"p":1}')
            ws.recv(timeout=5)
            wait_until(lambda: hub.stats()["sent"] == 1, timeout=5)
            _, _, text = get(hub, "/metrics")
            stats = hub.stats()
    got = samples(text)
    numbers = {k: v for k, v in stats.items() if type(v) is int}
    assert len(numbers) >= 15, sorted(numbers)
    for name, value in numbers.items():
        series = [got[key] for key in ((f"wshub_{name}", ()), (f"wshub_{name}_total", ()))
                  if key in got]
        assert series == [value], (name, value, series)
    assert got[("wshub_backplane_connected", ())] == int(stats["backplane_connected"])


def test_metrics_with_a_query_string_and_other_paths():
    with wshub.start(0) as hub:
        assert get(hub, "/metrics?x=1")[0] == 200
        assert get(hub, "/metricsfoo")[0] == 404
        assert get(hub, "/")[0] == 404
        assert hub.stats()["handshakes_rejected"]["path"] == 2
