"""The client face: ``connect()``, ``Client`` and the per-request ``RequestStream``.

Theory of operation: ``connect()`` opens an asyncio stream pair, sends the HTTP/2 preface and
waits for the server's SETTINGS, so that the very first ``request()`` already knows the
server's limits. ``Client.request(headers)`` returns an async context manager: entering it
waits (FIFO) for a free slot under the server's SETTINGS_MAX_CONCURRENT_STREAMS instead of
failing, then sends HEADERS; the body goes through ``stream.writer``, the response comes
through ``stream.response_headers()`` and ``stream.reader``. Leaving the block before the
stream completed resets it with CANCEL, so an abandoned request never holds a slot.

Rules kept here:
- The client fills ``:method`` (GET), ``:scheme`` (from ``ssl``), ``:authority`` (host:port)
  and ``:path`` (/) when the caller leaves them out; pseudo-headers are sent first. A plain
  CONNECT gets none of them (its ``:authority`` is the tunnel's target, RFC 9113 §8.5): use
  ``connect_tunnel(authority)``. An extended CONNECT (``:protocol``, RFC 8441) gets all four,
  and is refused with ``ExtendedConnectUnsupported`` unless the server's SETTINGS enabled it.
- Once the connection has ended, ``request()`` raises its ``ConnectionClosed``.
"""

from __future__ import annotations

import asyncio
import ssl as _ssl
import sys
from types import TracebackType
from typing import TYPE_CHECKING, Any

from . import _aio
from ._connection import Connection
from ._state import Recv, Send
from ._stream import Stream
from ._wire import Wire
from .config import Config, ConfigOptions
from .errors import ErrorCode
from .headers import PARTIAL_REQUEST, REQUEST, Headers, HeadersLike, check_request, to_wire
from .streams import H2StreamReader, H2StreamWriter
from .tls import check_alpn, client_ssl_context

if sys.version_info >= (3, 11):
    from typing import Unpack
elif TYPE_CHECKING:  # only type checkers need it on 3.10 (see aioh2s.config)
    from typing_extensions import Unpack

__all__ = ["Client", "RequestStream", "connect"]


class RequestStream:
    """One request/response exchange: ``reader``, ``writer`` and the response headers."""

    __slots__ = ("_s", "reader", "writer")

    def __init__(self, stream: Stream) -> None:
        self._s = stream
        #: The response body.
        self.reader = H2StreamReader(stream)
        #: The request body.
        self.writer = H2StreamWriter(stream)

    @property
    def stream_id(self) -> int:
        """The HTTP/2 stream id."""
        return self._s.id

    @property
    def informational(self) -> list[Headers]:
        """1xx responses received so far, in order."""
        return self._s.informational or []

    async def response_headers(self) -> Headers:
        """Wait for and return the final (non-1xx) response headers."""
        s = self._s
        while s.headers is None:
            s.check_recv()
            await s.wait_inbound()
        return s.headers


class _RequestContext:
    """``async with client.request(...) as stream`` (also awaitable for manual handling)."""

    def __init__(self, client: Client, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        self._client = client
        self._headers = headers
        self._end = end
        self._stream: RequestStream | None = None

    async def __aenter__(self) -> RequestStream:
        s = await self._client._conn.open_stream(self._headers, self._end)
        self._stream = RequestStream(s)
        return self._stream

    def __await__(self) -> Any:
        return self.__aenter__().__await__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._stream is not None:
            end_request(self._stream._s)


def end_request(s: Stream) -> None:
    """The application is done with request ``s``: whatever is left of it goes."""
    # Body bytes nobody read still hold connection window: release them.
    s.abandon()
    if s.closed:
        return
    if s.send is Send.ENDING and s.recv is Recv.ENDED:
        # The peer is done and our end is queued behind bytes still going out (drain()
        # returns at the low-water mark): they go on without us, as asyncio's
        # transport.close() flushes its buffer. Nothing is left to abandon.
        return
    # Leaving before the response completed (or with our side still open): the exchange
    # is abandoned; tell the server so it stops working on it.
    s.conn.reset_stream(s, ErrorCode.CANCEL)


class Client:
    """An HTTP/2 client connection. Create it with :func:`connect`."""

    def __init__(self, conn: Connection, authority: str, scheme: str) -> None:
        self._conn = conn
        self._authority = authority
        self._scheme = scheme
        self._defaults = (
            (b":method", b"GET"),
            (b":scheme", scheme.encode()),
            (b":authority", authority.encode()),
            (b":path", b"/"),
        )

    def __repr__(self) -> str:
        state = "closed" if self._conn.closed else "open"
        return f"<aioh2s.Client {self._scheme}://{self._authority} {state}>"

    def request(
        self, headers: HeadersLike | None = None, *, end_stream: bool = False
    ) -> _RequestContext:
        """Start a request: ``async with client.request(headers) as stream: ...``.

        ``end_stream=True`` sends a request without a body (the writer is then closed).
        Missing ``:method``, ``:scheme``, ``:authority`` and ``:path`` are filled in.
        """
        return _RequestContext(self, self._complete(headers), end_stream)

    def connect_tunnel(
        self, authority: str, headers: HeadersLike | None = None
    ) -> _RequestContext:
        """Open a CONNECT tunnel to ``authority`` (``"host:port"``) through this server.

        A plain CONNECT (RFC 9113 §8.5): the server (a proxy) opens a TCP connection to
        ``authority`` and answers 2xx once it is up; from then on ``stream.writer`` and
        ``stream.reader`` carry the tunnel's bytes, with flow control as on any stream.
        ``writer.write_eof()`` half-closes it (the proxy shuts its TCP write side), and
        ``reader.read()`` returns ``b""`` once the target closed its side. A non-2xx answer
        is the proxy's refusal (its body, if any, says why). A reset of the target's TCP
        connection arrives as :class:`aioh2s.StreamReset` with ``CONNECT_ERROR``. ``headers``
        adds regular fields (``proxy-authorization``, ...). For an extended CONNECT (RFC
        8441) pass ``:protocol`` to :meth:`request` instead::

            async with client.connect_tunnel("example.com:443") as tunnel:
                if (await tunnel.response_headers())[":status"] != "200": ...
                tunnel.writer.write(b"..."); await tunnel.writer.drain()
        """
        extra = to_wire(headers, PARTIAL_REQUEST) if headers is not None else []
        if any(n[0] == 0x3A for n, _ in extra):
            raise ValueError("connect_tunnel(headers=...) takes regular fields, not pseudo-headers")
        wire = to_wire([(":method", "CONNECT"), (":authority", authority)], REQUEST) + extra
        check_request(wire)
        return _RequestContext(self, wire, False)

    def _complete(self, headers: HeadersLike | None) -> list[tuple[bytes, bytes]]:
        wire = to_wire(headers, PARTIAL_REQUEST) if headers is not None else []
        have = {n for n, _ in wire if n[0] == 0x3A}  # ":" fields, all first (to_wire checks)
        if b":authority" not in have:
            # A Host given without :authority names the authority (RFC 9113 §8.3.1).
            host = next((v for n, v in wire if n == b"host"), None)
            if host is not None:
                wire.insert(len(have), (b":authority", host))
                have.add(b":authority")
        if len(have) < 4 or b":protocol" in have:
            method = next((v for n, v in wire if n == b":method"), b"GET")
            # RFC 9113 §8.5: a plain CONNECT has neither :scheme nor :path, and its
            # :authority is the tunnel's target, which only the caller can name.
            plain_connect = method == b"CONNECT" and b":protocol" not in have
            fill = [] if plain_connect else [f for f in self._defaults if f[0] not in have]
            wire[len(have):len(have)] = fill
        if headers is not None:  # our own defaults need no checking
            check_request(wire)
        return wire

    async def ping(self, timeout: float | None = None) -> float:
        """Send a PING and return the round-trip time in seconds."""
        return await self._conn.ping(timeout)

    def is_closing(self) -> bool:
        """True once the connection ended or is ending (GOAWAY either way): reconnect."""
        return self._conn.closed or self._conn.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """The transport's extra info (``peername``, ``sockname``, ``ssl_object``, ...)."""
        return self._conn.get_extra_info(name, default)

    async def close(self, grace: float | None = None) -> None:
        """Close gracefully: GOAWAY(NO_ERROR), let open requests finish, then close.

        New requests fail at once with ``ConnectionClosed``. Requests still open after
        ``grace`` seconds (default: the ``grace`` option) are reset.
        """
        self._conn.start_close(grace)
        await self._conn.wait_closed()

    async def wait_closed(self) -> None:
        """Wait until the connection has ended, whoever ended it."""
        await self._conn.wait_closed()

    def abort(self) -> None:
        """Close at once: GOAWAY(NO_ERROR), open requests fail with ``ConnectionClosed``."""
        self._conn.close_now(ErrorCode.NO_ERROR)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def connect(
    host: str,
    port: int,
    *,
    ssl: _ssl.SSLContext | bool | None = None,
    server_hostname: str | None = None,
    config: Config | None = None,
    **options: Unpack[ConfigOptions],
) -> Client:
    """Open an HTTP/2 connection to ``host:port`` and return a :class:`Client`.

    ``ssl=None`` speaks h2c with prior knowledge; ``ssl=True`` uses
    :func:`aioh2s.client_ssl_context`; an ``SSLContext`` must offer ALPN ``h2``. ``options``
    are :class:`aioh2s.Config` fields (``stream_window=...``, ``handshake_timeout=...``),
    typed by :class:`aioh2s.ConfigOptions`: a misspelt name is a type error, and a
    ``TypeError`` at run time.

    Every failure is an :class:`aioh2s.ConnectError` (an ``H2Error`` and an ``OSError``) that
    names ``host:port`` and the stage that failed (DNS lookup, TCP connect, TLS handshake, ALPN,
    HTTP/2 handshake), with the original error as ``__cause__``; ``handshake_timeout`` bounds
    the TCP connect and TLS handshake together, then the wait for the server's SETTINGS, and
    either running out raises :class:`aioh2s.ConnectTimeout` (a ``ConnectError`` and a
    ``TimeoutError``).
    Cancelling ``connect()`` (or timing it out with ``asyncio.wait_for``) raises
    ``CancelledError`` as usual, and closes the socket and ends the connection's task first.
    """
    # Imported here so that this function owns everything it needs (see the report of issue 10).
    import socket

    from .errors import ConnectError, ConnectionClosed, ConnectTimeout, H2Error

    cfg = Config.from_options(config, **options)
    ctx: _ssl.SSLContext | None
    if ssl is True:
        ctx = client_ssl_context()
    elif ssl is False or ssl is None:
        ctx = None
    else:
        ctx = ssl
    where = f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
    loop = asyncio.get_running_loop()
    timeout = cfg.handshake_timeout
    kwargs: dict[str, Any] = {}
    if ctx is not None:
        kwargs["ssl"] = ctx
        kwargs["server_hostname"] = server_hostname if server_hostname is not None else host
        if timeout is not None:
            kwargs["ssl_handshake_timeout"] = timeout
    # asyncio calls the protocol factory once the TCP connection is up, before any TLS
    # handshake: so we know how far it got.
    stage = "TCP connect"

    def make_protocol() -> Wire:
        nonlocal stage
        if ctx is not None:
            stage = "TLS handshake"
        return Wire(cfg.read_size)

    try:
        opening = loop.create_connection(make_protocol, host, port, **kwargs)
        transport, protocol = await _aio.wait_for(
            opening, timeout, orphan=lambda pair: pair[0].abort()
        )
    except (OSError, asyncio.TimeoutError) as e:  # ssl.SSLError and socket.gaierror included
        if isinstance(e, asyncio.TimeoutError) and not e.args:  # from wait_for()
            raise ConnectTimeout(
                f"cannot connect to {where}: {stage} timed out after {timeout} s", timeout
            ) from e
        if isinstance(e, socket.gaierror):
            why = f"cannot resolve {host!r}: {e}"
        else:
            why = f"{stage} failed: {str(e) or type(e).__name__}"
        raise ConnectError(f"cannot connect to {where}: {why}") from e

    async def abandon(conn: Connection | None) -> bool:
        """Close what we give up on; wait until its socket is closed and its task ended.

        Survives cancellation: a cancel arriving meanwhile is remembered (the result is True)
        and the waiting goes on, bounded: after ``limit`` seconds the transport is aborted (a
        TLS close waits for the peer's close_notify), after twice that the wait is cancelled.
        """
        if conn is not None:
            conn.abort(ConnectionClosed("connect() gave up on the connection"), ErrorCode.NO_ERROR)
            waiter = asyncio.ensure_future(conn.wait_closed())
        else:
            transport.close()
            waiter = asyncio.ensure_future(protocol.wait_closed())
        limit = 1.0
        cancelled = False
        step = 0
        deadline = loop.time() + limit
        while not waiter.done():
            try:
                await asyncio.wait([waiter], timeout=max(0.0, deadline - loop.time()))
            except asyncio.CancelledError:
                cancelled = True
                continue
            if waiter.done():
                break
            step += 1
            if step == 1:
                transport.abort()
            elif step == 2:
                waiter.cancel()
            else:
                break  # a wait_closed() that ignores cancellation: nothing more we can do
            deadline = loop.time() + limit
        if waiter.done() and not waiter.cancelled():
            waiter.exception()  # retrieved: a close error is no news to anyone
        return cancelled

    conn: Connection | None = None
    try:
        if ctx is not None:
            check_alpn(protocol.get_extra_info("ssl_object"), where)
        conn = Connection(protocol, client=True, config=cfg)
        conn.start()
        await conn.wait_ready()
    except BaseException as e:
        if await abandon(conn) and not isinstance(e, asyncio.CancelledError):
            raise asyncio.CancelledError() from None
        if isinstance(e, H2Error) and not isinstance(e, ConnectError):
            # The peer closed, broke HTTP/2 or stayed silent before its SETTINGS arrived.
            text = f"cannot connect to {where}: HTTP/2 handshake failed: {e}"
            if isinstance(e, ConnectionClosed) and e.error_code == ErrorCode.SETTINGS_TIMEOUT:
                raise ConnectTimeout(text, timeout) from e
            raise ConnectError(text) from e
        raise
    authority = host if port in (80, 443) else f"{host}:{port}"
    if ":" in host and not host.startswith("["):
        authority = f"[{host}]" if port in (80, 443) else f"[{host}]:{port}"
    return Client(conn, authority, "https" if ctx is not None else "http")
