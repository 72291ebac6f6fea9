"""``H2StreamReader`` and ``H2StreamWriter``: one HTTP/2 stream as an asyncio stream pair.

Theory of operation: both are thin views of one ``_connection.Stream``, which holds the state.
They mirror :class:`asyncio.StreamReader` and :class:`asyncio.StreamWriter` method for method
where the meaning carries over, so code written for ``asyncio.open_connection`` reads the same:

- ``read``/``readexactly``/``readline``/``readuntil``/``at_eof`` behave as asyncio's, raising
  ``asyncio.IncompleteReadError`` and ``asyncio.LimitOverrunError`` in the same cases. Each byte
  they hand out is granted back to the peer as flow-control window, which is why a slow reader
  slows the sender instead of growing a buffer.
- ``readline``/``readuntil`` have a limit (``read_limit``, default 64 KiB) like asyncio's, but it
  is clamped to half the stream window: a separator that never comes would otherwise fill the
  window, stop the peer, and wait forever. While they wait they grant window for the partial
  line, so partial lines on many streams cannot use up the connection window.
- ``async for chunk in reader`` yields body *chunks* as they arrive (asyncio's StreamReader
  yields lines; an HTTP body has no lines to speak of). Use ``readline()`` for lines.
- ``write``/``writelines`` never block and never raise for a full window; ``drain()`` waits for
  the peer's window and the transport, and raises the stream's error (``StreamReset``,
  ``ConnectionClosed``). ``write_eof()`` ends our side; ``close()`` does too (a stream has no
  transport of its own to close) and ``wait_closed()`` waits until our side has ended, as
  asyncio's does for its transport: it does not wait for the peer to finish sending.
- Every await is cancel-safe: a cancelled or timed-out read loses no byte (what it had
  buffered stays for the next read), and a cancelled ``drain()`` loses nothing queued.
- Misuse raises before anything changes (the state tables in ``_state.py``): a forbidden
  trailer raises ``LocalProtocolError`` and the stream can still be ended properly.

HTTP/2 additions: ``reader.headers``/``reader.trailers``, ``writer.send_headers``,
``writer.send_trailers`` and ``writer.reset``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ._connection import Connection
from ._state import Recv, Send
from ._stream import Stream
from .errors import ErrorCode
from .headers import Headers, HeadersLike

__all__ = ["ConnectionHandle", "H2StreamReader", "H2StreamWriter"]


class ConnectionHandle:
    """The connection a stream belongs to, as a handler sees it (``writer.connection``)."""

    __slots__ = ("_c",)

    def __init__(self, conn: Connection) -> None:
        self._c = conn

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ConnectionHandle) and other._c is self._c

    def __hash__(self) -> int:
        return id(self._c)

    async def ping(self, timeout: float | None = None) -> float:
        """Send PING to the peer and return the round-trip time in seconds."""
        return await self._c.ping(timeout)

    def is_closing(self) -> bool:
        """True once the connection is shutting down (GOAWAY sent or received) or closed.

        A long-running handler (a stream of events, a long poll) should check this and wrap up.
        """
        return self._c.closing or self._c.closed

    def close(self, grace: float | None = None) -> None:
        """Start a graceful close of the connection (GOAWAY; open streams get ``grace`` s)."""
        self._c.start_close(grace)

    async def wait_closed(self) -> None:
        """Wait until the connection is closed."""
        await self._c.wait_closed()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """The transport's extra info (``peername``, ``sockname``, ``ssl_object``, ...)."""
        return self._c.get_extra_info(name, default)


class H2StreamReader:
    """The receiving half of one HTTP/2 stream (request body on a server, response on a client)."""

    __slots__ = ("_s",)

    def __init__(self, stream: Stream) -> None:
        self._s = stream

    def __repr__(self) -> str:
        s = self._s
        return f"<H2StreamReader stream_id={s.id} {s.recv.name.lower()} buffered={len(s.buf)}>"

    @property
    def stream_id(self) -> int:
        """The HTTP/2 stream id."""
        return self._s.id

    @property
    def headers(self) -> Headers:
        """Request headers (server side) or final response headers (client side, once received).

        On the client, await ``stream.response_headers()`` first.
        """
        h = self._s.headers
        if h is None:
            raise RuntimeError("no headers received yet: await stream.response_headers() first")
        return h

    @property
    def trailers(self) -> Headers | None:
        """Trailers sent by the peer, set when the body ends; None if there were none."""
        return self._s.trailers

    def exception(self) -> BaseException | None:
        """The error that ended this direction, if any (as ``asyncio.StreamReader.exception``)."""
        return self._s.recv_error

    def at_eof(self) -> bool:
        """True when the body ended and every byte was read."""
        return self._s.recv is Recv.ENDED and not self._s.buf

    def allow_slow_body(self) -> None:
        """Exempt this request body from the server's ``min_body_rate``.

        For streams whose body pauses by design (gRPC streaming calls, long-lived uploads,
        a plain CONNECT tunnel: call it before answering 2xx): waiting for their bytes no
        longer counts against the connection. Only the application can tell: a request
        header the client chooses would let any client out of the limit, which is why only
        an *extended* CONNECT (``:protocol``, which the server enabled with
        ``enable_connect_protocol``) is exempt by itself once the handler answered it with
        2xx. A read already waiting is exempt from then on. Does nothing on a client.
        """
        self._s.allow_slow()

    async def read(self, n: int = -1) -> bytes:
        """Read up to ``n`` bytes; with ``n < 0`` read until the end of the body.

        Returns ``b""`` at the end of the body. Raises ``StreamReset`` or ``ConnectionClosed``
        if the stream died. ``read(-1)`` grants window as the body arrives and keeps it
        buffered until the end, so a cancelled call loses nothing.
        """
        s = self._s
        if n < 0:
            await s.wait_buffered(None)
            return s.consume(len(s.buf))
        s.check_recv()
        if n == 0:
            return b""
        await s.wait_readable()
        return s.consume(n)

    async def readexactly(self, n: int) -> bytes:
        """Read exactly ``n`` bytes; ``asyncio.IncompleteReadError`` if the body ends first.

        Cancel-safe as asyncio's: the bytes stay buffered until all ``n`` are there. The window
        for them is granted while it waits, so ``n`` may exceed the stream window.
        """
        if n < 0:
            raise ValueError("readexactly size can not be less than zero")
        s = self._s
        await s.wait_buffered(n)
        if len(s.buf) < n:
            raise asyncio.IncompleteReadError(s.consume(len(s.buf)), n)
        return s.consume(n)

    async def readline(self) -> bytes:
        r"""Read one line ending in ``b"\n"``, as ``asyncio.StreamReader.readline``.

        At the end of the body a partial line is returned; ``b""`` means EOF. A line longer
        than the limit raises ``ValueError`` after discarding it, as asyncio does.
        """
        sep = b"\n"
        try:
            return await self.readuntil(sep)
        except asyncio.IncompleteReadError as e:
            return e.partial
        except asyncio.LimitOverrunError as e:
            s = self._s
            if s.buf.startswith(sep, e.consumed):
                s.consume(e.consumed + len(sep))
            else:
                s.consume(len(s.buf))
            raise ValueError(e.args[0]) from None

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        """Read up to and including ``separator``, as ``asyncio.StreamReader.readuntil``.

        ``asyncio.IncompleteReadError`` if the body ends first (the partial data is consumed);
        ``asyncio.LimitOverrunError`` if the limit is reached first (the data stays buffered).
        """
        seplen = len(separator)
        if seplen == 0:
            raise ValueError("Separator should be at least one-byte string")
        s = self._s
        limit = s.conn.config.effective_read_limit
        offset = 0
        while True:
            await s.wait_readable()
            buf = s.buf
            buflen = len(buf)
            if buflen - offset >= seplen:
                isep = buf.find(separator, offset)
                if isep != -1:
                    if isep > limit:
                        raise asyncio.LimitOverrunError(
                            "Separator is found, but chunk is longer than limit", isep
                        )
                    return s.consume(isep + seplen)
                offset = buflen + 1 - seplen
                if offset > limit:
                    raise asyncio.LimitOverrunError(
                        "Separator is not found, and chunk exceed the limit", offset
                    )
            if s.recv is Recv.ENDED:
                raise asyncio.IncompleteReadError(s.consume(buflen), None)
            # Grant window for the partial line: kept unacknowledged, partial lines on many
            # streams would use up the *connection* window and no separator could arrive.
            # The limit (at most half the stream window) still bounds what one stream holds.
            s.grant_buffered()
            await s.wait_inbound()

    def __aiter__(self) -> H2StreamReader:
        return self

    async def __anext__(self) -> bytes:
        """The next body chunk as it arrived (not a line); stops at the end of the body."""
        s = self._s
        await s.wait_readable()
        if s.buf:
            return s.consume(len(s.buf))
        raise StopAsyncIteration


class H2StreamWriter:
    """The sending half of one HTTP/2 stream (response on a server, request body on a client)."""

    __slots__ = ("_s",)

    def __init__(self, stream: Stream) -> None:
        self._s = stream

    def __repr__(self) -> str:
        s = self._s
        return f"<H2StreamWriter stream_id={s.id} {s.send.name.lower()} queued={s.out_size}>"

    @property
    def stream_id(self) -> int:
        """The HTTP/2 stream id."""
        return self._s.id

    @property
    def headers_sent(self) -> bool:
        """True once final headers were sent (the client's request headers count)."""
        return self._s.headers_sent

    def send_headers(self, headers: HeadersLike, end_stream: bool = False) -> None:
        """Send response headers (server) — or 1xx informational ones, repeatable.

        Accepts a mapping or an iterable of ``(name, value)`` pairs, ``str`` or ``bytes``; names
        are lowercased. With ``end_stream=True`` the response has no body. Invalid headers
        raise ``LocalProtocolError`` and change nothing.
        """
        self._s.send_headers(headers, end_stream)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data`` to send; never blocks. Follow with ``await drain()``.

        On a stream that was reset the bytes are dropped, as asyncio drops writes to a closed
        transport; the next ``drain()`` raises the reset.
        """
        self._s.write(data)

    def writelines(self, data: Any) -> None:
        """Queue each bytes-like item of the iterable ``data``.

        All items are checked first: a bad one raises ``TypeError`` with nothing queued.
        """
        chunks = list(data)
        for chunk in chunks:
            if not isinstance(chunk, (bytes, bytearray, memoryview)):
                raise TypeError(f"data must be bytes-like, not {type(chunk).__name__}")
        for chunk in chunks:
            self._s.write(chunk)

    async def drain(self) -> None:
        """Wait until the queued bytes fell to the low-water mark and the transport flows.

        Always yields to the event loop. Raises ``StreamReset`` if the stream was reset,
        ``ConnectionClosed`` if the connection died: the peer will not get what is still
        queued.
        """
        await self._s.drain()

    def can_write_eof(self) -> bool:
        """Always True: HTTP/2 streams can be half-closed."""
        return True

    def write_eof(self) -> None:
        """End our side of the stream (END_STREAM) after everything queued so far."""
        self._s.end()

    def send_trailers(self, trailers: HeadersLike) -> None:
        """End our side of the stream with trailing headers, after everything queued so far.

        Invalid trailers raise ``LocalProtocolError`` before anything changes.
        """
        self._s.end(trailers)

    def reset(self, error_code: int = ErrorCode.CANCEL) -> None:
        """Abort the stream with RST_STREAM(``error_code``); queued bytes are dropped."""
        self._s.conn.reset_stream(self._s, error_code)

    def close(self) -> None:
        """End our side if still open (as ``write_eof()``); idempotent.

        Before any final headers were sent there is nothing to end gracefully, so the stream
        is reset with CANCEL instead.
        """
        s = self._s
        if s.send is Send.IDLE:
            self.reset(ErrorCode.CANCEL)
        elif s.send is Send.OPEN:
            s.end()

    def is_closing(self) -> bool:
        """True once our side was ended (or is ending) or the stream died."""
        return self._s.send is not Send.IDLE and self._s.send is not Send.OPEN

    async def wait_closed(self) -> None:
        """Wait until our side has ended (END_STREAM handed over).

        Like asyncio's, it does not wait for the peer: a handler can ``close()`` and
        ``await wait_closed()`` while the client is still sending. Raises the stream's error
        if it was reset before our side ended.
        """
        await self._s.wait_sent()

    @property
    def connection(self) -> ConnectionHandle:
        """The connection this stream belongs to (ping it, see whether it is closing)."""
        return ConnectionHandle(self._s.conn)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """``"stream_id"``, or the connection's transport info (peername, sockname, ssl_object…)."""
        if name == "stream_id":
            return self._s.id
        return self._s.conn.get_extra_info(name, default)
