"""Fixtures of the wshub test suite; the helpers live in helpers.py."""

from __future__ import annotations

import os
import sys

import pytest

import wshub
from helpers import RawWS, Client, connect_client, port_of

# The installed-wheel job (scripts/test_installed_wheel.sh) tests the
# package in site-packages, never the checkout's python/wshub.
if os.environ.get("WSHUB_EXPECT_INSTALLED") and "site-packages" not in wshub.__file__:
    sys.exit(f"WSHUB_EXPECT_INSTALLED is set but wshub comes from {wshub.__file__}")

# --------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------


@pytest.fixture
def make_hub():
    """Factory: ``make_hub(**options)`` -> started wshub.Server on a free
    port (``port=`` may be given). Every server is stopped at teardown."""
    servers = []

    def factory(port: int = 0, **options):
        server = wshub.start(port, **options)
        servers.append(server)
        return server

    yield factory
    for server in servers:
        try:
            server.stop()
        except Exception:
            pass


@pytest.fixture
def hub(make_hub):
    """A default hub on a free port, stopped at teardown."""
    return make_hub()


@pytest.fixture
def connect():
    """Factory: ``connect(hub_or_port, topics=None, path=..., query=...)``
    -> Client with its ack read. Closed at teardown."""
    clients = []

    def factory(target, topics=None, **kwargs) -> Client:
        client = connect_client(target, topics, **kwargs)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.close()


@pytest.fixture
def raw_ws():
    """Factory: ``raw_ws(hub_or_port, query="topics=a", rcvbuf=None)`` ->
    RawWS after a completed handshake. Closed at teardown."""
    sockets = []

    def factory(target, **kwargs) -> RawWS:
        client = RawWS(port_of(target), **kwargs)
        sockets.append(client)
        return client

    yield factory
    for client in sockets:
        client.close()
