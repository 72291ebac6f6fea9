"""One WebSocket over an HTTP/2 stream: the machinery behind :mod:`aioh2s.websocket`.

Theory of operation: an extended CONNECT for ``websocket`` answered 2xx is a byte tunnel
(``H2StreamReader``/``H2StreamWriter``) and the opening handshake is that exchange (RFC 8441
§5: no ``Upgrade``, no ``Sec-WebSocket-Key``). What is left is RFC 6455 framing, which wsproto
does without I/O (``wsproto.Connection``, its framing layer alone). :class:`WebSocket` wraps
one tunnel; :mod:`aioh2s.websocket` opens them.

- One reader task per WebSocket (``_run``) reads the tunnel, feeds wsproto, answers PINGs,
  joins fragments into messages and queues them. It stops reading while the queue holds
  ``max_message_size`` bytes or more (each message counted as the memory it takes, so empty
  or tiny messages count too), so the tunnel's flow control pauses the peer; a message is
  assembled as the bytes it came in, and one over ``max_message_size`` fails the connection
  with 1009. A WebSocket thus holds about twice ``max_message_size`` (text up to four times:
  a ``str`` with one astral character stores 4 bytes for each) plus the stream window.
- The reader task never waits on the stream's output: answering a PING it queues a PONG
  without ``drain()`` (waiting behind the application's own messages while the peer waits
  behind its own would stop both sides for good). PONGs queued behind our messages are
  bounded instead (``_MAX_PONG_BACKLOG``): past it a PING flood gets no more answers.
- ``receive()`` takes from the queue; a cancelled ``receive()`` loses no message. Messages
  that arrived before the peer's close frame are delivered before ``receive()`` raises
  :class:`~aioh2s.WebSocketClosed`, except those arriving after our own ``close()`` while
  ``max_message_size`` is already queued (the application said it was done; holding them
  would be memory without bound until the peer's close frame).
- ``send()`` writes one whole frame and waits on ``drain()``, so concurrent senders never
  interleave inside a frame and a slow peer slows the sender.
- The close handshake (RFC 6455 §7): whoever closes first sends a close frame and the other
  echoes it; each side then ends its half of the stream (END_STREAM). A server is closed at
  that point (a client that keeps its half open is reset with NO_ERROR once the handler
  returns); a client waits for the server's END_STREAM, as RFC 6455 §7.1.1 has a client wait
  for the server to close the TCP connection. A peer that breaks RFC 6455 (an unmasked client
  frame, bad UTF-8, a reserved bit) gets a close frame with the RFC's code (1002, 1007) from
  wsproto's checks. Every wait for the peer during a close is bounded by ``close_timeout``;
  past it the stream is reset (CANCEL), so no close hangs.
- The task always runs to its end (``abort()`` and the close timer reset the stream rather
  than cancel it), and its end settles everything: waiters, pings, and a client's own
  connection (``on_closed``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType

from wsproto.connection import Connection as _Framing
from wsproto.connection import ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

from .errors import ErrorCode, H2Error, WebSocketClosed
from .streams import H2StreamReader, H2StreamWriter

__all__ = ["WebSocket", "check_close", "check_options"]

#: Bytes read from the tunnel at a time.
_READ_SIZE = 64 * 1024
#: Codes an endpoint may put in a close frame: RFC 6455 §7.4.1 and the IANA registry, as far
#: as wsproto accepts them on receipt (not 1014), and 3000-4999 for applications.
_SENDABLE = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013})
#: PONG bytes that may wait behind our own messages before PINGs go unanswered.
_MAX_PONG_BACKLOG = 64 * 1024


def _charge(message: str | bytes) -> int:
    """What a queued message costs in memory (its object and its slot in the queue)."""
    return sys.getsizeof(message) + 8


def check_close(code: int, reason: str) -> None:
    """Raise before anything is sent if ``code`` and ``reason`` may not go in a close frame."""
    if not isinstance(code, int) or isinstance(code, bool):
        raise TypeError(f"a close code is an int, not {type(code).__name__}")
    if not isinstance(reason, str):
        raise TypeError(f"a close reason is a str, not {type(reason).__name__}")
    if not (code in _SENDABLE or 3000 <= code <= 4999):
        raise ValueError(f"close code {code} may not be sent (RFC 6455 §7.4)")
    if len(reason.encode("utf-8")) > 123:
        raise ValueError("a close reason takes at most 123 bytes of UTF-8 (RFC 6455 §5.5)")


def check_options(max_message_size: int, close_timeout: float) -> None:
    """Raise ``ValueError``/``TypeError`` for options a WebSocket cannot run with."""
    if not isinstance(max_message_size, int) or isinstance(max_message_size, bool):
        raise TypeError("max_message_size is an int (bytes)")
    if max_message_size < 1:
        raise ValueError("max_message_size must be at least 1")
    if not isinstance(close_timeout, (int, float)) or isinstance(close_timeout, bool):
        raise TypeError("close_timeout is a number of seconds (every close wait is bounded)")
    if not 0 < close_timeout < float("inf"):
        raise ValueError("close_timeout must be a positive, finite number of seconds")


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
        on_closed: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
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
        self._written = 0  # bytes we wrote to the stream: with its queue, what went out
        self._pongs: deque[int] = deque()  # where each PONG still queued ends, in _written
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
        self._write(self._ws.send(kind(data=message)))  # type: ignore[arg-type]
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
        self._queued -= _charge(message)
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
        if payload is not None and not isinstance(payload, (bytes, bytearray, memoryview)):
            raise TypeError(f"a PING payload is bytes-like, not {type(payload).__name__}")
        data = os.urandom(4) if payload is None else bytes(payload)
        if len(data) > 125:
            raise ValueError("a PING payload takes at most 125 bytes (RFC 6455 §5.5)")
        if data in self._pings:
            raise ValueError(f"a PING with payload {data!r} is already waiting for its PONG")
        self._check_open()
        fut: asyncio.Future[float] = self._loop.create_future()
        self._pings[data] = (fut, time.monotonic())
        self._write(self._ws.send(Ping(payload=data)))
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
        check_close(code, reason)
        self._start_close(code, reason)
        await self.wait_closed()

    def _start_close(self, code: int, reason: str) -> None:
        if self._ws.state is ConnectionState.OPEN and self._closed is None:
            self._local = True
            if self._write(self._ws.send(CloseConnection(code=code, reason=reason))):
                self._arm_timer()
            self._room.set()  # a reader paused on a full queue reads on, to see the reply

    async def wait_closed(self) -> None:
        """Wait until the WebSocket is closed and its stream is over (cancel-safe)."""
        await asyncio.wait({self._task})

    def abort(self) -> None:
        """Reset the stream (CANCEL) now, without a close handshake (close code 1006)."""
        self._stop("aborted by the application")

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
        # The message being received, as UTF-8 for text too: a fragment is at most what one
        # read brought, and joined bytes take no more room than they came in (a str of one
        # astral character takes 4 bytes for each of its characters).
        partial = bytearray()
        backlog = False  # frames left unparsed in wsproto's buffer when the queue filled up
        while True:
            if not self._room.is_set() and ws.state is ConnectionState.OPEN:
                # (Once we sent a close frame we read on, to see the peer's: see _queue_message.)
                await self._room.wait()
            if not backlog:
                data = await self._reader.read(_READ_SIZE)
                if not data:
                    if self._closed is None:
                        self._ended(None, "the peer ended the stream without a close frame")
                    self._end_our_side()
                    return
                if self._discard:
                    continue  # after the close frames RFC 6455 §5.5.1 has the peer send nothing
                ws.receive_data(data)
            backlog = False
            for event in ws.events():
                if isinstance(event, (TextMessage, BytesMessage)):
                    text = isinstance(event, TextMessage)
                    payload = event.data
                    partial += payload.encode() if isinstance(payload, str) else payload
                    if len(partial) > self.max_message_size:
                        self._fail(1009, f"message over {self.max_message_size} bytes")
                        break
                    if event.message_finished:
                        self._queue_message(partial.decode() if text else bytes(partial))
                        partial = bytearray()
                elif isinstance(event, Ping):
                    self._pong(event)
                elif isinstance(event, Pong):
                    self._ponged(bytes(event.payload))
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
                if not self._room.is_set() and ws.state is ConnectionState.OPEN:
                    # The queue is full: wsproto parses lazily, so the rest of this read
                    # waits as the bytes it came in (one read of tiny messages would
                    # otherwise queue some ten thousand objects at once).
                    backlog = True
                    break
            if self._discard and not ws.client:
                # A server is done once the close frames are exchanged (or it failed the
                # connection) and its END_STREAM is queued: RFC 6455 §7.1.1 has the server
                # close first. A client still open is reset with NO_ERROR when the handler
                # returns (RFC 9113 §8.1), so a proxy that never ends its side costs nothing.
                return

    def _queue_message(self, message: str | bytes) -> None:
        if self._queued >= self.max_message_size and self._ws.state is not ConnectionState.OPEN:
            # Only after our close frame (we stop reading while this much is queued, but must
            # read on to see the peer's close frame): the application asked to close and is
            # not reading, so what the peer still sends is dropped rather than held.
            return
        self._queue.append(message)
        self._queued += _charge(message)
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
        self._written += len(frame)
        return True

    def _pong(self, ping: Ping) -> None:
        """Answer a PING, unless PONGs still queued behind our messages hold too much.

        The reader never waits on the stream (it would wait behind the application's own
        messages while the peer waits on ours: both sides stuck). A peer that floods PINGs
        without reading gets no more answers past _MAX_PONG_BACKLOG, which RFC 6455 §5.5.3
        allows (a PONG may answer only the latest PING).
        """
        if self._ws.state is not ConnectionState.OPEN:
            return
        sent = self._written - self._writer._s.out_size
        pongs = self._pongs
        while pongs and pongs[0] <= sent:
            pongs.popleft()
        if pongs and pongs[-1] - sent > _MAX_PONG_BACKLOG:
            return
        if self._write(self._ws.send(ping.response())):
            pongs.append(self._written)

    def _end_our_side(self) -> None:
        if not self._writer.is_closing():
            self._writer.write_eof()

    def _arm_timer(self) -> None:
        if self._timer is None and not self._task.done():
            self._timer = self._loop.call_later(self.close_timeout, self._close_expired)

    def _close_expired(self) -> None:
        # The peer did not finish the close handshake (or its END_STREAM) in time.
        self._stop(f"the peer did not finish closing within {self.close_timeout} s")

    def _stop(self, why: str) -> None:
        # The reader task ends on its own: the reset makes its read raise, and a reader
        # paused on a full queue is let go. (Cancelling it instead could cancel it before
        # it ever ran, so that nothing it owes, 1006 included, would happen.)
        self._ended(None, why)
        self._writer.reset(ErrorCode.CANCEL)
        self._room.set()

    def _ponged(self, payload: bytes) -> None:
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
