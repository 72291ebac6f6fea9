"""The connections a Session keeps to one origin, and the line of requests waiting for a stream.

Theory of operation
-------------------
An :class:`Origin` holds the connections to one ``(scheme, host, port)``. A request first
*acquires* a stream slot: the first connection that still takes new streams and has a slot
free under the peer's SETTINGS_MAX_CONCURRENT_STREAMS is *reserved* for it, and the request
opens its stream there without waiting again. When no connection has a free slot the request
joins a FIFO line, and the origin opens more connections while the waiting requests outnumber
what the connections being opened are expected to take, up to ``max_connections``. Every
change that may free a slot (a stream closed, the peer raised its limit, a connection came
up) calls :meth:`Origin._dispatch`, which hands slots to the line in order.

A slot is counted as reserved from the moment it is handed to a waiter until that waiter opens
its stream (or gives the slot back), so two releases before the waiters run cannot hand out
more slots than the peer allows, and nobody overtakes the line.

Connections leave in three ways, all graceful for the streams still running on them: the peer
or we sent GOAWAY (the connection takes no new streams and is dropped once it ended), it sat
without streams for ``idle_timeout``, or it is older than ``max_age``. A connection that
dies is dropped the moment it does; the next request that finds no room opens a new one.

Rules kept here:
- A waiter whose wait is cancelled or times out (:class:`PoolTimeout`) leaves the line, and a
  slot it was already granted goes to the next in line.
- A connection that cannot be opened fails the requests waiting for it only when no other
  connection of the origin can serve them; otherwise they wait on, and the origin tries to
  open more connections again only after a pause (1 s, doubling to 30 s) so a failing peer
  is not dialled in a loop.
- Nothing outlives :meth:`Origin.close`: connection attempts are cancelled and every
  connection has ended when it returns.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from .errors import ConnectionClosed, PoolTimeout

if TYPE_CHECKING:
    from ._connection import Connection
    from .client import Client

__all__ = ["Origin", "Pooled"]

# Streams a connection is expected to take before its SETTINGS say so (most servers: 100+).
_FIRST_GUESS = 100
_BACKOFF_FIRST = 1.0
_BACKOFF_MAX = 30.0


class Pooled:
    """One pooled connection and the slots handed out on it but not yet used."""

    __slots__ = ("client", "conn", "reserved", "born", "retired")

    def __init__(self, client: Client) -> None:
        self.client = client
        self.conn: Connection = client._conn
        self.reserved = 0
        self.born = time.monotonic()
        self.retired = False  # we decided it takes no new streams (idle, too old, closing)

    def __repr__(self) -> str:
        return f"<Pooled {self.conn!r} reserved={self.reserved}>"

    def accepting(self) -> bool:
        """Whether new streams may still go to this connection."""
        return not (self.retired or self.conn.closing)

    def free(self) -> int:
        """Slots free on this connection for new streams (0 once it takes none)."""
        if not self.accepting():
            return 0
        c = self.conn
        if c._slot_waiters:  # somebody uses the Client directly: leave it its line
            return 0
        return c._peer_limit() - c.open_outbound - self.reserved


class Origin:
    """The connections to one origin, and the requests waiting for a slot on them."""

    def __init__(
        self,
        name: str,
        opener: Callable[[], Awaitable[Client]],
        *,
        max_connections: int,
        idle_timeout: float | None,
        max_age: float | None,
    ) -> None:
        self.name = name
        self._opener = opener
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.max_age = max_age
        self.loop = asyncio.get_running_loop()
        self.conns: list[Pooled] = []
        self._line: collections.deque[asyncio.Future[Pooled]] = collections.deque()
        self._opening: set[asyncio.Task[None]] = set()
        self._guess = _FIRST_GUESS
        self._backoff = 0.0
        self._no_dial_until = 0.0
        self._sweeper: asyncio.TimerHandle | None = None
        self.closed = False

    def __repr__(self) -> str:
        return (
            f"<Origin {self.name} conns={len(self.conns)} opening={len(self._opening)}"
            f" waiting={len(self._line)}>"
        )

    @property
    def idle(self) -> bool:
        """No connection, no attempt and no waiter: the session may forget this origin."""
        return not (self.conns or self._opening or self._line)

    # -- acquiring a slot ----------------------------------------------------------------------

    async def acquire(self, timeout: float | None, newest: bool = False) -> Pooled:
        """A connection with one slot reserved for the caller (who must ``use`` or ``give_back``).

        Waits in line for at most ``timeout`` seconds (None: no limit), then PoolTimeout.
        ``newest``: prefer the youngest connection with room (a retry after a GOAWAY: the
        older ones are nearer to their own).
        """
        if self.closed:
            raise ConnectionClosed("the session is closed", retry_safe=True)
        if not self._line:
            p = self._free(newest)
            if p is not None:
                p.reserved += 1
                return p
        fut: asyncio.Future[Pooled] = self.loop.create_future()
        self._line.append(fut)
        timer = None
        if timeout is not None:
            timer = self.loop.call_later(timeout, self._expire, fut, timeout)
        self._grow()
        try:
            return await fut
        except BaseException:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self.give_back(fut.result())  # granted as we were cancelled: pass it on
            else:
                try:
                    self._line.remove(fut)
                except ValueError:
                    pass
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def _expire(self, fut: asyncio.Future[Pooled], timeout: float) -> None:
        if fut.done():
            return
        what = (
            f"all {len(self.conns)} connection(s) to {self.name} were busy"
            if self.conns else f"no connection to {self.name} could be opened"
        )
        fut.set_exception(PoolTimeout(
            f"pool timed out: no stream slot for {timeout} s ({what}); nothing was sent",
            timeout,
        ))

    def use(self, p: Pooled) -> None:
        """The caller opens its stream on ``p`` now (synchronously): the reservation ends."""
        p.reserved -= 1

    def give_back(self, p: Pooled) -> None:
        """The caller will not use its reserved slot on ``p``."""
        p.reserved -= 1
        self._dispatch()

    def _free(self, newest: bool = False) -> Pooled | None:
        for p in reversed(self.conns) if newest else self.conns:
            if p.free() > 0:
                return p
        return None

    def _dispatch(self) -> None:
        line = self._line
        while line:
            fut = line[0]
            if fut.done():
                line.popleft()
                continue
            p = self._free()
            if p is None:
                break
            line.popleft()
            p.reserved += 1
            fut.set_result(p)
        if line:
            self._grow()

    # -- opening connections -------------------------------------------------------------------

    def _grow(self) -> None:
        if self.closed:
            return
        live = sum(1 for p in self.conns if p.accepting())
        if live and self.loop.time() < self._no_dial_until:
            return  # the last attempt failed: wait a little before dialling again
        want = sum(1 for f in self._line if not f.done()) - len(self._opening) * self._guess
        while want > 0 and live + len(self._opening) < self.max_connections:
            task = self.loop.create_task(self._open())
            self._opening.add(task)
            want -= self._guess

    async def _open(self) -> None:
        task = asyncio.current_task()
        try:
            client = await self._opener()
        except asyncio.CancelledError:
            raise  # close() is ending us: it fails the line itself
        except Exception as e:  # noqa: BLE001 - every failure goes to the waiters
            self._opening.discard(task)
            self._open_failed(e)
            return
        finally:
            self._opening.discard(task)
        if self.closed:
            client.abort()
            return
        self._backoff = 0.0
        p = Pooled(client)
        self.conns.append(p)
        self._guess = max(1, min(p.conn._peer_limit(), 1000))
        p.conn.on_slots = functools.partial(self._changed, p)
        if p.conn.closed:  # ended while we were not looking: on_slots was not yet set
            self._drop(p)
        self._dispatch()
        self._arm_sweeper()

    def _open_failed(self, e: Exception) -> None:
        self._backoff = min(_BACKOFF_MAX, self._backoff * 2 or _BACKOFF_FIRST)
        self._no_dial_until = self.loop.time() + self._backoff
        if self._opening or any(p.accepting() for p in self.conns):
            return  # others may still serve the line
        line = self._line
        self._line = collections.deque()
        for fut in line:
            if not fut.done():
                fut.set_exception(e.with_traceback(None))

    def _changed(self, p: Pooled) -> None:
        """``p``'s connection may have a slot free, or stopped taking streams."""
        if p.conn.closed:
            self._drop(p)
        if self._line:
            self._dispatch()

    def _drop(self, p: Pooled) -> None:
        p.conn.on_slots = None  # (the partial would keep this origin and p alive)
        try:
            self.conns.remove(p)
        except ValueError:
            pass

    # -- idle and old connections --------------------------------------------------------------

    def _arm_sweeper(self) -> None:
        limits = [x for x in (self.idle_timeout, self.max_age) if x is not None]
        if self._sweeper is None and limits and self.conns and not self.closed:
            self._sweeper = self.loop.call_later(max(0.05, min(limits) / 4), self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        now = time.monotonic()
        for p in list(self.conns):
            if not p.accepting():
                continue
            c = p.conn
            idle = self.idle_timeout
            if (idle is not None and c.idle_since is not None and not p.reserved
                    and now - c.idle_since >= idle):
                self.retire(p)
            elif self.max_age is not None and now - p.born >= self.max_age:
                self.retire(p)
        self._arm_sweeper()

    def retire(self, p: Pooled, grace: float | None = None) -> None:
        """``p`` takes no new streams; its open ones finish within ``grace`` (config default)."""
        p.retired = True
        p.conn.start_close(grace)
        if self._line:
            self._dispatch()

    # -- the end -------------------------------------------------------------------------------

    async def close(self, grace: float | None) -> None:
        """Fail the line, cancel connection attempts, close every connection gracefully."""
        self.closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        line = self._line
        self._line = collections.deque()
        for fut in line:
            if not fut.done():
                fut.set_exception(ConnectionClosed("the session was closed", retry_safe=True))
        opening = list(self._opening)
        for task in opening:
            task.cancel()
        for p in self.conns:
            p.retired = True
            p.conn.start_close(grace)
        waits = [p.conn.wait_closed() for p in list(self.conns)]
        results = await asyncio.gather(*opening, *waits, return_exceptions=True)
        del results
        for p in list(self.conns):
            self._drop(p)
