"""Generated reports name files relative to the repository: a path of the
machine they ran on says nothing to a reader and leaks its layout."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benches"))
import run  # noqa: E402  (benches/run.py: the report writer)

# An absolute path into a home, work or temporary directory, or into this
# checkout wherever it is.
MACHINE_PATH = re.compile(
    r"(?<![\w.~/-])/(?:work|root|home|tmp|Users|var/folders)/[\w.+-]+|" + re.escape(REPO)
)

# Texts that quote kernel interfaces (`/proc/self/status`) are fine; only
# generated reports and committed results are scanned.
SCANNED = re.compile(r"^(BENCHMARKS\.md|benches/results/.*\.(md|json)|docs/.*\.md|README\.md)$")


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True)
    return [f for f in out.stdout.splitlines() if SCANNED.match(f)]


def test_reports_and_docs_name_no_machine_path():
    files = tracked_files()
    assert "BENCHMARKS.md" in files
    hits = []
    for name in files:
        with open(os.path.join(REPO, name), encoding="utf-8", errors="replace") as f:
            for lineno, line in enumerate(f, 1):
                for m in MACHINE_PATH.finditer(line):
                    hits.append(f"{name}:{lineno}: {m.group(0)}")
    assert not hits, "machine paths in committed reports:\n" + "\n".join(hits[:20])


def test_open_loop_method_line_names_its_source_relative_to_the_repo(tmp_path):
    source = os.path.join(REPO, "benches", "results", "run-20990101-000000.json")
    args = argparse.Namespace(
        section=None, taskset=True, mode="rate", loads="10,50", max_from=source, rate=0,
        window=1, loadgen_args="", payload=100, warmup=1.0, duration=2.0, repeat=1, ref_batch=128,
    )
    machine = {"date": "2099-01-01", "host": "h", "cpus": 2, "cpu": "c", "kernel": "k",
               "os": "o", "python": "3", "rustc": "r", "node": "n",
               "wshub_profile": "fast"}
    out = tmp_path / "BENCHMARKS.md"
    run.write_markdown(str(out), machine, [], args, {})
    text = out.read_text()
    assert "(from `benches/results/run-20990101-000000.json`)" in text
    assert REPO not in text
