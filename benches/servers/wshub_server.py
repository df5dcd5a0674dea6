"""wshub peer: the hub runs on its own Rust threads; a plain Python thread
publishes with hub.broadcast(topic, json_str). wshub sends the ack itself and
wraps each payload as {"type":"message","topic":T,"seq":N,"data":<payload>}.

--backplane redis://127.0.0.1:PORT/0 starts the hub with a Redis backplane
(docs/scaling.md): every broadcast then goes through Redis and comes back to
every hub on the same URL and --backplane-prefix. Without it (the default) the
hub is a single instance. A hub that is never told "go" publishes nothing, so a
second process on the same backplane serves as a subscriber-only hub.

--compression turns permessage-deflate on (wshub.start(compression=True),
with --compression-level and --compression-min-size): each publication is
compressed once and the compressed frame shared by every subscriber that
negotiated it (`loadgen --deflate` does)."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as c  # noqa: E402


def extra(p):
    p.add_argument("--worker-threads", type=int, default=1)
    p.add_argument("--send-queue", type=int, default=None, help="wshub send_queue (frames per client)")
    p.add_argument("--backplane", default=None, metavar="URL",
                   help="Redis backplane URL, e.g. redis://127.0.0.1:6379/0 (default: none, single instance)")
    p.add_argument("--backplane-prefix", default=None, help="wshub backplane_prefix (default: wshub's own)")
    p.add_argument("--compression", action="store_true", help="permessage-deflate on (off by default)")
    p.add_argument("--compression-level", type=int, default=None, help="wshub compression_level (default: wshub's, 6)")
    p.add_argument("--compression-min-size", type=int, default=None,
                   help="wshub compression_min_size (default: wshub's, 256)")


def main():
    args = c.parse_args(__doc__, extra)
    import wshub

    kw = {"worker_threads": args.worker_threads}
    if args.send_queue:
        kw["send_queue"] = args.send_queue
    if args.backplane:
        kw["backplane"] = args.backplane
        if args.backplane_prefix:
            kw["backplane_prefix"] = args.backplane_prefix
    if args.compression:
        kw["compression"] = True
        if args.compression_level is not None:
            kw["compression_level"] = args.compression_level
        if args.compression_min_size is not None:
            kw["compression_min_size"] = args.compression_min_size
    hub = wshub.start(args.port, **kw)
    args.port = hub.port
    ctl = c.Control()
    topic = args.topic
    bc = hub.broadcast
    c.run_thread_publisher(args, ctl, lambda text: bc(topic, text))

    def on_stop():
        try:
            c.emit(event="hub_stats", **hub.stats())
        except Exception as e:  # noqa: BLE001
            c.emit(event="hub_stats", error=str(e))

    c.emit(event="listening", port=hub.port, server="wshub", version=getattr(wshub, "__version__", "?"),
           backplane=bool(args.backplane), compression=args.compression)
    ctl.start_stdin_thread(on_stop=on_stop)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
