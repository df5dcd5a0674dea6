"""One hub process for tests/test_scaleout.py: what each worker of a
multi-process web server does, driven over stdin/stdout.

    python scaleout_worker.py PORT REDIS_URL

starts ``wshub.start(PORT, reuse_port=True, backplane=REDIS_URL)`` and
prints ``ready <port>``. Then, one command per line:

    burst TOPIC N TAG   publish {"from": TAG, "i": 0..N-1} on TOPIC -> "done"
    stats               -> the hub's stats() as one line of JSON
    quit                stop the hub and exit
"""

from __future__ import annotations

import json
import sys

import wshub


def main() -> int:
    port, redis_url = int(sys.argv[1]), sys.argv[2]
    hub = wshub.start(port, reuse_port=True, backplane=redis_url)
    print("ready", hub.port, flush=True)
    for line in sys.stdin:
        command, *args = line.split()
        if command == "burst":
            topic, n, tag = args[0], int(args[1]), args[2]
            for i in range(n):
                hub.broadcast(topic, {"from": tag, "i": i})
            print("done", flush=True)
        elif command == "stats":
            print(json.dumps(hub.stats()), flush=True)
        elif command == "quit":
            break
    hub.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
