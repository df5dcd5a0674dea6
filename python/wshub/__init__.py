"""wshub: a WebSocket pub/sub hub that runs inside your Python process.

Start it once, publish from anywhere::

    import wshub
    hub = wshub.start(8765)
    hub.broadcast("odds_updates", {"match": 1, "home": 1.85})

Browsers connect to ``ws://HOST:8765/api/ws?topics=odds_updates`` and
receive ``{"type":"message","topic":"odds_updates","seq":1,"data":{...}}``.
The server runs on its own Rust threads: ``broadcast`` returns at once and
never waits on a client. The protocol is described in docs/protocol.md.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from pathlib import Path
from typing import Any, Callable, Iterable

from wshub._native import Server, __version__, _stop_all, reset_log_cache, to_json
from wshub._request import Address, Headers, QueryParams, Request

__all__ = [
    "Address",
    "Headers",
    "QueryParams",
    "Request",
    "Server",
    "__version__",
    "broadcast",
    "clear_retained",
    "client_js_path",
    "reload_tls",
    "reset_log_cache",
    "start",
    "stop",
    "to_json",
]

_lock = threading.Lock()
_default: Server | None = None


def _follow_log_levels() -> None:
    """Make level changes reach the hub at once.

    The hub caches the effective level of each ``wshub`` logger, so that an
    event below it costs no GIL and no Python call. ``Logger.setLevel``,
    ``logging.disable`` and ``logging.config`` all clear the logging
    manager's level cache (``Manager._clear_cache``); clearing the hub's
    cache with it keeps the two in step (pytest's ``caplog.set_level``
    included). Only assigning ``logger.level`` directly bypasses it: then
    call :func:`reset_log_cache`.
    """
    manager = logging.Logger.manager
    clear = getattr(manager, "_clear_cache", None)
    if clear is None or getattr(clear, "_wshub_follows", False):
        return  # another Python's logging, or already installed

    def _clear_cache() -> None:
        clear()
        reset_log_cache()

    setattr(_clear_cache, "_wshub_follows", True)
    setattr(manager, "_clear_cache", _clear_cache)


_follow_log_levels()


# Every hub of the process, Server() ones too, stops at interpreter exit
# while Python still runs (see _stop_all in src/bindings/python.rs).
atexit.register(_stop_all)


def start(
    port: int = 0,
    *,
    host: str = "127.0.0.1",
    path: str = "/api/ws",
    topics: Iterable[str] | None = None,
    allowed_origins: Iterable[str] | None = None,
    max_connections: int = 100_000,
    max_message_bytes: int = 65_536,
    send_queue: int = 1024,
    send_queue_bytes: int = 16_777_216,
    max_topics_per_connection: int = 1024,
    max_topics: int = 100_000,
    slow_client: str = "disconnect",
    rate_limit: float = 100.0,
    rate_burst: int = 200,
    publish_queue: int = 65_536,
    publish_queue_bytes: int = 67_108_864,
    history_size: int = 1024,
    history_bytes: int = 1_048_576,
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
    max_handshake_bytes: int = 65_536,
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
) -> Server:
    """Start a hub listening on ``host:port`` and return its :class:`Server`.

    Raises RuntimeError in a process forked from one that has a running hub
    (start hubs after forking, e.g. in each worker). The port is bound
    before this returns: ``port=0`` picks a free port (read
    it from ``server.port``), and a port in use raises ``OSError`` with
    ``errno.EADDRINUSE`` (unless every process on it passes
    ``reuse_port=True``). The server also becomes the target of the
    module-level :func:`broadcast` and :func:`stop`.

    Options (keyword-only):

    host (str, default "127.0.0.1"):
        Address to listen on. Loopback by default; "0.0.0.0" serves others.
    path (str, default "/api/ws"):
        The only HTTP path that upgrades to a WebSocket; others get 404.
    topics (list of str or None, default None):
        None: clients may subscribe to any valid topic name (1-128 chars of
        [A-Za-z0-9_.:-]). A list: only those; a client asking for none of
        them is subscribed to all of them.
    allowed_origins (list of str or None, default None):
        Exact browser origins allowed to connect, e.g.
        ["https://app.example.com"]; a handshake whose Origin header is not
        listed gets HTTP 403. None allows every origin, which lets any web
        page a visitor opens read your feed (cross-site WebSocket
        hijacking): set it when the feed is not public. Clients that send
        no Origin header (non-browser programs) are always allowed.
    max_connections (int, default 100000):
        Open WebSocket connections at most; further handshakes get HTTP 503.
    max_message_bytes (int, default 65536):
        Largest message a client may send, in bytes; over it the client is
        closed with code 1009.
    send_queue (int, default 1024):
        Frames waiting to be written to one client (or being written), at
        most. A client whose queue is full is closed with code 1008 "slow
        consumer"; nobody else waits for it.
    send_queue_bytes (int, default 16777216):
        Bytes queued for one client (or being written), at most; over it,
        the same 1008 close. (A single frame larger than this is still
        delivered on its own.)
    max_topics_per_connection (int, default 1024):
        Topics one client may be subscribed to at once; further names are
        answered in "rejected" with reason "too_many_topics".
    max_topics (int, default 100000):
        Topics the hub holds at most, across all clients. Only topics with
        a subscriber are held (a topic is forgotten when its last
        subscriber leaves; a broadcast on a topic nobody is subscribed to
        holds nothing), so this bounds what clients asking for made-up
        names can cost. Further names are answered in "rejected" with
        reason "hub_full".
    slow_client ("disconnect" or "conflate", default "disconnect"):
        What happens to a client whose queue (send_queue, send_queue_bytes)
        is full. "disconnect": it is closed with 1008 "slow consumer".
        "conflate": it is never closed for it; instead only the newest
        pending publication per (topic, key) is kept, key being the key=
        argument of broadcast() (the topic alone when None). A client that
        catches up gets the newest value of every key it missed, in order:
        what a live odds board wants. At most send_queue keys are kept per
        client beyond its queue (oldest dropped first, counted in
        stats()["dropped"]); replaced values count in stats()["conflated"].
    rate_limit (float messages per second, default 100.0):
        Average rate at which a client's messages are handled. A message
        over the limit is answered with an error frame "rate_limited" and
        dropped. Pings (protocol and WebSocket) are counted apart, at the
        same rate and burst, so pinging never uses up a subscribe's share.
    rate_burst (int, default 200):
        Messages a client may send at once; a client that sends this many
        more while limited is closed with code 1008.
    publish_queue (int, default 65536):
        Publications waiting for the fan-out, at most. broadcast() waits for
        room only if the hub's threads cannot keep up at all.
    publish_queue_bytes (int, default 67108864):
        Bytes of publications waiting for the fan-out, at most; broadcast()
        waits for room the same way, so a burst of large publications does
        not pile up in memory. A single publication larger than this still
        goes through (alone).
    history_size (int, default 1024):
        Publications kept per topic so that a client that lost its
        connection can recover exactly what it missed (it reconnects with
        ``since``, see docs/protocol.md); 0 keeps none. A topic with a
        history stays in the hub while nobody is subscribed, until its
        place is needed (max_topics) or its history expires. A client
        recovers at most what its send_queue takes at once.
    history_bytes (int, default 1048576):
        Bytes of those publications kept per topic, at most (up to 1 GiB).
    history_ttl (float seconds or None, default None):
        Age after which a publication leaves the history; None: only
        history_size and history_bytes push it out.
    retained_per_topic (int, default 1000):
        Retained values (broadcast(..., retain=True)) kept per topic, one
        per key; a new key past it pushes out the topic's oldest value
        (stats()["retained_evicted"]). A new subscriber receives them
        within what its send_queue takes at once (the newest first; the
        rest is counted in retained_unsent). 0 to 1000000.
    retained_bytes (int, default 67108864):
        Bytes of retained frames kept across all topics. When other topics
        hold it all, a new value pushes out older ones of its own topic,
        or is not kept (retained_refused). 0 turns retained values off
        (retain=True then raises ValueError). At most 4 GiB.
    compression (bool, default False):
        Negotiates permessage-deflate (RFC 7692) with clients that offer
        it, answering server_no_context_takeover and
        client_no_context_takeover. Each publication is compressed once
        and the compressed frame is shared by every compressing
        subscriber (stats(): deflate_clients, compressed_publications,
        compression_bytes_in, compression_bytes_out). Invalid or
        unacceptable offers (server_max_window_bits below 15, unknown or
        repeated parameters) are declined: that client is served
        uncompressed.
    compression_level (int, default 6):
        Deflate level, 1 (fastest) to 9 (smallest); other values raise
        ValueError.
    compression_min_size (int, default 256):
        Publication frames shorter than this many bytes are sent
        uncompressed even to compressing clients.
    jwt_key (str, bytes or None, default None):
        Turns on the built-in token check: every handshake must carry a
        JSON Web Token signed with this key (the HMAC secret for HS*, the
        PEM public key for RS*, PS*, ES*, EdDSA) and an "exp" claim, or it
        gets HTTP 401 (stats()["handshakes_rejected"]["token_..."] says
        why). A "topics" claim (a list of names) limits what the client may
        subscribe to. When the token expires the connection is closed with
        4001 "token expired", unless the client sent
        {"type":"refresh","token":...} with a newer one first. The token is
        read from "Authorization: Bearer", a "bearer.<token>" entry of
        Sec-WebSocket-Protocol (offer "wshub" beside it), the jwt_cookie
        cookie, or the jwt_query query parameter, in that order.
    jwt_algorithms (str, default "HS256"):
        Comma-separated algorithms accepted, all of the key's family; a
        token signed otherwise (or with "none") is refused.
    jwt_audience (str or None, default None):
        The "aud" a token must name; None: "aud" is not checked.
    jwt_issuer (str or None, default None):
        The "iss" a token must have, if it has one; None: not checked.
    jwt_leeway (float seconds, default 0.0):
        Clock skew allowed on "exp" and "nbf".
    jwt_query (str, default "token"):
        The query parameter a token may come in.
    jwt_cookie (str or None, default None):
        The cookie a token may come in; None: not from a cookie.
    ping_interval (float seconds, default 20.0):
        How often the server pings each client.
    ping_timeout (float seconds, default 20.0):
        A client silent for ping_interval + ping_timeout is closed (1011).
    handshake_timeout (float seconds, default 10.0):
        Time a new TCP connection has to complete its WebSocket handshake
        (with certfile, the TLS handshake included).
    max_handshake_bytes (int, default 65536):
        Longest HTTP request head (request line and headers) in bytes; a
        longer one gets HTTP 431 as soon as this much has arrived
        (stats()["handshakes_rejected"]["too_large"]). 1024 to 16777216
        (ValueError otherwise). Raise it for very large cookies.
    max_headers (int, default 64):
        Most headers in an HTTP request; one more gets HTTP 431 as soon as
        it arrives (handshakes_rejected["too_many_headers"]). A browser's
        upgrade has about 15. 8 to 1024 (ValueError otherwise).
    shutdown_timeout (float seconds, default 2.0):
        How long stop() waits for clients to take their close frame.
    worker_threads (int, default 1):
        Threads of the hub's own tokio runtime.
    on_subscription (callable or None, default None):
        on_subscription(topic, subscribers) is called when a topic gains its
        first subscriber (subscribers == 1) or loses its last (0), so a
        producer can fetch only what somebody watches. It runs on a thread
        of the hub's own, one call at a time, in order; an exception in it
        is logged (logger "wshub"), never fatal. Keep it quick: events queue
        up behind it (at most 4096, then they are dropped and counted in
        stats()["subscription_events_dropped"]).
    backplane (str or None, default None):
        A Redis URL, "redis://host:port/db", through which hubs in several
        processes or hosts serve one feed: every broadcast goes to Redis,
        which numbers it (seq stays strictly increasing per topic whichever
        hub published), and every hub delivers it to its own clients.
        broadcast() then returns this hub's subscriber count and never waits
        for Redis: publications that do not fit in publish_queue while Redis
        is slow or away are dropped and counted (stats()["backplane_dropped"]).
        start() raises ConnectionError (an OSError) if Redis cannot be
        reached within 5 seconds; later outages are survived by
        reconnecting. See docs/scaling.md.
    backplane_prefix (str, default "wshub:"):
        Prefix of the Redis channels ("<prefix><topic>") and counter keys
        ("<prefix>seq:<topic>"); only hubs with the same prefix share
        publications. 1-64 characters of [A-Za-z0-9_.:-].
    reuse_port (bool, default False):
        Set SO_REUSEPORT so that several processes (e.g. the workers of
        gunicorn) can each start a hub on the same port; the kernel spreads
        the connections among them. Requires backplane, so that every
        worker's clients get every publication (ValueError otherwise).
    authorize (callable or None, default None):
        authorize(request) checks each WebSocket handshake. request is a
        wshub.Request with: path; query_string (raw, without "?");
        query_params (percent-decoded; params["token"] is the last value,
        params.getlist("topics") every one); headers (case-insensitive:
        headers["Authorization"], headers.getlist(name)); cookies (dict
        parsed from the Cookie header); client (host, port) of the TCP
        peer; topics (the names the client asks for, as the hub reads
        them). It returns True or None to admit, False to refuse with HTTP
        403, an int to refuse with that status (e.g. 401), or an iterable
        of topic names to admit the client to those topics only. The first
        form, authorize(path, query, headers) with headers a dict of
        lower-case names, still works: a callable that cannot be called
        with one argument but can with three gets those (told apart once,
        from its signature, when the hub starts). It runs on the hub's
        blocking threads, and several calls may run at once, so it must be
        thread-safe; never on its I/O threads. An exception refuses with
        403 and is logged.
    authorize_timeout (float seconds, default 5.0):
        A slower authorize() refuses the handshake with HTTP 503.
    certfile (str or path, default None):
        Serve TLS only (wss://, https://) with this PEM certificate chain,
        leaf first; give keyfile too. None: plain TCP. A file that cannot
        be read or does not go with keyfile raises ValueError here.
        Server.reload_tls() reads both files again (a renewed certificate).
        A client that speaks plain HTTP to the port gets HTTP 400; a failed
        TLS handshake is counted in handshakes_rejected["tls"].
    keyfile (str or path, default None):
        The PEM private key (PKCS#8, PKCS#1 or SEC1) of certfile's leaf.
    """
    global _default
    server = Server(
        port,
        host=host,
        path=path,
        topics=None if topics is None else list(topics),
        allowed_origins=None if allowed_origins is None else list(allowed_origins),
        max_connections=max_connections,
        max_message_bytes=max_message_bytes,
        send_queue=send_queue,
        send_queue_bytes=send_queue_bytes,
        max_topics_per_connection=max_topics_per_connection,
        max_topics=max_topics,
        slow_client=slow_client,
        rate_limit=rate_limit,
        rate_burst=rate_burst,
        publish_queue=publish_queue,
        publish_queue_bytes=publish_queue_bytes,
        history_size=history_size,
        history_bytes=history_bytes,
        history_ttl=history_ttl,
        retained_per_topic=retained_per_topic,
        retained_bytes=retained_bytes,
        compression=compression,
        compression_level=compression_level,
        compression_min_size=compression_min_size,
        jwt_key=jwt_key,
        jwt_algorithms=jwt_algorithms,
        jwt_audience=jwt_audience,
        jwt_issuer=jwt_issuer,
        jwt_leeway=jwt_leeway,
        jwt_query=jwt_query,
        jwt_cookie=jwt_cookie,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        handshake_timeout=handshake_timeout,
        max_handshake_bytes=max_handshake_bytes,
        max_headers=max_headers,
        shutdown_timeout=shutdown_timeout,
        worker_threads=worker_threads,
        on_subscription=on_subscription,
        backplane=backplane,
        backplane_prefix=backplane_prefix,
        reuse_port=reuse_port,
        authorize=authorize,
        authorize_timeout=authorize_timeout,
        certfile=certfile,
        keyfile=keyfile,
    )
    with _lock:
        _default = server
    return server


def broadcast(topic: str, data: Any, key: object = None, retain: bool = False) -> int:
    """Publish ``data`` on ``topic`` on the server the last :func:`start` made.

    ``data`` is a str of JSON (sent verbatim) or any JSON-serialisable value.
    With ``retain=True`` it is also kept as the newest value of (topic, key)
    for clients that subscribe later (see :meth:`Server.broadcast`).
    Returns the number of subscribers it was queued for. Raises
    ``RuntimeError`` if no server was started or it was stopped, and
    ``ValueError`` for an invalid topic or invalid JSON.
    """
    return _running().broadcast(topic, data, key, retain)


def clear_retained(topic: str, key: object = None) -> None:
    """Forget the retained value of (topic, key), or all of ``topic``'s when
    ``key`` is None, on the server the last :func:`start` made."""
    _running().clear_retained(topic, key)


def reload_tls() -> None:
    """Read ``certfile`` and ``keyfile`` again on the server the last
    :func:`start` made: new TLS handshakes get the certificate they hold
    now, open connections keep theirs (see :meth:`Server.reload_tls`).
    Raises ``ValueError`` for files that cannot be used (the previous
    certificate stays) and ``RuntimeError`` if no server was started."""
    _running().reload_tls()


def _running() -> Server:
    server = _default
    if server is None:
        raise RuntimeError("wshub is not started: call wshub.start(port) first")
    return server


def stop() -> None:
    """Stop the server the last :func:`start` made (no-op if there is none)."""
    global _default
    with _lock:
        server, _default = _default, None
    if server is not None:
        server.stop()


def client_js_path() -> Path:
    """Path of ``wshub.js``, the browser client, in this installed package.

    The hub serves the same file at ``<path>/client.js`` (e.g.
    ``http://HOST:8765/api/ws/client.js``); an app that would rather serve
    it from its own origin returns this file, e.g. with FastAPI
    ``FileResponse(wshub.client_js_path(), media_type="text/javascript")``.
    Its types are ``wshub.d.ts`` beside it; docs/client.md describes it.
    """
    return Path(__file__).resolve().parent / "client" / "wshub.js"
