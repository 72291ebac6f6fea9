"""One HTTP/2 stream: its two state machines, its buffers and the futures the application awaits.

Theory of operation
-------------------
A :class:`Stream` is owned by its connection (``_connection.Connection``) and is the only
place where the state of one stream lives. The public ``H2StreamReader``/``H2StreamWriter``
(streams.py) are views of it, and the connection's event dispatch calls the ``on_*`` methods
here when frames arrive. The states and what each operation may do in each of them are the
tables in ``_state.py``; this module applies them.

Inbound: DATA lands in ``buf``; nothing is acknowledged to the peer on arrival. Bytes are
acknowledged (window granted back) when the application *consumes* them, or earlier when a
read asks for more than is buffered (``wait_buffered``): ``credit`` counts the buffered bytes
already granted, so every byte is granted exactly once. A wait that is cancelled therefore
loses nothing: the bytes stay in ``buf`` for the next read, as in asyncio's StreamReader.

Outbound: ``write()`` only queues (``out``); the connection's pump moves queued bytes into
DATA frames as windows allow and calls :meth:`on_send_ended` when END_STREAM was handed to h2.

Every public operation checks the state table *before* changing anything, so a call that
raises (a forbidden trailer, a write after the end) leaves the stream exactly as it was.

Tunnels (CONNECT, RFC 9113 §8.5; extended CONNECT, RFC 8441) are ordinary streams with one
more fact, ``tunnel``: a CONNECT request is ``TUNNEL_ASKED`` until a 2xx response (sent by a
server's handler, received by a client) makes it ``TUNNEL_OPEN``. From then on its DATA are
the tunnel's bytes, both ways, under the same flow control; END_STREAM is a half-close and
RST_STREAM an abort, as for any stream. What differs: no trailers either way (only DATA may
follow, §8.5), no content-length (``_h2headers.CheckedStream``), and a server's open
*extended* CONNECT tunnel is exempt from ``min_body_rate`` (``slow_ok``): the server enabled
extended CONNECT, the application chose to open the tunnel, and its bytes pause whenever its
two ends have nothing to say. A plain CONNECT needs no setting, so any client could send one
to a handler that answers 200 before reading (an echo): it stays under the rate unless the
handler calls ``allow_slow_body()``, as a proxy does.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._state import Recv, Send, check_send, send_terminal
from .errors import LocalProtocolError, ReadTimeout, WriteTimeout
from .headers import REQUEST, RESPONSE, TRAILERS, Headers, HeadersLike, to_wire

if TYPE_CHECKING:
    from ._budgets import BodyRate
    from ._connection import Connection

__all__ = ["NO_TUNNEL", "TUNNEL_ASKED", "TUNNEL_OPEN", "Stream"]


async def wait_in(waiters: list[asyncio.Future[None]], fut: asyncio.Future[None]) -> None:
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


def _wake_all(waiters: list[asyncio.Future[None]] | None) -> None:
    for f in waiters or ():
        _wake(f)


def _time_out(fut: asyncio.Future[None], error: Callable[[], BaseException]) -> None:
    # A timed-out wait changes nothing but the waiter: what arrived stays buffered, what is
    # queued stays queued, so the call can be repeated (cancel-safe, like wait_for()).
    if not fut.done():
        fut.set_exception(error())


def _cancel(task: asyncio.Task[None]) -> None:
    if not task.done():
        task.cancel()


NO_TUNNEL, TUNNEL_ASKED, TUNNEL_OPEN = 0, 1, 2


class Stream:
    """Everything about one HTTP/2 stream; owned by its connection."""

    # Slots: a server may hold thousands of idle streams; this keeps each one small.
    __slots__ = (
        "conn", "id", "send", "recv", "send_error", "recv_error", "headers", "informational",
        "trailers", "buf", "credit", "unflowed", "_in_waiter", "headers_sent", "out",
        "out_size", "trailers_out", "queued", "_drain_waiters", "_sent_waiters", "task",
        "held", "slow_ok", "counted", "expect_100", "sent_mark", "read_timeout", "write_timeout",
        "tunnel",
    )

    def __init__(self, conn: Connection, stream_id: int) -> None:
        self.conn = conn
        self.id = stream_id
        self.send = Send.IDLE
        self.recv = Recv.OPEN
        #: Why each side died (set together with the RESET state of that side).
        self.send_error: BaseException | None = None
        self.recv_error: BaseException | None = None
        # Inbound: headers, body buffer, trailers.
        self.headers: Headers | None = None  # request headers (server) / final response (client)
        self.informational: list[Headers] | None = None  # 1xx responses (client), made on the first
        self.trailers: Headers | None = None
        self.buf = bytearray()
        self.credit = 0  # bytes at the front of buf already granted back to the peer
        self.unflowed = False  # body arrived outside flow control (h2c Upgrade): never ack
        self.held = 0  # bytes of its header list charged to the server's ServerBudget
        self.slow_ok = False  # server: the body may pause, min_body_rate does not apply
        #: The min_body_rate clock a read waiting now runs (None: none, or no longer counted).
        self.counted: BodyRate | None = None
        self.expect_100 = False  # server: the request awaits 100 Continue before its body
        #: CONNECT (RFC 9113 §8.5, RFC 8441): NO_TUNNEL, TUNNEL_ASKED (a CONNECT request, not
        #: answered with 2xx yet) or TUNNEL_OPEN (answered 2xx: the DATA both ways are a byte
        #: tunnel, and only DATA may follow).
        self.tunnel = NO_TUNNEL
        self._in_waiter: asyncio.Future[None] | None = None
        # Outbound.
        self.headers_sent = False  # final headers went out (a fact, kept after a reset)
        self.out: collections.deque[memoryview] | None = None  # created on first write
        self.out_size = 0
        self.trailers_out: list[tuple[bytes, bytes]] | None = None  # sent when ENDING drains
        self.queued = False  # in the connection's round-robin
        # Waiter lists are created on first use: most streams never need them.
        self._drain_waiters: list[asyncio.Future[None]] | None = None
        self._sent_waiters: list[asyncio.Future[None]] | None = None
        # Server: the handler task serving this stream (cancelled if it outlives a reset).
        self.task: asyncio.Task[None] | None = None
        # Client: the connection's write count when our HEADERS were queued; if it has not
        # moved when the connection dies, the peer never saw this request (retry-safe).
        self.sent_mark = -1
        #: Seconds one wait for inbound bytes (or for ``drain()``) may last: then ReadTimeout
        #: (WriteTimeout). Set by a Session for its requests; None: wait as long as it takes.
        self.read_timeout: float | None = None
        self.write_timeout: float | None = None

    def __repr__(self) -> str:
        return f"<Stream {self.id} send={self.send.name} recv={self.recv.name}>"

    @property
    def closed(self) -> bool:
        """Both directions are over: the stream has left its connection's table."""
        send, recv = self.send, self.recv
        return (send is Send.ENDED or send is Send.RESET) and (
            recv is Recv.ENDED or recv is Recv.RESET
        )

    @property
    def error(self) -> BaseException | None:
        """The error that ended this stream, if any (either direction).

        Each raise of a kept error starts a fresh traceback: it would otherwise grow by every
        raise, and keep the frames of every read that raised it (and so this stream) alive.
        """
        return self.recv_error or self.send_error

    # -- inbound: what the application calls ---------------------------------------------------

    async def wait_inbound(self) -> None:
        """Wait until headers, data, end of stream or an error arrive."""
        if self._in_waiter is not None and not self._in_waiter.done():
            raise RuntimeError(
                f"another coroutine is already waiting for data on stream {self.id}"
            )
        if self.expect_100:
            self._continue()
        fut = self.conn.loop.create_future()
        self._in_waiter = fut
        # A server handler waiting for body bytes runs min_body_rate's clock.
        rate = None if self.slow_ok or self.recv is not Recv.OPEN else self.conn.body_rate
        if rate is not None:
            rate.wait_begins()
            self.counted = rate
        timer = None if self.read_timeout is None else self.conn.loop.call_later(
            self.read_timeout, _time_out, fut, self._read_expired
        )
        try:
            await fut
        finally:
            if timer is not None:
                timer.cancel()
            # allow_slow_body() during the wait may have stopped counting it already.
            if rate is not None and self.counted is rate:
                self.counted = None
                rate.wait_ends()
            # Woken but not yet resumed, another reader may have started waiting meanwhile:
            # its waiter is not ours to clear.
            if self._in_waiter is fut:
                self._in_waiter = None

    def allow_slow(self) -> None:
        """Exempt the body from min_body_rate, a read already waiting included."""
        self.slow_ok = True
        # That read started the clock: stop it now, not when bytes come (the rate's check
        # could call the connection slow meanwhile).
        rate, self.counted = self.counted, None
        if rate is not None:
            rate.wait_ends()

    def _continue(self) -> None:
        # The handler waits for a body its client holds back until ``100 Continue``
        # (RFC 9110 §10.1.1): send it now, as Kestrel does on the first read; a handler that
        # answers without reading sends none.
        self.expect_100 = False
        if self.send is Send.IDLE and self.recv is Recv.OPEN and self.conn.error is None:
            try:
                self.conn.send_headers(self, [(b":status", b"100")], False)
            except LocalProtocolError:
                return
            self.conn.schedule_flush()

    def check_recv(self) -> None:
        """Raise the receiving side's error, if any, with a fresh traceback (see ``error``)."""
        if self.recv_error is not None:
            raise self.recv_error.with_traceback(None)

    async def wait_readable(self) -> None:
        """Return when body bytes are buffered or the body ended; raise the stream's error."""
        while True:
            self.check_recv()
            if self.buf or self.recv is Recv.ENDED:
                return
            await self.wait_inbound()

    async def wait_buffered(self, n: int | None) -> None:
        """Return when ``n`` bytes (``None``: the whole body) are buffered or the body ended.

        While it waits it grants the peer window for what is buffered, so a request for more
        than one stream window can complete; nothing is consumed, so a cancelled wait loses
        nothing. Memory stays bounded by what the application asked for plus one window.
        """
        while True:
            self.check_recv()
            if self.recv is Recv.ENDED or (n is not None and len(self.buf) >= n):
                return
            self.grant_buffered()
            await self.wait_inbound()

    def consume(self, n: int) -> bytes:
        """Take up to ``n`` buffered bytes and grant the peer that much window again."""
        buf = self.buf
        if n >= len(buf):
            data = bytes(buf)
            buf.clear()
        else:
            data = bytes(memoryview(buf)[:n])  # one copy, not two (as asyncio's read)
            del buf[:n]
        taken = len(data)
        if taken:
            granted = min(taken, self.credit)
            self.credit -= granted
            if taken > granted:
                self.conn.acknowledge(self, taken - granted)
        return data

    def grant_buffered(self) -> None:
        """Grant window for every buffered byte not granted yet (they stay buffered)."""
        n = len(self.buf) - self.credit
        if n > 0:
            self.credit += n
            self.conn.acknowledge(self, n)

    def release_buffered(self) -> None:
        """Drop unread bytes and give their window back to the peer.

        Unread bytes count against the connection window too: kept unacknowledged, a few
        abandoned streams would stall every other stream on the connection.
        """
        if self.buf:
            self.grant_buffered()
            self.buf.clear()
            self.credit = 0

    def abandon(self) -> None:
        """The application reads no more: release buffered bytes now, discard later ones."""
        if self.recv is Recv.OPEN:
            self.recv = Recv.DISCARDING
        self.release_buffered()
        self._discard_rest()

    # -- inbound: what the connection's dispatch calls -----------------------------------------

    def on_data(self, data: bytes) -> bool:
        """Buffer received body bytes; False if nobody will read them (ack them at once)."""
        if self.recv is not Recv.OPEN:
            return False
        self.buf += data
        _wake(self._in_waiter)
        return True

    def on_headers(self, kind: str, headers: Headers) -> None:
        """Response, 1xx or trailers arrived (request headers are set when the stream is made)."""
        if kind == "response":
            self.headers = headers
            if self.tunnel and headers.get(":status", "")[:1] == "2":
                self.tunnel = TUNNEL_OPEN  # client: the proxy connected us
        elif kind == "informational":
            if self.informational is None:
                self.informational = []
            self.informational.append(headers)
        else:
            self.trailers = headers
        _wake(self._in_waiter)

    def on_end(self) -> None:
        """END_STREAM received."""
        if self.recv is Recv.OPEN or self.recv is Recv.DISCARDING:
            self.recv = Recv.ENDED
        _wake(self._in_waiter)
        self._check_closed()

    # -- outbound: what the application calls --------------------------------------------------

    def send_headers(self, headers: HeadersLike, end_stream: bool = False) -> None:
        """Send final (or, on a server, 1xx) headers; validated before anything changes."""
        # The state table is consulted only off the common path (a hot spot per request).
        if self.send is not Send.IDLE and check_send("send_headers", self.send, self.id) == "error":
            self._raise_if_reset()
        client = self.conn.client
        wire = to_wire(headers, REQUEST if client else RESPONSE)
        status = 0 if client else _status_class(wire, self.id)
        informational = status == 1
        if informational and end_stream:
            raise LocalProtocolError(
                f"a 1xx response cannot end stream {self.id}: send a final response"
            )
        opens = status == 2 and self.tunnel == TUNNEL_ASKED
        if opens and any(n == b"content-length" for n, _ in wire):
            raise LocalProtocolError(
                f"content-length passed by the application in a 2xx response to CONNECT on "
                f"stream {self.id}: a tunnel has no content length (RFC 9110 §9.3.6)"
            )
        self.conn.send_headers(self, wire, end_stream)  # raises before h2 changed anything
        if informational:
            return
        if opens:
            # The tunnel is open: its bytes come when its two ends have something to say,
            # so min_body_rate no longer applies to an extended CONNECT (see the module
            # docstring for plain CONNECT). Only the application's 2xx opens it: a CONNECT
            # the handler did not accept is held to the rate like any request.
            self.tunnel = TUNNEL_OPEN
            if self.headers is not None and ":protocol" in self.headers:
                self.allow_slow()
        self.headers_sent = True
        if end_stream:
            self.on_send_ended()
        else:
            self.send = Send.OPEN

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue body bytes; dropped silently on a reset stream (drain() raises)."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes-like, not {type(data).__name__}")
        if self.send is not Send.OPEN and check_send("write", self.send, self.id) != "ok":
            return
        # bytes are immutable and can be queued as they are; anything else may be changed by
        # the caller after write() returns, so it is copied (as asyncio's transports do). A
        # memoryview of wider items (array('i')) counts its bytes, not its items.
        chunk = memoryview(data if type(data) is bytes else bytes(data))
        n = len(chunk)
        if not n:
            return
        out = self.out
        if out is None:
            out = self.out = collections.deque()
        out.append(chunk)
        self.out_size += n
        self.conn.want_send(self)

    def end(self, trailers: HeadersLike | None = None) -> None:
        """Queue the end of our side: END_STREAM after the queued body, with trailers if given."""
        # Trailers are checked first: a bad field is a programming error even on a stream
        # that was reset meanwhile (where the call is otherwise dropped).
        wire = to_wire(trailers, TRAILERS) if trailers is not None else None
        if wire and (self.tunnel == TUNNEL_OPEN or (self.tunnel and self.conn.client)):
            # A CONNECT request has no content to trail (RFC 9110 §9.3.6), answered or not;
            # a server's refusal of one (no 2xx) is an ordinary response and may have some.
            raise LocalProtocolError(
                f"trailers passed by the application on stream {self.id}, a CONNECT tunnel:"
                " only DATA may follow its HEADERS (RFC 9113 §8.5); use write_eof()"
            )
        op = "end" if wire else "eof"
        if self.send is not Send.OPEN and check_send(op, self.send, self.id) != "ok":
            return
        if wire and self.conn.peer_max_header_list is not None:
            self.conn.check_header_list(self.id, wire, "trailers")
        # No fields is no trailers: a HEADERS frame cannot be empty, END_STREAM alone says it.
        self.trailers_out = wire or None
        self.send = Send.ENDING
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
        """Wait until queued bytes are at or below the low-water mark and the transport flows.

        Always yields to the event loop at least once, and raises the stream's error once
        our side was reset: a loop of ``write(); await drain()`` can neither spin nor go on
        writing into a dead stream.
        """
        conn = self.conn
        self._raise_if_reset()
        if self.send is Send.ENDED or (
            self.out_size <= conn.config.write_high_water and not conn.write_blocked
        ):
            # Like asyncio's drain() on a transport that is not paused, but yielding once so a
            # writer in a tight loop cannot starve the event loop. A side that ended has
            # handed everything to h2: nothing of it is left to wait for.
            await asyncio.sleep(0)
        else:
            low = conn.config.write_low_water
            # Only a side still sending waits: once ENDED everything was handed to h2 (and the
            # stream may already have left the table, where nothing would wake it again).
            while not send_terminal(self.send) and (self.out_size > low or conn.write_blocked):
                if self._drain_waiters is None:
                    self._drain_waiters = []
                fut = conn.loop.create_future()
                timer = None if self.write_timeout is None else conn.loop.call_later(
                    self.write_timeout, _time_out, fut, self._write_expired
                )
                try:
                    await wait_in(self._drain_waiters, fut)
                finally:
                    if timer is not None:
                        timer.cancel()
        self._raise_if_reset()

    def _read_expired(self) -> BaseException:
        what = "the response headers" if self.headers is None else "more of the body"
        return ReadTimeout(
            f"read timed out: no byte arrived on stream {self.id} for {self.read_timeout} s"
            f" while waiting for {what}", self.read_timeout,
        )

    def _write_expired(self) -> BaseException:
        return WriteTimeout(
            f"write timed out: the peer took none of stream {self.id}'s queued body for"
            f" {self.write_timeout} s (its flow-control window stayed closed)",
            self.write_timeout,
        )

    def _raise_if_reset(self) -> None:
        if self.send is Send.RESET:
            assert self.send_error is not None
            raise self.send_error.with_traceback(None)  # see Stream.error

    def wake_drain(self) -> None:
        if self._drain_waiters and (
            self.send is Send.RESET
            or (self.out_size <= self.conn.config.write_low_water and not self.conn.write_blocked)
        ):
            _wake_all(self._drain_waiters)

    async def wait_sent(self) -> None:
        """Wait until our side ended (END_STREAM handed over); raise if it was reset first."""
        while not send_terminal(self.send):
            if self._sent_waiters is None:
                self._sent_waiters = []
            await wait_in(self._sent_waiters, self.conn.loop.create_future())
        self._raise_if_reset()

    # -- outbound: what the connection's pump calls --------------------------------------------

    def on_send_ended(self) -> None:
        """END_STREAM (with the trailers, if any) was handed to h2: our side is over."""
        self.send = Send.ENDED
        self.trailers_out = None
        if self._sent_waiters:
            _wake_all(self._sent_waiters)
        if self._drain_waiters:
            _wake_all(self._drain_waiters)
        if self.recv is Recv.DISCARDING and self._discard_rest():
            return
        if self.recv is Recv.ENDED or self.recv is Recv.RESET:
            self.conn.stream_closed(self)

    def _discard_rest(self) -> bool:
        """Server, RFC 9113 §8.1: after a complete response, stop an unwanted request body.

        True if the stream was reset with NO_ERROR for that reason.
        """
        if (
            self.send is Send.ENDED
            and self.recv is Recv.DISCARDING
            and not self.conn.client
        ):
            self.conn.reset_stream(self, 0)
            return True
        return False

    # -- ending --------------------------------------------------------------------------------

    def fail(self, exc: BaseException, *, receiving: bool = True) -> None:
        """The stream died: every side still alive moves to RESET with ``exc``.

        ``receiving=False`` ends only our sending side (RFC 9113 §8.1 on a client: the server
        wants no more request body, and its complete response stays readable). A side that
        already ended cleanly keeps its state: what it sent was handed over, what it received
        and the application read is not undone. Buffered bytes not yet read are dropped.
        """
        changed = False
        if not send_terminal(self.send):
            self.send = Send.RESET
            self.send_error = exc
            self.out = None
            self.out_size = 0
            self.trailers_out = None
            changed = True
        if receiving and self.recv is not Recv.RESET and (self.recv is not Recv.ENDED or self.buf):
            self.recv = Recv.RESET
            self.recv_error = exc
            self.release_buffered()
            changed = True
        if not changed:
            return
        _wake(self._in_waiter)
        _wake_all(self._drain_waiters)
        _wake_all(self._sent_waiters)
        task = self.task
        if task is not None and not task.done() and task is not asyncio.current_task():
            # The handler gets a chance to see the error on its next read/drain; if it is
            # busy elsewhere it is cancelled, so reset streams cannot pile up running work.
            self.conn.loop.call_later(self.conn.config.reset_handler_timeout, _cancel, task)
        self._check_closed()

    def _check_closed(self) -> None:
        if self.closed:
            self.conn.stream_closed(self)


def _status_class(wire: list[tuple[bytes, bytes]], stream_id: int) -> int:
    """The first digit of ``:status`` (RFC 9110 §15: three digits, 100-599; no 101 in h2)."""
    for n, v in wire:
        if n == b":status":
            if len(v) != 3 or not v.isdigit() or not b"100" <= v <= b"599":
                raise LocalProtocolError(
                    f":status {v!r} passed by the application on stream {stream_id} is not a "
                    "three-digit status code from 100 to 599 (RFC 9110 §15)"
                )
            if v == b"101":
                raise LocalProtocolError(
                    "101 Switching Protocols does not exist in HTTP/2 (RFC 9113 §8.6)"
                )
            return v[0] - 0x30
    return 0
