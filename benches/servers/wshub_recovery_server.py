"""wshub host for benches/recovery.py: the hub (wshub.start, the Python
package users install) and the Python thread that publishes, driven by
command lines on stdin, each answered with one JSON line on stdout:

  publish N   N publications of --payload bytes on --topic with hub.broadcast,
              back to back -> {"event":"published","count":N,"epoch":E,"seq":S,"elapsed_s":...}
  idle        wait until the hub holds no connection (every client that
              left is unregistered) -> {"event":"idle"}
  stats       -> {"event":"stats", ...hub.stats()}
  stop / EOF  stop the hub and exit

Payloads are the other benchmarks' {"t":<ns>,"seq":N,"pad":"xxx"}
(servers/_common.py); wshub wraps them in {"type":"message","topic":T,"seq":N,"data":...}."""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as c  # noqa: E402

# How long "idle" waits for the last connection to be unregistered.
IDLE_TIMEOUT_S = 60.0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--topic", default="t")
    ap.add_argument("--payload", type=int, default=200, help="bytes of each published JSON (approx.)")
    ap.add_argument("--worker-threads", type=int, default=1)
    ap.add_argument("--send-queue", type=int, default=None, help="wshub send_queue (default: wshub's)")
    ap.add_argument("--history-size", type=int, default=None, help="wshub history_size (default: wshub's)")
    args = ap.parse_args()
    import wshub

    kw = {"worker_threads": args.worker_threads}
    if args.send_queue:
        kw["send_queue"] = args.send_queue
    if args.history_size:
        kw["history_size"] = args.history_size
    hub = wshub.start(args.port, **kw)
    payload = c.Payload(args.payload)
    published = 0
    c.emit(event="listening", port=hub.port, server="wshub", version=getattr(wshub, "__version__", "?"))
    try:
        for line in sys.stdin:
            cmd, _, arg = line.strip().partition(" ")
            if cmd == "publish":
                n = int(arg)
                bc, topic, build = hub.broadcast, args.topic, payload.build
                t0 = time.perf_counter()
                for _ in range(n):
                    published += 1
                    bc(topic, build(published, time.time_ns()))
                elapsed = time.perf_counter() - t0
                epoch, seq = hub.stream(args.topic) or (None, None)
                c.emit(event="published", count=n, epoch=epoch, seq=seq, elapsed_s=elapsed)
            elif cmd == "idle":
                deadline = time.monotonic() + IDLE_TIMEOUT_S
                while hub.stats()["connections"] and time.monotonic() < deadline:
                    time.sleep(0.01)
                left = hub.stats()["connections"]
                c.emit(event="idle" if not left else "not_idle", connections=left)
            elif cmd == "stats":
                c.emit(event="stats", **hub.stats())
            elif cmd == "stop":
                break
    finally:
        hub.stop()
        c.emit(event="stopped", published=published)


if __name__ == "__main__":
    main()
