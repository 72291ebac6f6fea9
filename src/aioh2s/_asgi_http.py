"""The http scope of :mod:`aioh2s.asgi`: one request stream as ASGI's scope, receive and send.

Theory of operation
-------------------
An ASGI application is called once per request stream, in the stream's own handler task
(``ASGIAdapter.__call__`` is the aioh2s handler): no task is added per request. What it is
given are views of the stream's ``H2StreamReader``/``H2StreamWriter`` pair, so the flow
control of aioh2s is the application's:

- ``receive()`` reads at most one chunk (``chunk_size``, 64 KiB) per call with
  ``reader.read(n)``, which grants the client window only for the bytes it hands out. An
  application that does not call ``receive()`` therefore stops the client after one stream
  window, and nothing is read ahead for it. Once the body was delivered, ``receive()`` waits
  until the response is complete or the stream dies (``writer.wait_closed()``) and returns
  ``http.disconnect``; a read that fails because the stream was reset or the connection
  died returns it at once. Once ``http.response.start`` came before the request body ended
  (a bidirectional stream), the body is exempt from the server's ``min_body_rate``
  (``reader.allow_slow_body()``), unless ``ASGIAdapter(slow_body="never")``; before that,
  waiting in ``receive()`` runs its clock as any handler's read does.
- ``send()`` of a body message queues the bytes and awaits ``writer.drain()`` while more
  body is to come, so a client that does not read stops the application after about one
  window plus ``write_high_water``. The last body message does not wait (nothing follows it
  that could pile up). ``send()`` on a stream that was reset raises
  :class:`ClientDisconnected`, an ``OSError`` (spec 2.4), which the adapter does not log.
- The response headers of ``http.response.start`` are held until the first body message or
  the loop's next turn, whichever comes first (the spec allows holding them): a response
  whose body follows at once (most do) has its headers and body queued together, one
  HEADERS frame with END_STREAM if the body is empty, and an application failing in
  between (before it awaits anything) still gets its client a 500 rather than a reset; a
  stream whose first chunk takes its time (server-sent events) still gets its headers
  without waiting for it. An
  ``http.response.early_hint`` goes out as a 103 before them (sent before the start, as
  hypercorn takes it, or after it while they are held, as the extension words it).
- Trailers (the ``http.response.trailers`` extension): ``trailers: True`` in the start
  message keeps the stream open after the last body message until the trailers message
  (``more_trailers`` gathers several). As the extension says, the fields are sent only if
  the request carried ``te: trailers``; otherwise the stream just ends.

Every message is checked against :data:`MESSAGES` (the one table of what an application may
send: each field, its check, its default) and against the cycle's state before anything
changes, so a wrong type, a missing field, bad header types or a message out of order
raise ``TypeError``/``ValueError``/``RuntimeError`` from ``send()`` with nothing sent.
Response and trailer fields then go through aioh2s's own header rules (``to_wire``:
``LocalProtocolError``), also before anything is queued.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import unquote

from ._state import Recv, Send
from .errors import ErrorCode, H2Error, LocalProtocolError
from .headers import RESPONSE, remember, to_wire
from .headers import TRAILERS as TRAILER_FIELDS
from .streams import H2StreamReader, H2StreamWriter

__all__ = [
    "ASGIApp",
    "ClientDisconnected",
    "HTTPCycle",
    "MESSAGES",
    "Message",
    "Scope",
    "check",
    "request_scope",
]

log = logging.getLogger("aioh2s")

Scope = dict[str, Any]
Message = MutableMapping[str, Any]
#: An ASGI 3 application: ``async def app(scope, receive, send)``.
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]

#: The ASGI versions this server speaks: ASGI 3, HTTP & WebSocket spec 2.5 (``send()`` on a
#: closed connection raises an ``OSError``: 2.4; the WebSocket disconnect's ``reason``: 2.5).
ASGI_VERSION = "3.0"
SPEC_VERSION = "2.5"


class ClientDisconnected(OSError):
    """``send()`` on a request or WebSocket whose client went away (ASGI spec 2.4).

    Its ``__cause__`` is the aioh2s error that ended the stream (``StreamReset``,
    ``ConnectionClosed``, ``WebSocketClosed``). An application may catch it to clean up;
    escaping the application, it is not logged as an error.
    """


# -- the messages an application may send ------------------------------------------------------

_REQUIRED: Any = object()


def _bool(v: Any, kind: str, name: str) -> bool:
    if v is True or v is False:
        return bool(v)
    raise TypeError(f"{kind!r} message: {name!r} must be a bool, not {type(v).__name__}")


def _bytes(v: Any, kind: str, name: str) -> bytes:
    if type(v) is bytes:
        return v
    if isinstance(v, (bytearray, memoryview)):
        return bytes(v)
    raise TypeError(f"{kind!r} message: {name!r} must be bytes, not {type(v).__name__}")


def _status(v: Any, kind: str, name: str) -> int:
    if type(v) is not int:
        raise TypeError(f"{kind!r} message: 'status' must be an int, not {type(v).__name__}")
    if not 200 <= v <= 599:
        raise ValueError(f"{kind!r} message: status {v} is not a final status (200-599)")
    return v


def _str(v: Any, kind: str, name: str) -> str:
    if isinstance(v, str):
        return v
    raise TypeError(f"{kind!r} message: {name!r} must be a str, not {type(v).__name__}")


def _int(v: Any, kind: str, name: str) -> int:
    if type(v) is int:
        return v
    raise TypeError(f"{kind!r} message: {name!r} must be an int, not {type(v).__name__}")


def _optional_str(v: Any, kind: str, name: str) -> str | None:
    return None if v is None else _str(v, kind, name)


def _optional_bytes(v: Any, kind: str, name: str) -> bytes | None:
    return None if v is None else _bytes(v, kind, name)


def _headers(v: Any, kind: str, name: str) -> list[tuple[bytes, bytes]]:
    """An iterable of ``[name, value]`` byte pairs, as a list; no pseudo-headers."""
    if isinstance(v, (str, bytes, bytearray, memoryview)) or not hasattr(v, "__iter__"):
        raise TypeError(f"{kind!r} message: {name!r} must be an iterable of [name, value] "
                        f"byte-string pairs, not {type(v).__name__}")
    out = []
    for item in v:
        try:
            n, value = item
        except (TypeError, ValueError):
            raise TypeError(f"{kind!r} message: each of {name!r} must be a [name, value] pair,"
                            f" not {item!r:.60}") from None
        if type(n) is not bytes or type(value) is not bytes:
            if not isinstance(n, (bytes, bytearray)) or not isinstance(value, (bytes, bytearray)):
                raise TypeError(
                    f"{kind!r} message: header names and values are byte strings, not "
                    f"{type(n).__name__} and {type(value).__name__} ({n!r:.40}: {value!r:.40})")
            n, value = bytes(n), bytes(value)
        if n[:1] == b":":
            raise ValueError(f"{kind!r} message: pseudo-header {n!r} may not be sent by the "
                             "application")
        out.append((n, value))
    return out


def _links(v: Any, kind: str, name: str) -> list[bytes]:
    if isinstance(v, (str, bytes)) or not hasattr(v, "__iter__"):
        raise TypeError(f"{kind!r} message: 'links' must be an iterable of byte strings")
    return [_bytes(link, kind, name) for link in v]


Check = Callable[[Any, str, str], Any]

#: What an application may send, per message type: each field, its check and its default
#: (``_REQUIRED``: none). ``None`` stands for a missing optional field. The only table of
#: message validation; :func:`check` applies it.
MESSAGES: dict[str, tuple[tuple[str, Check, Any], ...]] = {
    # http
    "http.response.start": (
        ("status", _status, _REQUIRED), ("headers", _headers, ()), ("trailers", _bool, False)),
    "http.response.body": (("body", _bytes, b""), ("more_body", _bool, False)),
    "http.response.trailers": (("headers", _headers, ()), ("more_trailers", _bool, False)),
    "http.response.early_hint": (("links", _links, _REQUIRED),),
    # websocket
    "websocket.accept": (("subprotocol", _optional_str, None), ("headers", _headers, ())),
    "websocket.send": (("bytes", _optional_bytes, None), ("text", _optional_str, None)),
    "websocket.close": (("code", _int, 1000), ("reason", _optional_str, "")),
    "websocket.http.response.start": (
        ("status", _status, _REQUIRED), ("headers", _headers, ())),
    "websocket.http.response.body": (("body", _bytes, b""), ("more_body", _bool, False)),
    # lifespan
    "lifespan.startup.complete": (),
    "lifespan.startup.failed": (("message", _optional_str, ""),),
    "lifespan.shutdown.complete": (),
    "lifespan.shutdown.failed": (("message", _optional_str, ""),),
}

HTTP_SEND = frozenset(k for k in MESSAGES if k.startswith("http."))
WEBSOCKET_SEND = frozenset(k for k in MESSAGES if k.startswith("websocket."))
LIFESPAN_SEND = frozenset(k for k in MESSAGES if k.startswith("lifespan."))


def check(message: Any, allowed: frozenset[str]) -> tuple[str, list[Any]]:
    """``(type, field values)`` of a message the application sent, or raise before anything.

    ``TypeError`` for a message that is not a mapping with a ``type``, a missing field or a
    field of a wrong type; ``ValueError`` for a type this scope does not take or a bad value.
    """
    try:
        kind = message["type"]
        get = message.get
    except (TypeError, KeyError, IndexError, AttributeError):
        raise TypeError(f"an ASGI message is a dict with a 'type' key, not {message!r:.80}"
                        ) from None
    if kind not in allowed:
        raise ValueError(f"{kind!r} is not a message an application may send in this scope"
                         f" (one of {', '.join(sorted(allowed))})")
    values = []
    for name, conv, default in MESSAGES[kind]:
        v = get(name)
        if v is None:
            if default is _REQUIRED:
                raise TypeError(f"{kind!r} message: {name!r} is required")
            values.append(default)
        else:
            values.append(conv(v, kind, name))
    return kind, values


# -- the scope ----------------------------------------------------------------------------------

# str -> bytes of header names and short values seen before (most requests repeat them), as
# headers._h2headers does the other way. Bounded; credentials are never kept.
_ENCODED: dict[str, bytes] = {}
_ENCODED_MAX = 2048
_ENCODED_LEN = 64
_UNSHARED = frozenset(["cookie", "authorization", "proxy-authorization"])


def _encode(s: str, keep: bool = True) -> bytes:
    b = _ENCODED.get(s)
    if b is None:
        # Headers were decoded as UTF-8 with surrogateescape: this gives back the wire bytes.
        b = s.encode("utf-8", "surrogateescape")
        if keep and len(s) <= _ENCODED_LEN:
            remember(_ENCODED, s, b, _ENCODED_MAX)
    return b


def _address(info: Any) -> Any:
    if type(info) is tuple:
        return info if len(info) == 2 else info[:2]  # IPv6: (host, port, flowinfo, scope)
    if isinstance(info, str) and info:
        return (info, None)  # a unix socket
    return None


def request_scope(
    kind: str, reader: H2StreamReader, writer: H2StreamWriter, root_path: str,
    state: dict[str, Any] | None,
) -> Scope:
    """The scope fields an http and a websocket scope share, from the request's headers.

    Pseudo-headers are removed; ``:authority`` becomes the first header, ``host``, replacing
    any ``host`` field (the spec's rule). ``path`` is percent-decoded, ``raw_path`` and
    ``query_string`` are as received; ``root_path`` is prepended to both paths (it is the
    prefix a proxy in front took off, as uvicorn has it). ``scheme`` comes from the
    connection (TLS or not), not from the client's ``:scheme``.
    """
    headers: list[tuple[bytes, bytes]] = []
    append = headers.append
    method = target = authority = ""
    cache = _ENCODED
    for n, v in reader.headers._items:  # (a hot path: one lookup per name and short value)
        if n[0] == ":":
            if n == ":method":
                method = v
            elif n == ":path":
                target = v
            elif n == ":authority":
                authority = v
            continue
        if n == "host" and authority:
            continue
        bn = cache.get(n)
        if bn is None:
            bn = _encode(n)
        bv = cache.get(v)
        if bv is None:
            bv = _encode(v, n not in _UNSHARED)
        append((bn, bv))
    if authority:
        headers.insert(0, (b"host", _encode(authority)))
    raw, _, query = target.partition("?")
    path = unquote(raw) if "%" in raw else raw
    raw_path = _encode(raw, False)
    if root_path:
        path = root_path + path
        raw_path = root_path.encode("utf-8") + raw_path
    extra = reader._s.conn.transport.get_extra_info
    tls = extra("ssl_object") is not None
    scope: Scope = {
        "type": kind,
        "asgi": {"version": ASGI_VERSION, "spec_version": SPEC_VERSION},
        "http_version": "2",
        "method": method,
        "scheme": ("https" if tls else "http") if kind == "http" else ("wss" if tls else "ws"),
        "path": path,
        "raw_path": raw_path,
        "query_string": _encode(query, False) if query else b"",
        "root_path": root_path,
        "headers": headers,
        "client": _address(extra("peername")),
        "server": _address(extra("sockname")),
    }
    if state is not None:
        scope["state"] = dict(state)  # a shallow copy per request (lifespan spec)
    return scope


# -- one request ---------------------------------------------------------------------------------

#: The response's states, in order: nothing sent yet, start held, body open, trailers due.
START, STARTED, BODY, TRAILERS, DONE = range(5)
_STATUS: dict[int, bytes] = {}
_HOP_BY_HOP = frozenset([b"transfer-encoding", b"connection", b"keep-alive",
                         b"proxy-connection", b"upgrade"])
_STATE_NAMES = ("before http.response.start", "after http.response.start",
                "during the body", "after the body, waiting for trailers", "after the response")


class HTTPCycle:
    """One request: the ``receive`` and ``send`` an ASGI application gets for it."""

    __slots__ = ("_r", "_w", "_s", "state", "_wire", "_trailers", "_trailer_fields",
                 "_head", "_body_done", "_gone", "raised", "_chunk", "_slow")

    def __init__(self, reader: H2StreamReader, writer: H2StreamWriter, chunk: int,
                 head: bool, slow_body: bool = True) -> None:
        self._r = reader
        self._w = writer
        self._s = reader._s
        #: Where the response is: START, STARTED, BODY, TRAILERS or DONE.
        self.state = START
        self._wire: list[tuple[bytes, bytes]] | None = None  # held response headers
        self._trailers = False  # the start message announced trailers
        self._trailer_fields: list[tuple[bytes, bytes]] = []
        self._head = head
        self._body_done = False
        self._gone = False  # http.disconnect was delivered (or the stream died)
        #: A ClientDisconnected was raised to the application.
        self.raised = False
        self._chunk = chunk
        # Exempt the request body from min_body_rate once the response began before it
        # ended (ASGIAdapter's slow_body="auto"): see start().
        self._slow = slow_body

    # -- receive -----------------------------------------------------------------------------

    async def receive(self) -> Message:
        """The next ``http.request`` chunk, then (once there is no more) ``http.disconnect``."""
        s = self._s
        if not self._body_done and not self._gone and self.state != DONE:
            if s.recv is Recv.ENDED and not s.buf:  # a GET: no body at all
                self._body_done = True
                return {"type": "http.request", "body": b"", "more_body": False}
            try:
                data = await self._r.read(self._chunk)
            except H2Error:
                self._gone = True
                return {"type": "http.disconnect"}
            more = not (s.recv is Recv.ENDED and not s.buf)
            if not more:
                self._body_done = True
            return {"type": "http.request", "body": data, "more_body": more}
        if not self._gone and self.state != DONE:
            try:
                await self._w.wait_closed()  # the response complete, or the stream dead
            except H2Error:
                pass
        self._gone = True
        return {"type": "http.disconnect"}

    # -- send --------------------------------------------------------------------------------

    async def send(self, message: Message) -> None:
        """Take one message of the application (checked before anything changes)."""
        kind, values = check(message, HTTP_SEND)
        if kind == "http.response.body":
            await self.body(values[0], values[1])
        elif kind == "http.response.start":
            self.start(values[0], values[1], values[2])
        elif kind == "http.response.trailers":
            self._trailers_message(values[0], values[1])
        else:
            self._early_hint(values[0])

    def _order(self, kind: str) -> RuntimeError:
        return RuntimeError(f"{kind!r} message sent {_STATE_NAMES[self.state]} on stream"
                            f" {self._s.id}")

    def _alive(self) -> None:
        s = self._s
        if s.send is Send.RESET:
            self.raised = True
            err = s.send_error
            raise ClientDisconnected(
                f"the client of stream {s.id} went away: {err}") from err

    def start(self, status: int, headers: list[tuple[bytes, bytes]], trailers: bool,
              kind: str = "http.response.start") -> None:
        """``http.response.start``: checked and held until the first body message."""
        if self.state != DONE:
            self._alive()
        if self.state != START:
            raise self._order(kind)
        code = _STATUS.get(status)
        if code is None:
            code = _STATUS[status] = str(status).encode()
        if any(n.lower() in _HOP_BY_HOP for n, _ in headers):
            # The spec: "the server must ignore" transfer-encoding; the other HTTP/1.1
            # connection fields go too, as a gateway to HTTP/2 must drop them (RFC 9113
            # §8.2.2), so an application written for HTTP/1.1 servers runs unchanged.
            headers = [(n, v) for n, v in headers if n.lower() not in _HOP_BY_HOP]
        self._wire = to_wire([(b":status", code), *headers], RESPONSE)  # LocalProtocolError
        self._trailers = trailers
        self.state = STARTED
        if self._slow and self._s.recv is Recv.OPEN:
            # Responding while the request body still comes: a bidirectional stream (chat
            # over one POST, gRPC-style streaming), whose body pauses whenever the client has
            # nothing to say; min_body_rate is for uploads that trickle before any answer.
            self._r.allow_slow_body()
        # Held at most until the loop's next turn: a first body message sent without
        # awaiting anything in between (most responses) goes out with them, and a stream
        # whose first chunk takes its time (server-sent events) still gets its headers now.
        self._s.conn.loop.call_soon(self._send_held)

    def _send_held(self) -> None:
        if self.state == STARTED and self._s.send is Send.IDLE:
            wire = self._wire
            assert wire is not None
            self._wire = None
            try:
                self._w.send_headers(wire)  # (checked already but for the peer's limit)
            except LocalProtocolError as e:
                # More than the client's SETTINGS_MAX_HEADER_LIST_SIZE: a 500 instead, as
                # the application would have had if its next send() had raised it.
                log.error("aioh2s: ASGI application's response on stream %d: %s",
                          self._s.id, e)
                self.state = DONE
                try:
                    self._w.send_headers([(b":status", b"500"), (b"content-length", b"0")],
                                         True)
                except LocalProtocolError:
                    # A limit below even that (some 90 bytes): nothing can answer but a reset
                    # (raising here would be lost in the loop's callback).
                    self._w.reset(ErrorCode.INTERNAL_ERROR)
                return
            self.state = BODY

    async def body(self, body: bytes, more: bool, kind: str = "http.response.body") -> None:
        """``http.response.body``: queued, then ``drain()`` while more is to come."""
        state = self.state
        if state == DONE:
            return  # "any further messages on the channel will be ignored"
        self._alive()
        w = self._w
        if state == STARTED:
            wire = self._wire
            assert wire is not None
            if not body or self._head:
                ends = not more and not self._trailers
                w.send_headers(wire, end_stream=ends)  # LocalProtocolError: nothing changed
                self._wire = None
                if ends:
                    self.state = DONE
                    return
            else:
                w.send_headers(wire)
                self._wire = None
            self.state = state = BODY
        if state == BODY:
            if body and not self._head:  # (a HEAD response has no content: dropped)
                w.write(body)
            if more:
                try:
                    await w.drain()
                except H2Error as e:
                    self.raised = True
                    raise ClientDisconnected(
                        f"the client of stream {self._s.id} went away: {e}") from e
                return
            if self._trailers:
                self.state = TRAILERS
            else:
                w.write_eof()
                self.state = DONE
            return
        raise self._order(kind)

    def _trailers_message(self, headers: list[tuple[bytes, bytes]], more: bool) -> None:
        if self.state == DONE:
            return
        self._alive()
        if self.state != TRAILERS:
            raise self._order("http.response.trailers")
        wire = to_wire(headers, TRAILER_FIELDS)  # LocalProtocolError before anything changes
        self._trailer_fields += wire
        if more:
            return
        # The extension's rule: trailers only for a client that said ``te: trailers``.
        if self._trailer_fields and "trailers" in self._r.headers.get("te", ""):
            self._w.send_trailers(self._trailer_fields)
        else:
            self._w.write_eof()
        self.state = DONE

    def _early_hint(self, links: list[bytes]) -> None:
        if self.state == DONE:
            return
        self._alive()
        if self.state != STARTED and self.state != START:
            return  # the final headers went out already: a 103 cannot follow them
        if not links:
            return
        wire = to_wire([(b":status", b"103"), *((b"link", v) for v in links)], RESPONSE)
        self._w.send_headers(wire)
