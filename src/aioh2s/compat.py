"""aioh2's API on top of aioh2s: migrate with ``import aioh2s.compat as aioh2``.

Theory of operation
-------------------
aioh2 (0.2.3, the last release) hands out one :class:`H2Protocol` per connection and addresses
streams by id: ``start_request``/``recv_response``/``read_stream``/``recv_trailers`` on a client,
``recv_request``/``start_response``/``send_data``/``send_trailers`` on a server. aioh2s hands out
one reader/writer pair per stream instead. This module keeps aioh2's shape and maps every call
onto aioh2s's public API:

- Client: :func:`open_connection` wraps :func:`aioh2s.connect`. ``start_request`` enters
  ``client.request(headers)`` (waiting FIFO for a slot under the server's
  SETTINGS_MAX_CONCURRENT_STREAMS, as aioh2 did) and returns the stream id.
- Server: :func:`start_server` wraps :func:`aioh2s.start_server`, whose handler runs once per
  stream. The first stream of each connection creates that connection's :class:`H2Protocol`
  and calls ``client_connected_cb(protocol)``; every stream then queues ``(stream_id, headers)``
  for ``recv_request()``. ``concurrency`` becomes SETTINGS_MAX_CONCURRENT_STREAMS, so at most
  ``concurrency`` requests are open (and queued) at once, as in aioh2.
- Each stream has a small *pump*: a task (the aioh2s handler task on a server) that moves the
  peer's body from the aioh2s reader into a per-stream buffer, records the response headers and
  trailers, and, once both sides of the stream ended, lets the aioh2s stream go. ``read_stream``
  reads that buffer with aioh2's exact ``size`` rules. The pump stops at
  :data:`BUFFER_HIGH_WATER` unread bytes, so a stream nobody reads still holds flow control
  back instead of growing memory, as aioh2 did.
- Finished streams are forgotten, which is what keeps a connection alive past aioh2's limit of
  1,000 streams: the last :attr:`H2Protocol.finished_streams_kept` finished streams are kept so
  that ``read_stream``/``recv_trailers`` after the end (aioh2's usual order) still work.

Headers come back in aioh2's shapes: lists of ``(name, value)`` ``str`` tuples, ``recv_request``
returns a ``(stream_id, headers)`` tuple, and ``recv_trailers`` returns ``{}`` when the stream
ended without trailers.

Deliberately not carried over (each documented where it would be used):

- ``H2Protocol`` is not an ``asyncio.Protocol``: ``connection_made``/``data_received`` and the
  h2 event handlers (``_request_received`` and friends) do not exist to override.
- Priorities: ``reprioritize`` is accepted and ignored. RFC 9113 deprecated RFC 7540
  priorities; aioh2s serves streams round-robin.
- Changing SETTINGS on a live connection (``update_settings`` and the ``initial_window_size``,
  ``max_frame_size``, ``max_concurrent_streams`` setters) raises ``NotImplementedError``: aioh2s
  fixes local settings when the connection opens. Pass them as keywords instead
  (``stream_window=``, ``max_frame_size=``, ``concurrency=``/``max_concurrent_streams=``).
- Unix sockets (``open_unix_connection``/``start_unix_server``) raise ``NotImplementedError``:
  aioh2s connects over TCP only.
- ``loop=`` is accepted and ignored (the running loop is used, as aioh2 did when it was None).
- ``send_data`` returns once the data is queued within aioh2s's write buffer limits rather than
  once every byte was framed; on failure :class:`SendException` carries the whole ``data`` of
  that call, since a queued prefix may or may not have reached the peer.
- Where aioh2 hung forever (a stream reset by the peer, a lost connection), reads and waits
  raise the aioh2s error (``aioh2s.StreamReset``, ``aioh2s.ConnectionClosed``) instead.
- ``wait_functional`` counts as activity the traffic this module sees (headers, body, requests,
  PING answers), not every byte on the socket.
- On a server, ``client_connected_cb`` runs when a connection's first request arrives, not at
  TCP accept (aioh2s starts handlers per stream).

Additions (not in aioh2 0.2.3): ``send_headers`` (response headers, or trailers once the response
started; used by the aioh2 README example this module must run), the ``functional`` property,
``wait_closed()``, and a ``timeout`` keyword on ``recv_request``.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import logging
import socket
import ssl as _ssl
import sys
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from .client import Client, RequestStream, connect
from .config import Config, ConfigOptions
from .errors import ConnectionClosed, ErrorCode, H2Error, StreamReset
from .headers import Headers, HeadersLike
from .server import Server
from .server import start_server as _aioh2s_start_server
from .streams import ConnectionHandle, H2StreamReader, H2StreamWriter

if sys.version_info >= (3, 11):
    from typing import Unpack
elif TYPE_CHECKING:  # only type checkers need it on 3.10 (see aioh2s.config)
    from typing_extensions import Unpack

__all__ = [
    "AIOH2Exception",
    "H2Protocol",
    "OpenConnectionOptions",
    "SendException",
    "StartServerOptions",
    "open_connection",
    "open_unix_connection",
    "start_server",
    "start_unix_server",
]

log = logging.getLogger("aioh2s.compat")

#: A header list in aioh2's shape: ``[(name, value), ...]`` with ``str`` names and values.
HeaderList = list[tuple[str, str]]

#: Unread body bytes a stream's pump buffers before it stops reading from aioh2s (which then
#: stops granting flow-control window to the peer).
BUFFER_HIGH_WATER = 64 * 1024

#: aioh2's ``H2Protocol`` keyword arguments; every other keyword goes to aioh2s.
PROTOCOL_KWARGS = ("concurrency", "functional_timeout")


class OpenConnectionOptions(ConfigOptions, total=False):
    """The keywords of :func:`open_connection`: the protocol's, ``connect()``'s, Config's."""

    concurrency: int
    functional_timeout: float
    ssl: _ssl.SSLContext | bool | None
    server_hostname: str | None
    config: Config | None


class StartServerOptions(ConfigOptions, total=False):
    """The keywords of :func:`start_server`: the protocol's, ``start_server()``'s, Config's."""

    concurrency: int
    functional_timeout: float
    ssl: _ssl.SSLContext | None
    config: Config | None
    backlog: int
    reuse_address: bool | None
    reuse_port: bool | None
    sock: socket.socket | None

_P = TypeVar("_P", bound="H2Protocol")


class AIOH2Exception(Exception):
    """Base class of aioh2's own exceptions."""


class SendException(AIOH2Exception):
    """``send_data`` failed; ``data`` holds the bytes that were not (known to be) sent."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self.data = data


_CLOSED: Any = object()  # recv_request's end-of-connection marker in the request queue


class _Stream:
    """What the compat layer knows about one stream, alive or recently finished."""

    __slots__ = (
        "buffers",
        "client_side",
        "eof",
        "error",
        "final_sent",
        "id",
        "reader",
        "readable",
        "remote_done",
        "response",
        "room",
        "rlock",
        "size",
        "trailers",
        "wlock",
        "writer",
    )

    def __init__(
        self, stream_id: int, reader: H2StreamReader, writer: H2StreamWriter, client_side: bool
    ) -> None:
        self.id = stream_id
        self.reader = reader
        self.writer = writer
        self.client_side = client_side
        # The client's request headers are its "final" headers; later HEADERS are trailers.
        self.final_sent = client_side
        self.rlock = asyncio.Lock()
        self.wlock = asyncio.Lock()
        self.buffers: collections.deque[bytes] = collections.deque()
        self.size = 0
        self.eof = False
        self.error: BaseException | None = None
        self.response: HeaderList | None = None
        self.trailers: HeaderList | None = None
        self.readable = asyncio.Event()  # data, end of body or error available
        self.room = asyncio.Event()  # the pump may read more (or should stop)
        self.remote_done = asyncio.Event()  # end of body (trailers known) or error
        self.room.set()

    # pump side

    def feed(self, chunk: bytes) -> None:
        self.buffers.append(chunk)
        self.size += len(chunk)
        self.readable.set()

    def feed_eof(self, trailers: Headers | None) -> None:
        self.trailers = list(trailers) if trailers is not None else None
        self.eof = True
        self.readable.set()
        self.remote_done.set()

    def fail(self, exc: BaseException) -> None:
        if self.error is None and not self.eof:
            self.error = exc
        self.readable.set()
        self.remote_done.set()
        self.room.set()

    # reader side

    def pop(self, n: int | None) -> bytes:
        """Take the next chunk, or at most ``n`` bytes of it."""
        chunk = self.buffers.popleft()
        if n is not None and len(chunk) > n:
            self.buffers.appendleft(chunk[n:])
            chunk = chunk[:n]
        self.size -= len(chunk)
        if self.size < BUFFER_HIGH_WATER:
            self.room.set()
        return chunk

    def unread(self, parts: list[bytes]) -> None:
        for chunk in reversed(parts):
            if chunk:
                self.buffers.appendleft(chunk)
                self.size += len(chunk)

    async def wait_readable(self) -> None:
        self.readable.clear()
        await self.readable.wait()


def _pairs(headers: HeadersLike) -> list[tuple[Any, Any]]:
    if isinstance(headers, Headers):
        return headers.items()
    if isinstance(headers, Mapping):
        return list(headers.items())
    return list(headers)


def _informational(pairs: list[tuple[Any, Any]]) -> bool:
    for name, value in pairs:
        if name in (":status", b":status"):
            status = value.decode() if isinstance(value, bytes) else str(value)
            return len(status) == 3 and status.startswith("1")
    return False


async def _drain(writer: H2StreamWriter) -> None:
    try:
        await writer.drain()
    except StreamReset as e:
        # A server that answered without reading the whole request body resets the stream
        # with NO_ERROR once the response is out (RFC 9113 §8.1): the response is complete.
        if e.remote or e.error_code != ErrorCode.NO_ERROR:
            raise


class H2Protocol:
    """One HTTP/2 connection with aioh2's API (client or server side).

    Create it with :func:`open_connection` (client) or receive it in :func:`start_server`'s
    ``client_connected_cb`` (server). Streams are addressed by their integer id.
    """

    #: How many finished streams are remembered for late ``read_stream``/``recv_trailers``
    #: calls; older ones are forgotten (aioh2 kept all of them, and failed at 1,001).
    finished_streams_kept = 1024

    def __init__(
        self, client_side: bool, *, concurrency: int = 8, functional_timeout: float = 2
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._client_side = client_side
        self._concurrency = concurrency
        self._functional_timeout = functional_timeout
        self._client: Client | None = None
        self._handle: ConnectionHandle | None = None
        self._config = Config()
        self._streams: dict[int, _Stream] = {}
        self._finished: collections.OrderedDict[int, _Stream] = collections.OrderedDict()
        self._inbound: asyncio.Queue[tuple[int, HeaderList]] = asyncio.Queue()
        self._handler: asyncio.Future[Any] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._watcher: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        self._lost_error: BaseException | None = None
        self._last_active = self._loop.time()
        self._rtt: float | None = None

    def __repr__(self) -> str:
        side = "client" if self._client_side else "server"
        state = "closed" if self._lost.is_set() else "open"
        return f"<aioh2s.compat.H2Protocol {side} {state} streams={len(self._streams)}>"

    # -- wiring (called by open_connection / start_server) -------------------------------------

    def _bind_client(self, client: Client, config: Config) -> None:
        self._client = client
        self._config = config
        self._touch()

    def _bind_server(self, handle: ConnectionHandle, config: Config) -> None:
        self._handle = handle
        self._config = config
        self._touch()
        self._watch(handle)

    def _watch(self, handle: ConnectionHandle) -> None:
        if self._watcher is None:
            self._watcher = self._loop.create_task(self._watch_closed(handle))

    async def _watch_closed(self, handle: ConnectionHandle) -> None:
        await handle.wait_closed()
        self._connection_lost(None)

    def _connection_lost(self, exc: BaseException | None) -> None:
        """The connection ended: cancel the handler (as aioh2 did) and wake every waiter."""
        if self._lost.is_set():
            return
        self._lost_error = exc or ConnectionClosed("the connection was closed")
        self._lost.set()
        if self._handler is not None and not self._handler.done():
            self._handler.cancel()
        for st in list(self._streams.values()):
            st.fail(self._lost_error)
        self._inbound.put_nowait(_CLOSED)

    def _touch(self) -> None:
        self._last_active = self._loop.time()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _get(self, stream_id: int) -> _Stream:
        st = self._streams.get(stream_id)
        if st is None:
            st = self._finished.get(stream_id)
            if st is None:
                raise AIOH2Exception(
                    f"unknown stream {stream_id} (never opened on this connection, or finished "
                    f"more than {self.finished_streams_kept} streams ago)"
                )
        return st

    def _retire(self, st: _Stream) -> None:
        if self._streams.pop(st.id, None) is None:
            return
        kept = self._finished
        kept[st.id] = st
        while len(kept) > self.finished_streams_kept:
            kept.popitem(last=False)

    # -- the pump ------------------------------------------------------------------------------

    async def _pump(self, st: _Stream) -> None:
        """Move the peer's body from aioh2s into ``st``'s buffer, then record the trailers."""
        reader = st.reader
        try:
            while True:
                while st.size >= BUFFER_HIGH_WATER:
                    if not st.client_side and st.writer.is_closing():
                        # The response ended while the request body sits unread: stop reading,
                        # so aioh2s can discard the rest and free the stream (RFC 9113 §8.1).
                        st.fail(
                            AIOH2Exception(
                                f"stream {st.id}: the response ended before the request body was "
                                "read; the unread rest was discarded"
                            )
                        )
                        return
                    st.room.clear()
                    await st.room.wait()
                try:
                    chunk = await anext(reader)
                except StopAsyncIteration:
                    break
                st.feed(chunk)
                self._touch()
            st.feed_eof(reader.trailers)
            self._touch()
        except asyncio.CancelledError:
            st.fail(ConnectionClosed(f"stream {st.id} was abandoned: its task was cancelled"))
            raise
        except Exception as e:
            st.fail(e)

    async def _client_stream(self, st: _Stream, ctx: Any, stream: RequestStream) -> None:
        try:
            try:
                headers = await stream.response_headers()
            except Exception as e:
                st.fail(e)
            else:
                st.response = list(headers)
                self._touch()
                st.readable.set()
                await self._pump(st)
            try:
                await st.writer.wait_closed()  # until the application ended its side
            except H2Error:
                pass  # or the stream died: st already carries the error
        finally:
            try:
                # Resets the stream (CANCEL) only if it is still open, e.g. on cancellation.
                await ctx.__aexit__(None, None, None)
            finally:
                self._retire(st)

    async def _serve_stream(self, reader: H2StreamReader, writer: H2StreamWriter) -> None:
        st = _Stream(writer.stream_id, reader, writer, client_side=False)
        self._streams[st.id] = st
        self._touch()
        self._inbound.put_nowait((st.id, list(reader.headers)))
        try:
            await self._pump(st)
            if st.eof:
                # Returning would let aioh2s end the response for us: wait for the
                # application to end it (or for a reset / the connection's end).
                try:
                    await writer.wait_closed()
                except H2Error:
                    pass
        finally:
            self._retire(st)

    # -- aioh2 API: connection -----------------------------------------------------------------

    def set_handler(self, handler: Awaitable[Any] | None) -> None:
        """Run ``handler`` (a coroutine, task or future) for this connection's lifetime.

        The task is cancelled when the connection closes. Setting a second one raises.
        """
        if self._handler:
            raise Exception("Handler was already set")
        if handler:
            self._handler = asyncio.ensure_future(handler)

    def close_connection(self) -> None:
        """Close the connection now; open streams fail with ``aioh2s.ConnectionClosed``."""
        if self._client is not None:
            self._client.abort()
            self._loop.call_soon(self._connection_lost, None)
        elif self._handle is not None:
            self._handle.close(0)

    async def wait_closed(self) -> None:
        """Wait until the connection is closed (an aioh2s addition).

        A client notices the end of its connection once it started a request (or called
        ``close_connection()``).
        """
        if self._handle is not None:
            await self._handle.wait_closed()
        await self._lost.wait()

    # -- aioh2 API: client ---------------------------------------------------------------------

    async def start_request(self, headers: HeadersLike, *, end_stream: bool = False) -> int:
        """Send request ``headers`` on a new stream and return its id.

        Waits while the server's SETTINGS_MAX_CONCURRENT_STREAMS streams are open. Missing
        ``:scheme``/``:authority`` (and ``:method``/``:path``) are filled in by aioh2s.
        ``end_stream=True`` sends a request without a body.
        """
        client = self._client
        if client is None:
            raise AIOH2Exception("start_request() needs a client connection")
        ctx = client.request(headers, end_stream=end_stream)
        stream = await ctx.__aenter__()
        st = _Stream(stream.stream_id, stream.reader, stream.writer, client_side=True)
        self._streams[st.id] = st
        if self._handle is None:
            # The first stream gives us the connection handle: watch for the connection's end.
            self._handle = stream.writer.connection
            self._watch(self._handle)
        self._spawn(self._client_stream(st, ctx, stream))
        return st.id

    async def recv_response(self, stream_id: int) -> HeaderList:
        """Wait for the final response headers on ``stream_id``: ``[(name, value), ...]``."""
        st = self._get(stream_id)
        if not st.client_side:
            raise AIOH2Exception("recv_response() is for streams opened by start_request()")
        while st.response is None:
            if st.error is not None:
                raise st.error
            await st.wait_readable()
        return st.response

    # -- aioh2 API: server ---------------------------------------------------------------------

    async def recv_request(self, *, timeout: float | None = None) -> tuple[int, HeaderList]:
        """Wait for the next request on this connection: ``(stream_id, headers)``.

        Blocks until a request is available (``timeout``, an aioh2s addition, raises
        ``asyncio.TimeoutError`` after that many seconds; cancelling or timing out never loses a
        request). Once the connection closed and every queued request was taken, raises
        ``aioh2s.ConnectionClosed``.
        """
        if timeout is None:
            item = await self._inbound.get()
        else:
            item = await asyncio.wait_for(self._inbound.get(), timeout)
        if item is _CLOSED:
            self._inbound.put_nowait(_CLOSED)  # wake the next caller too
            assert self._lost_error is not None
            raise self._lost_error
        return item

    async def start_response(
        self, stream_id: int, headers: HeadersLike, *, end_stream: bool = False
    ) -> None:
        """Send response ``headers`` (a 1xx may precede the final ones).

        ``end_stream=True`` sends a response without a body.
        """
        st = self._get(stream_id)
        if st.client_side:
            raise AIOH2Exception("start_response() is for streams received by recv_request()")
        w = st.writer
        pairs = _pairs(headers)
        w.send_headers(pairs, end_stream=end_stream)
        if not _informational(pairs):
            st.final_sent = True
        if end_stream:
            st.room.set()
        await _drain(w)

    async def send_headers(
        self, stream_id: int, headers: HeadersLike, *, end_stream: bool = False
    ) -> None:
        """Send headers: response headers first, trailers once the response started.

        An aioh2s addition (aioh2 0.2.3 has ``start_response`` and ``send_trailers``). On a
        server stream before the final response headers this is ``start_response``; after
        them (and on a client stream) it sends trailers, which must end the stream.
        """
        st = self._get(stream_id)
        if not st.final_sent:
            await self.start_response(stream_id, headers, end_stream=end_stream)
            return
        if not end_stream:
            raise ValueError(
                f"stream {stream_id}: headers were sent already, so these are trailers, and "
                "HTTP/2 trailers must end the stream: pass end_stream=True"
            )
        await self.send_trailers(stream_id, headers)

    # -- aioh2 API: both sides -----------------------------------------------------------------

    async def send_data(self, stream_id: int, data: bytes, *, end_stream: bool = False) -> None:
        """Send body ``data`` on ``stream_id``; ``end_stream=True`` ends our side after it.

        Waits for flow-control window and the transport (aioh2s's ``drain()``); one
        ``send_data`` per stream runs at a time. Raises :class:`SendException` (its ``data``
        is the bytes given) if the stream was ended or reset, or the connection was lost.
        """
        try:
            st = self._get(stream_id)
        except AIOH2Exception as e:
            raise SendException(data) from e
        async with st.wlock:
            w = st.writer
            if w.is_closing():
                # Ended by us, reset, or stopped by the peer (RST_STREAM NO_ERROR after its
                # complete response): aioh2s would drop the bytes silently; aioh2 raised.
                raise SendException(data)
            try:
                w.write(data)
                if end_stream:
                    w.write_eof()
                    st.room.set()
                await _drain(w)
            except (H2Error, RuntimeError) as e:
                raise SendException(data) from e
            if not end_stream and w.is_closing():
                raise SendException(data)  # the peer stopped the stream while we waited

    async def send_trailers(self, stream_id: int, headers: HeadersLike) -> None:
        """Send trailers on ``stream_id``, ending our side of it."""
        st = self._get(stream_id)
        async with st.wlock:
            st.writer.send_trailers(headers)
            st.room.set()
            await _drain(st.writer)

    async def end_stream(self, stream_id: int) -> None:
        """End our side of ``stream_id`` (an empty DATA frame with END_STREAM)."""
        st = self._get(stream_id)
        async with st.wlock:
            st.writer.write_eof()
            st.room.set()
            await _drain(st.writer)

    async def read_stream(self, stream_id: int, size: int | None = None) -> bytes:
        """Read the peer's body on ``stream_id``.

        ``size=None``: the next chunk as it arrived (one or more DATA frames). ``size > 0``:
        wait for ``size`` bytes, fewer only at the end of the body. ``size < 0``: everything
        until the end of the body. ``size=0``: ``b""`` at once. ``b""`` means the body ended.
        Reading grants the peer flow-control window. Raises ``aioh2s.StreamReset`` or
        ``aioh2s.ConnectionClosed`` if the stream died before its end (after returning what
        had arrived).
        """
        st = self._get(stream_id)
        if size == 0:
            return b""
        async with st.rlock:
            if size is None:
                while not st.buffers:
                    if st.eof:
                        return b""
                    if st.error is not None:
                        raise st.error
                    await st.wait_readable()
                return st.pop(None)
            want = size if size > 0 else None
            parts: list[bytes] = []
            while want is None or want > 0:
                if st.buffers:
                    chunk = st.pop(want)
                    parts.append(chunk)
                    if want is not None:
                        want -= len(chunk)
                elif st.eof:
                    break
                elif st.error is not None:
                    st.unread(parts)  # keep them for the next read; the error comes first
                    raise st.error
                else:
                    await st.wait_readable()
            return b"".join(parts)

    async def recv_trailers(self, stream_id: int) -> HeaderList | dict[str, str]:
        """Wait for the end of the peer's body; return its trailers, or ``{}`` if none."""
        st = self._get(stream_id)
        await st.remote_done.wait()
        if not st.eof:
            assert st.error is not None
            raise st.error
        return st.trailers if st.trailers is not None else {}

    # -- health --------------------------------------------------------------------------------

    @property
    def functional(self) -> bool:
        """True if the connection was active within ``functional_timeout`` (an addition)."""
        return self._last_active + self._functional_timeout > self._loop.time()

    async def wait_functional(self) -> float | None:
        """Wait until the connection is functional, pinging it if it was idle too long.

        Returns the round-trip time of the PING that proved it, or the last one measured
        (``None`` if none was needed yet).
        """
        while not self.functional:
            self._rtt = None
            try:
                rtt = await self._ping(self._functional_timeout)
            except asyncio.TimeoutError:
                continue
            self._rtt = rtt
            self._touch()
        return self._rtt

    async def _ping(self, timeout: float) -> float:
        if self._client is not None:
            return await self._client.ping(timeout)
        if self._handle is not None:
            return await self._handle.ping(timeout)
        raise AIOH2Exception("this protocol is not connected")

    @property
    def functional_timeout(self) -> float:
        """Seconds of silence after which ``wait_functional`` pings before returning."""
        return self._functional_timeout

    @functional_timeout.setter
    def functional_timeout(self, val: float) -> None:
        self._functional_timeout = val

    # -- settings and priorities ---------------------------------------------------------------

    def update_settings(self, new_settings: dict[int, int]) -> None:
        """Not supported: aioh2s fixes local SETTINGS when the connection opens."""
        raise NotImplementedError(
            "aioh2s cannot change SETTINGS on an open connection; pass them to "
            "open_connection()/start_server() (stream_window=, max_frame_size=, concurrency=)"
        )

    def reprioritize(
        self,
        stream_id: int,
        depends_on: int | None = None,
        weight: int = 16,
        exclusive: bool = False,
    ) -> None:
        """Accepted and ignored: RFC 9113 deprecated priorities; aioh2s is round-robin."""

    @property
    def initial_window_size(self) -> int:
        """The stream flow-control window we advertise (read-only here)."""
        return self._config.stream_window

    @initial_window_size.setter
    def initial_window_size(self, val: int) -> None:
        self.update_settings({4: val})

    @property
    def max_frame_size(self) -> int:
        """The largest frame payload we accept (read-only here)."""
        return self._config.max_frame_size

    @max_frame_size.setter
    def max_frame_size(self, val: int) -> None:
        self.update_settings({5: val})

    @property
    def max_concurrent_streams(self) -> int:
        """The number of concurrent streams we allow the peer (read-only here)."""
        if self._client_side:
            return self._concurrency
        return self._config.max_concurrent_streams

    @max_concurrent_streams.setter
    def max_concurrent_streams(self, val: int) -> None:
        self.update_settings({3: val})


def _split_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {key: kwargs.pop(key) for key in PROTOCOL_KWARGS if key in kwargs}


async def open_connection(
    host: str | None = None,
    port: int | None = None,
    *,
    cls: type[_P] = H2Protocol,  # type: ignore[assignment]
    loop: asyncio.AbstractEventLoop | None = None,
    **options: Unpack[OpenConnectionOptions],
) -> _P:
    """Connect to an HTTP/2 server (h2c, or TLS with ``ssl=``) and return its protocol.

    ``concurrency`` and ``functional_timeout`` configure the protocol; ``ssl``,
    ``server_hostname`` and aioh2s options (``stream_window=``, ...) go to
    :func:`aioh2s.connect`.
    """
    if host is None or port is None:
        raise ValueError("open_connection() needs host and port (aioh2s connects over TCP)")
    kwargs: dict[str, Any] = dict(options)  # (typed for callers; taken apart by name here)
    args = _split_kwargs(kwargs)
    ssl = kwargs.pop("ssl", None)
    server_hostname = kwargs.pop("server_hostname", None)
    config = Config.from_options(kwargs.pop("config", None), **kwargs)
    protocol = cls(True, **args)
    client = await connect(host, port, ssl=ssl, server_hostname=server_hostname, config=config)
    protocol._bind_client(client, config)
    return protocol


class _ServerConnections:
    """The aioh2s handler of a compat server: routes each stream to its connection's protocol."""

    def __init__(
        self,
        client_connected_cb: Callable[[Any], Any],
        cls: type[H2Protocol],
        args: dict[str, Any],
    ) -> None:
        self._cb = client_connected_cb
        self._cls = cls
        self._args = args
        self._config = Config()
        self._protocols: dict[object, H2Protocol] = {}

    async def handle(self, reader: H2StreamReader, writer: H2StreamWriter) -> None:
        key = _connection_key(writer)
        proto = self._protocols.get(key)
        if proto is None:
            proto = self._cls(False, **self._args)
            handle = writer.connection
            proto._bind_server(handle, self._config)
            self._protocols[key] = proto
            assert proto._watcher is not None
            proto._watcher.add_done_callback(lambda _: self._forget(key, proto))
            try:
                proto.set_handler(self._cb(proto))
            except Exception:
                log.exception("aioh2s.compat: client_connected_cb failed; closing the connection")
                handle.close(0)
                raise
        await proto._serve_stream(reader, writer)

    def _forget(self, key: object, proto: H2Protocol) -> None:
        if self._protocols.get(key) is proto:
            del self._protocols[key]


def _connection_key(writer: H2StreamWriter) -> object:
    # aioh2s runs handlers per stream; the transport's addresses identify the connection (a
    # TCP 4-tuple is unique among open connections). The protocol is forgotten when it closes.
    peer = writer.get_extra_info("peername")
    if peer:
        return (writer.get_extra_info("sockname"), peer)
    sock = writer.get_extra_info("socket")
    return sock if sock is not None else object()


async def start_server(
    client_connected_cb: Callable[[Any], Any],
    host: str | None = None,
    port: int | None = None,
    *,
    cls: type[H2Protocol] = H2Protocol,
    loop: asyncio.AbstractEventLoop | None = None,
    **options: Unpack[StartServerOptions],
) -> Server:
    """Start an HTTP/2 server; ``client_connected_cb(protocol)`` runs once per connection.

    Its result (a coroutine, task or future) becomes the protocol's handler, cancelled when
    the connection closes. ``concurrency`` (default 8) is the SETTINGS_MAX_CONCURRENT_STREAMS
    advertised to clients; ``ssl``, ``backlog``, ``reuse_address``, ``reuse_port``, ``sock``
    and aioh2s options go to :func:`aioh2s.start_server`. Returns an ``aioh2s.Server``
    (``sockets``, ``close()``, ``wait_closed()``, as ``asyncio.Server``).
    """
    kwargs: dict[str, Any] = dict(options)  # (typed for callers; taken apart by name here)
    args = _split_kwargs(kwargs)
    kwargs.setdefault("max_concurrent_streams", args.get("concurrency", 8))
    conns = _ServerConnections(client_connected_cb, cls, args)
    if host is None and not port and kwargs.get("sock") is None:
        server = await _start_on_shared_port(conns.handle, kwargs)
    else:
        server = await _aioh2s_start_server(conns.handle, host, port, **kwargs)
    conns._config = server.config
    return server


async def _start_on_shared_port(handler: Any, kwargs: dict[str, Any]) -> Server:
    # All interfaces on a random port: asyncio gives IPv4 and IPv6 two *different* random
    # ports, in set order, so aioh2's `server.sockets[0].getsockname()[1]` named the IPv6 port
    # about half the time and connecting to 127.0.0.1 on it failed. Pick one free port for
    # both instead (retrying if someone takes it in between).
    for attempt in range(8):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("", 0))
            port = probe.getsockname()[1]
        try:
            return await _aioh2s_start_server(handler, None, port, **kwargs)
        except OSError as e:
            if e.errno != errno.EADDRINUSE or attempt == 7:
                raise
    raise AssertionError("unreachable")


async def open_unix_connection(
    path: str | None = None, *, loop: asyncio.AbstractEventLoop | None = None, **kwargs: Any
) -> H2Protocol:
    """Not supported: aioh2s connects over TCP only."""
    raise NotImplementedError("aioh2s has no Unix socket transport; use open_connection()")


async def start_unix_server(
    client_connected_cb: Callable[[Any], Any],
    path: str | None = None,
    *,
    loop: asyncio.AbstractEventLoop | None = None,
    **kwargs: Any,
) -> Server:
    """Not supported: aioh2s serves over TCP only."""
    raise NotImplementedError("aioh2s has no Unix socket transport; use start_server()")
