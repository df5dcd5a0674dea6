"""What ``authorize(request)`` sees of a WebSocket handshake.

The hub parses the request once (in Rust, the same way for the C API) and
builds a :class:`Request` from the pieces; the classes behave like their
Starlette namesakes, so checks written for a Starlette or FastAPI app read
the same here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import NamedTuple

__all__ = ["Address", "Headers", "QueryParams", "Request"]


class Address(NamedTuple):
    """The client's TCP address (a proxy's, when there is one in front)."""

    host: str
    port: int


class Headers(Mapping[str, str]):
    """The request headers, looked up case-insensitively
    (``headers["Authorization"]`` is ``headers["authorization"]``).

    A repeated header: ``headers[name]`` and ``get`` give its first value,
    ``getlist(name)`` all of them in order. Iteration yields the names in
    lower case; ``multi_items()`` every (name, value) pair.
    """

    __slots__ = ("_items", "_first")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items = [(name.lower(), value) for name, value in items]
        self._first: dict[str, str] = {}
        for name, value in self._items:
            self._first.setdefault(name, value)

    def __getitem__(self, name: str) -> str:
        if not isinstance(name, str):
            raise KeyError(name)
        return self._first[name.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._first)

    def __len__(self) -> int:
        return len(self._first)

    def getlist(self, name: str) -> list[str]:
        """Every value of header ``name`` (any case), in request order."""
        name = name.lower()
        return [value for key, value in self._items if key == name]

    def multi_items(self) -> list[tuple[str, str]]:
        """Every (lower-case name, value) pair, in request order."""
        return list(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


class QueryParams(Mapping[str, str]):
    """The query's parameters, percent-decoded.

    A repeated name: ``params[name]`` and ``get`` give its last value (as
    Starlette does), ``getlist(name)`` all of them in order.
    """

    __slots__ = ("_items", "_last")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items = list(items)
        self._last = dict(self._items)

    def __getitem__(self, name: str) -> str:
        return self._last[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._last)

    def __len__(self) -> int:
        return len(self._last)

    def getlist(self, name: str) -> list[str]:
        """Every value of parameter ``name``, in order."""
        return [value for key, value in self._items if key == name]

    def multi_items(self) -> list[tuple[str, str]]:
        """Every (name, value) pair, in order."""
        return list(self._items)

    def __repr__(self) -> str:
        return f"QueryParams({self._items!r})"


@dataclass(frozen=True)
class Request:
    """A WebSocket handshake, as ``authorize(request)`` gets it.

    path: the request path, e.g. "/api/ws".
    query_string: the raw query without "?" ("" when absent).
    query_params: the parsed query (:class:`QueryParams`).
    headers: :class:`Headers`, case-insensitive.
    cookies: name -> value from the Cookie header(s) (a repeated name keeps
        its last value; surrounding double quotes are removed).
    client: :class:`Address` (host, port) of the TCP peer.
    topics: the topic names the client asks for in its query
        ("topics=a,b"), as the hub reads them, before any check.
    """

    path: str
    query_string: str
    query_params: QueryParams
    headers: Headers
    cookies: dict[str, str]
    client: Address
    topics: list[str]


def _from_native(
    path: str,
    query_string: str,
    headers: list[tuple[str, str]],
    query_params: list[tuple[str, str]],
    cookies: list[tuple[str, str]],
    client: tuple[str, int],
    topics: list[str],
) -> Request:
    """Builds the Request from the pieces the hub parsed (src/bindings/python.rs)."""
    return Request(
        path=path,
        query_string=query_string,
        query_params=QueryParams(query_params),
        headers=Headers(headers),
        cookies=dict(cookies),
        client=Address(*client),
        topics=topics,
    )
