"""websockets peer: `websockets` (asyncio implementation) with compression=None,
publishing with websockets.broadcast() to the set of subscribers of the topic."""

import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as c  # noqa: E402


async def amain(args):
    import websockets
    from websockets.asyncio.server import broadcast, serve

    subs: dict[str, set] = {}

    async def handler(ws):
        path = ws.request.path
        _, _, query = path.partition("?")
        topics = c.topics_from_query(query, args.topic)
        for t in topics:
            subs.setdefault(t, set()).add(ws)
        try:
            await ws.send(c.ACK_FMT % ",".join('"%s"' % t for t in sorted(topics)))
            await ws.wait_closed()
        finally:
            for t in topics:
                subs.get(t, set()).discard(ws)

    ctl = c.Control()
    topic = args.topic

    def publish(text):
        s = subs.get(topic)
        if s:
            broadcast(s, text)

    async with serve(handler, "127.0.0.1", args.port, compression=None, max_size=2**20) as server:
        port = server.sockets[0].getsockname()[1]
        args.port = port
        c.emit(event="listening", port=port, server="websockets", version=websockets.__version__)
        ctl.start_stdin_thread()
        await c.run_async_publisher(args, ctl, publish, is_coro=False)
        await asyncio.Future()


def main():
    args = c.parse_args(__doc__)
    asyncio.run(amain(args))


if __name__ == "__main__":
    main()
