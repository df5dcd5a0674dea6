"""Wire protocol v1, line by line from docs/protocol.md."""

from __future__ import annotations

import json

import pytest
import websockets

from helpers import open_ws, publication, wait_until

# --------------------------------------------------------------------------
# Connecting
# --------------------------------------------------------------------------


def test_ack_is_first_frame_with_sorted_topics_and_empty_rejected(hub, connect):
    client = connect(hub, ["scrape_progress", "odds_updates", "b"])
    assert client.ack == {
        "type": "connected",
        "topics": ["b", "odds_updates", "scrape_progress"],
        "rejected": [],
    }


def test_ack_frame_is_a_text_frame_holding_one_json_object(hub):
    with open_ws(hub.port, ["a"]) as ws:
        frame = ws.recv(timeout=5)
    assert isinstance(frame, str)
    ack = json.loads(frame)
    epoch = ack["streams"]["a"]["epoch"]
    assert isinstance(epoch, str) and 0 < len(epoch) <= 64
    assert ack == {"type": "connected", "topics": ["a"], "rejected": [],
                   "streams": {"a": {"epoch": epoch, "seq": 0}}}


def test_empty_items_in_topics_query_are_ignored(hub, connect):
    client = connect(hub, query="topics=,a,,b,")
    assert client.ack == {"type": "connected", "topics": ["a", "b"], "rejected": []}


def test_empty_topics_query_without_allow_list_subscribes_nothing(hub, connect):
    client = connect(hub, query="topics=")
    assert client.ack == {"type": "connected", "topics": [], "rejected": []}


def test_invalid_topic_names_are_rejected_in_request_order(hub, connect):
    too_long = "x" * 129
    client = connect(hub, query=f"topics=zz,bad!name,{too_long},ok,x*y")
    assert client.ack == {
        "type": "connected",
        "topics": ["ok", "zz"],
        # echoed names are cut to 128 characters
        "rejected": ["bad!name", too_long[:128], "x*y"],
        "reasons": {"bad!name": "invalid_name", too_long[:128]: "invalid_name",
                    "x*y": "invalid_name"},
    }


def test_topic_name_alphabet_and_max_length_are_accepted(hub, connect):
    longest = "y" * 128
    name = "Aa0_.:-z"
    client = connect(hub, [name, longest])
    assert client.ack == {
        "type": "connected", "topics": sorted([name, longest]), "rejected": []}
    assert hub.broadcast(name, "1") == 1
    assert client.recv_text() == publication(name, 1, "1")


def test_rejected_topic_is_never_subscribed(hub, connect):
    client = connect(hub, ["bad!name", "good"])
    assert client.ack["rejected"] == ["bad!name"]
    # the hub's own view agrees: only "good" has a subscriber
    wait_until(lambda: hub.stats()["topics"] == {"good": 1},
               message=lambda: f"stats: {hub.stats()}")


def test_no_query_without_allow_list_starts_with_no_subscriptions(hub, connect):
    client = connect(hub)
    assert client.ack == {"type": "connected", "topics": [], "rejected": []}
    # ... and it can subscribe later
    assert client.subscribe(["a"]) == {
        "type": "subscribed", "topics": ["a"], "rejected": []}
    assert hub.broadcast("a", '{"x":1}') == 1
    assert client.recv_text() == publication("a", 1, '{"x":1}')


def test_allow_list_rejects_names_not_on_the_list(make_hub, connect):
    hub = make_hub(topics=["alpha", "beta", "gamma"])
    client = connect(hub, ["gamma", "delta", "alpha"])
    assert client.ack == {
        "type": "connected", "topics": ["alpha", "gamma"], "rejected": ["delta"],
        "reasons": {"delta": "not_allowed"}}


def test_allow_list_without_any_allowed_name_subscribes_to_every_allowed_topic(
        make_hub, connect):
    hub = make_hub(topics=["gamma", "alpha", "beta"])
    client = connect(hub, ["delta", "bad!name"])
    assert client.ack == {
        "type": "connected",
        "topics": ["alpha", "beta", "gamma"],
        "rejected": ["delta", "bad!name"],
        "reasons": {"delta": "not_allowed", "bad!name": "invalid_name"},
    }


def test_allow_list_without_topics_query_subscribes_to_every_allowed_topic(
        make_hub, connect):
    hub = make_hub(topics=["gamma", "alpha", "beta"])
    client = connect(hub)
    assert client.ack == {
        "type": "connected", "topics": ["alpha", "beta", "gamma"], "rejected": []}
    for i, topic in enumerate(["alpha", "beta", "gamma"]):
        assert hub.broadcast(topic, str(i)) == 1
        assert client.recv_text() == publication(topic, 1, str(i))


def test_allow_list_with_empty_topics_query_subscribes_to_every_allowed_topic(
        make_hub, connect):
    hub = make_hub(topics=["b", "a"])
    client = connect(hub, query="topics=")
    assert client.ack == {"type": "connected", "topics": ["a", "b"], "rejected": []}


def test_allow_list_subscribe_message_rejects_names_not_on_the_list(make_hub, connect):
    hub = make_hub(topics=["a", "b"])
    client = connect(hub, ["a"])
    assert client.subscribe(["c", "b"]) == {
        "type": "subscribed", "topics": ["a", "b"], "rejected": ["c"],
        "reasons": {"c": "not_allowed"}}


def test_wrong_path_is_answered_with_http_404(hub):
    with pytest.raises(websockets.InvalidStatus) as info:
        open_ws(hub.port, ["a"], path="/nope")
    assert info.value.response.status_code == 404
    with pytest.raises(websockets.InvalidStatus) as info:
        open_ws(hub.port, ["a"], path="/api/ws/extra")
    assert info.value.response.status_code == 404
    # nothing was opened
    assert hub.stats()["connections"] == 0


def test_custom_path_option_is_the_only_path_that_upgrades(make_hub, connect):
    hub = make_hub(path="/feed")
    client = connect(hub, ["a"], path="/feed")
    assert client.ack["topics"] == ["a"]
    with pytest.raises(websockets.InvalidStatus) as info:
        open_ws(hub.port, ["a"], path="/api/ws")
    assert info.value.response.status_code == 404


def test_permessage_deflate_is_never_negotiated(hub, connect):
    # websockets offers permessage-deflate by default; the server must decline.
    client = connect(hub, ["a"], compression="deflate")
    assert client.ws.response.headers.get("Sec-WebSocket-Extensions") is None


# --------------------------------------------------------------------------
# Publications
# --------------------------------------------------------------------------


def test_publication_frame_is_byte_exact(hub, connect):
    client = connect(hub, ["t"])
    assert hub.broadcast("t", '{"a":1}') == 1
    assert client.recv_text() == '{"type":"message","topic":"t","seq":1,"data":{"a":1}}'


def test_publication_data_is_passed_byte_for_byte(hub, connect):
    client = connect(hub, ["t"])
    payloads = [
        '{ "a" : [1, 2 ,3],\n\t"b":{} }',
        '{"s":"h\u00e9llo \u2603","e":"\\u00e9\\n"}',
        '{"f":1.850,"big":123456789012345678901234567890,"exp":1E+2}',
        "42",
        '"just a string"',
        "[1, 2, 3]",
        "null",
        "true",
        '{"k":1,"k":2}',
    ]
    for data in payloads:
        hub.broadcast("t", data)
    for seq, data in enumerate(payloads, start=1):
        assert client.recv_text() == publication("t", seq, data)


def test_large_publication_is_delivered_intact(hub, connect):
    client = connect(hub, ["t"])
    data = json.dumps({"blob": "x" * 100_000, "n": list(range(1000))})
    assert len(data) > 64 * 1024  # bigger than the default inbound limit too
    hub.broadcast("t", data)
    assert client.recv_text(timeout=10) == publication("t", 1, data)


def test_seq_counts_per_topic_from_one(hub, connect):
    client = connect(hub, ["a", "b"])
    for topic in ["a", "a", "b", "a", "b"]:
        hub.broadcast(topic, "{}")
    received = [(m["topic"], m["seq"]) for m in client.recv_messages(5)]
    assert received == [("a", 1), ("a", 2), ("b", 1), ("a", 3), ("b", 2)]


def test_seq_does_not_count_publications_without_subscribers(hub, connect):
    # A topic nobody is subscribed to is not held by the hub, so what is
    # published on it is not numbered (protocol.md).
    assert hub.broadcast("t", "1") == 0
    assert hub.broadcast("t", "2") == 0
    client = connect(hub, ["t"])
    assert hub.broadcast("t", "3") == 1
    assert client.recv_text() == publication("t", 1, "3")


def test_publications_only_reach_subscribers_of_their_topic(hub, connect):
    a = connect(hub, ["a"])
    b = connect(hub, ["b"])
    hub.broadcast("a", '"for a"')
    hub.broadcast("b", '"for b"')
    assert a.recv_text() == publication("a", 1, '"for a"')
    assert b.recv_text() == publication("b", 1, '"for b"')
    # fence: the next thing each sees is its own next publication
    hub.broadcast("b", '"b2"')
    hub.broadcast("a", '"a2"')
    assert a.recv_text() == publication("a", 2, '"a2"')
    assert b.recv_text() == publication("b", 2, '"b2"')


# --------------------------------------------------------------------------
# Client -> server requests
# --------------------------------------------------------------------------


def test_ping_without_id_gets_pong_without_id(hub, connect):
    client = connect(hub)
    assert client.request({"type": "ping"}) == {"type": "pong"}


@pytest.mark.parametrize("id_", [
    1, 0, -7, 1.5, "abc", "", None, True, False, [1, {"x": [2]}], {"nested": {"a": None}},
    12345678901234567890123,
], ids=repr)
def test_ping_id_is_echoed_for_any_json_value(hub, connect, id_):
    client = connect(hub)
    assert client.request({"type": "ping", "id": id_}) == {"type": "pong", "id": id_}


def test_ping_id_is_echoed_verbatim(hub, connect):
    client = connect(hub)
    client.send_text('{"type":"ping","id":{"b":1,"a":[1.50,"\\u00e9"]}}')
    assert client.recv_text() == '{"type":"pong","id":{"b":1,"a":[1.50,"\\u00e9"]}}'


def test_ping_ignores_unrelated_fields(hub, connect):
    client = connect(hub)
    assert client.request({"type": "ping", "id": 3, "extra": [1]}) == {
        "type": "pong", "id": 3}


def test_subscribe_answers_all_current_topics_sorted_and_rejected(hub, connect):
    client = connect(hub, ["m"])
    assert client.subscribe(["z", "bad!name", "a", "m"]) == {
        "type": "subscribed", "topics": ["a", "m", "z"], "rejected": ["bad!name"],
        "reasons": {"bad!name": "invalid_name"}}


def test_subscribe_with_empty_list_reports_current_topics(hub, connect):
    client = connect(hub, ["b", "a"])
    assert client.subscribe([]) == {
        "type": "subscribed", "topics": ["a", "b"], "rejected": []}


def test_subscribe_starts_delivery_once_answered(hub, connect):
    client = connect(hub, ["other"])
    # not subscribed yet: queued for nobody, never delivered
    assert hub.broadcast("t", '"before"') == 0
    assert client.subscribe(["t"])["topics"] == ["other", "t"]
    assert hub.broadcast("t", '"after"') == 1
    assert client.recv_text() == publication("t", 1, '"after"')


def test_unsubscribe_answers_remaining_topics_sorted(hub, connect):
    client = connect(hub, ["c", "a", "b"])
    assert client.unsubscribe(["b"]) == {"type": "unsubscribed", "topics": ["a", "c"]}


def test_unsubscribe_from_topic_not_subscribed_is_not_an_error(hub, connect):
    client = connect(hub, ["a"])
    assert client.unsubscribe(["zzz", "bad!name"]) == {
        "type": "unsubscribed", "topics": ["a"]}


def test_unsubscribe_stops_delivery_once_answered(hub, connect):
    client = connect(hub, ["a", "b"])
    hub.broadcast("a", "1")
    assert client.recv_text() == publication("a", 1, "1")
    assert client.unsubscribe(["a"]) == {"type": "unsubscribed", "topics": ["b"]}
    assert hub.broadcast("a", "2") == 0
    hub.broadcast("b", "3")  # fence
    assert client.recv_text() == publication("b", 1, "3")
    wait_until(lambda: hub.stats()["topics"] == {"b": 1},
               message=lambda: f"stats: {hub.stats()}")


def test_publication_made_while_unsubscribed_is_never_delivered(make_hub, connect):
    # A publication made while the client was unsubscribed (broadcast()
    # returned 0) is never delivered, even if the client subscribes again
    # right after. (The topic had no subscriber then, so it was forgotten
    # and its seq restarts: data tells the publications apart.) The failure mode (fan-out running
    # after the re-subscription) is timing dependent, so the hub is kept
    # busy with traffic on another topic and the cycle is repeated.
    hub = make_hub(send_queue=1_000_000)
    sinks = [connect(hub, ["busy"]) for _ in range(5)]
    client = connect(hub, ["a"])
    seq = 0
    for _ in range(30):
        seq += 1
        assert hub.broadcast("a", str(seq)) == 1
        assert client.recv_json()["data"] == seq
        assert client.unsubscribe(["a"]) == {"type": "unsubscribed", "topics": []}
        for _ in range(200):
            hub.broadcast("busy", "0")
        seq += 1
        assert hub.broadcast("a", str(seq)) == 0
        assert client.subscribe(["a"])["topics"] == ["a"]
        seq += 1
        assert hub.broadcast("a", str(seq)) == 1
        assert client.recv_json()["data"] == seq, \
            f"publication {seq - 1}, made while unsubscribed, was delivered"
    assert len(sinks[0].recv_messages(30 * 200, timeout=20)) == 30 * 200


# --------------------------------------------------------------------------
# Errors: answered with an error frame, connection stays open
# --------------------------------------------------------------------------


def assert_error(frame: dict, code: str) -> None:
    assert frame["type"] == "error", frame
    assert frame["error"] == code, frame
    assert isinstance(frame.get("message"), str), frame
    assert set(frame) == {"type", "error", "message"}, frame


@pytest.mark.parametrize("text", [
    "not json", "{", '{"type":"ping"', "", "   ", "{'type':'ping'}",
], ids=repr)
def test_invalid_json_is_answered_with_invalid_json_error(hub, connect, text):
    client = connect(hub)
    assert_error(client.request(text), "invalid_json")
    client.ping(1)


@pytest.mark.parametrize("text", [
    "[1,2]", '[{"type":"ping"}]', "42", '"ping"', "null", "true",
], ids=repr)
def test_json_that_is_not_an_object_is_answered_with_invalid_json_error(
        hub, connect, text):
    client = connect(hub)
    assert_error(client.request(text), "invalid_json")
    client.ping(1)


@pytest.mark.parametrize("msg", [
    {}, {"id": 1}, {"type": 5}, {"type": None}, {"type": ["ping"]}, {"type": {"x": 1}},
], ids=repr)
def test_message_without_string_type_is_answered_with_unknown_type_error(
        hub, connect, msg):
    client = connect(hub)
    assert_error(client.request(msg), "unknown_type")
    client.ping(1)


@pytest.mark.parametrize("kind", ["publish", "Ping", "connected", "pong", ""])
def test_unknown_type_is_answered_with_unknown_type_error(hub, connect, kind):
    client = connect(hub)
    assert_error(client.request({"type": kind, "topics": ["a"]}), "unknown_type")
    client.ping(1)


@pytest.mark.parametrize("kind", ["subscribe", "unsubscribe"])
@pytest.mark.parametrize("extra", [
    {}, {"topics": None}, {"topics": "a"}, {"topics": {"a": 1}}, {"topics": 3},
    {"topics": [1]}, {"topics": ["a", None]}, {"topics": ["a", ["b"]]},
], ids=lambda e: json.dumps(e))
def test_bad_topics_field_is_answered_with_invalid_topics_error(
        hub, connect, kind, extra):
    client = connect(hub, ["keep"])
    assert_error(client.request({"type": kind, **extra}), "invalid_topics")
    client.ping(1)
    # the failed request changed nothing
    assert client.subscribe([]) == {
        "type": "subscribed", "topics": ["keep"], "rejected": []}


def test_binary_frame_is_answered_with_binary_not_supported_error(hub, connect):
    client = connect(hub, ["a"])
    assert_error(client.request(b'{"type":"ping"}'), "binary_not_supported")
    client.ping(1)
    assert_error(client.request(b"\x00\xff"), "binary_not_supported")
    client.ping(2)


def test_connection_keeps_working_after_every_kind_of_error(hub, connect):
    client = connect(hub, ["a"])
    for bad, code in [
        ("nope", "invalid_json"),
        ("[]", "invalid_json"),
        ({"type": "dance"}, "unknown_type"),
        ({"type": "subscribe"}, "invalid_topics"),
        (b"\x01", "binary_not_supported"),
    ]:
        assert_error(client.request(bad), code)
    client.ping("still here")
    assert client.subscribe(["b"])["topics"] == ["a", "b"]
    hub.broadcast("b", "7")
    assert client.recv_text() == publication("b", 1, "7")


def test_websocket_ping_from_client_is_answered_with_pong(hub, connect):
    client = connect(hub)
    pong = client.ws.ping(b"hello")
    assert pong.wait(timeout=5), "no pong for the client's WebSocket ping"
    client.ping()
