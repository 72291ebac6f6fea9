"""Abuse budgets: resets, frames without progress, unread control replies, trickling bodies.

Theory of operation
-------------------
HTTP/2's denial-of-service attacks mostly cost the peer one small frame and us real work or
memory: a stream opened and reset at once (Rapid Reset), a frame that provokes our reset
(MadeYouReset), empty DATA, PRIORITY or unknown frames, tiny WINDOW_UPDATEs, or PING/SETTINGS
whose replies the peer never reads. h2 answers all of them and counts none. :class:`Abuse`
counts them in token buckets (nghttp2's budgets by default, see ``Config``); the connection
asks it after each frame and answers an overdrawn budget with GOAWAY(ENHANCE_YOUR_CALM).
A legitimate peer never comes near the defaults.

:class:`BodyRate` is the one budget measured in time: request bodies that trickle (a byte a
second on each of a hundred streams holds a hundred handlers for ever at no cost to the
peer). :class:`ServerBudget` holds what all connections of one server share.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import TYPE_CHECKING

from .config import Config

if TYPE_CHECKING:
    from ._connection import Connection

__all__ = ["Abuse", "BodyRate", "Budget", "Line", "ServerBudget"]

#: Seconds a header block must have stayed unfinished before ``ServerBudget.fits`` may end
#: its connection to make room (a block in flight at the end of one read is no abuse).
STALE_BLOCK = 0.25
#: Busy server connections (see ``ServerBudget.crowded``) beyond which reader turns are small.
CROWD = 8
#: Turns of busy connections (input left over from a turn) run per loop iteration: more wait
#: in line (``ServerBudget.next_turn``), so that an iteration stays short for everyone else.
TURNS_PER_ITERATION = 16
#: Handlers that start per loop iteration; more wait in line (``ServerBudget.start_handler``).
STARTS_PER_ITERATION = 64
#: Handlers of one connection that start per loop iteration without waiting in line.
OWN_STARTS = 4
#: Streams (and connections) a budget may end per loop iteration (``ServerBudget.may_end``).
ENDS_PER_ITERATION = 500
#: While the server's reset budget is overdrawn, a connection is ended if it reset this many
#: live streams in the last one to two seconds, and more than half the streams it opened
#: then; or if it spent a tenth of its own reset budget (net of refill).
RECENT_RESETS = 50


class Budget:
    """A token bucket: ``burst`` events at once, then ``rate`` per second."""

    __slots__ = ("burst", "rate", "tokens", "last")

    def __init__(self, burst: int, rate: float) -> None:
        self.burst = float(burst)
        self.rate = rate
        self.tokens = float(burst)
        self.last = time.monotonic()

    def level(self, now: float) -> float:
        """Tokens there would be at ``now`` (without spending any)."""
        return min(self.burst, self.tokens + (now - self.last) * self.rate)

    def spend(self, n: int = 1) -> bool:
        """Take ``n`` tokens; False once the budget is overdrawn."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate) - n
        self.last = now
        return self.tokens >= 0


class Abuse:
    """The budgets of one connection; each method returns False when the peer overdrew it."""

    __slots__ = ("_config", "_resets", "_glitches", "_controls", "auto_resets_seen",
                 "queued_control", "max_control", "_recent")

    def __init__(self, config: Config) -> None:
        self._config = config
        # Each bucket is created (full) when first used: a full bucket refills to no more than
        # full, so it is the bucket it would have been if created now, and most connections
        # never touch two of the three.
        self._resets: Budget | None = None
        self._glitches: Budget | None = None
        self._controls: Budget | None = None
        self.auto_resets_seen = 0
        self.queued_control = 0
        self.max_control = config.max_queued_control
        #: Server: [second, streams opened in it, in the second before, resets received in
        #: it, in the second before]; see ``tally`` (created on first use).
        self._recent: list[int] | None = None

    @property
    def resets(self) -> Budget:
        """Resets of any origin: received, and those h2 emits because of the peer's errors."""
        b = self._resets
        if b is None:
            b = self._resets = Budget(self._config.max_reset_burst, self._config.max_reset_rate)
        return b

    def tally(self, second: int, reset: bool) -> None:
        """Server: the peer opened a stream (or reset one, if ``reset``) in ``second``.

        Two one-second windows, so ``rapid_resetter`` sees the last one to two seconds.
        """
        r = self._recent
        if r is None:
            r = self._recent = [second, 0, 0, 0, 0]
        elif r[0] != second:
            keep = r[0] == second - 1
            r[:] = [second, 0, r[1] if keep else 0, 0, r[3] if keep else 0]
        r[3 if reset else 1] += 1

    def resets_below(self, now: float, fraction: float) -> bool:
        """True if the reset budget holds less than ``fraction`` of its burst at ``now``."""
        b = self._resets
        return b is not None and b.level(now) < b.burst * fraction

    def rapid_resetter(self, second: int) -> bool:
        """Whether, lately, the peer reset ``RECENT_RESETS`` streams, most of those it opened.

        The quick measure of a Rapid Reset spread over many connections: each stays under
        its own reset budget, and a server that parses a few thousand streams a second
        reaches only some tens a second of each one's, barely more than its budget refills,
        so the slow measure (``resets_below``) takes seconds. A client that cancels now and
        then, hedges requests (resets half), or closes a page with a few dozen requests in
        flight does not come near it; an attacker who pads each reset with two answered
        requests (and so pays for them) is left to the slow measure. That one also ends,
        during a storm, a client that keeps resetting more than its budget's 33 a second
        however it does it: its own budget would end it within a minute anyway.
        """
        r = self._recent
        if r is None or r[0] < second - 1:
            return False
        if r[0] == second:
            resets, opened = r[3] + r[4], r[1] + r[2]
        else:
            resets, opened = r[3], r[1]
        return resets >= RECENT_RESETS and 2 * resets > opened

    def glitch(self) -> bool:
        """A frame that made no progress (empty DATA, PRIORITY, unknown type, tiny update)."""
        b = self._glitches
        if b is None:
            cfg = self._config
            b = self._glitches = Budget(cfg.max_glitch_burst, cfg.max_glitch_rate)
        return b.spend()

    def control(self) -> bool:
        """The peer sent a PING or SETTINGS (not an ACK): rate-limited whether it reads or not."""
        b = self._controls
        if b is None:
            cfg = self._config
            b = self._controls = Budget(cfg.max_control_burst, cfg.max_control_rate)
        return b.spend()

    def reset(self) -> bool:
        """The peer reset a stream."""
        return self.resets.spend()

    def provoked_resets(self, total: int) -> bool:
        """h2 has now emitted ``total`` resets by itself (frames on closed streams, ...)."""
        new = total - self.auto_resets_seen
        if not new:
            return True
        self.auto_resets_seen = total
        return self.resets.spend(new)

    def control_reply(self, unsent: int) -> bool:
        """A PING or SETTINGS forces a reply while ``unsent`` bytes wait in the transport.

        While the peer leaves our replies unread, count them; a flood past the bound is abuse.
        """
        if unsent:
            self.queued_control += 1
            return self.queued_control <= self.max_control
        self.queued_control = 0
        return True


class BodyRate:
    """``Config.min_body_rate`` for one server connection (Kestrel's MinRequestBodyDataRate).

    The clock runs only while some handler of the connection waits for request body bytes
    (time the application spends elsewhere is not the peer's fault), and all the
    connection's body bytes count, as in Kestrel's HTTP/2 server. Waiting time is cut into
    windows of ``grace`` seconds; a window in which fewer than ``rate * grace`` bytes came
    ends the connection (GOAWAY ENHANCE_YOUR_CALM), since resetting single streams would let
    the peer open trickling ones for ever. Stricter than Kestrel, which averages over the
    whole body: each window starts from nothing, so a fast start buys no credit for a
    trickle later. Not counted: a window in which the peer had no window to send, and more
    than a second at a time (a starved loop). Streams the application exempts
    (``H2StreamReader.allow_slow_body``: tunnels, gRPC streaming) do not run the clock.
    """

    __slots__ = ("conn", "rate", "grace", "got", "waited", "waits", "since", "timer",
                 "_confirm")

    def __init__(self, conn: Connection, rate: float, grace: float) -> None:
        self.conn = conn
        self.rate = rate
        self.grace = grace
        self.got = 0  # body bytes received in this window
        self.waited = 0.0  # seconds of this window spent with some handler waiting
        self.waits = 0  # handlers waiting for body bytes now
        self.since = 0.0  # loop time ``waited`` was last brought up to date
        self.timer: asyncio.TimerHandle | None = None
        self._confirm = False  # a cut is due: check once more after the reader's next turn

    def _settle(self, now: float) -> None:
        if self.waits:
            # At most a second at a time, as Kestrel's heartbeat: a longer gap means our
            # loop was starved (a handler blocking it), which is not the peer's fault.
            self.waited += min(now - self.since, 1.0)
        self.since = now

    def received(self, n: int) -> None:
        """``n`` body bytes arrived."""
        self.got += n

    def wait_begins(self) -> None:
        """A handler starts waiting for body bytes."""
        self._settle(self.conn.loop.time())
        self.waits += 1
        if self.timer is None:
            self._arm()

    def wait_ends(self) -> None:
        """That handler's wait is over (bytes came, the body ended, or it was cancelled)."""
        self._settle(self.conn.loop.time())
        self.waits -= 1

    def _arm(self) -> None:
        # When this window's waiting time is used up if the waiting goes on (+1 ms: a tick),
        # but at least once a second: each settling counts at most a second.
        left = min(max(self.grace - self.waited, 0.0), 1.0)
        self.timer = self.conn.loop.call_later(left + 0.001, self._check)

    def cancel(self) -> None:
        """The connection ended."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _check(self) -> None:
        self.timer = None
        conn = self.conn
        if conn.closed or not self.waits:
            return  # the next wait re-arms
        self._settle(conn.loop.time())
        if self.waited >= self.grace:
            # A peer without window (our handlers' unread bytes, or our WINDOW_UPDATEs stuck
            # behind output it has not read) could not send: that window does not count.
            if self.got < self.rate * self.grace and conn.peer_may_send():
                if not self._confirm:
                    # Timers run before the reader task parses what the same loop iteration
                    # read: look again once it has had its turn.
                    self._confirm = True
                    self.timer = conn.loop.call_later(0.001, self._check)
                    return
                pool = conn.pool
                if pool is not None and not pool.may_end(conn):
                    self.timer = conn.loop.call_later(0.005, self._check)
                    return
                conn.calm_down(f"request bodies arrived slower than {self.rate:g} bytes/s "
                               f"(min_body_rate) for {self.grace:g} s of waiting")
                return
            self.got = 0
            self.waited = 0.0
        self._confirm = False
        self._arm()


class Line:
    """Waiters served first come, first served, at most ``per_iteration`` per loop iteration.

    ``join()`` gives a future to await; once per loop iteration the next ``per_iteration``
    of them are resolved (those cancelled while they waited are skipped).
    """

    __slots__ = ("per_iteration", "_waiting", "_releasing", "_loop")

    def __init__(self, per_iteration: int) -> None:
        self.per_iteration = per_iteration
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()
        self._releasing = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def __len__(self) -> int:
        return len(self._waiting)

    def join(self) -> asyncio.Future[None]:
        """A place at the end of the line: the future resolves when it is its turn."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._waiting.append(fut)
        if not self._releasing:
            self._releasing = True
            loop.call_soon(self._release)
        return fut

    def _release(self) -> None:
        waiting = self._waiting
        n = self.per_iteration
        while waiting and n:
            fut = waiting.popleft()
            if not fut.done():
                fut.set_result(None)
                n -= 1
        if waiting:
            assert self._loop is not None
            self._loop.call_soon(self._release)
        else:
            self._releasing = False


class ServerBudget:
    """The budgets all connections of one server share: memory held, and stream resets.

    Memory counted: decoded request header lists of open streams (h2's measure: name, value
    and 32 bytes per field) and unfinished header blocks; request bodies are bounded by flow
    control per connection instead. Each connection keeps its share in ``Connection.held``.
    At ``limit`` new streams are refused (REFUSED_STREAM, safe to retry); a quarter over it
    (only unfinished header blocks get there) the connections holding the most are ended
    with GOAWAY(ENHANCE_YOUR_CALM).

    Resets: each connection has its own reset budget (Rapid Reset), but many connections
    each just under it add up. Every reset a peer sends on a live stream also spends from
    the server's bucket (``max_server_reset_burst``/``rate``); while it is overdrawn, every
    connection that lately reset many streams, most of those it opened
    (``Abuse.rapid_resetter``), or has spent a tenth of its own budget, is ended, checked
    at most every 25 ms.

    Reader turns: see ``crowded`` and ``next_turn``.
    """

    __slots__ = ("limit", "used", "conns", "_culled", "resets", "_reset_culled", "busy",
                 "turns", "loop", "_turn_line", "starts", "iteration", "_start_line", "ended",
                 "_cull_pending")

    def __init__(self, limit: int | None, reset_burst: int, reset_rate: float) -> None:
        self.limit = limit if limit is not None else 1 << 62
        self.used = 0
        self.conns: set[Connection] = set()
        self._culled = 0.0
        self.resets = Budget(reset_burst, reset_rate)
        self._reset_culled = 0.0
        self._cull_pending = False
        #: Connections whose reader is in the middle of a chain of turns (more input than
        #: one turn), and reader turns run in this loop iteration: see ``crowded``.
        self.busy = 0
        self.turns = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self._turn_line = Line(TURNS_PER_ITERATION)
        #: Handlers started, and streams of connections ended, in this loop iteration: see
        #: ``start_handler`` and ``may_end``.
        self.starts = 0
        #: Counts the loop iterations in which something was counted (see ``_count``).
        self.iteration = 0
        self._start_line = Line(STARTS_PER_ITERATION)
        self.ended = 0

    def crowded(self) -> bool:
        """A reader turn starts: whether it should be small (see ``Connection.receive``).

        Yes while more than ``CROWD`` connections have input left over from a turn, or more
        than ``CROWD`` turns ran in this loop iteration already: a quiet client then waits
        for small turns only.
        """
        self._count()
        self.turns += 1
        return self.busy > CROWD or self.turns > CROWD

    def _loop(self) -> asyncio.AbstractEventLoop:
        loop = self.loop
        if loop is None:
            loop = self.loop = asyncio.get_running_loop()
        return loop

    def _count(self) -> None:
        """Something is counted in this loop iteration: have the counts reset after it."""
        if not (self.turns or self.starts or self.ended):
            self._loop().call_soon(self._new_iteration)

    def _new_iteration(self) -> None:
        self.turns = self.starts = self.ended = 0
        self.iteration += 1

    def start_handler(self, conn: Connection) -> asyncio.Future[None] | None:
        """A handler task of ``conn`` begins: None to go on, or a future to await first.

        A connection hands its requests over when its input is parsed, so a hundred
        connections that each opened a hundred streams start ten thousand handlers within a
        few loop iterations, each iteration lasting tens of milliseconds for every other
        client. Beyond ``STARTS_PER_ITERATION`` per iteration, handlers wait in line (their
        tasks exist, so they count against max_concurrent_streams as before), except each
        connection's first ``OWN_STARTS`` in an iteration: a client with a request or two
        does not wait behind another's hundred.
        """
        self._count()
        self.starts += 1
        if conn.starts_at != self.iteration:
            conn.starts_at = self.iteration
            conn.starts_n = 0
        conn.starts_n += 1
        if conn.starts_n <= OWN_STARTS or (
                self.starts <= STARTS_PER_ITERATION and not self._start_line):
            return None
        return self._start_line.join()

    def may_end(self, conn: Connection) -> bool:
        """A budget would end ``conn`` now: whether it may in this loop iteration.

        Ending a connection wakes the handler of each of its streams; a hundred connections
        of a hundred streams each ending at the same moment (min_body_rate) made one
        iteration last a third of a second. Past ``ENDS_PER_ITERATION`` streams in an
        iteration the caller tries again a little later (a slow peer is no worse for it).
        """
        n = len(conn.streams)
        if self.ended and self.ended + n > ENDS_PER_ITERATION:
            return False
        self._count()
        self.ended += n + 1
        return True

    def next_turn(self) -> asyncio.Future[None] | None:
        """A busy connection's reader ends a turn: what to await before its next one.

        None (the caller yields once, ``asyncio.sleep(0)``) while no more than
        ``TURNS_PER_ITERATION`` connections are busy: each of them then takes one turn per
        loop iteration. Beyond that a loop iteration would run a turn of every one of them (a
        hundred attacking connections made each iteration last tens of milliseconds, and a
        new client needs several for its handshake and request), so they wait in line and
        ``TURNS_PER_ITERATION`` of them go on in each iteration, in the order they came:
        each still gets its share, none waits for ever, and the iteration stays short for
        connections with little input, whose turns do not wait in line.
        """
        if self.busy <= TURNS_PER_ITERATION and not self._turn_line:
            return None
        return self._turn_line.join()

    def reset(self) -> None:
        """A peer reset a live stream: spend from the server's bucket; cull if overdrawn."""
        resets = self.resets
        if resets.spend():
            return
        # No debt: after an attack the bucket refills from zero, it does not stay overdrawn
        # (culling innocent connections) for as long as the attack lasted.
        resets.tokens = max(resets.tokens, 0.0)
        now = resets.last
        if not self.conns:
            return
        wait = self._reset_culled + 0.025 - now
        if wait > 0:
            # Checked lately. Look again once the interval is over even if no reset comes
            # then: an attack parsed within one interval would otherwise go unchecked.
            if not self._cull_pending:
                self._cull_pending = True
                self._loop().call_later(wait, self._cull_resetters)
            return
        self._cull_resetters()

    def _cull_resetters(self) -> None:
        self._cull_pending = False
        now = time.monotonic()
        self._reset_culled = now
        # Every such connection goes at once: one at a time, a hundred attackers outlast the
        # healthy clients' patience. A crowd of clients that each cancel now and then
        # overdraws the bucket too, and is no attack: see Abuse.rapid_resetter (quick) and
        # resets_below (slow: a tenth of the connection's own budget, 100 resets net).
        second = int(now)
        victims = [c for c in self.conns if not c.closed and (
            c.abuse.rapid_resetter(second) or c.abuse.resets_below(now, 0.9))]
        for c in victims:
            c.calm_down("the most stream resets while the server's reset budget is "
                        "overdrawn (Rapid Reset spread over connections)")

    def charge(self, conn: Connection, n: int) -> None:
        """``conn`` holds ``n`` more bytes (fewer if negative)."""
        conn.held += n
        self.used += n
        # A quarter of slack: a header block still arriving at the end of a read is no
        # reason to cull anyone; only many held unfinished are.
        if n > 0 and self.used > self.limit + self.limit // 4:
            self.cull()

    def fits(self, n: int) -> bool:
        """Whether ``n`` more bytes stay within the budget (else the caller refuses them).

        At the budget, busy but honest servers (many long-lived streams) just refuse new
        streams, which clients may retry; nobody is culled for the header lists of open
        streams. A header block left unfinished over STALE_BLOCK is no honest load, though:
        if ending such holders (largest first) makes room, they go, so that a crowd of them
        cannot keep every other client refused.
        """
        if self.used + n <= self.limit:
            return True
        now = time.monotonic()
        if now - self._culled < 0.05:
            return False
        stale = [c for c in self.conns
                 if c.partial_held > 0 and now - c.partial_since >= STALE_BLOCK]
        if self.used - sum(c.partial_held for c in stale) + n > self.limit:
            return False  # it would not help: refuse, cull nobody
        self._culled = now
        for c in sorted(stale, key=lambda c: c.partial_held, reverse=True):
            self._end(c, f" in a header block unfinished for over {STALE_BLOCK:g} s while the "
                         "server is at")
            if self.used + n <= self.limit:
                break
        return self.used + n <= self.limit

    def drop(self, conn: Connection) -> None:
        """``conn`` ended: whatever it still held is free."""
        self.conns.discard(conn)
        self.used -= conn.held
        conn.held = 0
        conn.pool = None

    def cull(self) -> None:
        """End the connections holding the most until the budget is nine tenths used.

        Their share is given back at once (their streams then charge nothing more), so
        healthy clients' new streams are refused for as short a time as possible. At most
        one pass every 50 ms: it sorts every connection.
        """
        now = time.monotonic()
        if now - self._culled < 0.05 or not self.conns:
            return
        self._culled = now
        target = self.limit * 9 // 10
        for c in sorted(self.conns, key=lambda c: c.held, reverse=True):
            if self.used <= target or c.held <= 0:
                break
            self._end(c, ", the most while the server is over")

    def _end(self, conn: Connection, why: str) -> None:
        """Free what ``conn`` holds at once and end it (GOAWAY ENHANCE_YOUR_CALM).

        ``why`` goes between its bytes and the budget in the message.
        """
        held = conn.held
        self.drop(conn)
        conn.calm_down(f"holds {held} bytes{why} max_request_memory ({self.limit})")
