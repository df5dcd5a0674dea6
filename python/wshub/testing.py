"""Testing helpers for applications that use wshub.

Two parts:

* WebSocket clients that speak the wshub protocol (docs/protocol.md):
  :class:`Client` (blocking, on ``websockets.sync.client``) and
  :class:`AsyncClient` (on ``websockets.asyncio.client``). They work with or
  without pytest; they need the ``websockets`` package
  (``pip install websockets``), imported only when a client connects.

* A pytest plugin, registered through the ``pytest11`` entry point, so it is
  active wherever wshub is installed:

  ``wshub_server``
      A :class:`wshub.Server` on 127.0.0.1, port 0 (a free port), stopped
      after the test. It is started with :func:`wshub.start`, so it is also
      the target of the module-level :func:`wshub.broadcast` during the test.
      Options for ``wshub.start`` come from the ``wshub`` marker:
      ``@pytest.mark.wshub(topics=["a"], rate_limit=5)``.

  ``wshub_client``
      A factory: ``wshub_client(server, topics=["a"])`` returns a connected
      :class:`Client` (its ``ack`` already read), closed after the test.
      ``server`` is any :class:`wshub.Server` (e.g. the one an app's
      lifespan started: ``app.state.ws_manager``), a port or a ``ws://``
      URL, and defaults to the ``wshub_server`` fixture.

Importing ``wshub`` does not import this module (nor pytest).
"""

from __future__ import annotations

import asyncio
import collections
import importlib
import inspect
import json
import time
import urllib.parse
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Protocol, Union

import wshub
from wshub import Server

try:
    import pytest
except ImportError:  # the clients work without pytest
    _HAVE_PYTEST = False
else:
    _HAVE_PYTEST = True

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection as AsyncConnection
    from websockets.sync.client import ClientConnection as SyncConnection

__all__ = [
    "AsyncClient",
    "Client",
    "ClientFactory",
    "CollectTimeout",
    "DEFAULT_PATH",
    "HOST",
    "url_for",
]

HOST = "127.0.0.1"
DEFAULT_PATH = "/api/ws"

#: What a client connects to: a running server, a port on 127.0.0.1, or a
#: full ``ws://`` URL (used as given; ``topics`` is then appended).
Target = Union[Server, int, str]
#: Positions to recover from: topic -> {"seq": N, "epoch": E}, as in
#: ``Client.positions``.
Since = Mapping[str, Mapping[str, Any]]

_INSTALL_HINT = (
    "wshub.testing's clients need the 'websockets' package (version 13 or "
    "later): pip install websockets"
)

# Servers started by the wshub_server fixture with a non-default path, so
# that clients connecting to them find it: id(server) -> (server, path).
_server_paths: dict[int, tuple[Server, str]] = {}


def _import(module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc


def url_for(
    target: Target,
    topics: Iterable[str] | None = None,
    *,
    path: str | None = None,
    since: Since | None = None,
) -> str:
    """The WebSocket URL of ``target`` (a Server, a port or a ws:// URL),
    with ``?topics=a,b`` when ``topics`` is given (each name
    percent-encoded), and ``since=topic:seq:epoch,...`` for the positions
    in ``since`` (see :attr:`Client.positions`)."""
    if isinstance(target, str):
        url = target
    else:
        if isinstance(target, Server):
            host = target.host
            port = target.port
            if path is None and id(target) in _server_paths:
                path = _server_paths[id(target)][1]
        elif isinstance(target, int) and not isinstance(target, bool):
            host, port = HOST, target
        else:
            raise TypeError(
                f"expected a wshub.Server, a port or a ws:// URL, got {target!r}")
        if host in ("", "0.0.0.0"):
            host = HOST
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        url = f"ws://{host}:{port}{DEFAULT_PATH if path is None else path}"
    if topics is not None:
        if isinstance(topics, str):
            raise TypeError("topics must be a list of names, not a str")
        joined = ",".join(urllib.parse.quote(t, safe="") for t in topics)
        url += ("&" if "?" in url else "?") + "topics=" + joined
    if since:
        items = ",".join(f"{t}:{int(p['seq'])}:{p['epoch']}" for t, p in since.items())
        url += ("&" if "?" in url else "?") + "since=" + urllib.parse.quote(items, safe=",:")
    return url


def _connect_options(connect: Callable[..., Any], timeout: float,
                     extra: dict[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {
        "open_timeout": timeout,
        "close_timeout": 1.0,
        "max_size": None,
    }
    params = inspect.signature(connect).parameters
    if "proxy" in params:  # never send loopback traffic through a proxy
        options["proxy"] = None
    if "legacy" in params:  # websockets >= 17.1: connect directly
        options["legacy"] = True
    options.update(extra)
    return options


def _parse(frame: str | bytes) -> dict[str, Any]:
    if not isinstance(frame, str):
        raise AssertionError(f"wshub sent a binary frame: {frame!r}")
    value = json.loads(frame)
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise AssertionError(f"not a wshub frame: {frame}")
    return value


def _check_ack(ack: dict[str, Any]) -> dict[str, Any]:
    if ack.get("type") != "connected":
        raise AssertionError(f"the first frame must be the 'connected' ack, got {ack}")
    return ack


def _ping_request(id: Any) -> dict[str, Any]:
    return {"type": "ping"} if id is None else {"type": "ping", "id": id}


def _subscribe_request(topics: Iterable[str], since: Since | None,
                       positions: dict[str, dict[str, Any]]) -> dict[str, Any]:
    request: dict[str, Any] = {"type": "subscribe", "topics": _topic_list(topics)}
    if since:
        request["since"] = {t: {"seq": int(p["seq"]), "epoch": p["epoch"]}
                            for t, p in since.items()}
        for topic, position in request["since"].items():
            positions[topic] = dict(position)
    return request


def _topic_list(topics: Iterable[str]) -> list[str]:
    if isinstance(topics, str):
        raise TypeError("topics must be a list of names, not a str")
    return list(topics)


class CollectTimeout(TimeoutError):
    """Raised by ``collect(n)`` when fewer than ``n`` publications arrive in
    time; ``received`` holds those that did."""

    def __init__(self, message: str, received: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.received = received


def _collect_timeout(n: int, timeout: float,
                     received: list[dict[str, Any]]) -> CollectTimeout:
    return CollectTimeout(
        f"expected {n} publication{'s' if n != 1 else ''} within {timeout}s, "
        f"but only {len(received)} arrived"
        + (f" (last: {received[-1]})" if received else ""),
        received,
    )


class _Base:
    """State shared by both clients: the ack, publications that arrived
    while waiting for an answer (handed out first by next_message), and
    where the client stands in each topic's stream."""

    url: str
    ack: dict[str, Any]

    def __init__(self, since: Since | None = None) -> None:
        self._pending: collections.deque[dict[str, Any]] = collections.deque()
        #: topic -> {"seq": last seq received, "epoch": E}: pass it as
        #: ``since=`` to a new client to recover what this one misses.
        self.positions: dict[str, dict[str, Any]] = {
            t: {"seq": int(p["seq"]), "epoch": p["epoch"]} for t, p in (since or {}).items()}

    @property
    def recovered(self) -> dict[str, bool]:
        """Per topic asked ``since=``: whether the hub recovered it (from
        the ``connected`` answer)."""
        return dict(self.ack.get("recovered", {}))

    def _seen(self, frame: dict[str, Any]) -> dict[str, Any]:
        kind = frame["type"]
        if kind == "message":
            position = self.positions.get(frame["topic"])
            if position is not None:
                position["seq"] = frame["seq"]
        elif kind in ("connected", "subscribed"):
            recovered = frame.get("recovered", {})
            for topic, stream in frame.get("streams", {}).items():
                if not recovered.get(topic):
                    self.positions[topic] = {"seq": stream["seq"], "epoch": stream["epoch"]}
        return frame

    def _take_publication(self, frame: dict[str, Any]) -> dict[str, Any]:
        if frame["type"] != "message":
            raise AssertionError(f"expected a publication, got {frame}")
        return frame

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"


class Client(_Base):
    """A blocking wshub client: connects, reads the ``connected`` ack.

    ``Client(server, ["a", "b"])``, ``Client(port, ...)`` or
    ``Client("ws://127.0.0.1:8765/api/ws", ...)``. ``timeout`` bounds the
    handshake and the wait for the ack; other keyword arguments go to
    ``websockets.sync.client.connect`` (e.g. ``origin=``).
    """

    def __init__(
        self,
        target: Target,
        topics: Iterable[str] | None = None,
        *,
        path: str | None = None,
        timeout: float = 5.0,
        since: Since | None = None,
        **connect_kwargs: Any,
    ) -> None:
        super().__init__(since)
        client = _import("websockets.sync.client")
        self.url = url_for(target, topics, path=path, since=since)
        self.ws: SyncConnection = client.connect(
            self.url, **_connect_options(client.connect, timeout, connect_kwargs))
        try:
            self.ack = _check_ack(self.recv(timeout))
        except BaseException:
            self.ws.close()
            raise

    # frames ---------------------------------------------------------------
    def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next frame of any type, parsed (publications that arrived
        while :meth:`request` waited come first). Raises TimeoutError."""
        if self._pending:
            return self._pending.popleft()
        try:
            frame = self.ws.recv(timeout=timeout)
        except TimeoutError:
            raise TimeoutError(f"no frame arrived within {timeout}s") from None
        return self._seen(_parse(frame))

    def send(self, message: Any) -> None:
        """Send ``message``: a str verbatim, anything else as JSON."""
        self.ws.send(message if isinstance(message, str) else json.dumps(message))

    def request(self, message: Any, timeout: float = 5.0) -> dict[str, Any]:
        """Send ``message`` and return the next frame that is not a
        publication (its answer); publications that arrive first are kept
        for :meth:`next_message`."""
        self.send(message)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                frame = self._seen(_parse(self.ws.recv(timeout=max(remaining, 0.0))))
            except TimeoutError:
                raise TimeoutError(
                    f"no answer to {message!r} within {timeout}s") from None
            if frame["type"] != "message":
                return frame
            self._pending.append(frame)

    # protocol ---------------------------------------------------------------
    def subscribe(self, topics: Iterable[str], timeout: float = 5.0,
                  since: Since | None = None) -> dict[str, Any]:
        """Subscribe; returns the answer, e.g. ``{"type": "subscribed",
        "topics": [...all current...], "rejected": [...], "streams": {...}}``
        (with ``"recovered"`` for the topics of ``since``)."""
        return self.request(_subscribe_request(topics, since, self.positions), timeout)

    def unsubscribe(self, topics: Iterable[str], timeout: float = 5.0) -> dict[str, Any]:
        """Unsubscribe; returns ``{"type": "unsubscribed", "topics": [...]}``."""
        return self.request(
            {"type": "unsubscribe", "topics": _topic_list(topics)}, timeout)

    def ping(self, id: Any = None, timeout: float = 5.0) -> dict[str, Any]:
        """Application-level ping; returns the answer (``{"type": "pong"}``,
        with ``"id"`` echoed when one is given)."""
        return self.request(_ping_request(id), timeout)

    def next_message(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next publication, parsed: ``{"type": "message", "topic": ...,
        "seq": ..., "data": ...}``. Raises TimeoutError if none arrives in
        ``timeout`` seconds, AssertionError if another frame comes first."""
        try:
            return self._take_publication(self.recv(timeout))
        except TimeoutError:
            raise TimeoutError(f"no publication arrived within {timeout}s") from None

    def collect(self, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """The next ``n`` publications, all within ``timeout`` seconds, or
        :class:`CollectTimeout` (a TimeoutError) saying how many arrived."""
        deadline = time.monotonic() + timeout
        received: list[dict[str, Any]] = []
        while len(received) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _collect_timeout(n, timeout, received)
            try:
                received.append(self._take_publication(self.recv(remaining)))
            except TimeoutError:
                raise _collect_timeout(n, timeout, received) from None
        return received

    def wait_closed(self, timeout: float = 5.0) -> int | None:
        """Wait until the server closes the connection (frames arriving
        meanwhile are dropped); return the close code it sent, or None."""
        exceptions = _import("websockets.exceptions")
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"connection still open after {timeout}s")
            try:
                self.ws.recv(timeout=remaining)
            except exceptions.ConnectionClosed as exc:
                return None if exc.rcvd is None else int(exc.rcvd.code)
            except TimeoutError:
                continue

    # lifetime ---------------------------------------------------------------
    def close(self) -> None:
        """Close the connection (idempotent)."""
        self.ws.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncClient(_Base):
    """The asyncio version of :class:`Client`, with the same methods as
    coroutines. Connect with ``async with AsyncClient(server, ["a"]) as c:``
    or ``c = await AsyncClient.connect(server, ["a"])`` (then
    ``await c.close()``)."""

    def __init__(
        self,
        target: Target,
        topics: Iterable[str] | None = None,
        *,
        path: str | None = None,
        timeout: float = 5.0,
        since: Since | None = None,
        **connect_kwargs: Any,
    ) -> None:
        super().__init__(since)
        self.url = url_for(target, topics, path=path, since=since)
        self._timeout = timeout
        self._connect_kwargs = connect_kwargs
        self._ws: AsyncConnection | None = None

    @classmethod
    async def connect(
        cls,
        target: Target,
        topics: Iterable[str] | None = None,
        *,
        path: str | None = None,
        timeout: float = 5.0,
        since: Since | None = None,
        **connect_kwargs: Any,
    ) -> AsyncClient:
        """Create a client and :meth:`open` it."""
        client = cls(target, topics, path=path, timeout=timeout, since=since,
                     **connect_kwargs)
        await client.open()
        return client

    async def open(self) -> None:
        """Connect and read the ``connected`` ack (into ``self.ack``)."""
        if self._ws is not None:
            raise RuntimeError(f"{self!r} is already open")
        client = _import("websockets.asyncio.client")
        options = _connect_options(client.connect, self._timeout, self._connect_kwargs)
        options.pop("legacy", None)
        self._ws = await client.connect(self.url, **options)
        try:
            self.ack = _check_ack(await self.recv(self._timeout))
        except BaseException:
            await self._ws.close()
            raise

    @property
    def ws(self) -> AsyncConnection:
        """The underlying websockets connection."""
        if self._ws is None:
            raise RuntimeError(f"{self!r} is not open: await client.open() first")
        return self._ws

    async def _recv_raw(self, timeout: float) -> dict[str, Any]:
        try:
            frame = await asyncio.wait_for(self.ws.recv(), max(timeout, 0.0))
        except asyncio.TimeoutError:  # not the builtin before Python 3.11
            raise TimeoutError(f"no frame arrived within {timeout}s") from None
        return self._seen(_parse(frame))

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next frame of any type, parsed. Raises TimeoutError."""
        if self._pending:
            return self._pending.popleft()
        return await self._recv_raw(timeout)

    async def send(self, message: Any) -> None:
        """Send ``message``: a str verbatim, anything else as JSON."""
        await self.ws.send(message if isinstance(message, str) else json.dumps(message))

    async def request(self, message: Any, timeout: float = 5.0) -> dict[str, Any]:
        """Send ``message`` and return the next frame that is not a
        publication (publications are kept for :meth:`next_message`)."""
        await self.send(message)
        deadline = time.monotonic() + timeout
        while True:
            try:
                frame = await self._recv_raw(deadline - time.monotonic())
            except TimeoutError:
                raise TimeoutError(
                    f"no answer to {message!r} within {timeout}s") from None
            if frame["type"] != "message":
                return frame
            self._pending.append(frame)

    async def subscribe(self, topics: Iterable[str], timeout: float = 5.0,
                        since: Since | None = None) -> dict[str, Any]:
        """Subscribe; returns the ``subscribed`` answer (with
        ``"recovered"`` for the topics of ``since``)."""
        return await self.request(_subscribe_request(topics, since, self.positions), timeout)

    async def unsubscribe(self, topics: Iterable[str], timeout: float = 5.0) -> dict[str, Any]:
        """Unsubscribe; returns the ``unsubscribed`` answer."""
        return await self.request(
            {"type": "unsubscribe", "topics": _topic_list(topics)}, timeout)

    async def ping(self, id: Any = None, timeout: float = 5.0) -> dict[str, Any]:
        """Application-level ping; returns the ``pong`` answer."""
        return await self.request(_ping_request(id), timeout)

    async def next_message(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next publication, parsed; TimeoutError if none in time."""
        try:
            return self._take_publication(await self.recv(timeout))
        except TimeoutError:
            raise TimeoutError(f"no publication arrived within {timeout}s") from None

    async def collect(self, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """The next ``n`` publications within ``timeout`` seconds, or
        :class:`CollectTimeout` saying how many arrived."""
        deadline = time.monotonic() + timeout
        received: list[dict[str, Any]] = []
        while len(received) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _collect_timeout(n, timeout, received)
            try:
                received.append(self._take_publication(await self.recv(remaining)))
            except TimeoutError:
                raise _collect_timeout(n, timeout, received) from None
        return received

    async def wait_closed(self, timeout: float = 5.0) -> int | None:
        """Wait until the server closes the connection; return its close
        code, or None."""
        exceptions = _import("websockets.exceptions")
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"connection still open after {timeout}s")
            try:
                await asyncio.wait_for(self.ws.recv(), remaining)
            except exceptions.ConnectionClosed as exc:
                return None if exc.rcvd is None else int(exc.rcvd.code)
            except asyncio.TimeoutError:
                continue

    async def close(self) -> None:
        """Close the connection (idempotent; no-op if never opened)."""
        if self._ws is not None:
            await self._ws.close()

    async def __aenter__(self) -> AsyncClient:
        if self._ws is None:
            await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class ClientFactory(Protocol):
    """Type of the ``wshub_client`` fixture."""

    def __call__(
        self,
        server: Target | None = None,
        topics: Iterable[str] | None = None,
        **kwargs: Any,
    ) -> Client: ...


# --------------------------------------------------------------------------
# pytest plugin
# --------------------------------------------------------------------------

if _HAVE_PYTEST:

    def pytest_configure(config: pytest.Config) -> None:
        config.addinivalue_line(
            "markers",
            "wshub(**options): keyword options for wshub.start() used by the "
            "wshub_server fixture, e.g. @pytest.mark.wshub(topics=['a'])",
        )

    def _marker_options(node: pytest.Item) -> dict[str, Any]:
        options: dict[str, Any] = {}
        # iter_markers yields the closest marker first; let it win.
        for marker in reversed(list(node.iter_markers("wshub"))):
            if marker.args:
                raise pytest.UsageError(
                    f"{node.nodeid}: @pytest.mark.wshub takes keyword options "
                    f"of wshub.start() only, got positional {marker.args!r}")
            options.update(marker.kwargs)
        return options

    @pytest.fixture
    def wshub_server(request: pytest.FixtureRequest) -> Iterator[Server]:
        """A wshub server on 127.0.0.1 and a free port, stopped after the
        test; ``@pytest.mark.wshub(**options)`` passes options to
        :func:`wshub.start`. It is also the target of :func:`wshub.broadcast`
        while the test runs."""
        options: dict[str, Any] = {"port": 0, "host": HOST}
        options.update(_marker_options(request.node))
        server = wshub.start(**options)
        _server_paths[id(server)] = (server, options.get("path", DEFAULT_PATH))
        try:
            yield server
        finally:
            _server_paths.pop(id(server), None)
            server.stop()
            with wshub._lock:
                if wshub._default is server:
                    wshub._default = None

    @pytest.fixture
    def wshub_client(request: pytest.FixtureRequest) -> Iterator[ClientFactory]:
        """Factory: ``wshub_client(server, topics=["a"], **kwargs)`` returns
        a connected :class:`Client` (``server`` defaults to the
        ``wshub_server`` fixture; kwargs go to :class:`Client`). Every
        client is closed after the test."""
        clients: list[Client] = []

        def factory(
            server: Target | None = None,
            topics: Iterable[str] | None = None,
            **kwargs: Any,
        ) -> Client:
            if server is None:
                server = request.getfixturevalue("wshub_server")
                assert server is not None
            client = Client(server, topics, **kwargs)
            clients.append(client)
            return client

        yield factory
        for client in clients:
            client.close()
