"""h2's inbound header checks in one pass, with h2 as the judge of everything unusual.

Theory of operation
-------------------
h2 4.x checks every received header block with a chain of about ten nested generators
(``normalize_inbound_headers`` then ``validate_headers`` in ``h2.utilities``) that look at
each name byte by byte in Python. For a small request that chain is ~15% of a server's
CPU time, more than anything aioh2s itself does per request. Turning it off is not an
option: it is the RFC 9113 §8.2 boundary against malformed and smuggling-prone input.

:class:`FastInboundStream` keeps that boundary and makes the common case cheap:

* ``_process_received_headers`` first runs :func:`accept`, one loop over the block that
  applies the same rules (field names and values, ``te``, connection-specific fields,
  pseudo-header order, repetition and placement, ``:authority``/``Host``, ``:path``,
  cookie crumbs joined into one never-indexed field) and returns exactly the list h2
  would return, or ``None``.
* ``None`` means "not obviously fine": the block goes to h2's own pipeline, which accepts
  it or raises h2's own exception with h2's own message. So the one rule this module keeps
  is that :func:`accept` may be *stricter* than h2, never looser; CONNECT requests,
  push promises and any odd input type always take h2's path.
* Header fields already found valid are remembered as (name, value) pairs in a bounded
  set, so repeated fields (``:method GET``, ``:scheme https``, ``user-agent ...``) cost one
  set lookup. Credentials and long values are never remembered.
* ``_build_hdr_validation_flags`` returns one shared immutable flags tuple per
  (event class, side) instead of building it with six ``isinstance`` calls per block.

:func:`supported` checks the h2 major version and compares :func:`accept` with h2's
pipeline on sample blocks, valid and malformed, once per process; if anything differs,
:func:`install` does nothing and h2 runs as shipped. ``tests/test_h2headers.py`` compares
the two on generated blocks.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import h2
import h2.exceptions
import h2.stream
import h2.utilities
from hpack import HeaderTuple, NeverIndexedHeaderTuple

from .headers import Headers, remember

__all__ = ["FastInboundStream", "MalformedHeaders", "accept", "decode", "install", "supported"]

# RFC 9113 §8.2.1 as h2 4.x applies it: name bytes 0x21-0x40 and 0x5b-0x7e (no controls,
# no space, no uppercase, nothing above 0x7e), and a colon only as a pseudo-header sigil.
_REGULAR_NAME = re.compile(rb"[\x21-\x39\x3b-\x40\x5b-\x7e]+")
# A value must not contain NUL, CR or LF, nor start or end with SP or HTAB.
_WS = (0x20, 0x09)


def _bad_value(value: bytes) -> bool:
    """NUL, CR or LF anywhere, or whitespace at either end (``value`` is not empty).

    ``in`` is a memchr per character: a regex with these alternatives cost ~125 us on a 4 KB
    value, which made header lists that reference a large HPACK table entry a CPU attack.
    """
    return (b"\x00" in value or b"\n" in value or b"\r" in value
            or value[0] in _WS or value[-1] in _WS)

_CONNECTION_SPECIFIC = h2.utilities.CONNECTION_HEADERS
_REQUEST_PSEUDO = frozenset([b":method", b":scheme", b":authority", b":path"])
_PSEUDO = _REQUEST_PSEUDO | {b":status"}
_NOT_REMEMBERED = frozenset([b"cookie", b"authorization", b"proxy-authorization"])

_VALID: set[tuple[bytes, bytes]] = set()
_VALID_MAX = 4096
_VALID_VALUE_MAX = 128


def _field_ok(name: bytes, value: bytes) -> bool:
    """Whether one field passes the checks that need no other field.

    These are h2's illegal-character, empty-name, ``te``, connection-specific and
    unknown-pseudo-header rules.
    """
    if name[:1] == b":":
        if name not in _PSEUDO:
            return False
    elif not _REGULAR_NAME.fullmatch(name) or name in _CONNECTION_SPECIFIC:
        return False
    if value and _bad_value(value):
        return False
    return name != b"te" or value.lower() == b"trailers"


def accept(headers: list[Any], flags: Any) -> list[Any] | None:
    """The list h2's inbound pipeline returns for ``headers``, or None to let h2 decide.

    ``headers`` is the decoded block (``HeaderTuple`` of bytes), ``flags`` h2's
    ``HeaderValidationFlags``. None is returned for anything malformed, and for anything
    this fast path does not handle (push promises, CONNECT, non-bytes input).
    """
    if flags.is_push_promise:
        return None
    trailer = flags.is_trailer
    request = not trailer and not flags.is_response_header
    valid = _VALID
    out: list[Any] = []
    cookies: list[bytes] | None = None
    pseudo: set[bytes] = set()
    regular = False
    authority = host = path = None
    method = None
    try:
        for field in headers:
            name = field[0]
            if field not in valid:
                value = field[1]
                if not _field_ok(name, value):
                    return None
                if len(value) <= _VALID_VALUE_MAX and name not in _NOT_REMEMBERED:
                    if len(valid) >= _VALID_MAX:
                        valid.clear()
                    valid.add(field)
            if name[0] == 0x3A:  # ":"
                if regular or trailer or name in pseudo:
                    return None
                pseudo.add(name)
                if name == b":method":
                    method = field[1]
                elif name == b":path":
                    path = field[1]
                elif name == b":authority":
                    authority = field[1]
            else:
                if name == b"cookie":
                    # h2 joins cookie crumbs and moves them to the end *before* validating,
                    # so a crumb does not count as a regular field for pseudo-header order.
                    if cookies is None:
                        cookies = []
                    cookies.append(field[1])
                    continue
                regular = True
                if name == b"host":
                    if host is not None:
                        return None
                    host = field[1]
            out.append(field)
    except (TypeError, IndexError, AttributeError):
        return None  # not bytes pairs: h2's pipeline decides
    if cookies is not None:
        joined = b"; ".join(cookies)
        if joined and _bad_value(joined):
            return None
        out.append(NeverIndexedHeaderTuple(b"cookie", joined))
    if request:
        if method is None or method == b"CONNECT" or not path:
            return None
        if b":scheme" not in pseudo or b":status" in pseudo:
            return None
        if authority is None and host is None:
            return None
        if authority is not None and host is not None and authority != host:
            return None
    elif not trailer and pseudo != {b":status"}:
        return None
    return out


class MalformedHeaders(h2.exceptions.ProtocolError):
    """h2 refused a decoded header block (RFC 9113 §8.1.1: a stream error, not a connection one).

    Raised only after the block was decoded, so the HPACK state is in sync with the peer.
    """


class CheckedStream(h2.stream.H2Stream):
    """An ``H2Stream`` whose Content-Length rules are RFC 9113's and RFC 9110's, not h2's.

    h2 raises a connection error for a malformed or conflicting Content-Length; RFC 9113
    §8.1.1 makes that a malformed message, a stream error (``MalformedHeaders`` is answered
    with RST_STREAM(PROTOCOL_ERROR) by ``_h2ext``). And CONNECT's DATA is a tunnel, not
    content (RFC 9110 §9.3.6): a CONNECT request's Content-Length is checked for syntax but
    does not count its DATA, and a 2xx response to CONNECT is not looked at (a client MUST
    ignore the field there).
    """

    def _initialize_content_length(self, headers: Any) -> None:
        kind = _connect_message(self, headers)
        if kind == "response":
            self._expected_content_length = None
            return
        try:
            super()._initialize_content_length(headers)
        except h2.exceptions.ProtocolError as e:
            raise MalformedHeaders(str(e)) from e
        if kind == "request":
            self._expected_content_length = None


def _connect_message(stream: h2.stream.H2Stream, headers: Any) -> str | None:
    """"request" for a CONNECT request, "response" for a 2xx response to one, else None."""
    for n, v in headers:
        if n[:1] != b":":  # pseudo-headers come first (h2 checks it)
            return None
        if n == b":method":
            return "request" if v == b"CONNECT" else None
        if n == b":status":
            ok = stream.request_method == b"CONNECT" and v[:1] == b"2"
            return "response" if ok else None
    return None


class FastInboundStream(CheckedStream):
    """An ``H2Stream`` whose inbound header checks take the one-pass path when they can."""

    _flags_cache: dict[tuple[type, bool], Any] = {}

    def _process_received_headers(
        self, headers: Any, header_validation_flags: Any, header_encoding: Any
    ) -> Any:
        if header_encoding is None and headers.__class__ is list:
            out = accept(headers, header_validation_flags)
            if out is not None:
                return out
        try:
            return super()._process_received_headers(
                headers, header_validation_flags, header_encoding
            )
        except h2.exceptions.ProtocolError as e:
            raise MalformedHeaders(str(e)) from e

    def _build_hdr_validation_flags(self, events: Any) -> Any:
        # The flags depend only on the first event's class and the side; h2 builds a new
        # tuple with six isinstance calls for every block sent or received.
        key = (events[0].__class__, bool(self.state_machine.client))
        flags = self._flags_cache.get(key)
        if flags is None:
            flags = super()._build_hdr_validation_flags(events)
            self._flags_cache[key] = flags
        return flags


def _samples() -> list[tuple[list[Any], Any]]:
    """Header blocks, valid and malformed, with the flags to check them under."""
    hv = h2.utilities.HeaderValidationFlags
    req = hv(is_client=False, is_trailer=False, is_response_header=False, is_push_promise=False)
    resp = hv(is_client=True, is_trailer=False, is_response_header=True, is_push_promise=False)
    trl = hv(is_client=False, is_trailer=True, is_response_header=False, is_push_promise=False)
    base = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"a.example"),
            (b":path", b"/x")]
    blocks: list[tuple[list[tuple[bytes, bytes]], Any]] = [
        (base, req),
        (base + [(b"user-agent", b"t"), (b"cookie", b"a=1"), (b"cookie", b"b=2")], req),
        ([(b"cookie", b"a=1"), *base], req),
        (base + [(b"cookie", b"a=1"), (b"cookie", b"")], req),
        (base + [(b"host", b"a.example")], req),
        (base + [(b"host", b"b.example")], req),
        (base[:2] + base[3:] + [(b"host", b"a.example")], req),
        (base[:2] + base[3:], req),
        (base + [(b"host", b"a.example"), (b"host", b"a.example")], req),
        (base + [(b"te", b"trailers"), (b"te", b"gzip")], req),
        (base + [(b"TE", b"trailers")], req),
        (base + [(b"x", b" v")], req),
        (base + [(b"x", b"v\r\n")], req),
        (base + [(b"", b"v")], req),
        (base + [(b"a:b", b"v")], req),
        (base + [(b"connection", b"close")], req),
        (base + [(b":path", b"/y")], req),
        (base[:1] + [(b"x", b"y")] + base[1:], req),
        (base + [(b":status", b"200")], req),
        (base[:3] + [(b":path", b"")], req),
        ([(b":status", b"200"), (b"content-length", b"5")], resp),
        ([(b":status", b"103"), (b"link", b"</a>")], resp),
        ([(b"content-length", b"5")], resp),
        ([(b":status", b"200"), (b":path", b"/")], resp),
        ([(b"grpc-status", b"0")], trl),
        ([(b":status", b"200")], trl),
        ([(b"x-\xff", b"v")], trl),
        ([(b"x", b"\xff\x01")], trl),
    ]
    return [([HeaderTuple(n, v) for n, v in block], flags) for block, flags in blocks]


def same_fields(a: list[Any], b: list[Any]) -> bool:
    """Equal header lists, field classes included (never-indexed is part of the result)."""
    return [(type(h), tuple(h)) for h in a] == [(type(h), tuple(h)) for h in b]


def _h2_says(headers: list[Any], flags: Any) -> list[Any] | None:
    """What h2 4.x's own inbound pipeline returns for ``headers``, None if it raises."""
    try:
        out = h2.utilities.normalize_inbound_headers(headers, flags)
        return list(h2.utilities.validate_headers(out, flags))
    except h2.exceptions.ProtocolError:
        return None


@functools.lru_cache(maxsize=1)
def supported() -> bool:
    """True if h2 is a version this module was checked against and agrees on the samples."""
    if not getattr(h2, "__version__", "").startswith("4."):
        return False
    stream_cls = h2.stream.H2Stream
    for attr in ("_process_received_headers", "_build_hdr_validation_flags"):
        if not callable(getattr(stream_cls, attr, None)):
            return False
    try:
        for headers, flags in _samples():
            fast = accept(headers, flags)
            stock = _h2_says(headers, flags)
            if fast is not None and (stock is None or not same_fields(fast, stock)):
                return False
    except Exception:  # noqa: BLE001 - any surprise means an h2 we do not know
        return False
    finally:
        _VALID.clear()
    return True


def install(stream: h2.stream.H2Stream) -> None:
    """Give one newly created h2 stream our checks (the fast ones if :func:`supported`)."""
    if stream.__class__ is h2.stream.H2Stream:
        stream.__class__ = FastInboundStream if supported() else CheckedStream


def decode(raw: Any) -> Headers:
    """A header list h2 validated (lowercase bytes pairs) as :class:`Headers` of ``str``."""
    # h2 (header_encoding=None) hands over bytes it validated and lowercased already; we only
    # turn them into text. surrogateescape keeps odd bytes round-trippable instead of raising
    # inside the reader task.
    text = _TEXT
    items = []
    for n, v in raw:
        sn = text.get(n)
        if sn is None:
            sn = n.decode("ascii", "surrogateescape")
            if len(n) <= _TEXT_MAX_LEN:
                remember(text, n, sn, _TEXT_MAX)
        sv = text.get(v)
        if sv is None:
            sv = v.decode("utf-8", "surrogateescape")
            if len(v) <= _TEXT_MAX_LEN and n not in _UNSHARED:
                remember(text, v, sv, _TEXT_MAX)
        items.append((sn, sv))
    return Headers._from_h2(items)


# Decoded names and short values, shared by every request that repeats them (":method",
# "GET", "user-agent", ...): one str object instead of one per header of every open stream,
# and a lookup instead of a decode. Bounded (at most 2048 entries of 64 bytes); credentials
# are never kept.
_TEXT: dict[bytes, str] = {}
_TEXT_MAX = 2048
_TEXT_MAX_LEN = 64
_UNSHARED = frozenset([b"cookie", b"authorization", b"proxy-authorization"])
