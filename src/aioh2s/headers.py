"""``Headers``: an ordered, multi-valued header list, the one shape aioh2s hands out.

Theory of operation: HTTP/2 header blocks are lists of ``(name, value)`` pairs in which order
matters (pseudo-headers first) and names may repeat. ``Headers`` keeps that list as-is, with
names lowercased ``str`` (HTTP/2 requires lowercase on the wire) and values ``str``, and adds
the lookups people want. Anything that *sends* headers goes through :func:`to_wire`, which
accepts a mapping or an iterable of pairs of ``str`` or ``bytes``.

Rules kept here:
- A name or value of another type (an ``int``, ``None``) is a ``TypeError`` naming the field,
  wherever user headers are converted (``to_wire``, ``pairs``, ``Headers(...)``);
  ``bytearray`` and ``memoryview`` count as bytes.
- Headers that break HTTP/2's rules raise :class:`LocalProtocolError`, whose message says that
  the application passed them and which rule they broke; :func:`valid_name` and
  :func:`valid_value` are the field rules, shared with the HTTP/1.1 front door.
"""

from __future__ import annotations

import re
import reprlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeVar, Union, overload

from hpack import NeverIndexedHeaderTuple

from .errors import LocalProtocolError
from .errors import ProtocolError as ProtocolError  # the base class, kept importable from here

__all__ = [
    "REQUEST",
    "RESPONSE",
    "TRAILERS",
    "Headers",
    "HeadersLike",
    "pairs",
    "check_request",
    "to_wire",
    "valid_name",
    "valid_value",
]

_T = TypeVar("_T")

#: What header-sending methods accept.
HeadersLike = Union[
    "Headers",
    Mapping[str, str],
    Mapping[bytes, bytes],
    Iterable[tuple[str, str]],
    Iterable[tuple[bytes, bytes]],
]


# Names and values are str or bytes; bytearray and memoryview count as bytes. Anything else (an
# int, None, a bool) is a TypeError naming the field, never ``bytes(50_000_000)``'s 50 MB of NULs.
_BYTES_LIKE = (bytes, bytearray, memoryview)
_short = reprlib.Repr()
_short.maxstring = _short.maxother = 60


def _name_type_error(name: object) -> TypeError:
    return TypeError(
        f"header name {_short.repr(name)} must be str or bytes, not {type(name).__name__}"
    )


def _value_type_error(name: object, value: object) -> TypeError:
    if isinstance(name, _BYTES_LIKE):
        name = bytes(name).decode("ascii", "backslashreplace")
    return TypeError(
        f"value of header {name!r} must be str or bytes, not {type(value).__name__}"
        f" ({_short.repr(value)}); convert it with str()"
    )


def _pair(item: Any) -> tuple[Any, Any]:
    try:
        n, v = item
    except (TypeError, ValueError):
        raise TypeError(
            f"header fields must be (name, value) pairs, not {_short.repr(item)}"
        ) from None
    return n, v


def _text(v: object) -> str | None:
    """``v`` as ``str`` (bytes decoded as UTF-8, surrogateescape), or None if of a wrong type."""
    if isinstance(v, str):
        return v
    if isinstance(v, _BYTES_LIKE):
        return bytes(v).decode("utf-8", "surrogateescape")
    return None


def _text_field(item: Any) -> tuple[str, str]:
    n, v = _pair(item)
    tn = _text(n)
    if tn is None:
        raise _name_type_error(n)
    tv = _text(v)
    if tv is None:
        raise _value_type_error(n, v)
    return tn.lower(), tv


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
            self._items = [_text_field(item) for item in pairs]

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
                return self._items == [_text_field(item) for item in other]
            except (TypeError, ValueError):
                return False
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self._items))

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


def _name_bytes(n: object) -> bytes:
    if isinstance(n, str):
        return n.encode("ascii", "surrogateescape").lower()
    if isinstance(n, _BYTES_LIKE):
        return bytes(n).lower()
    raise _name_type_error(n)


def _value_bytes(n: object, v: object) -> bytes:
    if isinstance(v, str):
        return v.encode("utf-8", "surrogateescape")
    if isinstance(v, _BYTES_LIKE):
        return bytes(v)
    raise _value_type_error(n, v)


def pairs(headers: HeadersLike) -> list[tuple[bytes, bytes]]:
    """User-supplied headers as lowercase-name bytes pairs, unchecked (see :func:`to_wire`).

    Only the types are checked: a name or value that is not ``str`` or bytes-like is a
    ``TypeError`` naming the field.
    """
    items: Iterable[Any] = headers.items() if isinstance(headers, Mapping) else headers
    out = []
    for item in items:
        n, v = _pair(item)
        out.append((_name_bytes(n), _value_bytes(n, v)))
    return out


_CONNECTION_SPECIFIC = frozenset(
    [b"connection", b"proxy-connection", b"keep-alive", b"transfer-encoding", b"upgrade"]
)
_REQUEST_PSEUDO = frozenset([b":method", b":scheme", b":authority", b":path", b":protocol"])
_RESPONSE_PSEUDO = frozenset([b":status"])
# Field names: lowercase tokens (RFC 9110 §5.6.2); values: no NUL, CR or LF (RFC 9113 §8.2.1).
_BAD_NAME = re.compile(rb"[^a-z0-9!#$%&'*+\-.^_`|~]")
_BAD_VALUE = re.compile(rb"[\x00\r\n]")
_METHOD = re.compile(rb"[A-Za-z0-9!#$%&'*+\-.^_`|~]+")  # a token (RFC 9110 §9.1)
_PATH = re.compile(rb"[\x21-\x7e\x80-\xff]+")  # no space or control (RFC 3986 request-target)
# RFC 3986 §3.2's authority characters: no space, "/", "?", "#" or anything outside ASCII.
_AUTHORITY = re.compile(rb"[A-Za-z0-9\-._~%!$&'()*+,;=:\[\]@]+")
# A tunnel's target, host:port (RFC 9110 §9.3.6: "a client MUST send the port number").
_TUNNEL_TARGET = re.compile(rb"(\[[0-9A-Fa-f:.]+\]|[^\s:/?#@\[\]]+):[0-9]{1,5}")


def valid_name(name: bytes) -> bool:
    """True if ``name`` is a non-empty lowercase token, as HTTP/2 requires of a field name."""
    return bool(name) and _BAD_NAME.search(name) is None


def valid_value(value: bytes) -> bool:
    """True if ``value`` has no NUL, CR or LF, which HTTP/2 forbids in a field value."""
    return _BAD_VALUE.search(value) is None


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


def _wire_name(n: object) -> bytes:
    # Only exact str/bytes names are looked up and remembered: a bytearray is unhashable, and
    # anything else is a TypeError below.
    key = n if n.__class__ is str or n.__class__ is bytes else None
    if key is not None:
        bn = _NAMES.get(key)
        if bn is not None:
            return bn
    bn = _name_bytes(n)
    if bn[:1] != b":":
        if not valid_name(bn):
            raise LocalProtocolError(
                f"invalid header name {_short.repr(n)} passed by the application: a field name"
                " must be a non-empty token (letters, digits and !#$%&'*+-.^_`|~; sent"
                " lowercased) (RFC 9113 §8.2.1)"
            )
        if bn in _CONNECTION_SPECIFIC:
            raise LocalProtocolError(
                f"connection-specific header {bn!r} passed by the application: HTTP/2 does not"
                " allow it (RFC 9113 §8.2.2)"
            )
    if key is not None:
        remember(_NAMES, key, bn, _NAMES_MAX)
    return bn


def _wire_field(n: object, v: object) -> tuple[bytes, bytes]:
    """One field as h2 sends it, with the checks that need no other field."""
    bn = _wire_name(n)
    bv = v.encode("utf-8", "surrogateescape") if type(v) is str else _value_bytes(bn, v)
    if not valid_value(bv):
        raise LocalProtocolError(
            f"invalid value for header {bn!r} passed by the application: it has a NUL, CR or LF"
            " (RFC 9113 §8.2.1)"
        )
    if bv[:1] in b" \t" or bv[-1:] in b" \t":
        bv = bv.strip(b" \t")
    if bn[:1] == b":":
        if bn == b":path" and not bv:
            raise LocalProtocolError(
                "empty :path passed by the application: :path must not be empty (RFC 9113 §8.3.1)"
            )
    elif bn == b"te" and bv.lower() != b"trailers":
        raise LocalProtocolError(
            f"header 'te' passed by the application has the value {_short.repr(bv)}: the only TE"
            " value HTTP/2 allows is 'trailers' (RFC 9113 §8.2.2)"
        )
    elif bn in _SECRET or (bn == b"cookie" and len(bv) < 20):
        return NeverIndexedHeaderTuple(bn, bv)
    return (bn, bv)


# Fields already checked, by the (name, value) the application passed: a response's
# ":status"/"200" or a client's fixed headers cost one lookup. Credentials and long values
# are not kept.
_FIELDS: dict[Any, tuple[bytes, bytes]] = {}
_FIELDS_MAX = 4096
_FIELD_VALUE_MAX = 128


def check_request(fields: list[tuple[bytes, bytes]]) -> None:
    """Check a complete request header list the application gave; :class:`LocalProtocolError`.

    Beyond :func:`to_wire`'s rules: ``:method`` is a token, ``:path`` is non-empty without
    spaces or control characters, and a ``Host`` field equals ``:authority`` (RFC 9113 §8.3.1:
    "clients MUST NOT generate a request with a Host header field that differs from the
    :authority pseudo-header field"). A plain CONNECT has only ``:method`` and ``:authority``,
    which is ``host:port`` (RFC 9113 §8.5, RFC 9110 §9.3.6); ``:protocol`` (a token) goes only
    on an extended CONNECT, which has ``:scheme`` and ``:path`` too (RFC 8441 §4).
    """
    method = path = authority = protocol = scheme = None
    hosts = []
    for n, v in fields:
        if n == b":method":
            method = v
        elif n == b":path":
            path = v
        elif n == b":authority":
            authority = v
        elif n == b":scheme":
            scheme = v
        elif n == b":protocol":
            protocol = v
        elif n == b"host":
            hosts.append(v)
    if method is not None and not _METHOD.fullmatch(method):
        raise LocalProtocolError(
            f":method {method[:40]!r} passed by the application is not a token (RFC 9110 §9.1)"
        )
    if protocol is not None or method == b"CONNECT":
        _check_connect(method, protocol, scheme, path, authority)
    if authority is not None and not _AUTHORITY.fullmatch(authority):
        raise LocalProtocolError(
            f":authority {authority[:60]!r} passed by the application is not a host[:port]"
            " (RFC 3986 §3.2)"
        )
    if path is not None and not _PATH.fullmatch(path):
        raise LocalProtocolError(
            f":path {path[:60]!r} passed by the application is empty or has a space or control"
            " character (RFC 9113 §8.3.1)"
        )
    for host in hosts:
        if host.lower() != (authority or b"").lower():  # host names are case-insensitive
            raise LocalProtocolError(
                f"Host {host[:60]!r} passed by the application differs from :authority "
                f"{(authority or b'')[:60]!r} (RFC 9113 §8.3.1)"
            )


def _check_connect(
    method: bytes | None,
    protocol: bytes | None,
    scheme: bytes | None,
    path: bytes | None,
    authority: bytes | None,
) -> None:
    """The rules of a CONNECT request, plain or extended (see :func:`check_request`)."""
    if protocol is not None:
        if method != b"CONNECT":
            raise LocalProtocolError(
                f":protocol passed by the application on a {(method or b'')[:40]!r} request:"
                " only an extended CONNECT carries it (RFC 8441 §4)"
            )
        if not _METHOD.fullmatch(protocol):
            raise LocalProtocolError(
                f":protocol {protocol[:40]!r} passed by the application is not a token"
                " (RFC 8441 §4: an HTTP Upgrade Token such as 'websocket')"
            )
        if scheme is None or path is None:
            raise LocalProtocolError(
                "an extended CONNECT passed by the application needs :scheme and :path"
                " (RFC 8441 §4)"
            )
        return
    if scheme is not None or path is not None:
        raise LocalProtocolError(
            "a CONNECT request passed by the application has :scheme or :path: a plain CONNECT"
            " has neither (RFC 9113 §8.5); an extended CONNECT also has :protocol (RFC 8441)"
        )
    if (
        authority is None
        or not _TUNNEL_TARGET.fullmatch(authority)
        or int(authority.rpartition(b":")[2]) > 65535
    ):
        raise LocalProtocolError(
            f"the :authority {(authority or b'')[:60]!r} of a CONNECT request passed by the"
            " application is not host:port: it names the tunnel's target, and the port is"
            " required (RFC 9113 §8.5, RFC 9110 §9.3.6)"
        )


def to_wire(headers: HeadersLike, kind: int = RESPONSE) -> list[tuple[bytes, bytes]]:
    """User-supplied headers as the lowercase bytes pairs h2 sends, checked for RFC 9113 §8.2.

    ``kind`` is ``REQUEST``, ``RESPONSE`` (final or 1xx) or ``TRAILERS``. This replaces h2's own
    outbound validation and normalisation (turned off for aioh2s connections, where it cost a
    tenth of a small request): names are lowercased and surrounding whitespace of values
    stripped, connection-specific fields, misplaced or unknown pseudo-headers and illegal
    characters raise :class:`LocalProtocolError` (the application's headers broke a rule; nothing
    was sent), and credentials are marked never-indexed. A name or value that is not ``str`` or
    bytes-like (``bytes``, ``bytearray``, ``memoryview``) raises ``TypeError`` naming the field.
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
            try:
                n, v = item
            except (TypeError, ValueError):
                n, v = _pair(item)  # raises the TypeError that says what is wrong
            wire = _wire_field(n, v)
            if hashable and len(wire[1]) <= _FIELD_VALUE_MAX and wire.__class__ is tuple:
                remember(cache, item, wire, _FIELDS_MAX)
        bn = wire[0]
        if bn[0] == 0x3A:  # ":"
            if kind == TRAILERS:
                raise LocalProtocolError(
                    f"pseudo-header {bn!r} passed by the application in trailers: it is not"
                    " allowed in trailers (RFC 9113 §8.1)"
                )
            if regular:
                raise LocalProtocolError(
                    f"pseudo-header {bn!r} passed by the application after a regular header:"
                    " pseudo-headers must come first (RFC 9113 §8.3)"
                )
            if bn not in allowed or bn in pseudo:
                what = "request" if allowed is _REQUEST_PSEUDO else "response"
                raise LocalProtocolError(
                    f"pseudo-header {bn!r} passed by the application is unknown, misplaced or"
                    f" repeated in {what} headers (RFC 9113 §8.3)"
                )
            pseudo.append(bn)
        else:
            regular = True
        out.append(wire)
    if kind == RESPONSE and b":status" not in pseudo:
        raise LocalProtocolError(
            "response headers passed by the application have no :status (RFC 9113 §8.3.2)"
        )
    if kind == REQUEST:
        if b":method" not in pseudo:
            raise LocalProtocolError(
                "request headers passed by the application have no :method (RFC 9113 §8.3.1)"
            )
        connect = any(n == b":method" and v == b"CONNECT" for n, v in out)
        if not connect and (b":scheme" not in pseudo or b":path" not in pseudo):
            raise LocalProtocolError(
                "request headers passed by the application need :scheme and :path"
                " (RFC 9113 §8.3.1; only CONNECT may leave them out)"
            )
    return out
