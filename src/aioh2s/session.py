"""The pooled client: ``Session`` takes URLs, keeps connections per origin, retries what is safe.

Theory of operation
-------------------
A :class:`Session` maps each origin (scheme, host, port) to an ``_origin.Origin``, which owns
that origin's connections and the FIFO line of requests waiting for a stream slot. A request
acquires a slot, opens its stream on that connection, and from there on is an ordinary
:class:`~aioh2s.RequestStream`: the same reader/writer pair, flow control and backpressure
as a request on a :class:`~aioh2s.Client`.

Retries follow one rule: a request is sent again, on whichever connection has room, only when
the error that ended it says the peer *certainly did not process it* (``retry_safe``) and the
body can be sent again. Retry-safe are: REFUSED_STREAM; a stream above the last stream id of
a GOAWAY; a connection that ended (or was found closing) before one byte of the request was
written; and a connection that could not take the request at all. A body can be sent again
when it is absent, ``bytes``, or an async iterable of which nothing was taken yet. Everything
else (a reset with any other code, a connection lost after the request went out, a timeout)
reaches the caller, whose error's ``retry_safe`` says whether *it* may resend.

A body is sent while the response is awaited and read, never before it: a server that
answers (or echoes) before it has read the whole request gets its answer read.

Timeouts (:class:`Timeouts`) are per request except ``connect``, which belongs to the
connection being opened. ``read`` and ``write`` are idle timeouts: each wait for response
bytes, and each ``drain()`` that waits for the peer's window, may last that long; a wait that
times out changes nothing, so it is cancel-safe, and the caller may wait again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json as _json
import ssl as _ssl
import sys
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from . import _aio
from ._exchange import Attempts, Body, Exchange, read_body, upload
from ._origin import Origin
from ._stream import Stream
from .client import Client, RequestStream, connect, end_request
from .config import Config, SessionConfigOptions
from .errors import (
    ConnectionClosed,
    H2Error,
    RequestTimeout,
    StreamReset,
)
from .headers import PARTIAL_REQUEST, Headers, HeadersLike, check_request, to_wire
from .tls import client_ssl_context

if sys.version_info >= (3, 11):
    from typing import Unpack
elif TYPE_CHECKING:  # only type checkers need it on 3.10 (see aioh2s.config)
    from typing_extensions import Unpack

__all__ = ["Response", "Session", "SessionStream", "Timeouts", "TimeoutsLike"]

_MiB = 1024 * 1024
_DEFAULT_PORTS = {"http": 80, "https": 443}
_MAX_REFUSALS = 10  # connections that stop taking streams just as a request gets to them
_KEEPALIVE = 30.0  # a Session's keepalive_interval unless told otherwise
_Key = tuple[str, str, int]  # an origin: scheme, host, port


@dataclass(frozen=True)
class Timeouts:
    """How long each stage of a request may take, in seconds; None disables that limit."""

    #: TCP connect plus TLS handshake, and then the wait for the server's SETTINGS.
    connect: float | None = 10.0
    #: Waiting for a free stream when every connection is at the server's stream limit and
    #: the origin has ``max_connections``.
    pool: float | None = 30.0
    #: Silence while waiting for the response headers or for more of the body.
    read: float | None = 60.0
    #: ``drain()`` waiting for the server to take more of the request body.
    write: float | None = 60.0
    #: The whole of :meth:`Session.fetch`, retries included (None: no limit).
    total: float | None = None

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None and not value > 0:
                raise ValueError(f"timeout {f.name!r} must be a positive number or None")

    @classmethod
    def of(cls, value: Timeouts | float | None) -> Timeouts:
        """``Timeouts`` as given, or every limit but ``total`` set to one number (None: off)."""
        if isinstance(value, Timeouts):
            return value
        if value is None:
            return cls(None, None, None, None, None)
        return cls(value, value, value, value, None)


TimeoutsLike = Timeouts | float | None

#: The sentinel for "the session's own timeouts".
_SESSION: Any = object()


class Response:
    """A whole response: ``status``, ``headers``, ``body`` and ``trailers``."""

    __slots__ = ("status", "headers", "body", "trailers", "url")

    def __init__(
        self, status: int, headers: Headers, body: bytes, trailers: Headers | None, url: str
    ) -> None:
        #: The status code (``int``).
        self.status = status
        #: The final response headers (pseudo-header ``:status`` included).
        self.headers = headers
        #: The body, whole.
        self.body = body
        #: Trailers, or None when the response had none.
        self.trailers = trailers
        #: The request's URL.
        self.url = url

    def __repr__(self) -> str:
        return f"<aioh2s.Response {self.status} {self.url} {len(self.body)} bytes>"

    def text(self, encoding: str | None = None) -> str:
        """The body decoded with ``encoding``, else the Content-Type charset, else UTF-8."""
        if encoding is None:
            ctype = self.headers.get("content-type", "")
            for part in ctype.split(";")[1:]:
                key, _, value = part.strip().partition("=")
                if key.lower() == "charset" and value:
                    encoding = value.strip('"')
        try:
            return self.body.decode(encoding or "utf-8", errors="replace")
        except LookupError:  # a charset Python does not know (utf8mb4...)
            return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON."""
        return _json.loads(self.body)


class SessionStream(RequestStream):
    """A :class:`~aioh2s.RequestStream` of a :class:`Session`.

    A request without a body (``end_stream=True``) that the server refuses before it answers
    (REFUSED_STREAM, GOAWAY) is sent again transparently while ``response_headers()`` waits:
    ``reader`` and ``writer`` then serve the new stream, and ``stream_id`` changes.
    """

    __slots__ = ("_again",)

    def __init__(self, stream: Stream, again: Any) -> None:
        super().__init__(stream)
        self._again = again  # an async function opening the request anew, or None

    async def response_headers(self) -> Headers:
        """Wait for and return the final (non-1xx) response headers."""
        while True:
            try:
                return await super().response_headers()
            except H2Error as e:
                again = self._again
                if again is None or not e.retry_safe or self._s.buf:
                    raise
                s = await again(e)
                if s is None:
                    raise
                end_request(self._s)
                self._s = self.reader._s = self.writer._s = s


class _Request:
    """``async with session.request(...) as stream`` (see :meth:`Session.request`)."""

    def __init__(
        self, session: Session, key: _Key, wire: list[tuple[bytes, bytes]], end: bool,
        timeouts: Timeouts,
    ) -> None:
        self._session = session
        self._key = key
        self._wire = wire
        self._end = end
        self._timeouts = timeouts
        self._stream: SessionStream | None = None
        self._attempts = Attempts()

    async def __aenter__(self) -> SessionStream:
        s = await self._session._open(
            self._key, self._wire, self._end, self._timeouts, self._attempts
        )
        again = self._again if self._end else None
        self._stream = SessionStream(s, again)
        return self._stream

    async def _again(self, e: H2Error) -> Stream | None:
        if not self._session._may_retry(e, self._attempts):
            return None
        self._attempts.note(e)
        return await self._session._open(
            self._key, self._wire, True, self._timeouts, self._attempts
        )

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._stream is not None:
            end_request(self._stream._s)


class Session:
    """A pool of HTTP/2 connections, per origin, opened on first use.

    ``ssl`` is the context for ``https`` origins (default: :func:`aioh2s.client_ssl_context`);
    ``http`` origins speak h2c with prior knowledge. ``timeout`` is a :class:`Timeouts`, or
    one number for all but ``total``, or None for no limits at all. Each origin has at most
    ``max_connections`` connections that take new requests; ``retries`` bounds how often one
    request is sent again (see the module's rule). Connections without streams for
    ``idle_timeout`` seconds are closed, connections older than ``max_connection_age`` take
    no new requests, and a connection silent for ``keepalive_interval`` seconds is PINGed
    (and closed when the PING is not answered within the ``keepalive_timeout`` option).
    ``headers`` are added to every request that does not set them; ``options`` are
    :class:`aioh2s.Config` fields for every connection (typed by
    :class:`aioh2s.SessionConfigOptions`). A ``handshake_timeout`` or ``keepalive_interval``
    set in ``config`` counts unless ``timeout``/``keepalive_interval`` is given.
    """

    def __init__(
        self,
        *,
        ssl: _ssl.SSLContext | None = None,
        timeout: TimeoutsLike = _SESSION,
        max_connections: int = 10,
        retries: int = 3,
        idle_timeout: float | None = 90.0,
        max_connection_age: float | None = None,
        keepalive_interval: float | None = _SESSION,
        headers: HeadersLike | None = None,
        config: Config | None = None,
        **options: Unpack[SessionConfigOptions],
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        if retries < 0:
            raise ValueError("retries must be 0 or more")
        for name, value in (("idle_timeout", idle_timeout),
                            ("max_connection_age", max_connection_age)):
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds or None")
        cfg = Config.from_options(config, **options)
        # What the caller set wins: an explicit keyword, then a field of ``config`` or
        # ``options`` that differs from Config's default; the session's defaults fill the rest.
        stock = Config()
        if timeout is _SESSION:
            connect_t = (
                cfg.handshake_timeout if cfg.handshake_timeout != stock.handshake_timeout
                else Timeouts.connect
            )
            self.timeouts = Timeouts(connect=connect_t)
        else:
            self.timeouts = Timeouts.of(timeout)
        if keepalive_interval is _SESSION:
            keepalive_interval = (
                cfg.keepalive_interval if cfg.keepalive_interval != stock.keepalive_interval
                else _KEEPALIVE
            )
        self._config = dataclasses.replace(
            cfg, keepalive_interval=keepalive_interval, handshake_timeout=self.timeouts.connect
        )
        self._ssl = ssl
        self._max_connections = max_connections
        self.retries = retries
        self._idle_timeout = idle_timeout
        self._max_age = max_connection_age
        self._headers = to_wire(headers, PARTIAL_REQUEST) if headers is not None else []
        if any(n[0] == 0x3A for n, _ in self._headers):
            raise ValueError("a Session's default headers cannot hold pseudo-headers")
        self._origins: dict[_Key, Origin] = {}
        self._closed = False
        self._closing: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<aioh2s.Session {state} origins={len(self._origins)}>"

    # -- the public surface --------------------------------------------------------------------

    def request(
        self,
        target: str | HeadersLike,
        *,
        method: str = "GET",
        headers: HeadersLike | None = None,
        end_stream: bool = False,
        timeout: TimeoutsLike = _SESSION,
    ) -> _Request:
        """Start a streaming request: ``async with session.request(url) as stream: ...``.

        ``target`` is a URL (``https://host:port/path?query``) or request headers with
        ``:scheme`` and ``:authority`` (``:method`` defaults to ``method``, ``:path`` to
        ``/``). ``stream`` is a :class:`SessionStream`: ``reader``, ``writer``,
        ``response_headers()``, as for :meth:`aioh2s.Client.request`. ``end_stream=True``
        sends no body. Retries happen while the stream is being opened, and for a request
        without a body also while its response headers are awaited.

        An extended CONNECT (RFC 8441: ``:method`` CONNECT with ``:protocol``, ``:scheme``,
        ``:authority`` and ``:path``) opens a tunnel as :meth:`aioh2s.Client.request` does;
        a tunnel may be silent for longer than the ``read`` timeout, so give it
        ``timeout=Timeouts(read=None)`` or catch :class:`aioh2s.ReadTimeout`. A plain CONNECT
        raises ``ValueError``: use :meth:`aioh2s.Client.connect_tunnel`.
        """
        self._check_open()
        t = self.timeouts if timeout is _SESSION else Timeouts.of(timeout)
        key, wire, _url = self._prepare(target, method, headers)
        return _Request(self, key, wire, end_stream, t)

    async def fetch(
        self,
        target: str | HeadersLike,
        *,
        method: str = "GET",
        headers: HeadersLike | None = None,
        body: Body = None,
        json: Any = None,
        timeout: TimeoutsLike = _SESSION,
        max_body_size: int | None = 64 * _MiB,
    ) -> Response:
        """Send a request and return the whole :class:`Response` (status, headers, body).

        ``body`` is bytes or an async iterable of bytes; ``json`` an object sent as JSON
        (with ``content-type: application/json``). A response body past ``max_body_size``
        bytes raises :class:`aioh2s.ResponseTooLarge` (None: no limit). Retried as the
        module's rule says; ``timeout``'s ``total`` bounds the whole call.
        """
        self._check_open()
        if not (body is None or isinstance(body, (bytes, bytearray, memoryview))
                or hasattr(body, "__aiter__")):
            raise TypeError(
                f"body must be bytes-like or an async iterable of bytes, not {type(body).__name__}"
            )
        if max_body_size is not None and max_body_size < 0:
            raise ValueError("max_body_size must be 0 or more, or None")
        if json is not None:
            if body is not None:
                raise ValueError("give either body or json, not both")
            body = _json.dumps(json, separators=(",", ":")).encode()
            given = to_wire(headers, PARTIAL_REQUEST) if headers is not None else []
            if not any(n == b"content-type" for n, _ in given):
                given.append((b"content-type", b"application/json"))
            headers = given
        t = self.timeouts if timeout is _SESSION else Timeouts.of(timeout)
        key, wire, url = self._prepare(target, method, headers)
        work = self._fetch(key, wire, url, body, t, max_body_size)
        if t.total is None:
            return await work
        total = t.total

        def expired() -> BaseException:
            return RequestTimeout(f"request timed out: {url} took more than {total} s", total)

        return await _aio.deadline(work, total, expired)

    async def close(self, grace: float | None = None) -> None:
        """Close every connection gracefully; requests still waiting for a slot fail.

        Open requests get ``grace`` seconds (default: the ``grace`` option) to finish.
        """
        self._closed = True
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close_all(grace))
        elif grace is not None:
            for origin in list(self._origins.values()):
                origin.shorten(grace)  # a later, shorter grace shortens the one in force
        # Shielded: a cancelled close() leaves the closing to go on, and the next close()
        # (or a concurrent one) waits for the same work.
        await asyncio.shield(self._closing)

    async def _close_all(self, grace: float | None) -> None:
        origins = list(self._origins.values())
        await asyncio.gather(*(o.close(grace) for o in origins))
        self._origins.clear()

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def connections(self) -> list[Client]:
        """The connections the pool holds now, of every origin (for inspection)."""
        return [p.client for o in self._origins.values() for p in o.conns]

    # -- machinery -----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this Session is closed")

    def _prepare(
        self,
        target: str | HeadersLike,
        method: str,
        headers: HeadersLike | None,
        origin: _Key | None = None,
    ) -> tuple[_Key, list[tuple[bytes, bytes]], str]:
        """The request's checked header list, its origin's key and its URL.

        ``origin``: where to connect, when it is not what ``:authority`` names (the httpx
        transport connects to the URL's host, whatever the Host header says).
        """
        wire, scheme, host, port = _target(target, method)
        if headers is not None:
            extra = to_wire(headers, PARTIAL_REQUEST)
            if any(n[0] == 0x3A for n, _ in extra):
                raise ValueError("pseudo-headers go in the target, not in headers=")
            wire += extra
        if self._headers:
            have = {n for n, _ in wire}
            wire += [f for f in self._headers if f[0] not in have]
        check_request(wire)
        authority = wire[2][1].decode("ascii", "replace")  # (_target puts it third)
        path = wire[3][1].decode("ascii", "replace")
        key = origin if origin is not None else (scheme, host, port)
        return key, wire, f"{scheme}://{authority}{path}"

    def _origin(self, key: _Key) -> Origin:
        origin = self._origins.get(key)
        if origin is not None:
            return origin
        if self._closed:
            raise RuntimeError("this Session is closed")
        if len(self._origins) > 64:  # forget origins with nothing left, now and then
            for k in [k for k, o in self._origins.items() if o.idle]:
                del self._origins[k]
        scheme, host, port = key
        ctx = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = client_ssl_context()
            ctx = self._ssl
        cfg = self._config

        async def opener() -> Client:
            return await connect(host, port, ssl=ctx, config=cfg)

        name = f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"
        origin = self._origins[key] = Origin(
            name, opener, max_connections=self._max_connections,
            idle_timeout=self._idle_timeout, max_age=self._max_age,
        )
        return origin

    def _may_retry(self, e: H2Error, attempts: Attempts) -> bool:
        if not e.retry_safe or self._closed or attempts.tries >= self.retries:
            return False
        attempts.tries += 1
        return True

    async def _open(
        self, key: _Key, wire: list[tuple[bytes, bytes]], end: bool, t: Timeouts,
        attempts: Attempts,
    ) -> Stream:
        """Open the request's stream on a pooled connection."""
        for _ in range(_MAX_REFUSALS):
            if self._closed:  # (closed meanwhile, e.g. during a retry's pause)
                raise ConnectionClosed("the session was closed", retry_safe=True)
            # Looked up on every attempt: an origin with nothing left may have been forgotten.
            origin = self._origin(key)
            p = await origin.acquire(t.pool, newest=attempts.tries > 0, avoid=attempts.avoid)
            conn = p.conn
            origin.use(p)
            if conn.open_outbound >= conn._peer_limit() or conn._slot_waiters:
                # The peer lowered its limit since the slot was reserved: open_stream would
                # wait in the connection's own line, beyond the pool timeout. Queue again.
                origin._dispatch()
                continue
            try:
                s = await conn.open_stream(wire, end)  # (does not wait: the slot is free)
            except H2Error as e:
                origin._dispatch()
                # Refused before HEADERS were even queued (the connection began closing
                # between the reservation and now): no attempt was made, none is counted.
                if e.retry_safe and not self._closed:
                    continue
                raise
            origin.served(p)
            attempts.last = p
            s.read_timeout = t.read
            s.write_timeout = t.write
            return s
        raise ConnectionClosed(
            f"{key[0]}://{key[1]}:{key[2]}: {_MAX_REFUSALS} connections in a row stopped"
            " taking streams just as this request got to them",
            retry_safe=True,
        )

    async def _fetch(
        self,
        key: _Key,
        wire: list[tuple[bytes, bytes]],
        url: str,
        body: Body,
        t: Timeouts,
        max_body_size: int | None,
    ) -> Response:
        ex = await self._exchange(key, wire, body, t)
        try:
            headers = ex.stream._s.headers
            assert headers is not None
            try:
                data = await read_body(ex.stream, max_body_size, url)
            except H2Error:
                failed = ex.upload_error()
                if failed is not None:  # (we reset the stream for it: its error says why)
                    raise failed from None
                raise
            if ex.upload_error() is not None:
                await ex.uploaded()  # the body failed although the answer came: say so
            # Still sending when the answer is complete: the server wants no more of it.
            return Response(int(headers[":status"]), headers, data, ex.stream._s.trailers, url)
        finally:
            await ex.end()

    async def _exchange(
        self, key: _Key, wire: list[tuple[bytes, bytes]], body: Body, t: Timeouts
    ) -> Exchange:
        """Send the request and wait for its response headers, retrying what is safe.

        The body goes out in a task of its own, while the response is awaited (and then
        read): a server that answers before it read everything still gets its answer read.
        The caller owns the :class:`Exchange` and must ``await ex.end()``. Once response
        headers arrived the server has processed the request: nothing after that is retried.
        """
        replayable = body is None or isinstance(body, (bytes, bytearray, memoryview))
        empty = body is None or (replayable and not body)
        state = Attempts()
        while True:
            s = await self._open(key, wire, empty, t, state)
            ex = Exchange(RequestStream(s))
            try:
                if not empty:
                    ex.upload = asyncio.ensure_future(upload(s, body, state, ex))
                await ex.stream.response_headers()
                if ex.upload is not None and ex.upload.done():
                    await ex.uploaded()  # failed before the answer came: raise that
                return ex
            except BaseException as e:
                failed = ex.upload_error()
                await ex.end()
                if failed is not None and isinstance(e, Exception) and e is not failed:
                    raise failed from None  # the body's own error says more (we reset for it)
                if (isinstance(e, H2Error) and (replayable or not state.started)
                        and self._may_retry(e, state)):
                    state.note(e)
                    if isinstance(e, StreamReset) and state.tries > 1:
                        await asyncio.sleep(min(1.0, 0.025 * 2 ** state.tries))
                    continue
                raise


_PLAIN_CONNECT = (
    "a Session does not send plain CONNECT: its :authority names the tunnel's target, not the"
    " server; use (await aioh2s.connect(proxy_host, proxy_port)).connect_tunnel('host:port')."
    " An extended CONNECT (with :protocol, :scheme and :authority) goes through a Session"
)


def _target(
    target: str | HeadersLike, method: str
) -> tuple[list[tuple[bytes, bytes]], str, str, int]:
    """The request's pseudo-headers and its origin, from a URL or from request headers."""
    if isinstance(target, str):
        if method.upper() == "CONNECT":
            raise ValueError(_PLAIN_CONNECT)
        parts = urlsplit(target)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS:
            raise ValueError(f"URL {target!r}: the scheme must be http or https")
        if parts.username is not None or parts.password is not None:
            raise ValueError(f"URL {target!r}: credentials in URLs are not supported")
        host = parts.hostname
        if not host:
            raise ValueError(f"URL {target!r} has no host")
        port = parts.port or _DEFAULT_PORTS[scheme]  # (raises ValueError for a bad port)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        wire = [
            (b":method", method.encode()),
            (b":scheme", scheme.encode()),
            (b":authority", _authority(host, port, scheme).encode()),
            (b":path", path.encode()),
        ]
        return wire, scheme, host, port
    wire = to_wire(target, PARTIAL_REQUEST)
    pseudo = {n: v for n, v in wire if n[0] == 0x3A}
    if pseudo.get(b":method", method.encode()) == b"CONNECT" and b":protocol" not in pseudo:
        raise ValueError(_PLAIN_CONNECT)
    regular = [f for f in wire if f[0][0] != 0x3A]
    scheme = pseudo.get(b":scheme", b"").decode().lower()
    authority = pseudo.get(b":authority", b"").decode()
    if scheme not in _DEFAULT_PORTS or not authority:
        raise ValueError("request headers as a target need :scheme (http or https) and :authority")
    parts = urlsplit(f"{scheme}://{authority}")
    if not parts.hostname:
        raise ValueError(f":authority {authority!r} has no host")
    port = parts.port or _DEFAULT_PORTS[scheme]
    head = [
        (b":method", pseudo.get(b":method", method.encode())),
        (b":scheme", scheme.encode()),
        (b":authority", authority.encode()),
        (b":path", pseudo.get(b":path", b"/")),
    ]
    if b":protocol" in pseudo:
        head.append((b":protocol", pseudo[b":protocol"]))
    return head + regular, scheme, parts.hostname, port


def _authority(host: str, port: int, scheme: str) -> str:
    name = f"[{host}]" if ":" in host else host
    return name if port == _DEFAULT_PORTS[scheme] else f"{name}:{port}"

