"""socketify peer: uWebSockets via socketify, compression disabled; subscribers
ws.subscribe(topic) and the publisher calls app.publish(topic, text, OpCode.TEXT)
from an asyncio task on socketify's loop. Every subscriber is put on --topic
(the query string is not parsed). Needs Debian's libuv1."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as c  # noqa: E402


def extra(p):
    p.add_argument("--max-backpressure", type=int, default=16 * 1024 * 1024,
                   help="uWS maxBackpressure in bytes (messages past it are dropped)")


def main():
    args = c.parse_args(__doc__, extra)
    import socketify
    from socketify import App, CompressOptions, OpCode

    app = App()
    topic = args.topic
    ack = c.ack_text(topic)

    def ws_open(ws):
        ws.subscribe(topic)
        ws.send(ack, OpCode.TEXT)

    app.ws("/api/ws", {
        "compression": CompressOptions.DISABLED,
        "max_payload_length": 1 << 20,
        "idle_timeout": 600,
        "max_backpressure": args.max_backpressure,
        "open": ws_open,
        "message": lambda ws, msg, opcode: None,
    })
    ctl = c.Control()

    def publish(text):
        app.publish(topic, text, OpCode.TEXT)

    def on_listen(config):
        port = getattr(config, "port", args.port)
        c.emit(event="listening", port=port, server="socketify",
               version=getattr(socketify, "__version__", None) or _dist_version("socketify"))
        ctl.start_stdin_thread()

    app.listen(args.port, on_listen)
    app.loop.ensure_future(c.run_async_publisher(args, ctl, publish, is_coro=False))
    app.run()


def _dist_version(name):
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:  # noqa: BLE001
        return None


if __name__ == "__main__":
    main()
