"""Malformed and hostile input from clients, over real sockets.

Each test sends something a well-behaved client never would (raw frames
where the websockets client would refuse to build them), checks what the
protocol document promises for it, and then checks that the hub still
serves a fresh client normally.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import time

import pytest

from helpers import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    RawWS,
    close_code,
    connect_client,
    wait_until,
)


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def frame_bytes(opcode: int, payload: bytes, *, fin: bool = True,
                masked: bool = True, rsv: int = 0) -> bytes:
    """One WebSocket frame, with every bit under the caller's control."""
    header = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    mask_bit = 0x80 if masked else 0
    n = len(payload)
    if n < 126:
        header += bytes([mask_bit | n])
    elif n < 65536:
        header += bytes([mask_bit | 126]) + struct.pack("!H", n)
    else:
        header += bytes([mask_bit | 127]) + struct.pack("!Q", n)
    if not masked:
        return header + payload
    mask = os.urandom(4)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def read_json(ws: RawWS) -> dict:
    """The next text frame, parsed; skips the server's WebSocket pings."""
    while True:
        frame = ws.read_frame()
        assert frame is not None, "connection ended"
        opcode, payload = frame
        if opcode == OP_PING:
            continue
        assert opcode == OP_TEXT, f"expected a text frame, got {frame!r}"
        return json.loads(payload)


def request(ws: RawWS, obj) -> dict:
    ws.send_frame(OP_TEXT, obj if isinstance(obj, bytes) else json.dumps(obj).encode())
    return read_json(ws)


def expect_error(ws: RawWS, code: str) -> dict:
    answer = read_json(ws)
    assert answer["type"] == "error" and answer["error"] == code, answer
    return answer


def assert_still_open(ws: RawWS) -> None:
    assert request(ws, {"type": "ping", "id": "alive"}) == {"type": "pong", "id": "alive"}


def close_of(ws: RawWS, timeout: float = 5.0) -> tuple[int | None, str]:
    """Read until the server ends the connection; its close code and reason."""
    frames, _ = ws.read_until_closed(timeout)
    closes = [payload for opcode, payload in frames if opcode == OP_CLOSE]
    assert closes, f"no close frame before the end: {frames!r}"
    return close_code(closes[0])


def assert_hub_serves(hub) -> None:
    """A new client connects, subscribes and receives a publication."""
    client = connect_client(hub, ["after"])
    try:
        wait_until(lambda: hub.stats()["topics"].get("after") == 1)
        hub.broadcast("after", '{"ok":true}')
        message = client.recv_json()
        assert message["topic"] == "after" and message["data"] == {"ok": True}
    finally:
        client.close()
    wait_until(lambda: "after" not in hub.stats()["topics"])


@pytest.fixture
def ws(hub, raw_ws):
    client = raw_ws(hub)
    assert read_json(client)["type"] == "connected"
    return client


# --------------------------------------------------------------------------
# frames that end the connection
# --------------------------------------------------------------------------


def test_invalid_utf8_in_text_frame_is_closed_with_1007(hub, ws):
    ws.send_frame(OP_TEXT, b'{"type":"ping","id":"\xff\xfe"}')
    assert close_of(ws) == (1007, "invalid UTF-8")
    assert_hub_serves(hub)


def test_invalid_utf8_split_across_fragments_is_closed_with_1007(hub, ws):
    euro = "€".encode()  # three bytes; only the first two are sent
    ws.sock.sendall(frame_bytes(OP_TEXT, b'{"type":"ping","id":"' + euro[:2], fin=False))
    ws.sock.sendall(frame_bytes(OP_CONT, b'"}'))
    assert close_of(ws)[0] == 1007
    assert_hub_serves(hub)


def test_utf8_char_split_across_fragments_is_accepted(hub, ws):
    euro = "€".encode()
    ws.sock.sendall(frame_bytes(OP_TEXT, b'{"type":"ping","id":"' + euro[:1], fin=False))
    ws.sock.sendall(frame_bytes(OP_CONT, euro[1:] + b'"}'))
    assert read_json(ws) == {"type": "pong", "id": "€"}


@pytest.mark.parametrize(
    "frames",
    [
        pytest.param([frame_bytes(OP_TEXT, b'{"type":"ping"}', masked=False)],
                     id="unmasked-text"),
        pytest.param([frame_bytes(OP_PING, b"", masked=False)], id="unmasked-ping"),
        pytest.param([frame_bytes(OP_CONT, b'{"type":"ping"}')],
                     id="continuation-without-start"),
        pytest.param([frame_bytes(OP_TEXT, b'{"type":', fin=False),
                      frame_bytes(OP_TEXT, b'"ping"}')],
                     id="new-text-frame-inside-fragmented-message"),
        pytest.param([frame_bytes(OP_TEXT, b'{"type":', fin=False),
                      frame_bytes(OP_BINARY, b'"ping"}')],
                     id="binary-frame-inside-fragmented-text"),
        pytest.param([frame_bytes(OP_PING, b"x", fin=False)], id="fragmented-ping"),
        pytest.param([frame_bytes(OP_PING, b"x" * 126)], id="ping-payload-over-125"),
        pytest.param([frame_bytes(OP_TEXT, b'{"type":"ping"}', rsv=4)],
                     id="rsv1-without-extension"),
        pytest.param([frame_bytes(3, b"")], id="reserved-data-opcode"),
        pytest.param([frame_bytes(0xB, b"")], id="reserved-control-opcode"),
    ],
)
def test_protocol_violation_is_closed_with_1002(hub, ws, frames):
    for frame in frames:
        ws.sock.sendall(frame)
    code, reason = close_of(ws)
    assert code == 1002, (code, reason)
    assert_hub_serves(hub)


def test_fragmented_message_over_the_size_limit_is_closed_with_1009(make_hub, raw_ws):
    hub = make_hub(max_message_bytes=1024)
    ws = raw_ws(hub)
    read_json(ws)
    for _ in range(3):  # each fragment fits, together they do not
        ws.sock.sendall(frame_bytes(OP_TEXT if _ == 0 else OP_CONT, b" " * 500, fin=False))
    assert close_of(ws)[0] == 1009
    assert_hub_serves(hub)


# --------------------------------------------------------------------------
# messages answered with an error frame; the connection stays open
# --------------------------------------------------------------------------


def test_binary_frame_gets_error_and_connection_stays_open(hub, ws):
    ws.send_frame(OP_BINARY, b'{"type":"ping"}')
    expect_error(ws, "binary_not_supported")
    assert_still_open(ws)
    assert_hub_serves(hub)


@pytest.mark.parametrize("text", ["[1,2]", '"ping"', "42", "null", "true", "", "   ",
                                  "{", '{"type":"ping"', "{'type':'ping'}"])
def test_json_that_is_not_an_object_gets_invalid_json(hub, ws, text):
    ws.send_frame(OP_TEXT, text.encode())
    expect_error(ws, "invalid_json")
    assert_still_open(ws)


@pytest.mark.parametrize("message", [
    {"type": "dance"},
    {"type": 7},
    {"type": None},
    {"type": ["ping"]},
    {"kind": "ping"},
    {"type": "PING"},
    {"type": "ping\u0000"},
])
def test_unknown_type_gets_unknown_type(hub, ws, message):
    ws.send_frame(OP_TEXT, json.dumps(message).encode())
    expect_error(ws, "unknown_type")
    assert_still_open(ws)


def test_unknown_type_error_quotes_at_most_64_chars(hub, ws):
    ws.send_frame(OP_TEXT, json.dumps({"type": "x" * 50_000}).encode())
    answer = expect_error(ws, "unknown_type")
    assert len(json.dumps(answer)) < 300, answer
    assert_still_open(ws)


@pytest.mark.parametrize("topics", ['"a"', "[1]", '["a",null]', "{}", "null"])
def test_topics_of_the_wrong_shape_get_invalid_topics(hub, ws, topics):
    ws.send_frame(OP_TEXT, f'{{"type":"subscribe","topics":{topics}}}'.encode())
    expect_error(ws, "invalid_topics")
    assert_still_open(ws)


DEEP = 100_000


@pytest.mark.parametrize("text, code", [
    pytest.param("[" * DEEP, "invalid_json", id="unclosed-arrays"),
    pytest.param('{"type":"ping","id":' + "[" * DEEP, "invalid_json", id="unclosed-id"),
    pytest.param("[" * DEEP + "]" * DEEP, "invalid_json", id="nested-arrays"),
    pytest.param('{"a":' * DEEP + "1" + "}" * DEEP, "unknown_type", id="nested-objects"),
    pytest.param('{"type":"dance","x":' + "[" * DEEP + "]" * DEEP + "}", "unknown_type",
                 id="nested-unknown-field"),
    pytest.param('{"type":' + "[" * DEEP + "]" * DEEP + "}", "unknown_type",
                 id="nested-type"),
    pytest.param('{"type":"subscribe","topics":' + "[" * DEEP + "]" * DEEP + "}",
                 "invalid_topics", id="nested-topics"),
])
def test_deeply_nested_json_is_an_error_not_a_crash(make_hub, raw_ws, text, code):
    hub = make_hub(max_message_bytes=1024 * 1024)
    ws = raw_ws(hub)
    read_json(ws)
    ws.send_frame(OP_TEXT, text.encode())
    expect_error(ws, code)
    assert_still_open(ws)
    assert_hub_serves(hub)


def test_deeply_nested_ping_id_is_echoed_not_a_crash(make_hub, raw_ws):
    """Raw values (the ping id, unknown fields) are skipped over without
    recursion, so depth is bounded only by max_message_bytes."""
    hub = make_hub(max_message_bytes=1024 * 1024)
    ws = raw_ws(hub)
    read_json(ws)
    deep = "[" * DEEP + "]" * DEEP
    ws.send_frame(OP_TEXT, ('{"type":"ping","id":' + deep + "}").encode())
    frame = ws.read_frame()
    assert frame is not None and frame[0] == OP_TEXT
    assert frame[1] == ('{"type":"pong","id":' + deep + "}").encode()
    assert_still_open(ws)
    assert_hub_serves(hub)


def assert_rejected(answer: dict, kind: str, topics: list, rejected: list,
                    reason: str = "invalid_name") -> None:
    assert answer["type"] == kind, answer
    assert answer["topics"] == topics
    assert answer["rejected"] == rejected
    # Servers that explain rejections name the reason for each.
    if "reasons" in answer:
        assert answer["reasons"] == {name: reason for name in rejected}


def test_topic_names_with_control_characters_are_rejected(hub, ws):
    bad = ["a\u0000b", "line\nbreak", "\t", "bell\u0007", "del\u007f", "nbsp\u00a0",
           "x" * 129, ""]
    answer = request(ws, {"type": "subscribe", "topics": bad + ["good"]})
    # Echoed names are cut to 128 characters (protocol.md).
    assert_rejected(answer, "subscribed", ["good"], [name[:128] for name in bad])
    assert hub.stats()["topics"] == {"good": 1}


def test_topic_names_with_control_characters_in_the_query_are_rejected(hub, raw_ws):
    ws = raw_ws(hub, query="topics=a%00b,c%0Ad,e%1Bf,ok,%7F")
    assert_rejected(read_json(ws), "connected", ["ok"],
                    ["a\u0000b", "c\nd", "e\u001bf", "\u007f"])
    assert_hub_serves(hub)


def test_raw_control_bytes_in_the_request_line_are_refused(hub):
    """Unencoded control bytes never reach the topic parser: the HTTP
    request is refused and nothing is subscribed."""
    sock = socket.create_connection(("127.0.0.1", hub.port), timeout=5)
    try:
        sock.sendall(
            b"GET /api/ws?topics=a\x01b HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n")
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    except ConnectionResetError:
        answer = b""
    finally:
        sock.close()
    assert not answer.startswith(b"HTTP/1.1 101"), answer
    assert hub.stats()["connections_opened"] == 0
    assert_hub_serves(hub)


def subscribe_ten_thousand(ws: RawWS) -> tuple[list[str], dict, float]:
    names = [f"t{i}" for i in range(10_000)]
    text = json.dumps({"type": "subscribe", "topics": names}).encode()
    assert len(text) < 1024 * 1024
    started = time.monotonic()
    answer = request(ws, text)
    return names, answer, time.monotonic() - started


def test_ten_thousand_topics_in_one_subscribe_are_answered(make_hub, raw_ws):
    hub = make_hub(max_message_bytes=1024 * 1024, max_topics_per_connection=10_000)
    ws = raw_ws(hub)
    read_json(ws)
    names, answer, took = subscribe_ten_thousand(ws)
    assert took < 5
    assert_rejected(answer, "subscribed", sorted(names), [])
    assert len(hub.stats()["topics"]) == 10_000
    assert hub.broadcast("t9999", "1") == 1
    assert read_json(ws)["topic"] == "t9999"
    answer = request(ws, {"type": "unsubscribe", "topics": names})
    assert answer == {"type": "unsubscribed", "topics": []}
    assert hub.stats()["topics"] == {}
    assert_hub_serves(hub)


def test_topics_per_connection_are_bounded_by_default(make_hub, raw_ws):
    hub = make_hub(max_message_bytes=1024 * 1024)
    ws = raw_ws(hub)
    read_json(ws)
    names, answer, took = subscribe_ten_thousand(ws)
    assert took < 5
    limit = 1024  # the documented default of max_topics_per_connection
    # The answer lists the first 16 rejected names and counts them all.
    assert_rejected(answer, "subscribed", sorted(names[:limit]), names[limit:limit + 16],
                    reason="too_many_topics")
    assert answer["rejected_count"] == len(names) - limit
    # A second list cannot add more.
    answer = request(ws, {"type": "subscribe", "topics": ["more"]})
    assert_rejected(answer, "subscribed", sorted(names[:limit]), ["more"],
                    reason="too_many_topics")
    assert len(hub.stats()["topics"]) == limit
    assert_hub_serves(hub)


def test_subscribe_list_over_max_message_bytes_is_closed_with_1009(hub, raw_ws):
    ws = raw_ws(hub)
    read_json(ws)
    names = [f"topic{i}" for i in range(10_000)]  # ~120 kB > 64 kB default
    ws.send_frame(OP_TEXT, json.dumps({"type": "subscribe", "topics": names}).encode())
    assert close_of(ws)[0] == 1009
    assert hub.stats()["topics"] == {}
    assert_hub_serves(hub)


def test_subscribe_flood_is_rate_limited_then_closed_with_1008(make_hub, raw_ws):
    burst = 20
    # A token every 10 s: none comes back while the flood is sent.
    hub = make_hub(rate_limit=0.1, rate_burst=burst)
    ws = raw_ws(hub)
    read_json(ws)
    # burst allowed + burst refused + the one that closes: nothing is left
    # unread on the server side, so it closes cleanly instead of resetting.
    flood = b"".join(
        frame_bytes(OP_TEXT, json.dumps({"type": "subscribe", "topics": [f"f{i}"]}).encode())
        for i in range(2 * burst + 1))
    ws.sock.sendall(flood)
    frames, _ = ws.read_until_closed(10)
    texts = [json.loads(p) for op, p in frames if op == OP_TEXT]
    kinds = [t["type"] if t["type"] != "error" else t["error"] for t in texts]
    assert kinds == ["subscribed"] * burst + ["rate_limited"] * burst, kinds
    closes = [close_code(p) for op, p in frames if op == OP_CLOSE]
    assert closes == [(1008, "rate limit exceeded")]
    wait_until(lambda: hub.stats()["connections"] == 0)
    assert hub.stats()["topics"] == {}
    assert_hub_serves(hub)


def test_pongs_and_unsolicited_pongs_are_not_rate_limited(make_hub, raw_ws):
    hub = make_hub(rate_limit=0.1, rate_burst=2)
    ws = raw_ws(hub)
    read_json(ws)
    for _ in range(20):
        ws.send_frame(OP_PONG, b"")
    assert request(ws, {"type": "ping", "id": 1}) == {"type": "pong", "id": 1}


def test_ping_frames_count_against_the_rate_limit(make_hub, raw_ws):
    """WebSocket pings are answered by the protocol layer but still cost a
    token, so a ping flood is closed like any other flood."""
    hub = make_hub(rate_limit=0.1, rate_burst=3)
    ws = raw_ws(hub)
    read_json(ws)
    for _ in range(7):
        ws.send_frame(OP_PING, b"p")
    frames, _ = ws.read_until_closed(10)
    closes = [close_code(p) for op, p in frames if op == OP_CLOSE]
    assert closes == [(1008, "rate limit exceeded")], frames
    assert_hub_serves(hub)


def test_many_bad_clients_at_once_do_not_disturb_a_good_one(hub, raw_ws):
    good = connect_client(hub, ["g"])
    try:
        bad = [raw_ws(hub) for _ in range(20)]
        for i, ws in enumerate(bad):
            read_json(ws)
            payload = [b"\xff", b"[[[[", b"\x00"][i % 3]
            ws.send_frame(OP_TEXT if i % 2 else OP_BINARY, payload)
        for i in range(50):
            hub.broadcast("g", str(i))
        assert [m["data"] for m in good.recv_messages(50)] == list(range(50))
    finally:
        good.close()
