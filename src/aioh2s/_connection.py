"""The protocol machinery: one HTTP/2 connection driven over asyncio streams.

Theory of operation
-------------------
A :class:`Connection` owns exactly one h2 connection (``_h2ext.H2``) and is the only code that
touches it. Its *reader task* (:meth:`Connection.run`) reads bytes from its
:class:`~._wire.Wire` protocol, feeds them to h2, dispatches the resulting events through one
table-like method (:meth:`Connection.dispatch`) to per-stream :class:`~._stream.Stream`
objects, and then flushes once. Everything the application does (send headers, write, end,
reset) changes a ``Stream`` and asks for a flush; flushes are coalesced with
``loop.call_soon``.

The jobs are split by module, each with one reason to change:

- ``_state``: the stream and connection state tables;
- ``_stream``: one stream's state, buffers and waiters;
- ``_sender`` (mixin :class:`~._sender.Sender`): pump, windows, transport backpressure;
- ``_lifecycle`` (mixin :class:`~._lifecycle.Lifecycle`): GOAWAY, grace, linger, timers,
  teardown;
- ``_budgets``: abuse counting;
- ``_h2ext``: every use of h2's private API, behind one version guard;
- this module: setup, the reader task, event dispatch, client stream slots (mixin
  :class:`StreamSlots`), ping.

Inbound DATA path: ``run`` → ``receive`` → ``H2.receive_data`` → ``dispatch`` →
``_on_data`` → ``Stream.on_data`` (buffered, not yet acknowledged) → the application's
``H2StreamReader.read`` → ``Stream.consume`` → ``acknowledge`` → h2 batches WINDOW_UPDATE →
``schedule_flush``.

Failure rules: any exception in the reader task ends the connection (``Lifecycle.fail``):
one ``ConnectionClosed`` becomes the connection's error, every stream fails with it, every
waiter wakes, the transport closes. Nothing waits forever on a dead connection.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes

from . import _aio, _h2ext, _trace
from ._budgets import Abuse, BodyRate, ServerBudget
from ._h2headers import decode
from ._lifecycle import Lifecycle, not_sent
from ._sender import Sender
from ._state import Life, Recv, Send
from ._stream import TUNNEL_ASKED, TUNNEL_OPEN, Stream
from ._wire import Wire
from .config import Config
from .errors import (
    ConnectionClosed,
    ExtendedConnectUnsupported,
    LocalProtocolError,
    RemoteProtocolError,
    StreamReset,
)

__all__ = ["Connection", "Stream"]

log = logging.getLogger("aioh2s")

# One reader turn (see Connection.receive): bytes fed to h2 per call, frames it may parse per
# call, and the work (those frames, plus one unit per 8 header fields decoded) or bytes after
# which the reader task yields to the loop. A loop iteration runs one turn of *every*
# connection with input: with a hundred server connections opening streams at once,
# 512-frame turns made each iteration last ~400 ms, and a new client waited that long for
# each step of its handshake (issue 11's availability rows 3, 6 and 11). So a server weighs
# frames by their work (_h2ext.HEADERS_WEIGHT etc.), and while the loop is crowded
# (ServerBudget.crowded: many connections with more input than a turn, or many turns in this
# iteration) its turns are small, 64 units: two requests, 16 DATA frames or 64 control
# frames, ~0.3 ms. Otherwise they are 512 units (16 requests): small turns cost a busy
# connection 10-25% more CPU per request when nobody else is waiting. A client's turns are
# 512 frames, unweighted. (Ending turns on a clock, after 1-20 ms, made the suite's
# in-process floods several times slower to be cut on Python 3.12+; see the aggregate-abuse
# notes before trying again.)
_SLICE = 16 * 1024
# (frames or frame units per h2 call, work units per turn, frames weighted by their work)
_SMALL_TURN = (64, 64, True)
_LARGE_TURN = (512, 512, True)
_CLIENT_TURN = (64, 512, False)
_TURN_BYTES = 256 * 1024
_NOTHING = memoryview(b"")
_MAX_INFORMATIONAL = 32  # 1xx responses kept per stream (client); more is abuse
_LOW_WINDOW = 16 * 1024  # a connection window below this may keep the peer from sending
_tracing = _trace.log.isEnabledFor  # asked once per reader turn (see _trace), with DEBUG
_DEBUG = logging.DEBUG


def _connect_of(fields: list[tuple[bytes, bytes]]) -> tuple[bool, bytes | None]:
    """Whether a request (checked already) is a CONNECT, and its ``:protocol`` if any."""
    connect = False
    protocol = None
    for name, value in fields:
        if name[:1] != b":":
            break  # pseudo-headers come first
        if name == b":method":
            connect = value == b"CONNECT"
        elif name == b":protocol":
            protocol = value
    return connect, protocol


def _expects_continue(fields: list[tuple[bytes, bytes]]) -> bool:
    """Whether the request asks for ``100 Continue`` before it sends its body (RFC 9110)."""
    for name, value in fields:
        if name == b"expect":
            return value.lower() == b"100-continue"
    return False

_HEADER_KINDS: dict[type, str] = {
    h2.events.ResponseReceived: "response",
    h2.events.InformationalResponseReceived: "informational",
    h2.events.TrailersReceived: "trailers",
}


class StreamSlots:
    """Client: opening streams under the peer's SETTINGS_MAX_CONCURRENT_STREAMS, FIFO.

    A mixin of :class:`Connection`, which owns the state; a granted slot is counted in
    ``open_outbound`` at once and given back by ``stream_closed``.
    """

    loop: asyncio.AbstractEventLoop
    h2: _h2ext.H2
    streams: dict[int, Stream]
    error: ConnectionClosed | None
    closing_error: ConnectionClosed | None
    open_outbound: int
    idle_since: float | None
    writes: int
    on_slots: Callable[[], None] | None
    _slot_waiters: collections.deque[asyncio.Future[bool]] | None
    _settled: bool

    if not TYPE_CHECKING:
        # No storage of its own, so that Connection's instances need no dict (hidden from
        # mypy, which would then reject the attributes Connection's slots provide).
        __slots__ = ()

    if TYPE_CHECKING:
        def send_headers(
            self, s: Stream, headers: list[tuple[bytes, bytes]], end: bool
        ) -> None: ...
        def start_close(self, grace: float | None = None) -> None: ...
        async def wait_ready(self) -> None: ...

    def _refusal(self) -> ConnectionClosed | None:
        """Why a new request may not start now (None: it may)."""
        if self.error is not None:
            return not_sent(self.error)
        if self.closing_error is not None:
            return not_sent(self.closing_error)
        return None

    async def open_stream(self, headers: list[tuple[bytes, bytes]], end: bool) -> Stream:
        """Client: wait (FIFO) for a slot under the peer's limit, then send HEADERS."""
        refused = self._refusal()
        if refused is not None:
            raise refused
        connect, protocol = _connect_of(headers)
        if protocol is not None:
            await self._check_extended_connect(protocol)
        if self._slot_waiters or self.open_outbound >= self._peer_limit():
            # The future's result says whether a slot was granted (and counted for us: True)
            # or the connection is ending (False).
            fut: asyncio.Future[bool] = self.loop.create_future()
            waiters = self._slot_waiters
            if waiters is None:
                waiters = self._slot_waiters = collections.deque()
            waiters.append(fut)
            try:
                granted = await fut
            except BaseException:
                if fut.done() and not fut.cancelled() and fut.result():
                    self.open_outbound -= 1  # granted, but we are leaving: pass it on
                    self._grant_slots()
                else:
                    try:
                        waiters.remove(fut)
                    except ValueError:
                        pass
                raise
            refused = self._refusal()
            if not granted or refused is not None:
                if granted:
                    self.open_outbound -= 1
                raise refused or ConnectionClosed("connection ended", retry_safe=True)
        else:
            self.open_outbound += 1
        try:
            sid = self.h2.get_next_available_stream_id()
        except h2.exceptions.NoAvailableStreamIDError:
            # After ~10^9 requests: this connection can open no more streams.
            self.open_outbound -= 1
            self._grant_slots()
            self.start_close()
            err = self._refusal()
            assert err is not None
            raise ConnectionClosed(
                f"{err}; no stream ids are left on this connection", retry_safe=True
            ) from None
        s = Stream(cast("Connection", self), sid)
        s.sent_mark = self.writes
        if connect:
            s.tunnel = TUNNEL_ASKED
        self.streams[sid] = s
        idle_since, self.idle_since = self.idle_since, None
        try:
            self.send_headers(s, headers, end)
        except BaseException:
            self.streams.pop(sid, None)
            self.open_outbound -= 1
            if not self.streams:
                # Refused before anything was sent (too big a header list): still idle, or
                # the pool's idle sweep and retirement would never see this connection again.
                self.idle_since = time.monotonic() if idle_since is None else idle_since
            self._grant_slots()
            raise
        s.headers_sent = True
        if end:
            s.on_send_ended()
        else:
            s.send = Send.OPEN
        return s

    async def _check_extended_connect(self, protocol: bytes) -> None:
        """Raise unless the server allows extended CONNECT (RFC 8441 §3).

        Its first SETTINGS say so: it is awaited if it has not arrived (``connect()`` waits
        for it anyway). A server may not withdraw the setting later (see
        ``Connection._on_remote_settings``), so one look decides.
        """
        if not self._settled:
            await self.wait_ready()
        if not self.h2.remote_settings.enable_connect_protocol:
            name = protocol.decode("ascii", "backslashreplace")
            raise ExtendedConnectUnsupported(
                f"cannot send an extended CONNECT (:protocol {name!r}): the server did not"
                " enable it (no SETTINGS_ENABLE_CONNECT_PROTOCOL = 1 in its SETTINGS,"
                " RFC 8441 §3); nothing was sent"
            )

    def _peer_limit(self) -> int:
        return int(self.h2.remote_settings.max_concurrent_streams)

    def _grant_slots(self) -> None:
        # A granted waiter's slot is counted in open_outbound at once, so two releases before
        # the waiters run cannot grant more slots than the peer allows.
        waiters = self._slot_waiters
        while waiters and self.open_outbound < self._peer_limit():
            fut = waiters.popleft()
            if not fut.done():
                self.open_outbound += 1
                fut.set_result(True)
        if self.on_slots is not None:
            self.on_slots()


class Connection(Sender, Lifecycle, StreamSlots):
    """One HTTP/2 connection over a :class:`~._wire.Wire` protocol, client or server side.

    ``on_request`` (server side) is called with each new peer-opened :class:`Stream` whose
    request headers arrived.
    """

    # Slots: a server may hold thousands of idle connections, and this class has more
    # attributes than Python's compact instance dicts take (30), so a dict would cost ~1.5 KB.
    __slots__ = (
        "loop", "client", "config", "wire", "transport", "_on_request", "h2", "life", "streams",
        "error", "closing_error", "goaway_sent", "write_blocked", "_budget_hit", "_spawned",
        "_new_streams", "_frames", "_unfed", "_turn_cost", "sent_frames",
        "_sent_at_control", "_sendable", "_flush_handle", "_drain_task", "_reader_task",
        "_settled", "_settings_waiter", "_ended", "_closed_waiter", "_slot_waiters",
        "open_outbound", "last_activity", "_ping_waiters", "_handshake_timer", "_header_timer",
        "_header_since", "_header_block", "_header_timeout", "pool", "held", "partial_held",
        "partial_since",
        "_tick_timer", "_keepalive_task", "_grace_timer", "_grace_deadline", "_deferred_close",
        "_shutdown_timer",
        "_linger_timer", "_linger_deadline", "front_door", "abuse", "body_rate",
        "_header_priority", "idle_since", "starts_at", "starts_n", "writes", "on_slots",
        "on_closing", "peer_max_header_list",
    )

    def __init__(
        self,
        wire: Wire,
        *,
        client: bool,
        config: Config,
        on_request: Callable[[Stream], None] | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.client = client
        self.config = config
        self.wire = wire
        assert wire.transport is not None
        self.transport = wire.transport
        self._on_request = on_request
        self.h2 = _h2ext.new_h2(client, config)
        self.life = Life.NEW
        self.streams: dict[int, Stream] = {}
        self.error: ConnectionClosed | None = None
        #: Why no new streams may start (a GOAWAY sent or received), while streams finish.
        self.closing_error: ConnectionClosed | None = None
        #: The last stream id of the final GOAWAY we sent (server: later streams are refused).
        self.goaway_sent: int | None = None
        self.write_blocked = False
        self._budget_hit = False
        self._spawned = False  # this batch started handlers (see receive())
        # Requests of this turn, handed over at its end. Containers that most idle
        # connections never fill are created on first use (an empty deque costs ~760 bytes).
        self._new_streams: list[Stream] | None = None
        self._frames = cast(_h2ext.GuardedFrameBuffer, self.h2.incoming_buffer)
        self._unfed = _NOTHING  # input of an unfinished turn (see receive())
        self._turn_cost = 0
        # DATA/HEADERS frames we sent: a PING after some is a BDP or liveness probe of real
        # traffic (gRPC's estimator sends one per burst), not a flood (see _control_reply).
        self.sent_frames = 0
        self._sent_at_control = 0
        self.writes = 0  # transport.write calls (see Stream.sent_mark)
        #: Client: called when a stream slot may have come free or the connection stopped
        #: taking new streams (a Session's pool then looks again).
        self.on_slots: Callable[[], None] | None = None
        # Called (soon) once this side starts a graceful close: the ASGI adapter's open
        # WebSockets, which say 1001 at once rather than wait out the grace.
        self.on_closing: list[Callable[[], None]] | None = None
        # The peer's SETTINGS_MAX_HEADER_LIST_SIZE (None: not advertised, no limit), kept
        # here so that the common case costs send_headers one attribute test.
        self.peer_max_header_list: int | None = None
        # asyncio pauses the transport (and our drain task waits) at our own high-water mark.
        self.transport.set_write_buffer_limits(high=config.transport_high_water)
        self._sendable: collections.deque[Stream] | None = None
        self._flush_handle: asyncio.Handle | None = None
        self._drain_task: asyncio.Task[None] | None = None
        self._reader_task: asyncio.Task[None] | None = None
        # The peer's first SETTINGS arrived; a future only for wait_ready() to wait on.
        self._settled = False
        self._settings_waiter: asyncio.Future[None] | None = None
        # fail() has finished; a future only for wait_closed() to wait on.
        self._ended = False
        self._closed_waiter: asyncio.Future[None] | None = None
        self._slot_waiters: collections.deque[asyncio.Future[bool]] | None = None
        self.open_outbound = 0
        now = time.monotonic()
        self.last_activity = now
        self._ping_waiters: dict[bytes, asyncio.Future[float]] | None = None
        self._handshake_timer: asyncio.TimerHandle | None = None
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_since: float | None = None  # an unfinished header block seen since
        self._header_block = -1  # ... which one (GuardedFrameBuffer.header_blocks)
        self._header_timeout = None if client else config.header_timeout
        #: Server: the server-wide memory budget, and what this connection holds of it.
        self.pool: ServerBudget | None = None
        self.held = 0
        self.partial_held = 0  # of which an unfinished header block (see _watch_headers)
        self.partial_since = 0.0  # when that block was first seen unfinished
        self._tick_timer: asyncio.TimerHandle | None = None
        self._keepalive_task: asyncio.Task[None] | None = None
        self._grace_timer: asyncio.TimerHandle | None = None
        self._grace_deadline: float | None = None
        #: (grace deadline, timer) of a close waiting for the peer's first requests
        #: (Lifecycle.close_when_spoken).
        self._deferred_close: tuple[float, asyncio.TimerHandle] | None = None
        self._shutdown_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._linger_deadline = 0.0  # set when the connection starts to linger
        #: Server: called with the first bytes read; handles HTTP/1.1 and returns h2 bytes.
        self.front_door: (
            Callable[[Connection, bytes | bytearray], Awaitable[bytes | bytearray]] | None
        ) = None
        self.abuse = Abuse(config)
        rate = None if client else config.min_body_rate
        self.body_rate = None if rate is None else BodyRate(self, rate, config.body_rate_grace)
        self.starts_at = -1  # see ServerBudget.start_handler
        self.starts_n = 0
        self._header_priority: object = None
        self.idle_since: float | None = now

    def __repr__(self) -> str:
        side = "client" if self.client else "server"
        return f"<Connection {side} {self.life.name} streams={len(self.streams)}>"

    # -- setup and the reader task ------------------------------------------------------------

    def start(self) -> None:
        """Send our preface/SETTINGS and start the reader task (client side)."""
        self.initiate()
        self._reader_task = self.loop.create_task(self.run())

    def initiate(self, flush: bool = True) -> None:
        """Send our preface (SETTINGS and the connection window).

        ``flush=False`` leaves it queued for the next flush: the caller is about to feed the
        peer's first bytes to ``receive()``, which always flushes (or aborts, which writes
        what is queued), so the preface and our replies go out in one write.
        """
        if self.closed:
            return  # closed while the front door read (server.close(), a timeout)
        h2c = self.h2
        if _tracing(_DEBUG) is not h2c.traced:
            self.trace_frames()
        h2c.initiate_connection()
        extra = self.config.connection_window - 65535
        if extra > 0:
            h2c.increment_flow_control_window(extra)
        self.enter(Life.OPEN)
        if flush:
            self.flush()

    def initiate_upgrade(
        self, settings_header: bytes, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> None:
        """Server, h2c Upgrade (RFC 7540 §3.2): the HTTP/1.1 request becomes stream 1.

        The caller already sent ``101 Switching Protocols``. The body arrived over HTTP/1.1,
        outside HTTP/2 flow control, so it is buffered without granting window for it.
        """
        if self.closed:
            return
        h2c = self.h2
        if _tracing(_DEBUG) is not h2c.traced:
            self.trace_frames()
        h2c.initiate_upgrade_connection(settings_header)
        extra = self.config.connection_window - 65535
        if extra > 0:
            h2c.increment_flow_control_window(extra)
        self.enter(Life.OPEN)
        self.flush()
        s = Stream(self, 1)
        s.headers = decode(headers)
        s.buf += body
        s.recv = Recv.ENDED
        s.unflowed = True
        self.streams[1] = s
        self.idle_since = None
        if self._on_request is not None:
            self._on_request(s)

    def trace_frames(self) -> None:
        """Start or stop tracing frames, as the ``aioh2s.frames`` logger now says (_trace)."""
        if _tracing(_DEBUG):
            trace = _trace.FrameTrace(self.client, self.get_extra_info("peername"))
            _h2ext.set_trace(self.h2, trace)
        else:
            _h2ext.set_trace(self.h2, None)

    async def wait_ready(self) -> None:
        """Wait for the peer's first SETTINGS (the end of the handshake)."""
        if self._settled:
            return
        if self.error is not None:
            raise self.error  # ended before the peer's SETTINGS arrived
        timeout = self.config.handshake_timeout
        fut = self._settings_waiter
        if fut is None:
            fut = self._settings_waiter = self.loop.create_future()
        try:
            await _aio.wait_for(asyncio.shield(fut), timeout)
        except asyncio.TimeoutError:
            exc = ConnectionClosed(
                f"handshake timed out: no SETTINGS from the peer within {timeout} s",
                ErrorCodes.SETTINGS_TIMEOUT,
            )
            self.abort(exc, ErrorCodes.SETTINGS_TIMEOUT)
            raise exc from None

    async def run(self) -> None:
        """The reader task: read, feed h2, dispatch, flush; until the connection ends."""
        wire = self.wire
        timeout = self.config.handshake_timeout
        try:
            if timeout is not None and not self._settled:
                # Preface and first SETTINGS must arrive in time (slowloris bound); after that,
                # reads may idle as long as the idle/keepalive policy allows.
                self._handshake_timer = self.loop.call_later(timeout, self._handshake_expired)
            self.start_timers()
            data: bytes | bytearray = await wire.read()
            if data and self.front_door is not None:
                data = await self.front_door(self, data)
                if not data and not self.closed:
                    data = await wire.read()
            while data:
                self.last_activity = time.monotonic()
                if self.life is Life.LINGER:
                    pass  # only waiting for the peer to close: what it still sends is moot
                else:
                    # We go on reading while our transport is blocked: two peers that both
                    # stopped reading until the other read would deadlock a full-duplex
                    # stream. What reading can make us send is bounded anyway: DATA by flow
                    # control, replies to PING/SETTINGS by max_queued_control, resets by the
                    # reset budget, and frames on streams we reset get no answer at all.
                    more = self.receive(data)
                    if more:
                        await self._more_turns()
                    if self.closed:
                        return
                # Not kept while waiting: an idle connection would hold its last read.
                data = b""
                got = wire.take()
                while got is None:
                    # The wire's future itself, not a read() coroutine: idle connections
                    # wait here, and a coroutine frame would cost each ~220 bytes.
                    await wire.readable()
                    got = wire.take()
                data = got
            self.fail(self.ended_error("the peer closed the connection"))
        except asyncio.CancelledError:
            self.fail(ConnectionClosed("the connection was closed locally"))
            raise
        except (ConnectionError, OSError) as e:
            self.fail(ConnectionClosed(f"the connection was lost: {e!r}"))
        except Exception as e:
            log.exception("aioh2s: internal error in the connection reader task")
            err = ConnectionClosed(f"internal error in aioh2s: {e!r}", ErrorCodes.INTERNAL_ERROR)
            err.__cause__ = e
            self.abort(err, ErrorCodes.INTERNAL_ERROR)
        finally:
            self.fail(self.ended_error("the connection was closed"))

    async def _more_turns(self) -> None:
        """Go on with the input of a turn that ran out, yielding to the loop between turns."""
        pool = self.pool
        if pool is not None:
            pool.busy += 1
        try:
            more = True
            while more:
                # Fairness: the others' turn (see receive() and ServerBudget.next_turn).
                wait = pool.next_turn() if pool is not None else None
                if wait is None:
                    await asyncio.sleep(0)
                else:
                    await wait
                more = self.life.may_write and self.receive(_NOTHING)
        finally:
            if pool is not None:
                pool.busy -= 1

    def release(self) -> None:
        """The connection ended and nothing will call it again: drop its reference cycles.

        A connection refers to its owner and helpers, and they to it; freed by reference
        counting it goes at once, where otherwise it waits for a full garbage collection
        (each of those took ~100 ms with thousands of short-lived attacking connections).
        """
        self._on_request = None
        self.body_rate = None
        # Errors kept and raised again: each raise gave them a traceback through the frames
        # that raised them (this connection's run(), a handler), which hold this connection.
        self.wire.forget_error()
        for err in (self.error, self.closing_error):
            if err is not None:
                err.__traceback__ = None

    def _handshake_expired(self) -> None:
        self._handshake_timer = None
        if not self._settled and not self.closed:
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

    def receive(self, data: bytes | bytearray | memoryview) -> bool:
        """One reader turn: feed input to h2, dispatch its events, check the budgets, flush.

        ``data`` is new input, or empty to go on with the input of the previous turn. A turn
        ends when the input is used up (False) or when it has done its turn's work or fed
        ``_TURN_BYTES`` (True: the reader task yields to the loop, then calls
        ``receive(b"")``). Within a turn h2 gets at most ``_SLICE`` bytes and may
        parse at most a batch of frames per call (``GuardedFrameBuffer.frames_left``),
        so one call's event list stays small however tiny the peer's frames; the flush after
        each call lets the control-reply budget see replies the peer leaves unread.
        """
        h2c = self.h2
        if _tracing(_DEBUG) is not h2c.traced:
            self.trace_frames()
        frames = self._frames
        pool = self.pool
        if pool is None:
            batch, turn, frames.weighted = _CLIENT_TURN
        else:
            batch, turn, frames.weighted = _SMALL_TURN if pool.crowded() else _LARGE_TURN
        unfed = memoryview(data) if data else self._unfed
        self._turn_cost = fed = 0
        while True:
            if frames.has_frame():
                chunk = _NOTHING  # the last call's batch ran out: parse what h2 holds first
            else:
                chunk = unfed[:_SLICE]
                unfed = unfed[_SLICE:]
            frames.frames_left = batch
            try:
                events = h2c.receive_data(chunk)
            except h2.exceptions.ProtocolError as e:
                code = getattr(e, "error_code", ErrorCodes.PROTOCOL_ERROR)
                err = RemoteProtocolError(f"the peer violated HTTP/2: {_h2ext.describe(e)}", code)
                # Its traceback (h2's frames, down to ours holding this connection) would
                # keep the connection in a reference cycle until a full garbage collection:
                # the message says what the peer did.
                e.__traceback__ = None
                err.__cause__ = e
                # h2 queued a GOAWAY with that code unless it failed before parsing a frame
                # (a bad preface): then we send it.
                closed = h2c.state_machine.state is h2.connection.ConnectionState.CLOSED
                self.abort(err, None if closed else code)
                return False
            self._turn_cost += batch - frames.frames_left
            for ev in events:
                self.dispatch(ev)
                if self.closed:
                    return False
            del events  # before the next call builds its list: one batch alive at a time
            if not self.abuse.provoked_resets(h2c.auto_resets):
                self.calm_down("too many streams reset because of the peer's errors or refused")
                return False
            fed += len(chunk)
            more = bool(unfed) or frames.has_frame()
            if more and self._turn_cost < turn and fed < _TURN_BYTES:
                self.flush()
                continue
            self._unfed = unfed if more else _NOTHING
            if not more and (self._header_timeout is not None or pool is not None):
                self._watch_headers()
            if self._new_streams and not more:
                self._hand_over()
            self.flush()
            if self._spawned:
                # Handlers started by this turn run in the next loop iteration; a flush
                # queued now runs right after them in that same iteration, so their
                # responses go out together without waiting for one more iteration.
                self._spawned = False
                self.schedule_flush()
            return more

    def _watch_headers(self) -> None:
        """Input used up: time an unfinished header block and charge it to the budget.

        See ``Config.header_timeout`` and ``Config.max_request_memory``.
        """
        frames = self._frames
        pending = frames.header_pending()
        pool = self.pool
        if pool is not None:
            size = frames.pending_block_size() if pending else 0
            if size != self.partial_held:
                if not self.partial_held:
                    self.partial_since = time.monotonic()
                delta, self.partial_held = size - self.partial_held, size
                pool.charge(self, delta)
        timeout = self._header_timeout
        if timeout is None or self.closed:
            return
        if not pending:
            self._header_since = None
        elif self._header_since is None or self._header_block != frames.header_blocks:
            self._header_since = self.loop.time()
            self._header_block = frames.header_blocks
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(timeout, self._header_expired)

    def _header_expired(self) -> None:
        self._header_timer = None
        since, timeout = self._header_since, self._header_timeout
        if since is None or timeout is None or self.closed:
            return
        left = since + timeout - self.loop.time()
        if left > 0:  # that block ended and a newer one started: time the newer one
            self._header_timer = self.loop.call_later(left, self._header_expired)
            return
        self.calm_down(f"a header block was not completed within {timeout} s")

    def calm_down(self, why: str) -> None:
        """The peer is abusive: GOAWAY(ENHANCE_YOUR_CALM) and close."""
        log.warning("aioh2s: closing connection from %s: %s",
                    self.get_extra_info("peername"), why)
        self.abort(
            ConnectionClosed(f"peer misbehaved: {why}", ErrorCodes.ENHANCE_YOUR_CALM),
            ErrorCodes.ENHANCE_YOUR_CALM,
        )

    def _glitch(self, what: str) -> None:
        if not self.abuse.glitch():
            self.calm_down(f"too many frames without progress ({what})")

    def _control_reply(self) -> None:
        if self.sent_frames != self._sent_at_control:
            # We sent DATA or HEADERS since the last PING/SETTINGS: it measures real
            # traffic, so it is free (as gRPC servers count ping strikes).
            self._sent_at_control = self.sent_frames
        elif not self.abuse.control():
            self.calm_down("PING/SETTINGS frames faster than max_control_rate")
        elif not self.abuse.control_reply(self.buffered()):
            self.calm_down("control frames flooded while our replies go unread")

    # -- event dispatch ------------------------------------------------------------------------

    def dispatch(self, ev: h2.events.Event) -> None:
        """Route one h2 event to its stream or to the connection (the one dispatch point)."""
        t = type(ev)
        if t is h2.events.DataReceived:
            if not ev.flow_controlled_length and not ev.stream_ended:  # type: ignore[attr-defined]
                self._glitch("empty DATA")
            self._on_data(ev)  # type: ignore[arg-type]
        elif t is h2.events.RequestReceived:
            self._on_request_headers(ev)
        elif t in _HEADER_KINDS:
            self._header_priority = ev.priority_updated  # type: ignore[attr-defined]
            self._turn_cost += len(ev.headers) >> 3  # type: ignore[attr-defined]
            s = self.streams.get(ev.stream_id)  # type: ignore[attr-defined]
            if s is not None and t is h2.events.InformationalResponseReceived and len(
                s.informational or ()
            ) >= _MAX_INFORMATIONAL:
                self.stream_error(s, ErrorCodes.ENHANCE_YOUR_CALM,
                                  f"more than {_MAX_INFORMATIONAL} 1xx responses")
            elif s is not None and t is h2.events.TrailersReceived and (
                s.tunnel == TUNNEL_OPEN or (s.tunnel and not self.client)
            ):
                # (On a client, trailers of a refusal, a non-2xx answer, are fine.)
                self.stream_error(s, ErrorCodes.PROTOCOL_ERROR,
                                  "trailers on a CONNECT tunnel: only DATA may follow its"
                                  " HEADERS (RFC 9113 §8.5)")
            elif s is not None:
                s.on_headers(_HEADER_KINDS[t], decode(ev.headers))  # type: ignore[attr-defined]
        elif t is h2.events.StreamEnded:
            s = self.streams.get(ev.stream_id)  # type: ignore[attr-defined]
            if s is not None:
                s.on_end()
        elif t is h2.events.WindowUpdated:
            if ev.delta < 128:  # type: ignore[attr-defined]
                self._glitch("tiny WINDOW_UPDATE")  # data dribble / resource loop
            self._on_window_updated(ev.stream_id)  # type: ignore[attr-defined]
        elif t is h2.events.StreamReset:
            self._on_reset(ev)  # type: ignore[arg-type]
        elif t is h2.events.RemoteSettingsChanged:
            self._control_reply()
            self._on_remote_settings(ev)  # type: ignore[arg-type]
        elif t is h2.events.PingReceived:
            self._control_reply()  # h2 answers it
        elif t is h2.events.PriorityUpdated:
            if ev is not self._header_priority:  # a PRIORITY flag on HEADERS is no glitch
                self._glitch("PRIORITY frame")
        elif t is h2.events.UnknownFrameReceived:
            self._glitch("unknown frame type")
        elif t is h2.events.ConnectionTerminated:
            self.on_goaway(ev)  # type: ignore[arg-type]
        elif t is h2.events.PingAckReceived:
            waiters = self._ping_waiters
            fut = waiters.pop(ev.ping_data, None) if waiters else None  # type: ignore[attr-defined]
            if fut is not None and not fut.done():
                fut.set_result(time.monotonic())
        # SettingsAcknowledged, AlternativeServiceAvailable, ...: nothing to do.

    def _on_request_headers(self, ev: Any) -> None:
        sid = ev.stream_id
        self._turn_cost += len(ev.headers) >> 3
        self._header_priority = ev.priority_updated
        headers = decode(ev.headers)
        if self.goaway_sent is not None and sid > self.goaway_sent:
            # Opened after our final GOAWAY: refused, so the client may retry it elsewhere.
            try:
                self.h2.reset_stream(sid, ErrorCodes.REFUSED_STREAM)
            except h2.exceptions.ProtocolError:
                pass
            return
        pool = self.pool
        if pool is not None:
            cost = sum(len(n) + len(v) for n, v in ev.headers) + 32 * len(ev.headers)
            if not pool.fits(cost):
                # Over the server's budget: refused, safe to retry (maybe elsewhere).
                log.debug("aioh2s: max_request_memory reached, stream %d refused", sid)
                try:
                    self.h2.reset_stream(sid, ErrorCodes.REFUSED_STREAM)
                except h2.exceptions.ProtocolError:
                    pass
                self.schedule_flush()
                return
        s = Stream(self, sid)
        s.headers = headers
        if _expects_continue(ev.headers):
            s.expect_100 = True
        if _connect_of(ev.headers)[0]:
            s.tunnel = TUNNEL_ASKED
        if pool is not None:
            self.abuse.tally(int(time.monotonic()), False)
            s.held = cost
            pool.charge(self, cost)
        self.streams[sid] = s
        self.idle_since = None
        self._spawned = True
        if self._on_request is None:
            # A client does not accept requests; h2 already refuses pushes (ENABLE_PUSH=0).
            self.reset_stream(s, ErrorCodes.REFUSED_STREAM)
            return
        if self._new_streams is None:
            self._new_streams = [s]
        else:
            self._new_streams.append(s)

    def _hand_over(self) -> None:
        """Input parsed: start the handlers of its requests, unless already reset.

        A request reset further on in the same read (Rapid Reset) never costs a handler
        task, however the read falls into turns; there are at most max_concurrent_streams
        of them. The others start in the next loop iteration, before the flush queued
        after them.
        """
        new = self._new_streams or []
        self._new_streams = None
        assert self._on_request is not None
        for s in new:
            if s.error is None and not self.closed:
                self._on_request(s)
            else:
                s.abandon()  # body bytes it buffered give their window back

    def _on_data(self, ev: h2.events.DataReceived) -> None:
        sid = ev.stream_id
        data = ev.data or b""
        flow = ev.flow_controlled_length or 0
        s = self.streams.get(sid)
        if s is None or not s.on_data(data):
            # Nobody will read it (abandoned, reset, unknown): give its window back at once.
            if flow:
                self.h2.acknowledge_received_data(flow, sid)
            return
        if self.body_rate is not None:
            self.body_rate.received(len(data))
        padding = flow - len(data)
        if padding:
            self.h2.acknowledge_received_data(padding, sid)

    def _on_window_updated(self, stream_id: int) -> None:
        if stream_id:
            s = self.streams.get(stream_id)
            if s is not None and (s.out_size or s.send is Send.ENDING):
                self.want_send(s)
                return
        else:
            self.requeue_all()
        if self._sendable:
            # Else there is nothing to pump: the turn's own flush writes what h2 queued (a
            # client's first WINDOW_UPDATE and SETTINGS need no flush of their own).
            self.schedule_flush()

    def _on_reset(self, ev: h2.events.StreamReset) -> None:
        s = self.streams.get(ev.stream_id)
        if s is None:
            return  # a stream we had ended or reset already: the resets crossed, no abuse
        # Rapid Reset is a server's problem: a server resetting our requests (shedding load,
        # refusing uploads) is no abuse of a client.
        if ev.remote_reset and not self.client:
            if not self.abuse.reset():
                self.calm_down("too many stream resets (Rapid Reset)")
                return
            if self.pool is not None:
                self.abuse.tally(int(time.monotonic()), True)
                self.pool.reset()
                if self.closed:
                    return
        code = ev.error_code or 0
        err = StreamReset(ev.stream_id, code, remote=ev.remote_reset)
        if ev.remote_reset and not code and self.client and s.recv is Recv.ENDED:
            # RFC 9113 §8.1, a client rule: RST_STREAM(NO_ERROR) after a complete response
            # means "stop sending the request body"; the response must not be discarded.
            s.fail(err, receiving=False)
            return
        s.fail(err)

    def _on_remote_settings(self, ev: h2.events.RemoteSettingsChanged) -> None:
        changed = ev.changed_settings
        h2c = self.h2
        if h2.settings.SettingCodes.HEADER_TABLE_SIZE in changed:
            # h2 follows any table size the peer announces (up to 2**32-1): clamp it.
            if h2c.encoder.header_table_size > 4096:
                h2c.encoder.header_table_size = 4096
        if h2.settings.SettingCodes.INITIAL_WINDOW_SIZE in changed:
            self.requeue_all()
            if self._sendable:  # (see _on_window_updated)
                self.schedule_flush()
        if h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS in changed:
            self._grant_slots()
        header_list = changed.get(h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE)
        if header_list is not None:
            self.peer_max_header_list = header_list.new_value
        connect = changed.get(h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL)
        if connect is not None and connect.original_value == 1 and connect.new_value == 0:
            # RFC 8441 §3: a sender MUST NOT withdraw it; a client may have decided on it.
            why = "withdrew SETTINGS_ENABLE_CONNECT_PROTOCOL after enabling it (RFC 8441 §3)"
            self.abort(RemoteProtocolError(f"the peer {why}"), ErrorCodes.PROTOCOL_ERROR)
            return
        if not self._settled:
            self._settled = True
            fut = self._settings_waiter
            if fut is not None:
                self._settings_waiter = None
                if not fut.done():
                    fut.set_result(None)
            if self._handshake_timer is not None:
                self._handshake_timer.cancel()
                self._handshake_timer = None

    # -- what streams ask of the connection ----------------------------------------------------

    def send_headers(self, s: Stream, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        """Hand checked headers to h2; raises before any state changed."""
        if self.error is not None:
            raise self.error
        if self.peer_max_header_list is not None:
            self.check_header_list(s.id, headers, "headers")
        try:
            self.h2.send_headers(s.id, headers, end_stream=end)
            self.sent_frames += 1
        except h2.exceptions.ProtocolError as e:
            raise LocalProtocolError(
                f"cannot send these headers on stream {s.id}: {_h2ext.describe(e)}"
            ) from e
        if end and self.client and self.open_outbound == 1 and self._flush_handle is None:
            # A lone complete request: nothing else can join this write, so send it now
            # rather than a loop iteration later (request latency, 1-at-a-time clients).
            self.flush()
            return
        self.schedule_flush()

    def check_header_list(self, stream_id: int, headers: list[tuple[bytes, bytes]],
                          what: str) -> None:
        """LocalProtocolError if ``headers`` exceed the peer's SETTINGS_MAX_HEADER_LIST_SIZE.

        A peer that receives more may (and most do) treat it as a connection error: every
        stream of the connection would die for one oversized header block (RFC 9113 §10.5.1).
        """
        limit = self.peer_max_header_list
        if limit is None:
            return
        size = 32 * len(headers)  # RFC 9113 §6.5.2: name, value and 32 bytes per field
        for n, v in headers:
            size += len(n) + len(v)
        if size > limit:
            raise LocalProtocolError(
                f"the {what} of stream {stream_id} are {size} bytes as HTTP/2 counts them"
                f" (RFC 9113 §6.5.2), more than the {limit} the peer accepts"
                " (its SETTINGS_MAX_HEADER_LIST_SIZE): nothing was sent"
            )

    def stream_error(self, s: Stream, code: int, why: str) -> None:
        """The peer broke a rule on stream ``s``: RST_STREAM(code); the stream fails with why."""
        if s.closed or self.closed:
            return
        try:
            self.h2.app_reset_stream(s.id, code)
        except h2.exceptions.ProtocolError:
            pass
        s.fail(RemoteProtocolError(f"stream {s.id}: the peer sent {why}", code))
        self.schedule_flush()

    def reset_stream(self, s: Stream, code: int) -> None:
        """Send RST_STREAM(code) unless the stream already ended; fail it locally."""
        if not isinstance(code, int) or isinstance(code, bool) or not 0 <= code <= 0xFFFFFFFF:
            raise ValueError(f"an HTTP/2 error code is an int of 0..2**32-1, not {code!r}")
        if s.closed or self.closed:
            return
        try:
            self.h2.app_reset_stream(s.id, code)
        except h2.exceptions.ProtocolError:
            pass  # h2 sees it closed already (our END_STREAM crossed the peer's): fail it here
        s.fail(StreamReset(s.id, code, remote=False))
        self.schedule_flush()

    def acknowledge(self, s: Stream, n: int) -> None:
        """The application consumed ``n`` bytes of ``s``: the peer may send that much more."""
        if self.closed or s.unflowed:
            return
        h2c = self.h2
        h2c.acknowledge_received_data(n, s.id)
        # h2 batches WINDOW_UPDATEs: most acknowledgements produce no frame, and a needless
        # flush would cost a loop iteration on every read.
        if getattr(h2c, "_data_to_send", True):
            self.schedule_flush()

    def peer_may_send(self) -> bool:
        """Whether the peer has window to send body bytes, as far as we can tell.

        Not if the connection window we gave it is low (our handlers' unread bytes hold
        it), nor while our own output waits in the transport: the WINDOW_UPDATEs we queued
        may sit behind response data that a slow downlink has not taken yet.
        """
        return (self.h2.inbound_flow_control_window >= _LOW_WINDOW
                and not self.transport.get_write_buffer_size())

    def stream_closed(self, s: Stream) -> None:
        """Both sides of ``s`` are over: forget it and give its slot back."""
        if s.held:
            if self.pool is not None:
                self.pool.charge(self, -s.held)
            s.held = 0
        if self.streams.pop(s.id, None) is not None and self.client:
            self.open_outbound -= 1
            self._grant_slots()
        if not self.streams:
            self.idle_since = time.monotonic()
            # Idle: what its streams left behind goes (a dict keeps the size it grew to).
            self.streams = {}
            self.h2.forget_closed_streams()
            self.maybe_finish_close()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """The transport's extra info (``peername``, ``ssl_object``, ...)."""
        return self.transport.get_extra_info(name, default)
