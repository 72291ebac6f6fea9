"""``Headers``: an ordered, multi-valued header list, the one shape aioh2s hands out.

Theory of operation: HTTP/2 header blocks are lists of ``(name, value)`` pairs in which order
matters (pseudo-headers first) and names may repeat. ``Headers`` keeps that list as-is, with
names lowercased ``str`` (HTTP/2 requires lowercase on the wire) and values ``str``, and adds
the lookups people want. Anything that *sends* headers goes through :func:`to_wire`, which
accepts a mapping or an iterable of pairs of ``str`` or ``bytes``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeVar, Union, overload

from hpack import NeverIndexedHeaderTuple

from .errors import ProtocolError

__all__ = ["REQUEST", "RESPONSE", "TRAILERS", "Headers", "HeadersLike", "pairs", "to_wire"]

_T = TypeVar("_T")

#: What header-sending methods accept.
HeadersLike = Union[
    "Headers",
    Mapping[str, str],
    Mapping[bytes, bytes],
    Iterable[tuple[str, str]],
    Iterable[tuple[bytes, bytes]],
]


def _text(v: str | bytes) -> str:
    return v if isinstance(v, str) else v.decode("utf-8", "surrogateescape")


class Headers:
    """Ordered, multi-valued HTTP headers with lowercase ``str`` names and ``str`` values.

    ``h[name]`` returns the first value (``KeyError`` if absent), ``h.getall(name)`` all of
    them; iteration yields ``(name, value)`` pairs; a ``Headers`` compares equal to a list of
    pairs with the same content and order.
    """

    __slots__ = ("_items",)

    def __init__(self, items: HeadersLike | None = None) -> None:
        if items is None:
            self._items: list[tuple[str, str]] = []
        elif isinstance(items, Headers):
            self._items = list(items._items)
        else:
            pairs: Iterable[Any] = items.items() if isinstance(items, Mapping) else items
            self._items = [(_text(n).lower(), _text(v)) for n, v in pairs]

    @classmethod
    def _from_h2(cls, items: list[tuple[str, str]]) -> Headers:
        """Wrap a list h2 decoded and validated already (lowercase ``str``), without copying."""
        h = cls.__new__(cls)
        h._items = items
        return h

    def __getitem__(self, name: str) -> str:
        name = name.lower()
        for n, v in self._items:
            if n == name:
                return v
        raise KeyError(name)

    @overload
    def get(self, name: str) -> str | None: ...

    @overload
    def get(self, name: str, default: _T) -> str | _T: ...

    def get(self, name: str, default: object = None) -> object:
        """The first value of ``name``, or ``default``."""
        try:
            return self[name]
        except KeyError:
            return default

    def getall(self, name: str) -> list[str]:
        """Every value of ``name`` in order (an empty list when absent)."""
        name = name.lower()
        return [v for n, v in self._items if n == name]

    def keys(self) -> list[str]:
        """Names in order, repeated names repeated."""
        return [n for n, _ in self._items]

    def items(self) -> list[tuple[str, str]]:
        """A copy of the ``(name, value)`` pairs."""
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(n == name.lower() for n, _ in self._items)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Headers):
            return self._items == other._items
        if isinstance(other, (list, tuple)):
            try:
                return self._items == [(_text(n).lower(), _text(v)) for n, v in other]
            except (TypeError, ValueError):
                return False
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self._items))

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


def pairs(headers: HeadersLike) -> list[tuple[bytes, bytes]]:
    """User-supplied headers as lowercase-name bytes pairs, unchecked (see :func:`to_wire`)."""
    items: Iterable[Any] = headers.items() if isinstance(headers, Mapping) else headers
    out = []
    for n, v in items:
        bn = n.encode("ascii", "surrogateescape") if isinstance(n, str) else bytes(n)
        bv = v.encode("utf-8", "surrogateescape") if isinstance(v, str) else bytes(v)
        out.append((bn.lower(), bv))
    return out


_CONNECTION_SPECIFIC = frozenset(
    [b"connection", b"proxy-connection", b"keep-alive", b"transfer-encoding", b"upgrade"]
)
_REQUEST_PSEUDO = frozenset([b":method", b":scheme", b":authority", b":path", b":protocol"])
_RESPONSE_PSEUDO = frozenset([b":status"])
# Field names: lowercase tokens (RFC 9110 §5.6.2); values: no NUL, CR or LF (RFC 9113 §8.2.1).
_BAD_NAME = re.compile(rb"[^a-z0-9!#$%&'*+\-.^_`|~]")
_BAD_VALUE = re.compile(rb"[\x00\r\n]")
# Kept out of the HPACK dynamic table (CRIME-style guessing), as h2's normalisation does.
_SECRET = frozenset([b"authorization", b"proxy-authorization"])

REQUEST, RESPONSE, TRAILERS = 0, 1, 2
#: Request fields that the client completes with default pseudo-headers afterwards.
PARTIAL_REQUEST = 3


# Names seen before, mapped to their checked wire form (a hot path: most responses repeat the
# same few names). Bounded: cleared when full.
_NAMES: dict[str | bytes, bytes] = {}
_NAMES_MAX = 512

_K = TypeVar("_K")
_V = TypeVar("_V")


def remember(cache: dict[_K, _V], key: _K, value: _V, limit: int) -> None:
    """Put ``key`` in a cache that is emptied when it holds ``limit`` entries.

    Emptying instead of evicting keeps the hit path a plain dict lookup; a caller or peer that
    cycles through endless distinct keys only costs misses, never memory.
    """
    if len(cache) >= limit:
        cache.clear()
    cache[key] = value


def _wire_name(n: str | bytes) -> bytes:
    bn = _NAMES.get(n)
    if bn is not None:
        return bn
    bn = (n.encode("ascii", "surrogateescape") if isinstance(n, str) else bytes(n)).lower()
    if bn[:1] != b":":
        if not bn or _BAD_NAME.search(bn):
            raise ProtocolError(f"invalid header name {bn!r}")
        if bn in _CONNECTION_SPECIFIC:
            raise ProtocolError(f"connection-specific header {bn!r} is not allowed in HTTP/2")
    remember(_NAMES, n if isinstance(n, str) else bn, bn, _NAMES_MAX)
    return bn


def _wire_field(n: str | bytes, v: str | bytes) -> tuple[bytes, bytes]:
    """One field as h2 sends it, with the checks that need no other field."""
    bn = _wire_name(n)
    bv = v.encode("utf-8", "surrogateescape") if isinstance(v, str) else bytes(v)
    if _BAD_VALUE.search(bv):
        raise ProtocolError(f"header {bn!r} has a NUL, CR or LF in its value")
    if bv[:1] in b" \t" or bv[-1:] in b" \t":
        bv = bv.strip(b" \t")
    if bn[:1] == b":":
        if bn == b":path" and not bv:
            raise ProtocolError(":path must not be empty")
    elif bn == b"te" and bv.lower() != b"trailers":
        raise ProtocolError("the only TE value allowed in HTTP/2 is 'trailers'")
    elif bn in _SECRET or (bn == b"cookie" and len(bv) < 20):
        return NeverIndexedHeaderTuple(bn, bv)
    return (bn, bv)


# Fields already checked, by the (name, value) the application passed: a response's
# ":status"/"200" or a client's fixed headers cost one lookup. Credentials and long values
# are not kept.
_FIELDS: dict[Any, tuple[bytes, bytes]] = {}
_FIELDS_MAX = 4096
_FIELD_VALUE_MAX = 128


def to_wire(headers: HeadersLike, kind: int = RESPONSE) -> list[tuple[bytes, bytes]]:
    """User-supplied headers as the lowercase bytes pairs h2 sends, checked for RFC 9113 §8.2.

    ``kind`` is ``REQUEST``, ``RESPONSE`` (final or 1xx) or ``TRAILERS``. This replaces h2's own
    outbound validation and normalisation (turned off for aioh2s connections, where it cost a
    tenth of a small request): names are lowercased and surrounding whitespace of values
    stripped, connection-specific fields, misplaced or unknown pseudo-headers and illegal
    characters raise :class:`ProtocolError`, and credentials are marked never-indexed.
    """
    if isinstance(headers, Headers):
        items: Iterable[Any] = headers._items
    else:
        items = headers.items() if isinstance(headers, Mapping) else headers
    out: list[tuple[bytes, bytes]] = []
    allowed = _REQUEST_PSEUDO if kind in (REQUEST, PARTIAL_REQUEST) else _RESPONSE_PSEUDO
    regular = False
    pseudo: list[bytes] = []
    cache = _FIELDS
    for item in items:
        try:
            wire = cache.get(item)
            hashable = True
        except (TypeError, ValueError):  # a list pair, a bytearray value
            wire = None
            hashable = False
        if wire is None:
            n, v = item
            wire = _wire_field(n, v)
            if hashable and len(wire[1]) <= _FIELD_VALUE_MAX and wire.__class__ is tuple:
                remember(cache, item, wire, _FIELDS_MAX)
        bn = wire[0]
        if bn[0] == 0x3A:  # ":"
            if kind == TRAILERS:
                raise ProtocolError(f"pseudo-header {bn!r} is not allowed in trailers")
            if regular:
                raise ProtocolError(f"pseudo-header {bn!r} after a regular header")
            if bn not in allowed or bn in pseudo:
                raise ProtocolError(f"pseudo-header {bn!r} is unknown, misplaced or repeated")
            pseudo.append(bn)
        else:
            regular = True
        out.append(wire)
    if kind == RESPONSE and b":status" not in pseudo:
        raise ProtocolError("response headers need a :status")
    if kind == REQUEST:
        if b":method" not in pseudo:
            raise ProtocolError("request headers need a :method")
        connect = any(n == b":method" and v == b"CONNECT" for n, v in out)
        if not connect and (b":scheme" not in pseudo or b":path" not in pseudo):
            raise ProtocolError("request headers need :scheme and :path")
    return out
