"""Check a running scale-out (run.sh): clients spread over the workers that
share the hub port, publications made through the app (each HTTP request
served by whichever worker gunicorn picks), and every client must receive
every publication exactly once, with ``seq`` strictly increasing.

    .venv/bin/python examples/scaleout/check.py [--app http://127.0.0.1:8000]
        [--ws ws://127.0.0.1:8765/api/ws] [--clients 8] [--count 40]

Exits 0 and prints a summary when everything arrived, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import urllib.request

from websockets.sync.client import connect

TOPIC = "odds_updates"


def publish(app: str, n: int) -> int:
    body = json.dumps({"topic": TOPIC, "data": {"n": n}}).encode()
    request = urllib.request.Request(f"{app}/publish", data=body,
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["delivered"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--app", default="http://127.0.0.1:8000")
    parser.add_argument("--ws", default="ws://127.0.0.1:8765/api/ws")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--count", type=int, default=40)
    args = parser.parse_args(argv)

    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(connect(f"{args.ws}?topics={TOPIC}", proxy=None))
                   for _ in range(args.clients)]
        for client in clients:
            ack = json.loads(client.recv(timeout=5))
            assert ack["type"] == "connected", ack
        # `delivered` is the subscriber count of the worker that served the
        # request: the clients it holds, not all of them.
        local_counts = [publish(args.app, n) for n in range(args.count)]
        failures = 0
        for i, client in enumerate(clients):
            got = [json.loads(client.recv(timeout=10)) for _ in range(args.count)]
            seqs = [m["seq"] for m in got]
            values = sorted(m["data"]["n"] for m in got)
            if seqs != sorted(set(seqs)) or values != list(range(args.count)):
                failures += 1
                print(f"client {i}: seq {seqs} data {values}", file=sys.stderr)
        print(f"{args.clients - failures}/{args.clients} clients received all "
              f"{args.count} publications once, in seq order; workers that served "
              f"the publish requests held {sorted(set(local_counts))} of the clients")
        return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
