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
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import connect_client, publication

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


class Driver:
    """tests/c/hub_driver.c running a hub; talk to it line by line."""

    def __init__(self, program: Path, *topics: str, valgrind: bool = False):
        argv = [str(program), *topics]
        self.proc = subprocess.Popen(
            _valgrind(*argv) if valgrind else argv,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, encoding="utf-8", bufsize=1,
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
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=PROCESS_TIMEOUT)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None and not pipe.closed:
                try:
                    pipe.close()
                except OSError:
                    pass


@pytest.fixture
def driver(programs):
    """Factory: ``driver(*allowed_topics)`` -> Driver; killed at teardown
    if a test left it running."""
    started = []

    def factory(*topics: str, valgrind: bool = False) -> Driver:
        d = Driver(programs["hub_driver"], *topics, valgrind=valgrind)
        started.append(d)
        return d

    yield factory
    for d in started:
        d.kill()


@pytest.fixture
def clients():
    """Factory: ``clients(port, topics)`` -> helpers.Client; closed at
    teardown."""
    opened = []

    def factory(port: int, topics=None):
        client = connect_client(port, topics)
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
    declared = set(re.findall(r"\b(wshub_\w+)\(", HEADER.read_text()))
    assert exported_names == declared


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
        "slow_consumer_closes", "conflated", "connections_opened", "connections_closed",
        "handshakes_rejected", "backplane_published", "backplane_received",
        "backplane_dropped", "backplane_missed", "backplane_reconnects",
        "backplane_connected"}
    assert stats["backplane_connected"] is False


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
