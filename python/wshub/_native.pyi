"""Type stubs for the native part of wshub (checked by mypy.stubtest)."""

import os
from types import TracebackType
from typing import Any, Callable, Iterable, final

from wshub._request import Request

__all__ = ["Server", "__version__", "_stop_all", "reset_log_cache", "to_json"]
__version__: str

def _stop_all() -> None:
    """Stop every running hub of the process (``import wshub`` registers
    it with ``atexit``)."""

def reset_log_cache() -> None:
    """Make the hub re-read the levels of the ``wshub`` loggers (``import
    wshub`` does it on every ``setLevel``; needed only after assigning
    ``logger.level`` directly)."""

def to_json(value: object) -> str:
    """The compact JSON text ``broadcast(topic, value)`` publishes for a
    value that is not a str: what ``json.dumps(value, separators=(",", ":"),
    ensure_ascii=False)`` gives for the types json knows; an enum member's
    value; ``isoformat()`` of datetime, date and time and ``str()`` of
    uuid.UUID, as strings; ``str()`` of decimal.Decimal as a number; a
    dataclass instance as an object of its fields (docs/protocol.md).

    ValueError for NaN or an infinity, a circular reference or nesting
    deeper than 1000 levels; TypeError for other types and for dict keys
    that are not str, int, float, bool or None."""

@final
class Server:
    """A running wshub server: a WebSocket pub/sub hub on its own threads."""

    def __new__(
        cls,
        port: int = 0,
        *,
        host: str = "127.0.0.1",
        path: str = "/api/ws",
        topics: list[str] | None = None,
        allowed_origins: list[str] | None = None,
        max_connections: int = 100000,
        max_message_bytes: int = 65536,
        send_queue: int = 1024,
        send_queue_bytes: int = 16777216,
        max_topics_per_connection: int = 1024,
        max_topics: int = 100000,
        slow_client: str = "disconnect",
        rate_limit: float = 100.0,
        rate_burst: int = 200,
        publish_queue: int = 65536,
        publish_queue_bytes: int = 67108864,
        history_size: int = 1024,
        history_bytes: int = 1048576,
        history_ttl: float | None = None,
        retained_per_topic: int = 1000,
        retained_bytes: int = 67_108_864,
        compression: bool = False,
        compression_level: int = 6,
        compression_min_size: int = 256,
        jwt_key: str | bytes | None = None,
        jwt_algorithms: str = "HS256",
        jwt_audience: str | None = None,
        jwt_issuer: str | None = None,
        jwt_leeway: float = 0.0,
        jwt_query: str = "token",
        jwt_cookie: str | None = None,
        ping_interval: float = 20.0,
        ping_timeout: float = 20.0,
        handshake_timeout: float = 10.0,
        max_handshake_bytes: int = 65536,
        max_headers: int = 64,
        shutdown_timeout: float = 2.0,
        worker_threads: int = 1,
        on_subscription: Callable[[str, int], object] | None = None,
        backplane: str | None = None,
        backplane_prefix: str = "wshub:",
        reuse_port: bool = False,
        authorize: Callable[[Request], bool | int | Iterable[str] | None]
        | Callable[[str, str, dict[str, str]], bool | int | Iterable[str] | None]
        | None = None,
        authorize_timeout: float = 5.0,
        certfile: str | os.PathLike[str] | None = None,
        keyfile: str | os.PathLike[str] | None = None,
    ) -> Server: ...
    @property
    def port(self) -> int:
        """The bound TCP port (the real one when started with port 0)."""
    @property
    def host(self) -> str:
        """The address the server listens on."""
    @property
    def running(self) -> bool:
        """True until stop() is called."""
    def broadcast(
        self, topic: str, data: Any, key: object = None, retain: bool = False
    ) -> int:
        """Publish data (a JSON str, or a JSON-serialisable value) on topic.

        key: with slow_client="conflate", a client that is behind keeps only
        the newest pending publication per (topic, str(key)).

        retain: also keep it as the newest value of (topic, str(key)) (key
        None: the topic's one keyless value); clients that subscribe later
        receive it first, flagged "retained": true. ValueError when retained
        values are off or the value alone exceeds retained_bytes.

        Returns the number of subscribers it was queued for (with a
        backplane: this hub's subscribers of the topic).
        """
    def clear_retained(self, topic: str, key: object = None) -> None:
        """Forget the retained value of (topic, str(key)), or all of topic's
        when key is None; in order with the publications made before it."""
    def broadcast_many(self, items: Iterable[tuple[str, Any]]) -> list[int]:
        """Publish each (topic, data) pair in order with one call; all are
        checked first, so on error nothing is sent."""
    def stream(self, topic: str) -> tuple[str, int] | None:
        """(epoch, newest seq) of topic's stream, or None if the hub holds no such topic."""
    def reload_tls(self) -> None:
        """Read certfile and keyfile again: new TLS handshakes get the
        certificate they hold now, open connections keep theirs.
        ValueError for files that cannot be used (the old certificate stays)
        or a server started without certfile."""
    def stats(self) -> dict[str, Any]:
        """Counters: connections, topics, published, sent, sent_bytes,
        dropped, slow_consumer_closes, conflated, subscription_events_dropped
        (on_subscription calls dropped because the listener fell behind),
        connections_opened, connections_closed, handshakes_rejected (by
        reason), and for the Redis backplane: backplane_published, backplane_received,
        backplane_dropped, backplane_missed, backplane_reconnects (ints),
        backplane_connected (bool); history_bytes (bytes kept in topic
        histories for clients that recover); retained_values,
        retained_bytes (kept now), retained_evicted, retained_refused,
        retained_unsent (what the retained bounds or a new subscriber's
        queue left out); token_expired_closes, tokens_refreshed (jwt_key);
        sse_clients (Server-Sent Events streams open now).
        handshakes_rejected also counts token refusals (token_missing,
        token_malformed, token_signature, token_algorithm, token_expired,
        token_not_yet_valid, token_claims)."""
    def stop(self) -> None:
        """Close every client with 1001 and join the hub's threads."""
    def __enter__(self) -> Server: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
        /,
    ) -> bool: ...
