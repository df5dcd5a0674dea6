"""TLS (`certfile`/`keyfile`): the hub serves wss:// and https:// with a
certificate from a test CA made here, to the websockets client, curl and
raw TLS sockets; reloads its certificate while connections stay open; and
answers what is not TLS, a bad handshake and a stalled one in bounded time.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time

import pytest
from websockets.sync.client import connect as ws_connect

import wshub
from cert_authority import CertAuthority, tls_socket
from helpers import HOST, _NO_PROXY, publication, wait_until


@pytest.fixture
def ca(tmp_path):
    return CertAuthority(tmp_path)


@pytest.fixture
def tls_hub(make_hub, ca):
    ca.issue()
    return make_hub(certfile=ca.certfile, keyfile=ca.keyfile)


def wss(ca: CertAuthority, port: int, topics: str):
    ws = ws_connect(f"wss://{HOST}:{port}/api/ws?topics={topics}", ssl=ca.context(),
                    open_timeout=10, **_NO_PROXY)
    ack = json.loads(ws.recv(timeout=5))
    assert ack["type"] == "connected" and ack["topics"] == [topics], ack
    return ws


def http_over(sock: socket.socket, path: str) -> bytes:
    """One GET on ``sock``; the whole answer (the hub closes after it)."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    return answer


def rejected(hub, reason: str) -> int:
    return hub.stats()["handshakes_rejected"][reason]


def test_websockets_client_over_wss_gets_publications(tls_hub, ca):
    ws = wss(ca, tls_hub.port, "odds")
    try:
        assert tls_hub.broadcast("odds", {"home": 1.85}) == 1
        assert ws.recv(timeout=5) == publication("odds", 1, '{"home":1.85}')
        # A batch larger than one TLS record arrives whole and in order.
        big = "x" * 40_000
        for i in range(50):
            tls_hub.broadcast("odds", {"i": i, "pad": big})
        for i in range(50):
            assert json.loads(ws.recv(timeout=10))["data"]["i"] == i
        stats = tls_hub.stats()
        assert stats["connections"] == 1 and stats["sent"] == 51
    finally:
        ws.close()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_reads_healthz_and_metrics_over_https(tls_hub, ca):
    def curl(path: str) -> str:
        done = subprocess.run(
            ["curl", "--silent", "--show-error", "--fail", "--noproxy", "*",
             "--max-time", "10", "--cacert", str(ca.cafile),
             f"https://{HOST}:{tls_hub.port}{path}"],
            capture_output=True, text=True, timeout=20)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert curl("/healthz") == "ok\n"
    # Plain HTTP on the TLS port first, so the counter has something.
    with socket.create_connection((HOST, tls_hub.port), timeout=10) as plain:
        http_over(plain, "/healthz")
    assert 'wshub_handshakes_rejected_total{reason="tls"} 1' in curl("/metrics")


def test_sse_and_client_js_are_served_over_tls(tls_hub, ca):
    with tls_socket(ca, tls_hub.port) as sock:
        answer = http_over(sock, "/api/ws/client.js")
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert b"javascript" in answer.split(b"\r\n\r\n", 1)[0].lower()

    sock = tls_socket(ca, tls_hub.port)
    try:
        sock.sendall(f"GET /api/ws/sse?topics=news HTTP/1.1\r\nHost: {HOST}\r\n"
                     "Accept: text/event-stream\r\n\r\n".encode())
        received = b""
        while b"\r\n\r\n" not in received:
            received += sock.recv(65536)
        assert received.startswith(b"HTTP/1.1 200"), received[:200]
        wait_until(lambda: tls_hub.stats()["sse_clients"] == 1)
        wait_until(lambda: tls_hub.stats()["topics"].get("news") == 1)
        tls_hub.broadcast("news", {"n": 1})
        while b'"n":1' not in received:
            chunk = sock.recv(65536)
            assert chunk, received
            received += chunk
    finally:
        sock.close()


def test_reload_keeps_open_connections_and_new_handshakes_get_the_new_cert(make_hub, ca):
    first = ca.issue("first")
    hub = make_hub(certfile=str(ca.certfile), keyfile=str(ca.keyfile))
    old_ws = wss(ca, hub.port, "t")
    with tls_socket(ca, hub.port) as sock:
        assert sock.getpeercert(binary_form=True) == first
    try:
        second = ca.issue("second")
        hub.reload_tls()
        with tls_socket(ca, hub.port) as sock:
            assert sock.getpeercert(binary_form=True) == second
        # The connection opened with the first certificate keeps working.
        new_ws = wss(ca, hub.port, "t")
        assert hub.broadcast("t", 1) == 2
        assert old_ws.recv(timeout=5) == publication("t", 1, "1")
        assert new_ws.recv(timeout=5) == publication("t", 1, "1")
        new_ws.close()
        # A reload from broken files fails and keeps the second certificate.
        ca.keyfile.write_text("not a key\n")
        with pytest.raises(ValueError, match="keyfile"):
            hub.reload_tls()
        with tls_socket(ca, hub.port) as sock:
            assert sock.getpeercert(binary_form=True) == second
        assert hub.broadcast("t", 2) == 1
        assert old_ws.recv(timeout=5) == publication("t", 2, "2")
    finally:
        old_ws.close()


def test_plain_http_on_the_tls_port_gets_400_and_is_counted(tls_hub):
    with socket.create_connection((HOST, tls_hub.port), timeout=10) as plain:
        answer = http_over(plain, "/healthz")
    assert answer.startswith(b"HTTP/1.1 400"), answer
    assert b"TLS only" in answer
    assert rejected(tls_hub, "tls") == 1


def test_a_broken_tls_handshake_is_closed_and_counted(tls_hub):
    with socket.create_connection((HOST, tls_hub.port), timeout=10) as sock:
        # A handshake record whose body is not a ClientHello.
        sock.sendall(bytes([0x16, 0x03, 0x01, 0x00, 0x05]) + b"\xff" * 5)
        received = b""
        while chunk := sock.recv(4096):
            received += chunk
    # rustls answers with an alert record (content type 21), then closes.
    assert received[:1] in (b"\x15", b""), received
    wait_until(lambda: rejected(tls_hub, "tls") == 1)


def test_a_stalled_tls_handshake_is_dropped_after_handshake_timeout(make_hub, ca):
    ca.issue()
    hub = make_hub(certfile=ca.certfile, keyfile=ca.keyfile, handshake_timeout=0.5)
    with socket.create_connection((HOST, hub.port), timeout=10) as sock:
        # The start of a record, then nothing more.
        sock.sendall(bytes([0x16, 0x03, 0x01]))
        started = time.monotonic()
        assert sock.recv(4096) == b""
        assert time.monotonic() - started < 5
    wait_until(lambda: rejected(hub, "timeout") == 1)
    # An idle connection (nothing sent) is bounded the same way.
    with socket.create_connection((HOST, hub.port), timeout=10) as sock:
        assert sock.recv(4096) == b""
    wait_until(lambda: rejected(hub, "timeout") == 2)


def test_bad_certificate_files_fail_start_with_value_error(make_hub, ca, tmp_path):
    with pytest.raises(ValueError, match="certfile .*missing.pem"):
        make_hub(certfile=tmp_path / "missing.pem", keyfile=tmp_path / "missing.pem")
    ca.issue()
    (tmp_path / "other").mkdir()
    other = CertAuthority(tmp_path / "other")
    other.issue()
    # A key that is not the certificate's.
    with pytest.raises(ValueError, match="is the key the certificate's"):
        make_hub(certfile=ca.certfile, keyfile=other.keyfile)
    with pytest.raises(ValueError, match="no PEM certificate"):
        make_hub(certfile=ca.keyfile, keyfile=ca.keyfile)
    with pytest.raises(ValueError, match="together"):
        make_hub(certfile=ca.certfile)


def test_reload_tls_without_tls_raises(hub):
    with pytest.raises(ValueError, match="without certfile"):
        hub.reload_tls()
    with pytest.raises(ValueError, match="without certfile"):
        wshub.reload_tls()
