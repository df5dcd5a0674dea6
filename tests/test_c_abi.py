"""The C ABI (include/wshub.h), driven from C programs compiled here.

The programs are built with gcc ``-Wall -Wextra -Werror`` against the
committed header and the library ``cargo build --release --lib`` makes
(without the ``python`` feature): ``tests/c/hub_driver.c`` publishes what
the tests write on its stdin while a real WebSocket client checks what
arrives; ``tests/c/abi_checks.c`` feeds every bad argument and runs under
valgrind; ``examples/c/publish.c`` is built and run like a user would.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import websockets
from websockets.sync.client import connect as ws_connect

from helpers import HOST, _NO_PROXY, RawWS, connect_client, open_ws, publication, wait_until

ROOT = Path(__file__).resolve().parent.parent
HEADER = ROOT / "include" / "wshub.h"
CFLAGS = ["-std=c11", "-Wall", "-Wextra", "-Werror", "-O1", "-g", f"-I{ROOT / 'include'}"]
# What a static Rust library needs from the system on Linux
# (`cargo rustc --lib -- --print native-static-libs`).
STATIC_LIBS = ["-lgcc_s", "-lutil", "-lrt", "-lpthread", "-lm", "-ldl", "-lc"]
VALGRIND = shutil.which("valgrind")
PROCESS_TIMEOUT = 10

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or shutil.which("gcc") is None,
    reason="the C ABI tests need Linux and gcc",
)


# --------------------------------------------------------------------------
# building
# --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def c_lib(tmp_path_factory) -> Path:
    """libwshub.so and libwshub.a, built without Python and copied aside,
    so that a concurrent ``maturin develop`` (which writes the Python
    flavour of target/release/libwshub.so) cannot swap them under us."""
    subprocess.run(
        ["cargo", "build", "--release", "--lib", "--quiet"],
        cwd=ROOT, check=True, timeout=1800,
    )
    libdir = tmp_path_factory.mktemp("lib")
    for name in ("libwshub.so", "libwshub.a"):
        shutil.copy2(ROOT / "target" / "release" / name, libdir / name)
    return libdir


def _gcc(source: Path, out: Path, link: list[str]) -> Path:
    result = subprocess.run(
        ["gcc", *CFLAGS, str(source), "-o", str(out), *link],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, f"gcc {source.name} failed:\n{result.stderr}"
    return out


@pytest.fixture(scope="session")
def programs(c_lib, tmp_path_factory) -> dict[str, Path]:
    """The C programs: the driver and the example linked against the shared
    library, the ABI checks against the static one (so both link)."""
    out = tmp_path_factory.mktemp("bin")
    shared = [f"-L{c_lib}", "-lwshub", f"-Wl,-rpath,{c_lib}"]
    static = [str(c_lib / "libwshub.a"), *STATIC_LIBS]
    return {
        "hub_driver": _gcc(ROOT / "tests/c/hub_driver.c", out / "hub_driver", shared),
        "abi_checks": _gcc(ROOT / "tests/c/abi_checks.c", out / "abi_checks", static),
        "publish": _gcc(ROOT / "examples/c/publish.c", out / "publish", shared),
    }


def _valgrind(*argv: str) -> list[str]:
    return [
        VALGRIND, "--tool=memcheck", "--leak-check=full",
        "--errors-for-leak-kinds=definite", "--error-exitcode=1", *argv,
    ]


def _assert_valgrind_clean(stderr: str) -> None:
    assert "ERROR SUMMARY: 0 errors" in stderr, stderr[-4000:]
    lost = re.search(r"definitely lost: ([\d,]+) bytes", stderr)
    assert lost is None or lost.group(1) == "0", stderr[-4000:]


need_valgrind = pytest.mark.skipif(
    VALGRIND is None and not os.environ.get("CI"),
    reason="valgrind is not installed (CI installs it)",
)


# --------------------------------------------------------------------------
# the driver process
# --------------------------------------------------------------------------


def end_process(proc: subprocess.Popen, reader: threading.Thread | None = None) -> None:
    """Kill a driver if it still runs, reap it, and close its pipes."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=PROCESS_TIMEOUT)
    if reader is not None:
        reader.join(timeout=PROCESS_TIMEOUT)
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None and not pipe.closed:
            try:
                pipe.close()
            except OSError:
                pass


class Driver:
    """tests/c/hub_driver.c running a hub; talk to it line by line."""

    def __init__(self, program: Path, *topics: str, valgrind: bool = False,
                 env: dict | None = None):
        argv = [str(program), *topics]
        self.proc = subprocess.Popen(
            _valgrind(*argv) if valgrind else argv,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, encoding="utf-8", bufsize=1,
            env=None if env is None else {**os.environ, **env},
        )
        first = self.readline(waiting_for="PORT")
        assert first.startswith("PORT "), first
        self.port = int(first.split()[1])

    def readline(self, waiting_for: str = "") -> str:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=PROCESS_TIMEOUT)
            raise AssertionError(
                f"driver exited ({self.proc.returncode}) while waiting for "
                f"{waiting_for!r}: {self.proc.stderr.read()}")
        return line.rstrip("\n")

    def command(self, line: str) -> str:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.readline(waiting_for=line)

    def publish(self, topic: str, data: str) -> int:
        answer = self.command(f"{topic} {data}")
        assert answer.startswith("OK "), answer
        return int(answer[3:])

    def stats(self) -> dict:
        answer = self.command("STATS")
        assert answer.startswith("STATS "), answer
        return json.loads(answer[6:])

    def finish(self) -> tuple[str, str]:
        """Close stdin (the driver stops the hub); return rest of output."""
        out, err = self.proc.communicate(timeout=PROCESS_TIMEOUT * 6)
        return out, err

    def kill(self) -> None:
        """Teardown: end the process if still running, close its pipes."""
        end_process(self.proc)


@pytest.fixture
def driver(programs):
    """Factory: ``driver(*allowed_topics)`` -> Driver; killed at teardown
    if a test left it running."""
    started = []

    def factory(*topics: str, valgrind: bool = False, env: dict | None = None) -> Driver:
        d = Driver(programs["hub_driver"], *topics, valgrind=valgrind, env=env)
        started.append(d)
        return d

    yield factory
    for d in started:
        d.kill()


@pytest.fixture
def clients():
    """Factory: ``clients(port, topics, **connect_client options)`` ->
    helpers.Client; closed at teardown."""
    opened = []

    def factory(port: int, topics=None, **kwargs):
        client = connect_client(port, topics, **kwargs)
        opened.append(client)
        return client

    yield factory
    for client in opened:
        client.close()


# --------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------


def test_library_links_without_python(c_lib):
    needed = subprocess.run(
        ["readelf", "-d", str(c_lib / "libwshub.so")],
        capture_output=True, text=True, check=True).stdout
    assert "libpython" not in needed
    undefined = subprocess.run(
        ["nm", "-D", "--undefined-only", str(c_lib / "libwshub.so")],
        capture_output=True, text=True, check=True).stdout.split()
    assert not [s for s in undefined if s.startswith(("Py", "_Py"))]


def test_header_declares_exactly_the_exported_functions(c_lib):
    exported = subprocess.run(
        ["nm", "-D", "--defined-only", str(c_lib / "libwshub.so")],
        capture_output=True, text=True, check=True).stdout
    exported_names = set(re.findall(r"\bT (wshub_\w+)", exported))
    header = HEADER.read_text()
    macros = set(re.findall(r"#define (wshub_\w+)\(", header))
    declared = set(re.findall(r"\b(wshub_\w+)\(", header)) - macros
    assert exported_names == declared
    assert macros == {"wshub_options_default"}


def test_publications_reach_a_websocket_client_byte_for_byte(driver, clients):
    hub = driver()
    client = clients(hub.port, ["t", "u"])
    assert client.ack == {"type": "connected", "topics": ["t", "u"], "rejected": []}

    assert hub.publish("t", '{"a":1}') == 1
    assert client.recv_text() == publication("t", 1, '{"a":1}')

    # Whitespace, escapes and non-ASCII pass through untouched.
    spaced = '  { "b" : [1, 2.50, "\u00e9\\u00e9", null] }  '
    assert hub.publish("t", spaced) == 1
    assert client.recv_text() == publication("t", 2, spaced)

    assert hub.publish("u", "42") == 1
    assert client.recv_text() == publication("u", 1, "42")

    # Nobody listens to "other": counted as 0 and never delivered.
    assert hub.publish("other", '"x"') == 0
    assert hub.publish("t", '"last"') == 1
    assert client.recv_text() == publication("t", 3, '"last"')


def test_every_subscriber_gets_each_publication(driver, clients):
    hub = driver()
    first, second = clients(hub.port, ["t"]), clients(hub.port, ["t"])
    assert hub.publish("t", "[1,2,3]") == 2
    for client in (first, second):
        assert client.recv_text() == publication("t", 1, "[1,2,3]")


def test_broadcast_errors_come_back_as_codes_and_nothing_is_sent(driver, clients):
    hub = driver()
    client = clients(hub.port, ["t"])
    assert hub.command("t {").startswith("ERR -2 invalid JSON")
    assert hub.command("t ").startswith("ERR -2 ")
    assert hub.command("b@d 1").startswith("ERR -3 invalid topic")
    assert hub.publish("t", "true") == 1
    assert client.recv_text() == publication("t", 1, "true")


def test_stats_json_reports_connections_and_publications(driver, clients):
    hub = driver()
    clients(hub.port, ["a"])
    clients(hub.port, ["a", "b"])
    hub.publish("a", "1")
    stats = hub.stats()
    assert stats["connections"] == 2
    assert stats["topics"] == {"a": 2, "b": 1}
    assert stats["published"] == 1
    assert set(stats) == {
        "connections", "topics", "published", "sent", "sent_bytes", "dropped",
        "slow_consumer_closes", "conflated", "subscription_events_dropped",
        "connections_opened", "connections_closed",
        "handshakes_rejected", "backplane_published", "backplane_received",
        "backplane_dropped", "backplane_missed", "backplane_reconnects", "history_bytes",
        "retained_values", "retained_bytes", "retained_evicted", "retained_refused",
        "retained_unsent", "token_expired_closes", "sse_clients", "tokens_refreshed",
        "deflate_clients", "compressed_publications", "compression_bytes_in",
        "compression_bytes_out", "backplane_connected"}
    assert stats["backplane_connected"] is False


def test_retained_values_through_the_c_abi(driver, clients):
    hub = driver()
    assert hub.command('EX 1 odds 7 {"p":1}') == "OK 0"
    assert hub.command('EX 1 odds 8 {"p":2}') == "OK 0"
    assert hub.command('EX 1 odds 7 {"p":3}') == "OK 0"
    assert hub.command('EX 0 odds 9 {"p":4}') == "OK 0"  # not retained
    assert hub.command("CLEAR odds 8") == "OK 0"
    wait_until(lambda: hub.stats()["retained_values"] == 1)
    client = clients(hub.port, ["odds"])
    [value] = client.recv_messages(1)
    assert value["data"] == {"p": 3} and value["retained"] is True
    client.ping()
    assert hub.command("CLEAR odds -") == "OK 0"
    wait_until(lambda: hub.stats()["retained_values"] == 0)
    assert hub.command("EX 2 odds - 1").startswith("ERR -1 unknown flags")
    assert hub.command("CLEAR b@d -").startswith("ERR -3 invalid topic")
    off = driver(env={"HUB_DRIVER_RETAINED_BYTES": "0"})
    assert off.command("EX 1 t - 1").startswith("ERR -13 cannot retain")
    assert off.command("EX 0 t - 1") == "OK 0"


def test_a_jwt_key_from_c_checks_handshakes(driver, clients):
    jwt = pytest.importorskip("jwt", reason="PyJWT not installed")
    import time

    import websockets
    secret = "a-c-host-secret-for-tests-" * 3
    hub = driver(env={"HUB_DRIVER_JWT_KEY": secret})
    token = jwt.encode({"exp": int(time.time()) + 60, "topics": ["t"]}, secret,
                       algorithm="HS256")
    client = clients(hub.port, query=f"topics=t,u&token={token}")
    assert client.ack["topics"] == ["t"]
    with pytest.raises(websockets.InvalidStatus) as info:
        clients(hub.port, ["t"])
    assert info.value.response.status_code == 401
    assert hub.stats()["handshakes_rejected"]["token_missing"] == 1


def test_allowed_topics_list_reaches_the_hub(driver, clients):
    hub = driver("alpha", "beta")
    everything = clients(hub.port)
    assert everything.ack["topics"] == ["alpha", "beta"]
    refused = clients(hub.port, ["gamma"])
    assert refused.ack["rejected"] == ["gamma"]
    assert refused.ack["topics"] == ["alpha", "beta"]


def test_stop_sends_going_away_and_returns(driver, clients):
    hub = driver()
    client = clients(hub.port, ["t"])
    out, err = hub.finish()
    assert hub.proc.returncode == 0, err
    assert out.strip() == "STOPPED"
    assert client.expect_closed().rcvd.code == 1001


def test_bad_arguments_get_error_codes(programs):
    result = subprocess.run(
        [str(programs["abi_checks"])],
        capture_output=True, text=True, timeout=PROCESS_TIMEOUT * 6)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"abi_checks: \d+ checks, 0 failed", result.stdout), result.stdout


@need_valgrind
def test_bad_arguments_are_memory_safe_under_valgrind(programs):
    result = subprocess.run(
        _valgrind(str(programs["abi_checks"])),
        capture_output=True, text=True, timeout=100)
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    assert re.search(r"abi_checks: \d+ checks, 0 failed", result.stdout), result.stdout
    _assert_valgrind_clean(result.stderr)


@need_valgrind
def test_publishing_to_clients_is_memory_safe_under_valgrind(driver, clients):
    hub = driver(valgrind=True)
    client = clients(hub.port, ["t"])
    for seq in range(1, 4):
        data = json.dumps({"seq": seq, "text": "x" * 100 * seq})
        assert hub.publish("t", data) == 1
        assert client.recv_text(timeout=20) == publication("t", seq, data)
    hub.stats()
    out, err = hub.finish()
    assert hub.proc.returncode == 0, err[-4000:]
    _assert_valgrind_clean(err)


def test_example_publish_builds_and_runs(programs, clients):
    proc = subprocess.Popen(
        [str(programs["publish"]), "0", "3"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        banner = proc.stdout.readline()
        found = re.search(r"ws://127\.0\.0\.1:(\d+)/api/ws\?topics=ticks", banner)
        assert found, banner
        client = clients(int(found.group(1)), ["ticks"])
        for tick in range(1, 4):
            data = f'{{"tick":{tick},"of":3}}'
            assert client.recv_text() == publication("ticks", tick, data)
        out, err = proc.communicate(timeout=PROCESS_TIMEOUT)
        assert proc.returncode == 0, err
        assert '"published":3' in out
        assert client.expect_closed().rcvd.code == 1001
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


# --------------------------------------------------------------------------
# hardening options and host hooks set from C (tests/c/hooks_driver.c)
# --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def hooks_program(c_lib, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hooks_bin")
    return _gcc(ROOT / "tests/c/hooks_driver.c", out / "hooks_driver",
                ["-pthread", f"-L{c_lib}", "-lwshub", f"-Wl,-rpath,{c_lib}"])


HOOK_PREFIXES = ("EVENT ", "AUTH\t", "BADDATA ")


class HooksDriver:
    """tests/c/hooks_driver.c running a hub. Its callbacks print at any
    time on wshub's threads, so a reader thread sorts stdout: lines from
    the callbacks go to ``hooks``, the rest are answers to commands."""

    def __init__(self, program: Path, *args: str):
        self.proc = subprocess.Popen(
            [str(program), *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, encoding="utf-8", bufsize=1,
        )
        self.hooks: list[str] = []
        self._answers: queue.Queue[str | None] = queue.Queue()
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        first = self.answer(waiting_for="PORT")
        assert first.startswith("PORT "), first
        self.port = int(first.split()[1])

    def _read(self) -> None:
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            if line.startswith(HOOK_PREFIXES):
                with self._changed:
                    self.hooks.append(line)
                    self._changed.notify_all()
            else:
                self._answers.put(line)
        self._answers.put(None)

    def answer(self, waiting_for: str = "") -> str:
        try:
            line = self._answers.get(timeout=PROCESS_TIMEOUT)
        except queue.Empty:
            raise AssertionError(f"no answer within {PROCESS_TIMEOUT}s "
                                 f"while waiting for {waiting_for!r}") from None
        if line is None:
            self.proc.wait(timeout=PROCESS_TIMEOUT)
            raise AssertionError(
                f"hooks_driver exited ({self.proc.returncode}) while waiting for "
                f"{waiting_for!r}: {self.proc.stderr.read()}")
        return line

    def command(self, line: str) -> str:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.answer(waiting_for=line)

    def publish(self, topic: str, data: str, key: str | None = None) -> int:
        answer = self.command(f"PUB {topic} {key or '-'} {data}")
        assert answer.startswith("OK "), answer
        return int(answer[3:])

    def stats(self) -> dict:
        answer = self.command("STATS")
        assert answer.startswith("STATS "), answer
        return json.loads(answer[6:])

    def wait_hooks(self, predicate, timeout: float = 5.0) -> list[str]:
        """Wait until ``predicate(lines so far)`` holds; return the lines."""
        with self._changed:
            if not self._changed.wait_for(lambda: predicate(self.hooks), timeout):
                raise AssertionError(f"callback lines so far: {self.hooks}")
            return list(self.hooks)

    def events(self) -> list[tuple[str, int]]:
        with self._changed:
            lines = list(self.hooks)
        return [(line.split()[1], int(line.split()[2]))
                for line in lines if line.startswith("EVENT ")]

    def wait_events(self, expected: list[tuple[str, int]], timeout: float = 5.0) -> None:
        def seen(_lines) -> bool:
            return self.events() == expected
        try:
            self.wait_hooks(seen, timeout)
        except AssertionError:
            raise AssertionError(
                f"events {self.events()} never became {expected}") from None

    def finish(self) -> str:
        """Close stdin (the driver stops the hub); return the last answer."""
        self.proc.stdin.close()
        last = self.answer(waiting_for="STOPPED")
        self.proc.wait(timeout=PROCESS_TIMEOUT * 6)
        return last

    def kill(self) -> None:
        end_process(self.proc, self._reader)


@pytest.fixture
def hooks_driver(hooks_program):
    """Factory: ``hooks_driver("name=value", ...)`` -> HooksDriver; killed at
    teardown if a test left it running."""
    started = []

    def factory(*args: str) -> HooksDriver:
        d = HooksDriver(hooks_program, *args)
        started.append(d)
        return d

    yield factory
    for d in started:
        d.kill()


def _handshake_status(port: int, query: str | None = None, **kwargs) -> int:
    """The HTTP status of a refused handshake."""
    with pytest.raises(websockets.InvalidStatus) as info:
        open_ws(port, query=query, **kwargs).close()
    return info.value.response.status_code


def test_allowed_origins_from_c_refuse_other_origins_with_403(hooks_driver, clients):
    hub = hooks_driver("origin=https://app.example.com", "origin=https://admin.example.com")
    assert _handshake_status(hub.port, origin="https://evil.example.net") == 403
    # Exact match: a scheme, port or trailing path makes another origin.
    assert _handshake_status(hub.port, origin="http://app.example.com") == 403
    assert _handshake_status(hub.port, origin="https://app.example.com:8443") == 403

    for origin in ("https://app.example.com", "https://admin.example.com"):
        listed = clients(hub.port, ["t"], origin=origin)
        assert listed.ack["topics"] == ["t"]
    no_origin = clients(hub.port, ["t"])  # not a browser: no Origin header
    assert no_origin.ack["topics"] == ["t"]

    assert hub.publish("t", "1") == 3
    stats = hub.stats()
    assert stats["handshakes_rejected"]["origin"] == 3
    assert stats["connections"] == 3


def test_authorize_callback_from_c_sees_the_request_and_decides(hooks_driver, clients):
    hub = hooks_driver("auth=ok")
    good = clients(hub.port, query="topics=t,u&room=7&q=a%20b&q=%00",
                   additional_headers={"Authorization": "Bearer ok", "X-Trace": "a\"b",
                                       "Cookie": 'session=s1; theme="dark"'})
    assert good.ack["topics"] == ["t", "u"]
    assert _handshake_status(hub.port, query="topics=t",
                             additional_headers={"Authorization": "Bearer bad"}) == 401
    assert _handshake_status(hub.port) == 403

    lines = hub.wait_hooks(lambda lines: len(lines) >= 3)
    assert not [line for line in lines if line.startswith("BADDATA")], lines
    calls = [line.split("\t") for line in lines]
    assert all(len(fields) == 5 for fields in calls), lines
    _, path, query, request_json, status = calls[0]
    assert (path, query, status) == ("/api/ws", "topics=t,u&room=7&q=a%20b&q=%00", "0")
    request = json.loads(request_json)
    headers = request["headers"]
    assert ["authorization", "Bearer ok"] in headers
    assert ["x-trace", 'a"b'] in headers  # names lower-cased
    assert ["upgrade", "websocket"] in [[n, v.lower()] for n, v in headers]
    # Decoded, in order; the parameter that decodes to a NUL is left out.
    assert request["params"] == [["topics", "t,u"], ["room", "7"], ["q", "a b"]]
    assert request["cookies"] == [["session", "s1"], ["theme", "dark"]]
    assert request["topics"] == ["t", "u"] and request["topics_len_ok"]
    assert request["host"] == "127.0.0.1"
    assert request["port"] == good.ws.local_address[1]
    # (path, query, status) of the two refused handshakes, in order.
    assert [(f[1], f[2], f[4]) for f in calls[1:3]] == [
        ("/api/ws", "topics=t", "401"), ("/api/ws", "", "403")]
    assert ["authorization", "Bearer bad"] in json.loads(calls[1][3])["headers"]

    # Only the accepted client joined; refused handshakes were counted.
    assert hub.publish("t", '"hi"') == 1
    assert good.recv_text() == publication("t", 1, '"hi"')
    stats = hub.stats()
    assert stats["connections"] == 1
    assert stats["handshakes_rejected"]["auth"] == 2


def test_authorize_from_c_restricts_topics_with_grants(hooks_driver, clients):
    hub = hooks_driver("auth=ok")
    auth = {"additional_headers": {"Authorization": "Bearer ok"}}
    # Granted topics only; invalid grants and NULLs are refused with codes.
    limited = clients(hub.port, query="topics=a,b,c&grant=a&grant=c&grant=bad%20name&badgrant",
                      **auth)
    assert limited.ack["topics"] == ["a", "c"]
    assert limited.ack["reasons"] == {"b": "not_allowed"}
    lines = hub.wait_hooks(lambda lines: len(lines) >= 1)
    # WSHUB_OK, WSHUB_OK, WSHUB_ERR_INVALID_TOPIC, then INVALID_ARGUMENT twice.
    assert json.loads(lines[0].split("\t")[3])["grants"] == [0, 0, -3, -1, -1]
    # A later subscribe is held to the grants too.
    limited.send_json({"type": "subscribe", "topics": ["b"]})
    assert limited.recv_json()["rejected"] == ["b"]
    # WSHUB_AUTHORIZE_GRANTED with no grant: admitted to nothing.
    nothing = clients(hub.port, query="topics=a&granted", **auth)
    assert nothing.ack["topics"] == []
    # ALLOW without grants: everything.
    everything = clients(hub.port, query="topics=a,b", **auth)
    assert everything.ack["topics"] == ["a", "b"]
    assert hub.publish("b", "1") == 1


def test_authorize_from_c_runs_concurrently(hooks_driver, clients):
    """The documented contract: authorize may run on several threads at once."""
    hub = hooks_driver("auth=ok")
    results: list = []

    def connect() -> None:
        results.append(clients(hub.port, query="topics=t&hold=2",
                               additional_headers={"Authorization": "Bearer ok"}))

    threads = [threading.Thread(target=connect) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=PROCESS_TIMEOUT)
    assert len(results) == 2
    lines = hub.wait_hooks(lambda lines: len(lines) >= 2)
    assert [json.loads(line.split("\t")[3])["concurrent"] for line in lines] == [2, 2]


def test_authorize_timeout_from_c_answers_503(hooks_driver, clients):
    hub = hooks_driver("auth=ok", "auth_timeout=0.3")
    started = time.monotonic()
    assert _handshake_status(hub.port, query="sleep=1500",
                             additional_headers={"Authorization": "Bearer ok"}) == 503
    assert time.monotonic() - started < 1.4  # refused before the callback returned
    # The hub still serves: a quick answer gets through.
    assert clients(hub.port, ["t"],
                   additional_headers={"Authorization": "Bearer ok"}).ack["topics"] == ["t"]


def test_stop_from_c_waits_for_an_authorize_that_outlived_its_timeout(hooks_driver):
    """wshub_stop() returns only once the callback returned, so the host
    may free authorize_data then (the runtime itself waits only 1 s)."""
    hub = hooks_driver("auth=ok", "auth_timeout=0.3")
    assert _handshake_status(hub.port, query="sleep=4000",
                             additional_headers={"Authorization": "Bearer ok"}) == 503
    assert hub.finish() == "STOPPED"
    assert [line for line in hub.hooks if "sleep=4000" in line], hub.hooks


def test_on_subscription_from_c_reports_first_and_last_subscriber(hooks_driver, clients):
    hub = hooks_driver("events")
    first = clients(hub.port, ["odds"])
    hub.wait_events([("odds", 1)])
    second = clients(hub.port, ["odds"])
    first.close()
    # Events come in order, so once ("scores", 1) is there, nothing about
    # "odds" happened for the second subscriber or the first one leaving.
    barrier = clients(hub.port, ["scores"])
    hub.wait_events([("odds", 1), ("scores", 1)])
    second.close()
    hub.wait_events([("odds", 1), ("scores", 1), ("odds", 0)])

    # subscribe / unsubscribe messages count too.
    assert barrier.subscribe(["odds"])["topics"] == ["odds", "scores"]
    hub.wait_events([("odds", 1), ("scores", 1), ("odds", 0), ("odds", 1)])
    assert barrier.unsubscribe(["odds", "scores"])["topics"] == []
    hub.wait_events([("odds", 1), ("scores", 1), ("odds", 0), ("odds", 1),
                     ("odds", 0), ("scores", 0)])
    assert not [line for line in hub.hooks if line.startswith("BADDATA")], hub.hooks
    assert hub.finish() == "STOPPED"
    assert hub.proc.returncode == 0, hub.proc.stderr.read()


def test_conflate_policy_from_c_delivers_keyed_publications(hooks_driver, clients):
    hub = hooks_driver("slow_client=1")  # WSHUB_SLOW_CLIENT_CONFLATE
    client = clients(hub.port, ["odds", "scores"])
    sent = []
    for i in range(3):
        for match in ("m1", "m2"):
            data = json.dumps({"match": match, "i": i}, separators=(",", ":"))
            assert hub.publish("odds", data, key=match) == 1
            sent.append(publication("odds", len(sent) + 1, data))
    assert hub.publish("scores", "[1]") == 1  # no key: the topic is the key
    assert hub.publish("scores", "[2]") == 1
    got = [client.recv_text() for _ in range(len(sent) + 2)]
    assert got == sent + [publication("scores", 1, "[1]"), publication("scores", 2, "[2]")]
    stats = hub.stats()
    assert stats["slow_consumer_closes"] == 0
    assert stats["connections"] == 1
    # A key is not a topic: nothing is published under it.
    assert hub.publish("m1", "0") == 0


def test_conflate_policy_from_c_keeps_a_stuck_client_with_newest_values(hooks_driver):
    """Only a light check that the C value reaches the policy (the Python
    tests cover the stuck client at scale): a client that stops reading
    is kept, and gets the newest value of each key when it reads again."""
    hub = hooks_driver("slow_client=1", "send_queue=8")
    stuck = RawWS(hub.port, query="topics=odds", rcvbuf=4096)
    try:
        wait_until(lambda: hub.stats()["topics"].get("odds") == 1,
                   message=lambda: f"stats: {hub.stats()}")
        pad = "x" * 4000
        last = {}
        n = 0
        while True:
            if n % 10 == 0:
                stats = hub.stats()
                assert stats["slow_consumer_closes"] == 0, stats
                if stats["conflated"] > 0:
                    break
            n += 1
            assert n <= 5000, f"nothing conflated after {n - 1} publications: {hub.stats()}"
            match = f"m{n % 2}"
            hub.publish("odds", json.dumps({"match": match, "n": n, "pad": pad}), key=match)
            last[match] = n
        stats = hub.stats()
        assert stats["slow_consumer_closes"] == 0
        assert stats["connections"] == 1

        stuck.sock.settimeout(10)
        seqs, newest = [], {}
        while newest != last:
            frame = stuck.read_frame()
            assert frame is not None, f"stuck client was disconnected: {hub.stats()}"
            message = json.loads(frame[1])
            if message["type"] != "message":
                continue
            assert message["seq"] == message["data"]["n"]
            seqs.append(message["seq"])
            newest[message["data"]["match"]] = message["seq"]
        assert seqs == sorted(set(seqs))
        assert len(seqs) < n
        assert hub.stats()["connections"] == 1
    finally:
        stuck.close()


@pytest.mark.parametrize("args, field", [
    (["slow_client=7"], "slow_client"),
    (["slow_client=-1"], "slow_client"),
    (["rate_limit=0"], "rate_limit"),
    (["rate_burst=0"], "rate_burst"),
    (["max_topics=0"], "max_topics_per_connection"),
    (["max_handshake_bytes=0"], "max_handshake_bytes"),
    (["max_handshake_bytes=16777217"], "max_handshake_bytes"),
    (["max_headers=7"], "max_headers"),
    (["max_headers=1025"], "max_headers"),
])
def test_invalid_hook_options_from_c_fail_start_with_invalid_config(hooks_program, args, field):
    result = subprocess.run([str(hooks_program), *args], capture_output=True, text=True,
                            timeout=PROCESS_TIMEOUT)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.startswith("START_ERR "), result.stdout
    code, _, message = result.stdout.strip().removeprefix("START_ERR ").partition(" ")
    assert int(code) == -4  # WSHUB_ERR_INVALID_CONFIG
    assert field in message, message


def test_max_topics_per_connection_from_c_rejects_extra_topics(hooks_driver, clients):
    hub = hooks_driver("max_topics=1")
    both = clients(hub.port, ["a", "b"])
    assert both.ack["topics"] == ["a"]
    assert both.ack["rejected"] == ["b"]
    assert both.ack["reasons"] == {"b": "too_many_topics"}

    answer = both.subscribe(["c"])
    assert answer["type"] == "subscribed"
    assert answer["topics"] == ["a"]
    assert answer["rejected"] == ["c"]
    assert answer["reasons"] == {"c": "too_many_topics"}
    # Room again after leaving a topic.
    assert both.unsubscribe(["a"])["topics"] == []
    assert both.subscribe(["c"]) == {"type": "subscribed", "topics": ["c"], "rejected": []}


def _raw_upgrade_status(port: int, extra_headers: list[str]) -> int:
    """The HTTP status the hub answers a raw upgrade request with."""
    lines = ["GET /api/ws HTTP/1.1", "Host: 127.0.0.1", "Upgrade: websocket",
             "Connection: Upgrade", "Sec-WebSocket-Key: MDEyMzQ1Njc4OWFiY2RlZg==",
             "Sec-WebSocket-Version: 13", *extra_headers]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        sock.settimeout(5)
        head = b""
        while b"\r\n" not in head:
            chunk = sock.recv(4096)
            assert chunk, f"closed without an answer: {head!r}"
            head += chunk
        return int(head.split(b" ")[1])


# The five headers of an upgrade plus 15 (20 headers), and one 6 KB header.
TWENTY_HEADERS = [f"x-h{i}: v" for i in range(15)]
SIX_KB_HEAD = ["x-big: " + "a" * 6000]


def test_request_head_limits_from_c_refuse_with_431(hooks_driver):
    default = hooks_driver()
    assert _raw_upgrade_status(default.port, TWENTY_HEADERS) == 101
    assert _raw_upgrade_status(default.port, SIX_KB_HEAD) == 101
    few = hooks_driver("max_headers=16")
    assert _raw_upgrade_status(few.port, TWENTY_HEADERS) == 431
    assert few.stats()["handshakes_rejected"]["too_many_headers"] == 1
    small = hooks_driver("max_handshake_bytes=4096")
    assert _raw_upgrade_status(small.port, SIX_KB_HEAD) == 431
    assert small.stats()["handshakes_rejected"]["too_large"] == 1
    assert _raw_upgrade_status(small.port, TWENTY_HEADERS) == 101


def test_options_of_the_previous_layout_are_read_with_defaults_after_it(hooks_driver):
    """A host built before max_handshake_bytes and max_headers existed
    passes the smaller struct_size: the hub starts (the junk where those
    fields would be is not read) and they take their defaults."""
    old = hooks_driver("old_layout")
    assert _raw_upgrade_status(old.port, TWENTY_HEADERS) == 101
    assert _raw_upgrade_status(old.port, [f"x-h{i}: v" for i in range(60)]) == 431


def _start_error(hooks_program, *args: str) -> tuple[int, str]:
    result = subprocess.run([str(hooks_program), *args], capture_output=True, text=True,
                            timeout=PROCESS_TIMEOUT)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.startswith("START_ERR "), result.stdout
    code, _, message = result.stdout.strip().removeprefix("START_ERR ").partition(" ")
    return int(code), message


WSHUB_ERR_TLS = -14


def test_tls_from_c_serves_wss_reloads_and_reports_bad_files(hooks_driver, hooks_program,
                                                             tmp_path):
    """certfile/keyfile set from C: wss:// with the test CA's certificate,
    wshub_reload_tls() swapping it, and bad files as WSHUB_ERR_TLS."""
    pytest.importorskip("cryptography", reason="cryptography not installed")
    from cert_authority import CertAuthority, tls_socket

    ca = CertAuthority(tmp_path)
    first = ca.issue("first")
    hub = hooks_driver(f"certfile={ca.certfile}", f"keyfile={ca.keyfile}")
    with tls_socket(ca, hub.port) as sock:
        assert sock.getpeercert(binary_form=True) == first
    ws = ws_connect(f"wss://{HOST}:{hub.port}/api/ws?topics=t", ssl=ca.context(),
                    open_timeout=10, **_NO_PROXY)
    try:
        assert json.loads(ws.recv(timeout=5))["type"] == "connected"
        second = ca.issue("second")
        assert hub.command("RELOAD_TLS") == "OK 0"
        with tls_socket(ca, hub.port) as sock:
            assert sock.getpeercert(binary_form=True) == second
        assert hub.publish("t", '{"n":1}') == 1
        assert ws.recv(timeout=5) == publication("t", 1, '{"n":1}')
        # A reload from a broken key fails and keeps the second certificate.
        ca.keyfile.write_text("not a key\n")
        answer = hub.command("RELOAD_TLS")
        assert answer.startswith(f"ERR {WSHUB_ERR_TLS} "), answer
        assert "keyfile" in answer
        with tls_socket(ca, hub.port) as sock:
            assert sock.getpeercert(binary_form=True) == second
    finally:
        ws.close()
    # Reloading a hub started without TLS is refused the same way.
    plain = hooks_driver()
    assert plain.command("RELOAD_TLS").startswith(f"ERR {WSHUB_ERR_TLS} ")
    # Bad files at start: WSHUB_ERR_TLS naming the file; one without the
    # other is a configuration mistake.
    code, message = _start_error(hooks_program, f"certfile={tmp_path / 'missing.pem'}",
                                 f"keyfile={ca.keyfile}")
    assert code == WSHUB_ERR_TLS and "certfile" in message, message
    code, message = _start_error(hooks_program, f"certfile={ca.certfile}")
    assert code == -4, message  # WSHUB_ERR_INVALID_CONFIG


def test_compression_from_c_negotiates_deflate_and_compresses_once(hooks_driver):
    hub = hooks_driver("compression=1", "compression_level=9", "compression_min_size=0")
    url = f"ws://{HOST}:{hub.port}/api/ws?topics=t"
    with ws_connect(url, open_timeout=10, **_NO_PROXY) as a, \
            ws_connect(url, open_timeout=10, **_NO_PROXY) as b:
        for ws in (a, b):
            assert "permessage-deflate" in ws.response.headers["Sec-WebSocket-Extensions"]
            assert json.loads(ws.recv(timeout=5))["type"] == "connected"
        data = json.dumps({"odds": [1.5] * 200})
        assert hub.publish("t", data) == 2
        for ws in (a, b):
            assert ws.recv(timeout=5) == publication("t", 1, data)
        stats = hub.stats()
        assert stats["deflate_clients"] == 2
        assert stats["compressed_publications"] == 1
        assert 0 < stats["compression_bytes_out"] < stats["compression_bytes_in"]


def test_the_layout_before_compression_starts_without_it(hooks_driver):
    """A host built before the compression fields passes the sixth
    layout's struct_size: the junk where they would be is not read, and
    compression stays off."""
    hub = hooks_driver("tls_layout")
    with ws_connect(f"ws://{HOST}:{hub.port}/api/ws?topics=t", open_timeout=10,
                    **_NO_PROXY) as ws:
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
    assert hub.stats()["deflate_clients"] == 0


@pytest.mark.parametrize("args, field", [
    (["compression=2"], "compression"),
    (["compression=-1"], "compression"),
    (["compression=1", "compression_level=0"], "compression_level"),
    (["compression=1", "compression_level=10"], "compression_level"),
    (["compression=1", "compression_level=-3"], "compression_level"),
])
def test_invalid_compression_options_from_c_fail_start(hooks_program, args, field):
    code, message = _start_error(hooks_program, *args)
    assert code == -4, message  # WSHUB_ERR_INVALID_CONFIG
    assert field in message, message


def test_rate_limit_and_burst_from_c_limit_then_close(hooks_driver, clients):
    # One token every 10 s: the burst is all a quick test can spend.
    hub = hooks_driver("rate_limit=0.1", "rate_burst=2")
    client = clients(hub.port)
    client.ping(0)
    client.ping(1)
    for _ in range(2):  # rate_burst refusals in a row are answered...
        refused = client.request({"type": "ping", "id": 2})
        assert refused["type"] == "error" and refused["error"] == "rate_limited", refused
        assert "more than 0.1 messages" in refused["message"], refused
    client.send_json({"type": "ping", "id": 3})  # ...and one more closes
    assert client.expect_closed().rcvd.code == 1008


def test_default_rate_limit_from_c_allows_a_quick_burst(hooks_driver, clients):
    """The contrast for the test above: without rate options the same
    pace is fine."""
    hub = hooks_driver()
    client = clients(hub.port)
    for i in range(6):
        client.ping(i)
