"""Topic streams: a client that lost its connection recovers exactly what
it missed (docs/protocol.md, "Recovering after a reconnect").

Every test uses real clients over real sockets: a client reads until it has
seen some publications, drops its connection, the host publishes more, and
the client reconnects with the epoch and seq it had, in the handshake's
query or in a `subscribe` message.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse

import pytest

from helpers import RawWS, connect_client, wait_until


def since(topic: str, position: dict) -> str:
    return f"{topic}:{position['seq']}:{position['epoch']}"


def publish(hub, topic: str, first: int, last: int) -> None:
    for n in range(first, last + 1):
        hub.broadcast(topic, json.dumps({"n": n}))


def received_numbers(client, count: int) -> list[tuple[int, int]]:
    return [(m["seq"], m["data"]["n"]) for m in client.recv_messages(count)]


def test_answers_tell_each_topics_epoch_and_newest_seq(make_hub):
    hub = make_hub()
    first = connect_client(hub, ["odds", "news"])
    stream = first.streams
    assert set(stream) == {"odds", "news"}
    assert stream["odds"]["seq"] == 0 and stream["news"]["seq"] == 0
    assert stream["odds"]["epoch"] != stream["news"]["epoch"]
    assert "recovered" not in first.ack
    assert "streams" not in first.ack  # taken out by the helper
    publish(hub, "odds", 1, 3)
    received_numbers(first, 3)
    second = connect_client(hub, ["odds"])
    assert second.streams["odds"] == {"epoch": stream["odds"]["epoch"], "seq": 3}
    assert hub.stream("odds") == (stream["odds"]["epoch"], 3)
    assert hub.stream("never-seen") is None
    second.subscribe(["news"])
    assert second.last_streams == {"news": stream["news"]}
    for client in (first, second):
        client.close()


@pytest.mark.parametrize("how", ["query", "message"])
def test_a_reconnecting_client_gets_exactly_what_it_missed_then_live(make_hub, how):
    hub = make_hub()
    client = connect_client(hub, ["odds"])
    epoch = client.streams["odds"]["epoch"]
    publish(hub, "odds", 1, 10)
    assert received_numbers(client, 10)[-1] == (10, 10)
    client.close()
    # Nobody is subscribed now: the topic stays for its history, and what
    # is published meanwhile is numbered and kept. (A topic that never had
    # a publication keeps no history, and is forgotten like before.)
    wait_until(lambda: hub.stats()["connections"] == 0)
    publish(hub, "odds", 11, 40)
    position = {"seq": 10, "epoch": epoch}
    if how == "query":
        back = connect_client(hub, query=f"topics=odds&since={since('odds', position)}")
        answer = back.ack
    else:
        back = connect_client(hub, [])
        back.send_json({"type": "subscribe", "topics": ["odds"], "since": {"odds": position}})
        answer = back.recv_json()
        assert answer["type"] == "subscribed", answer
    assert answer["recovered"] == {"odds": True}
    assert back.last_streams["odds"] == {"epoch": epoch, "seq": 40}
    publish(hub, "odds", 41, 45)
    got = received_numbers(back, 35)
    assert got == [(seq, seq) for seq in range(11, 46)]
    back.close()


def test_publications_racing_the_recovery_arrive_once_and_in_order(make_hub):
    hub = make_hub()
    client = connect_client(hub, ["odds"])
    epoch = client.streams["odds"]["epoch"]
    publish(hub, "odds", 1, 5)
    received_numbers(client, 5)
    client.close()
    wait_until(lambda: hub.stats()["connections"] == 0)
    stop = threading.Event()
    published = [5]

    def keep_publishing():
        # Paced (not a synchronisation), and at most 900 in all: the whole
        # backlog must fit in the history and the client's queue.
        while not stop.is_set() and published[0] < 900:
            published[0] += 1
            hub.broadcast("odds", json.dumps({"n": published[0]}))
            time.sleep(0.0005)

    publisher = threading.Thread(target=keep_publishing)
    publisher.start()
    try:
        wait_until(lambda: published[0] > 100)
        back = connect_client(hub, query=f"topics=odds&since=odds:5:{epoch}")
        assert back.ack["recovered"] == {"odds": True}
    finally:
        stop.set()
        publisher.join()
    last = published[0]
    got = [seq for seq, _ in received_numbers(back, last - 5)]
    assert got == list(range(6, last + 1))
    back.close()


def test_recovery_fails_for_a_wrong_epoch_a_gap_older_than_the_history_or_a_future_seq(make_hub):
    hub = make_hub(history_size=8)
    client = connect_client(hub, ["odds"])
    epoch = client.streams["odds"]["epoch"]
    publish(hub, "odds", 1, 30)
    received_numbers(client, 30)
    for position in ({"seq": 10, "epoch": epoch},        # older than the 8 kept
                     {"seq": 25, "epoch": "0000dead1"},  # another numbering
                     {"seq": 10**6, "epoch": epoch}):    # never published
        back = connect_client(hub, [])
        answer = back.request({"type": "subscribe", "topics": ["odds"],
                               "since": {"odds": position}})
        assert answer["recovered"] == {"odds": False}, (position, answer)
        # It goes on live, and knows to reload.
        hub.broadcast("odds", '{"n":0}')
        assert back.recv_json()["type"] == "message"
        received_numbers(client, 1)
        back.close()
    # Within what is kept, the same subscribe recovers.
    newest = hub.stream("odds")[1]
    back = connect_client(hub, [])
    answer = back.request({"type": "subscribe", "topics": ["odds"],
                           "since": {"odds": {"seq": newest - 8, "epoch": epoch}}})
    assert answer["recovered"] == {"odds": True}
    assert [m["seq"] for m in back.recv_messages(8)] == list(range(newest - 7, newest + 1))
    back.close()
    client.close()


def test_a_restarted_hub_has_new_epochs(make_hub):
    hub = make_hub()
    client = connect_client(hub, ["odds"])
    epoch = client.streams["odds"]["epoch"]
    publish(hub, "odds", 1, 3)
    received_numbers(client, 3)
    client.close()
    port = hub.port
    hub.stop()
    again = make_hub(port=port)
    back = connect_client(again, query=f"topics=odds&since=odds:3:{epoch}")
    assert back.ack["recovered"] == {"odds": False}
    assert back.streams["odds"]["epoch"] != epoch
    back.close()


def test_no_history_keeps_nothing_and_forgets_the_topic(make_hub):
    hub = make_hub(history_size=0)
    client = connect_client(hub, ["odds"])
    epoch = client.streams["odds"]["epoch"]
    publish(hub, "odds", 1, 3)
    received_numbers(client, 3)
    client.close()
    wait_until(lambda: hub.stream("odds") is None)
    back = connect_client(hub, query=f"topics=odds&since=odds:3:{epoch}")
    assert back.ack["recovered"] == {"odds": False}
    assert back.streams["odds"]["seq"] == 0
    back.close()


def test_history_ttl_expires_what_nobody_came_back_for(make_hub):
    hub = make_hub(history_ttl=0.3)
    client = connect_client(hub, ["odds"])
    publish(hub, "odds", 1, 3)
    received_numbers(client, 3)
    frame = len('{"type":"message","topic":"odds","seq":1,"data":{"n": 1}}') + 2
    assert hub.stats()["history_bytes"] == 3 * frame
    client.close()
    # The idle topic's history expires, and the topic with it.
    wait_until(lambda: hub.stream("odds") is None, timeout=10)
    assert hub.stats()["history_bytes"] == 0


def test_a_recovery_larger_than_the_clients_queue_is_refused_not_a_close(make_hub):
    hub = make_hub(send_queue=16)
    client = connect_client(hub, ["odds"])
    epoch = client.streams["odds"]["epoch"]
    publish(hub, "odds", 1, 1)
    received_numbers(client, 1)
    client.close()
    wait_until(lambda: hub.stats()["connections"] == 0)
    publish(hub, "odds", 2, 100)
    back = connect_client(hub, query=f"topics=odds&since=odds:1:{epoch}")
    assert back.ack["recovered"] == {"odds": False}
    hub.broadcast("odds", '{"n":101}')
    assert back.recv_json()["seq"] == 101
    back.ping()
    back.close()
    # Within the queue it does recover.
    back = connect_client(hub, query=f"topics=odds&since=odds:95:{epoch}")
    assert back.ack["recovered"] == {"odds": True}
    assert [m["seq"] for m in back.recv_messages(6)] == list(range(96, 102))
    back.close()


@pytest.mark.parametrize("bad_since", [
    "[]", '"odds"', '{"odds": 3}', '{"odds": {"seq": -1, "epoch": "e"}}',
    '{"odds": {"seq": 1}}', '{"odds": {"seq": 1, "epoch": 5}}',
    '{"other": {"seq": 1, "epoch": "e"}}',
    '{"odds": {"seq": 1, "epoch": "e", "extra": 1}}',
    '{"odds": {"seq": 1, "epoch": "' + "e" * 65 + '"}}',
])
def test_a_bad_since_in_subscribe_is_an_error_frame_and_subscribes_nothing(hub, bad_since):
    client = connect_client(hub, [])
    answer = client.request('{"type":"subscribe","topics":["odds"],"since":' + bad_since + '}')
    assert answer["type"] == "error" and answer["error"] == "invalid_since", answer
    assert hub.stats()["topics"] == {}
    client.ping()
    client.close()


def test_bad_since_items_in_the_query_are_reported_and_the_rest_works(make_hub):
    hub = make_hub()
    client = connect_client(hub, ["odds"])
    epoch = client.streams["odds"]["epoch"]
    publish(hub, "odds", 1, 2)
    received_numbers(client, 2)
    client.close()
    wait_until(lambda: hub.stats()["connections"] == 0)
    items = ["odds:1:" + epoch, "junk", "news:x:e", "ghost:1:e", "odds:1:" + epoch]
    query = "topics=odds,news&since=" + urllib.parse.quote(",".join(items), safe=",:")
    back = connect_client(hub, query=query)
    assert back.ack["recovered"] == {"odds": True}
    error = back.recv_json()
    assert error["type"] == "error" and error["error"] == "invalid_since", error
    assert "4 item(s)" in error["message"], error
    assert [m["seq"] for m in back.recv_messages(1)] == [2]
    back.close()


def test_raw_clients_see_the_answer_then_the_missed_frames(make_hub):
    # Byte-level: the recovered publications are the frames the live ones
    # were, in order, right after the answer.
    hub = make_hub()
    client = connect_client(hub, ["t"])
    epoch = client.streams["t"]["epoch"]
    publish(hub, "t", 1, 1)
    received_numbers(client, 1)
    client.close()
    wait_until(lambda: hub.stats()["connections"] == 0)
    publish(hub, "t", 2, 3)
    raw = RawWS(hub.port, query=f"topics=t&since=t:1:{epoch}")
    answer = json.loads(raw.read_frame()[1])
    assert answer["recovered"] == {"t": True}
    assert raw.read_frame()[1] == b'{"type":"message","topic":"t","seq":2,"data":{"n": 2}}'
    assert raw.read_frame()[1] == b'{"type":"message","topic":"t","seq":3,"data":{"n": 3}}'
    raw.close()
