"""A raw HTTP/2 peer for attacker-side tests: any bytes out, every frame in, always a deadline.

Theory of operation
-------------------
`RawPeer` owns one non-blocking TCP socket and drives it with the event loop's ``sock_*``
coroutines, so the server under test runs in the *same* event loop as the test (which lets the
test measure the server with ``tracemalloc`` and count its handler tasks) while the peer sends
whatever it likes.  Nothing here validates outgoing frames: the builders below
(`raw_frame`, `data`, `window_update`, ...) produce exact bytes, including illegal ones
(increment 0, lengths that lie, frames on stream 0), and `RawPeer.headers` encodes header
blocks with a plain ``hpack.Encoder`` that happily encodes uppercase or empty names.

Incoming bytes are consumed by an optional background reader task that splits them into
frames with a 9-byte header parser, keeps the HPACK decoder in sync, and updates a small
summary: the server's SETTINGS, the first GOAWAY, RST_STREAM codes, per-stream responses,
PING ACKs, EOF.  Waits are predicates over that summary with a deadline (`wait_for`,
`expect_goaway`, `expect_rst`, `expect_stream_error`, `closed`), so a server that hangs makes
a test fail with a description of what it *did* send, never hang it.  The summary is bounded
(counters plus a short tail of frames, per-stream detail only when ``track_streams``) so the
peer's own allocations stay small while a test measures the server's memory.

An attacker that "does not read" simply never starts the reader task (``autoread=False``)
and may shrink its receive buffer (``rcvbuf=``) so the server's replies back up quickly.
"""

from __future__ import annotations

import asyncio
import collections
import os
import random
import socket
import struct
import time
from collections.abc import Callable, Iterable
from typing import NamedTuple

import hpack
from h2.errors import ErrorCodes

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types (RFC 9113 section 6).
DATA = 0x0
HEADERS = 0x1
PRIORITY = 0x2
RST_STREAM = 0x3
SETTINGS = 0x4
PUSH_PROMISE = 0x5
PING = 0x6
GOAWAY = 0x7
WINDOW_UPDATE = 0x8
CONTINUATION = 0x9

FRAME_NAMES = {
    DATA: "DATA",
    HEADERS: "HEADERS",
    PRIORITY: "PRIORITY",
    RST_STREAM: "RST_STREAM",
    SETTINGS: "SETTINGS",
    PUSH_PROMISE: "PUSH_PROMISE",
    PING: "PING",
    GOAWAY: "GOAWAY",
    WINDOW_UPDATE: "WINDOW_UPDATE",
    CONTINUATION: "CONTINUATION",
}

# Flags.
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

# SETTINGS identifiers.
HEADER_TABLE_SIZE = 0x1
ENABLE_PUSH = 0x2
MAX_CONCURRENT_STREAMS = 0x3
INITIAL_WINDOW_SIZE = 0x4
MAX_FRAME_SIZE = 0x5
MAX_HEADER_LIST_SIZE = 0x6
NO_RFC7540_PRIORITIES = 0x9

DEFAULT_WINDOW = 65_535
DEFAULT_MAX_FRAME = 16_384
MAX_WINDOW = 2**31 - 1


def code_name(code: int | None) -> str:
    """Readable name of an HTTP/2 error code (``ENHANCE_YOUR_CALM(0xb)``)."""
    if code is None:
        return "None"
    try:
        return f"{ErrorCodes(code).name}({code:#x})"
    except ValueError:
        return f"UNKNOWN({code:#x})"


# ---------------------------------------------------------------------------------------------
# Frame builders: exact bytes, no validation, so tests can send anything.
# ---------------------------------------------------------------------------------------------


def raw_frame(
    ftype: int, flags: int, stream_id: int, payload: bytes = b"", length: int | None = None
) -> bytes:
    """One frame with a 9-byte header; ``length`` may lie about the payload."""
    n = len(payload) if length is None else length
    return struct.pack(">I", n)[1:] + struct.pack(">BBI", ftype, flags, stream_id) + payload


def data(stream_id: int, payload: bytes = b"", end_stream: bool = False) -> bytes:
    """A DATA frame."""
    return raw_frame(DATA, END_STREAM if end_stream else 0, stream_id, payload)


def rst(stream_id: int, code: int = ErrorCodes.CANCEL) -> bytes:
    """An RST_STREAM frame."""
    return raw_frame(RST_STREAM, 0, stream_id, struct.pack(">I", code))


def settings(values: dict[int, int] | None = None, ack: bool = False) -> bytes:
    """A SETTINGS frame (values are not range-checked)."""
    payload = b"".join(struct.pack(">HI", k, v) for k, v in (values or {}).items())
    return raw_frame(SETTINGS, ACK if ack else 0, 0, payload)


def ping(opaque: bytes = b"\0" * 8, ack: bool = False) -> bytes:
    """A PING frame (``opaque`` is not length-checked)."""
    return raw_frame(PING, ACK if ack else 0, 0, opaque)


def goaway(last_stream_id: int, code: int = ErrorCodes.NO_ERROR, debug: bytes = b"") -> bytes:
    """A GOAWAY frame."""
    return raw_frame(GOAWAY, 0, 0, struct.pack(">II", last_stream_id, code) + debug)


def window_update(stream_id: int, increment: int) -> bytes:
    """A WINDOW_UPDATE frame; ``increment`` may be 0 or have the reserved bit set."""
    return raw_frame(WINDOW_UPDATE, 0, stream_id, struct.pack(">I", increment & 0xFFFFFFFF))


def priority(
    stream_id: int, depends_on: int = 0, weight: int = 16, exclusive: bool = False
) -> bytes:
    """A PRIORITY frame (``weight`` is the real weight, 1..256)."""
    dep = (depends_on & 0x7FFFFFFF) | (0x80000000 if exclusive else 0)
    return raw_frame(PRIORITY, 0, stream_id, struct.pack(">IB", dep, (weight - 1) & 0xFF))


def continuation(stream_id: int, block: bytes, end_headers: bool = False) -> bytes:
    """A CONTINUATION frame."""
    return raw_frame(CONTINUATION, END_HEADERS if end_headers else 0, stream_id, block)


def headers_frame(
    stream_id: int, block: bytes, end_stream: bool = False, end_headers: bool = True
) -> bytes:
    """A HEADERS frame around an already-encoded header block."""
    flags = (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0)
    return raw_frame(HEADERS, flags, stream_id, block)


def request_headers(
    path: str = "/", method: str = "GET", authority: str = "127.0.0.1", scheme: str = "http"
) -> list[tuple[str, str]]:
    """The four pseudo-headers of a well-formed request, in the order RFC 9113 requires."""
    return [(":method", method), (":scheme", scheme), (":authority", authority), (":path", path)]


# ---------------------------------------------------------------------------------------------
# Incoming side
# ---------------------------------------------------------------------------------------------


class RxFrame(NamedTuple):
    """A received frame; DATA payloads are dropped (``length`` keeps their size)."""

    type: int
    flags: int
    stream_id: int
    length: int
    payload: bytes

    def __repr__(self) -> str:
        name = FRAME_NAMES.get(self.type, f"TYPE{self.type:#x}")
        extra = ""
        if self.type == GOAWAY and len(self.payload) >= 8:
            last, code = struct.unpack(">II", self.payload[:8])
            extra = f" last={last & 0x7FFFFFFF} {code_name(code)} debug={self.payload[8:40]!r}"
        elif self.type == RST_STREAM and len(self.payload) == 4:
            extra = " " + code_name(struct.unpack(">I", self.payload)[0])
        elif self.type == WINDOW_UPDATE and len(self.payload) == 4:
            extra = f" +{struct.unpack('>I', self.payload)[0] & 0x7FFFFFFF}"
        return f"{name}(s={self.stream_id} f={self.flags:#x} len={self.length}{extra})"


class GoAwayInfo(NamedTuple):
    """The first GOAWAY the server sent."""

    last_stream_id: int
    error_code: int
    debug: bytes


class Response:
    """What one stream received (only with ``track_streams``)."""

    __slots__ = ("headers", "trailers", "body", "ended", "reset_code", "data_bytes")

    def __init__(self) -> None:
        self.headers: list[tuple[str, str]] | None = None
        self.trailers: list[tuple[str, str]] | None = None
        self.body = bytearray()
        self.ended = False
        self.reset_code: int | None = None
        self.data_bytes = 0

    @property
    def status(self) -> str | None:
        """The ``:status`` of the final response headers, if any arrived."""
        for name, value in self.headers or ():
            if name == ":status":
                return value
        return None


class PeerError(AssertionError):
    """An expectation about the server's answer did not hold (message says what it did)."""


class RawPeer:
    """One raw HTTP/2 client connection for misbehaving on purpose.  See the module doc."""

    def __init__(
        self,
        sock: socket.socket,
        *,
        track_streams: bool = True,
        keep_body: bool = True,
        auto_ack: bool = True,
        auto_window: bool = True,
    ) -> None:
        self.sock = sock
        self.loop = asyncio.get_running_loop()
        self.track_streams = track_streams
        self.keep_body = keep_body
        self.auto_ack = auto_ack
        self.auto_window = auto_window
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        # We decode whatever the server sends; its size is not what we are testing here.
        self.decoder.max_header_list_size = 2**24
        self.decoder.max_allowed_table_size = 2**16
        self._buf = bytearray()
        self._block: bytearray | None = None
        self._block_stream = 0
        self._block_end_stream = False
        self._send_lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._next_stream = 1
        self._ping_seq = 0
        # Nothing may be sent in reply before our own preface (a SETTINGS ACK first would be
        # an invalid preface); a SETTINGS that arrives earlier is acknowledged by handshake().
        self.preface_sent = False
        self._settings_ack_owed = False
        # Summary of what the server sent.
        self.server_settings: dict[int, int] = {}
        self.settings_frames = 0
        self.settings_acks = 0
        self.goaway: GoAwayInfo | None = None
        self.goaways = 0
        self.rst_count = 0
        self.rst_codes: collections.Counter[int] = collections.Counter()
        self.counts: collections.Counter[int] = collections.Counter()
        self.ping_acks: set[bytes] = set()
        self.ping_ack_count = 0
        self.streams: dict[int, Response] = {}
        self.window_updates: collections.Counter[int] = collections.Counter()
        self.bytes_received = 0
        self.data_received = 0
        self.tail: collections.deque[RxFrame] = collections.deque(maxlen=32)
        self.eof = False
        self.eof_at: float | None = None
        self.reset_by_peer = False
        self.parse_error: str | None = None
        self.send_error: BaseException | None = None
        self.created = time.monotonic()

    # -- connection ---------------------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        port: int,
        host: str = "127.0.0.1",
        *,
        rcvbuf: int | None = None,
        autoread: bool = True,
        timeout: float = 5.0,
        **kwargs: bool,
    ) -> RawPeer:
        """Open a TCP connection (nothing is sent yet).

        ``rcvbuf`` shrinks SO_RCVBUF before connecting so that a peer that does not read
        makes the server's replies back up into the server's own buffers quickly.
        """
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.sock_connect(sock, (host, port)), timeout)
        except BaseException:
            sock.close()
            raise
        peer = cls(sock, **kwargs)
        if autoread:
            peer.start_reading()
        return peer

    async def handshake(
        self,
        values: dict[int, int] | None = None,
        *,
        conn_window: int | None = None,
        timeout: float = 5.0,
    ) -> dict[int, int]:
        """Send the preface and SETTINGS, wait for the server's SETTINGS; return them.

        ``conn_window`` (if larger than 65,535) is announced with a connection WINDOW_UPDATE.
        A peer created with ``autoread=False`` reads just long enough to see the SETTINGS.
        """
        out = PREFACE + settings(values or {})
        if conn_window is not None and conn_window > DEFAULT_WINDOW:
            out += window_update(0, conn_window - DEFAULT_WINDOW)
        await self.send(out)
        self.preface_sent = True
        was_reading = self.reading
        self.start_reading()
        try:
            await self.wait_for(lambda p: p.settings_frames > 0 or p.eof, timeout)
        finally:
            if not was_reading:
                await self.stop_reading()
        if not self.settings_frames:
            raise PeerError(f"server sent no SETTINGS within {timeout}s: {self.describe()}")
        if self._settings_ack_owed:
            self._settings_ack_owed = False
            await self.send(settings(ack=True))
        # Our HPACK encoder must respect the server's decoder table size.
        table = self.server_settings.get(HEADER_TABLE_SIZE, 4096)
        if table < 4096:
            self.encoder.header_table_size = table
        return dict(self.server_settings)

    @property
    def max_frame_size(self) -> int:
        """The largest frame the server accepts (its SETTINGS_MAX_FRAME_SIZE)."""
        return self.server_settings.get(MAX_FRAME_SIZE, DEFAULT_MAX_FRAME)

    @property
    def initial_window(self) -> int:
        """The stream window the server advertised (SETTINGS_INITIAL_WINDOW_SIZE)."""
        return self.server_settings.get(INITIAL_WINDOW_SIZE, DEFAULT_WINDOW)

    def new_stream_id(self) -> int:
        """The next client stream id (odd, increasing)."""
        sid = self._next_stream
        self._next_stream += 2
        return sid

    def skip_stream_ids(self, to: int) -> None:
        """Continue numbering streams from ``to`` (must be odd)."""
        self._next_stream = max(self._next_stream, to)

    async def close(self) -> None:
        """Stop reading and close the socket (idempotent)."""
        await self.stop_reading()
        self.sock.close()

    async def __aenter__(self) -> RawPeer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- sending ------------------------------------------------------------------------------

    def headers(
        self,
        stream_id: int,
        header_list: Iterable[tuple[str | bytes, str | bytes]],
        *,
        end_stream: bool = False,
        end_headers: bool = True,
    ) -> bytes:
        """Encode ``header_list`` with this connection's HPACK encoder into a HEADERS frame.

        Names are sent exactly as given (no lowercasing), so malformed requests are possible.
        """
        block = self.encoder.encode(list(header_list), huffman=False)
        return headers_frame(stream_id, block, end_stream=end_stream, end_headers=end_headers)

    def request(
        self,
        stream_id: int,
        path: str = "/",
        method: str = "GET",
        *,
        end_stream: bool = True,
        extra: Iterable[tuple[str, str]] = (),
    ) -> bytes:
        """A well-formed request HEADERS frame (plus ``extra`` regular headers)."""
        return self.headers(
            stream_id, request_headers(path, method) + list(extra), end_stream=end_stream
        )

    async def send(self, *parts: bytes, timeout: float = 5.0) -> None:
        """Send raw bytes; raises ConnectionError if the server closed, TimeoutError if stuck."""
        blob = parts[0] if len(parts) == 1 else b"".join(parts)
        async with self._send_lock:
            await asyncio.wait_for(self.loop.sock_sendall(self.sock, blob), timeout)

    async def try_send(self, *parts: bytes, timeout: float = 5.0) -> bool:
        """Like `send` but returns False (and records why) instead of raising."""
        try:
            await self.send(*parts, timeout=timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            self.send_error = exc
            return False
        return True

    async def flood(
        self,
        blob: bytes | Callable[[int], bytes],
        *,
        repeat: int,
        seconds: float,
        stop: Callable[[RawPeer], bool] | None = None,
        send_timeout: float = 1.0,
    ) -> int:
        """Send ``blob`` (or ``blob(i)``) up to ``repeat`` times within ``seconds``.

        Stops early when the server closes, when a send stays blocked for ``send_timeout``
        (the server stopped reading), or when ``stop(self)`` is true.  Returns the number of
        blobs fully sent.
        """
        deadline = time.monotonic() + seconds
        sent = 0
        while sent < repeat and time.monotonic() < deadline:
            if stop is not None and stop(self):
                break
            chunk = blob(sent) if callable(blob) else blob
            if not await self.try_send(chunk, timeout=send_timeout):
                break
            sent += 1
            if sent % 16 == 0:
                # Let the server (same event loop) and the reader task run.
                await asyncio.sleep(0)
        return sent

    async def ping(self, timeout: float = 3.0) -> bool:
        """Send a PING and wait for its ACK; False if none came (closed or silent)."""
        self._ping_seq += 1
        opaque = struct.pack(">Q", self._ping_seq | 0x5A5A000000000000)
        if not await self.try_send(ping(opaque)):
            return False
        return await self.wait_for(lambda p: opaque in p.ping_acks or p.eof, timeout) and (
            opaque in self.ping_acks
        )

    async def get(
        self,
        path: str = "/",
        *,
        method: str = "GET",
        body: bytes | None = None,
        timeout: float = 5.0,
    ) -> Response:
        """Make one request on a new stream and wait until it ends (or raise PeerError)."""
        sid = self.new_stream_id()
        out = self.request(sid, path, method, end_stream=body is None)
        if body is not None:
            out += data(sid, body, end_stream=True)
        self.streams[sid] = Response()
        await self.send(out)
        ok = await self.wait_for(
            lambda p: p.streams[sid].ended or p.streams[sid].reset_code is not None or p.eof,
            timeout,
        )
        resp = self.streams.pop(sid)
        if not resp.ended:
            why = (
                "timed out"
                if not ok
                else (
                    f"reset {code_name(resp.reset_code)}" if resp.reset_code is not None else "EOF"
                )
            )
            raise PeerError(f"{method} {path} on stream {sid}: {why}: {self.describe()}")
        return resp

    # -- receiving ----------------------------------------------------------------------------

    @property
    def reading(self) -> bool:
        """Whether the background reader task is running."""
        return self._reader is not None and not self._reader.done()

    def start_reading(self) -> None:
        """Start (or keep) the background reader task."""
        if not self.reading and not self.eof:
            self._reader = self.loop.create_task(self._read_loop())

    async def stop_reading(self) -> None:
        """Stop the background reader task (unread bytes stay in the kernel)."""
        task, self._reader = self._reader, None
        # Python 3.11's wait_for() (in try_send) can swallow a cancellation that lands as its
        # inner send completes; cancel again until the task has really stopped.
        for _ in range(100):
            if task is None or task.done():
                break
            task.cancel()
            await asyncio.wait([task], timeout=0.05)
        if task is not None and task.done() and not task.cancelled():
            task.exception()  # retrieved: a reader that failed is reported by its waits

    async def _read_loop(self) -> None:
        try:
            while True:
                try:
                    chunk = await self.loop.sock_recv(self.sock, 65_536)
                except (ConnectionResetError, BrokenPipeError):
                    self.reset_by_peer = True
                    chunk = b""
                except OSError:
                    chunk = b""
                if not chunk:
                    self.eof = True
                    self.eof_at = time.monotonic()
                    return
                self.bytes_received += len(chunk)
                self._buf += chunk
                replies = self._parse()
                if replies and not self.eof:
                    await self.try_send(replies, timeout=2.0)
                self._changed.set()
        finally:
            self._changed.set()

    def _parse(self) -> bytes:
        buf = self._buf
        replies = []
        pos = 0
        while len(buf) - pos >= 9:
            length = int.from_bytes(buf[pos : pos + 3], "big")
            if len(buf) - pos - 9 < length:
                break
            ftype, flags = buf[pos + 3], buf[pos + 4]
            sid = int.from_bytes(buf[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
            payload = bytes(buf[pos + 9 : pos + 9 + length]) if ftype != DATA else b""
            if ftype == DATA and self.track_streams and self.keep_body and sid in self.streams:
                payload = self._strip_padding(flags, bytes(buf[pos + 9 : pos + 9 + length]))
            pos += 9 + length
            frame = RxFrame(ftype, flags, sid, length, payload)
            reply = self._on_frame(frame)
            if reply:
                replies.append(reply)
        del buf[:pos]
        return b"".join(replies)

    @staticmethod
    def _strip_padding(flags: int, payload: bytes) -> bytes:
        if flags & PADDED and payload:
            pad = payload[0]
            return payload[1 : len(payload) - pad]
        return payload

    def _on_frame(self, f: RxFrame) -> bytes:
        self.counts[f.type] += 1
        self.tail.append(f)
        reply = b""
        if f.type == SETTINGS:
            if f.flags & ACK:
                self.settings_acks += 1
            else:
                self.settings_frames += 1
                for i in range(0, len(f.payload) - 5, 6):
                    k, v = struct.unpack(">HI", f.payload[i : i + 6])
                    self.server_settings[k] = v
                if not self.auto_ack:
                    pass
                elif self.preface_sent:
                    reply = settings(ack=True)
                else:
                    self._settings_ack_owed = True
        elif f.type == PING:
            if f.flags & ACK:
                self.ping_ack_count += 1
                if len(self.ping_acks) < 1024:
                    self.ping_acks.add(f.payload)
            elif self.auto_ack and self.preface_sent:
                reply = ping(f.payload, ack=True)
        elif f.type == GOAWAY:
            self.goaways += 1
            if self.goaway is None and len(f.payload) >= 8:
                last, code = struct.unpack(">II", f.payload[:8])
                self.goaway = GoAwayInfo(last & 0x7FFFFFFF, code, f.payload[8:])
        elif f.type == RST_STREAM:
            code = struct.unpack(">I", f.payload)[0] if len(f.payload) == 4 else -1
            self.rst_count += 1
            self.rst_codes[code] += 1
            if self.track_streams:
                self.streams.setdefault(f.stream_id, Response()).reset_code = code
        elif f.type == WINDOW_UPDATE:
            if len(f.payload) == 4:
                self.window_updates[f.stream_id] += struct.unpack(">I", f.payload)[0] & 0x7FFFFFFF
        elif f.type == DATA:
            self.data_received += f.length
            if self.track_streams:
                resp = self.streams.setdefault(f.stream_id, Response())
                resp.data_bytes += f.length
                if self.keep_body:
                    resp.body += f.payload
                if f.flags & END_STREAM:
                    resp.ended = True
            if self.auto_window and f.length and self.preface_sent:
                # Give back what we consumed so long responses keep flowing.
                reply = window_update(0, f.length)
                if not f.flags & END_STREAM:
                    reply += window_update(f.stream_id, f.length)
        elif f.type in (HEADERS, PUSH_PROMISE):
            block = f.payload
            if f.type == HEADERS:
                block = self._headers_fragment(f.flags, block)
            else:
                block = block[4:]
            self._block = bytearray(block)
            self._block_stream = f.stream_id
            self._block_end_stream = bool(f.flags & END_STREAM) and f.type == HEADERS
            if f.flags & END_HEADERS:
                self._finish_block(f.type == PUSH_PROMISE)
        elif f.type == CONTINUATION:
            if self._block is not None:
                self._block += f.payload
                if f.flags & END_HEADERS:
                    self._finish_block(False)
        return reply

    @staticmethod
    def _headers_fragment(flags: int, payload: bytes) -> bytes:
        start, end = 0, len(payload)
        if flags & PADDED and payload:
            start = 1
            end -= payload[0]
        if flags & PRIORITY_FLAG:
            start += 5
        return payload[start:end]

    def _finish_block(self, push: bool) -> None:
        block, self._block = self._block, None
        try:
            decoded = self.decoder.decode(bytes(block or b""), raw=False)
        except Exception as exc:  # the server sent a broken block: note it, keep going
            self.parse_error = f"HPACK decode failed on stream {self._block_stream}: {exc!r}"
            return
        if push or not self.track_streams:
            return
        resp = self.streams.setdefault(self._block_stream, Response())
        hdrs = [(str(n), str(v)) for n, v in decoded]
        status = next((v for n, v in hdrs if n == ":status"), None)
        if status is None:
            resp.trailers = hdrs
        elif not status.startswith("1"):
            resp.headers = hdrs
        if self._block_end_stream:
            resp.ended = True

    # -- waiting and expectations -------------------------------------------------------------

    async def wait_for(self, predicate: Callable[[RawPeer], bool], timeout: float) -> bool:
        """Wait until ``predicate(self)`` holds; False at the deadline (never raises)."""
        if not self.reading and not predicate(self):
            self.start_reading()
        deadline = time.monotonic() + timeout
        while not predicate(self):
            left = deadline - time.monotonic()
            if left <= 0 or (self.eof and not self.reading):
                return predicate(self)
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except asyncio.TimeoutError:
                return predicate(self)
        return True

    async def expect_goaway(self, *codes: int, timeout: float = 5.0) -> GoAwayInfo:
        """Wait for a GOAWAY and assert its error code is one of ``codes``."""
        await self.wait_for(lambda p: p.goaway is not None or p.eof, timeout)
        if self.goaway is None:
            await self.wait_for(lambda p: p.goaway is not None, 0.2)
        want = " or ".join(code_name(c) for c in codes)
        if self.goaway is None:
            raise PeerError(f"expected GOAWAY {want}, got none: {self.describe()}")
        if codes and self.goaway.error_code not in codes:
            raise PeerError(
                f"expected GOAWAY {want}, got {code_name(self.goaway.error_code)}: "
                f"{self.describe()}"
            )
        return self.goaway

    async def expect_rst(self, stream_id: int, *codes: int, timeout: float = 5.0) -> int:
        """Wait for RST_STREAM on ``stream_id`` and assert its code is one of ``codes``."""
        self.streams.setdefault(stream_id, Response())

        def done(p: RawPeer) -> bool:
            return p.streams[stream_id].reset_code is not None or p.goaway is not None or p.eof

        await self.wait_for(done, timeout)
        code = self.streams[stream_id].reset_code
        want = " or ".join(code_name(c) for c in codes)
        if code is None:
            raise PeerError(f"expected RST_STREAM({stream_id}) {want}, got none: {self.describe()}")
        if codes and code not in codes:
            raise PeerError(
                f"expected RST_STREAM({stream_id}) {want}, got {code_name(code)}: {self.describe()}"
            )
        return code

    async def expect_stream_error(self, stream_id: int, *codes: int, timeout: float = 5.0) -> str:
        """Assert a stream error: RST_STREAM(stream_id) or GOAWAY with one of ``codes``.

        RFC 9113 section 5.4.1 lets an endpoint treat any stream error as a connection error,
        so both answers are correct.  Returns ``"rst"`` or ``"goaway"``.
        """
        self.streams.setdefault(stream_id, Response())

        def done(p: RawPeer) -> bool:
            return p.streams[stream_id].reset_code is not None or p.goaway is not None or p.eof

        await self.wait_for(done, timeout)
        code = self.streams[stream_id].reset_code
        want = " or ".join(code_name(c) for c in codes)
        if code is not None:
            if codes and code not in codes:
                raise PeerError(
                    f"expected RST_STREAM({stream_id})/GOAWAY {want}, got RST_STREAM "
                    f"{code_name(code)}: {self.describe()}"
                )
            return "rst"
        if self.goaway is not None:
            if codes and self.goaway.error_code not in codes:
                raise PeerError(
                    f"expected RST_STREAM({stream_id})/GOAWAY {want}, got GOAWAY "
                    f"{code_name(self.goaway.error_code)}: {self.describe()}"
                )
            return "goaway"
        raise PeerError(
            f"expected RST_STREAM({stream_id}) or GOAWAY {want}, got neither: {self.describe()}"
        )

    async def closed(self, timeout: float = 5.0) -> bool:
        """Read until the server closes the connection; True if it did within ``timeout``."""
        return await self.wait_for(lambda p: p.eof, timeout)

    def describe(self) -> str:
        """What the server has sent so far, for assertion messages."""
        counts = ", ".join(
            f"{FRAME_NAMES.get(t, hex(t))}x{n}" for t, n in sorted(self.counts.items())
        )
        rsts = ", ".join(f"{code_name(c)}x{n}" for c, n in self.rst_codes.items())
        state = "closed" + (" (reset)" if self.reset_by_peer else "") if self.eof else "open"
        if self.eof and self.eof_at is not None:
            state += f" after {self.eof_at - self.created:.2f}s"
        goaway = (
            f"GOAWAY(last={self.goaway.last_stream_id}, {code_name(self.goaway.error_code)}, "
            f"debug={self.goaway.debug[:60]!r})"
            if self.goaway
            else "no GOAWAY"
        )
        text = (
            f"[connection {state}; {goaway}; frames: {counts or 'none'}; "
            f"RST codes: {rsts or 'none'}; {self.bytes_received} bytes in; "
            f"last frames: {list(self.tail)[-6:]}]"
        )
        if self.parse_error:
            text += f" [{self.parse_error}]"
        return text


async def fresh_get(port: int, path: str = "/", timeout: float = 5.0) -> Response:
    """A well-behaved one-shot GET on a new raw connection (a healthy client)."""
    peer = await RawPeer.connect(port, timeout=timeout)
    try:
        await peer.handshake(timeout=timeout)
        return await peer.get(path, timeout=timeout)
    finally:
        await peer.close()


def random_bytes(n: int, seed: int | None = 0) -> bytes:
    """Deterministic pseudo-random bytes (or os.urandom when seed is None)."""
    if seed is None:
        return os.urandom(n)
    return random.Random(seed).randbytes(n)
