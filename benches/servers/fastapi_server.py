"""FastAPI peer: the usual ConnectionManager (dict topic -> list of WebSockets)
and a broadcast that awaits ws.send_text() for each subscriber in turn, served
by uvicorn with per-message-deflate off."""

import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as c  # noqa: E402


def extra(p):
    p.add_argument("--ws", default="websockets", help="uvicorn ws implementation (websockets, wsproto, websockets-sansio)")


class ConnectionManager:
    def __init__(self):
        self.active: dict[str, list] = {}

    async def connect(self, ws, topics):
        await ws.accept()
        for t in topics:
            self.active.setdefault(t, []).append(ws)

    def disconnect(self, ws, topics):
        for t in topics:
            lst = self.active.get(t, [])
            if ws in lst:
                lst.remove(ws)

    async def broadcast(self, topic, text):
        for ws in list(self.active.get(topic, ())):
            try:
                await ws.send_text(text)
            except Exception:  # noqa: BLE001
                self.disconnect(ws, [topic])


def build_app(args, manager):
    from fastapi import FastAPI, WebSocket, WebSocketDisconnect

    app = FastAPI()

    @app.websocket("/api/ws")
    async def ws_endpoint(websocket: WebSocket):
        topics = c.topics_from_query(websocket.scope.get("query_string", b""), args.topic)
        await manager.connect(websocket, topics)
        try:
            await websocket.send_text(c.ACK_FMT % ",".join('"%s"' % t for t in sorted(topics)))
            while True:
                await websocket.receive_text()
        except WebSocketDisconnect:
            pass
        except Exception:  # noqa: BLE001
            pass
        finally:
            manager.disconnect(websocket, topics)

    return app


async def amain(args):
    import fastapi
    import uvicorn

    manager = ConnectionManager()
    app = build_app(args, manager)
    kw = dict(host="127.0.0.1", port=args.port, ws=args.ws, log_level="warning", lifespan="off")
    if args.ws != "wsproto":
        kw["ws_per_message_deflate"] = False
    config = uvicorn.Config(app, **kw)
    server = uvicorn.Server(config)
    ctl = c.Control()
    topic = args.topic

    async def after_start():
        while not server.started:
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        args.port = port
        c.emit(event="listening", port=port, server="fastapi", version=fastapi.__version__,
               uvicorn=uvicorn.__version__, ws=args.ws)
        ctl.start_stdin_thread()
        await c.run_async_publisher(args, ctl, lambda text: manager.broadcast(topic, text), is_coro=True)

    task = asyncio.create_task(after_start())
    await server.serve()
    task.cancel()


def main():
    args = c.parse_args(__doc__, extra)
    asyncio.run(amain(args))


if __name__ == "__main__":
    main()
