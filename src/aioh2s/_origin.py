"""The connections a Session keeps to one origin, and the line of requests waiting for a stream.

Theory of operation
-------------------
An :class:`Origin` holds the connections to one ``(scheme, host, port)``. A request first
*acquires* a stream slot: a connection that still takes new streams and has a slot free under
the peer's SETTINGS_MAX_CONCURRENT_STREAMS is *reserved* for it, and the request opens its
stream there without waiting again. When no connection has a free slot the request joins a
FIFO line, and the origin opens more connections while the waiting requests outnumber what
the connections being opened are expected to take, up to ``max_connections``. Every change
that may free a slot (a stream closed, the peer raised its limit, a connection came up) calls
:meth:`Origin._dispatch`, which hands slots to the line in order.

A slot is counted as reserved from the moment it is handed to a waiter until that waiter opens
its stream (or gives the slot back), so two releases before the waiters run cannot hand out
more slots than the peer allows, and nobody overtakes the line.

Connections leave in three ways, all graceful for the streams still running on them: the peer
or we sent GOAWAY (the connection takes no new streams and is dropped once it ended), it sat
without streams for ``idle_timeout``, or it grew older than ``max_age`` (it takes no new
streams, and is closed once the ones it has are over: age never cuts a download short).

Rules kept here:
- A waiter whose wait is cancelled or times out (:class:`PoolTimeout`) leaves the line, and a
  slot it was already granted goes to the next in line.
- A *failed attempt* is a connection that could not be opened, or one that ended before it
  served a single stream (a server that answers every connection with GOAWAY, or closes it).
  It fails the requests waiting for it when no other connection can serve them; they see
  that attempt's error. Consecutive failed attempts space out the next ones (0, 0.1, 0.2 ...
  up to 5 s), so a failing server is not dialled in a loop; a timer dials again when the
  pause is over, and the first stream served ends the series.
- A request that retries after REFUSED_STREAM avoids the connection that refused it while the
  origin may still open another one.
- Nothing outlives :meth:`Origin.close`: connection attempts are cancelled and every
  connection has ended when it returns.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import functools
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, cast

from .errors import ConnectionClosed, PoolTimeout

if TYPE_CHECKING:
    from ._connection import Connection
    from .client import Client

__all__ = ["Origin", "Pooled"]

# Streams a connection is expected to take before its SETTINGS say so (most servers: 100+).
_FIRST_GUESS = 100
_PAUSE_FIRST = 0.1
_PAUSE_MAX = 5.0


class Pooled:
    """One pooled connection and the slots handed out on it but not yet used."""

    __slots__ = ("client", "conn", "reserved", "born", "retired", "served")

    def __init__(self, client: Client) -> None:
        self.client = client
        self.conn: Connection = client._conn
        self.reserved = 0
        self.born = time.monotonic()
        self.retired = False  # we decided it takes no new streams (idle, too old, closing)
        self.served = False  # a stream was opened on it

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


class _Waiter:
    __slots__ = ("fut", "newest", "avoid")

    def __init__(self, fut: asyncio.Future[Pooled], newest: bool, avoid: Pooled | None) -> None:
        self.fut = fut
        self.newest = newest
        self.avoid = avoid


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
        self._line: collections.deque[_Waiter] = collections.deque()
        self._opening: set[asyncio.Task[None]] = set()
        self._guess = _FIRST_GUESS
        self._fails = 0  # failed attempts in a row
        self._last_error: Exception | None = None
        self._no_dial_until = 0.0
        self._redial: asyncio.TimerHandle | None = None
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

    async def acquire(
        self, timeout: float | None, newest: bool = False, avoid: Pooled | None = None
    ) -> Pooled:
        """A connection with one slot reserved for the caller (who must ``use`` or ``give_back``).

        Waits in line for at most ``timeout`` seconds (None: no limit), then PoolTimeout.
        ``newest``: prefer the youngest connection with room (a retry after a GOAWAY: the
        older ones are nearer to their own). ``avoid``: not this connection, unless the
        origin may open no other.
        """
        if self.closed:
            raise ConnectionClosed("the session is closed", retry_safe=True)
        w = _Waiter(self.loop.create_future(), newest, avoid)
        if not self._line:
            p = self._pick(w)
            if p is not None:
                p.reserved += 1
                return p
        self._line.append(w)
        fut = w.fut
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
                    self._line.remove(w)
                except ValueError:
                    pass
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def _expire(self, fut: asyncio.Future[Pooled], timeout: float) -> None:
        if fut.done():
            return
        if self.conns:
            what = f"all {len(self.conns)} connection(s) to {self.name} were busy"
        else:
            what = f"no connection to {self.name} could be opened"
        if self._last_error is not None and self._fails:
            what += f"; the last attempt: {self._last_error}"
        fut.set_exception(PoolTimeout(
            f"pool timed out: no stream slot for {timeout} s ({what}); nothing was sent",
            timeout,
        ))

    def use(self, p: Pooled) -> None:
        """The caller opens its stream on ``p`` now (synchronously): the reservation ends."""
        p.reserved -= 1

    def served(self, p: Pooled) -> None:
        """A stream was opened on ``p``: the origin works, failed attempts are forgotten."""
        p.served = True
        self._fails = 0

    def give_back(self, p: Pooled) -> None:
        """The caller will not use its reserved slot on ``p``."""
        p.reserved -= 1
        self._dispatch()

    def _may_grow(self) -> bool:
        live = sum(1 for p in self.conns if p.accepting())
        return live + len(self._opening) < self.max_connections

    def _pick(self, w: _Waiter) -> Pooled | None:
        order = reversed(self.conns) if w.newest else self.conns
        fallback = None
        for p in order:
            if p.free() > 0:
                if p is not w.avoid:
                    return p
                fallback = p
        if fallback is not None and (
            not self._may_grow() or self._fails or self.loop.time() < self._no_dial_until
        ):
            # No other connection may be opened (the cap, or dialling fails or is paused):
            # the refusing one it is.
            return fallback
        return None

    def _dispatch(self) -> None:
        line = self._line
        passed: list[_Waiter] = []
        while line:
            w = line[0]
            if w.fut.done():
                line.popleft()
                continue
            p = self._pick(w)
            if p is None:
                if w.avoid is not None:
                    # It waits for a connection other than the one that refused it: the
                    # ones behind it need not (FIFO holds among those who can be served).
                    passed.append(line.popleft())
                    continue
                break
            line.popleft()
            p.reserved += 1
            w.fut.set_result(p)
        line.extendleft(reversed(passed))
        if line:
            self._grow()

    # -- opening connections -------------------------------------------------------------------

    def _grow(self) -> None:
        if self.closed:
            return
        pause = self._no_dial_until - self.loop.time()
        if pause > 0:
            # Failed attempts in a row: dial again when the pause is over.
            if self._redial is None:
                self._redial = self.loop.call_later(pause, self._redial_now)
            return
        want = sum(1 for w in self._line if not w.fut.done()) - len(self._opening) * self._guess
        if self._line and self._line[0].avoid is not None and not self._opening:
            want = max(want, 1)  # the head of the line waits for a connection of its own
        while want > 0 and self._may_grow():
            task = self.loop.create_task(self._open())
            self._opening.add(task)
            want -= self._guess

    def _redial_now(self) -> None:
        self._redial = None
        if self._line:
            self._dispatch()
            self._grow()

    async def _open(self) -> None:
        task = cast("asyncio.Task[None]", asyncio.current_task())
        try:
            client = await self._opener()
        except asyncio.CancelledError:
            raise  # close() is ending us: it fails the line itself
        except Exception as e:  # noqa: BLE001 - every failure goes to the waiters
            self._opening.discard(task)
            self._attempt_failed(e)
            return
        finally:
            self._opening.discard(task)
        if self.closed:
            client.abort()
            return
        p = Pooled(client)
        self.conns.append(p)
        self._guess = max(1, min(p.conn._peer_limit(), 1000))
        p.conn.on_slots = functools.partial(self._changed, p)
        if p.conn.closed:  # ended while we were not looking: on_slots was not yet set
            self._drop(p)
        self._dispatch()
        self._arm_sweeper()

    def _attempt_failed(self, e: Exception) -> None:
        self._fails += 1
        self._last_error = e
        pause = 0.0 if self._fails == 1 else min(_PAUSE_MAX, _PAUSE_FIRST * 2 ** (self._fails - 2))
        self._no_dial_until = self.loop.time() + pause
        if self._opening or any(p.accepting() for p in self.conns):
            if self._line:
                self._grow()  # (schedules the redial)
            return  # others may still serve the line
        line = self._line
        self._line = collections.deque()
        for w in line:
            if not w.fut.done():
                w.fut.set_exception(_fresh(e))

    def _changed(self, p: Pooled) -> None:
        """``p``'s connection may have a slot free, or stopped taking streams."""
        if p.conn.closed:
            self._drop(p)
            if not p.served and not p.retired and not self.closed:
                err = p.conn.error
                self._attempt_failed(ConnectionClosed(
                    f"{self.name} ended the connection before it served a request"
                    + (f" ({err})" if err is not None else ""),
                    retry_safe=True,
                ))
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
            c = p.conn
            if c.closing:
                continue
            since = c.idle_since
            idle = since is not None and not p.reserved
            if p.retired:
                if idle:
                    c.start_close()  # too old, and its last stream is over
                continue
            if (idle and since is not None and self.idle_timeout is not None
                    and now - since >= self.idle_timeout):
                p.retired = True
                c.start_close()
            elif self.max_age is not None and now - p.born >= self.max_age:
                p.retired = True  # no new streams; closed once the running ones are over
                if idle:
                    c.start_close()
        if self._line:
            self._dispatch()
        self._arm_sweeper()

    # -- the end -------------------------------------------------------------------------------

    def shorten(self, grace: float) -> None:
        """A later close() with a shorter grace period: every connection gets the shorter one."""
        for p in list(self.conns):
            p.conn.start_close(grace)

    async def close(self, grace: float | None) -> None:
        """Fail the line, cancel connection attempts, close every connection gracefully."""
        self.closed = True
        for timer in (self._sweeper, self._redial):
            if timer is not None:
                timer.cancel()
        self._sweeper = self._redial = None
        line = self._line
        self._line = collections.deque()
        for w in line:
            if not w.fut.done():
                w.fut.set_exception(ConnectionClosed("the session was closed", retry_safe=True))
        opening = list(self._opening)
        for task in opening:
            task.cancel()
        conns = list(self.conns)  # start_close may end one at once, and so drop it
        for p in conns:
            p.retired = True
            p.conn.start_close(grace)
        waits = [p.conn.wait_closed() for p in conns]
        await asyncio.gather(*opening, *waits, return_exceptions=True)
        for p in conns:
            self._drop(p)


def _fresh(e: Exception) -> Exception:
    """A copy of ``e`` for one more waiter: each raise writes its own traceback and context."""
    try:
        new = copy.copy(e)
    except Exception:  # noqa: BLE001 - an exception that cannot be copied is shared
        return e.with_traceback(None)
    if str(new) != str(e):
        return e.with_traceback(None)
    new.__cause__ = e.__cause__
    new.__traceback__ = None
    return new
