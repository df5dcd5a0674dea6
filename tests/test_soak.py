"""The soak in CI (benches/soak/soak.py): 60 s of client churn,
subscription flips, publishers and slow readers against one hub, after
which RSS, open fds and threads must be back within the script's slack
(WSHUB_SOAK_SECONDS shortens it for local runs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

SOAK = os.path.join(os.path.dirname(__file__), "..", "benches", "soak", "soak.py")
SECONDS = int(os.environ.get("WSHUB_SOAK_SECONDS", "60"))


@pytest.mark.timeout(SECONDS + 120)
def test_soak_leaks_no_memory_fds_or_threads():
    done = subprocess.run(
        [sys.executable, SOAK, str(SECONDS)],
        capture_output=True, text=True, timeout=SECONDS + 90,
    )
    assert done.stdout, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert done.returncode == 0 and result["ok"], json.dumps(result, indent=2)
    load, hub = result["load"], result["hub"]
    # The load really ran: churn, flips, publications and slow consumers.
    assert load["connects"] > 100 and load["flips"] > 100, load
    assert hub["published"] > 1000 and hub["sent"] > 1000, hub
    assert hub["slow_consumer_closes"] > 0, hub
    assert hub["connections_opened"] == hub["connections_closed"], hub
