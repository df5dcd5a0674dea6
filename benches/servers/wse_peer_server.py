"""wse-server peer: RustWSEServer (Rust transport, needs CPython >= 3.12).
Subscribers are subscribed to --topic in the on_connect callback, which also
sends the ack; a plain Python thread publishes with server.broadcast_local()."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as c  # noqa: E402


def extra(p):
    p.add_argument("--max-connections", type=int, default=100_000)


def main():
    args = c.parse_args(__doc__, extra)
    import wse_server
    from wse_server import RustWSEServer

    srv = RustWSEServer("127.0.0.1", args.port, max_connections=args.max_connections,
                        max_outbound_queue_bytes=64 * 1024 * 1024)
    topic = args.topic
    ack = c.ack_text(topic)

    def on_connect(conn_id, *rest):
        srv.subscribe_connection(conn_id, [topic])
        srv.send(conn_id, ack)

    srv.set_callbacks(on_connect, lambda conn_id, msg: None, lambda conn_id: None)
    srv.start()
    ctl = c.Control()
    c.run_thread_publisher(args, ctl, lambda text: srv.broadcast_local(topic, text))
    c.emit(event="listening", port=args.port, server="wse-server", version=_dist_version("wse-server"))
    ctl.start_stdin_thread()
    while True:
        time.sleep(3600)


def _dist_version(name):
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:  # noqa: BLE001
        return getattr(sys.modules.get("wse_server"), "__version__", None)


if __name__ == "__main__":
    main()
