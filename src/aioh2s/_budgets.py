"""Abuse budgets of one connection: resets, frames without progress, unread control replies.

Theory of operation
-------------------
HTTP/2's denial-of-service attacks mostly cost the peer one small frame and us real work or
memory: a stream opened and reset at once (Rapid Reset), a frame that provokes our reset
(MadeYouReset), empty DATA, PRIORITY or unknown frames, tiny WINDOW_UPDATEs, or PING/SETTINGS
whose replies the peer never reads. h2 answers all of them and counts none. :class:`Abuse`
counts them in token buckets (nghttp2's budgets by default, see ``Config``); the connection
asks it after each frame and answers an overdrawn budget with GOAWAY(ENHANCE_YOUR_CALM).
A legitimate peer never comes near the defaults.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .config import Config

if TYPE_CHECKING:
    from ._connection import Connection

__all__ = ["Abuse", "Budget", "ServerBudget"]


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

    __slots__ = ("resets", "glitches", "controls", "auto_resets_seen", "queued_control",
                 "max_control")

    def __init__(self, config: Config) -> None:
        # Resets of any origin: received, and those h2 emits because of the peer's errors.
        self.resets = Budget(config.max_reset_burst, config.max_reset_rate)
        self.glitches = Budget(config.max_glitch_burst, config.max_glitch_rate)
        self.controls = Budget(config.max_control_burst, config.max_control_rate)
        self.auto_resets_seen = 0
        self.queued_control = 0
        self.max_control = config.max_queued_control

    def glitch(self) -> bool:
        """A frame that made no progress (empty DATA, PRIORITY, unknown type, tiny update)."""
        return self.glitches.spend()

    def control(self) -> bool:
        """The peer sent a PING or SETTINGS (not an ACK): rate-limited whether it reads or not."""
        return self.controls.spend()

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


class ServerBudget:
    """The budgets all connections of one server share: memory held, and stream resets.

    Memory counted: decoded request header lists of open streams (h2's measure: name, value
    and 32 bytes per field), request body bytes received but not yet read, and unfinished
    header blocks. Each connection keeps its share in ``Connection.held``. Over ``limit``,
    new streams are refused (REFUSED_STREAM, safe to retry) and the connection holding the
    most is ended with GOAWAY(ENHANCE_YOUR_CALM): at most one every 0.1 s, since finding it
    looks at them all.

    Resets: each connection has its own reset budget (Rapid Reset), but many connections
    each just under it add up. Every reset a peer sends on a live stream also spends from
    the server's bucket (``max_server_reset_burst``/``rate``); while it is overdrawn, the
    connection that has spent most of its own budget is ended, one every 10 ms.
    """

    __slots__ = ("limit", "used", "conns", "_culled", "resets", "_reset_culled")

    def __init__(self, limit: int | None, reset_burst: int, reset_rate: float) -> None:
        self.limit = limit if limit is not None else 1 << 62
        self.used = 0
        self.conns: set[Connection] = set()
        self._culled = 0.0
        self.resets = Budget(reset_burst, reset_rate)
        self._reset_culled = 0.0

    def reset(self) -> None:
        """A peer reset a live stream: spend from the server's bucket; cull if overdrawn."""
        resets = self.resets
        if resets.spend():
            return
        # No debt: after an attack the bucket refills from zero, it does not stay overdrawn
        # (culling innocent connections) for as long as the attack lasted.
        resets.tokens = max(resets.tokens, 0.0)
        now = time.monotonic()
        if now - self._reset_culled < 0.01 or not self.conns:
            return
        self._reset_culled = now
        # Every connection that has spent a good part of its own budget goes at once: one
        # at a time, a hundred attackers outlast the healthy clients' patience.
        live = [c for c in self.conns if not c.closed]
        if not live:
            return
        # Only connections that spent a tenth of their own budget (100 resets by default, net
        # of its refill): a crowd of clients that each cancel now and then overdraws the
        # bucket too, and is no attack.
        victims = [c for c in live if c.abuse.resets.level(now) < c.abuse.resets.burst * 0.9]
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

        A refusal culls nobody: at the budget, busy but honest servers (many long-lived
        streams) just refuse new streams, which clients may retry. Only what cannot be
        refused, unfinished header blocks, makes ``charge`` cull.
        """
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
            held = c.held
            self.drop(c)
            c.calm_down(f"holds {held} bytes, the most while the server is over "
                        f"max_request_memory ({self.limit})")
