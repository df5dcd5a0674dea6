"""permessage-deflate (RFC 7692): negotiated only with compression=True,
one compressed frame per publication shared by every compressing
subscriber, and bad offers declined (the client is served uncompressed)."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import zlib

import pytest
from websockets.sync.client import connect as ws_connect

from helpers import wait_until

PATH = "/api/ws"
DATA = [{"odds": 1.25 + i / 100, "market": "match winner", "runner": "home"} for i in range(40)]


class RawDeflateClient:
    """A socket speaking the handshake itself, reading frames as they are
    on the wire (RSV1 bit, byte counts), inflating them with zlib."""

    def __init__(self, port: int, extensions: str | None, topics: str = "odds"):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        key = base64.b64encode(os.urandom(16)).decode()
        head = (
            f"GET {PATH}?topics={topics} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        )
        if extensions is not None:
            head += f"Sec-WebSocket-Extensions: {extensions}\r\n"
        self.sock.sendall((head + "\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            assert chunk, "closed during the handshake"
            self.buf += chunk
        raw, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = raw.decode().split("\r\n")
        assert lines[0].startswith("HTTP/1.1 101"), lines[0]
        self.headers = {}
        for line in lines[1:]:
            name, value = line.split(":", 1)
            self.headers[name.strip().lower()] = value.strip()
        self.wire_bytes = 0

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            assert chunk, "connection closed"
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        self.wire_bytes += n
        return out

    def frame(self) -> tuple[bool, dict]:
        """The next message (pongs skipped): whether it was compressed,
        and its JSON."""
        while True:
            b0, b1 = self._take(2)
            length = b1 & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", self._take(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", self._take(8))
            payload = self._take(length)
            if b0 & 0x0F != 0xA:
                break
        assert b0 & 0x80, "fragmented frame"
        assert b0 & 0x0F == 1, f"not a text frame: {b0:#x}"
        compressed = bool(b0 & 0x40)
        if compressed:
            payload = zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")
        return compressed, json.loads(payload)

    def close(self) -> None:
        self.sock.close()


def publications(client: RawDeflateClient, count: int) -> list[tuple[bool, dict]]:
    got = []
    while len(got) < count:
        compressed, message = client.frame()
        if message.get("type") == "message":
            got.append((compressed, message))
    return got


def test_compressing_and_plain_clients_get_identical_data_and_the_compressing_one_fewer_bytes(make_hub):
    hub = make_hub(compression=True, compression_min_size=64)
    deflating = RawDeflateClient(hub.port, "permessage-deflate; client_max_window_bits")
    plain = RawDeflateClient(hub.port, None)
    assert deflating.headers["sec-websocket-extensions"] == (
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    )
    assert "sec-websocket-extensions" not in plain.headers
    # The websockets client, compression on and off, against the same hub.
    with ws_connect(f"ws://127.0.0.1:{hub.port}{PATH}?topics=odds") as ws_on, ws_connect(
        f"ws://127.0.0.1:{hub.port}{PATH}?topics=odds", compression=None
    ) as ws_off:
        wait_until(lambda: hub.stats()["deflate_clients"] == 2)
        wait_until(lambda: hub.stats()["connections"] == 4)
        for item in DATA:
            hub.broadcast("odds", item)
        a = publications(deflating, len(DATA))
        b = publications(plain, len(DATA))
        assert [m for _, m in a] == [m for _, m in b]
        assert [m["data"] for _, m in a] == DATA
        assert all(compressed for compressed, _ in a)
        assert not any(compressed for compressed, _ in b)
        assert deflating.wire_bytes < plain.wire_bytes

        def messages(ws):
            out = []
            while len(out) < len(DATA):
                message = json.loads(ws.recv(timeout=5))
                if message["type"] == "message":
                    out.append(message)
            return out

        assert messages(ws_on) == messages(ws_off) == [m for _, m in a]
        stats = hub.stats()
        # Compressed once per publication, not per compressing subscriber.
        assert stats["compressed_publications"] == len(DATA)
        assert 0 < stats["compression_bytes_out"] < stats["compression_bytes_in"]
    deflating.close()
    plain.close()
    wait_until(lambda: hub.stats()["deflate_clients"] == 0)


def test_short_publications_go_uncompressed(make_hub):
    hub = make_hub(compression=True, compression_min_size=10_000)
    client = RawDeflateClient(hub.port, "permessage-deflate")
    wait_until(lambda: hub.stats()["deflate_clients"] == 1)
    hub.broadcast("odds", DATA[0])
    [(compressed, message)] = publications(client, 1)
    assert not compressed and message["data"] == DATA[0]
    assert hub.stats()["compressed_publications"] == 0
    client.close()


def test_compression_is_off_by_default(hub):
    client = RawDeflateClient(hub.port, "permessage-deflate")
    assert "sec-websocket-extensions" not in client.headers
    client.close()


@pytest.mark.parametrize(
    "offer",
    [
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=10",
        "permessage-deflate; unknown_param",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; client_max_window_bits=16",
        "x-webkit-deflate-frame",
    ],
)
def test_bad_deflate_offers_are_declined_and_served_uncompressed(make_hub, offer):
    hub = make_hub(compression=True, compression_min_size=0)
    client = RawDeflateClient(hub.port, offer)
    assert "sec-websocket-extensions" not in client.headers
    wait_until(lambda: hub.stats()["connections"] == 1)
    hub.broadcast("odds", DATA)
    [(compressed, message)] = publications(client, 1)
    assert not compressed and message["data"] == DATA
    assert hub.stats()["deflate_clients"] == 0
    client.close()


def test_a_bad_offer_falls_back_to_the_next_one(make_hub):
    hub = make_hub(compression=True)
    client = RawDeflateClient(
        hub.port, "permessage-deflate; server_max_window_bits=9, permessage-deflate"
    )
    assert client.headers["sec-websocket-extensions"].startswith("permessage-deflate")
    client.close()


@pytest.mark.parametrize("level", [0, 10])
def test_compression_level_out_of_range_is_refused(level):
    import wshub

    with pytest.raises(ValueError, match="compression_level"):
        wshub.start(0, compression=True, compression_level=level)


def masked_frame(payload: bytes, opcode: int = 1, rsv1: bool = True, fin: bool = True) -> bytes:
    """A client frame (masked), RSV1 set for a compressed message."""
    mask = os.urandom(4)
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    n = len(payload)
    if n < 126:
        head = bytes([b0, 0x80 | n])
    elif n < 65536:
        head = bytes([b0, 0x80 | 126]) + struct.pack("!H", n)
    else:
        head = bytes([b0, 0x80 | 127]) + struct.pack("!Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def close_frame(client: RawDeflateClient) -> int:
    """Reads frames until the server's close; returns its code."""
    while True:
        b0, b1 = client._take(2)
        length = b1 & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", client._take(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", client._take(8))
        payload = client._take(length)
        if b0 & 0x0F == 8:
            return struct.unpack("!H", payload[:2])[0]


def test_a_compressed_client_message_is_inflated(make_hub):
    hub = make_hub(compression=True)
    client = RawDeflateClient(hub.port, "permessage-deflate", topics="")
    message = json.dumps({"type": "subscribe", "topics": ["odds", "scores"]}).encode()
    compressed = deflate(message)
    # Also in two fragments (the second a continuation without RSV1), with
    # a ping between them.
    client.sock.sendall(masked_frame(compressed))
    half = len(compressed) // 2
    client.sock.sendall(
        masked_frame(compressed[:half], fin=False)
        + masked_frame(b"hi", opcode=9, rsv1=False)
        + masked_frame(compressed[half:], opcode=0, rsv1=False)
    )
    answers = []
    while len(answers) < 2:
        _, answer = client.frame()
        if answer["type"] == "subscribed":
            answers.append(answer)
    assert answers[0]["topics"] == ["odds", "scores"]
    assert answers[1]["topics"] == ["odds", "scores"]
    client.close()


def test_the_websockets_client_subscribes_with_compressed_messages(make_hub):
    hub = make_hub(compression=True)
    with ws_connect(f"ws://127.0.0.1:{hub.port}{PATH}?topics=") as ws:
        assert "permessage-deflate" in ws.response.headers["Sec-WebSocket-Extensions"]
        ws.send(json.dumps({"type": "subscribe", "topics": ["odds"]}))
        while True:
            answer = json.loads(ws.recv(timeout=5))
            if answer["type"] == "subscribed":
                break
        assert answer["topics"] == ["odds"]
        hub.broadcast("odds", DATA)
        while True:
            message = json.loads(ws.recv(timeout=5))
            if message["type"] == "message":
                break
        assert message["data"] == DATA


def test_a_zip_bomb_is_closed_with_1009(make_hub):
    hub = make_hub(compression=True, max_message_bytes=65536)
    client = RawDeflateClient(hub.port, "permessage-deflate")
    bomb = deflate(b" " * 50_000_000)
    assert len(bomb) < 65536
    client.sock.sendall(masked_frame(bomb))
    assert close_frame(client) == 1009
    client.close()


def test_a_compressed_message_over_the_bound_before_inflating_is_closed_with_1009(make_hub):
    hub = make_hub(compression=True, max_message_bytes=1024)
    client = RawDeflateClient(hub.port, "permessage-deflate")
    client.sock.sendall(masked_frame(os.urandom(2048)))
    assert close_frame(client) == 1009
    client.close()


def test_invalid_deflate_data_is_closed_with_1007(make_hub):
    hub = make_hub(compression=True)
    client = RawDeflateClient(hub.port, "permessage-deflate")
    client.sock.sendall(masked_frame(b"\xff\xff\xff\xff\xff"))
    assert close_frame(client) == 1007
    client.close()


def test_a_compressed_message_interrupted_by_another_is_closed_with_1002(make_hub):
    hub = make_hub(compression=True)
    client = RawDeflateClient(hub.port, "permessage-deflate")
    client.sock.sendall(masked_frame(deflate(b"{}"), fin=False) + masked_frame(b"{}", rsv1=False))
    assert close_frame(client) == 1002
    client.close()


def test_rsv1_without_negotiation_is_a_protocol_error(make_hub):
    hub = make_hub(compression=False)
    client = RawDeflateClient(hub.port, "permessage-deflate")
    client.sock.sendall(masked_frame(deflate(b"{}")))
    assert close_frame(client) == 1002
    client.close()
