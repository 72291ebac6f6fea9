"""The outbound scheduler: queued stream bytes into DATA frames, h2's output into the transport.

Theory of operation
-------------------
``write()`` only queues on the stream and calls :meth:`Sender.want_send`, which puts the
stream in a round-robin (``_sendable``) and schedules one :meth:`Sender.flush` with
``loop.call_soon``: many writes in one loop iteration become one pass and few
``transport.write`` calls. A flush:

1. pumps (:meth:`Sender._pump`): one DATA frame per stream per turn, each limited by the
   stream window, the connection window, ``max_outbound_frame_size`` and the transport budget
   (``transport_high_water`` minus what the transport already holds). A stream that ran out of
   stream window leaves the round-robin until a WINDOW_UPDATE brings it back; one that only
   lacks connection window or budget keeps its turn. END_STREAM and trailers need no window
   and go out as soon as the body before them has;
2. writes h2's output (in 64 KiB pieces while pumping: a transient buffer of hundreds of KiB
   would be a fresh mmap page-faulted in on every flush);
3. checks backpressure: once the transport holds more than ``transport_high_water`` the
   connection is ``write_blocked``: drain() waiters keep waiting and a task waits for the
   transport to drain, then unblocks and flushes again. The reader task goes on reading
   (stopping would deadlock two full-duplex peers); what reading makes us send is bounded by
   flow control and the abuse budgets.

Nothing is written once the connection stops writing (``Life.may_write``) or asyncio has
begun closing the transport: writing into a dead socket only produces asyncio warnings.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import TYPE_CHECKING

import h2.exceptions

from ._state import Life, Send
from ._stream import Stream
from .errors import ConnectionClosed, ProtocolError

if TYPE_CHECKING:
    from ._h2ext import H2
    from ._wire import Wire
    from .config import Config

__all__ = ["Sender"]

log = logging.getLogger("aioh2s")

# Most bytes the pump lets h2 hold before writing them out (below glibc's 128 KiB mmap
# threshold, so the buffers come from the heap and are reused).
_WRITE_CHUNK = 64 * 1024


class Sender:
    """The outbound half of a connection (a mixin of ``Connection``, which owns the state)."""

    loop: asyncio.AbstractEventLoop
    h2: H2
    config: Config
    life: Life
    transport: asyncio.WriteTransport
    wire: Wire
    streams: dict[int, Stream]
    write_blocked: bool
    _budget_hit: bool
    #: The round-robin; None while empty (an empty deque costs ~760 bytes, and most idle
    #: connections have nothing to send).
    _sendable: collections.deque[Stream] | None
    sent_frames: int
    writes: int
    _flush_handle: asyncio.Handle | None
    _drain_task: asyncio.Task[None] | None

    if not TYPE_CHECKING:
        # No storage of its own, so that Connection's instances need no dict (hidden from
        # mypy, which would then reject the attributes Connection's slots provide).
        __slots__ = ()

    if TYPE_CHECKING:
        def abort(self, exc: ConnectionClosed | ProtocolError, code: int | None) -> None: ...

    def want_send(self, s: Stream) -> None:
        """``s`` has bytes or an end to send: give it a turn and schedule a flush."""
        if not s.queued:
            s.queued = True
            self._round_robin().append(s)
        self.schedule_flush()

    def _round_robin(self) -> collections.deque[Stream]:
        rr = self._sendable
        if rr is None:
            rr = self._sendable = collections.deque()
        return rr

    def schedule_flush(self) -> None:
        if self._flush_handle is None and self.life.may_write:
            self._flush_handle = self.loop.call_soon(self.flush)

    def flush(self) -> None:
        """Move queued stream data into h2 (round-robin), then write h2's bytes once."""
        self._flush_handle = None
        if not self.life.may_write or self.transport.is_closing():
            return
        if self._sendable:
            self._budget_hit = False
            try:
                self._pump()
            except Exception as e:
                # A bug here would strand every queued stream without a word: end the
                # connection loudly instead, so every waiter gets an error.
                log.exception("aioh2s: internal error while sending")
                err = ConnectionClosed(f"internal error in aioh2s: {e!r}", 2)
                err.__cause__ = e
                self.abort(err, 2)  # INTERNAL_ERROR
                return
        data = self.h2.data_to_send()
        if data:
            self.transport.write(data)
            self.writes += 1
        self._check_write_blocked()
        if self._budget_hit and self.life.may_write:
            # Part of what we wrote went straight to the socket, so the transport may not be
            # paused; still, more is queued. Wait for drain() (immediate when not paused) and
            # pump again, yielding to the loop in between.
            self._budget_hit = False
            self._resume_when_drained()

    def _pump(self) -> None:
        h2c = self.h2
        rr = self._round_robin()
        max_frame = h2c.max_outbound_frame_size
        # asyncio pauses the transport when it holds *more* than the high-water mark; stop at
        # the same point so that waiting for drain() then really waits.
        budget = self.config.transport_high_water + 1 - self.buffered()
        stuck: list[Stream] = []  # have data, but no connection window or transport budget
        unwritten = 0
        ending = Send.ENDING
        while rr:
            s = rr.popleft()
            state = s.send
            if state is not Send.OPEN and state is not ending:
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
                end = s.out_size == 0 and state is ending and s.trailers_out is None
                h2c.send_data(s.id, data, end_stream=end)
                self.sent_frames += 1
                budget -= n + 9
                unwritten += n + 9
                if unwritten >= _WRITE_CHUNK:
                    self.transport.write(h2c.data_to_send())
                    self.writes += 1
                    unwritten = 0
                if end:
                    s.queued = False
                    s.on_send_ended()
                    continue
                s.wake_drain()
            if not s.out_size and s.send is ending:
                if s.trailers_out is None:
                    h2c.end_stream(s.id)
                else:
                    h2c.send_headers(s.id, s.trailers_out, end_stream=True)
                s.queued = False
                s.on_send_ended()
                continue
            if s.out_size:
                rr.append(s)
            else:
                s.queued = False
        if stuck:
            # (A stream's end can close the connection's last stream and flush again from
            # in here, dropping rr when that nested pump emptied it.)
            self._round_robin().extend(stuck)
        elif not rr and self._sendable is rr:
            self._sendable = None  # idle again: give the deque back

    def requeue_all(self) -> None:
        """Every stream with something to send gets a turn (a window or the transport opened)."""
        for s in self.streams.values():
            if (s.out_size or s.send is Send.ENDING) and not s.queued:
                s.queued = True
                self._round_robin().append(s)

    # -- transport backpressure ----------------------------------------------------------------

    def buffered(self) -> int:
        """Bytes the transport holds, 0 once it is gone."""
        try:
            return self.transport.get_write_buffer_size()
        except AttributeError:
            # Python 3.10's SSL transport after connection_lost (its _transport is None);
            # the reader task is about to see the loss and end the connection.
            return 0

    def _check_write_blocked(self) -> None:
        blocked = self.buffered() > self.config.transport_high_water
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
            await self.wire.drain()
        except (ConnectionError, OSError, RuntimeError):
            pass  # the reader task sees the loss and ends the connection
        finally:
            self._drain_task = None
            self._unblock()

    def _unblock(self) -> None:
        self.write_blocked = False
        self.requeue_all()
        if self.life.may_write:
            self.flush()
        for s in list(self.streams.values()):
            s.wake_drain()
