#!/usr/bin/env python3
"""Chart of the newest benches/results/run-*.json: deliveries/s and p99 latency
per server per subscriber count (median bars, min-max whiskers), log scales.

  benches/.venv/bin/python benches/chart.py                       # -> docs/img/fanout.png
  benches/.venv/bin/python benches/chart.py --json benches/results/run-X.json --out /tmp/x.png
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def newest_results(results_dir, payload):
    """The newest closed-loop run with this payload (burst and open-loop runs chart nothing here)."""
    files = sorted(glob.glob(os.path.join(results_dir, "run-*.json")))  # run-YYYYmmdd-HHMMSS.json
    for path in reversed(files):
        with open(path) as f:
            a = json.load(f).get("args", {})
        if a.get("mode", "closed") == "closed" and a.get("payload", 100) == payload and not a.get("section"):
            return path
    raise SystemExit(f"no closed-loop benches/results/run-*.json with payload {payload}: run benches/run.py first")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="results file (default: newest benches/results/run-*.json)")
    ap.add_argument("--out", default=os.path.join(REPO, "docs", "img", "fanout.png"))
    ap.add_argument("--payload", type=int, default=100, help="without --json: the newest run with this payload")
    ap.add_argument("--results-dir", default=os.path.join(HERE, "results"), help="without --json: where to look")
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = args.json or newest_results(args.results_dir, args.payload)
    with open(path) as f:
        data = json.load(f)
    rows = [r for r in data["rows"] if r["runs"]]
    servers = list(dict.fromkeys(r["server"] for r in rows))
    subs = sorted({r["subs"] for r in rows})
    cell = {(r["server"], r["subs"]): r["runs"] for r in rows}

    def stat(runs, get):
        v = [get(x) for x in runs]
        m = statistics.median(v)
        return m, m - min(v), max(v) - m

    metrics = [
        ("deliveries/s (median, min-max)", lambda x: x["deliveries_per_s"]),
        ("p99 latency, ms (median, min-max)", lambda x: x["latency_us"]["p99"] / 1000.0),
    ]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    width = 0.8 / max(1, len(servers))
    cmap = plt.get_cmap("tab10")
    for ax, (title, get) in zip(axes, metrics):
        for i, s in enumerate(servers):
            xs, ys, lo, hi = [], [], [], []
            for j, n in enumerate(subs):
                runs = cell.get((s, n))
                if not runs:
                    continue
                m, a, b = stat(runs, get)
                xs.append(j - 0.4 + width * (i + 0.5))
                ys.append(m)
                lo.append(a)
                hi.append(b)
            ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=s, color=cmap(i % 10),
                   error_kw={"elinewidth": 0.8})
        ax.set_yscale("log")
        ax.set_xticks(range(len(subs)))
        ax.set_xticklabels([f"{n:,} subscribers" for n in subs])
        ax.set_title(title)
        ax.grid(axis="y", which="both", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(servers), fontsize=9, frameon=False)
    m = data.get("machine", {})
    a = data.get("args", {})
    fig.suptitle(f"wshub fan-out, {a.get('payload', '?')} B payload, closed loop (window {a.get('window', '?')}), "
                 f"{m.get('cpus', '?')} CPUs ({m.get('cpu', '?')}), {m.get('date', '')}; "
                 f"noisy shared machine: see BENCHMARKS.md", fontsize=9)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out} from {os.path.relpath(path, REPO)}")


if __name__ == "__main__":
    main()
