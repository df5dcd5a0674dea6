"""The recovery-storm benchmark (benches/recovery.py) end to end, small: a real
hub (the benchmark's host script, wshub.start), the Rust client of
benches/loadgen, the driver's report. It must report every client complete
with exactly the missed publications, so the tooling cannot rot; and a run
whose clients cannot recover (more missed than their queue takes) must be
reported as a failure, not as a figure."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DRIVER = os.path.join(REPO, "benches", "recovery.py")
LOADGEN_MANIFEST = os.path.join(REPO, "benches", "loadgen", "Cargo.toml")


@pytest.fixture(scope="module")
def client_built():
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "recovery",
                    "--manifest-path", LOADGEN_MANIFEST], check=True, timeout=900)


def drive(tmp_path, *extra):
    out = tmp_path / "recovery.json"
    env = dict(os.environ, WSHUB_PYTHON=sys.executable)
    proc = subprocess.run([sys.executable, DRIVER, "--no-build", "--repeat", "1", "--timeout", "60",
                           "--out", str(tmp_path), "--json", str(out), *extra],
                          capture_output=True, text=True, timeout=240, env=env)
    return proc, json.loads(out.read_text())


@pytest.mark.timeout(960)
def test_small_storm_reports_complete_exact_recovery(client_built, tmp_path):
    clients, count = 20, 50
    proc, report = drive(tmp_path, "--clients", str(clients), "--count", str(count))
    assert proc.returncode == 0, proc.stderr
    assert not report["failures"], report["failures"]
    by_mode = {r["mode"]: r["result"] for r in report["runs"]}
    assert set(by_mode) == {"recover", "live"}
    for mode, res in by_mode.items():
        assert res["exact"] and res["error_count"] == 0, (mode, res["errors"])
        assert res["complete"] == clients, (mode, res)
        assert res["publications_received"] == clients * count, (mode, res)
        assert 0 < res["client_ms"]["p50"] <= res["client_ms"]["p99"] <= res["total_ms"], (mode, res)
    # Recovery starts right after the one publication every client got first.
    assert by_mode["recover"]["from_seq"] == report["prime"]
    assert report["summary"]["recover"]["exact"] and report["summary"]["ratio_total"] > 0
    assert "| recovery |" in proc.stdout and "| live (baseline) |" in proc.stdout
    # The report names its results file relative to the repository, or by name only.
    assert str(tmp_path) not in proc.stdout


@pytest.mark.timeout(960)
def test_storm_that_cannot_recover_fails_loudly(client_built, tmp_path):
    # 40 missed publications do not fit a 32-frame queue: every answer says
    # recovered false (docs/protocol.md), and the run must fail, not report.
    proc, report = drive(tmp_path, "--clients", "3", "--count", "40", "--send-queue", "32", "--no-baseline")
    assert proc.returncode == 1, proc.stderr
    res = report["runs"][0]["result"]
    assert not res["exact"] and res["complete"] == 0 and res["error_count"] == 3, res
    assert res["errors"][0].startswith("not recovered") and '"recovered":{"t":false}' in res["errors"][0], res
    assert "| recovery |" in proc.stdout and "| NO |" in proc.stdout
