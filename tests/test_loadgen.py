"""The benchmarks' measuring instrument (benches/loadgen) against wshub.

The loadgen parses server frames by hand for speed; its `--verify K` mode
also opens K tokio-tungstenite clients that parse every frame with serde_json
and must end with the same per-client totals (messages, bytes, sums of seq
and of t, gaps, first and last seq) as every raw client. Here it subscribes
to a real hub publishing a fixed count at a low rate (the benchmark server
script, so the same code path as `benches/run.py`), and the totals must match
what was published."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOADGEN_DIR = os.path.join(REPO, "benches", "loadgen")
LOADGEN = os.path.join(LOADGEN_DIR, "target", "release", "loadgen")
SERVER = os.path.join(REPO, "benches", "servers", "wshub_server.py")
sys.path.insert(0, os.path.join(REPO, "benches"))
from run import Proc  # noqa: E402  (benches/run.py's child process with JSON lines on stdout)


@pytest.fixture(scope="module")
def loadgen():
    subprocess.run(["cargo", "build", "--release", "--quiet", "--manifest-path",
                    os.path.join(LOADGEN_DIR, "Cargo.toml")], check=True, timeout=900)
    return LOADGEN


@pytest.mark.timeout(960)
def test_raw_frame_parser_agrees_with_tungstenite_clients(loadgen, tmp_path):
    count, raw, verify = 2000, 20, 3
    server = Proc([sys.executable, SERVER, "--port", "0", "--topic", "bench", "--payload", "100",
                   "--mode", "rate", "--rate", "1000", "--count", str(count)],
                  "server", str(tmp_path / "server.err"))
    lg = None
    try:
        port = server.wait_event("listening", 30)["port"]
        lg = Proc([loadgen, "--url", f"ws://127.0.0.1:{port}/api/ws?topics=bench", "-c", str(raw),
                   "--verify", str(verify), "--start", "stdin", "-d", "3", "--drain", "2"],
                  "loadgen", str(tmp_path / "loadgen.err"))
        ready = lg.wait_event("ready", 60)
        assert ready["ready"] == raw + verify, ready
        # The loadgen counts per client what arrives in its measuring
        # window: it must be measuring before the first publication leaves.
        lg.send("go")
        lg.wait_event("started", 30)
        server.send("go")
        result = lg.wait_event("result", 60)
    finally:
        if lg:
            lg.stop()
        server.stop()
    assert result["verify"]["ok"], json.dumps(result["verify"], indent=1)
    # Every raw client got every publication, in order, with its timestamp.
    assert result["received_total"] == count * raw, result["received_total"]
    assert result["per_client"]["min"] == result["per_client"]["max"] == count, result["per_client"]
    assert result["gaps"] == 0 and result["out_of_order"] == 0, result
    assert result["last_seq"]["min"] == result["last_seq"]["max"] == count, result["last_seq"]
    assert not result["errors"], result["errors"]
    # One tungstenite key and the raw clients' key are the same tuple.
    (key, (raws, tungs)), = result["verify"]["distinct"].items()
    assert (raws, tungs) == (raw, verify), key
    assert result["latency_us"]["samples"] > 0 and result["latency_us"]["max"] < 5_000_000, result["latency_us"]
