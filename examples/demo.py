"""The main job in miniature: a hub with a simulated scraper publishing.

Run with `make demo`. A hub listens on 127.0.0.1:8765 (override with
WSHUB_PORT); a scraper thread publishes `scrape_progress` and `odds_updates`.
Connect with any WebSocket client, e.g.

    python -m websockets ws://127.0.0.1:8765/api/ws?topics=odds_updates

Stop with Ctrl-C.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time

import wshub

TOPICS = ["scrape_progress", "odds_updates"]


def scrape(stop: threading.Event, job_id: str = "job-1", pages: int = 200) -> None:
    """Pretend to scrape `pages` pages, publishing progress and odds as we go."""
    rng = random.Random(7)
    done = 0
    while not stop.is_set():
        done = done % pages + 1
        wshub.broadcast(
            "scrape_progress",
            {"job": job_id, "done": done, "total": pages,
             "status": "done" if done == pages else "running"},
        )
        match = rng.randint(1, 12)
        home = round(rng.uniform(1.2, 4.5), 2)
        wshub.broadcast(
            "odds_updates",
            {"match": match, "market": "1x2",
             "prices": {"home": home, "draw": round(rng.uniform(2.8, 4.0), 2),
                        "away": round(rng.uniform(1.2, 6.0), 2)},
             "ts": time.time()},
        )
        stop.wait(0.25)


def main() -> None:
    port = int(os.environ.get("WSHUB_PORT", "8765"))
    hub = wshub.start(port, host="127.0.0.1", topics=TOPICS)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    scraper = threading.Thread(target=scrape, args=(stop,), name="scraper")
    scraper.start()
    print(f"wshub {wshub.__version__} listening; connect to:")
    for topic in TOPICS:
        print(f"  ws://127.0.0.1:{hub.port}/api/ws?topics={topic}")
    print(f"  ws://127.0.0.1:{hub.port}/api/ws   (all topics)")
    print("Ctrl-C to stop.", flush=True)
    try:
        while not stop.wait(5):
            s = hub.stats()
            print(f"clients={s['connections']} published={s['published']} "
                  f"sent={s['sent']} dropped={s['dropped']}", flush=True)
    except KeyboardInterrupt:
        stop.set()
    scraper.join()
    hub.stop()


if __name__ == "__main__":
    main()
