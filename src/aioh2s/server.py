"""The server face: ``start_server()`` and ``Server``.

Theory of operation: ``start_server`` wraps :func:`asyncio.start_server`. Each accepted
connection's callback task *is* that connection's reader task (``Connection.run``); each
request stream gets its own handler task running ``handler(reader, writer)``. ``Server``
mirrors :class:`asyncio.Server` (``sockets``, ``close``, ``wait_closed``, ``serve_forever``,
``async with``) and tracks its connections so ``close()`` can end them gracefully.

Handler rules:
- returns without ending the stream: the stream is ended (a 500 is sent if no headers were);
- raises: 500 if no headers were sent yet, else RST_STREAM(INTERNAL_ERROR); the error is logged;
- ``StreamReset``/``ConnectionClosed`` (and ``WebSocketClosed``, and the
  ``WebSocketRejected`` of a WebSocket request that ``accept()`` answered 400) escaping a
  handler are the peer's doing: not logged as errors; nor is the ``RemoteProtocolError`` of
  the handler's own stream (the peer broke a rule on it, and was answered with RST_STREAM);
- a handler whose stream was reset (or cut by its connection's end) is cancelled if it still
  runs ``reset_handler_timeout`` seconds later, so abandoned work cannot pile up; one whose
  exchange was complete (response sent, request received, in full) is not cancelled when
  its connection ends (work after the response, like a background job, finishes), and
  ``wait_closed()`` after ``close()`` waits for it until the grace period ends;
- at most ``max_concurrent_streams`` handlers run per connection; requests beyond that (only
  possible while handlers of reset streams linger) wait in FIFO order, and more than four
  times that many waiting ends the connection with GOAWAY(ENHANCE_YOUR_CALM);
- request body bytes the handler did not read are acknowledged when it returns, and the stream
  is reset with NO_ERROR once the response is complete (RFC 9113 §8.1).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import ssl as _ssl
import sys
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, cast

from ._budgets import ServerBudget
from ._connection import Connection
from ._http1 import TLSFrontDoor
from ._http1 import front_door as _front_door
from ._state import Recv, Send, send_terminal
from ._stream import Stream
from ._trace import peer_label
from ._wire import Wire
from .config import Config, ConfigOptions, default_max_connections
from .errors import (
    ALPNError,
    ConnectionClosed,
    ErrorCode,
    LocalProtocolError,
    RemoteProtocolError,
    StreamReset,
    WebSocketClosed,
    WebSocketRejected,
)
from .streams import H2StreamReader, H2StreamWriter
from .tls import check_alpn

#: Python versions whose asyncio keeps a failed TLS handshake's protocol in a reference cycle.
_CYCLIC_HANDSHAKES = sys.version_info < (3, 13)

if sys.version_info >= (3, 11):
    from typing import Unpack
elif TYPE_CHECKING:  # only type checkers need it on 3.10 (see aioh2s.config)
    from typing_extensions import Unpack

__all__ = ["Handler", "Server", "start_server"]

log = logging.getLogger("aioh2s")

#: A request handler: ``async def handler(reader, writer) -> None``.
Handler = Callable[[H2StreamReader, H2StreamWriter], Awaitable[None]]


#: The handler tasks of a connection running none: most connections are idle most of the
#: time, and an empty dict costs 64 bytes (a read-only view of one, shared, costs nothing).
_NO_TASKS: Mapping[asyncio.Task[None], Stream] = MappingProxyType({})


class _ServedConnection:
    """A server-side connection plus the handler tasks of its streams."""

    __slots__ = ("server", "tasks", "waiting", "conn")

    def __init__(self, server: Server, wire: Wire) -> None:
        self.server = server
        # Each running handler task and its stream: _reap tells by the stream whether the
        # handler is still serving it or works on after a complete exchange.
        self.tasks: dict[asyncio.Task[None], Stream] | Mapping[asyncio.Task[None], Stream] = (
            _NO_TASKS)
        # At most 4x max_concurrent_streams (then the connection is cut): a list is fine, and
        # an empty one costs 56 bytes where a deque costs ~760.
        self.waiting: list[Stream] = []
        # The connection calls this object itself for each request (see __call__): a bound
        # method kept in an attribute would cost each connection one more object.
        self.conn = Connection(wire, client=False, config=server.config, on_request=self)

    def on_request(self, s: Stream) -> None:
        conn = self.conn
        if conn._deferred_close is not None:
            conn.spoken()  # accepted as the server closed: this request is served, then GOAWAY
        limit = conn.config.max_concurrent_streams
        if len(self.tasks) >= limit:
            # Handlers of reset streams may still be running (they get reset_handler_timeout
            # to notice), so h2's open-stream count alone does not bound running handlers.
            # Like Go's server: start at most max_concurrent_streams at once, queue the rest,
            # and treat a queue of more than 4x that as abuse (Rapid Reset).
            self.waiting.append(s)
            if len(self.waiting) > 4 * limit:
                conn.calm_down("too many requests waiting for earlier handlers to finish")
            return
        self._start(s)

    __call__ = on_request

    def _start(self, s: Stream) -> None:
        task = self.conn.loop.create_task(self._run_handler(s))
        s.task = task
        tasks = self.tasks
        if not isinstance(tasks, dict):
            tasks = self.tasks = {}
        tasks[task] = s
        task.add_done_callback(self._handler_done)

    def _handler_done(self, task: asyncio.Task[None]) -> None:
        tasks = self.tasks
        if isinstance(tasks, dict):
            tasks.pop(task, None)
            if not tasks:
                self.tasks = _NO_TASKS
        waiting = self.waiting
        while waiting and len(self.tasks) < self.conn.config.max_concurrent_streams:
            s = waiting.pop(0)
            if not s.closed and s.error is None:  # skip streams reset while they waited
                self._start(s)

    async def _run_handler(self, s: Stream) -> None:
        reader = H2StreamReader(s)
        writer = H2StreamWriter(s)
        conn = self.conn
        try:
            pool = conn.pool
            wait = pool.start_handler(conn) if pool is not None else None
            if wait is not None:
                await wait  # (see ServerBudget.start_handler)
            if s.error is not None or conn.closed:
                # Reset, or its connection gone, before its handler began (often while it
                # waited in line): there is nobody to answer.
                return
            await self.server._handler(reader, writer)
        except (StreamReset, ConnectionClosed) as e:
            log.debug("aioh2s: handler of stream %d ended by %s", s.id, e)
        except (WebSocketClosed, WebSocketRejected) as e:
            if s.send is Send.IDLE:
                # Not this stream's WebSocket (one the handler opened elsewhere, say): the
                # handler failed before answering.
                self._handler_failed(s)
            else:
                log.debug("aioh2s: handler of stream %d ended by %s", s.id, e)
        except RemoteProtocolError as e:
            if e is s.error:
                # This stream's own error: the peer broke a rule on it (trailers on a tunnel,
                # say) and was answered with RST_STREAM already.
                log.debug("aioh2s: handler of stream %d ended by %s", s.id, e)
            else:
                self._handler_failed(s)
        except asyncio.CancelledError:
            if s.error is None and not conn.closed:
                conn.reset_stream(s, ErrorCode.CANCEL)
            # A cancelled handler of a dead stream is our doing: do not propagate.
        except Exception:
            self._handler_failed(s)
        else:
            if s.send is Send.IDLE and not conn.closed:
                log.error("aioh2s: handler returned without a response on stream %d", s.id)
                self._answer_500(s)
            elif s.send is Send.OPEN:
                s.end()
        finally:
            s.task = None
            for err in (s.recv_error, s.send_error):
                if err is not None:
                    # Its traceback holds the handler's frames, and they this stream: a
                    # cycle that only a full garbage collection would free.
                    err.__traceback__ = None
            # The body nobody read gives its window back; once the response is complete the
            # stream is reset with NO_ERROR if the client is still sending (RFC 9113 §8.1).
            s.abandon()

    def _handler_failed(self, s: Stream) -> None:
        """The handler raised (called in its ``except``): log it, answer 500 or reset."""
        log.exception("aioh2s: handler failed on stream %d", s.id)
        conn = self.conn
        if not send_terminal(s.send) and not conn.closed:
            if s.send is Send.IDLE:
                self._answer_500(s)
            else:
                conn.reset_stream(s, ErrorCode.INTERNAL_ERROR)

    def _answer_500(self, s: Stream) -> None:
        try:
            s.send_headers([(b":status", b"500"), (b"content-length", b"0")], end_stream=True)
        except LocalProtocolError:
            # The client's SETTINGS_MAX_HEADER_LIST_SIZE is below even this answer (some 90
            # bytes): a reset is all it can get.
            self.conn.reset_stream(s, ErrorCode.INTERNAL_ERROR)


class Server:
    """An HTTP/2 server shaped like :class:`asyncio.Server`; create it with :func:`start_server`."""

    def __init__(self, handler: Handler, config: Config, ssl: _ssl.SSLContext | None) -> None:
        self._handler = handler
        self.config = config
        self._ssl = ssl
        self._server: asyncio.Server | None = None
        self._connections: set[_ServedConnection] = set()
        self._conn_tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._close_called = asyncio.Event()  # what a wait_closed() before close() awaits
        # Handlers still running after their exchange completed and their connection ended
        # (see _reap), and when close()'s grace period ends for them (time.monotonic()).
        self._detached: set[asyncio.Task[None]] = set()
        self._close_deadline: float | None = None
        self._deadline_moved: asyncio.Future[None] | None = None  # close() shortened it
        # Accepted but not made yet (a TLS handshake under way, or the one loop turn before
        # asyncio calls connection_made): weak, because a failed handshake never tells us.
        self._unmade: weakref.WeakSet[Wire] = weakref.WeakSet()
        self._finished = False  # wait_closed() returned after close(): serve nothing more
        #: The connection cap in force (``max_connections``, or derived from the fd limit).
        self.max_connections = (
            config.max_connections if config.max_connections is not None
            else default_max_connections()
        )
        self._refused = 0  # connections refused at the cap since the last warning
        self._refused_logged = 0.0
        self._tls_door = TLSFrontDoor()  # one per server: its log throttle is the server's
        self._shedding: set[_ServedConnection] = set()  # closed to make room, not gone yet
        self._pool = ServerBudget(config.max_request_memory, config.max_server_reset_burst,
                                  config.max_server_reset_rate)
        self._shed_scanned = 0.0

    def __repr__(self) -> str:
        return f"<aioh2s.Server sockets={self.sockets!r}>"

    @property
    def sockets(self) -> tuple[Any, ...]:
        """The listening sockets (as ``asyncio.Server.sockets``)."""
        return tuple(self._server.sockets) if self._server is not None else ()

    @property
    def connections(self) -> int:
        """How many HTTP/2 connections are open now."""
        return len(self._connections)

    def _new_wire(self) -> Wire:
        """The protocol factory: one Wire per accepted connection, tracked until it is made."""
        wire = Wire(self.config.read_size, self._on_made)
        self._unmade.add(wire)
        return wire

    def _on_made(self, wire: Wire) -> None:
        """A connection was accepted (and its TLS handshake done): serve it in its own task."""
        self._unmade.discard(wire)
        if self._finished:
            # Its handshake ended after wait_closed() returned, which promised that nothing
            # of this server is served any more.
            assert wire.transport is not None
            wire.transport.abort()
            return
        task = wire.loop.create_task(self._on_connection(wire))
        self._conn_tasks.add(task)
        task.add_done_callback(self._conn_tasks.discard)

    async def _on_connection(self, wire: Wire) -> None:
        writer = wire
        transport = wire.transport
        assert transport is not None
        try:
            limit = self.max_connections
            if self._active() * 4 >= limit * 3:
                self._shed_idle(limit)
            if self._active() >= limit:
                self._refuse(transport, limit)
                return
            tls_door = False
            if self._ssl is not None:
                try:
                    check_alpn(writer.get_extra_info("ssl_object"))
                except ALPNError as e:
                    if e.negotiated in (None, "http/1.1"):
                        # ALPN picked nothing, or HTTP/1.1 (a context that offers it): see
                        # what the client says (_http1.TLSFrontDoor), a 505 for HTTP/1.x.
                        tls_door = True
                    else:
                        peer = peer_label(writer.get_extra_info("peername"))
                        self._tls_door.log(f"closing connection from {peer}: {e}")
                        transport.close()
                        return
            served = _ServedConnection(self, wire)
            self._connections.add(served)
            served.conn.pool = self._pool
            self._pool.conns.add(served.conn)
            try:
                if self._ssl is None:
                    # Cleartext: the first bytes decide between prior knowledge, an h2c
                    # Upgrade (our preface must follow the 101) and a plain HTTP/1.1 request.
                    served.conn.front_door = _front_door
                elif tls_door:
                    served.conn.front_door = self._tls_door
                else:
                    served.conn.initiate()
                if self._closing:
                    # Accepted just as the listener closed (the kernel had handed it over
                    # already): its client is sending a request, which is served first.
                    # What is left of the grace in force, not a fresh one.
                    served.conn.close_when_spoken(self._grace_left())
                await served.conn.run()
            finally:
                self._connections.discard(served)
                self._shedding.discard(served)
                self._pool.drop(served.conn)
                await self._reap(served)
                served.conn.release()
        except asyncio.CancelledError:
            # The loop is shutting down (e.g. asyncio.run() returned with the server open); the
            # connection was failed and closed by the reader task's own cleanup.
            pass

    def _active(self) -> int:
        return len(self._connections) - len(self._shedding)

    def _shed_idle(self, limit: int) -> None:
        """Near the cap: close the connections idle longest, down to three quarters of it.

        Only connections idle for ``idle_near_cap`` seconds go, gracefully; they stop counting
        at once (they are gone within about ``linger``). The scan looks at every connection,
        so it runs at most every 0.1 s, however fast connections arrive.
        """
        now = time.monotonic()
        if now - self._shed_scanned < 0.1:
            return
        self._shed_scanned = now
        cutoff = now - self.config.idle_near_cap
        idle = [
            s for s in self._connections
            if s not in self._shedding and not s.conn.closing and not s.tasks
            and s.conn.idle_since is not None and s.conn.idle_since <= cutoff
        ]
        excess = self._active() + 1 - (limit * 3) // 4  # +1: room for the one arriving
        if excess <= 0 or not idle:
            return
        idle.sort(key=lambda s: cast(float, s.conn.idle_since))
        log.debug("aioh2s: near max_connections, closing %d idle connection(s)",
                  min(excess, len(idle)))
        for served in idle[:excess]:
            self._shedding.add(served)
            served.conn.start_close()  # PING first: a request racing the GOAWAY is safe

    def _refuse(self, transport: asyncio.Transport, limit: int) -> None:
        # One warning per 10 s, with a count: a connection flood must not flood the log too.
        transport.abort()
        self._refused += 1
        now = time.monotonic()
        if now - self._refused_logged >= 10.0:
            log.warning("aioh2s: max_connections (%d) reached: refused %d connection(s), "
                        "the last from %s", limit, self._refused,
                        peer_label(transport.get_extra_info("peername")))
            self._refused = 0
            self._refused_logged = now

    async def _reap(self, served: _ServedConnection) -> None:
        # Handlers of a dead connection whose stream it cut get reset_handler_timeout to
        # notice, then are cancelled. One whose exchange was complete (the response sent and
        # the request received, in full) works on after its response (a background job): the
        # connection ending is none of its business, so the server keeps it, and
        # wait_closed() after close() gives it the rest of the grace period.
        tasks = []
        for t, s in served.tasks.items():
            if t.done():
                continue
            if s.send is Send.ENDED and s.recv is Recv.ENDED:
                self._detached.add(t)
                t.add_done_callback(self._detached.discard)
            else:
                tasks.append(t)
        if not tasks:
            return
        done, pending = await asyncio.wait(tasks, timeout=self.config.reset_handler_timeout)
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.wait(pending)

    async def _wait_detached(self) -> None:
        """Wait for the handlers working on after their exchange, until the grace is over."""
        loop = asyncio.get_running_loop()
        while self._detached:
            assert self._close_deadline is not None
            remaining = self._close_deadline - time.monotonic()
            if remaining > 0:
                moved = self._deadline_moved
                if moved is None or moved.done():
                    moved = self._deadline_moved = loop.create_future()
                await asyncio.wait([*self._detached, moved], timeout=remaining,
                                   return_when=asyncio.FIRST_COMPLETED)
                continue
            pending = list(self._detached)
            log.info("aioh2s: the grace period is over: cancelling %d handler(s) still running"
                     " after their response", len(pending))
            for t in pending:
                t.cancel()
            await asyncio.wait(pending)

    def is_serving(self) -> bool:
        """True while accepting new connections."""
        return self._server is not None and self._server.is_serving()

    async def start_serving(self) -> None:
        """Start accepting connections (done already by :func:`start_server`)."""
        if self._server is not None:
            await self._server.start_serving()

    async def serve_forever(self) -> None:
        """Accept connections until cancelled or closed."""
        assert self._server is not None
        await self._server.serve_forever()

    def close(self, grace: float | None = None) -> None:
        """Stop listening and shut every connection down gracefully.

        The listening sockets are closed first, at once, so the kernel hands this server no
        more connections (with ``reuse_port``, it hands them to the other listeners) while
        the open ones drain.
        Each connection gets GOAWAY(NO_ERROR) naming the last stream it will process; those
        streams may finish for ``grace`` seconds (default: the ``grace`` option, 30 s), then
        what is left is reset and the connection closed. ``await wait_closed()`` returns when
        all of that is done. Handlers can check ``writer.connection.is_closing()``.
        A handler still running after its exchange completed (a background job after the
        response) is not cancelled as its connection closes: ``wait_closed()`` waits for it
        until the grace period ends, then cancels it.
        Calling ``close()`` again with a shorter grace period shortens the one in force; a
        longer one (or none) leaves it, for connections whose handshake ends later too.
        """
        self._closing = True
        self._close_called.set()
        g = self.config.grace if grace is None else max(0.0, grace)
        deadline = time.monotonic() + g
        if self._close_deadline is None or deadline < self._close_deadline:
            self._close_deadline = deadline
            moved = self._deadline_moved
            if moved is not None and not moved.done():
                moved.set_result(None)
        if self._server is not None:
            self._server.close()
        # The earliest deadline stays: a later close() with a longer grace (or none) does
        # not lengthen the one in force.
        left = self._grace_left()
        for served in list(self._connections):
            served.conn.close_for_shutdown(left)

    def _grace_left(self) -> float:
        assert self._close_deadline is not None
        return max(0.0, self._close_deadline - time.monotonic())

    def is_closing(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closing

    async def wait_closed(self) -> None:
        """Wait until the listener and every connection (and its handlers) are closed.

        After :meth:`close`, that includes the handlers still running after their exchange
        completed (a background job after the response), until the grace period ends: then
        they are cancelled (logged at INFO), so nothing of this server runs on.

        After :meth:`close`, a connection accepted before it whose TLS handshake is still
        under way is waited for (``first_request_wait`` seconds at most: by default 0 for
        ``start_server()``, 1 s in ``serve()``'s workers) and served like the others;
        once this returns, nothing of this server is served: a handshake that ends later
        is closed at once (on Python 3.13+ those still under way are aborted then; 3.12's
        asyncio waits for them until ``handshake_timeout``).
        """
        if self._server is not None and not self._closing:
            await self._until_closing(self._server)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.first_request_time
        if self._closing and self._unmade and _CYCLIC_HANDSHAKES:
            # asyncio tells a protocol nothing of a failed handshake, and 3.10 to 3.12 keep
            # it in a reference cycle (its exception's traceback): collect those now, or
            # each would be taken for a handshake under way until the deadline.
            gc.collect()
        while True:
            while self._conn_tasks:
                await asyncio.wait(list(self._conn_tasks))
            if not self._closing:
                break
            if self._detached:
                await self._wait_detached()
                continue  # (a connection may have ended meanwhile)
            if not self._unmade or loop.time() >= deadline:
                break
            # A handshake that fails drops its Wire without a word: look again shortly,
            # until the deadline.
            await asyncio.sleep(0.02)
        if self._closing:
            self._finished = True
            self._abort_handshakes()
        if self._server is not None:
            await self._server.wait_closed()

    def _abort_handshakes(self) -> None:
        # Every connection we serve is closed or closing: what asyncio still holds are
        # handshakes under way, which its own wait_closed() (3.12+) would wait for until
        # their timeout, and transports flushing a last answer (an HTTP/1.1 refusal, an
        # error GOAWAY), which must not lose it. 3.13 lists its transports: abort those
        # whose protocol (under TLS: the one the handshake is for) is no made connection.
        clients = getattr(self._server, "_clients", None)
        if clients is None:
            return  # (3.12: the handshakes end at handshake_timeout)
        for transport in list(clients):
            protocol = transport.get_protocol()
            app = getattr(protocol, "_app_protocol", protocol)  # (asyncio's SSLProtocol)
            if not isinstance(app, Wire) or app in self._unmade:
                transport.abort()

    async def _until_closing(self, server: asyncio.Server) -> None:
        # Until close(), as asyncio's wait_closed(), which must not be awaited for that
        # (3.12+'s waits for handshakes under way too, until handshake_timeout: the
        # first_request_wait bound below would not apply); asyncio's own is still watched,
        # for a listener closed without close() (serve_forever() cancelled).
        called = asyncio.ensure_future(self._close_called.wait())
        theirs = asyncio.ensure_future(server.wait_closed())
        try:
            await asyncio.wait([called, theirs], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (called, theirs):
                t.cancel()
            await asyncio.gather(called, theirs, return_exceptions=True)

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
        await self.wait_closed()


async def start_server(
    handler: Handler,
    host: str | Sequence[str] | None = None,
    port: int | None = None,
    *,
    ssl: _ssl.SSLContext | None = None,
    config: Config | None = None,
    backlog: int = 1024,
    reuse_address: bool | None = None,
    reuse_port: bool | None = None,
    sock: socket.socket | None = None,
    **options: Unpack[ConfigOptions],
) -> Server:
    """Start an HTTP/2 server calling ``await handler(reader, writer)`` once per request stream.

    ``ssl=None`` serves h2c (prior knowledge); an ``SSLContext`` (see
    :func:`aioh2s.server_ssl_context`) must offer ALPN ``h2``. ``options`` are
    :class:`aioh2s.Config` fields (``max_concurrent_streams=...``, ``stream_window=...``),
    typed by :class:`aioh2s.ConfigOptions`.
    ``backlog`` defaults to 1024, not asyncio's 100: a burst of connections beyond the listen
    queue makes healthy clients wait for SYN retransmits (a second or more).

    ``reuse_port=True`` sets SO_REUSEPORT, so that several servers (in several processes)
    can listen on one port; Linux then spreads new connections over them (by a hash of the
    client's address and port). It raises ValueError on a platform without SO_REUSEPORT
    (Windows). ``sock`` serves an already listening socket instead of ``host``/``port``, as
    :func:`asyncio.start_server` does (:func:`aioh2s.serve` hands its workers theirs).
    """
    if reuse_port and not hasattr(socket, "SO_REUSEPORT"):
        raise ValueError(
            f"start_server(reuse_port=True): this platform ({sys.platform}) has no "
            "SO_REUSEPORT; run one server per port, or one listening socket (sock=) shared"
        )
    cfg = Config.from_options(config, **options)
    server = Server(handler, cfg, ssl)
    kwargs: dict[str, Any] = {}
    if ssl is not None and cfg.handshake_timeout is not None:
        kwargs["ssl_handshake_timeout"] = cfg.handshake_timeout
    if sock is not None:
        kwargs["sock"] = sock  # (asyncio says what is wrong if host or port is given too)
    loop = asyncio.get_running_loop()
    server._server = await loop.create_server(
        server._new_wire, host, port, ssl=ssl, backlog=backlog,
        reuse_address=reuse_address, reuse_port=reuse_port, **kwargs,
    )
    return server
