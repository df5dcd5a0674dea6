"""The pytest plugin and client helpers shipped as ``wshub.testing``.

The plugin is active here because wshub is installed (``pytest11`` entry
point); nothing in conftest.py loads it.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import wshub
from wshub.testing import AsyncClient, Client, CollectTimeout, url_for

from helpers import without_streams

pytest_plugins = ["pytester"]

README = Path(__file__).resolve().parent.parent / "README.md"


# --------------------------------------------------------------------------
# registration
# --------------------------------------------------------------------------


def test_plugin_is_registered_through_the_entry_point(pytestconfig):
    plugin = pytestconfig.pluginmanager.get_plugin("wshub")
    assert plugin is not None, "the pytest11 entry point 'wshub' is not installed"
    assert plugin.__name__ == "wshub.testing"


def test_import_wshub_imports_neither_pytest_nor_the_plugin():
    code = textwrap.dedent("""
        import sys
        import wshub
        assert "pytest" not in sys.modules, "import wshub imported pytest"
        assert "wshub.testing" not in sys.modules
        assert "websockets" not in sys.modules
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_testing_module_works_without_pytest_and_explains_missing_websockets():
    code = textwrap.dedent("""
        import sys
        sys.modules["pytest"] = None       # as if not installed
        sys.modules["websockets"] = None
        import wshub.testing as t
        assert not hasattr(t, "wshub_server")
        try:
            t.Client(1)
        except ImportError as exc:
            assert "pip install websockets" in str(exc), exc
        else:
            raise AssertionError("no ImportError")
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# --------------------------------------------------------------------------
# fixtures and marker
# --------------------------------------------------------------------------


def test_server_fixture_is_a_running_loopback_server(wshub_server):
    assert isinstance(wshub_server, wshub.Server)
    assert wshub_server.running
    assert wshub_server.host == "127.0.0.1"
    assert 0 < wshub_server.port < 65536


def test_server_fixture_is_the_target_of_module_level_broadcast(
        wshub_server, wshub_client):
    client = wshub_client(wshub_server, topics=["t"])
    assert wshub.broadcast("t", [1, 2]) == 1
    assert client.next_message() == {"type": "message", "topic": "t", "seq": 1,
                                     "data": [1, 2]}


@pytest.mark.wshub(topics=["x", "y"], path="/feed")
def test_marker_options_reach_wshub_start(wshub_server, wshub_client):
    client = wshub_client(wshub_server)  # the custom path is found by itself
    assert client.url == f"ws://127.0.0.1:{wshub_server.port}/feed"
    assert without_streams(client.ack) == {"type": "connected", "topics": ["x", "y"], "rejected": []}
    assert client.subscribe(["z"]) == {
        "type": "subscribed", "topics": ["x", "y"], "rejected": ["z"],
        "reasons": {"z": "not_allowed"}}


@pytest.mark.wshub(topics=["outer"], path="/outer")
class TestMarkerOnAClass:
    def test_class_marker_applies(self, wshub_server, wshub_client):
        assert wshub_client(wshub_server).ack["topics"] == ["outer"]

    @pytest.mark.wshub(topics=["inner"])
    def test_function_marker_wins_and_merges(self, wshub_server, wshub_client):
        client = wshub_client(wshub_server)
        assert client.url.endswith("/outer")
        assert client.ack["topics"] == ["inner"]


def test_client_factory_defaults_to_the_server_fixture(wshub_client, wshub_server):
    a = wshub_client(topics=["a"])
    b = wshub_client(wshub_server.port, topics=["a"])  # a port works too
    assert wshub_server.broadcast("a", "1") == 2
    assert a.next_message()["seq"] == b.next_message()["seq"] == 1


def test_fixtures_clean_up_in_a_sub_run(pytester):
    pytester.makeini("[pytest]\nfilterwarnings = error\n")
    pytester.makepyfile(textwrap.dedent("""
        import pytest
        import wshub

        seen = {}

        @pytest.mark.wshub(rate_limit=5.0)
        def test_use(wshub_server, wshub_client):
            seen["server"] = wshub_server
            seen["client"] = wshub_client(topics=["a"])
            seen["client"].ping()

        def test_after():
            assert seen["server"].running is False
            assert seen["client"].ws.close_code is not None
            with pytest.raises(RuntimeError):
                wshub.broadcast("a", "1")  # the fixture's server is no default

        @pytest.mark.wshub("positional")
        def test_bad_marker(wshub_server):
            pass
    """))
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*takes keyword options of wshub.start() only*"])


def test_readme_example_passes_in_a_sub_run(pytester):
    """The README's "Testing your app with wshub" code, run as a user's test
    file in a fresh pytest process (plugin found through the entry point)."""
    text = README.read_text()
    section = text.split("## Testing your app with wshub", 1)[1].split("\n## ", 1)[0]
    # the FastAPI app's test needs that app: tests/test_readme.py runs it
    section = re.sub(r"<!-- tested by tests/test_readme.py.*?-->\n```python\n.*?```", "",
                     section, flags=re.S)
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "expected one python block in the README section"
    pytester.makeini("[pytest]\nfilterwarnings = error\n")
    pytester.makepyfile(test_readme_example=blocks[0])
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(passed=4)


# --------------------------------------------------------------------------
# sync client
# --------------------------------------------------------------------------


def test_sync_client_protocol_round_trips(wshub_server):
    with Client(wshub_server, ["b", "a", "bad name"]) as client:
        assert without_streams(client.ack) == {"type": "connected", "topics": ["a", "b"],
                              "rejected": ["bad name"],
                              "reasons": {"bad name": "invalid_name"}}
        assert client.ping() == {"type": "pong"}
        assert client.ping(id={"k": [1]}) == {"type": "pong", "id": {"k": [1]}}
        answer = client.subscribe(["c"])
        assert answer["streams"] == {"c": client.positions["c"]}
        assert without_streams(answer) == {
            "type": "subscribed", "topics": ["a", "b", "c"], "rejected": []}
        assert client.unsubscribe(["a"]) == {
            "type": "unsubscribed", "topics": ["b", "c"]}
        assert client.request("not json")["error"] == "invalid_json"
    assert client.ws.close_code is not None


def test_publications_arriving_before_an_answer_are_kept(wshub_server, wshub_client):
    client = wshub_client(wshub_server, ["a"])
    for i in range(5):
        wshub_server.broadcast("a", i)
    # The answer comes after the five publications queued before it.
    assert client.subscribe(["b"])["type"] == "subscribed"
    wshub_server.broadcast("b", "5")
    assert [m["data"] for m in client.collect(6)] == [0, 1, 2, 3, 4, 5]


def test_collect_timeout_says_how_many_arrived(wshub_server, wshub_client):
    client = wshub_client(wshub_server, ["a"])
    wshub_server.broadcast("a", "1")
    start = time.monotonic()
    with pytest.raises(TimeoutError, match=r"expected 3 publications within 0\.3s, "
                                           r"but only 1 arrived") as info:
        client.collect(3, timeout=0.3)
    assert time.monotonic() - start < 3
    assert isinstance(info.value, CollectTimeout)
    assert [m["seq"] for m in info.value.received] == [1]


def test_next_message_timeout(wshub_server, wshub_client):
    client = wshub_client(wshub_server, ["a"])
    with pytest.raises(TimeoutError, match=r"no publication arrived within 0\.2s"):
        client.next_message(timeout=0.2)


def test_next_message_refuses_a_frame_that_is_not_a_publication(
        wshub_server, wshub_client):
    client = wshub_client(wshub_server, ["a"])
    client.send({"type": "ping", "id": 1})
    with pytest.raises(AssertionError, match="expected a publication"):
        client.next_message()


def test_wait_closed_reports_the_close_code(wshub_client):
    with wshub.Server(0) as server:
        client = wshub_client(server, ["a"])
    assert client.wait_closed() == 1001


def test_url_for():
    assert url_for(8765) == "ws://127.0.0.1:8765/api/ws"
    assert url_for(8765, ["a", "b:c"], path="/ws") == "ws://127.0.0.1:8765/ws?topics=a,b%3Ac"
    assert url_for("ws://h:1/x?k=v", ["a"]) == "ws://h:1/x?k=v&topics=a"
    with pytest.raises(TypeError):
        url_for(8765, "ab")


# --------------------------------------------------------------------------
# async client
# --------------------------------------------------------------------------


def test_async_client_round_trips(wshub_server):
    async def main() -> None:
        async with AsyncClient(wshub_server, ["a"]) as client:
            assert without_streams(client.ack) == {"type": "connected", "topics": ["a"], "rejected": []}
            assert await client.ping() == {"type": "pong"}
            assert await client.ping(id=3) == {"type": "pong", "id": 3}
            assert (await client.subscribe(["b"]))["topics"] == ["a", "b"]
            for i in range(3):
                wshub_server.broadcast("b", i)
            assert [m["data"] for m in await client.collect(3)] == [0, 1, 2]
            assert await client.unsubscribe(["b"]) == {
                "type": "unsubscribed", "topics": ["a"]}
            with pytest.raises(TimeoutError, match="but only 0 arrived"):
                await client.collect(1, timeout=0.2)
            with pytest.raises(TimeoutError, match="no publication arrived"):
                await client.next_message(timeout=0.1)

        other = await AsyncClient.connect(wshub_server.port, ["c"])
        try:
            wshub_server.broadcast("c", {"x": None})
            assert await other.next_message() == {
                "type": "message", "topic": "c", "seq": 1, "data": {"x": None}}
        finally:
            await other.close()

    asyncio.run(main())


def test_a_client_made_with_another_ones_positions_recovers_what_it_missed(wshub_server):
    with Client(wshub_server, ["odds"]) as first:
        wshub_server.broadcast("odds", 1)
        assert first.next_message()["seq"] == 1
        positions = first.positions
    assert positions["odds"]["seq"] == 1
    for n in (2, 3):
        wshub_server.broadcast("odds", n)
    with Client(wshub_server, ["odds"], since=positions) as back:
        assert back.recovered == {"odds": True}
        assert [m["data"] for m in back.collect(2)] == [2, 3]
        assert back.positions["odds"]["seq"] == 3

    # The same through a subscribe, and asynchronously.
    async def main() -> None:
        async with AsyncClient(wshub_server) as client:
            since = {"odds": {"seq": 2, "epoch": positions["odds"]["epoch"]}}
            answer = await client.subscribe(["odds"], since=since)
            assert answer["recovered"] == {"odds": True}
            assert (await client.next_message())["data"] == 3
            assert client.positions["odds"]["seq"] == 3

    asyncio.run(main())
    # A position from another numbering is not recovered.
    with Client(wshub_server, ["odds"], since={"odds": {"seq": 1, "epoch": "x"}}) as other:
        assert other.recovered == {"odds": False}
        assert other.positions["odds"]["epoch"] == positions["odds"]["epoch"]


def test_async_wait_closed_reports_the_close_code():
    async def main() -> int | None:
        server = wshub.Server(0)
        try:
            client = await AsyncClient.connect(server)
            server.stop()
            return await client.wait_closed()
        finally:
            server.stop()

    assert asyncio.run(main()) == 1001


# --------------------------------------------------------------------------
# tests of the project's own suite, written with the plugin's fixtures
# (mirrors of test_protocol.py tests that use the conftest fixtures)
# --------------------------------------------------------------------------


def test_seq_counts_per_topic_from_one(wshub_server, wshub_client):
    client = wshub_client(wshub_server, ["a", "b"])
    for topic in ["a", "a", "b", "a", "b"]:
        wshub_server.broadcast(topic, "{}")
    received = [(m["topic"], m["seq"]) for m in client.collect(5)]
    assert received == [("a", 1), ("a", 2), ("b", 1), ("a", 3), ("b", 2)]


def test_subscribe_starts_delivery_once_answered(wshub_server, wshub_client):
    client = wshub_client(wshub_server, ["other"])
    assert wshub_server.broadcast("t", '"before"') == 0
    assert client.subscribe(["t"])["topics"] == ["other", "t"]
    assert wshub_server.broadcast("t", '"after"') == 1
    # "before" had no subscriber: not numbered (protocol.md)
    assert client.next_message() == {"type": "message", "topic": "t", "seq": 1,
                                     "data": "after"}


@pytest.mark.wshub(topics=["a", "b"])
def test_allow_list_without_topics_query_subscribes_to_every_allowed_topic(
        wshub_server, wshub_client):
    assert without_streams(wshub_client(wshub_server).ack) == {
        "type": "connected", "topics": ["a", "b"], "rejected": []}
