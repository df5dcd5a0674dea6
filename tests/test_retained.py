"""Retained values: `broadcast(..., retain=True)` keeps the newest
publication per (topic, key), and a client that subscribes later receives
those values right after its answer, flagged `"retained": true`, then live
publications (docs/protocol.md, "Retained values").

Real hubs, real clients over real sockets.
"""

from __future__ import annotations

import json
import random
import threading
import urllib.request

import pytest

from helpers import connect_client, wait_until


def data_of(messages: list[dict]) -> list:
    return [m["data"] for m in messages]


def test_a_new_subscriber_gets_the_values_after_its_answer_then_live(make_hub):
    hub = make_hub()
    # Nobody is subscribed yet: the values are kept for whoever comes.
    hub.broadcast("odds", {"m": 1, "p": 1.5}, key=1, retain=True)
    hub.broadcast("odds", {"m": 2, "p": 2.0}, key=2, retain=True)
    hub.broadcast("odds", {"m": 1, "p": 1.6}, key=1, retain=True)
    hub.broadcast("odds", {"m": 3, "p": 9.0}, key=3)  # not retained
    wait_until(lambda: hub.stats()["retained_values"] == 2)
    client = connect_client(hub, ["odds"])
    assert client.ack["topics"] == ["odds"]
    assert client.streams["odds"]["seq"] == 4
    retained = client.recv_messages(2)
    assert [m["retained"] for m in retained] == [True, True]
    # Oldest first, each the newest of its key.
    assert data_of(retained) == [{"m": 2, "p": 2.0}, {"m": 1, "p": 1.6}]
    assert [m["seq"] for m in retained] == [2, 3]
    hub.broadcast("odds", {"m": 2, "p": 2.1}, key=2, retain=True)
    live = client.recv_messages(1)[0]
    assert "retained" not in live and live["seq"] == 5
    # A subscribe message gets them too, after its `subscribed` answer.
    other = connect_client(hub, [])
    answer = other.subscribe(["odds"])
    assert answer["type"] == "subscribed" and answer["topics"] == ["odds"]
    assert data_of(other.recv_messages(2)) == [{"m": 1, "p": 1.6}, {"m": 2, "p": 2.1}]
    other.ping()  # nothing else was queued
    stats = hub.stats()
    assert stats["retained_values"] == 2 and stats["retained_bytes"] > 0
    for c in (client, other):
        c.close()


def test_a_keyless_value_is_the_topics_one_value(make_hub):
    hub = make_hub()
    hub.broadcast("status", {"state": "starting"}, retain=True)
    hub.broadcast("status", {"state": "running"}, retain=True)
    wait_until(lambda: hub.stats()["retained_values"] == 1)
    client = connect_client(hub, ["status"])
    [value] = client.recv_messages(1)
    assert value["data"] == {"state": "running"} and value["retained"] is True
    client.ping()
    client.close()


def test_clear_retained_forgets_one_key_or_all_in_order(make_hub):
    hub = make_hub()
    for key in ("a", "b", "c"):
        hub.broadcast("t", {"k": key}, key=key, retain=True)
    # In order with the publications before and after it.
    hub.clear_retained("t", key="b")
    hub.broadcast("t", {"k": "b", "v": 2}, key="b", retain=True)
    hub.clear_retained("t", key="a")
    wait_until(lambda: hub.stats()["retained_values"] == 2)
    client = connect_client(hub, ["t"])
    assert data_of(client.recv_messages(2)) == [{"k": "c"}, {"k": "b", "v": 2}]
    client.close()
    hub.clear_retained("t")
    wait_until(lambda: hub.stats()["retained_values"] == 0)
    assert hub.stats()["retained_bytes"] == 0
    later = connect_client(hub, ["t"])
    later.ping()  # no retained frame came first
    later.close()
    # Clearing what is not there is no error; a bad name is.
    hub.clear_retained("never-seen", key="x")
    with pytest.raises(ValueError, match="invalid topic"):
        hub.clear_retained("bad topic")


def test_a_recovered_client_gets_what_it_missed_and_a_lost_one_the_values(make_hub):
    hub = make_hub()
    client = connect_client(hub, ["odds"])
    epoch = client.streams["odds"]["epoch"]
    for n in range(1, 6):
        hub.broadcast("odds", {"n": n}, key=n % 2, retain=True)
    assert [m["seq"] for m in client.recv_messages(5)] == [1, 2, 3, 4, 5]
    client.close()
    wait_until(lambda: hub.stats()["connections"] == 0)
    hub.broadcast("odds", {"n": 6}, key=0, retain=True)
    # Recovered: exactly what it missed, not the retained values.
    back = connect_client(hub, query=f"topics=odds&since=odds:5:{epoch}")
    assert back.ack["recovered"] == {"odds": True}
    [missed] = back.recv_messages(1)
    assert missed["seq"] == 6 and "retained" not in missed
    back.ping()
    back.close()
    # Not recovered (another epoch): the current values, flagged.
    lost = connect_client(hub, query="topics=odds&since=odds:5:not-this-epoch")
    assert lost.ack["recovered"] == {"odds": False}
    values = lost.recv_messages(2)
    assert [(m["seq"], m["retained"]) for m in values] == [(5, True), (6, True)]
    lost.close()


def test_eight_racing_publishers_never_invert_or_repeat_a_key(make_hub):
    """Clients subscribe while eight threads publish retained values of the
    same keys: each client gets, per key, its newest value when it
    subscribed and then every later publication of it, exactly as a client
    that watched from the start saw them."""
    hub = make_hub(send_queue=65_536, send_queue_bytes=64 * 1024 * 1024)
    keys = [f"k{i}" for i in range(20)]
    watcher = connect_client(hub, ["race"])
    stop = threading.Event()
    published = [0] * 8

    def publisher(thread: int) -> None:
        rng = random.Random(thread)
        while not stop.is_set() and published[thread] < 3000:
            key = rng.choice(keys)
            hub.broadcast("race", {"k": key, "t": thread, "i": published[thread]},
                          key=key, retain=True)
            published[thread] += 1

    threads = [threading.Thread(target=publisher, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    joiners = []
    try:
        for _ in range(24):
            joiners.append(connect_client(hub, ["race"]))
    finally:
        stop.set()
        for t in threads:
            t.join()
    total = sum(published)
    assert total > 0

    def seqs_per_key(client) -> dict[str, list[int]]:
        """Every seq received per key, until the last publication."""
        seqs: dict[str, list[int]] = {}
        live_started = False
        while True:
            message = client.recv_messages(1, timeout=20)[0]
            if message.get("retained"):
                assert not live_started, "a retained value after a live publication"
            else:
                live_started = True
            seqs.setdefault(message["data"]["k"], []).append(message["seq"])
            if message["seq"] == total:
                return seqs

    truth = seqs_per_key(watcher)
    for client in joiners:
        got = seqs_per_key(client)
        assert set(got) == set(truth), "a key without its value"
        for key, seqs in got.items():
            # From the first value it was given on, every later
            # publication of the key, in order: nothing older after
            # something newer, nothing twice, nothing lost.
            start = truth[key].index(seqs[0])
            assert seqs == truth[key][start:], key
        client.close()
    watcher.close()


def test_the_values_per_topic_are_bounded_and_the_oldest_go_first(make_hub):
    hub = make_hub(retained_per_topic=3)
    for n in range(5):
        hub.broadcast("t", {"n": n}, key=n, retain=True)
    wait_until(lambda: hub.stats()["retained_evicted"] == 2)
    assert hub.stats()["retained_values"] == 3
    client = connect_client(hub, ["t"])
    assert data_of(client.recv_messages(3)) == [{"n": 2}, {"n": 3}, {"n": 4}]
    client.close()


def test_the_hub_wide_byte_bound_pushes_out_or_refuses(make_hub):
    value = {"x": "y" * 900}  # about 1 KB a frame
    hub = make_hub(retained_bytes=4096)
    for n in range(3):
        hub.broadcast("a", value, key=n, retain=True)
    wait_until(lambda: hub.stats()["retained_values"] == 3)
    # "b" finds one frame's room left: its second value pushes out its
    # first; "a"'s are not taken from it.
    hub.broadcast("b", value, key=0, retain=True)
    hub.broadcast("b", value, key=1, retain=True)
    wait_until(lambda: hub.stats()["retained_evicted"] == 1)
    stats = hub.stats()
    assert stats["retained_values"] == 4 and stats["retained_bytes"] <= 4096
    # "c" finds none: refused, counted, still delivered live.
    client = connect_client(hub, ["c"])
    assert hub.broadcast("c", value, key=0, retain=True) == 1
    assert client.recv_messages(1)[0]["data"] == value
    wait_until(lambda: hub.stats()["retained_refused"] == 1)
    client.close()
    # A value larger than the whole bound is an error, and nothing is sent.
    with pytest.raises(ValueError, match="larger than retained_bytes"):
        hub.broadcast("a", {"x": "y" * 5000}, retain=True)


def test_a_new_subscriber_gets_what_its_queue_takes_newest_first(make_hub):
    hub = make_hub(send_queue=8)
    for n in range(20):
        hub.broadcast("t", {"n": n}, key=n, retain=True)
    wait_until(lambda: hub.stats()["retained_values"] == 20)
    client = connect_client(hub, ["t"])
    # send_queue - 2: room for the answer and an error frame.
    assert data_of(client.recv_messages(6)) == [{"n": n} for n in range(14, 20)]
    client.ping()
    assert hub.stats()["retained_unsent"] == 14
    client.close()


def test_retaining_when_off_is_an_error(make_hub):
    hub = make_hub(retained_bytes=0)
    with pytest.raises(ValueError, match="retained values are off"):
        hub.broadcast("t", {"a": 1}, retain=True)
    assert hub.stats()["published"] == 0
    assert hub.broadcast("t", {"a": 1}) == 0  # plain publications still work


@pytest.mark.parametrize("option, value", [
    ("retained_per_topic", 1_000_001),
    ("retained_bytes", 4 * 1024 ** 3 + 1),
])
def test_retained_bounds_out_of_range_are_refused(make_hub, option, value):
    with pytest.raises(ValueError, match=option):
        make_hub(**{option: value})


def test_the_retained_numbers_are_in_metrics(make_hub):
    hub = make_hub()
    hub.broadcast("t", 1, key="a", retain=True)
    wait_until(lambda: hub.stats()["retained_values"] == 1)
    url = f"http://127.0.0.1:{hub.port}/metrics"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    text = opener.open(url, timeout=5).read().decode()
    assert "wshub_retained_values 1" in text
    for name in ("retained_bytes", "retained_evicted_total", "retained_refused_total",
                 "retained_unsent_total"):
        assert f"wshub_{name} " in text, name


def test_a_topic_kept_for_its_values_answers_stream(make_hub):
    hub = make_hub(history_size=0)
    assert hub.stream("t") is None
    hub.broadcast("t", json.dumps({"a": 1}), retain=True)
    wait_until(lambda: hub.stats()["retained_values"] == 1)
    epoch, seq = hub.stream("t")
    assert seq == 1 and epoch
