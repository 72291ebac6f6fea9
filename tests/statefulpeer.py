"""Raw HTTP/2 peers for tests/test_stateful.py: plain ``h2`` over asyncio streams, no aioh2s.

Theory of operation: `RawPeer` wraps one ``h2.connection.H2Connection`` (client or server
side) around an asyncio stream pair. A background task reads, feeds h2 and records what the
other side (aioh2s) did in small per-stream summaries (`PeerStream`): body bytes received
(checked on arrival against the shared `pattern`), END_STREAM, trailers, RST_STREAM codes;
and connection-wide facts: GOAWAYs received, SETTINGS and PING acknowledgements outstanding,
EOF, and any error h2 raised on our bytes. Everything the peer *sends* is driven by the test
one call at a time (`send_data`, `reset`, `goaway`, ...), so the test knows exactly what was
sent. GOAWAY is written as raw bytes, bypassing h2, so a graceful GOAWAY does not put h2's
state machine into CLOSED and the peer can keep serving streams below its last stream id.

Receive windows: with ``autoack`` on (the default) the peer re-opens exactly the bytes it
received, on the stream and the connection, so its windows stay at their initial size and a
writer on the other side can always make progress; with it off, windows only grow through
explicit `window_update` calls (and the acknowledgements held back are sent when autoack is
switched on again).
"""

from __future__ import annotations

import asyncio
import collections
import os
import random
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import hyperframe.frame

# ---------------------------------------------------------------------------------------------
# The byte pattern both directions send: a pseudo-random block with a prime period, so a lost,
# duplicated or reordered chunk shows up as a mismatch. It contains b"\n" about once every 256
# bytes (lines of many lengths for readline()).
# ---------------------------------------------------------------------------------------------

PERIOD = 4099
BLOCK = random.Random(0x5EED).randbytes(PERIOD)
_DOUBLE = BLOCK + BLOCK


def pattern(offset: int, n: int) -> bytes:
    """``n`` bytes of the endless pattern starting at ``offset``."""
    if n <= 0:
        return b""
    o = offset % PERIOD
    if o + n <= len(_DOUBLE):
        return _DOUBLE[o : o + n]
    rotated = _DOUBLE[o : o + PERIOD]
    reps, rest = divmod(n, PERIOD)
    return rotated * reps + rotated[:rest]


def next_newline(offset: int) -> int:
    """The offset of the first b"\\n" at or after ``offset`` in the pattern."""
    o = offset % PERIOD
    i = _DOUBLE.find(b"\n", o)
    assert i != -1
    return offset + (i - o)


def find_offsets(chunk: bytes, lo: int, hi: int) -> list[int]:
    """Every offset ``c`` in ``[lo, hi]`` where the pattern continues with ``chunk``."""
    if not chunk:
        return list(range(lo, hi + 1))
    key = chunk[:32]
    residues = []
    start = 0
    while True:
        i = _DOUBLE.find(key, start)
        if i == -1 or i >= PERIOD:
            break
        residues.append(i)
        start = i + 1
    found = []
    for r in residues:
        c = lo + ((r - lo) % PERIOD)
        while c <= hi:
            if pattern(c, len(chunk)) == chunk:
                found.append(c)
            c += PERIOD
    return sorted(found)


class PeerStream:
    """What the raw peer sent and received on one stream."""

    def __init__(self, sid: int) -> None:
        self.sid = sid
        # Sent by the peer.
        self.sent = 0
        self.ended = False  # END_STREAM sent (DATA or trailers)
        self.trailers_sent: list[tuple[str, str]] | None = None
        self.reset_sent: int | None = None
        self.headers_sent = False  # server peer: response headers sent
        # Received from aioh2s.
        self.headers: list[tuple[str, str]] | None = None
        self.informational: list[list[tuple[str, str]]] = []
        self.rx = 0
        self.rx_end = False
        self.rx_trailers: list[tuple[str, str]] | None = None
        self.rx_rst: int | None = None
        self.unacked = 0  # bytes received while autoack was off
        self.problems: list[str] = []

    def __repr__(self) -> str:
        return (
            f"<PeerStream {self.sid} sent={self.sent} ended={self.ended} rst_sent="
            f"{self.reset_sent} rx={self.rx} rx_end={self.rx_end} rx_rst={self.rx_rst}>"
        )


class RawPeer:
    """One raw h2 connection endpoint over an asyncio stream pair."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client_side: bool
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.client_side = client_side
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=client_side, header_encoding="utf-8")
        )
        self.streams: dict[int, PeerStream] = {}
        self.autoack = True
        self.errors: list[str] = []
        self.eof = False
        self.eof_error: BaseException | None = None
        self.dropped = False
        self.goaway_rx: list[tuple[int, int]] = []  # (error_code, last_stream_id)
        self.goaway_sent: list[tuple[int, int]] = []
        self.settings_outstanding = 0
        self.pings_outstanding: set[bytes] = set()
        self.remote_settings = False
        self.trace: collections.deque[str] = collections.deque(maxlen=80)
        self.new_streams: list[int] = []  # server side: request streams, in order
        self.task: asyncio.Task[None] | None = None
        self._conn_unacked = 0
        self.silenced = False

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self.h2.initiate_connection()
        self.flush()
        self.task = asyncio.get_running_loop().create_task(self._read_loop())

    @property
    def alive(self) -> bool:
        """The TCP connection is up (as far as the peer knows)."""
        return not (self.eof or self.dropped)

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if self.silenced:
            return  # we sent GOAWAY with an error: nothing more goes out
        if data and not self.writer.transport.is_closing():
            self.writer.write(data)

    async def _read_loop(self) -> None:
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    self.trace.append("EOF")
                    break
                try:
                    events = self.h2.receive_data(data)
                except h2.exceptions.ProtocolError as e:
                    self.errors.append(f"the raw peer's h2 rejected what aioh2s sent: {e!r}")
                    self.trace.append(f"h2 error {e!r}")
                    self.flush()
                    break
                for ev in events:
                    self._on_event(ev)
                self.flush()
        except (ConnectionError, OSError) as e:
            self.eof_error = e
            self.trace.append(f"read error {e!r}")
        finally:
            self.eof = True
            self.pings_outstanding.clear()
            self.settings_outstanding = 0

    def _stream(self, sid: int) -> PeerStream:
        ps = self.streams.get(sid)
        if ps is None:
            ps = self.streams[sid] = PeerStream(sid)
        return ps

    def _on_event(self, ev: Any) -> None:
        t = type(ev)
        sid = getattr(ev, "stream_id", None)
        if t is h2.events.DataReceived:
            ps = self._stream(sid)
            data = ev.data or b""
            self.trace.append(f"DATA s={sid} len={len(data)} end={ev.stream_ended is not None}")
            if ps.rx_end:
                ps.problems.append(f"DATA after END_STREAM on stream {sid}")
            if data != pattern(ps.rx, len(data)):
                ps.problems.append(
                    f"stream {sid}: body bytes {ps.rx}..{ps.rx + len(data)} are not the bytes"
                    " the application wrote there (lost, duplicated or reordered)"
                )
            ps.rx += len(data)
            flow = ev.flow_controlled_length or 0
            if flow:
                if self.autoack:
                    self._ack(sid, flow)
                else:
                    ps.unacked += flow
                    self._conn_unacked += flow
        elif t is h2.events.RequestReceived:
            ps = self._stream(sid)
            ps.headers = list(ev.headers)
            self.new_streams.append(sid)
            self.trace.append(f"HEADERS(request) s={sid}")
            # A server peer answers at once, so the client's reader has a response to read.
            try:
                self.h2.send_headers(sid, [(":status", "200")])
                ps.headers_sent = True
            except h2.exceptions.ProtocolError as e:
                self.trace.append(f"could not respond on {sid}: {e!r}")
        elif t is h2.events.ResponseReceived:
            ps = self._stream(sid)
            ps.headers = list(ev.headers)
            self.trace.append(f"HEADERS(response) s={sid}")
        elif t is h2.events.InformationalResponseReceived:
            self._stream(sid).informational.append(list(ev.headers))
            self.trace.append(f"HEADERS(1xx) s={sid}")
        elif t is h2.events.TrailersReceived:
            self._stream(sid).rx_trailers = list(ev.headers)
            self.trace.append(f"TRAILERS s={sid}")
        elif t is h2.events.StreamEnded:
            self._stream(sid).rx_end = True
            self.trace.append(f"END_STREAM s={sid}")
        elif t is h2.events.StreamReset:
            ps = self._stream(sid)
            if ps.rx_rst is None:
                ps.rx_rst = int(ev.error_code)
            self.trace.append(f"RST_STREAM s={sid} code={int(ev.error_code)}")
        elif t is h2.events.SettingsAcknowledged:
            self.settings_outstanding = max(0, self.settings_outstanding - 1)
            self.trace.append("SETTINGS ACK")
        elif t is h2.events.RemoteSettingsChanged:
            self.remote_settings = True
            self.trace.append("SETTINGS")
        elif t is h2.events.PingAckReceived:
            self.pings_outstanding.discard(ev.ping_data)
            self.trace.append("PING ACK")
        elif t is h2.events.ConnectionTerminated:
            self.goaway_rx.append((int(ev.error_code or 0), int(ev.last_stream_id or 0)))
            self.trace.append(f"GOAWAY code={ev.error_code} last={ev.last_stream_id}")
        elif t is h2.events.WindowUpdated:
            pass
        else:
            self.trace.append(type(ev).__name__)

    def _ack(self, sid: int, n: int) -> None:
        try:
            self.h2.increment_flow_control_window(n)
        except (h2.exceptions.ProtocolError, ValueError):
            pass
        s = self.h2.streams.get(sid)
        if s is not None and s.open:
            try:
                self.h2.increment_flow_control_window(n, stream_id=sid)
            except (h2.exceptions.ProtocolError, ValueError, KeyError):
                pass

    def set_autoack(self, on: bool) -> None:
        self.autoack = on
        if on:
            for ps in self.streams.values():
                if ps.unacked:
                    s = self.h2.streams.get(ps.sid)
                    if s is not None and s.open:
                        try:
                            self.h2.increment_flow_control_window(ps.unacked, stream_id=ps.sid)
                        except (h2.exceptions.ProtocolError, ValueError):
                            pass
                    ps.unacked = 0
            if self._conn_unacked:
                try:
                    self.h2.increment_flow_control_window(self._conn_unacked)
                except (h2.exceptions.ProtocolError, ValueError):
                    pass
                self._conn_unacked = 0
            self.flush()

    # -- what the test makes the peer send ------------------------------------------------------

    def open_stream(self, end_stream: bool, path: str = "/") -> int:
        """Client side: send a request's HEADERS; returns the new stream id."""
        sid = self.h2.get_next_available_stream_id()
        ps = self._stream(sid)
        self.h2.send_headers(
            sid,
            [(":method", "POST"), (":scheme", "https"), (":authority", "localhost"),
             (":path", path)],
            end_stream=end_stream,
        )
        ps.headers_sent = True
        ps.ended = end_stream
        self.flush()
        return sid

    def send_window(self, sid: int) -> int:
        """How many body bytes the peer may send on ``sid`` now (0 when it cannot)."""
        try:
            return max(0, self.h2.local_flow_control_window(sid))
        except (h2.exceptions.ProtocolError, KeyError):
            return 0

    def stream_send_window(self, sid: int) -> int | None:
        """The stream-level send window alone (None if h2 forgot the stream)."""
        s = self.h2.streams.get(sid)
        return None if s is None else s.outbound_flow_control_window

    def receive_window(self, sid: int) -> int:
        """min(stream, connection) window aioh2s may still send into on ``sid``."""
        try:
            return self.h2.remote_flow_control_window(sid)
        except (h2.exceptions.ProtocolError, KeyError):
            return 0

    def send_data(self, sid: int, n: int, end: bool) -> int:
        """Send up to ``n`` pattern bytes (clamped to the window), maybe END_STREAM."""
        ps = self.streams[sid]
        n = min(n, self.send_window(sid))
        max_frame = self.h2.max_outbound_frame_size
        left = n
        while True:
            k = min(left, max_frame)
            last = left == k
            self.h2.send_data(sid, pattern(ps.sent, k), end_stream=end and last)
            ps.sent += k
            left -= k
            if last:
                break
        if end:
            ps.ended = True
        self.flush()
        return n

    def send_trailers(self, sid: int) -> None:
        ps = self.streams[sid]
        trailers = [("x-peer-trailer", f"t{sid}")]
        self.h2.send_headers(sid, trailers, end_stream=True)
        ps.trailers_sent = trailers
        ps.ended = True
        self.flush()

    def reset(self, sid: int, code: int) -> None:
        ps = self.streams[sid]
        self.h2.reset_stream(sid, error_code=code)
        ps.reset_sent = code
        self.flush()

    def window_update(self, sid: int | None, increment: int) -> None:
        if sid is None:
            self.h2.increment_flow_control_window(increment)
        else:
            self.h2.increment_flow_control_window(increment, stream_id=sid)
        self.flush()

    def update_settings(self, values: dict[int, int]) -> None:
        self.h2.update_settings(values)
        self.settings_outstanding += 1
        size = values.get(h2.settings.SettingCodes.MAX_FRAME_SIZE)
        if size is not None and size > self.h2.max_inbound_frame_size:
            # h2 applies a new MAX_FRAME_SIZE when the ACK arrives but sets its frame parser's
            # limit only at the start of receive_data(): a larger frame right behind the ACK
            # in the same read would be refused. Accept larger frames from now on.
            self.h2.max_inbound_frame_size = size
        self.flush()

    def ping(self) -> None:
        opaque = os.urandom(8)
        self.h2.ping(opaque)
        self.pings_outstanding.add(opaque)
        self.flush()

    def goaway(self, code: int, last_stream_id: int) -> None:
        """GOAWAY as raw bytes (h2 does not learn about it, so it keeps serving streams)."""
        self.flush()
        f = hyperframe.frame.GoAwayFrame(0)
        f.last_stream_id = last_stream_id
        f.error_code = code
        self.writer.write(f.serialize())
        self.goaway_sent.append((code, last_stream_id))
        if code:
            self.silenced = True

    def drop(self) -> None:
        """Abrupt TCP drop."""
        self.dropped = True
        self.writer.transport.abort()

    async def close(self) -> None:
        if not self.writer.transport.is_closing():
            self.flush()
            self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 2)
        except (asyncio.TimeoutError, ConnectionError, OSError):
            self.writer.transport.abort()
        if self.task is not None and not self.task.done():
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass


class RawServer:
    """A listening socket whose connections are served by `RawPeer` (server side)."""

    def __init__(self, ssl_context: Any = None) -> None:
        self.ssl_context = ssl_context
        self.peers: list[RawPeer] = []
        self.server: asyncio.AbstractServer | None = None
        self.port = 0
        self._handlers: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(
            self._on_client, "127.0.0.1", 0, ssl=self.ssl_context
        )
        self.port = self.server.sockets[0].getsockname()[1]

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = RawPeer(reader, writer, client_side=False)
        self.peers.append(peer)
        peer.start()
        assert peer.task is not None
        try:
            await asyncio.shield(peer.task)
        except asyncio.CancelledError:
            pass

    async def close(self) -> None:
        for p in self.peers:
            await p.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
