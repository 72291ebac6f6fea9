"""WebSockets over HTTP/2 (RFC 8441): RFC 6455 messages inside an extended CONNECT tunnel.

Theory of operation: an extended CONNECT with ``:protocol websocket`` that the server answers
2xx is a byte tunnel (``H2StreamReader``/``H2StreamWriter``), and the opening handshake *is*
that exchange (no ``Upgrade``, no ``Sec-WebSocket-Key``: RFC 8441 §5). What is left is RFC
6455 framing, which wsproto does without I/O (``wsproto.Connection``, the framing layer
alone). A :class:`WebSocket` wraps one tunnel:

- One reader task per WebSocket reads the tunnel, feeds wsproto, answers PINGs, joins
  fragments into messages and queues them. It stops reading while the queue holds
  ``max_message_size`` bytes or more, so the tunnel's flow control pauses the peer: a
  WebSocket holds at most about twice ``max_message_size`` plus the stream window, whatever
  the peer sends. A message over ``max_message_size`` fails the connection with 1009.
- ``receive()`` takes from the queue; a cancelled ``receive()`` loses no message. Messages
  that arrived before the peer's close frame are all delivered before ``receive()`` raises
  :class:`~aioh2s.WebSocketClosed`.
- ``send()`` writes one whole frame and waits on ``drain()``, so concurrent senders never
  interleave inside a frame and a slow peer slows the sender.
- The close handshake (RFC 6455 §7): whoever closes first sends a close frame and the other
  echoes it; each side then ends its half of the stream (END_STREAM). A server is closed at
  that point (a client that keeps its half open is reset with NO_ERROR once the handler
  returns); a client waits for the server's END_STREAM, as RFC 6455 §7.1.1 has a client wait
  for the server to close the TCP connection. A peer that breaks RFC
  6455 (an unmasked client frame, bad UTF-8, a reserved bit) gets a close frame with the RFC's
  code (1002, 1007) from wsproto's checks. Every wait for the peer during a close is bounded
  by ``close_timeout``; past it the stream is reset (CANCEL), so no close hangs.

Not supported: extensions (permessage-deflate offers are declined, which RFC 6455 allows, so
a browser sends uncompressed frames; compression would also need a bound on inflated size),
and sending one message as fragments.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl as _ssl
import time
from collections import deque
from collections.abc import Sequence
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

try:
    from wsproto.connection import Connection as _Framing
    from wsproto.connection import ConnectionState, ConnectionType
    from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
except ImportError as e:  # pragma: no cover - the extra is not installed
    raise ImportError(
        "aioh2s.websocket needs wsproto: pip install 'aioh2s[wsproto]'"
    ) from e

from .client import Client, RequestStream, end_request
from .client import connect as _connect
from .errors import ErrorCode, H2Error, WebSocketClosed, WebSocketRejected
from .headers import Headers, HeadersLike
from .streams import H2StreamReader, H2StreamWriter

__all__ = [
    "WebSocket",
    "WebSocketClosed",
    "WebSocketRejected",
    "accept",
    "connect",
    "is_websocket",
    "subprotocols",
]

#: Bytes read from the tunnel at a time.
_READ_SIZE = 64 * 1024
#: Codes an endpoint may put in a close frame (RFC 6455 §7.4.1; 3000-4999 for applications).
_SENDABLE = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})
#: How much of a refusal's body WebSocketRejected keeps.
_REJECT_BODY = 64 * 1024


def is_websocket(headers: Headers) -> bool:
    """True when request ``headers`` open a WebSocket (an extended CONNECT for ``websocket``)."""
    return headers.get(":method") == "CONNECT" and headers.get(":protocol") == "websocket"


def subprotocols(headers: Headers) -> list[str]:
    """The subprotocols a WebSocket request offers (``sec-websocket-protocol``), in order."""
    offered: list[str] = []
    for value in headers.getall("sec-websocket-protocol"):
        offered += [p.strip() for p in value.split(",") if p.strip()]
    return offered


def _check_close(code: int, reason: str) -> None:
    if not (code in _SENDABLE or 3000 <= code <= 4999):
        raise ValueError(f"close code {code} may not be sent (RFC 6455 §7.4)")
    if len(reason.encode("utf-8")) > 123:
        raise ValueError("a close reason takes at most 123 bytes of UTF-8 (RFC 6455 §5.5)")


class WebSocket:
    """One WebSocket over an HTTP/2 stream; make one with :func:`accept` or :func:`connect`.

    ``async with ws:`` closes it on the way out (1000, or 1011 after an exception);
    ``async for message in ws`` yields messages (``str`` or ``bytes``) until a normal close.
    """

    def __init__(
        self,
        reader: H2StreamReader,
        writer: H2StreamWriter,
        *,
        client: bool,
        subprotocol: str | None,
        max_message_size: int,
        close_timeout: float,
        on_closed: Any = None,
    ) -> None:
        if max_message_size < 1:
            raise ValueError("max_message_size must be at least 1")
        self._reader = reader
        self._writer = writer
        self._ws = _Framing(ConnectionType.CLIENT if client else ConnectionType.SERVER)
        self._loop = asyncio.get_running_loop()
        #: The subprotocol the server chose, or None.
        self.subprotocol = subprotocol
        self.max_message_size = max_message_size
        self.close_timeout = close_timeout
        self._on_closed = on_closed
        self._queue: deque[str | bytes] = deque()
        self._queued = 0
        self._room = asyncio.Event()
        self._room.set()
        self._waiter: asyncio.Future[None] | None = None
        self._pings: dict[bytes, tuple[asyncio.Future[float], float]] = {}
        self._local = False  # we sent the first close frame
        self._closed: WebSocketClosed | None = None  # no more messages will be queued
        self._discard = False  # past the close frames: read only to see the peer's END_STREAM
        self._timer: asyncio.TimerHandle | None = None
        self._task = self._loop.create_task(self._run())

    def __repr__(self) -> str:
        return f"<WebSocket stream_id={self._reader.stream_id} {self.state}>"

    # -- what the application sees ----------------------------------------------------------

    @property
    def state(self) -> str:
        """``"open"``, ``"closing"`` (a close frame was sent or received) or ``"closed"``."""
        if self._task.done():
            return "closed"
        return "open" if self._ws.state is ConnectionState.OPEN else "closing"

    @property
    def close_code(self) -> int | None:
        """The close code once the peer's close frame arrived (or 1006), else None."""
        return self._closed.code if self._closed is not None else None

    @property
    def close_reason(self) -> str | None:
        """The close reason that goes with :attr:`close_code`."""
        return self._closed.reason if self._closed is not None else None

    @property
    def reader(self) -> H2StreamReader:
        """The stream underneath (its request or response headers, its stream id)."""
        return self._reader

    @property
    def writer(self) -> H2StreamWriter:
        """The stream's writer (``writer.connection`` is the HTTP/2 connection)."""
        return self._writer

    async def send(self, message: str | bytes | bytearray | memoryview) -> None:
        """Send one message, text for ``str``, binary otherwise, and wait on ``drain()``.

        Raises :class:`~aioh2s.WebSocketClosed` once a close frame was sent or received (the
        peer would not read it); a cancelled ``send()`` has queued the whole message.
        """
        if not isinstance(message, (str, bytes, bytearray, memoryview)):
            raise TypeError(f"a message is str or bytes-like, not {type(message).__name__}")
        self._check_open()
        if isinstance(message, memoryview):
            message = message.tobytes()
        kind = TextMessage if isinstance(message, str) else BytesMessage
        self._writer.write(self._ws.send(kind(data=message)))  # type: ignore[arg-type]
        await self._drain()

    async def receive(self) -> str | bytes:
        """The next message: ``str`` for text, ``bytes`` for binary.

        Raises :class:`~aioh2s.WebSocketClosed` after the last message, once the WebSocket
        closed. Cancel-safe: a message is taken only when this returns.
        """
        if self._waiter is not None:
            raise RuntimeError("receive() called while another task is waiting for a message")
        while not self._queue:
            if self._closed is not None:
                raise self._closed_error()
            fut = self._waiter = self._loop.create_future()
            try:
                await fut
            finally:
                self._waiter = None
        message = self._queue.popleft()
        self._queued -= len(message)
        if self._queued < self.max_message_size:
            self._room.set()
        return message

    def __aiter__(self) -> WebSocket:
        return self

    async def __anext__(self) -> str | bytes:
        try:
            return await self.receive()
        except WebSocketClosed as e:
            if e.clean:
                raise StopAsyncIteration from None
            raise

    async def ping(self, payload: bytes | None = None, timeout: float | None = 20.0) -> float:
        """Send a PING and return the seconds until its PONG came back.

        ``payload`` (at most 125 bytes) defaults to 4 random bytes. Raises ``TimeoutError``
        after ``timeout`` seconds and :class:`~aioh2s.WebSocketClosed` if the WebSocket closes
        first.
        """
        data = os.urandom(4) if payload is None else bytes(payload)
        if len(data) > 125:
            raise ValueError("a PING payload takes at most 125 bytes (RFC 6455 §5.5)")
        if data in self._pings:
            raise ValueError(f"a PING with payload {data!r} is already waiting for its PONG")
        self._check_open()
        fut: asyncio.Future[float] = self._loop.create_future()
        self._pings[data] = (fut, time.monotonic())
        self._writer.write(self._ws.send(Ping(payload=data)))
        try:
            await self._drain()
            return await asyncio.wait_for(fut, timeout)
        finally:
            if self._pings.get(data, (None,))[0] is fut:
                del self._pings[data]

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close: send a close frame, wait for the peer's and for its end of the stream.

        Every wait is bounded by ``close_timeout``, after which the stream is reset. Closing
        a closed WebSocket only waits for the end. Cancel-safe: the close goes on without the
        caller (and still ends within ``close_timeout``).
        """
        _check_close(code, reason)
        self._start_close(code, reason)
        await self.wait_closed()

    def _start_close(self, code: int, reason: str) -> None:
        if self._ws.state is ConnectionState.OPEN and self._closed is None:
            self._local = True
            if self._write(self._ws.send(CloseConnection(code=code, reason=reason))):
                self._arm_timer()
            self._room.set()  # a reader paused on a full queue reads on, to see the reply

    async def wait_closed(self) -> None:
        """Wait until the WebSocket is closed and its stream is over."""
        await asyncio.shield(self._task)

    def abort(self) -> None:
        """Reset the stream (CANCEL) now, without a close handshake."""
        self._writer.reset(ErrorCode.CANCEL)
        self._task.cancel()

    async def __aenter__(self) -> WebSocket:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(exc, asyncio.CancelledError):
            # Cancellation must be prompt: the close (1001, going away) goes on without us,
            # bounded by close_timeout like any other.
            self._start_close(1001, "")
            return
        try:
            await self.close(1000 if exc is None or isinstance(exc, WebSocketClosed) else 1011)
        except BaseException:
            self.abort()
            raise

    # -- the reader task ----------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._read_frames()
        except H2Error as e:
            self._ended(e)
        except asyncio.CancelledError:
            self._ended(None)
        except Exception as e:
            # Not the peer's doing (the application read the stream under us, say): the
            # WebSocket is over, and receive() raises it as the cause of a 1011.
            if self._closed is None:
                self._closed = WebSocketClosed(1011, f"the WebSocket failed: {e!r}", local=True)
                self._closed.__cause__ = e
            if not self._writer.is_closing():
                self._writer.reset(ErrorCode.INTERNAL_ERROR)
        finally:
            if self._timer is not None:
                self._timer.cancel()
            if self._closed is None:  # (an error of our own: fail what waits, all the same)
                self._closed = WebSocketClosed(1006, "the WebSocket ended abnormally", self._local)
            self._wake()
            for fut, _ in self._pings.values():
                if not fut.done():
                    fut.set_exception(self._closed_error())
                    fut.exception()  # a ping nobody awaits any more must not log
            self._pings.clear()
            if not self._writer.is_closing():
                self._writer.reset(ErrorCode.CANCEL)
            if self._on_closed is not None:  # a client's: its stream, its own connection
                on_closed, self._on_closed = self._on_closed, None
                with contextlib.suppress(H2Error, OSError):
                    await on_closed()

    async def _read_frames(self) -> None:
        ws = self._ws
        parts: list[Any] = []
        size = 0
        while True:
            if not self._room.is_set() and ws.state is ConnectionState.OPEN:
                # (Once we sent a close frame we read on, to see the peer's: see _queue_message.)
                await self._room.wait()
            data = await self._reader.read(_READ_SIZE)
            if not data:
                if self._closed is None:
                    self._ended(None, "the peer ended the stream without a close frame")
                self._end_our_side()
                return
            if self._discard:
                continue  # after the close frames RFC 6455 §5.5.1 has the peer send nothing
            ws.receive_data(data)
            wrote = False
            for event in ws.events():
                if isinstance(event, (TextMessage, BytesMessage)):
                    size += len(event.data.encode() if isinstance(event.data, str) else event.data)
                    if size > self.max_message_size:
                        self._fail(1009, f"message over {self.max_message_size} bytes")
                        break
                    parts.append(event.data)
                    if event.message_finished:
                        text = isinstance(event, TextMessage)
                        self._queue_message("".join(parts) if text else b"".join(parts))
                        parts, size = [], 0
                elif isinstance(event, Ping):
                    if ws.state is ConnectionState.OPEN:
                        wrote = self._write(ws.send(event.response()))
                elif isinstance(event, Pong):
                    self._pong(bytes(event.payload))
                elif isinstance(event, CloseConnection):
                    if ws.state in (ConnectionState.OPEN, ConnectionState.LOCAL_CLOSING):
                        # wsproto reports a frame that broke RFC 6455 as a close event of
                        # its own, leaving the state as it was: we fail the connection.
                        self._fail(event.code, event.reason or "")
                        break
                    if ws.state is ConnectionState.REMOTE_CLOSING:
                        self._write(ws.send(event.response()))
                    self._closed = WebSocketClosed(event.code, event.reason or "", self._local)
                    self._discard = True
                    self._end_our_side()
                    self._arm_timer()
                    self._wake()
                    break
            if wrote:
                await self._drain()  # a PING flood pauses our reading, not our memory
            if self._discard and not ws.client:
                # A server is done once the close frames are exchanged (or it failed the
                # connection) and its END_STREAM is queued: RFC 6455 §7.1.1 has the server
                # close first. A client still open is reset with NO_ERROR when the handler
                # returns (RFC 9113 §8.1), so a proxy that never ends its side costs nothing.
                return

    def _queue_message(self, message: str | bytes) -> None:
        if self._queued >= self.max_message_size and self._ws.state is not ConnectionState.OPEN:
            # Only after our close frame (we stop reading while this much is queued): the
            # application asked to close and is not reading, so what the peer still sends
            # before its close frame is dropped rather than held.
            return
        self._queue.append(message)
        self._queued += len(message)
        if self._queued >= self.max_message_size:
            self._room.clear()
        self._wake()

    def _fail(self, code: int, reason: str) -> None:
        """The peer broke RFC 6455: send close ``code``, end our side, await its END_STREAM."""
        if self._ws.state is ConnectionState.OPEN:
            self._local = True
            self._write(self._ws.send(CloseConnection(code=code, reason=reason)))
        self._closed = WebSocketClosed(code, reason, local=True)
        self._discard = True
        self._end_our_side()
        self._arm_timer()
        self._wake()

    def _ended(self, cause: BaseException | None, why: str = "") -> None:
        if self._closed is None:
            err = WebSocketClosed(1006, why or "the WebSocket's stream ended", self._local)
            err.__cause__ = cause
            self._closed = err

    def _write(self, frame: bytes) -> bool:
        # Our side may have been ended under us (a handler returned with the WebSocket open).
        if self._writer.is_closing():
            return False
        self._writer.write(frame)
        return True

    def _end_our_side(self) -> None:
        if not self._writer.is_closing():
            self._writer.write_eof()

    def _arm_timer(self) -> None:
        if self._timer is None and not self._task.done():
            self._timer = self._loop.call_later(self.close_timeout, self._close_expired)

    def _close_expired(self) -> None:
        # The peer did not finish the close handshake (or its END_STREAM) in time.
        self._ended(None, f"the peer did not finish closing within {self.close_timeout} s")
        if not self._writer.is_closing() or not self._reader.at_eof():
            self._writer.reset(ErrorCode.CANCEL)
        self._task.cancel()

    def _pong(self, payload: bytes) -> None:
        if payload not in self._pings:
            return  # unsolicited (a heartbeat): RFC 6455 §5.5.3 says no reply
        # A PONG answers its PING and every earlier one (RFC 6455 §5.5.3).
        now = time.monotonic()
        for key in list(self._pings):
            fut, sent = self._pings.pop(key)
            if not fut.done():
                fut.set_result(now - sent)
            if key == payload:
                break

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _drain(self) -> None:
        try:
            await self._writer.drain()
        except H2Error as e:
            self._ended(e)
            raise self._closed_error() from e

    def _check_open(self) -> None:
        # Open means no close frame either way and the stream still taking our bytes.
        if self._closed is not None or self._ws.state is not ConnectionState.OPEN:
            raise self._closed_error()
        if self._writer.is_closing():
            self._ended(None, "the WebSocket's stream ended")
            raise self._closed_error()

    def _closed_error(self) -> WebSocketClosed:
        c = self._closed
        if c is None:  # closing: our close frame went out, the peer's has not come
            return WebSocketClosed(1006, "the WebSocket is closing", local=True)
        err = WebSocketClosed(c.code, c.reason, c.local)  # a fresh one per raise (tracebacks)
        err.__cause__ = c.__cause__
        return err


# -- opening --------------------------------------------------------------------------------


async def accept(
    reader: H2StreamReader,
    writer: H2StreamWriter,
    *,
    subprotocol: str | None = None,
    headers: HeadersLike | None = None,
    max_message_size: int = 4 * 1024 * 1024,
    close_timeout: float = 10.0,
) -> WebSocket:
    """Server side: answer a WebSocket request (see :func:`is_websocket`) with 200.

    The server must run with ``enable_connect_protocol=True``. ``subprotocol`` must be one the
    client offered (:func:`subprotocols`); ``headers`` adds response fields. A request with a
    ``sec-websocket-version`` other than 13 is answered 400 (with ``sec-websocket-version:
    13``, RFC 6455 §4.4) and raises :class:`~aioh2s.WebSocketRejected`. Misuse (not a
    WebSocket request, headers already sent, a subprotocol not offered) raises ``ValueError``
    before anything is sent.
    """
    request = reader.headers
    if not is_websocket(request):
        raise ValueError("not a WebSocket request (extended CONNECT with :protocol websocket)")
    if writer.headers_sent:
        raise ValueError("the response headers were sent already")
    if subprotocol is not None and subprotocol not in subprotocols(request):
        raise ValueError(f"subprotocol {subprotocol!r} was not offered by the client")
    if max_message_size < 1:
        raise ValueError("max_message_size must be at least 1")
    response: list[tuple[str, str]] = [(":status", "200")]
    if subprotocol is not None:
        response.append(("sec-websocket-protocol", subprotocol))
    extra = list(Headers(headers).items()) if headers is not None else []
    if request.get("sec-websocket-version") != "13":
        writer.send_headers(
            [(":status", "400"), ("sec-websocket-version", "13"), ("content-length", "0")],
            end_stream=True,
        )
        raise WebSocketRejected(400, Headers({"sec-websocket-version": "13"}), b"")
    reader.allow_slow_body()  # a WebSocket may stay silent for hours (also: exempt anyway)
    writer.send_headers(response + extra)
    return WebSocket(
        reader,
        writer,
        client=False,
        subprotocol=subprotocol,
        max_message_size=max_message_size,
        close_timeout=close_timeout,
    )


class _Opening:
    """``async with websocket.connect(...) as ws`` (also ``ws = await websocket.connect(...)``)."""

    def __init__(self, opener: Any) -> None:
        self._opener = opener
        self._ws: WebSocket | None = None

    def __await__(self) -> Any:
        return self._opener.__await__()

    async def __aenter__(self) -> WebSocket:
        self._ws = await self._opener
        return self._ws

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._ws is not None
        await self._ws.__aexit__(exc_type, exc, tb)


def connect(
    target: Client | str,
    path: str | None = None,
    *,
    subprotocols: Sequence[str] = (),
    headers: HeadersLike | None = None,
    ssl: _ssl.SSLContext | bool | None = None,
    open_timeout: float | None = 10.0,
    max_message_size: int = 4 * 1024 * 1024,
    close_timeout: float = 10.0,
) -> _Opening:
    """Client side: open a WebSocket with an extended CONNECT (RFC 8441).

    ``target`` is a :class:`aioh2s.Client` (``path`` defaults to ``"/"``) or a URL,
    ``wss://host[:port]/path`` (TLS, ALPN h2; ``ssl`` may give the context) or
    ``ws://host[:port]/path`` (h2c with prior knowledge); a URL opens a connection of its own,
    closed with the WebSocket. The server must have enabled extended CONNECT, else
    :class:`~aioh2s.ExtendedConnectUnsupported`; a non-2xx answer raises
    :class:`~aioh2s.WebSocketRejected`. ``open_timeout`` bounds the wait for the answer
    (``TimeoutError``). Use it as ``async with websocket.connect(url) as ws:`` or ``ws =
    await websocket.connect(url)``.
    """
    for p in subprotocols:
        if not p or any(c in p for c in ", \t"):
            raise ValueError(f"bad subprotocol name {p!r}")
    if max_message_size < 1:
        raise ValueError("max_message_size must be at least 1")
    extra = list(Headers(headers).items()) if headers is not None else []
    if any(n.startswith(":") for n, _ in extra):
        raise ValueError("headers= takes regular fields; the pseudo-headers are made here")
    options = {"max_message_size": max_message_size, "close_timeout": close_timeout}
    if isinstance(target, Client):
        return _Opening(
            _open(target, path or "/", subprotocols, extra, open_timeout, None, options)
        )
    parts = urlsplit(target)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"not a ws:// or wss:// URL: {target!r}")
    if path is not None:
        raise ValueError("path comes from the URL when target is one")
    tls = parts.scheme == "wss"
    port = parts.port or (443 if tls else 80)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")

    async def dial() -> WebSocket:
        client = await _connect(parts.hostname or "", port, ssl=(ssl or True) if tls else None)
        try:
            return await _open(
                client, resource, subprotocols, extra, open_timeout, client.close, options
            )
        except BaseException:
            await client.close(grace=0)
            raise

    return _Opening(dial())


async def _open(
    client: Client,
    path: str,
    offered: Sequence[str],
    extra_headers: list[tuple[str, str]],
    open_timeout: float | None,
    close_client: Any,
    options: dict[str, Any],
) -> WebSocket:
    request: list[tuple[str, str]] = [
        (":method", "CONNECT"),
        (":protocol", "websocket"),
        (":path", path),
        ("sec-websocket-version", "13"),
    ]
    if offered:
        request.append(("sec-websocket-protocol", ", ".join(offered)))
    request += extra_headers
    stream: RequestStream = await client.request(request)
    try:
        response = await asyncio.wait_for(stream.response_headers(), open_timeout)
        status = int(response[":status"])
        if not 200 <= status < 300:
            body = await asyncio.wait_for(_some(stream.reader), open_timeout)
            raise WebSocketRejected(status, response, body)
        chosen = response.get("sec-websocket-protocol")
        if chosen is not None and chosen not in offered:
            raise WebSocketRejected(status, response, b"")  # RFC 6455 §4.1: fail it
    except BaseException:
        end_request(stream._s)
        raise

    async def closed() -> None:
        end_request(stream._s)
        if close_client is not None:
            await close_client()

    return WebSocket(
        stream.reader, stream.writer, client=True, subprotocol=chosen, on_closed=closed, **options
    )


async def _some(reader: H2StreamReader) -> bytes:
    body = bytearray()
    while len(body) < _REJECT_BODY:
        chunk = await reader.read(_REJECT_BODY - len(body))
        if not chunk:
            break
        body += chunk
    return bytes(body)
