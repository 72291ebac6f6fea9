"""How a connection ends: graceful GOAWAY, grace period, linger, timers, and teardown.

Theory of operation
-------------------
The moves between connection states are the table ``_state.LIFE_MOVES``; every move goes
through :meth:`Lifecycle.enter`, which refuses one the table does not list.

Graceful close (RFC 9113 §6.8), started by :meth:`Lifecycle.start_close`:

1. A server first sends a PING and GOAWAY(2^31-1): "stop opening streams". Streams the
   client opened before it saw that are still processed. When the PING's ACK arrives (one
   round trip: every such stream has arrived by then) or after at most a second, the final
   GOAWAY names the last stream we processed; later streams are refused (REFUSED_STREAM,
   safe to retry). A client takes no streams: it refuses new requests at once and sends its
   GOAWAY when its last request ended (stock h2 servers answer nothing after a GOAWAY).
2. Open streams may finish until the grace period ends; then they are reset (CANCEL). A
   second ``start_close`` with a shorter grace shortens it.
3. With no stream left, the connection *lingers*: we read and discard until the peer closes,
   because closing a socket that then receives data (a WINDOW_UPDATE from a peer still
   reading our last response, say) makes the kernel send a reset, which destroys what the
   kernel still had to send and, in most clients, what they had received but not yet read.
   Over TCP our write side is shut at once (FIN after the buffered bytes). The linger ends
   when the peer closes, when the peer's TCP has acknowledged everything we sent
   (``Wire.delivered``) and the peer has sent nothing for ``linger`` seconds, or at the
   deadline: ``linger`` seconds, or the rest of the grace period if longer (a peer that
   reads nothing gets that long). Where the kernel's send queue cannot be read, only the
   peer's close or the deadline ends it.

   TLS has no half-close that asyncio keeps reading through: once our close_notify is out,
   OpenSSL refuses the peer's application data (APPLICATION_DATA_AFTER_CLOSE_NOTIFY) and
   asyncio's SSL transport aborts the socket, with the rest of a response for a slow reader
   still in the kernel's send queue. So a server sends close_notify only when the linger
   would end over TCP; then the SSL layer finishes and ``linger`` seconds later at most we
   abort. A client sends it at once: it lingers only once every response was read in full,
   so nothing it sent is still needed, and a server waiting for it would keep
   ``client.close()`` waiting too.

A received graceful GOAWAY fails our streams above its last stream id (not processed: safe to
retry), lets the others finish, refuses new requests with a retry-safe
``ConnectionTerminated``, and then ends the same way. A GOAWAY with an error ends at once.

Teardown (:meth:`Lifecycle.fail`) is written so that no step can stop the steps after it:
the closed signal is set and every waiter failed even if the transport misbehaves. (asyncio's
SSL transport on 3.11+ drops its protocol when ``close()`` is called a second time, and any
later call but ``abort()``/``is_closing()`` then raises AttributeError.)
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from h2.errors import ErrorCodes
from h2.events import ConnectionTerminated as GoAwayReceived

from . import _aio
from ._state import LIFE_MOVES, Life
from .errors import ConnectionClosed, ConnectionTerminated, ProtocolError

if TYPE_CHECKING:
    from ._budgets import BodyRate
    from ._h2ext import H2
    from ._stream import Stream
    from ._wire import Wire
    from .config import Config

__all__ = ["Lifecycle", "not_sent"]

log = logging.getLogger("aioh2s")

_SHUTDOWN_RTT = 1.0  # seconds to wait for the §6.8 PING's ACK before the final GOAWAY
# Seconds between two looks at a lingering connection whose bytes are still on their way: one
# cheap ioctl each, for connections that are closing anyway.
_LINGER_POLL = 0.25


def not_sent(err: ConnectionClosed) -> ConnectionClosed:
    """The error for a request refused before it was sent: always safe to retry."""
    text = str(err).split("; stream ")[0]
    copy = type(err)(
        f"{text}; the request was not sent and is safe to retry on a new connection",
        err.error_code, err.last_stream_id, True,
    )
    copy.__cause__ = err.__cause__
    return copy


def _goaway_error(ev: GoAwayReceived) -> ConnectionTerminated:
    code = ev.error_code or 0
    last = ev.last_stream_id or 0
    extra = ""
    if ev.additional_data:
        extra = ": " + ev.additional_data[:200].decode("utf-8", "replace")
    try:
        name = ErrorCodes(code).name
    except ValueError:
        name = hex(code)
    return ConnectionTerminated(
        f"the peer sent GOAWAY with {name} (last stream id {last}){extra}", code, last
    )


class Lifecycle:
    """Closing and ending a connection (a mixin of ``Connection``, which owns the state)."""

    loop: asyncio.AbstractEventLoop
    client: bool
    h2: H2
    config: Config
    life: Life
    transport: asyncio.WriteTransport
    wire: Wire
    streams: dict[int, Stream]
    error: ConnectionClosed | None
    closing_error: ConnectionClosed | None
    goaway_sent: int | None
    _shutdown_timer: asyncio.TimerHandle | None
    _grace_timer: asyncio.TimerHandle | None
    _grace_deadline: float | None
    _deferred_close: tuple[float, asyncio.TimerHandle] | None
    _linger_timer: asyncio.TimerHandle | None
    _linger_deadline: float
    _handshake_timer: asyncio.TimerHandle | None
    _header_timer: asyncio.TimerHandle | None
    body_rate: BodyRate | None
    _tick_timer: asyncio.TimerHandle | None
    _keepalive_task: asyncio.Task[None] | None
    _reader_task: asyncio.Task[None] | None
    _drain_task: asyncio.Task[None] | None
    _flush_handle: asyncio.Handle | None
    _sendable: collections.deque[Stream] | None
    _slot_waiters: collections.deque[asyncio.Future[bool]] | None
    _ping_waiters: dict[bytes, asyncio.Future[float]] | None
    _settled: bool
    _settings_waiter: asyncio.Future[None] | None
    _ended: bool
    _closed_waiter: asyncio.Future[None] | None
    idle_since: float | None
    last_activity: float
    writes: int
    on_slots: Callable[[], None] | None
    on_closing: list[Callable[[], None]] | None

    if not TYPE_CHECKING:
        # No storage of its own, so that Connection's instances need no dict (hidden from
        # mypy, which would then reject the attributes Connection's slots provide).
        __slots__ = ()

    if TYPE_CHECKING:
        def flush(self) -> None: ...
        def reset_stream(self, s: Stream, code: int) -> None: ...
        def get_extra_info(self, name: str, default: Any = None) -> Any: ...

    @property
    def closed(self) -> bool:
        """The connection has ended (every stream failed, the transport closed or closing)."""
        return self.life is Life.CLOSED

    @property
    def closing(self) -> bool:
        """No new streams: GOAWAY was sent or received, or the connection ended."""
        return self.life is not Life.OPEN and self.life is not Life.NEW

    def enter(self, new: Life) -> None:
        """Move to ``new``; a move ``LIFE_MOVES`` does not list is a bug in aioh2s."""
        if new is self.life:
            return
        if new not in LIFE_MOVES[self.life]:
            raise RuntimeError(f"aioh2s bug: connection cannot go from {self.life} to {new}")
        self.life = new

    # -- graceful close ------------------------------------------------------------------------

    def start_close(self, grace: float | None = None) -> None:
        """Graceful close (see the module docstring); ``grace`` defaults to ``config.grace``.

        Calling it again with a shorter grace period shortens the one in force.
        """
        if self.life is Life.CLOSED or self.life is Life.LINGER:
            return
        if self.life is Life.NEW:
            self.close_when_spoken(grace)  # (no GOAWAY may be sent yet)
            return
        self._close_gracefully(grace)

    def close_for_shutdown(self, grace: float | None = None) -> None:
        """``Server.close()``'s graceful close: :meth:`start_close`, after a first request.

        A connection that has made no request yet first gets the time to make one
        (:meth:`close_when_spoken`).
        """
        if self.life is Life.OPEN and self.h2.highest_inbound_stream_id == 0:
            self.close_when_spoken(grace)
        else:
            self.start_close(grace)

    def _close_gracefully(self, grace: float | None) -> None:
        if self._deferred_close is not None:  # this close supersedes it
            self._deferred_close[1].cancel()
            self._deferred_close = None
        g = self.config.grace if grace is None else max(0.0, grace)
        deadline = time.monotonic() + g
        if self._grace_deadline is None or deadline < self._grace_deadline:
            if self._grace_timer is not None:
                self._grace_timer.cancel()
            self._grace_timer = self.loop.call_later(g, self._grace_expired)
            self._grace_deadline = deadline
        self.enter(Life.CLOSING)
        if self.closing_error is None:
            self.closing_error = ConnectionClosed(
                "the connection is closing (close() was called on this side)", 0, None, True
            )
        callbacks = self.on_closing
        if callbacks:
            self.on_closing = None  # once: a shorter grace given later changes nothing here
            for cb in callbacks:
                self.loop.call_soon(cb)
        self._fail_slot_waiters()
        if self.goaway_sent is None and self._shutdown_timer is None and not self.client:
            if g == 0:
                self._send_final_goaway()
            else:
                self._warn_of_goaway(min(_SHUTDOWN_RTT, g))
        # A client's GOAWAY tells the server nothing it needs while our requests run (we take
        # no pushes: its last stream id is 0), and stock h2 servers stop answering once they
        # received one: the client sends it when its last stream ended (maybe_finish_close).
        self.maybe_finish_close()

    def close_when_spoken(self, grace: float | None = None) -> None:
        """Close gracefully, but only once the peer made its first requests (or had the time).

        For a server's connection that has not made a request yet: ``start_close`` in
        ``NEW`` comes here, ``Server.close()`` for one in ``OPEN`` with no stream from the
        peer so far (:meth:`close_for_shutdown`), and a connection accepted after it. Its
        client is most likely sending its first request already (a rolling restart closes
        servers under load, and many clients open a connection per request): a GOAWAY now,
        even the first one naming 2^31-1, would make it refuse that request, which such a
        client does not retry, and in ``NEW`` a GOAWAY could not even be sent (§3.4).
        So the peer gets ``first_request_wait`` seconds, at most the grace period (0 by
        default for ``start_server()``, 1 s in ``serve()``'s workers): its first requests
        (the server calls :meth:`spoken` as they arrive) are served, then the graceful close
        starts; a silent peer gets the graceful close after that time, or is closed without
        a word if it never spoke HTTP/2. (Go's server waits similarly, 5 s, for the first
        request of a new connection before its Shutdown closes it as idle.) It defers once:
        :meth:`spoken` starts the real close.
        """
        g = self.config.grace if grace is None else max(0.0, grace)
        wait = min(g, self.config.first_request_time)
        deadline = time.monotonic() + g
        pending = self._deferred_close
        if pending is not None:
            if deadline >= pending[0]:
                return
            pending[1].cancel()
        self._deferred_close = (deadline, self.loop.call_later(wait, self.spoken))
        if wait <= 0:
            self.spoken()

    def spoken(self) -> None:
        """The peer's first requests are in, or its time is up: start the deferred close."""
        pending = self._deferred_close
        if pending is None:
            return
        self._deferred_close = None
        pending[1].cancel()
        if self.life is Life.NEW:
            self.fail(ConnectionClosed("the server closed the connection before it started"))
        elif self.life is Life.OPEN or self.life is Life.CLOSING:
            self._close_gracefully(max(0.0, pending[0] - time.monotonic()))

    def _warn_of_goaway(self, wait: float) -> None:
        # PING before GOAWAY: stock h2 (and so httpx) takes no frame but GOAWAY once it has
        # received one; the ACK still proves that every stream sent before it has arrived.
        opaque = b"aioh2s\x00\x01"
        fut: asyncio.Future[float] = self.loop.create_future()
        self._pings()[opaque] = fut
        fut.add_done_callback(lambda _: self._send_final_goaway())
        self.h2.ping(opaque)
        self.h2.send_graceful_goaway(2**31 - 1)
        self._shutdown_timer = self.loop.call_later(wait, self._send_final_goaway)
        self.flush()

    def _send_final_goaway(self) -> None:
        if self._shutdown_timer is not None:
            self._shutdown_timer.cancel()
            self._shutdown_timer = None
        if self.goaway_sent is not None or not self.life.may_write:
            return
        last = self.h2.highest_inbound_stream_id
        self.goaway_sent = last
        self.h2.send_graceful_goaway(last)
        self.flush()
        self.maybe_finish_close()

    def _grace_expired(self) -> None:
        self._grace_timer = None
        if not self.life.may_write:
            return
        self._send_final_goaway()
        for s in list(self.streams.values()):
            self.reset_stream(s, ErrorCodes.CANCEL)
        self.maybe_finish_close()

    def maybe_finish_close(self) -> None:
        """Closing, final GOAWAY out (or the peer said goodbye first), no streams: linger."""
        if self.life is not Life.CLOSING or self.streams or self._shutdown_timer is not None:
            return
        if self.goaway_sent is None:
            self._send_final_goaway()  # the peer's GOAWAY started this: answer it
            if self.life is not Life.CLOSING:
                return
        self.flush()
        self.enter(Life.LINGER)
        for timer in (self._grace_timer, self._handshake_timer):
            if timer is not None:
                timer.cancel()
        now = time.monotonic()
        deadline = now + self.config.linger
        if self._grace_deadline is not None:
            # A peer still reading responses gets the rest of the grace period.
            deadline = max(deadline, self._grace_deadline)
        self._linger_deadline = deadline
        t = self.transport
        if not t.is_closing():
            try:
                if t.can_write_eof():
                    t.write_eof()
                elif self.client:
                    t.close()  # TLS: close_notify after the buffered bytes (module docstring)
            except (OSError, RuntimeError) as e:
                # The peer is already gone (ENOTCONN after its reset): nothing to linger for.
                self.fail(self.ended_error(f"the connection was lost: {e!r}"), abort=True)
                return
        # First look on the next turn of the loop: no teardown from inside the caller's step.
        self._linger_timer = self.loop.call_later(0, self._linger_check)

    def _linger_check(self) -> None:
        """End the linger if the peer has had its chance (module docstring), else look later."""
        self._linger_timer = None
        t = self.transport
        now = time.monotonic()
        left = self._linger_deadline - now
        if left <= 0:
            self._linger_expired()
            return
        if t.is_closing():
            # A TLS client's close_notify is out, or the peer's close is under way: only the
            # deadline is left to watch (3.10's SSL transport raises when asked more).
            self._linger_timer = self.loop.call_later(left, self._linger_expired)
            return
        delivered = self.wire.delivered()
        if delivered is None:
            wait = left  # the kernel's queue is unknown: the peer's close or the deadline
        elif not delivered:
            wait = _LINGER_POLL
        else:
            # Everything we sent has reached the peer's kernel; a peer still reading it sends
            # WINDOW_UPDATEs as it goes, so wait until it has been quiet for ``linger``.
            wait = self.last_activity + self.config.linger - now
        if wait > 0:
            self._linger_timer = self.loop.call_later(min(wait, left), self._linger_check)
            return
        if t.can_write_eof():
            self._linger_expired()  # our FIN is acknowledged too: nothing left to give
            return
        t.close()  # TLS: close_notify now; the SSL layer then waits for the peer's answer
        self._linger_timer = self.loop.call_later(
            min(self.config.linger, left), self._linger_expired)

    def _linger_expired(self) -> None:
        self._linger_timer = None
        self.fail(self.ended_error("the connection was closed"), abort=True)

    def ended_error(self, text: str) -> ConnectionClosed:
        """The connection's error when it ends for ``text``, keeping a GOAWAY's reason."""
        if self.closing_error is not None:
            return self.closing_error
        return ConnectionClosed(text)

    def on_goaway(self, ev: GoAwayReceived) -> None:
        err = _goaway_error(ev)
        if err.error_code != ErrorCodes.NO_ERROR:
            self.abort(err, None)
            return
        # Graceful: streams we opened above `last` were not processed (safe to retry); the
        # others may finish. No new streams from here on.
        if self.life is Life.OPEN:
            self.enter(Life.CLOSING)
        if self.closing_error is None or not isinstance(self.closing_error, ConnectionTerminated):
            self.closing_error = err
        last = err.last_stream_id or 0
        mine = 1 if self.client else 0
        for s in list(self.streams.values()):
            if s.id > last and s.id % 2 == mine:
                s.fail(err.for_stream(s.id))
        self._fail_slot_waiters()
        self.maybe_finish_close()

    def _fail_slot_waiters(self) -> None:
        # No new streams from here on: a Session's pool stops offering this connection.
        if self.on_slots is not None:
            self.on_slots()
        waiters = self._slot_waiters
        if not waiters:
            return
        for fut in waiters:
            if not fut.done():
                fut.set_result(False)
        waiters.clear()

    # -- keepalive and idle timeout ------------------------------------------------------------

    def start_timers(self) -> None:
        cfg = self.config
        if cfg.keepalive_interval is not None or (cfg.idle_timeout is not None and not self.client):
            self._arm_tick()

    # A timer callback, not a task: a task sleeping in a loop costs an idle connection ~1.2 KB
    # (task, coroutine frame, sleep future), a TimerHandle ~200 bytes. Only a keepalive PING,
    # which waits for its ACK, runs in a task of its own; ticking resumes once it is answered.

    def _arm_tick(self) -> None:
        if not self.life.may_write:
            return
        cfg = self.config
        idle = cfg.idle_timeout if not self.client else None  # a client decides for itself
        tick = min(x for x in (cfg.keepalive_interval, idle) if x is not None) / 4
        self._tick_timer = self.loop.call_later(tick, self._tick)

    def _tick(self) -> None:
        self._tick_timer = None
        cfg = self.config
        interval = cfg.keepalive_interval
        idle = cfg.idle_timeout if not self.client else None
        now = time.monotonic()
        if idle is not None and self.idle_since is not None and now - self.idle_since >= idle:
            log.debug("aioh2s: idle for %.1f s, closing", now - self.idle_since)
            self.start_close()
            return
        if interval is not None and now - self.last_activity >= interval:
            if self.error is None and self.life.may_write:  # else ping() would refuse: stop
                self._keepalive_task = self.loop.create_task(self._keepalive())
            return
        self._arm_tick()

    async def _keepalive(self) -> None:
        cfg = self.config
        try:
            await self.ping(timeout=cfg.keepalive_timeout)
        except asyncio.TimeoutError:
            self.abort(
                ConnectionClosed(f"keepalive PING not answered within {cfg.keepalive_timeout} s"),
                ErrorCodes.NO_ERROR,
            )
            return
        except ConnectionClosed:
            return
        finally:
            self._keepalive_task = None
        self._arm_tick()

    # -- ping (keepalive and the application's) ---------------------------------------------

    async def ping(self, timeout: float | None = None) -> float:
        """Send PING and return the round-trip time in seconds."""
        if self.error is not None:
            raise self.error
        if not self.life.may_write:
            raise ConnectionClosed("the connection is closed")
        waiters = self._pings()
        opaque = time.monotonic_ns().to_bytes(8, "big")
        while opaque in waiters:
            opaque = (int.from_bytes(opaque, "big") + 1).to_bytes(8, "big")
        fut: asyncio.Future[float] = self.loop.create_future()
        waiters[opaque] = fut
        start = time.monotonic()
        self.h2.ping(opaque)
        self.flush()
        try:
            end = await _aio.wait_for(fut, timeout)
        finally:
            waiters.pop(opaque, None)
        return end - start

    def _pings(self) -> dict[bytes, asyncio.Future[float]]:
        """PING payload -> the future its ACK resolves (created on first use)."""
        waiters = self._ping_waiters
        if waiters is None:
            waiters = self._ping_waiters = {}
        return waiters

    # -- ending the connection -----------------------------------------------------------------

    def abort(self, exc: ConnectionClosed | ProtocolError, code: int | None) -> None:
        """End the connection now: optional GOAWAY(code), flush, fail everything, close."""
        if not self.life.may_write:
            if self.life is not Life.CLOSED:
                self.fail(_as_closed(exc))
            return
        if code is not None and not (code == ErrorCodes.NO_ERROR and self.goaway_sent is not None):
            try:
                self.h2.close_connection(error_code=code)
            except Exception:  # noqa: BLE001 - h2 may refuse in its CLOSED state; we end anyway
                pass
        t = self.transport
        if not t.is_closing():
            data = self.h2.data_to_send()
            if data:
                t.write(data)
                self.writes += 1
        self.fail(_as_closed(exc))

    def close_now(self, code: int = ErrorCodes.NO_ERROR) -> None:
        """Send GOAWAY(code) and close at once, failing open streams."""
        self.abort(ConnectionClosed("the connection was closed locally", code), code)

    def fail(self, exc: ConnectionClosed, *, abort: bool = False) -> None:
        """Teardown: every stream and waiter fails with ``exc``; the transport is closed.

        ``abort`` drops what the transport still buffers (the peer had its chance).
        """
        if self.life is Life.CLOSED:
            return
        self.life = Life.CLOSED  # from any state (LIFE_MOVES allows CLOSED from all)
        self.error = exc
        try:
            self._stop_timers()
            writes = self.writes
            mine = 1 if self.client else 0
            for s in list(self.streams.values()):
                if s.id % 2 == mine:
                    s.fail(exc.for_stream(s.id, unsent=s.sent_mark == writes))
                else:  # the peer's stream: whether it may retry is not ours to say
                    s.fail(exc.for_stream(0))
            self.streams.clear()
            self._sendable = None
            self._fail_slot_waiters()
            pings = self._ping_waiters
            if pings:
                for pfut in pings.values():
                    if not pfut.done():
                        pfut.set_exception(exc)
                        pfut.exception()  # mark retrieved: nobody may be awaiting it any more
                pings.clear()
            sfut = self._settings_waiter
            if sfut is not None and not sfut.done():
                sfut.set_exception(exc)
                sfut.exception()
            self._close_transport(abort)
        finally:
            current = asyncio.current_task()
            for task in (self._reader_task, self._drain_task, self._keepalive_task):
                if task is not None and task is not current and not task.done():
                    task.cancel()
            self._ended = True
            cfut = self._closed_waiter
            if cfut is not None and not cfut.done():
                cfut.set_result(None)

    def _stop_timers(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        for timer in (self._handshake_timer, self._grace_timer, self._shutdown_timer,
                      self._linger_timer, self._header_timer, self._tick_timer):
            if timer is not None:
                timer.cancel()
        if self._deferred_close is not None:
            self._deferred_close[1].cancel()
            self._deferred_close = None
        self._handshake_timer = self._grace_timer = self._shutdown_timer = None
        self._header_timer = self._tick_timer = None
        self._linger_timer = None
        if self.body_rate is not None:
            self.body_rate.cancel()

    def _close_transport(self, abort: bool) -> None:
        t = self.transport
        if t.is_closing():
            # asyncio closed it (the peer is gone) or we did while lingering: only abort() is
            # still safe to call on it.
            if abort:
                t.abort()
            return
        if abort:
            t.abort()
            return
        t.close()
        # close() waits for the buffer to drain (and TLS for the peer's close_notify); a peer
        # that never reads or answers must not keep the socket open for long.
        self.loop.call_later(self.config.linger, _abort_quietly, t)

    async def wait_closed(self) -> None:
        """Wait until the connection ended and the reader task finished."""
        if not self._ended:
            fut = self._closed_waiter
            if fut is None:
                fut = self._closed_waiter = self.loop.create_future()
            await asyncio.shield(fut)
        task = self._reader_task
        if task is not None and task is not asyncio.current_task():
            try:
                await task
            except asyncio.CancelledError:
                pass
        await self.wire.wait_closed()


def _abort_quietly(t: asyncio.WriteTransport) -> None:
    try:
        t.abort()
    except (AttributeError, RuntimeError):
        pass  # closed for good meanwhile (3.12's transports drop their loop when done)


def _as_closed(exc: ConnectionClosed | ProtocolError) -> ConnectionClosed:
    if isinstance(exc, ConnectionClosed):
        return exc
    err = ConnectionClosed(str(exc), exc.error_code)
    err.__cause__ = exc
    return err
