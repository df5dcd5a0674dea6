"""The Python API: broadcast arguments and errors, return values, stats(),
module-level functions, options."""

from __future__ import annotations

import errno
import json
import pydoc
import socket
import subprocess
import sys
import textwrap

import pytest

import wshub
from helpers import publication, thread_count, wait_until

OPTION_NAMES = [
    "host", "path", "topics", "max_connections", "max_message_bytes",
    "send_queue", "ping_interval", "ping_timeout", "handshake_timeout",
    "worker_threads",
]

STAT_KEYS = {
    "connections", "topics", "published", "sent", "dropped",
    "slow_consumer_closes", "connections_opened", "connections_closed",
}


# --------------------------------------------------------------------------
# server object basics
# --------------------------------------------------------------------------


def test_start_returns_running_server_with_bound_port(hub):
    assert isinstance(hub, wshub.Server)
    assert isinstance(hub.port, int) and 0 < hub.port < 65536
    assert hub.running is True


def test_start_on_explicit_port_binds_that_port(make_hub, connect):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    hub = make_hub(port)
    assert hub.port == port
    assert connect(port, ["a"]).ack["topics"] == ["a"]


def test_server_constructor_starts_a_server_like_start(connect):
    server = wshub.Server(0, host="127.0.0.1", topics=["x"])
    try:
        assert server.running is True
        client = connect(server)
        assert client.ack == {"type": "connected", "topics": ["x"], "rejected": []}
        assert server.broadcast("x", "1") == 1
        assert client.recv_text() == publication("x", 1, "1")
    finally:
        server.stop()
    assert server.running is False


def test_options_are_keyword_only():
    with pytest.raises(TypeError):
        wshub.start(0, "127.0.0.1").stop()  # stop() only if wrongly accepted
    with pytest.raises(TypeError):
        wshub.Server(0, "127.0.0.1").stop()


def test_help_of_start_mentions_every_option():
    text = pydoc.render_doc(wshub.start, renderer=pydoc.plaintext)
    missing = [name for name in OPTION_NAMES if name not in text]
    assert not missing, f"help(wshub.start) does not mention {missing}:\n{text}"


def test_all_options_are_accepted_together(make_hub, connect):
    hub = make_hub(
        host="127.0.0.1", path="/ws", topics=["a", "b"], max_connections=10,
        max_message_bytes=4096, send_queue=64, ping_interval=5.0,
        ping_timeout=5.0, handshake_timeout=5.0, worker_threads=2,
    )
    client = connect(hub, ["b"], path="/ws")
    assert client.ack == {"type": "connected", "topics": ["b"], "rejected": []}
    assert hub.broadcast("b", "[]") == 1
    assert client.recv_text() == publication("b", 1, "[]")


@pytest.mark.parametrize("options", [
    {"send_queue": 0}, {"max_connections": 0}, {"max_message_bytes": 0},
    {"worker_threads": 0}, {"send_queue": -1}, {"ping_interval": 0},
    {"ping_interval": -1.0}, {"ping_timeout": float("nan")},
    {"handshake_timeout": float("inf")}, {"topics": ["ok", "not ok"]},
    {"topics": []}, {"path": "no-slash"}, {"port": -1}, {"port": 70000},
], ids=lambda o: repr(o))
def test_invalid_options_are_refused_without_starting(options):
    threads_before = thread_count()
    kwargs = dict(options)
    port = kwargs.pop("port", 0)
    with pytest.raises((ValueError, TypeError, OverflowError)):
        server = wshub.start(port, **kwargs)
        server.stop()  # only reached if the option was wrongly accepted
    assert thread_count() <= threads_before


# --------------------------------------------------------------------------
# broadcast: values, return value
# --------------------------------------------------------------------------


def test_broadcast_returns_number_of_subscribers(hub, connect):
    assert hub.broadcast("t", "0") == 0
    clients = [connect(hub, ["t"]) for _ in range(3)]
    connect(hub, ["other"])
    assert hub.broadcast("t", "1") == 3
    for client in clients:
        # the first publication had no subscriber: not numbered
        assert client.recv_text() == publication("t", 1, "1")
    assert clients[0].unsubscribe(["t"]) == {"type": "unsubscribed", "topics": []}
    assert hub.broadcast("t", "2") == 2
    clients[1].close()
    wait_until(lambda: hub.stats()["topics"].get("t") == 1,
               message=lambda: f"stats: {hub.stats()}")
    assert hub.broadcast("t", "3") == 1
    assert hub.broadcast("other", "3") == 1
    assert hub.broadcast("nobody", "3") == 0


@pytest.mark.parametrize("value", [
    {"match": 1, "home": 1.85},
    {"b": 1, "a": [1, 2, {"c": None, "d": True}], "e": "x y"},
    [1, "two", 3.5, None, False],
    {},
    [],
    7,
    -2.25,
    None,
    True,
], ids=repr)
def test_broadcast_serialises_non_str_values_compactly(hub, connect, value):
    client = connect(hub, ["t"])
    hub.broadcast("t", value)
    expected = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    assert client.recv_text() == publication("t", 1, expected)


def test_broadcast_serialises_non_ascii_without_escaping(hub, connect):
    # docs/protocol.md: json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    client = connect(hub, ["t"])
    value = {"name": "h\u00e9llo \u2603", "nested": ["\u00fc"]}
    hub.broadcast("t", value)
    expected = '{"name":"h\u00e9llo \u2603","nested":["\u00fc"]}'
    assert expected == json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    assert client.recv_text() == publication("t", 1, expected)


def test_broadcast_serialises_tuple_as_array(hub, connect):
    client = connect(hub, ["t"])
    hub.broadcast("t", {"t": (1, 2)})
    assert client.recv_text() == publication("t", 1, '{"t":[1,2]}')


def test_broadcast_str_is_taken_as_json_text_not_a_string_value(hub, connect):
    client = connect(hub, ["t"])
    hub.broadcast("t", "[1, 2]")
    assert client.recv_text() == publication("t", 1, "[1, 2]")


# --------------------------------------------------------------------------
# broadcast: errors (and nothing is sent when one is raised)
# --------------------------------------------------------------------------


def assert_failed_broadcast_sent_nothing(hub, client, topic="t"):
    """The next publication the client gets is a good one with seq 1."""
    assert hub.broadcast(topic, '{"good":true}') == 1
    assert client.recv_text() == publication(topic, 1, '{"good":true}')


@pytest.mark.parametrize("data", [
    "{bad", "", "   ", "{'a':1}", '{"a":1} trailing', "1 2", "[1,", "NaN", "undefined",
], ids=repr)
def test_broadcast_invalid_json_string_raises_value_error(hub, connect, data):
    client = connect(hub, ["t"])
    with pytest.raises(ValueError):
        hub.broadcast("t", data)
    assert_failed_broadcast_sent_nothing(hub, client)


@pytest.mark.parametrize("topic", [
    "", "a b", "bad!name", "x" * 129, "\u00e9", "a/b", 'a"b', "a\nb", "a,b",
], ids=repr)
def test_broadcast_invalid_topic_raises_value_error(hub, connect, topic):
    client = connect(hub, ["t"])
    with pytest.raises(ValueError):
        hub.broadcast(topic, "{}")
    assert_failed_broadcast_sent_nothing(hub, client)


def test_broadcast_topic_of_128_chars_is_valid(hub, connect):
    topic = "q" * 128
    client = connect(hub, [topic])
    assert hub.broadcast(topic, "{}") == 1
    assert client.recv_text() == publication(topic, 1, "{}")


@pytest.mark.parametrize("value", [
    object(), {"a": object()}, {1j: 2}, [set()], float("nan"),
    {"inf": float("inf")},
], ids=repr)
def test_broadcast_non_json_value_raises_type_or_value_error(hub, connect, value):
    client = connect(hub, ["t"])
    with pytest.raises((TypeError, ValueError)):
        hub.broadcast("t", value)
    assert_failed_broadcast_sent_nothing(hub, client)


def test_failed_broadcasts_are_not_counted_as_published(hub, connect):
    client = connect(hub, ["t"])
    for bad in ["{", "", object()]:
        with pytest.raises((TypeError, ValueError)):
            hub.broadcast("t", bad)
    with pytest.raises(ValueError):
        hub.broadcast("bad topic", "{}")
    assert_failed_broadcast_sent_nothing(hub, client)
    wait_until(lambda: hub.stats()["sent"] == 1,
               message=lambda: f"stats: {hub.stats()}")
    assert hub.stats()["published"] == 1


def test_broadcast_on_stopped_server_raises_runtime_error(make_hub):
    hub = make_hub()
    hub.stop()
    with pytest.raises(RuntimeError):
        hub.broadcast("t", "{}")
    with pytest.raises(RuntimeError):
        hub.broadcast("t", {"a": 1})


def test_port_in_use_by_other_socket_raises_eaddrinuse():
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    try:
        with pytest.raises(OSError) as info:
            wshub.start(blocker.getsockname()[1])
        assert info.value.errno == errno.EADDRINUSE
    finally:
        blocker.close()


def test_port_in_use_by_other_hub_raises_eaddrinuse(hub):
    with pytest.raises(OSError) as info:
        wshub.start(hub.port)
    assert info.value.errno == errno.EADDRINUSE
    with pytest.raises(OSError) as info:
        wshub.Server(hub.port)
    assert info.value.errno == errno.EADDRINUSE
    assert hub.running  # the first hub is unaffected


def test_failed_start_leaves_module_level_server_alone(hub, connect):
    client = connect(hub, ["t"])
    with pytest.raises(OSError):
        wshub.start(hub.port)
    wshub.broadcast("t", "1")
    assert client.recv_text() == publication("t", 1, "1")


# --------------------------------------------------------------------------
# stats()
# --------------------------------------------------------------------------


def test_stats_of_fresh_server(hub):
    stats = hub.stats()
    assert STAT_KEYS <= set(stats), stats
    assert stats["topics"] == {}
    for key in STAT_KEYS - {"topics"}:
        assert stats[key] == 0, (key, stats)
        assert isinstance(stats[key], int) and not isinstance(stats[key], bool)


def test_stats_track_connections_topics_and_counters(hub, connect):
    a = connect(hub, ["x", "y"])
    b = connect(hub, ["y"])
    wait_until(lambda: hub.stats()["connections"] == 2,
               message=lambda: f"stats: {hub.stats()}")
    stats = hub.stats()
    assert stats["topics"] == {"x": 1, "y": 2}
    assert stats["connections_opened"] == 2
    assert stats["connections_closed"] == 0

    assert hub.broadcast("x", "1") == 1
    assert hub.broadcast("y", "2") == 2
    assert hub.broadcast("z", "3") == 0
    a.recv_messages(2)
    b.recv_messages(1)
    wait_until(lambda: hub.stats()["sent"] == 3,
               message=lambda: f"stats: {hub.stats()}")
    stats = hub.stats()
    assert stats["published"] == 3
    assert stats["dropped"] == 0
    assert stats["slow_consumer_closes"] == 0

    a.close()
    wait_until(lambda: hub.stats()["connections"] == 1,
               message=lambda: f"stats: {hub.stats()}")
    wait_until(lambda: hub.stats()["topics"] == {"y": 1},
               message=lambda: f"stats: {hub.stats()}")
    stats = hub.stats()
    assert stats["connections_opened"] == 2
    assert stats["connections_closed"] == 1


def test_stats_topics_omit_topics_without_subscribers(hub, connect):
    client = connect(hub, ["a", "b"])
    client.unsubscribe(["a"])
    wait_until(lambda: hub.stats()["topics"] == {"b": 1},
               message=lambda: f"stats: {hub.stats()}")
    client.unsubscribe(["b"])
    wait_until(lambda: hub.stats()["topics"] == {},
               message=lambda: f"stats: {hub.stats()}")


def test_stats_returns_independent_snapshots(hub, connect):
    first = hub.stats()
    first["topics"]["injected"] = 99
    first["published"] = 1000
    second = hub.stats()
    assert second["topics"] == {} and second["published"] == 0


# --------------------------------------------------------------------------
# module-level broadcast / stop
# --------------------------------------------------------------------------


def test_module_broadcast_publishes_on_most_recently_started_server(make_hub, connect):
    first = make_hub()
    second = make_hub()
    c1 = connect(first, ["t"])
    c2 = connect(second, ["t"])
    assert wshub.broadcast("t", '{"to":"second"}') == 1
    assert c2.recv_text() == publication("t", 1, '{"to":"second"}')
    # fence on the first server: its client never saw the module-level call
    first.broadcast("t", "0")
    assert c1.recv_text() == publication("t", 1, "0")


def test_module_broadcast_ignores_servers_made_with_constructor(make_hub, connect):
    started = make_hub()
    constructed = wshub.Server(0)
    try:
        c1 = connect(started, ["t"])
        c2 = connect(constructed, ["t"])
        assert wshub.broadcast("t", "1") == 1
        assert c1.recv_text() == publication("t", 1, "1")
        constructed.broadcast("t", "2")
        assert c2.recv_text() == publication("t", 1, "2")
    finally:
        constructed.stop()


def test_module_broadcast_accepts_dicts_and_validates(hub, connect):
    client = connect(hub, ["t"])
    with pytest.raises(ValueError):
        wshub.broadcast("t", "{nope")
    with pytest.raises(ValueError):
        wshub.broadcast("bad topic", "{}")
    assert wshub.broadcast("t", {"a": [1]}) == 1
    assert client.recv_text() == publication("t", 1, '{"a":[1]}')


def test_module_broadcast_after_stop_raises_runtime_error(make_hub):
    hub = make_hub()
    hub.stop()
    with pytest.raises(RuntimeError):
        wshub.broadcast("t", "{}")


def test_module_stop_stops_the_module_level_server(make_hub):
    hub = make_hub()
    wshub.stop()
    assert hub.running is False
    with pytest.raises(RuntimeError):
        wshub.broadcast("t", "{}")
    wshub.stop()  # idempotent / no-op now


def test_module_functions_without_any_started_server():
    # Needs a fresh interpreter: other tests have started servers here.
    code = textwrap.dedent("""
        import wshub
        wshub.stop()  # no server yet: no-op
        try:
            wshub.broadcast("t", "{}")
        except RuntimeError:
            print("ok")
        else:
            print("no error")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok", result.stdout + result.stderr


def test_broadcast_many_publishes_in_order_and_all_or_nothing(hub, connect):
    client = connect(hub, ["a", "b"])
    assert hub.broadcast_many([("a", '{"n":1}'), ("b", {"n": 2}), ("a", "[3]")]) == [1, 1, 1]
    assert client.recv_text() == publication("a", 1, '{"n":1}')
    assert client.recv_text() == publication("b", 1, '{"n":2}')
    assert client.recv_text() == publication("a", 2, "[3]")
    with pytest.raises(ValueError):
        hub.broadcast_many([("a", '{"n":4}'), ("bad topic", "1")])
    with pytest.raises(ValueError):
        hub.broadcast_many([("a", '{"n":4}'), ("a", "{not json")])
    with pytest.raises(TypeError):
        hub.broadcast_many(["not a pair"])
    assert hub.broadcast_many([]) == []
    # Nothing from the failed batches was sent: the next one is seq 3.
    hub.broadcast("a", "5")
    assert client.recv_text() == publication("a", 3, "5")
