"""An ``httpx`` transport that speaks HTTP/2 through an :class:`aioh2s.Session`.

    import httpx, aioh2s.httpx_transport
    async with httpx.AsyncClient(transport=aioh2s.httpx_transport.Transport()) as client:
        r = await client.get("https://example.org/")

Needs the optional extra ``aioh2s[httpx]``. Theory of operation: httpx builds an
``httpx.Request``; :meth:`Transport.handle_async_request` turns it into the HTTP/2 request
headers (``Host`` becomes ``:authority``; fields HTTP/2 forbids, such as ``Connection``,
are dropped as RFC 9113 §8.2.2 asks), sends it on the session's pool with httpx's per-request
timeouts, and returns an ``httpx.Response`` as soon as the response headers arrived, whose
body streams from the HTTP/2 stream as httpx reads it (``client.stream(...)`` keeps the
backpressure: nothing is read ahead beyond the stream's window). Closing that response (httpx
does when the body was read, or the ``async with`` ends) ends the stream: an unread rest is
reset with CANCEL.

Retries are the session's: a request whose body httpx holds as bytes is sent again when the
server provably did not process it; a streaming body only until its first chunk was taken.

Errors become httpx's own: ``ConnectTimeout``, ``PoolTimeout``, ``ReadTimeout`` and
``WriteTimeout`` for the timeouts, ``ConnectError`` when no connection could be opened,
``LocalProtocolError`` for a request HTTP/2 cannot carry, ``RemoteProtocolError`` for a
stream the server reset or a protocol violation, and ``ReadError`` for a connection that
ended under the request. The aioh2s error is the ``__cause__``.
"""

from __future__ import annotations

import contextlib
import ssl as _ssl
import sys
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import httpx

from ._exchange import Exchange
from .config import Config, SessionConfigOptions
from .errors import (
    ConnectError,
    ConnectionClosed,
    ConnectTimeout,
    H2Error,
    LocalProtocolError,
    PoolTimeout,
    ReadTimeout,
    WriteTimeout,
)
from .headers import HeadersLike
from .session import Session, Timeouts, TimeoutsLike

if sys.version_info >= (3, 11):
    from typing import Unpack
elif TYPE_CHECKING:  # only type checkers need it on 3.10 (see aioh2s.config)
    from typing_extensions import Unpack

__all__ = ["Transport", "TransportOptions"]


class TransportOptions(SessionConfigOptions, total=False):
    """The keywords of :class:`Transport`: those of :class:`aioh2s.Session`, all of them.

    Session's own arguments, then (inherited) the :class:`aioh2s.Config` fields it takes
    (:class:`aioh2s.SessionConfigOptions`); a test keeps this equal to Session's signature.
    """

    ssl: _ssl.SSLContext | None
    timeout: TimeoutsLike
    max_connections: int
    retries: int
    idle_timeout: float | None
    max_connection_age: float | None
    keepalive_interval: float | None
    headers: HeadersLike | None
    config: Config | None

# RFC 9113 §8.2.2: connection-specific fields must not be sent over HTTP/2.
_DROP = frozenset([b"host", b"connection", b"keep-alive", b"proxy-connection",
                   b"transfer-encoding", b"upgrade"])

# Most specific first: ConnectTimeout is a ConnectError too.
_MAP: list[tuple[type[H2Error], type[httpx.TransportError]]] = [
    (ConnectTimeout, httpx.ConnectTimeout),
    (ConnectError, httpx.ConnectError),
    (PoolTimeout, httpx.PoolTimeout),
    (ReadTimeout, httpx.ReadTimeout),
    (WriteTimeout, httpx.WriteTimeout),
    (LocalProtocolError, httpx.LocalProtocolError),
    (ConnectionClosed, httpx.ReadError),
    (H2Error, httpx.RemoteProtocolError),
]


@contextlib.contextmanager
def _as_httpx(request: httpx.Request) -> Iterator[None]:
    try:
        yield
    except H2Error as e:
        for ours, theirs in _MAP:
            if isinstance(e, ours):
                raise theirs(str(e), request=request) from e
        raise  # pragma: no cover - H2Error is the last entry


class _ResponseBody(httpx.AsyncByteStream):
    """The response body, read from the HTTP/2 stream as httpx asks for it."""

    def __init__(self, exchange: Exchange, request: httpx.Request) -> None:
        self._exchange = exchange
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        ex = self._exchange
        reader = ex.stream.reader
        with _as_httpx(self._request):
            while True:
                try:
                    chunk = await reader.read(65536)
                except H2Error:
                    failed = ex.upload_error()
                    if failed is not None:  # we reset the stream for it: its error says why
                        raise failed from None
                    raise
                if not chunk:
                    if ex.upload_error() is not None:
                        await ex.uploaded()  # a failed upload is the request's error
                    return
                yield chunk

    async def aclose(self) -> None:
        await self._exchange.end()


class Transport(httpx.AsyncBaseTransport):
    """``httpx.AsyncClient(transport=Transport())``: HTTP/2 through an aioh2s pool.

    ``session`` is the :class:`aioh2s.Session` to use (closed with the transport only when
    it was made here); otherwise ``options`` are :class:`aioh2s.Session` keywords
    (``ssl=``, ``max_connections=``, ``retries=``..., typed by :class:`TransportOptions`, so
    a misspelt one is a type error). httpx's ``pool``, ``read`` and
    ``write`` timeouts apply per request; the connect timeout is the session's, because a
    connection is opened for whichever requests come to share it.
    """

    def __init__(
        self, session: Session | None = None, **options: Unpack[TransportOptions]
    ) -> None:
        if session is not None and options:
            raise TypeError("give either a Session or Session options, not both")
        self._own = session is None
        self.session = session if session is not None else Session(**options)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` and return the response once its headers arrived."""
        url = request.url
        if url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"aioh2s cannot send {url.scheme!r} URLs",
                                            request=request)
        if not url.host:
            raise httpx.UnsupportedProtocol(f"the URL {url} has no host", request=request)
        # Where to connect is the URL's business; a Host header only names the authority.
        origin = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        hosts = [v for n, v in request.headers.raw if n.lower() == b"host"]
        if len(hosts) > 1:
            raise httpx.LocalProtocolError("more than one Host header", request=request)
        authority = hosts[0] if hosts else url.netloc
        wire: list[tuple[bytes, bytes]] = [
            (b":method", request.method.encode("ascii")),
            (b":scheme", url.scheme.encode("ascii")),
            (b":authority", authority),
            (b":path", url.raw_path),
        ]
        for name, value in request.headers.raw:
            low = name.lower()
            if low in _DROP:
                continue
            if low == b"te":
                # RFC 9113 §8.2.2: TE may only say "trailers".
                if b"trailers" not in [x.strip() for x in value.lower().split(b",")]:
                    continue
                value = b"trailers"
            wire.append((low, value))
        body: Any
        if isinstance(request.stream, httpx.ByteStream):
            body = request.read()
        else:
            body = request.stream
        timeouts = self._timeouts(request)
        session = self.session
        with _as_httpx(request):
            try:
                key, checked, _url = session._prepare(wire, request.method, None, origin)
            except ValueError as e:
                raise LocalProtocolError(str(e)) from e
            exchange = await session._exchange(key, checked, body, timeouts)
        try:
            head = exchange.stream._s.headers
            assert head is not None
            headers = [
                (n.encode("ascii", "surrogateescape"), v.encode("utf-8", "surrogateescape"))
                for n, v in head if not n.startswith(":")
            ]
            return httpx.Response(
                int(head[":status"]),
                headers=headers,
                stream=_ResponseBody(exchange, request),
                extensions={"http_version": b"HTTP/2", "stream_id": exchange.stream.stream_id},
            )
        except BaseException:
            await exchange.end()  # its slot goes back whatever went wrong
            raise

    def _timeouts(self, request: httpx.Request) -> Timeouts:
        given = request.extensions.get("timeout") or {}
        base = self.session.timeouts

        def pick(name: str, ours: float | None) -> float | None:
            value = given.get(name, ours)
            return None if value is None or value <= 0 else float(value)

        return Timeouts(
            connect=base.connect,
            pool=pick("pool", base.pool),
            read=pick("read", base.read),
            write=pick("write", base.write),
            total=None,
        )

    async def aclose(self) -> None:
        """Close the session (when this transport made it)."""
        if self._own:
            await self.session.close()
