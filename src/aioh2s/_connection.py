"""The protocol machinery: one HTTP/2 connection driven over asyncio streams.

Theory of operation
-------------------
A :class:`Connection` owns exactly one ``h2.connection.H2Connection`` and is the only code that
touches it. Its *reader task* (:meth:`Connection.run`) reads bytes from the
``asyncio.StreamReader``, feeds them to h2, dispatches the resulting events to per-stream
:class:`Stream` objects, and then flushes once. Everything the application does (send headers,
write, end, reset) changes a ``Stream`` and asks for a flush; flushes are coalesced with
``loop.call_soon`` so many writes in one loop iteration become one ``transport.write`` (bulk
data goes out in 64 KiB writes, so h2's output buffer never grows into a fresh mmap per flush).

A :class:`Stream` holds all state of one HTTP/2 stream: its inbound buffer and outbound queue,
what was sent and received, its error, and the futures the application waits on. The public
``H2StreamReader``/``H2StreamWriter`` (streams.py) are thin views of it. Client and server share
everything here; they differ in who opens streams and in what the first HEADERS mean.

Flow control rules (DESIGN.md §2):
- ``write()`` only queues. The flush step moves queued bytes into DATA frames round-robin over
  the streams that have data, one frame per stream per turn, limited by the stream and
  connection windows and by how much the transport already holds (``transport_high_water``).
- Inbound DATA is buffered and acknowledged to h2 (which batches WINDOW_UPDATEs) only when the
  application consumes it; padding and data for abandoned streams are acknowledged at once.
- While the transport holds more than ``transport_high_water`` bytes the reader task stops
  reading, so a peer that does not read cannot make us queue replies without bound.

Failure rules: any exception in the reader task ends the connection. ``_fail`` records one
``ConnectionClosed`` as the connection's error, fails every stream with it, wakes every waiter
and closes the transport. Nothing waits forever on a dead connection.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import h2
import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.frame_buffer
import h2.settings
import hpack
import hyperframe.frame
from h2.connection import _decode_headers as _h2_decode_headers
from h2.errors import ErrorCodes
from h2.stream import StreamClosedBy

from . import _h2headers, _h2patch
from .config import Config
from .errors import ConnectionClosed, ConnectionTerminated, ProtocolError, StreamReset
from .headers import REQUEST, RESPONSE, TRAILERS, Headers, HeadersLike, remember, to_wire

log = logging.getLogger("aioh2s")

_HEADER_EVENTS = (
    h2.events.RequestReceived,
    h2.events.ResponseReceived,
    h2.events.InformationalResponseReceived,
    h2.events.TrailersReceived,
)


def _decode_headers(raw: Any) -> Headers:
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



async def _wait_in(waiters: list[asyncio.Future[None]], fut: asyncio.Future[None]) -> None:
    """Wait on ``fut`` while it is listed in ``waiters`` (for whoever wakes them all)."""
    waiters.append(fut)
    try:
        await fut
    finally:
        if fut in waiters:
            waiters.remove(fut)


def _wake(fut: asyncio.Future[None] | None) -> None:
    if fut is not None and not fut.done():
        fut.set_result(None)


def _cancel(task: asyncio.Task[None]) -> None:
    if not task.done():
        task.cancel()


class Stream:
    """Everything about one HTTP/2 stream; owned by its :class:`Connection`."""

    # Slots: a server may hold thousands of idle streams; this keeps each one small.
    __slots__ = (
        "conn", "id", "headers", "informational", "trailers", "buf", "eof", "abandoned",
        "unflowed", "_in_waiter", "headers_sent", "out", "out_size", "out_end", "end_queued",
        "local_closed", "peer_stopped", "queued", "_drain_waiters", "error", "closed",
        "_closed_waiters", "task",
    )

    def __init__(self, conn: Connection, stream_id: int) -> None:
        self.conn = conn
        self.id = stream_id
        # Inbound: headers, body buffer, end of stream, trailers.
        self.headers: Headers | None = None  # request headers (server) / final response (client)
        self.informational: list[Headers] | None = None  # 1xx responses (client), made on the first
        self.trailers: Headers | None = None
        self.buf = bytearray()
        self.eof = False  # the peer ended its side (END_STREAM received)
        self.abandoned = False  # the application will read no more: ack on arrival
        self.unflowed = False  # body arrived outside flow control (h2c Upgrade): never ack
        self._in_waiter: asyncio.Future[None] | None = None
        # Outbound: queued body, pending end (True: END_STREAM, Headers: trailers).
        self.headers_sent = False
        self.out: collections.deque[memoryview] | None = None  # created on first write
        self.out_size = 0
        self.out_end: bool | list[tuple[bytes, bytes]] = False
        self.end_queued = False  # write_eof()/send_trailers() called
        self.local_closed = False  # END_STREAM sent to h2
        self.peer_stopped = False  # the peer asked for no more body (RST_STREAM NO_ERROR)
        self.queued = False  # in the connection's round-robin
        # Waiter lists are created on first use: most streams never need them.
        self._drain_waiters: list[asyncio.Future[None]] | None = None
        # Shared: the error that ended the stream, and whether it is fully closed.
        self.error: BaseException | None = None
        self.closed = False
        self._closed_waiters: list[asyncio.Future[None]] | None = None
        # Server: the handler task serving this stream (cancelled if it outlives a reset).
        self.task: asyncio.Task[None] | None = None

    # -- inbound -------------------------------------------------------------------------------

    async def wait_inbound(self) -> None:
        """Wait until headers, data, end of stream or an error arrive."""
        if self._in_waiter is not None and not self._in_waiter.done():
            raise RuntimeError(
                f"another coroutine is already waiting for data on stream {self.id}"
            )
        fut = self.conn.loop.create_future()
        self._in_waiter = fut
        try:
            await fut
        finally:
            self._in_waiter = None

    async def wait_readable(self) -> None:
        """Return when body bytes are buffered or the body ended; raise the stream's error."""
        while True:
            if self.error is not None:
                raise self.error
            if self.buf or self.eof:
                return
            await self.wait_inbound()

    def wake_inbound(self) -> None:
        _wake(self._in_waiter)

    def consume(self, n: int) -> bytes:
        """Take ``n`` buffered bytes and grant the peer that much window again."""
        buf = self.buf
        if n >= len(buf):
            data = bytes(buf)
            buf.clear()
        else:
            data = bytes(memoryview(buf)[:n])  # one copy, not two (as asyncio's read)
            del buf[:n]
        if data:
            self.conn.acknowledge(self, len(data))
        return data

    def abandon(self) -> None:
        """The application reads no more: release buffered bytes' window now and on arrival."""
        if self.abandoned:
            return
        self.abandoned = True
        self.release_buffered()

    def release_buffered(self) -> None:
        """Drop unread bytes and give their window back to the peer.

        Unread bytes count against the connection window too: kept unacknowledged, a few
        abandoned streams would stall every other stream on the connection.
        """
        if self.buf:
            n = len(self.buf)
            self.buf.clear()
            self.conn.acknowledge(self, n)

    # -- outbound ------------------------------------------------------------------------------

    def check_writable(self, what: str) -> bool:
        """False when writes are to be dropped silently; raise if our side already ended."""
        if self.peer_stopped:
            return False
        if self.end_queued or self.local_closed:
            raise RuntimeError(f"cannot {what}: stream {self.id} was already ended by this side")
        return True

    def send_headers(self, headers: HeadersLike, end_stream: bool = False) -> None:
        if not self.check_writable("send headers"):
            return
        if self.error is not None:
            raise self.error
        self.conn.send_headers(self, to_wire(headers, REQUEST if self.conn.client else RESPONSE),
                               end_stream)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self.check_writable("write()"):
            return
        if not self.headers_sent:
            raise RuntimeError("send_headers() must be called before write()")
        if self.error is not None:
            # Like asyncio's StreamWriter: writing to a dead stream is silent; drain() raises.
            return
        n = len(data)
        if not n:
            return
        out = self.out
        if out is None:
            out = self.out = collections.deque()
        # bytes are immutable and can be queued as they are; anything else may be changed by
        # the caller after write() returns, so it is copied (as asyncio's transports do).
        out.append(memoryview(data if type(data) is bytes else bytes(data)))
        self.out_size += n
        self.conn.want_send(self)

    def end(self, trailers: HeadersLike | None = None) -> None:
        """Queue the end of our side: END_STREAM after the queued body, with trailers if given."""
        if not self.check_writable("end the stream"):
            return
        if not self.headers_sent:
            raise RuntimeError("send_headers() must be called before ending the stream")
        self.end_queued = True
        if self.error is not None:
            return
        self.out_end = to_wire(trailers, TRAILERS) if trailers is not None else True
        self.conn.want_send(self)

    def take(self, n: int) -> bytes:
        """Dequeue up to ``n`` bytes of the outbound body (only called when out_size > 0)."""
        out = self.out
        assert out is not None
        first = out[0]
        if len(first) > n:
            out[0] = first[n:]
            data = bytes(first[:n])
        elif len(first) == n or len(out) == 1:
            out.popleft()
            data = bytes(first)
        else:
            parts = []
            need = n
            while need and out:
                chunk = out[0]
                if len(chunk) > need:
                    parts.append(chunk[:need])
                    out[0] = chunk[need:]
                    need = 0
                else:
                    parts.append(chunk)
                    out.popleft()
                    need -= len(chunk)
            data = b"".join(parts)
        self.out_size -= len(data)
        return data

    async def drain(self) -> None:
        """Wait until queued bytes are at or below the low-water mark and the transport flows."""
        conn = self.conn
        low = conn.config.write_low_water
        high = conn.config.write_high_water
        if self.error is None and self.local_closed and not self.out_size:
            return  # everything was handed to h2 already: nothing left to wait for
        if self.error is None and self.out_size <= high and not conn.write_blocked:
            # Fast path, like asyncio's drain() on a transport that is not paused: yield once so
            # a writer in a tight loop cannot starve the event loop.
            await asyncio.sleep(0)
            if self.error is not None:
                raise self.error
            return
        while True:
            if self.error is not None:
                raise self.error
            if (self.out_size <= low and not conn.write_blocked) or self.closed:
                return
            if self._drain_waiters is None:
                self._drain_waiters = []
            await _wait_in(self._drain_waiters, conn.loop.create_future())

    def wake_drain(self) -> None:
        if self._drain_waiters and (
            self.error is not None
            or (self.out_size <= self.conn.config.write_low_water and not self.conn.write_blocked)
        ):
            for f in self._drain_waiters:
                _wake(f)

    async def wait_closed(self) -> None:
        if self.closed:
            return
        if self._closed_waiters is None:
            self._closed_waiters = []
        await _wait_in(self._closed_waiters, self.conn.loop.create_future())

    # -- ending --------------------------------------------------------------------------------

    def fail(self, exc: BaseException) -> None:
        """The stream died: drop queued output, wake everyone with ``exc``."""
        if self.error is None:
            self.error = exc
        self.drop_output()
        self.release_buffered()
        self.wake_inbound()
        task = self.task
        if task is not None and not task.done() and task is not asyncio.current_task():
            # The handler gets a chance to see the error on its next read/drain; if it is
            # busy elsewhere it is cancelled, so reset streams cannot pile up running work.
            self.conn.loop.call_later(self.conn.config.reset_handler_timeout, _cancel, task)
        self.mark_closed()

    def drop_output(self) -> None:
        """Forget everything queued to send (the peer will not get it)."""
        self.out = None
        self.out_size = 0
        self.out_end = False

    def mark_closed(self) -> None:
        if self.closed:
            return
        self.closed = True
        for f in self._closed_waiters or ():
            _wake(f)
        for f in self._drain_waiters or ():
            _wake(f)  # a closed stream has nothing left to drain
        self.conn.stream_closed(self)


class Connection:
    """One HTTP/2 connection over an asyncio stream pair, client or server side.

    ``on_request`` (server side) is called with each new peer-opened :class:`Stream` whose
    request headers arrived; ``on_close`` once when the connection ended.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        client: bool,
        config: Config,
        on_request: Callable[[Stream], None] | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.client = client
        self.config = config
        self._reader = reader
        self._writer = writer
        self.transport = writer.transport
        self._on_request = on_request
        self.h2 = _new_h2(client, config)
        self.streams: dict[int, Stream] = {}
        self.error: ConnectionClosed | None = None
        self.closed = False
        self.write_blocked = False
        self._budget_hit = False
        self._spawned = False  # this batch started handlers (see receive())
        # asyncio pauses the transport (and our drain task waits) at our own high-water mark.
        self.transport.set_write_buffer_limits(high=config.transport_high_water)
        self._sendable: collections.deque[Stream] = collections.deque()
        self._flush_handle: asyncio.Handle | None = None
        self._drain_task: asyncio.Task[None] | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._remote_settings = self.loop.create_future()
        self._closed_fut = self.loop.create_future()
        self._slot_waiters: collections.deque[asyncio.Future[bool]] = collections.deque()
        self.open_outbound = 0
        self.last_activity = time.monotonic()
        self._ping_waiters: dict[bytes, asyncio.Future[float]] = {}
        self._handshake_timer: asyncio.TimerHandle | None = None
        self._timer_task: asyncio.Task[None] | None = None
        self._grace_timer: asyncio.TimerHandle | None = None
        self._grace_deadline: float | None = None
        self._hard_close_delay = 1.0  # seconds a closed transport may flush before abort()
        #: Server: called with the first bytes read; handles HTTP/1.1 and returns h2 bytes.
        self.front_door: Callable[[Connection, bytes], Awaitable[bytes]] | None = None
        #: Graceful close under way (GOAWAY sent or received): no new streams.
        self.closing = False
        self.closing_error: ConnectionClosed | None = None
        self._refuse_above: int | None = None  # server: stream ids we promised not to process
        # Abuse budgets (DESIGN.md §4, §7): resets of any origin, frames without progress, and
        # control replies queued while the peer does not read.
        self._resets = _Budget(config.max_reset_burst, config.max_reset_rate)
        self._glitches = _Budget(config.max_glitch_burst, config.max_glitch_rate)
        self._auto_resets_seen = 0
        self._queued_control = 0
        self._header_priority: object = None
        self.idle_since: float | None = time.monotonic()

    # -- setup and the reader task ------------------------------------------------------------

    def start(self) -> None:
        """Send our preface/SETTINGS and start the reader task (client side)."""
        self.initiate()
        self._reader_task = self.loop.create_task(self.run())

    def initiate(self) -> None:
        h2c = self.h2
        h2c.initiate_connection()
        extra = self.config.connection_window - 65535
        if extra > 0:
            h2c.increment_flow_control_window(extra)
        self.flush()

    def initiate_upgrade(
        self, settings_header: bytes, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> None:
        """Server, h2c Upgrade (RFC 7540 §3.2): the HTTP/1.1 request becomes stream 1.

        The caller already sent ``101 Switching Protocols``. The body arrived over HTTP/1.1,
        outside HTTP/2 flow control, so it is buffered without granting window for it.
        """
        h2c = self.h2
        h2c.initiate_upgrade_connection(settings_header)
        extra = self.config.connection_window - 65535
        if extra > 0:
            h2c.increment_flow_control_window(extra)
        self.flush()
        s = Stream(self, 1)
        s.headers = _decode_headers(headers)
        s.buf += body
        s.eof = True
        s.unflowed = True
        self.streams[1] = s
        self.idle_since = None
        if self._on_request is not None:
            self._on_request(s)

    async def wait_ready(self) -> None:
        """Wait for the peer's first SETTINGS (the end of the handshake)."""
        timeout = self.config.handshake_timeout
        try:
            await asyncio.wait_for(asyncio.shield(self._remote_settings), timeout)
        except asyncio.TimeoutError:
            exc = ConnectionClosed(
                f"handshake timed out: no SETTINGS from the peer within {timeout} s"
            )
            self.abort(exc, ErrorCodes.SETTINGS_TIMEOUT)
            raise exc from None

    async def run(self) -> None:
        """The reader task: read, feed h2, dispatch, flush; until the connection ends."""
        reader = self._reader
        # Take everything the StreamReader holds (it pauses the transport above 4x read_size,
        # plus at most one 256 KiB recv): a partial read makes asyncio move the rest of its
        # buffer to the front, which cost more than h2's parsing on bulk uploads.
        size = 4 * self.config.read_size + 256 * 1024
        timeout = self.config.handshake_timeout
        try:
            if timeout is not None and not self._remote_settings.done():
                # Preface and first SETTINGS must arrive in time (slowloris bound); after that,
                # reads may idle as long as the idle/keepalive policy allows.
                self._handshake_timer = self.loop.call_later(timeout, self._handshake_expired)
            self._start_timers()
            data = await reader.read(size)
            if data and self.front_door is not None:
                data = await self.front_door(self, data)
                if not data and not self.closed:
                    data = await reader.read(size)
            while data:
                self.last_activity = time.monotonic()
                self.receive(data)
                if self.closed:
                    return
                if self.write_blocked:
                    # Stop reading while the peer is not reading what we send (DESIGN §7).
                    await self._wait_writable()
                    if self.closed:
                        return
                data = await reader.read(size)
            self._fail(ConnectionClosed("the peer closed the connection"))
        except asyncio.CancelledError:
            self._fail(ConnectionClosed("the connection was closed locally"))
            raise
        except (ConnectionError, OSError) as e:
            self._fail(ConnectionClosed(f"the connection was lost: {e!r}"))
        except Exception as e:
            log.exception("aioh2s: internal error in the connection reader task")
            err = ConnectionClosed(f"internal error in aioh2s: {e!r}", ErrorCodes.INTERNAL_ERROR)
            err.__cause__ = e
            self.abort(err, ErrorCodes.INTERNAL_ERROR)
        finally:
            self._fail(ConnectionClosed("the connection was closed"))

    def _handshake_expired(self) -> None:
        self._handshake_timer = None
        if not self._remote_settings.done() and not self.closed:
            timeout = self.config.handshake_timeout
            self.abort(
                ConnectionClosed(
                    f"handshake timed out: no preface/SETTINGS from the peer within {timeout} s",
                    ErrorCodes.SETTINGS_TIMEOUT,
                ),
                ErrorCodes.SETTINGS_TIMEOUT if self.preface_received() else None,
            )

    def preface_received(self) -> bool:
        """True once the peer's connection preface (client magic) was fully received."""
        if self.client:
            return True
        return getattr(self.h2.incoming_buffer, "_preamble_len", 0) == 0

    def receive(self, data: bytes) -> None:
        """Feed bytes to h2, dispatch events, check the abuse budgets, flush once."""
        h2c = self.h2
        try:
            events = h2c.receive_data(data)
        except h2.exceptions.ProtocolError as e:
            code = getattr(e, "error_code", ErrorCodes.PROTOCOL_ERROR)
            # h2 already queued a GOAWAY with that code; send it, then end.
            self.abort(ProtocolError(f"peer violated HTTP/2: {e}", code), None)
            return
        for ev in events:
            self.dispatch(ev)
            if self.closed:
                return
        auto = h2c.auto_resets - self._auto_resets_seen
        if auto:
            self._auto_resets_seen = h2c.auto_resets
            if not self._resets.spend(auto):
                self.calm_down("too many streams reset because of the peer's errors or refused")
                return
        self.flush()
        if self._spawned:
            # Handlers started by this batch run in the next loop iteration; a flush queued
            # now runs right after them in that same iteration, so their responses go out
            # together without waiting for one more iteration.
            self._spawned = False
            self.schedule_flush()

    def calm_down(self, why: str) -> None:
        """The peer is abusive: GOAWAY(ENHANCE_YOUR_CALM) and close."""
        log.warning("aioh2s: closing connection from %s: %s",
                    self.get_extra_info("peername"), why)
        self.abort(
            ConnectionClosed(f"peer misbehaved: {why}", ErrorCodes.ENHANCE_YOUR_CALM),
            ErrorCodes.ENHANCE_YOUR_CALM,
        )

    def _glitch(self, what: str) -> None:
        if not self._glitches.spend():
            self.calm_down(f"too many frames without progress ({what})")

    def _control_reply(self) -> None:
        # A PING or SETTINGS forces a reply. While the peer leaves our replies unread (the
        # transport holds bytes), count them; a flood past the bound ends the connection.
        if self.transport.get_write_buffer_size():
            self._queued_control += 1
            if self._queued_control > self.config.max_queued_control:
                self.calm_down("control frames flooded while our replies go unread")
        else:
            self._queued_control = 0

    # -- event dispatch ------------------------------------------------------------------------

    def dispatch(self, ev: h2.events.Event) -> None:
        t = type(ev)
        if t is h2.events.DataReceived:
            if not ev.flow_controlled_length and not ev.stream_ended:  # type: ignore[attr-defined]
                self._glitch("empty DATA")
            self._on_data(ev)  # type: ignore[arg-type]
        elif t in _HEADER_EVENTS:
            self._on_headers(ev)
        elif t is h2.events.StreamEnded:
            s = self.streams.get(ev.stream_id)  # type: ignore[attr-defined]
            if s is not None:
                s.eof = True
                s.wake_inbound()
                self._maybe_closed(s)
        elif t is h2.events.WindowUpdated:
            if ev.delta < 128:  # type: ignore[attr-defined]
                self._glitch("tiny WINDOW_UPDATE")  # data dribble / resource loop
            self._on_window_updated(ev.stream_id)  # type: ignore[attr-defined]
        elif t is h2.events.StreamReset:
            if not self._resets.spend():
                self.calm_down("too many stream resets (Rapid Reset)")
                return
            self._on_reset(ev)  # type: ignore[arg-type]
        elif t is h2.events.RemoteSettingsChanged:
            self._control_reply()
            self._on_remote_settings(ev)  # type: ignore[arg-type]
        elif t is h2.events.PingReceived:
            self._control_reply()
        elif t is h2.events.PriorityUpdated:
            if ev is not self._header_priority:  # a PRIORITY flag on HEADERS is no glitch
                self._glitch("PRIORITY frame")
        elif t is h2.events.UnknownFrameReceived:
            self._glitch("unknown frame type")
        elif t is h2.events.ConnectionTerminated:
            self._on_goaway(ev)  # type: ignore[arg-type]
        elif t is h2.events.PingAckReceived:
            fut = self._ping_waiters.pop(ev.ping_data, None)  # type: ignore[attr-defined]
            if fut is not None and not fut.done():
                fut.set_result(time.monotonic())
        # SettingsAcknowledged, PingReceived (h2 answers), PriorityUpdated (ignored per RFC 9113),
        # UnknownFrameReceived, AlternativeServiceAvailable: nothing to do.

    def _on_headers(self, ev: Any) -> None:
        sid = ev.stream_id
        self._header_priority = ev.priority_updated
        headers = _decode_headers(ev.headers)
        if isinstance(ev, h2.events.RequestReceived):
            if self._refuse_above is not None and sid > self._refuse_above:
                # Opened after our GOAWAY: refused, so the client may retry it elsewhere.
                try:
                    self.h2.reset_stream(sid, ErrorCodes.REFUSED_STREAM)
                except h2.exceptions.ProtocolError:
                    pass
                return
            s = Stream(self, sid)
            s.headers = headers
            self.streams[sid] = s
            self.idle_since = None
            self._spawned = True
            if self._on_request is None:
                # A client does not accept requests; h2 already refuses pushes (ENABLE_PUSH=0).
                self.reset_stream(s, ErrorCodes.REFUSED_STREAM)
                return
            self._on_request(s)
            return
        s2 = self.streams.get(sid)
        if s2 is None:
            return
        if isinstance(ev, h2.events.ResponseReceived):
            s2.headers = headers
        elif isinstance(ev, h2.events.InformationalResponseReceived):
            if s2.informational is None:
                s2.informational = []
            s2.informational.append(headers)
        else:
            s2.trailers = headers
        s2.wake_inbound()

    def _on_data(self, ev: h2.events.DataReceived) -> None:
        sid = ev.stream_id
        data = ev.data
        flow = ev.flow_controlled_length or 0
        s = self.streams.get(sid)
        if s is None or s.abandoned or s.error is not None:
            if flow:
                self.h2.acknowledge_received_data(flow, sid)
            return
        if data:
            s.buf += data
        padding = flow - len(data) if data is not None else flow
        if padding:
            self.h2.acknowledge_received_data(padding, sid)
        s.wake_inbound()

    def _on_window_updated(self, stream_id: int) -> None:
        if stream_id:
            s = self.streams.get(stream_id)
            if s is not None and (s.out_size or s.out_end) and not s.queued:
                s.queued = True
                self._sendable.append(s)
        else:
            self._requeue_all()
        self.schedule_flush()

    def _requeue_all(self) -> None:
        for s in self.streams.values():
            if (s.out_size or s.out_end) and not s.queued and s.error is None:
                s.queued = True
                self._sendable.append(s)

    def _on_reset(self, ev: h2.events.StreamReset) -> None:
        s = self.streams.get(ev.stream_id)
        if s is None:
            return
        if ev.remote_reset and not ev.error_code and s.eof:
            # RFC 9113 §8.1: RST_STREAM(NO_ERROR) after a complete response means "stop sending
            # the request body"; the response must not be discarded.
            s.peer_stopped = True
            s.drop_output()
            s.local_closed = True
            s.mark_closed()  # wakes drain() waiters: nothing is left to drain
            return
        s.fail(StreamReset(ev.stream_id, ev.error_code or 0, remote=ev.remote_reset))

    def _on_remote_settings(self, ev: h2.events.RemoteSettingsChanged) -> None:
        changed = ev.changed_settings
        h2c = self.h2
        if h2.settings.SettingCodes.HEADER_TABLE_SIZE in changed:
            # h2 follows any table size the peer announces (up to 2**32-1): clamp it (DESIGN §7).
            if h2c.encoder.header_table_size > 4096:
                h2c.encoder.header_table_size = 4096
        if h2.settings.SettingCodes.INITIAL_WINDOW_SIZE in changed:
            self._requeue_all()
            self.schedule_flush()
        if h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS in changed:
            self._grant_slots()
        if not self._remote_settings.done():
            self._remote_settings.set_result(None)
            if self._handshake_timer is not None:
                self._handshake_timer.cancel()
                self._handshake_timer = None

    def _on_goaway(self, ev: h2.events.ConnectionTerminated) -> None:
        code = ev.error_code or 0
        last = ev.last_stream_id or 0
        extra = ""
        if ev.additional_data:
            extra = ": " + ev.additional_data[:200].decode("utf-8", "replace")
        try:
            name = ErrorCodes(code).name
        except ValueError:
            name = hex(code)
        err = ConnectionTerminated(
            f"the peer sent GOAWAY with {name} (last stream id {last}){extra}", code, last
        )
        if code != ErrorCodes.NO_ERROR:
            self.abort(err, None)
            return
        # Graceful: streams we opened above `last` were not processed (safe to retry); the
        # others may finish. No new streams from here on.
        self.closing = True
        if self.closing_error is None:
            self.closing_error = err.for_stream(2**31)
        mine = 1 if self.client else 0
        for s in list(self.streams.values()):
            if s.id > last and s.id % 2 == mine:
                s.fail(err.for_stream(s.id))
        self._fail_slot_waiters()
        self._maybe_finish_close()

    # -- graceful close ------------------------------------------------------------------------

    def start_close(self, grace: float | None = None) -> None:
        """Graceful close: GOAWAY(NO_ERROR, last processed id), finish open streams, then close.

        Streams still open after ``grace`` seconds (default ``config.grace``) are reset.
        """
        if self.closed:
            return
        if not self.closing or self._refuse_above is None:
            self.closing = True
            if self.closing_error is None:
                self.closing_error = ConnectionClosed(
                    "the connection is closing (GOAWAY sent); open a new one", 0, None, True
                )
            last = self.h2.highest_inbound_stream_id
            self._refuse_above = last
            self.h2.send_graceful_goaway(last)
            self._fail_slot_waiters()
            self.flush()
        if self._grace_timer is None:
            g = self.config.grace if grace is None else grace
            self._grace_timer = self.loop.call_later(g, self._grace_expired)
            self._grace_deadline = time.monotonic() + g
        self._maybe_finish_close()

    def _grace_expired(self) -> None:
        self._grace_timer = None
        if self.closed:
            return
        for s in list(self.streams.values()):
            self.reset_stream(s, ErrorCodes.CANCEL)
        self.close_now(ErrorCodes.NO_ERROR)

    def _maybe_finish_close(self) -> None:
        if self.closing and not self.streams and not self.closed:
            # Responses may still sit in the transport's buffer: a graceful close lets it
            # drain for the rest of the grace period before the hard abort.
            deadline = self._grace_deadline
            if deadline is not None:
                self._hard_close_delay = max(1.0, deadline - time.monotonic())
            self.close_now(ErrorCodes.NO_ERROR)

    def _fail_slot_waiters(self) -> None:
        for fut in self._slot_waiters:
            if not fut.done():
                fut.set_result(False)
        self._slot_waiters.clear()

    # -- keepalive and idle timeout ------------------------------------------------------------

    def _start_timers(self) -> None:
        cfg = self.config
        if cfg.keepalive_interval is not None or (cfg.idle_timeout is not None and not self.client):
            self._timer_task = self.loop.create_task(self._timers())

    async def _timers(self) -> None:
        cfg = self.config
        interval = cfg.keepalive_interval
        idle = cfg.idle_timeout if not self.client else None  # a client decides for itself
        tick = min(x for x in (interval, idle) if x is not None) / 4
        while not self.closed:
            await asyncio.sleep(tick)
            now = time.monotonic()
            if idle is not None and self.idle_since is not None and now - self.idle_since >= idle:
                log.debug("aioh2s: idle for %.1f s, closing", now - self.idle_since)
                self.start_close()
                return
            if interval is not None and now - self.last_activity >= interval:
                try:
                    await self.ping(timeout=cfg.keepalive_timeout)
                except asyncio.TimeoutError:
                    self.abort(
                        ConnectionClosed(
                            f"keepalive PING not answered within {cfg.keepalive_timeout} s"
                        ),
                        ErrorCodes.NO_ERROR,
                    )
                    return
                except ConnectionClosed:
                    return

    # -- outbound ------------------------------------------------------------------------------

    def send_headers(self, s: Stream, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        if self.error is not None:
            raise self.error
        try:
            self.h2.send_headers(s.id, headers, end_stream=end)
        except h2.exceptions.ProtocolError as e:
            raise ProtocolError(f"cannot send these headers on stream {s.id}: {e}") from e
        s.headers_sent = True
        if end:
            s.end_queued = True
            self._local_closed(s)
            if self.client and self.open_outbound == 1 and self._flush_handle is None:
                # A lone complete request: nothing else can join this write, so send it now
                # rather than a loop iteration later (request latency, 1-at-a-time clients).
                self.flush()
                return
        self.schedule_flush()

    def want_send(self, s: Stream) -> None:
        if not s.queued:
            s.queued = True
            self._sendable.append(s)
        self.schedule_flush()

    def schedule_flush(self) -> None:
        if self._flush_handle is None and not self.closed:
            self._flush_handle = self.loop.call_soon(self.flush)

    def flush(self) -> None:
        """Move queued stream data into h2 (round-robin), then write h2's bytes once."""
        self._flush_handle = None
        if self.closed:
            return
        if self._sendable:
            self._budget_hit = False
            self._pump()
        data = self.h2.data_to_send()
        if data:
            self.transport.write(data)
        self._check_write_blocked()
        if self._budget_hit and not self.closed:
            # Part of what we wrote went straight to the socket, so the transport may not be
            # paused; still, more is queued. Wait for drain() (immediate when not paused) and
            # pump again, yielding to the loop in between.
            self._budget_hit = False
            self._resume_when_drained()

    def _pump(self) -> None:
        h2c = self.h2
        rr = self._sendable
        max_frame = h2c.max_outbound_frame_size
        # asyncio pauses the transport when it holds *more* than the high-water mark; stop at
        # the same point so that waiting for drain() then really waits.
        budget = self.config.transport_high_water + 1 - self.transport.get_write_buffer_size()
        stuck: list[Stream] = []  # have data, but no connection window or transport budget
        unwritten = 0
        while rr:
            s = rr.popleft()
            if s.error is not None or s.local_closed:
                s.queued = False
                continue
            if s.out_size:
                if budget <= 0 or h2c.outbound_flow_control_window <= 0:
                    # Keep its turn; streams behind it that only need END_STREAM or trailers
                    # (no window needed) still go out.
                    stuck.append(s)
                    if budget <= 0:
                        self._budget_hit = True  # flush() resumes once the transport drains
                    continue
                try:
                    window = h2c.local_flow_control_window(s.id)
                except h2.exceptions.StreamClosedError:
                    s.queued = False
                    continue
                if window <= 0:
                    s.queued = False  # WindowUpdated for this stream re-queues it
                    continue
                n = min(window, max_frame, s.out_size)
                data = s.take(n)
                end = s.out_size == 0 and s.out_end is True
                h2c.send_data(s.id, data, end_stream=end)
                budget -= n + 9
                unwritten += n + 9
                if unwritten >= _WRITE_CHUNK:
                    # Hand h2's output over in pieces: a transient buffer of hundreds of KiB
                    # is allocated with mmap and page-faulted in again on every flush.
                    self.transport.write(h2c.data_to_send())
                    unwritten = 0
                if end:
                    s.out_end = False
                    self._local_closed(s)
                s.wake_drain()
            if not s.out_size and s.out_end is not False:
                if s.out_end is True:
                    h2c.end_stream(s.id)
                else:
                    h2c.send_headers(s.id, s.out_end, end_stream=True)
                s.out_end = False
                self._local_closed(s)
            if s.out_size or s.out_end is not False:
                rr.append(s)
            else:
                s.queued = False
        rr.extend(stuck)

    def _local_closed(self, s: Stream) -> None:
        s.local_closed = True
        if s.abandoned and not s.eof and s.error is None and not self.client:
            # RFC 9113 §8.1: a complete response may be followed by RST_STREAM(NO_ERROR) when
            # the request body is no longer wanted; it stops the client from sending more.
            self.reset_stream(s, ErrorCodes.NO_ERROR)
            return
        self._maybe_closed(s)

    def _maybe_closed(self, s: Stream) -> None:
        if s.local_closed and s.eof and not s.closed:
            s.mark_closed()

    def reset_stream(self, s: Stream, code: int) -> None:
        """Send RST_STREAM(code) unless the stream already ended; fail it locally."""
        if s.closed or self.closed:
            return
        try:
            self.h2.app_reset_stream(s.id, code)
        except h2.exceptions.StreamClosedError:
            pass
        except h2.exceptions.ProtocolError:
            pass
        s.fail(StreamReset(s.id, code, remote=False))
        self.schedule_flush()

    def acknowledge(self, s: Stream, n: int) -> None:
        if self.closed or s.unflowed:
            return
        h2c = self.h2
        h2c.acknowledge_received_data(n, s.id)
        # h2 batches WINDOW_UPDATEs: most acknowledgements produce no frame, and a needless
        # flush would cost a loop iteration on every read.
        if getattr(h2c, "_data_to_send", True):
            self.schedule_flush()

    def stream_closed(self, s: Stream) -> None:
        if self.streams.pop(s.id, None) is not None and self.client:
            self.open_outbound -= 1
            self._grant_slots()
        if not self.streams:
            self.idle_since = time.monotonic()
            if self.closing:
                self._maybe_finish_close()

    # -- transport backpressure ----------------------------------------------------------------

    def _check_write_blocked(self) -> None:
        blocked = self.transport.get_write_buffer_size() > self.config.transport_high_water
        if blocked and not self.write_blocked:
            self.write_blocked = True
            self._resume_when_drained()
        elif not blocked and self.write_blocked:
            self._unblock()

    def _resume_when_drained(self) -> None:
        """Flush again (and wake drain() waiters) once the transport has drained."""
        if self._drain_task is None:
            self._drain_task = self.loop.create_task(self._await_transport())

    async def _await_transport(self) -> None:
        try:
            await self._writer.drain()
        except (ConnectionError, OSError, RuntimeError):
            pass
        finally:
            self._drain_task = None
            self._unblock()

    def _unblock(self) -> None:
        self.write_blocked = False
        self._requeue_all()
        if not self.closed:
            self.flush()
        for s in list(self.streams.values()):
            s.wake_drain()

    async def _wait_writable(self) -> None:
        task = self._drain_task
        if task is not None:
            await asyncio.shield(task)

    # -- client: stream slots ------------------------------------------------------------------

    def _peer_limit(self) -> int:
        return int(self.h2.remote_settings.max_concurrent_streams)

    async def open_stream(self, headers: list[tuple[bytes, bytes]], end: bool) -> Stream:
        """Client: wait (FIFO) for a slot under the peer's limit, then send HEADERS."""
        if self.error is not None:
            raise self.error
        if self.closing_error is not None:
            raise self.closing_error
        if self._slot_waiters or self.open_outbound >= self._peer_limit():
            # The future's result says whether a slot was granted (and counted for us: True)
            # or the connection is ending (False).
            fut: asyncio.Future[bool] = self.loop.create_future()
            self._slot_waiters.append(fut)
            try:
                granted = await fut
            except BaseException:
                if fut.done() and not fut.cancelled() and fut.result():
                    self.open_outbound -= 1  # granted, but we are leaving: pass it on
                    self._grant_slots()
                else:
                    try:
                        self._slot_waiters.remove(fut)
                    except ValueError:
                        pass
                raise
            if not granted or self.error is not None or self.closing_error is not None:
                if granted:
                    self.open_outbound -= 1
                raise self.error or self.closing_error or ConnectionClosed("connection ended")
        else:
            self.open_outbound += 1
        sid = self.h2.get_next_available_stream_id()
        s = Stream(self, sid)
        self.streams[sid] = s
        self.idle_since = None
        try:
            self.send_headers(s, headers, end)
        except BaseException:
            self.streams.pop(sid, None)
            self.open_outbound -= 1
            self._grant_slots()
            raise
        return s

    def _grant_slots(self) -> None:
        # A granted waiter's slot is counted in open_outbound at once, so two releases before
        # the waiters run cannot grant more slots than the peer allows.
        waiters = self._slot_waiters
        while waiters and self.open_outbound < self._peer_limit():
            fut = waiters.popleft()
            if not fut.done():
                self.open_outbound += 1
                fut.set_result(True)

    # -- ping ----------------------------------------------------------------------------------

    async def ping(self, timeout: float | None = None) -> float:
        """Send PING and return the round-trip time in seconds."""
        if self.error is not None:
            raise self.error
        opaque = time.monotonic_ns().to_bytes(8, "big")
        while opaque in self._ping_waiters:
            opaque = (int.from_bytes(opaque, "big") + 1).to_bytes(8, "big")
        fut: asyncio.Future[float] = self.loop.create_future()
        self._ping_waiters[opaque] = fut
        start = time.monotonic()
        self.h2.ping(opaque)
        self.flush()
        try:
            end = await asyncio.wait_for(fut, timeout)
        finally:
            self._ping_waiters.pop(opaque, None)
        return end - start

    # -- ending the connection -----------------------------------------------------------------

    def abort(self, exc: ConnectionClosed | ProtocolError, code: int | None) -> None:
        """End the connection now: optional GOAWAY(code), flush, fail everything, close."""
        if self.closed:
            return
        if code is not None:
            try:
                self.h2.close_connection(error_code=code)
            except h2.exceptions.ProtocolError:
                pass
        try:
            data = self.h2.data_to_send()
            if data:
                self.transport.write(data)
        except Exception:  # the transport may already be gone
            pass
        if isinstance(exc, ProtocolError):
            err = ConnectionClosed(str(exc), exc.error_code)
            err.__cause__ = exc
            exc = err
        self._fail(exc)

    def _fail(self, exc: ConnectionClosed) -> None:
        if self.closed:
            return
        self.closed = True
        self.error = exc
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        for timer in (self._handshake_timer, self._grace_timer):
            if timer is not None:
                timer.cancel()
        self._handshake_timer = self._grace_timer = None
        if self._timer_task is not None and self._timer_task is not asyncio.current_task():
            self._timer_task.cancel()
        for s in list(self.streams.values()):
            s.fail(exc.for_stream(s.id))
        self.streams.clear()
        self._sendable.clear()
        self._fail_slot_waiters()
        for pfut in self._ping_waiters.values():
            if not pfut.done():
                pfut.set_exception(exc)
                pfut.exception()  # mark retrieved: nobody may be awaiting it any more
        if not self._remote_settings.done():
            self._remote_settings.set_exception(exc)
            self._remote_settings.exception()
        self.transport.close()
        if self.transport.get_write_buffer_size():
            # close() waits for the buffer to drain; a peer that never reads must not keep
            # the socket open forever.
            self.loop.call_later(self._hard_close_delay, self.transport.abort)
        if self._reader_task is not None and self._reader_task is not asyncio.current_task():
            self._reader_task.cancel()
        if self._drain_task is not None:
            self._drain_task.cancel()
        if not self._closed_fut.done():
            self._closed_fut.set_result(None)

    def close_now(self, code: int = ErrorCodes.NO_ERROR) -> None:
        """Send GOAWAY(code) and close at once, failing open streams."""
        self.abort(ConnectionClosed("the connection was closed locally", code), code)

    async def wait_closed(self) -> None:
        """Wait until the connection ended and the reader task finished."""
        await asyncio.shield(self._closed_fut)
        task = self._reader_task
        if task is not None and task is not asyncio.current_task():
            try:
                await task
            except asyncio.CancelledError:
                pass
        try:
            await self._writer.wait_closed()
        except (ConnectionError, OSError):
            pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.transport.get_extra_info(name, default)


class _Budget:
    """A token bucket: ``burst`` events at once, then ``rate`` per second."""

    __slots__ = ("burst", "rate", "tokens", "last")

    def __init__(self, burst: int, rate: float) -> None:
        self.burst = float(burst)
        self.rate = rate
        self.tokens = float(burst)
        self.last = time.monotonic()

    def spend(self, n: int = 1) -> bool:
        """Take ``n`` tokens; False once the budget is overdrawn."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate) - n
        self.last = now
        return self.tokens >= 0


# Length rules of fixed-size frames (RFC 9113 §6), by frame type: (length, flags) -> valid.
# RST_STREAM and PRIORITY are left to h2: a bad length there is a stream-level matter.
_FIXED_LENGTHS: dict[int, Callable[[int, int], bool]] = {
    0x4: lambda n, flags: n == 0 if flags & 0x1 else n % 6 == 0,  # SETTINGS (ACK: empty)
    0x6: lambda n, flags: n == 8,  # PING
    0x7: lambda n, flags: n >= 8,  # GOAWAY
    0x8: lambda n, flags: n == 4,  # WINDOW_UPDATE
}


class _CompressionError(h2.exceptions.ProtocolError):
    """A header block HPACK could not decode: a connection error of type COMPRESSION_ERROR."""

    error_code = ErrorCodes.COMPRESSION_ERROR


class _GuardedFrameBuffer(h2.frame_buffer.FrameBuffer):
    """h2's frame buffer with two checks it lacks (DESIGN.md §7).

    - A frame longer than our SETTINGS_MAX_FRAME_SIZE is rejected as soon as its 9-byte
      header arrives, instead of being buffered whole first.
    - A header block (HEADERS + CONTINUATION) is capped in bytes while it is assembled
      (CONTINUATION flood), not only after.
    """

    max_header_block = 2 * 65536
    _first = True

    def __next__(self) -> Any:
        data = self._data
        if len(data) >= 9:
            length = (data[0] << 16) | (data[1] << 8) | data[2]
            ftype = data[3]
            if self._first:
                # RFC 9113 §3.4: the preface's first frame must be SETTINGS (this also turns
                # an HTTP/1.1 answer or random bytes into a plain PROTOCOL_ERROR).
                if ftype != 0x4:
                    raise h2.exceptions.ProtocolError(
                        "the connection preface did not start with a SETTINGS frame"
                    )
                self._first = False
            if length > self.max_frame_size:
                raise h2.exceptions.FrameTooLargeError(
                    f"Received overlong frame: length {length}, max {self.max_frame_size}"
                )
            fixed = _FIXED_LENGTHS.get(ftype)
            if fixed is not None and not fixed(length, data[4]):
                # hyperframe reports these as "non-compliant data" (PROTOCOL_ERROR); RFC 9113
                # §6 calls each a FRAME_SIZE_ERROR.
                raise h2.exceptions.FrameDataMissingError(
                    f"frame of type {ftype:#x} has an invalid length {length}"
                )
        return super().__next__()

    def _update_header_buffer(self, f: Any) -> Any:
        result = super()._update_header_buffer(f)
        pending = self._headers_buffer
        if pending and sum(len(x.data) for x in pending) > self.max_header_block:
            raise h2.exceptions.DenialOfServiceError(
                f"header block exceeds {self.max_header_block} bytes while being assembled"
            )
        return result


def _check_quiet_receive() -> bool:
    """True if h2's ``_receive_frame`` is the 4.4 method _H2._receive_frame mirrors."""
    import inspect

    try:
        src = inspect.getsource(h2.connection.H2Connection._receive_frame)
    except (OSError, TypeError):
        return False
    needed = ("_frame_dispatch_table[frame.__class__]", "_stream_is_closed_by_reset",
              "_stream_is_closed_by_end", "StreamIDTooLowError", 'trace("Received frame')
    return h2.__version__.startswith("4.") and all(n in src for n in needed) and src.count(
        "except") == 2


_QUIET_RECEIVE = _check_quiet_receive()


_RST_FRAME = hyperframe.frame.RstStreamFrame
# Most bytes the pump lets h2 hold before writing them out (below glibc's 128 KiB mmap
# threshold, so the buffers come from the heap and are reused).
_WRITE_CHUNK = 64 * 1024
_h2_prepare_for_sending = h2.connection.H2Connection._prepare_for_sending


class _H2(h2.connection.H2Connection):
    """h2's connection with what RFC 9113 and DESIGN.md §7 need and h2 4.4 lacks.

    - GOAWAY (§6.8): stock h2 moves to CLOSED on a received GOAWAY (dropping queued output and
      refusing every later frame). A *graceful* one (NO_ERROR) must let streams at or below its
      last stream id finish, so here it only raises the event; :meth:`send_graceful_goaway`
      announces one without closing h2's state machine.
    - Excess streams (§5.1.2): h2 answers a stream beyond SETTINGS_MAX_CONCURRENT_STREAMS with
      a connection error; RFC 9113 says REFUSED_STREAM. The header block is still decoded so
      the HPACK state stays in sync.
    - Every RST_STREAM h2 emits by itself (frames on closed streams, flow-control errors,
      refused streams) is counted in ``auto_resets``, so the connection can hold the peer to
      a reset budget; resets the application asks for are not counted.
    """

    auto_resets = 0
    _app_reset = False

    def __init__(self, config: h2.config.H2Configuration) -> None:
        super().__init__(config=config)
        # Upper bounds of open streams by id parity, and when to prune closed streams next.
        self._upper = [0, 0]
        self._prune_at = 128

    # h2 counts open streams by walking every stream it holds (and prunes closed ones) each
    # time a stream is opened: O(n) per stream, O(n²) for a busy connection, and the biggest
    # cost of a server answering 100 concurrent small requests. h2 only ever asks "would one
    # more exceed the limit?", so an upper bound below the limit answers without a walk; the
    # exact walk (which also prunes) runs near the limit or when the stream table has doubled.

    def _begin_new_stream(self, stream_id: int, allowed_ids: Any) -> Any:
        stream = super()._begin_new_stream(stream_id, allowed_ids)
        self._upper[stream_id % 2] += 1
        _h2headers.install(stream)
        return stream

    def _count_open(self, parity: int, limit: int) -> int:
        upper = self._upper[parity]
        if upper < limit and len(self.streams) < self._prune_at:
            return upper
        exact = self._open_streams(parity)
        self._upper[parity] = exact
        self._prune_at = max(128, 2 * len(self.streams))
        return exact

    @property
    def open_inbound_streams(self) -> int:
        """An upper bound of open peer-initiated streams, exact near the limit (see above)."""
        parity = 0 if self.config.client_side else 1
        return self._count_open(parity, self.local_settings.max_concurrent_streams)

    @property
    def open_outbound_streams(self) -> int:
        """An upper bound of open streams we initiated, exact near the limit (see above)."""
        parity = 1 if self.config.client_side else 0
        return self._count_open(parity, self.remote_settings.max_concurrent_streams)

    def _receive_frame(self, frame: Any) -> Any:
        # h2 4.x starts this method with logger.trace("Received frame: %s", repr(frame)): the
        # repr is built for every frame even when the logger is h2's no-op DummyLogger, and it
        # costs more than the rest of the method for small frames. With the DummyLogger (the
        # only logger aioh2s configures) this is h2 4.4's method without that line; with any
        # other logger, or an h2 this was not checked against, it is h2's own method.
        if not _QUIET_RECEIVE or self.config.logger.__class__ is not h2.config.DummyLogger:
            return super()._receive_frame(frame)
        try:
            frames, events = self._frame_dispatch_table[frame.__class__](frame)
        except h2.exceptions.StreamClosedError as e:
            if self._stream_is_closed_by_reset(e.stream_id):
                f = hyperframe.frame.RstStreamFrame(e.stream_id)
                f.error_code = e.error_code
                self._prepare_for_sending([f])
                events = e._events
            else:
                raise
        except h2.exceptions.StreamIDTooLowError as e:
            if self._stream_is_closed_by_reset(e.stream_id):
                f = hyperframe.frame.RstStreamFrame(e.stream_id)
                f.error_code = ErrorCodes.STREAM_CLOSED
                self._prepare_for_sending([f])
                events = []
            elif self._stream_is_closed_by_end(e.stream_id):
                raise h2.exceptions.StreamClosedError(e.stream_id) from e
            else:
                raise
        else:
            self._prepare_for_sending(frames)
        return events

    def _receive_goaway_frame(self, frame: Any) -> Any:
        if frame.error_code != 0:
            return super()._receive_goaway_frame(frame)
        ev = h2.events.ConnectionTerminated()
        ev.error_code = ErrorCodes.NO_ERROR
        ev.last_stream_id = frame.last_stream_id
        ev.additional_data = frame.additional_data or None
        return [], [ev]

    def _receive_headers_frame(self, frame: Any) -> Any:
        try:
            return super()._receive_headers_frame(frame)
        except h2.exceptions.TooManyStreamsError:
            # Raised before h2 decoded the block or touched any state: refuse the stream but
            # decode the block, so the HPACK state stays in sync with the peer's encoder.
            sid = frame.stream_id
            if sid in self._closed_streams:
                # More HEADERS (trailers) for a stream we refused or reset, sent before the peer
                # saw our RST: a stream error, as h2 answers it below the limit. Decode first to
                # keep HPACK in sync.
                _h2_decode_headers(self.decoder, frame.data)
                raise h2.exceptions.StreamClosedError(sid) from None
            if sid <= self.highest_inbound_stream_id or sid % 2 == 0 or self.config.client_side:
                raise  # not a new peer stream: let h2's connection error stand
            _h2_decode_headers(self.decoder, frame.data)
            self.highest_inbound_stream_id = sid
            self._closed_streams[sid] = StreamClosedBy.SEND_RST_STREAM
            rst = hyperframe.frame.RstStreamFrame(sid)
            rst.error_code = ErrorCodes.REFUSED_STREAM
            return [rst], []
        except h2.exceptions.DenialOfServiceError:
            raise
        except h2.exceptions.ProtocolError as e:
            # h2 reports undecodable header blocks as PROTOCOL_ERROR; RFC 9113 §4.3 says
            # COMPRESSION_ERROR (the HPACK context can no longer be trusted).
            if isinstance(e.__cause__, (hpack.HPACKError, IndexError)):
                raise _CompressionError(str(e)) from e
            raise

    def _prepare_for_sending(self, frames: list[Any]) -> None:
        # Runs for every frame batch h2 queues: kept to a plain loop and a direct call.
        if not self._app_reset:
            for f in frames:
                if f.__class__ is _RST_FRAME:
                    self.auto_resets += 1
        _h2_prepare_for_sending(self, frames)

    def app_reset_stream(self, stream_id: int, error_code: int) -> None:
        """``reset_stream`` on the application's behalf (not counted as peer abuse)."""
        self._app_reset = True
        try:
            self.reset_stream(stream_id, error_code)
        finally:
            self._app_reset = False

    def send_graceful_goaway(self, last_stream_id: int) -> None:
        f = hyperframe.frame.GoAwayFrame(0)
        f.last_stream_id = last_stream_id
        f.error_code = ErrorCodes.NO_ERROR
        self._prepare_for_sending([f])


def _new_h2(client: bool, config: Config) -> _H2:
    """An H2Connection with our settings, our limits, and without per-frame repr costs."""
    h2config = h2.config.H2Configuration(
        client_side=client,
        header_encoding=None,
        validate_inbound_headers=True,
        normalize_inbound_headers=True,
        # headers.to_wire() checks and normalises what we send, at a fraction of the cost.
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
    )
    conn = _H2(config=h2config)
    sc = h2.settings.SettingCodes
    initial: dict[Any, int] = {
        sc.MAX_CONCURRENT_STREAMS: config.max_concurrent_streams,
        sc.INITIAL_WINDOW_SIZE: config.stream_window,
        sc.MAX_FRAME_SIZE: config.max_frame_size,
        sc.MAX_HEADER_LIST_SIZE: config.max_header_list_size,
        # RFC 9113 §5.3.2: we do not use RFC 7540 priorities.
        0x9: 1,
    }
    if client:
        # h2's client default is ENABLE_PUSH=1; we never accept pushes.
        initial[sc.ENABLE_PUSH] = 0
    conn.local_settings = h2.settings.Settings(client=client, initial_values=initial)
    conn.max_inbound_frame_size = config.max_frame_size
    buf = _GuardedFrameBuffer(server=not client)
    buf.max_frame_size = config.max_frame_size
    buf.max_header_block = config.header_block_limit
    conn.incoming_buffer = buf
    conn.decoder.max_header_list_size = config.max_header_list_size
    if not _QUIET_RECEIVE:
        # With the quiet _receive_frame above no frame repr is ever built; the patch would
        # only add a call per frame.
        _h2patch.install(conn)
    return conn

