"""Scale-out (docs/scaling.md): several worker processes sharing one port
(``reuse_port=True``) and a second "host" (a hub on another port), all on
one Redis backplane. Every client on every instance must receive every
publication, from whichever instance, exactly once and in ``seq`` order."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from helpers import connect_client, wait_until
from redis_server import free_port, needs_redis, redis_server  # noqa: F401 (fixture)

pytestmark = needs_redis

WORKER = Path(__file__).resolve().parent / "scaleout_worker.py"
TOPICS = ["t", "u"]
BURST = 50  # publications per topic per instance


class Worker:
    """A ``scaleout_worker.py`` process (one hub), driven over its pipes."""

    def __init__(self, port: int, redis_url: str):
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER), str(port), redis_url],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        ready = self.read_line()
        assert ready.startswith("ready "), ready
        self.port = int(ready.split()[1])

    def read_line(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, f"worker exited with {self.process.wait(timeout=10)}"
        return line.strip()

    def send(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def stats(self) -> dict:
        self.send("stats")
        return json.loads(self.read_line())

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                self.send("quit")
                self.process.wait(timeout=15)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait(timeout=10)
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def workers():
    started: list[Worker] = []

    def start(port: int, redis_url: str) -> Worker:
        worker = Worker(port, redis_url)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def clients():
    opened = []

    def connect(port: int):
        client = connect_client(port, TOPICS)
        opened.append(client)
        return client

    yield connect
    for client in opened:
        client.close()


def test_every_client_on_every_instance_gets_every_publication_once_in_order(
        redis_server, workers, clients):
    # "Host" 1: two worker processes on one port; the first picks it.
    first = workers(0, redis_server.url)
    second = workers(first.port, redis_server.url)
    assert second.port == first.port
    # "Host" 2: another process with a hub on a port of its own.
    other_host = workers(0, redis_server.url)
    assert other_host.port != first.port
    instances = [first, second, other_host]

    # The kernel spreads connections over the workers sharing the port;
    # connect until each worker has clients of its own.
    shared_port_clients = []
    while True:
        shared_port_clients.append(clients(first.port))
        counts = [first.stats()["connections"], second.stats()["connections"]]
        if min(counts) >= 2:
            break
        assert len(shared_port_clients) < 200, counts
    all_clients = shared_port_clients + [clients(other_host.port) for _ in range(2)]

    # Every instance publishes on every topic, all at once.
    tags = {id(w): f"w{n}" for n, w in enumerate(instances)}
    for worker in instances:
        for topic in TOPICS:
            worker.send(f"burst {topic} {BURST} {tags[id(worker)]}")
    for worker in instances:
        for _ in TOPICS:
            assert worker.read_line() == "done"

    expected = len(instances) * len(TOPICS) * BURST
    for client in all_clients:
        messages = client.recv_messages(expected, timeout=30)
        for topic in TOPICS:
            on_topic = [m for m in messages if m["topic"] == topic]
            seqs = [m["seq"] for m in on_topic]
            # Exactly once, in order: seq strictly increasing, one per
            # publication, and each publisher's own order kept.
            assert seqs == sorted(set(seqs)), seqs
            assert len(on_topic) == len(instances) * BURST
            for tag in tags.values():
                mine = [m["data"]["i"] for m in on_topic if m["data"]["from"] == tag]
                assert mine == list(range(BURST)), (topic, tag, mine)
        with pytest.raises(AssertionError):  # and nothing more
            client.recv_json(timeout=0.2)

    for worker in instances:
        stats = wait_until(lambda: (s := worker.stats())["backplane_received"] == expected and s,
                           timeout=10)
        assert stats["backplane_connected"] is True
        assert stats["backplane_published"] == len(TOPICS) * BURST
        assert stats["backplane_dropped"] == stats["backplane_missed"] == 0


ROOT = Path(__file__).resolve().parent.parent
GUNICORN = Path(sys.executable).parent / "gunicorn"


@pytest.mark.skipif(not GUNICORN.exists(), reason="gunicorn is not installed (requirements-examples.txt)")
def test_gunicorn_example_serves_one_feed_from_four_workers(redis_server, tmp_path):
    """examples/scaleout/run.sh and check.py, as the README runs them."""
    app_port, ws_port = free_port(), free_port()
    env = {**os.environ, "WSHUB_BACKPLANE": redis_server.url, "WSHUB_WS_PORT": str(ws_port),
           "BIND": f"127.0.0.1:{app_port}", "VENV": str(Path(sys.executable).parent.parent)}
    log = tmp_path / "gunicorn.log"
    with open(log, "wb") as out:
        server = subprocess.Popen([str(ROOT / "examples/scaleout/run.sh")], env=env,
                                  stdout=out, stderr=subprocess.STDOUT)
    try:
        def app_is_up() -> bool:
            assert server.poll() is None, f"gunicorn exited:\n{log.read_text()}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{app_port}/stats", timeout=1):
                    return True
            except OSError:
                return False

        wait_until(app_is_up, timeout=60, interval=0.1, message=lambda: log.read_text())
        check = subprocess.run(
            [sys.executable, str(ROOT / "examples/scaleout/check.py"),
             "--app", f"http://127.0.0.1:{app_port}",
             "--ws", f"ws://127.0.0.1:{ws_port}/api/ws"],
            capture_output=True, text=True, timeout=60)
        assert check.returncode == 0, check.stdout + check.stderr + log.read_text()
        assert "8/8 clients received all 40 publications" in check.stdout
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
