"""A loopback TCP proxy the tests own, to break the network on purpose.

Clients connect to the proxy's port instead of the hub's; the proxy opens
one connection to the hub per client and copies bytes both ways. The test
can then do to the client what a real network does:

* ``cut()``: reset every current connection (both sides see the TCP
  connection end, as when a NAT or a load balancer drops it);
* ``freeze()``: stop copying on every current connection while keeping its
  sockets open (a dead link: nothing arrives, nothing closes);
* ``down = True``: refuse new clients (accepted, counted, reset at once),
  as an unreachable hub would; also what happens, whatever ``down`` says,
  when nothing listens on the hub's port.

``accepts`` records when each client connection arrived, so a test can
count reconnection attempts.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
import time

HOST = "127.0.0.1"


def _reset(sock: socket.socket) -> None:
    """Close with a RST instead of a FIN (SO_LINGER with a zero timeout)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class _Pipe:
    """One client's connection and the proxy's connection to the hub."""

    def __init__(self, client: socket.socket, upstream: socket.socket):
        self.client = client
        self.upstream = upstream
        self.frozen = threading.Event()
        # Set by the pipe's thread once it has stopped copying.
        self.parked = threading.Event()
        self.ended = threading.Event()
        self.thread = threading.Thread(target=self._run, name="tcp-proxy-pipe", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        peers = {self.client: self.upstream, self.upstream: self.client}
        try:
            while not self.ended.is_set():
                if self.frozen.is_set():
                    self.parked.set()
                    self.ended.wait(0.05)
                    continue
                readable, _, _ = select.select(list(peers), [], [], 0.05)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except OSError:
            return
        finally:
            self.end()

    def end(self) -> None:
        if not self.ended.is_set():
            self.ended.set()
            _reset(self.client)
            _reset(self.upstream)


class TcpProxy:
    """Listens on 127.0.0.1, a free port, and forwards to ``upstream_port``."""

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.down = False
        self.accepts: list[float] = []  # time.monotonic() of each client
        self._lock = threading.Lock()
        self._pipes: list[_Pipe] = []
        self._listener = socket.create_server((HOST, 0))
        # accept() wakes up now and then to see whether close() was called
        # (closing the socket from another thread does not wake it).
        self._listener.settimeout(0.05)
        self.port: int = self._listener.getsockname()[1]
        self._closed = False
        self._thread = threading.Thread(target=self._accept_loop, name="tcp-proxy", daemon=True)
        self._thread.start()

    def __enter__(self) -> "TcpProxy":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def accepts_between(self, start: float, end: float) -> int:
        with self._lock:
            return sum(1 for t in self.accepts if start <= t < end)

    def cut(self) -> int:
        """Resets every current connection; returns how many."""
        with self._lock:
            pipes, self._pipes = self._pipes, []
        for pipe in pipes:
            pipe.end()
        return len(pipes)

    def freeze(self) -> int:
        """Stops copying on every current connection, and returns how many
        once none copies any more: whatever is sent after is stuck."""
        with self._lock:
            pipes = [p for p in self._pipes if not p.ended.is_set()]
        for pipe in pipes:
            pipe.frozen.set()
        for pipe in pipes:
            if not (pipe.parked.wait(10) or pipe.ended.is_set()):
                raise TimeoutError("a proxy pipe did not stop copying within 10 s")
        return len(pipes)

    def close(self) -> None:
        self._closed = True
        self._thread.join(5)
        self._listener.close()
        self.cut()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            with self._lock:
                self.accepts.append(time.monotonic())
            if self.down:
                _reset(client)
                continue
            try:
                upstream = socket.create_connection((HOST, self.upstream_port), timeout=5)
            except OSError:
                _reset(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._pipes = [p for p in self._pipes if not p.ended.is_set()]
                self._pipes.append(_Pipe(client, upstream))
