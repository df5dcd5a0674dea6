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


def _run_deflate(loadgen, tmp_path, server_argv, count, raw, verify):
    """`loadgen --deflate` (raw clients) and `--verify` tungstenite clients (no
    extension offered, so uncompressed) against one server publishing `count`
    JSON payloads of 1 KiB; returns (loadgen result, server lines after stop)."""
    server = Proc(server_argv + ["--port", "0", "--topic", "bench", "--payload", "1024", "--payload-kind", "json",
                                 "--mode", "rate", "--rate", "500", "--count", str(count)],
                  "server", str(tmp_path / "server.err"))
    lg = None
    try:
        port = server.wait_event("listening", 30)["port"]
        lg = Proc([loadgen, "--url", f"ws://127.0.0.1:{port}/api/ws?topics=bench", "-c", str(raw),
                   "--verify", str(verify), "--deflate", "--start", "stdin", "-d", "3", "--drain", "2"],
                  "loadgen", str(tmp_path / "loadgen.err"))
        ready = lg.wait_event("ready", 60)
        assert ready["ready"] == raw + verify, ready
        lg.send("go")
        lg.wait_event("started", 30)
        server.send("go")
        result = lg.wait_event("result", 60)
        server.send("stop")
        is_wshub = any(a.endswith("wshub_server.py") for a in server_argv)
        stats = server.wait_event("hub_stats", 30) if is_wshub else None
    finally:
        if lg:
            lg.stop()
        server.stop()
    # Every raw client inflated every publication, in order; the inflated
    # payloads are byte for byte what the uncompressed tungstenite clients got
    # (the verify key includes the message bytes and the sums of seq and t).
    assert result["verify"]["ok"], json.dumps(result["verify"], indent=1)
    assert result["per_client"]["min"] == result["per_client"]["max"] == count, result["per_client"]
    assert result["gaps"] == 0 and result["out_of_order"] == 0 and not result["errors"], result
    assert result["last_seq"]["min"] == result["last_seq"]["max"] == count, result["last_seq"]
    z = result["deflate"]
    assert z["offered"] and z["negotiated"] == raw, z
    # every publication arrived compressed (and maybe the ack: Node ws compresses it)
    assert count * raw <= z["compressed_messages"] <= (count + 1) * raw, z
    assert z["wire_bytes"] * 2 < z["inflated_bytes"], z
    return result, stats


@pytest.mark.timeout(960)
def test_deflate_loadgen_inflates_wshub_shared_compressed_frames(loadgen, tmp_path):
    count, raw = 500, 10
    result, stats = _run_deflate(loadgen, tmp_path, [sys.executable, SERVER, "--compression"], count, raw, 2)
    # wshub answers server_no_context_takeover: each message inflated alone
    assert result["deflate"]["server_no_context_takeover"] == raw, result["deflate"]
    # compressed once per publication, not per delivery
    assert stats["compressed_publications"] == count, stats
    assert 0 < stats["compression_bytes_out"] < stats["compression_bytes_in"], stats


NODE_SERVER = os.path.join(REPO, "benches", "servers", "node_ws_server.js")


def _node_ws_missing():
    import shutil
    if shutil.which("node") is None:
        return "node not installed"
    r = subprocess.run(["node", "-e", "require(process.argv[1])", os.path.join(REPO, "benches", "node_modules", "ws")],
                       capture_output=True)
    return "npm ws not installed (benches/setup.sh)" if r.returncode else None


@pytest.mark.timeout(960)
def test_deflate_loadgen_keeps_the_window_of_a_context_takeover_peer(loadgen, tmp_path):
    """Node `ws` keeps its compressor's window across messages (no
    server_no_context_takeover): the loadgen's per-connection inflater must
    too, or every message after the first fails to inflate."""
    why = _node_ws_missing()
    if why:
        pytest.skip(why)
    count, raw = 300, 5
    result, _ = _run_deflate(loadgen, tmp_path, ["node", NODE_SERVER, "--deflate", "1"], count, raw, 1)
    assert result["deflate"]["server_no_context_takeover"] == 0, result["deflate"]
