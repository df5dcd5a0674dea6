"""FastAPI + wshub example: live odds and scraper progress in the browser.

FastAPI serves the page and a small JSON API; wshub (started in the app's
lifespan) pushes updates to every open page over WebSocket. A simulated
scraper thread publishes ``scrape_progress`` and ``odds_updates`` a few times
per second, and ``POST /publish`` publishes whatever you send it.

Run it::

    python examples/fastapi_app/app.py                 # app :8000, hub :8765
    python examples/fastapi_app/app.py --port 0 --ws-port 0 --no-simulate

or ``uvicorn app:app`` from this directory (configured by the environment:
WSHUB_APP_HOST, WSHUB_APP_PORT, WSHUB_WS_HOST, WSHUB_WS_PORT, WSHUB_SIMULATE,
WSHUB_PUBLIC_WS_URL, WSHUB_ENABLE_ADMIN, and for several workers
WSHUB_BACKPLANE and WSHUB_REUSE_PORT: see examples/scaleout/). Open the printed page URL.

Endpoints:

GET  /                 the page (static/index.html; js and css under /static)
GET  /wshub.js         the browser client, from the installed wshub package
GET  /config           {"ws_url", "topics", "reconnect": {...}} for the page
GET  /stats            hub counters (wshub.Server.stats())
POST /publish          {"topic": "...", "data": {...}} -> {"delivered": n}
POST /admin/hub/stop   stop the hub (only with enable_admin / --enable-admin)
POST /admin/hub/start  start it again on the same port (same condition)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import uvicorn
from fastapi import Body, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

import wshub

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"

TOPICS = ["scrape_progress", "odds_updates"]
WS_PATH = "/api/ws"

DEFAULT_APP_PORT = 8000
DEFAULT_WS_PORT = 8765
DEFAULT_HOST = "127.0.0.1"


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() not in ("0", "false", "no", "off")


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return default if value is None or value.strip() == "" else int(value)


@dataclass
class Settings:
    """Everything the app needs to know; defaults come from the environment."""

    ws_port: int = field(
        default_factory=lambda: _env_int("WSHUB_WS_PORT", DEFAULT_WS_PORT))
    ws_host: str = field(
        default_factory=lambda: os.environ.get("WSHUB_WS_HOST", DEFAULT_HOST))
    # Full ws:// URL handed to pages instead of one derived from the request
    # (for a hub behind a proxy). Empty: ws://<request host>:<hub port>/api/ws.
    public_ws_url: str = field(
        default_factory=lambda: os.environ.get("WSHUB_PUBLIC_WS_URL", ""))
    # Run the simulated scraper (tests turn it off for determinism).
    simulate: bool = field(
        default_factory=lambda: _env_bool("WSHUB_SIMULATE", True))
    simulate_interval: float = 0.25
    # Enable /admin/hub/{stop,start} (tests use them to bounce the hub).
    enable_admin: bool = field(
        default_factory=lambda: _env_bool("WSHUB_ENABLE_ADMIN", False))
    # Scale-out (examples/scaleout/): a Redis URL shared by every worker's
    # hub, and SO_REUSEPORT so that the workers share the hub's port.
    backplane: str = field(
        default_factory=lambda: os.environ.get("WSHUB_BACKPLANE", ""))
    reuse_port: bool = field(
        default_factory=lambda: _env_bool("WSHUB_REUSE_PORT", False))
    # When set, the lifespan prints this page URL and the hub's ws:// URL
    # once the hub is up (the command line entry point sets it).
    announce_page_url: str = ""
    # Reconnect backoff of the page, in milliseconds.
    reconnect_initial_ms: int = 250
    reconnect_max_ms: int = 5000


# --------------------------------------------------------------------------
# hub ownership
# --------------------------------------------------------------------------


class HubManager:
    """Owns the app's wshub server and can restart it on the same port.

    ``broadcast`` never raises because the hub is down: it returns None, so
    the scraper thread and request handlers keep working while it restarts.
    """

    def __init__(self, settings: Settings):
        self._settings = settings
        self._lock = threading.Lock()
        self._server: wshub.Server | None = None
        # The real port after the first start (port 0 picks one); restarts
        # reuse it so open pages find the hub again.
        self.port: int = settings.ws_port

    @property
    def server(self) -> wshub.Server | None:
        return self._server

    @property
    def running(self) -> bool:
        server = self._server
        return server is not None and server.running

    def start(self) -> wshub.Server:
        with self._lock:
            if self._server is not None and self._server.running:
                return self._server
            server = wshub.start(self.port, host=self._settings.ws_host,
                                 path=WS_PATH, topics=TOPICS,
                                 backplane=self._settings.backplane or None,
                                 reuse_port=self._settings.reuse_port)
            self.port = server.port
            self._server = server
            return server

    def stop(self) -> None:
        with self._lock:
            server, self._server = self._server, None
        if server is not None:
            server.stop()

    def broadcast(self, topic: str, data: Any) -> int | None:
        server = self._server
        if server is None:
            return None
        try:
            return server.broadcast(topic, data)
        except RuntimeError:  # stopped between the check and the call
            return None


# --------------------------------------------------------------------------
# simulated scraper
# --------------------------------------------------------------------------

MATCHES = [
    ("Arsenal v Chelsea", "1X2"),
    ("Barcelona v Sevilla", "1X2"),
    ("Bayern v Dortmund", "1X2"),
    ("Inter v Milan", "Over/Under 2.5"),
]


class SimulatedScraper(threading.Thread):
    """Pretends to scrape bookmaker pages: every ``interval`` seconds it
    advances a scrape job (``scrape_progress``) and moves the prices of one
    match (``odds_updates``). Stopped by setting ``stop_event``."""

    def __init__(self, hub: HubManager, interval: float = 0.25,
                 seed: int | None = None):
        super().__init__(name="simulated-scraper", daemon=True)
        self.hub = hub
        self.interval = interval
        self.stop_event = threading.Event()
        self.rng = random.Random(seed)
        self.published = 0
        self._job_ids = itertools.count(1)
        self._prices: dict[str, dict[str, float]] = {}
        for name, market in MATCHES:
            if market == "1X2":
                self._prices[name] = {"home": 2.1, "draw": 3.3, "away": 3.6}
            else:
                self._prices[name] = {"over": 1.9, "under": 1.95}

    def stop(self, timeout: float = 5.0) -> None:
        self.stop_event.set()
        if self.is_alive():
            self.join(timeout)

    def run(self) -> None:
        job = self._new_job()
        while not self.stop_event.wait(self.interval):
            job["pages_done"] = min(job["pages_total"],
                                    job["pages_done"] + self.rng.randint(1, 3))
            job["status"] = ("done" if job["pages_done"] >= job["pages_total"]
                             else "running")
            self._publish("scrape_progress", dict(job))
            if job["status"] == "done":
                job = self._new_job()
            self._publish("odds_updates", self._move_odds())

    def _new_job(self) -> dict[str, Any]:
        return {"job_id": f"job-{next(self._job_ids)}", "pages_done": 0,
                "pages_total": self.rng.randint(20, 40), "status": "running"}

    def _move_odds(self) -> dict[str, Any]:
        name, market = self.rng.choice(MATCHES)
        prices = self._prices[name]
        for outcome, price in prices.items():
            moved = price * (1 + self.rng.uniform(-0.04, 0.04))
            prices[outcome] = round(min(20.0, max(1.01, moved)), 2)
        return {"match": name, "market": market, "prices": dict(prices),
                "timestamp": time.time()}

    def _publish(self, topic: str, data: dict[str, Any]) -> None:
        if self.hub.broadcast(topic, data) is not None:
            self.published += 1


# --------------------------------------------------------------------------
# the app
# --------------------------------------------------------------------------


def create_app(settings: Settings | None = None, **overrides: Any) -> FastAPI:
    """Build the app. ``overrides`` replace fields of ``settings`` (or of
    the environment-derived defaults), e.g. ``create_app(ws_port=0,
    simulate=False, enable_admin=True)``."""
    settings = settings or Settings()
    for key, value in overrides.items():
        if not hasattr(settings, key):
            raise TypeError(f"unknown setting {key!r}")
        setattr(settings, key, value)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hub = HubManager(settings)
        hub.start()
        app.state.hub = hub
        app.state.ws_manager = hub.server  # the wshub.Server, as started
        scraper = None
        if settings.simulate:
            scraper = SimulatedScraper(hub, settings.simulate_interval)
            scraper.start()
        app.state.scraper = scraper
        if settings.announce_page_url:
            ws_host = settings.ws_host
            if ":" in ws_host:
                ws_host = f"[{ws_host}]"
            print(f"page:      {settings.announce_page_url}", flush=True)
            print(f"websocket: ws://{ws_host}:{hub.port}{WS_PATH}"
                  f"?topics={','.join(TOPICS)}", flush=True)
        try:
            yield
        finally:
            if scraper is not None:
                await asyncio.to_thread(scraper.stop)
            await asyncio.to_thread(hub.stop)
            if settings.announce_page_url:
                print("stopped:   hub and scraper are down", flush=True)

    app = FastAPI(title="wshub FastAPI example", lifespan=lifespan)
    app.state.settings = settings

    def hub_of(request: Request) -> HubManager:
        return request.app.state.hub

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html",
                            headers={"Cache-Control": "no-store"})

    # The page imports the client from its own origin, so that it loads
    # even while the hub is down; the hub serves the same file at
    # <path>/client.js.
    @app.get("/wshub.js", include_in_schema=False)
    async def client_js() -> FileResponse:
        return FileResponse(wshub.client_js_path(), media_type="text/javascript")

    @app.get("/config")
    async def config(request: Request) -> dict[str, Any]:
        hub = hub_of(request)
        if settings.public_ws_url:
            ws_url = settings.public_ws_url
        else:
            scheme = "wss" if request.url.scheme == "https" else "ws"
            host = request.url.hostname or settings.ws_host
            if ":" in host:  # IPv6 literal
                host = f"[{host}]"
            ws_url = f"{scheme}://{host}:{hub.port}{WS_PATH}"
        return {
            "ws_url": ws_url,
            "topics": TOPICS,
            "hub_running": hub.running,
            "reconnect": {"initial_ms": settings.reconnect_initial_ms,
                          "max_ms": settings.reconnect_max_ms},
        }

    @app.get("/stats")
    async def stats(request: Request) -> dict[str, Any]:
        server = hub_of(request).server
        if server is None:
            raise HTTPException(503, "hub is not running")
        return server.stats()

    # Plain ``def`` endpoints run in the threadpool: broadcast() can wait for
    # room in a full publish queue and stop() waits for clients to go, and
    # neither should block the event loop.
    @app.post("/publish")
    def publish(request: Request,
                      topic: str = Body(...),
                      data: Any = Body(...)) -> dict[str, Any]:
        if topic not in TOPICS:
            raise HTTPException(400, f"unknown topic {topic!r}; use one of {TOPICS}")
        if isinstance(data, str):
            # A JSON string value: wshub would take a str as raw JSON text.
            data = json.dumps(data)
        try:
            delivered = hub_of(request).broadcast(topic, data)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from exc
        if delivered is None:
            raise HTTPException(503, "hub is not running")
        return {"topic": topic, "delivered": delivered}

    if settings.enable_admin:
        @app.post("/admin/hub/stop")
        def admin_hub_stop(request: Request) -> dict[str, Any]:
            hub = hub_of(request)
            hub.stop()
            request.app.state.ws_manager = None
            return {"running": False, "port": hub.port}

        @app.post("/admin/hub/start")
        def admin_hub_start(request: Request) -> dict[str, Any]:
            hub = hub_of(request)
            try:
                request.app.state.ws_manager = hub.start()
            except OSError as exc:
                raise HTTPException(409, f"cannot bind port {hub.port}: {exc}")
            return {"running": True, "port": hub.port}

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


# --------------------------------------------------------------------------
# running it
# --------------------------------------------------------------------------


def bind_socket(host: str = DEFAULT_HOST, port: int = 0) -> socket.socket:
    """A listening TCP socket for uvicorn (port 0 picks a free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _uvicorn_config(app: FastAPI, log_level: str = "info") -> uvicorn.Config:
    # ws="none": the page's WebSocket goes to wshub, not to uvicorn.
    return uvicorn.Config(app, lifespan="on", ws="none", http="h11",
                          log_level=log_level, access_log=False)


@contextlib.contextmanager
def serve_in_thread(app: FastAPI, host: str = DEFAULT_HOST, port: int = 0,
                    startup_timeout: float = 30.0,
                    log_level: str = "warning") -> Iterator[str]:
    """Run ``app`` with uvicorn in a background thread; yield its base URL
    (``http://127.0.0.1:PORT``). Leaving the block runs the lifespan
    shutdown and joins the thread."""
    sock = bind_socket(host, port)
    server = uvicorn.Server(_uvicorn_config(app, log_level))
    errors: list[BaseException] = []

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # surfaced to the caller below
            errors.append(exc)

    thread = threading.Thread(target=run, name="uvicorn", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout
        while not server.started:
            if errors or not thread.is_alive():
                raise RuntimeError(f"uvicorn did not start: {errors!r}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"uvicorn did not start in {startup_timeout}s")
            time.sleep(0.01)
        bound_host, bound_port = sock.getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        yield f"http://{shown}:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
        if thread.is_alive():
            raise RuntimeError("uvicorn thread did not stop within 30s")
        if errors:
            raise RuntimeError(f"uvicorn failed: {errors!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default=os.environ.get("WSHUB_APP_HOST", DEFAULT_HOST),
                        help="address of the HTTP app (default %(default)s)")
    parser.add_argument("--port", type=int,
                        default=_env_int("WSHUB_APP_PORT", DEFAULT_APP_PORT),
                        help="HTTP port, 0 picks one (default %(default)s)")
    parser.add_argument("--ws-host", default=os.environ.get("WSHUB_WS_HOST", DEFAULT_HOST),
                        help="address of the hub (default %(default)s)")
    parser.add_argument("--ws-port", type=int,
                        default=_env_int("WSHUB_WS_PORT", DEFAULT_WS_PORT),
                        help="hub port, 0 picks one (default %(default)s)")
    parser.add_argument("--no-simulate", dest="simulate", action="store_false",
                        default=_env_bool("WSHUB_SIMULATE", True),
                        help="do not run the simulated scraper")
    parser.add_argument("--enable-admin", action="store_true",
                        default=_env_bool("WSHUB_ENABLE_ADMIN", False),
                        help="enable POST /admin/hub/stop and /admin/hub/start")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)

    app = create_app(ws_host=args.ws_host, ws_port=args.ws_port,
                     simulate=args.simulate, enable_admin=args.enable_admin)

    sock = bind_socket(args.host, args.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    app.state.settings.announce_page_url = f"http://{shown}:{port}/"
    server = uvicorn.Server(_uvicorn_config(app, args.log_level))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0


# ``uvicorn app:app`` (run from this directory) uses the environment settings.
app = create_app()

if __name__ == "__main__":
    sys.exit(main())
