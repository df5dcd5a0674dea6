"""Helpers for the wshub test suite (clients, raw sockets, polling).

Everything here talks to 127.0.0.1 only. Synchronisation is done by waiting
on observable conditions (``wait_until``, blocking receives with timeouts),
never by sleeping for a fixed time and hoping.
"""

from __future__ import annotations

import base64
import importlib.util
import hashlib
import inspect
import json
import os
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import websockets
from websockets.sync.client import connect as ws_connect


HOST = "127.0.0.1"
DEFAULT_PATH = "/api/ws"

# websockets honours *_proxy environment variables by default; the tests must
# never leave the loopback interface, so disable that where supported.
_CONNECT_PARAMS = inspect.signature(ws_connect).parameters
_NO_PROXY: dict[str, Any] = {"proxy": None} if "proxy" in _CONNECT_PARAMS else {}
# websockets >= 17.1 wants connect() used as a context manager unless
# legacy=True; the tests manage connection lifetimes themselves.
if "legacy" in _CONNECT_PARAMS:
    _NO_PROXY["legacy"] = True


# --------------------------------------------------------------------------
# generic helpers
# --------------------------------------------------------------------------


def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 5.0,
    interval: float = 0.005,
    message: str | Callable[[], str] | None = None,
) -> Any:
    """Poll ``predicate`` until it returns a truthy value; return that value.

    Raises AssertionError after ``timeout`` seconds, with ``message`` (or the
    message callable's result) to explain what was being waited for.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(
                f"condition not met within {timeout}s: {text or predicate}"
            )
        time.sleep(interval)


def port_of(target: Any) -> int:
    """Accept a wshub.Server or a port number."""
    return target if isinstance(target, int) else target.port


def ws_url(port: int, topics: Iterable[str] | str | None = None,
           path: str = DEFAULT_PATH, query: str | None = None) -> str:
    """URL of a hub. ``topics`` (list or pre-joined string) becomes
    ``?topics=a,b``; ``query`` is appended verbatim instead when given."""
    url = f"ws://{HOST}:{port}{path}"
    if query is not None:
        url += "?" + query
    elif topics is not None:
        joined = topics if isinstance(topics, str) else ",".join(topics)
        url += "?topics=" + joined
    return url


def thread_count() -> int:
    """Native threads of this process (Rust threads are invisible to
    ``threading``)."""
    return len(os.listdir("/proc/self/task"))


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def wshub_thread_names() -> list[str]:
    names = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                name = f.read().strip()
        except OSError:  # thread exited meanwhile
            continue
        if name.startswith("wshub"):
            names.append(name)
    return names


def publication(topic: str, seq: int, data: str) -> str:
    """The exact text of a publication frame (protocol.md)."""
    return f'{{"type":"message","topic":"{topic}","seq":{seq},"data":{data}}}'


# --------------------------------------------------------------------------
# WebSocket client (websockets' sync client)
# --------------------------------------------------------------------------


def without_streams(answer: dict) -> dict:
    """An answer without its ``streams`` (epoch and newest seq per topic,
    which each run numbers anew), for comparing the rest of it exactly."""
    return {k: v for k, v in answer.items() if k != "streams"}


class Client:
    """A websockets sync client that has already read its ``connected`` ack.

    The ``streams`` of the answers (epoch and newest seq per topic newly
    subscribed) are taken out of them into ``self.streams``, so that tests
    of everything else compare answers as protocol v1 wrote them;
    ``self.last_streams`` holds those of the latest answer.
    """

    def __init__(self, ws, ack: dict):
        self.ws = ws
        self.streams: dict = {}
        self.last_streams: dict = {}
        self.ack = self._take_streams(ack)

    def _take_streams(self, answer: dict) -> dict:
        if answer.get("type") in ("connected", "subscribed"):
            self.last_streams = answer.pop("streams", {})
            self.streams.update(self.last_streams)
        return answer

    # receiving ------------------------------------------------------------
    def recv_text(self, timeout: float = 5.0) -> str:
        try:
            frame = self.ws.recv(timeout=timeout)
        except TimeoutError:
            raise AssertionError(f"no frame received within {timeout}s") from None
        assert isinstance(frame, str), f"expected a text frame, got {frame!r}"
        return frame

    def recv_json(self, timeout: float = 5.0) -> dict:
        text = self.recv_text(timeout)
        value = json.loads(text)
        assert isinstance(value, dict) and isinstance(value.get("type"), str), text
        return self._take_streams(value)

    def recv_messages(self, n: int, timeout: float = 10.0) -> list[dict]:
        """Receive ``n`` frames that must all be publications."""
        deadline = time.monotonic() + timeout
        out = []
        while len(out) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"received {len(out)} of {n} publications")
            msg = self.recv_json(timeout=remaining)
            assert msg["type"] == "message", msg
            out.append(msg)
        return out

    # sending --------------------------------------------------------------
    def send_text(self, text: str) -> None:
        self.ws.send(text)

    def send_json(self, obj: Any) -> None:
        self.ws.send(json.dumps(obj))

    def request(self, obj: Any, timeout: float = 5.0) -> dict:
        """Send ``obj`` (JSON-encoded unless it is already str/bytes) and
        return the next frame."""
        if isinstance(obj, (str, bytes)):
            self.ws.send(obj)
        else:
            self.send_json(obj)
        return self.recv_json(timeout)

    def ping(self, id_: Any = None) -> None:
        """Assert that an application-level ping is answered."""
        if id_ is None:
            assert self.request({"type": "ping"}) == {"type": "pong"}
        else:
            assert self.request({"type": "ping", "id": id_}) == {
                "type": "pong", "id": id_}

    def subscribe(self, topics: list) -> dict:
        return self.request({"type": "subscribe", "topics": topics})

    def unsubscribe(self, topics: list) -> dict:
        return self.request({"type": "unsubscribe", "topics": topics})

    def expect_closed(self, timeout: float = 5.0):
        """Wait until the server closes the connection; return the
        ConnectionClosed exception (check ``.rcvd.code``)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"connection still open after {timeout}s")
            try:
                self.ws.recv(timeout=remaining)
            except websockets.ConnectionClosed as exc:
                return exc
            except TimeoutError:
                continue

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:
            pass


def open_ws(port: int, topics=None, path: str = DEFAULT_PATH,
            query: str | None = None, **kwargs):
    """Open a raw websockets connection (no ack read)."""
    options = dict(
        open_timeout=5,
        close_timeout=1,
        ping_interval=None,
        max_size=None,
        max_queue=None,
    )
    options.update(_NO_PROXY)
    options.update(kwargs)
    return ws_connect(ws_url(port, topics, path, query), **options)


def connect_client(target, topics=None, path: str = DEFAULT_PATH,
                   query: str | None = None, **kwargs) -> Client:
    """Connect and read the ``connected`` acknowledgement."""
    ws = open_ws(port_of(target), topics, path, query, **kwargs)
    try:
        frame = ws.recv(timeout=5)
        assert isinstance(frame, str), f"ack must be a text frame: {frame!r}"
        ack = json.loads(frame)
        assert ack.get("type") == "connected", f"first frame must be the ack: {frame}"
    except BaseException:
        ws.close()
        raise
    return Client(ws, ack)


# --------------------------------------------------------------------------
# Raw socket WebSocket client, for misbehaving peers
# --------------------------------------------------------------------------

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


class RawWS:
    """A hand-rolled WebSocket client over a plain socket.

    It never answers pings and reads only when told to, which is what the
    slow-consumer and keep-alive tests need.
    """

    def __init__(self, port: int, path: str = DEFAULT_PATH, query: str = "",
                 rcvbuf: int | None = None, timeout: float = 5.0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            # Must be set before connect() so the advertised window is small.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((HOST, port))
        self.buf = b""
        key = base64.b64encode(os.urandom(16)).decode()
        target = path + ("?" + query if query else "")
        request = (
            f"GET {target} HTTP/1.1\r\n"
            f"Host: {HOST}:{port}\r\n"
            "Upgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n"
            "\r\n"
        )
        self.sock.sendall(request.encode())
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise AssertionError(f"connection closed during handshake: {self.buf!r}")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        self.status_line = lines[0]
        assert lines[0].split(" ")[1] == "101", f"handshake failed: {lines[0]}"
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        expected = base64.b64encode(
            hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        assert headers.get("sec-websocket-accept") == expected, headers
        self.headers = headers

    # low level ------------------------------------------------------------
    def _fill(self, n: int) -> bool:
        """Read until ``self.buf`` has ``n`` bytes; False on EOF/reset."""
        while len(self.buf) < n:
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                return False
            if not chunk:
                return False
            self.buf += chunk
        return True

    def read_frame(self):
        """Next (opcode, payload) from the server, or None when the TCP
        connection ended (EOF or reset). Raises socket.timeout."""
        if not self._fill(2):
            return None
        b0, b1 = self.buf[0], self.buf[1]
        assert not b1 & 0x80, "server frames must not be masked"
        length = b1 & 0x7F
        offset = 2
        if length == 126:
            if not self._fill(4):
                return None
            length = struct.unpack("!H", self.buf[2:4])[0]
            offset = 4
        elif length == 127:
            if not self._fill(10):
                return None
            length = struct.unpack("!Q", self.buf[2:10])[0]
            offset = 10
        if not self._fill(offset + length):
            return None
        payload = self.buf[offset:offset + length]
        self.buf = self.buf[offset + length:]
        return b0 & 0x0F, payload

    def send_frame(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        header = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 65536:
            header += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def read_until_closed(self, timeout: float):
        """Read frames until the TCP connection ends. Returns (frames,
        seconds waited). Raises AssertionError if still open after
        ``timeout``."""
        start = time.monotonic()
        deadline = start + timeout
        frames = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"connection still open after {timeout}s")
            self.sock.settimeout(remaining)
            try:
                frame = self.read_frame()
            except socket.timeout:
                raise AssertionError(
                    f"connection still open after {timeout}s; frames: "
                    f"{[(op, p[:80]) for op, p in frames]}") from None
            if frame is None:
                return frames, time.monotonic() - start
            frames.append(frame)

    def reset(self) -> None:
        """Vanish abruptly: RST instead of FIN."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                             struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def close_code(payload: bytes) -> tuple[int | None, str]:
    if len(payload) < 2:
        return None, ""
    return struct.unpack("!H", payload[:2])[0], payload[2:].decode("utf-8", "replace")


# The FastAPI example (examples/fastapi_app/app.py), shared by the tests
# that drive it.
APP_PATH = Path(__file__).resolve().parent.parent / "examples" / "fastapi_app" / "app.py"


def load_example() -> Any:
    """Import examples/fastapi_app/app.py once, as a module."""
    name = "wshub_fastapi_example_app"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, APP_PATH)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name]
