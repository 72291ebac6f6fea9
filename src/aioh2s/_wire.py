"""The socket side of one connection: a bounded read buffer, write backpressure, a closed signal.

Theory of operation
-------------------
:class:`Wire` is the asyncio protocol of every aioh2s connection, in place of the
``StreamReader``/``StreamWriter`` pair that ``asyncio.open_connection`` builds. It exists for
memory: a plain ``Protocol`` makes the transport ``recv()`` 256 KiB into a fresh ``bytes``
each time, which the ``StreamReader`` then copies into a buffer that may hold twice its limit
plus that read. Under a flood of small frames that is most of a connection's memory. As a
``BufferedProtocol``, the transport reads into one scratch buffer per thread (one event loop
runs per thread, and the ``get_buffer``/``buffer_updated`` pair is a single synchronous step
in every asyncio transport and in uvloop, so sharing it is safe), and ``buffer_updated``
appends what arrived to this connection's input. Reading pauses once the input holds
``limit`` bytes and resumes when the reader task takes it. While the reader task works
through what it took (in bounded turns, yielding in between) the next input gathers, so one
connection holds at most about twice ``limit`` plus two scratch buffers of unparsed input; an
idle one holds nothing.

Over TLS on Python 3.11+, asyncio's SSL protocol asks for a buffer as large as the encrypted
bytes it holds (``sizehint``) and, when the peer closes, reads into it only once: a smaller
buffer would lose the rest of what the peer sent before closing. So the scratch buffer grows
to the largest ``sizehint`` seen (bounded by what the SSL layer buffers, a few hundred KiB).

The write side mirrors ``StreamWriter``'s flow control: the transport calls
``pause_writing``/``resume_writing`` around its high-water mark, and :meth:`Wire.drain` waits
for the resume. :meth:`Wire.wait_closed` returns once ``connection_lost`` was called; it never
raises.

:meth:`Wire.delivered` tells a lingering connection whether the peer has everything we wrote:
nothing in the transport's buffers (over TLS, the SSL layer's and the TCP transport's below
it) and nothing in the kernel's send queue, which holds bytes until the peer's TCP
acknowledges them (``SIOCOUTQ``, Linux only; elsewhere it cannot tell). A closed socket
that receives data answers with a reset, and the reset destroys what its send queue still
held: knowing that the queue is empty is what lets a connection end without that risk.
"""

from __future__ import annotations

import asyncio
import struct
import sys
import threading
from collections.abc import Callable
from typing import Any, cast

__all__ = ["SCRATCH", "Wire"]

#: Size of the per-thread scratch buffer: the most a plain TCP transport reads in one go.
SCRATCH = 64 * 1024

_local = threading.local()

if sys.platform.startswith("linux"):
    import fcntl
    import termios

    #: The ioctl that reads a TCP socket's unacknowledged and unsent bytes (SIOCOUTQ).
    _OUTQ: int | None = termios.TIOCOUTQ
else:
    _OUTQ = None


def _scratch(size: int) -> memoryview:
    view: memoryview | None = getattr(_local, "view", None)
    if view is None or len(view) < size:
        view = _local.view = memoryview(bytearray(max(size, SCRATCH)))
    return view


class Wire(asyncio.BufferedProtocol):
    """One connection's protocol: input buffer, ``read``, ``drain``, ``wait_closed``.

    ``on_made`` is called from ``connection_made`` (a server starts serving there).
    """

    # One per connection: slots, and the waiters' containers and futures only when someone
    # waits (most connections never wait for drain or for the close).
    __slots__ = (
        "loop", "limit", "transport", "_on_made", "_scratch", "_input", "_eof", "_lost",
        "_reading_paused", "_read_waiter", "_write_paused", "_drain_waiters", "_closed",
        "_lost_seen", "_over_ssl", "__weakref__",  # (a server tracks Wires weakly until made)
    )

    def __init__(self, limit: int, on_made: Callable[[Wire], None] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        self.limit = limit
        self.transport: asyncio.Transport | None = None
        self._on_made = on_made
        self._scratch = _scratch(SCRATCH)
        # The shared b"" while empty: a connection's first input becomes its buffer.
        self._input: bytes | bytearray = b""
        self._eof = False
        self._lost: BaseException | None = None
        self._reading_paused = False
        self._read_waiter: asyncio.Future[None] | None = None
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] | None = None
        self._closed: asyncio.Future[None] | None = None
        self._lost_seen = False  # connection_lost was called
        self._over_ssl = False

    # -- asyncio.BufferedProtocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport; a server starts the connection here."""
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance check.
        self.transport = cast(asyncio.Transport, transport)
        self._over_ssl = self.transport.get_extra_info("sslcontext") is not None
        if self._on_made is not None:
            self._on_made(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        """The thread's scratch buffer, at least ``sizehint`` long (see the module doc)."""
        view = self._scratch
        if sizehint > len(view):
            view = self._scratch = _scratch(sizehint)
        return view

    def buffer_updated(self, nbytes: int) -> None:
        """Append what arrived; pause reading once ``limit`` bytes wait unread."""
        if self._input:
            self._input += self._scratch[:nbytes]
        else:
            self._input = bytearray(self._scratch[:nbytes])
        if not self._reading_paused and len(self._input) >= self.limit:
            self._reading_paused = True
            try:
                assert self.transport is not None
                self.transport.pause_reading()
            except (AttributeError, RuntimeError):
                pass  # closing: nothing more will arrive anyway
        self._wake_reader()

    def eof_received(self) -> bool:
        """The peer half-closed. Keep our side open for what we still send (not over TLS)."""
        self._eof = True
        self._wake_reader()
        return not self._over_ssl

    def connection_lost(self, exc: Exception | None) -> None:
        """Wake every waiter; ``read`` returns the rest of the input, then EOF or ``exc``."""
        self._eof = True
        self._lost = exc
        self._lost_seen = True
        self._wake_reader()
        self._wake_drain()
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)

    def pause_writing(self) -> None:
        """The transport is above its high-water mark: ``drain`` waits from now."""
        self._write_paused = True

    def resume_writing(self) -> None:
        """The transport drained: wake ``drain`` waiters."""
        self._write_paused = False
        self._wake_drain()

    def _wake_drain(self) -> None:
        waiters = self._drain_waiters
        if waiters:
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)
            waiters.clear()

    # -- what the connection uses ----------------------------------------------------------------

    async def read(self) -> bytes | bytearray:
        """All input received so far (waiting for some); empty at EOF. Raises a lost error.

        Returns the buffer itself (the next input starts a new one), so no byte is copied twice.
        """
        data = self.take()
        while data is None:
            await self.readable()
            data = self.take()
        return data

    def take(self) -> bytes | bytearray | None:
        """What ``read`` returns, or None if it would wait (then await ``readable()``)."""
        data = self._input
        if data:
            self._input = b""
            if self._reading_paused:
                self._reading_paused = False
                try:
                    assert self.transport is not None
                    self.transport.resume_reading()
                except (AttributeError, RuntimeError):
                    pass
            return data
        if not self._eof:
            return None
        if self._lost is not None:
            raise self._lost
        return data

    def forget_error(self) -> None:
        """Drop the traceback the connection's error got when ``take()`` raised it.

        It runs through the reader task's frames, which hold the connection, which holds
        this wire: a reference cycle (see ``Connection.release``).
        """
        if self._lost is not None:
            self._lost.__traceback__ = None

    def readable(self) -> asyncio.Future[None]:
        """A future that is done once ``take()`` has something to return."""
        fut = self._read_waiter
        if fut is None or fut.done():
            fut = self._read_waiter = self.loop.create_future()
        return fut

    def _wake_reader(self) -> None:
        fut = self._read_waiter
        if fut is not None:
            self._read_waiter = None
            if not fut.done():
                fut.set_result(None)

    async def drain(self) -> None:
        """Wait until the transport is below its high-water mark; at once if it is gone."""
        if self._write_paused and not self._lost_seen:
            fut = self.loop.create_future()
            if self._drain_waiters is None:
                self._drain_waiters = []
            self._drain_waiters.append(fut)
            await fut

    async def wait_closed(self) -> None:
        """Wait for ``connection_lost``; never raises."""
        if self._lost_seen:
            return
        if self._closed is None:
            self._closed = self.loop.create_future()
        await asyncio.shield(self._closed)

    def delivered(self) -> bool | None:
        """Whether the peer's TCP has acknowledged every byte written; None: cannot tell.

        Only while the transport is open (3.10's SSL transport raises once it is closing).
        """
        t = self.transport
        if t is None:
            return None
        try:
            if t.get_write_buffer_size():
                return False
            # asyncio's SSL transport counts only what its SSL layer holds (3.11+), not the
            # encrypted bytes waiting in the TCP transport below it (private, so looked up
            # with care: uvloop's has no such attribute).
            below = getattr(getattr(t, "_ssl_protocol", None), "_transport", None)
            if below is not None and below.get_write_buffer_size():
                return False
            sock = t.get_extra_info("socket")
        except (AttributeError, RuntimeError):
            return None
        if _OUTQ is None or sock is None:
            return None
        try:
            queued = fcntl.ioctl(sock.fileno(), _OUTQ, b"\0\0\0\0")
        except (OSError, ValueError):
            return None  # closed meanwhile, or a socket with no such queue
        return bool(struct.unpack("i", queued)[0] == 0)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """The transport's ``get_extra_info`` (``default`` once there is none)."""
        t = self.transport
        return default if t is None else t.get_extra_info(name, default)
