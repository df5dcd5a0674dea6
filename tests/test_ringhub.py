"""The benchmarks' latency reference `ring-ref` (benches/loadgen/src/bin/ringhub.rs).

Subscribed by the loadgen's raw clients and its tokio-tungstenite `--verify`
clients, a ringhub publishing a fixed count at a low rate must deliver every
publication to every client, in order (same per-client totals for both kinds
of client); and a subscriber that falls more than the ring behind (a burst
longer than the ring) must be closed with 1008."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOADGEN_DIR = os.path.join(REPO, "benches", "loadgen")
BIN = os.path.join(LOADGEN_DIR, "target", "release")
sys.path.insert(0, os.path.join(REPO, "benches"))
from run import Proc  # noqa: E402  (benches/run.py's child process with JSON lines on stdout)


@pytest.fixture(scope="module")
def bins():
    subprocess.run(["cargo", "build", "--release", "--quiet", "--manifest-path",
                    os.path.join(LOADGEN_DIR, "Cargo.toml")], check=True, timeout=900)
    return os.path.join(BIN, "loadgen"), os.path.join(BIN, "ringhub")


def run_pair(bins, tmp_path, server_args, raw, verify, duration, drain):
    loadgen, ringhub = bins
    server = Proc([ringhub, "--port", "0", "--topic", "bench", "--payload", "100"] + server_args,
                  "ringhub", str(tmp_path / "server.err"))
    lg = None
    try:
        port = server.wait_event("listening", 30)["port"]
        argv = [loadgen, "--url", f"ws://127.0.0.1:{port}/api/ws?topics=bench", "-c", str(raw),
                "--start", "stdin", "-d", str(duration), "--drain", str(drain)]
        if verify:
            argv += ["--verify", str(verify)]
        lg = Proc(argv, "loadgen", str(tmp_path / "loadgen.err"))
        ready = lg.wait_event("ready", 60)
        assert ready["ready"] == raw + verify, ready
        server.send("go")
        lg.send("go")
        result = lg.wait_event("result", 60)
        server.send("stop")
        stats = server.wait_event("hub_stats", 30)["stats"]
    finally:
        if lg:
            lg.stop()
        server.stop()
    return result, stats


@pytest.mark.timeout(960)
def test_every_publication_reaches_every_subscriber_in_order(bins, tmp_path):
    count, raw, verify = 2000, 20, 3
    result, stats = run_pair(bins, tmp_path, ["--mode", "rate", "--rate", "1000", "--count", str(count)],
                             raw, verify, duration=3, drain=2)
    assert result["verify"]["ok"], json.dumps(result["verify"], indent=1)
    assert result["received_total"] == count * raw, result["received_total"]
    # (per_client counts the measuring window only, whose start races the
    # first publication: the whole stream is first_seq..last_seq, no gaps.)
    assert result["first_seq"]["min"] == result["first_seq"]["max"] == 1, result["first_seq"]
    assert result["gaps"] == 0 and result["out_of_order"] == 0, result
    assert result["last_seq"]["min"] == result["last_seq"]["max"] == count, result["last_seq"]
    assert not result["errors"] and not result["close_codes"], result
    # The hub wrote every frame to every client, in no more writes than frames.
    assert stats["sent"] == count * (raw + verify), stats
    assert 0 < stats["writes"] <= stats["sent"], stats
    assert stats["slow_closed"] == 0, stats


@pytest.mark.timeout(960)
def test_subscriber_behind_the_ring_is_closed_1008(bins, tmp_path):
    # 64-entry ring, 20,000 publications back to back: the publisher laps
    # the ring long before the I/O thread has written the backlog.
    result, stats = run_pair(bins, tmp_path, ["--mode", "burst", "--count", "20000", "--ring", "64"],
                             raw=10, verify=0, duration=2, drain=1)
    assert result["close_codes"] == {"1008": 10}, result
    assert stats["slow_closed"] == 10, stats
    assert result["gaps"] == 0, result  # what did arrive came in order, without holes
