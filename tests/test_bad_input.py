"""Bad input (issue 2, item 8): raw misbehaving peers get the RFC 9113 answer, both sides.

Server side: a raw peer (``tests/adversarial/rawpeer.py``: bytes and hand-built frames on a
plain socket, never aioh2s's own client) sends garbage, a broken preface, frames on idle or
closed streams, malformed headers, DATA beyond the window, lying frame lengths, and so on.
Each case asserts the answer RFC 9113 requires -- a connection error (GOAWAY with the named
code, then the TCP connection closed) or a stream error (RST_STREAM with the code; a GOAWAY
with the same code is also correct, section 5.4.1) -- and that a brand-new healthy connection
still gets a 200 from the same server afterwards.

Client side: aioh2s's client talks to a raw asyncio socket server that misbehaves (garbage,
HTTP/1.1, bad SETTINGS, GOAWAY mid-request, a reset TCP connection, DATA beyond the window,
frames on streams nobody opened); the request must fail with a clear aioh2s exception within
a deadline, never hang, and where the RFC asks for it the client must tell the server why
(GOAWAY with the right code).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import socket
import struct
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import hpack
import pytest
from h2.errors import ErrorCodes as E

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "adversarial"))

import dosharness  # noqa: E402
import rawpeer as rp  # noqa: E402
from rawpeer import RawPeer  # noqa: E402

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def srv() -> AsyncIterator[dosharness.ServerUnderTest]:
    server = await dosharness.start_test_server()
    yield server
    await server.close()


async def open_peer(srv: dosharness.ServerUnderTest, **kw: Any) -> RawPeer:
    peer = await RawPeer.connect(srv.port, **kw)
    await peer.handshake()
    return peer


async def expect_connection_error(peer: RawPeer, *codes: int) -> None:
    """GOAWAY with one of ``codes``, then the server closes TCP (RFC 9113 section 5.4.1)."""
    await peer.expect_goaway(*codes, timeout=5.0)
    assert await peer.closed(3.0), (
        f"server sent GOAWAY for a connection error but did not close the connection: "
        f"{peer.describe()}"
    )


async def still_serving(srv: dosharness.ServerUnderTest) -> None:
    await dosharness.assert_still_serving(srv.port)


# ---------------------------------------------------------------------------------------------
# Garbage and invalid prefaces
# ---------------------------------------------------------------------------------------------

GARBAGE = {
    "random-bytes": rp.random_bytes(200, seed=1),
    "zeros": b"\0" * 64,
    "bad-preface-magic": b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n" + rp.settings(),
    "preface-prefix-then-garbage": rp.PREFACE[:10] + rp.random_bytes(40, seed=2),
    "tls-client-hello": bytes.fromhex("16030102000100020003") + rp.random_bytes(60, seed=3),
    "http1-request": b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
}


@pytest.mark.parametrize("garbage", list(GARBAGE.values()), ids=list(GARBAGE))
async def test_garbage_instead_of_preface(srv: dosharness.ServerUnderTest, garbage: bytes) -> None:
    # RFC 9113 section 3.4: an invalid preface is a connection error PROTOCOL_ERROR; the
    # GOAWAY MAY be omitted, so "closed promptly" is the requirement and any GOAWAY we do
    # see must carry PROTOCOL_ERROR.  (An HTTP/1.1 error response before the close is fine.)
    peer = await RawPeer.connect(srv.port)
    try:
        await peer.try_send(garbage)
        assert await peer.closed(5.0), f"server kept the connection open: {peer.describe()}"
        if peer.goaway is not None:
            assert peer.goaway.error_code == E.PROTOCOL_ERROR, peer.describe()
        assert srv.app.started == 0, srv.app.describe()
    finally:
        await peer.close()
    await still_serving(srv)


async def test_preface_then_silence_then_garbage(srv: dosharness.ServerUnderTest) -> None:
    # Garbage arriving *after* a correct preface and SETTINGS is a frame with a bogus type
    # and a length that cannot be right; whatever the server decides, it must not hang.
    peer = await open_peer(srv)
    try:
        await peer.try_send(b"\xff" * 9 + rp.random_bytes(100, seed=4))
        assert await peer.closed(5.0), f"server kept a garbled connection open: {peer.describe()}"
        if peer.goaway is not None:
            assert peer.goaway.error_code in (E.PROTOCOL_ERROR, E.FRAME_SIZE_ERROR), peer.describe()
    finally:
        await peer.close()
    await still_serving(srv)


async def test_first_frame_not_settings(srv: dosharness.ServerUnderTest) -> None:
    # RFC 9113 section 3.4: the preface is the magic *followed by a SETTINGS frame*; anything
    # else as the first frame is an invalid preface: connection error PROTOCOL_ERROR.
    peer = await RawPeer.connect(srv.port)
    try:
        await peer.try_send(rp.PREFACE + rp.ping(b"12345678"))
        await peer.wait_for(lambda p: p.eof or p.goaway is not None, 5.0)
        assert peer.eof or peer.goaway is not None, (
            f"server accepted a preface whose first frame was PING: {peer.describe()}"
        )
        if peer.goaway is not None:
            assert peer.goaway.error_code == E.PROTOCOL_ERROR, peer.describe()
    finally:
        await peer.close()
    await still_serving(srv)


async def test_truncated_preface_then_close(srv: dosharness.ServerUnderTest) -> None:
    # A client that dies half way through the preface must not leave anything behind that
    # stops the server from serving the next connection.
    peer = await RawPeer.connect(srv.port)
    await peer.try_send(rp.PREFACE[:7])
    await peer.close()
    await still_serving(srv)
    assert srv.app.started == 1  # only the healthy request reached the app


# ---------------------------------------------------------------------------------------------
# Frames on streams in the wrong state
# ---------------------------------------------------------------------------------------------


async def test_data_after_end_stream_half_closed(srv: dosharness.ServerUnderTest) -> None:
    # RFC 9113 section 5.1, half-closed (remote): DATA there is a stream error STREAM_CLOSED.
    peer = await open_peer(srv)
    try:
        sid = peer.new_stream_id()
        await peer.send(peer.request(sid, "/hang", end_stream=True))
        await asyncio.sleep(0.05)
        await peer.send(rp.data(sid, b"late"))
        kind = await peer.expect_stream_error(sid, E.STREAM_CLOSED)
        if kind == "rst":
            assert await peer.ping(), f"connection unusable after a stream error: {peer.describe()}"
        assert await srv.app.wait_idle(2.0), (
            f"handler of the reset stream still running: {srv.app.describe()}"
        )
    finally:
        await peer.close()
    await still_serving(srv)


async def test_data_after_stream_fully_closed(srv: dosharness.ServerUnderTest) -> None:
    # Section 6.1: DATA on a stream that is not open/half-closed(local) is a stream error
    # STREAM_CLOSED (section 5.1 lets it be a connection error too).
    peer = await open_peer(srv)
    try:
        resp = await peer.get("/")
        assert resp.status == "200"
        await peer.send(rp.data(1, b"too late", end_stream=True))
        await peer.expect_stream_error(1, E.STREAM_CLOSED)
    finally:
        await peer.close()
    await still_serving(srv)


async def test_headers_reusing_closed_stream_id(srv: dosharness.ServerUnderTest) -> None:
    # Reopening a closed stream id: STREAM_CLOSED (section 5.1) or PROTOCOL_ERROR (5.1.1,
    # identifiers must increase); the handler must not run twice.
    peer = await open_peer(srv)
    try:
        assert (await peer.get("/")).status == "200"
        await peer.send(peer.request(1, "/again"))
        await peer.expect_stream_error(1, E.STREAM_CLOSED, E.PROTOCOL_ERROR)
        assert "/again" not in srv.app.paths, srv.app.describe()
    finally:
        await peer.close()
    await still_serving(srv)


IDLE_FRAMES = {
    "data": rp.data(5, b"x"),
    "window-update": rp.window_update(5, 100),
    "rst-stream": rp.rst(5, E.CANCEL),
    "continuation": rp.continuation(5, b"\x82", end_headers=True),
}


@pytest.mark.parametrize("frame", list(IDLE_FRAMES.values()), ids=list(IDLE_FRAMES))
async def test_frame_on_idle_stream(srv: dosharness.ServerUnderTest, frame: bytes) -> None:
    # Section 5.1, idle: anything but HEADERS/PRIORITY is a connection error PROTOCOL_ERROR.
    peer = await open_peer(srv)
    try:
        await peer.send(frame)
        await expect_connection_error(peer, E.PROTOCOL_ERROR)
    finally:
        await peer.close()
    await still_serving(srv)


async def test_even_stream_id_from_client(srv: dosharness.ServerUnderTest) -> None:
    # Section 5.1.1: clients open odd streams; an even one is a connection error
    # PROTOCOL_ERROR.
    peer = await open_peer(srv)
    try:
        await peer.send(peer.request(2, "/even"))
        await expect_connection_error(peer, E.PROTOCOL_ERROR)
        assert "/even" not in srv.app.paths
    finally:
        await peer.close()
    await still_serving(srv)


async def test_decreasing_stream_id(srv: dosharness.ServerUnderTest) -> None:
    # Section 5.1.1: a new stream id lower than one already used is PROTOCOL_ERROR.
    peer = await open_peer(srv)
    try:
        await peer.send(peer.request(5, "/"))
        await peer.wait_for(lambda p: 5 in p.streams and p.streams[5].ended, 3.0)
        await peer.send(peer.request(3, "/lower"))
        await expect_connection_error(peer, E.PROTOCOL_ERROR)
        assert "/lower" not in srv.app.paths
    finally:
        await peer.close()
    await still_serving(srv)


CONNECTION_LEVEL_MISUSE = {
    "headers-on-stream-0": (lambda p: p.request(0, "/"), E.PROTOCOL_ERROR),
    "settings-on-stream-1": (lambda p: rp.raw_frame(rp.SETTINGS, 0, 1, b""), E.PROTOCOL_ERROR),
    "ping-on-stream-1": (lambda p: rp.raw_frame(rp.PING, 0, 1, b"\0" * 8), E.PROTOCOL_ERROR),
    "goaway-on-stream-1": (
        lambda p: rp.raw_frame(rp.GOAWAY, 0, 1, struct.pack(">II", 0, 0)),
        E.PROTOCOL_ERROR,
    ),
    "data-on-stream-0": (lambda p: rp.data(0, b"x"), E.PROTOCOL_ERROR),
    "push-promise-from-client": (
        lambda p: rp.raw_frame(rp.PUSH_PROMISE, rp.END_HEADERS, 1, struct.pack(">I", 2) + b"\x82"),
        E.PROTOCOL_ERROR,
    ),
    "continuation-without-headers": (
        lambda p: rp.continuation(1, b"\x82", end_headers=True),
        E.PROTOCOL_ERROR,
    ),
    "headers-interrupted-by-ping": (
        lambda p: (
            p.headers(1, rp.request_headers("/"), end_stream=True, end_headers=False) + rp.ping()
        ),
        E.PROTOCOL_ERROR,
    ),
    "continuation-on-other-stream": (
        lambda p: (
            p.headers(1, rp.request_headers("/"), end_stream=True, end_headers=False)
            + rp.continuation(3, b"", end_headers=True)
        ),
        E.PROTOCOL_ERROR,
    ),
    "settings-enable-push-2": (lambda p: rp.settings({rp.ENABLE_PUSH: 2}), E.PROTOCOL_ERROR),
    "settings-max-frame-size-too-small": (
        lambda p: rp.settings({rp.MAX_FRAME_SIZE: 100}),
        E.PROTOCOL_ERROR,
    ),
    "settings-max-frame-size-too-large": (
        lambda p: rp.settings({rp.MAX_FRAME_SIZE: 2**24}),
        E.PROTOCOL_ERROR,
    ),
    "settings-initial-window-too-large": (
        lambda p: rp.settings({rp.INITIAL_WINDOW_SIZE: 2**31}),
        E.FLOW_CONTROL_ERROR,
    ),
    "invalid-hpack-index-0": (lambda p: rp.headers_frame(1, b"\x80", end_stream=True), None),
    "hpack-index-out-of-range": (lambda p: rp.headers_frame(1, b"\xff\x7f", end_stream=True), None),
    "data-padding-exceeds-length": (
        lambda p: (
            p.request(1, "/hang-read", end_stream=False)
            + rp.raw_frame(rp.DATA, rp.PADDED, 1, b"\x10abc")
        ),
        E.PROTOCOL_ERROR,
    ),
}


@pytest.mark.parametrize(
    "case", list(CONNECTION_LEVEL_MISUSE.values()), ids=list(CONNECTION_LEVEL_MISUSE)
)
async def test_connection_error(
    srv: dosharness.ServerUnderTest, case: tuple[Callable[[RawPeer], bytes], int | None]
) -> None:
    build, code = case
    # HPACK failures are COMPRESSION_ERROR (section 4.3) -- the decoder's state is lost.
    codes = (code,) if code is not None else (E.COMPRESSION_ERROR,)
    peer = await open_peer(srv)
    try:
        await peer.try_send(build(peer))
        await expect_connection_error(peer, *codes)
    finally:
        await peer.close()
    await still_serving(srv)


# ---------------------------------------------------------------------------------------------
# Malformed requests (section 8.1.1: stream error PROTOCOL_ERROR; handler never runs)
# ---------------------------------------------------------------------------------------------

GOOD = rp.request_headers("/bad")
MALFORMED = {
    "uppercase-name": GOOD + [("X-Upper", "1")],
    "connection-keep-alive": GOOD + [("connection", "keep-alive")],
    "keep-alive": GOOD + [("keep-alive", "timeout=5")],
    "proxy-connection": GOOD + [("proxy-connection", "keep-alive")],
    "transfer-encoding": GOOD + [("transfer-encoding", "chunked")],
    "upgrade": GOOD + [("upgrade", "h2c")],
    "te-gzip": GOOD + [("te", "gzip")],
    "missing-path": [(":method", "GET"), (":scheme", "http"), (":authority", "x")],
    "missing-method": [(":scheme", "http"), (":authority", "x"), (":path", "/bad")],
    "missing-scheme": [(":method", "GET"), (":authority", "x"), (":path", "/bad")],
    "empty-path": [(":method", "GET"), (":scheme", "http"), (":authority", "x"), (":path", "")],
    "pseudo-after-regular": [
        (":method", "GET"),
        (":scheme", "http"),
        ("x-regular", "1"),
        (":authority", "x"),
        (":path", "/bad"),
    ],
    "duplicate-path": GOOD + [(":path", "/bad2")],
    "unknown-pseudo": GOOD + [(":foo", "bar")],
    "status-in-request": GOOD + [(":status", "200")],
    "value-with-crlf": GOOD + [("x-split", "a\r\nx-injected: 1")],
    "value-with-nul": GOOD + [("x-nul", "a\0b")],
    "name-with-space": GOOD + [("x bad", "1")],
    "name-with-colon": GOOD + [("x:bad", "1")],
    "value-leading-space": GOOD + [("x-space", " padded")],
    "empty-name": GOOD + [("", "value")],
}


@pytest.mark.parametrize("header_list", list(MALFORMED.values()), ids=list(MALFORMED))
async def test_malformed_request_headers(
    srv: dosharness.ServerUnderTest, header_list: list[tuple[str, str]]
) -> None:
    peer = await open_peer(srv)
    try:
        sid = peer.new_stream_id()
        await peer.send(peer.headers(sid, header_list, end_stream=True))
        kind = await peer.expect_stream_error(sid, E.PROTOCOL_ERROR)
        assert srv.app.started == 0, f"handler ran for a malformed request: {srv.app.describe()}"
        if kind == "rst":
            # A stream error leaves the connection usable (HPACK state was kept in sync).
            resp = await peer.get("/")
            assert resp.status == "200"
        else:
            assert await peer.closed(3.0), peer.describe()
    finally:
        await peer.close()
    await still_serving(srv)


async def test_content_length_mismatch(srv: dosharness.ServerUnderTest) -> None:
    # Section 8.1.1: content-length not matching the DATA received is malformed.
    peer = await open_peer(srv)
    try:
        sid = peer.new_stream_id()
        hdrs = rp.request_headers("/echo", "POST") + [("content-length", "10")]
        await peer.send(peer.headers(sid, hdrs), rp.data(sid, b"abc", end_stream=True))
        await peer.expect_stream_error(sid, E.PROTOCOL_ERROR)
        resp = peer.streams.get(sid)
        assert resp is None or resp.status != "200", "malformed body was echoed with 200"
    finally:
        await peer.close()
    await still_serving(srv)


async def test_priority_self_dependency(srv: dosharness.ServerUnderTest) -> None:
    # Section 5.3.1: a stream cannot depend on itself: stream error PROTOCOL_ERROR.
    peer = await open_peer(srv)
    try:
        await peer.send(rp.priority(3, depends_on=3))
        await peer.expect_stream_error(3, E.PROTOCOL_ERROR)
    finally:
        await peer.close()
    await still_serving(srv)


# ---------------------------------------------------------------------------------------------
# Flow control
# ---------------------------------------------------------------------------------------------


async def test_data_beyond_stream_window(srv: dosharness.ServerUnderTest) -> None:
    # Section 6.9.1: a sender must not exceed the window; the receiver answers with a stream
    # or connection error FLOW_CONTROL_ERROR.  The handler of /hang-headers never reads, so a
    # server that acknowledges data only as it is consumed sends no WINDOW_UPDATE for it.
    peer = await open_peer(srv)
    try:
        await asyncio.sleep(0.1)  # let any connection-level WINDOW_UPDATE arrive
        sid = peer.new_stream_id()
        await peer.send(peer.request(sid, "/hang-headers", "POST", end_stream=False))
        frame = b"\xa5" * peer.max_frame_size
        sent = 0
        cap = 4 * max(peer.initial_window, rp.DEFAULT_WINDOW + peer.window_updates[0]) + 1
        while sent < cap:
            allowed_stream = peer.initial_window + peer.window_updates[sid]
            allowed_conn = rp.DEFAULT_WINDOW + peer.window_updates[0]
            allowed = min(allowed_stream, allowed_conn)
            if sent > allowed or peer.goaway is not None or peer.eof:
                break
            if peer.streams.get(sid) is not None and peer.streams[sid].reset_code is not None:
                break
            n = min(len(frame), allowed + 1 - sent)
            if not await peer.try_send(rp.data(sid, frame[:n])):
                break
            sent += n
        assert sent > min(peer.initial_window, rp.DEFAULT_WINDOW), (sent, peer.describe())
        await peer.expect_stream_error(sid, E.FLOW_CONTROL_ERROR)
    finally:
        await peer.close()
    await still_serving(srv)


async def test_window_update_overflow_connection(srv: dosharness.ServerUnderTest) -> None:
    # Section 6.9.1: a connection window above 2^31-1 is a connection error
    # FLOW_CONTROL_ERROR.
    peer = await open_peer(srv)
    try:
        await peer.send(rp.window_update(0, rp.MAX_WINDOW))
        await expect_connection_error(peer, E.FLOW_CONTROL_ERROR)
    finally:
        await peer.close()
    await still_serving(srv)


async def test_window_update_overflow_stream(srv: dosharness.ServerUnderTest) -> None:
    # Section 6.9.1: overflowing a *stream* window is a stream error FLOW_CONTROL_ERROR; the
    # stream's handler goes away and the connection stays usable.
    peer = await open_peer(srv)
    try:
        sid = peer.new_stream_id()
        await peer.send(peer.request(sid, "/hang-headers"))
        await peer.wait_for(lambda p: sid in p.streams and p.streams[sid].headers is not None, 3)
        await peer.send(rp.window_update(sid, rp.MAX_WINDOW))
        kind = await peer.expect_stream_error(sid, E.FLOW_CONTROL_ERROR)
        if kind == "rst":
            assert await peer.ping(), peer.describe()
            assert (await peer.get("/")).status == "200"
        assert await srv.app.wait_idle(2.0), srv.app.describe()
    finally:
        await peer.close()
    await still_serving(srv)


async def test_window_update_zero_increment_stream(srv: dosharness.ServerUnderTest) -> None:
    # Section 6.9: increment 0 on a stream is a stream error PROTOCOL_ERROR.
    peer = await open_peer(srv)
    try:
        sid = peer.new_stream_id()
        await peer.send(peer.request(sid, "/hang-headers"))
        await peer.wait_for(lambda p: sid in p.streams and p.streams[sid].headers is not None, 3)
        await peer.send(rp.window_update(sid, 0))
        await peer.expect_stream_error(sid, E.PROTOCOL_ERROR)
        assert await srv.app.wait_idle(2.0), srv.app.describe()
    finally:
        await peer.close()
    await still_serving(srv)


async def test_window_update_zero_increment_connection(srv: dosharness.ServerUnderTest) -> None:
    # Section 6.9: increment 0 on the connection is a connection error PROTOCOL_ERROR.
    peer = await open_peer(srv)
    try:
        await peer.send(rp.window_update(0, 0))
        await expect_connection_error(peer, E.PROTOCOL_ERROR)
    finally:
        await peer.close()
    await still_serving(srv)


# ---------------------------------------------------------------------------------------------
# Frame sizes
# ---------------------------------------------------------------------------------------------


async def test_data_frame_too_large(srv: dosharness.ServerUnderTest) -> None:
    # Section 4.2: a frame above SETTINGS_MAX_FRAME_SIZE is FRAME_SIZE_ERROR (for DATA a
    # stream error is allowed).
    peer = await open_peer(srv)
    try:
        sid = peer.new_stream_id()
        big = b"\0" * (peer.max_frame_size + 1)
        await peer.send(peer.request(sid, "/hang-read", "POST", end_stream=False))
        await peer.try_send(rp.data(sid, big))
        await peer.expect_stream_error(sid, E.FRAME_SIZE_ERROR)
    finally:
        await peer.close()
    await still_serving(srv)


async def test_headers_frame_too_large(srv: dosharness.ServerUnderTest) -> None:
    # Section 4.2: an oversized frame that can change connection state (HEADERS: HPACK)
    # MUST be a connection error FRAME_SIZE_ERROR.
    peer = await open_peer(srv)
    try:
        block = peer.encoder.encode(rp.request_headers("/"), huffman=False)
        filler = b"\x00\x01a\x00" * ((peer.max_frame_size + 4) // 4)  # literal "a": ""
        await peer.try_send(rp.headers_frame(1, block + filler, end_stream=True))
        await expect_connection_error(peer, E.FRAME_SIZE_ERROR)
        assert srv.app.started == 0
    finally:
        await peer.close()
    await still_serving(srv)


async def test_frame_header_declares_huge_length(srv: dosharness.ServerUnderTest) -> None:
    # The length field alone (16 MiB - 1) says the frame is too large: the server must
    # answer FRAME_SIZE_ERROR at the 9-byte header, not wait to buffer 16 MiB that never come.
    peer = await open_peer(srv)
    try:
        await peer.send(rp.raw_frame(rp.DATA, 0, 1, b"", length=2**24 - 1))
        await peer.expect_goaway(E.FRAME_SIZE_ERROR, timeout=3.0)
        assert await peer.closed(3.0), peer.describe()
    finally:
        await peer.close()
    await still_serving(srv)


BAD_LENGTHS = {
    "ping-7-bytes": (rp.raw_frame(rp.PING, 0, 0, b"\0" * 7), True),
    "ping-9-bytes": (rp.raw_frame(rp.PING, 0, 0, b"\0" * 9), True),
    "settings-5-bytes": (rp.raw_frame(rp.SETTINGS, 0, 0, b"\0" * 5), True),
    "settings-ack-with-payload": (rp.raw_frame(rp.SETTINGS, rp.ACK, 0, b"\0" * 6), True),
    "window-update-3-bytes": (rp.raw_frame(rp.WINDOW_UPDATE, 0, 0, b"\0\0\1"), True),
    "goaway-4-bytes": (rp.raw_frame(rp.GOAWAY, 0, 0, b"\0" * 4), True),
    "rst-stream-3-bytes": (rp.raw_frame(rp.RST_STREAM, 0, 1, b"\0\0\0"), False),
    "priority-4-bytes": (rp.raw_frame(rp.PRIORITY, 0, 3, b"\0\0\0\1"), False),
}


@pytest.mark.parametrize("case", list(BAD_LENGTHS.values()), ids=list(BAD_LENGTHS))
async def test_control_frame_bad_length(
    srv: dosharness.ServerUnderTest, case: tuple[bytes, bool]
) -> None:
    # Sections 6.3-6.9: fixed-size frames with the wrong length are FRAME_SIZE_ERROR
    # (connection error; for PRIORITY a stream error; RST_STREAM on an idle stream may also be
    # answered PROTOCOL_ERROR since the frame is doubly wrong).
    frame, connection_level = case
    peer = await open_peer(srv)
    try:
        await peer.try_send(frame)
        if connection_level:
            await expect_connection_error(peer, E.FRAME_SIZE_ERROR)
        else:
            sid = struct.unpack(">I", frame[5:9])[0]
            await peer.expect_stream_error(sid, E.FRAME_SIZE_ERROR, E.PROTOCOL_ERROR)
    finally:
        await peer.close()
    await still_serving(srv)


# ---------------------------------------------------------------------------------------------
# Our client against a raw misbehaving server
# ---------------------------------------------------------------------------------------------


class RawServer:
    """A plain asyncio TCP server running one scripted misbehaviour per connection.

    The script gets the connection's StreamReader/StreamWriter; `read_frames` parses what the
    aioh2s client sent so a test can check that it said why it gave up (GOAWAY code).
    """

    def __init__(
        self,
        script: Callable[[RawServer, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    ) -> None:
        self.script = script
        self.received: list[rp.RxFrame] = []
        self.preface_ok: bool | None = None
        self.client_closed = asyncio.Event()
        self.finished = asyncio.Event()
        self.server: asyncio.AbstractServer | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> RawServer:
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        return self

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            await asyncio.wait_for(self.script(self, reader, writer), 10.0)
        except (asyncio.TimeoutError, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self.tasks.discard(task)
            writer.close()
            self.finished.set()

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.sleep(0)
        _collect_now()

    async def read_preface(self, reader: asyncio.StreamReader) -> None:
        got = await asyncio.wait_for(reader.readexactly(len(rp.PREFACE)), 5.0)
        self.preface_ok = got == rp.PREFACE

    async def read_frames(
        self, reader: asyncio.StreamReader, until: Callable[[rp.RxFrame], bool], timeout: float
    ) -> rp.RxFrame | None:
        """Read client frames until ``until(frame)``; None at EOF or deadline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                head = await asyncio.wait_for(reader.readexactly(9), deadline - loop.time())
                length = int.from_bytes(head[:3], "big")
                body = await asyncio.wait_for(reader.readexactly(length), deadline - loop.time())
            except asyncio.TimeoutError:
                return None
            except (asyncio.IncompleteReadError, OSError, ValueError):
                self.client_closed.set()
                return None
            frame = rp.RxFrame(
                head[3], head[4], int.from_bytes(head[5:9], "big") & 0x7FFFFFFF, length, body
            )
            self.received.append(frame)
            if until(frame):
                return frame

    async def wait_finished(self, timeout: float = 6.0) -> None:
        """Wait until the script saw what it waited for (the client's GOAWAY, EOF, ...)."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.finished.wait(), timeout)

    def client_goaway_code(self) -> int | None:
        for f in self.received:
            if f.type == rp.GOAWAY and len(f.payload) >= 8:
                return int(struct.unpack(">I", f.payload[4:8])[0])
        return None

    def client_rst_codes(self) -> list[int]:
        return [
            int(struct.unpack(">I", f.payload)[0])
            for f in self.received
            if f.type == rp.RST_STREAM and len(f.payload) == 4
        ]


async def handshake(
    raw: RawServer,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    values: dict[int, int] | None = None,
) -> rp.RxFrame | None:
    """Server side of a correct handshake; returns the client's first HEADERS frame."""
    writer.write(rp.settings(values or {}))
    await raw.read_preface(reader)
    first = await raw.read_frames(reader, lambda f: f.type == rp.SETTINGS and not f.flags, 5.0)
    assert first is not None, "client sent no SETTINGS"
    writer.write(rp.settings(ack=True))
    await writer.drain()
    return await raw.read_frames(reader, lambda f: f.type == rp.HEADERS, 5.0)


async def client_request(port: int, *, pause_before_read: float = 0.0) -> tuple[Any, bytes]:
    """One GET through aioh2s's client; returns (headers, body) or raises its exception.

    ``pause_before_read`` keeps the application from consuming the body for a while, so the
    client grants no new window meanwhile.
    """
    import aioh2s

    client = await aioh2s.connect("127.0.0.1", port)
    try:
        async with client.request({":method": "GET", ":path": "/"}) as stream:
            stream.writer.write_eof()
            headers = await stream.response_headers()
            await asyncio.sleep(pause_before_read)
            body = await stream.reader.read()
            return headers, body
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.close(), 3.0)


async def expect_client_failure(
    port: int, *extra: type[BaseException], pause_before_read: float = 0.0
) -> BaseException:
    """The request must raise ConnectionClosed/ProtocolError (or ``extra``) within 5 s."""
    import aioh2s

    # A failure before the server's SETTINGS arrived is connect()'s: a ConnectError.
    accepted = (aioh2s.ConnectionClosed, aioh2s.ProtocolError, aioh2s.ConnectError, *extra)
    try:
        result = await asyncio.wait_for(
            client_request(port, pause_before_read=pause_before_read), 5.0
        )
    except asyncio.TimeoutError:
        _collect_now()
        pytest.fail("aioh2s client hung instead of raising")
    except accepted as exc:
        assert isinstance(exc, aioh2s.H2Error), f"not an aioh2s exception: {exc!r}"
        assert str(exc), "exception without a message"
        return exc
    except BaseException as exc:  # noqa: B036 - report what was raised instead
        _collect_now()
        pytest.fail(f"aioh2s client raised {exc!r}, expected ConnectionClosed/ProtocolError")
    _collect_now()
    pytest.fail(f"aioh2s client returned {result!r} from a misbehaving server")


def _collect_now() -> None:
    # Run finalizers of abandoned transports now: CPython 3.11.7 raises "SystemError: AST
    # constructor recursion depth mismatch" (an INTERNALERROR that aborts the whole run) when
    # a finalizer happens to run inside the ast.parse pytest uses to format a failure.
    gc.collect()


SERVER_GARBAGE = {
    "random-bytes": rp.random_bytes(300, seed=7),
    "http1-response": b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    "data-before-settings": rp.data(1, b"hello"),
}


@pytest.mark.parametrize("garbage", list(SERVER_GARBAGE.values()), ids=list(SERVER_GARBAGE))
async def test_client_against_garbage_server(garbage: bytes) -> None:
    # Section 3.4: the server preface must be a SETTINGS frame; anything else is a connection
    # error PROTOCOL_ERROR for the client.
    async def script(
        raw: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        writer.write(garbage)
        await writer.drain()
        await raw.read_preface(reader)
        await raw.read_frames(reader, lambda f: False, 5.0)  # to EOF

    async with RawServer(script) as raw:
        await expect_client_failure(raw.port)
        await raw.wait_finished()
        assert raw.client_closed.is_set(), f"client kept the connection open: {raw.received[-5:]}"
        code = raw.client_goaway_code()
        assert code in (None, E.PROTOCOL_ERROR), f"client sent GOAWAY {rp.code_name(code)}"


BAD_SERVER_SETTINGS = {
    "max-frame-size-100": ({rp.MAX_FRAME_SIZE: 100}, E.PROTOCOL_ERROR),
    "initial-window-2^31": ({rp.INITIAL_WINDOW_SIZE: 2**31}, E.FLOW_CONTROL_ERROR),
    "enable-push-1-from-server": ({rp.ENABLE_PUSH: 1}, E.PROTOCOL_ERROR),
}


@pytest.mark.parametrize("case", list(BAD_SERVER_SETTINGS.values()), ids=list(BAD_SERVER_SETTINGS))
async def test_client_against_bad_settings(case: tuple[dict[int, int], int]) -> None:
    # Section 6.5.2: out-of-range settings are connection errors; a client MUST treat
    # ENABLE_PUSH=1 from a server as PROTOCOL_ERROR.  The client must say so with GOAWAY.
    values, code = case

    async def script(
        raw: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        writer.write(rp.settings(values))
        await writer.drain()
        await raw.read_preface(reader)
        await raw.read_frames(reader, lambda f: False, 5.0)  # to EOF

    async with RawServer(script) as raw:
        await expect_client_failure(raw.port)
        await raw.wait_finished()
        got = raw.client_goaway_code()
        assert got == code, (
            f"client answered bad SETTINGS with GOAWAY {rp.code_name(got)}, expected "
            f"{rp.code_name(code)}; frames: {raw.received[-5:]}"
        )


@pytest.mark.expect_log("asyncio", "ERROR", "StreamReaderProtocol.connection_made")
async def test_client_goaway_before_processing_is_retry_safe() -> None:
    # Section 6.8: streams above the GOAWAY's last-stream-id were not processed and may be
    # retried; the client must fail them with ConnectionTerminated(retry_safe=True), not hang.
    import aioh2s

    async def script(
        raw: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        hdrs = await handshake(raw, reader, writer)
        assert hdrs is not None
        writer.write(rp.goaway(0, E.NO_ERROR))
        await writer.drain()
        await raw.read_frames(reader, lambda f: False, 3.0)

    async with RawServer(script) as raw:
        exc = await expect_client_failure(raw.port)
        assert isinstance(exc, aioh2s.ConnectionTerminated), repr(exc)
        assert exc.retry_safe is True, f"stream 1 > last_stream_id 0 must be retry-safe: {exc!r}"
        assert exc.last_stream_id == 0
        assert exc.error_code == E.NO_ERROR


@pytest.mark.expect_log("asyncio", "ERROR", "StreamReaderProtocol.connection_made")
async def test_client_goaway_error_mid_request() -> None:
    # GOAWAY(PROTOCOL_ERROR) covering our stream, then close: the request fails with the
    # server's code and is not marked retry-safe (it may have been processed).
    import aioh2s

    async def script(
        raw: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        hdrs = await handshake(raw, reader, writer)
        assert hdrs is not None
        writer.write(rp.goaway(hdrs.stream_id, E.PROTOCOL_ERROR, b"bye"))
        await writer.drain()
        await asyncio.sleep(0.1)

    async with RawServer(script) as raw:
        exc = await expect_client_failure(raw.port)
        assert isinstance(exc, aioh2s.ConnectionClosed), repr(exc)
        assert exc.error_code == E.PROTOCOL_ERROR, repr(exc)
        assert exc.retry_safe is False, repr(exc)


async def test_client_connection_dropped_mid_body() -> None:
    # Response headers and part of the body, then the TCP connection is reset: read() must
    # raise ConnectionClosed (a truncated body must never look like a complete one).
    async def script(
        raw: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        hdrs = await handshake(raw, reader, writer)
        assert hdrs is not None
        enc = hpack.Encoder()
        block = enc.encode([(":status", "200"), ("content-length", "1000")])
        writer.write(rp.headers_frame(hdrs.stream_id, block) + rp.data(hdrs.stream_id, b"x" * 10))
        await writer.drain()
        await asyncio.sleep(0.1)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    async with RawServer(script) as raw:
        await expect_client_failure(raw.port)


async def test_client_server_exceeds_stream_window() -> None:
    # Section 6.9.1: a server sending more DATA than the client's window allows gets
    # FLOW_CONTROL_ERROR (stream or connection error) and the read raises.  The application
    # does not read for a while, so the client's window is exactly what it advertised.
    import aioh2s

    async def script(
        raw: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        writer.write(rp.settings({rp.MAX_FRAME_SIZE: 2**24 - 1}))
        await raw.read_preface(reader)
        first = await raw.read_frames(reader, lambda f: f.type == rp.SETTINGS and not f.flags, 5)
        assert first is not None
        values = {
            struct.unpack(">H", first.payload[i : i + 2])[0]: struct.unpack(
                ">I", first.payload[i + 2 : i + 6]
            )[0]
            for i in range(0, len(first.payload), 6)
        }
        writer.write(rp.settings(ack=True))
        hdrs = await raw.read_frames(reader, lambda f: f.type == rp.HEADERS, 5.0)
        assert hdrs is not None
        sid = hdrs.stream_id
        window = values.get(rp.INITIAL_WINDOW_SIZE, rp.DEFAULT_WINDOW)
        frame_max = values.get(rp.MAX_FRAME_SIZE, rp.DEFAULT_MAX_FRAME)
        enc = hpack.Encoder()
        writer.write(rp.headers_frame(sid, enc.encode([(":status", "200")])))
        left = min(window, 64 * 1024 * 1024) + 1
        chunk = b"z" * frame_max
        while left > 0:
            n = min(left, frame_max)
            writer.write(rp.data(sid, chunk[:n]))
            left -= n
            await writer.drain()
        await raw.read_frames(reader, lambda f: f.type in (rp.RST_STREAM, rp.GOAWAY), 5.0)

    async with RawServer(script) as raw:
        await expect_client_failure(raw.port, aioh2s.StreamReset, pause_before_read=1.0)
        await raw.wait_finished()
        codes = raw.client_rst_codes() + [c for c in [raw.client_goaway_code()] if c is not None]
        assert E.FLOW_CONTROL_ERROR in codes, (
            f"client did not signal FLOW_CONTROL_ERROR; it sent {raw.received[-5:]}"
        )


async def test_client_data_on_unopened_stream() -> None:
    # Section 5.1: DATA on an idle stream (the client never opened 3) is a connection error
    # PROTOCOL_ERROR for the client.
    async def script(
        raw: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        hdrs = await handshake(raw, reader, writer)
        assert hdrs is not None
        writer.write(rp.data(hdrs.stream_id + 2, b"unsolicited"))
        await writer.drain()
        await raw.read_frames(reader, lambda f: False, 5.0)  # to EOF

    async with RawServer(script) as raw:
        await expect_client_failure(raw.port)
        await raw.wait_finished()
        assert raw.client_goaway_code() == E.PROTOCOL_ERROR, raw.received[-5:]


async def test_client_push_promise_when_disabled() -> None:
    # Section 6.6 / 8.4: the client disabled push (its default must be ENABLE_PUSH=0), so a
    # PUSH_PROMISE is a connection error PROTOCOL_ERROR.
    async def script(
        raw: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        hdrs = await handshake(raw, reader, writer)
        assert hdrs is not None
        enc = hpack.Encoder()
        block = enc.encode(rp.request_headers("/pushed"))
        writer.write(
            rp.raw_frame(
                rp.PUSH_PROMISE, rp.END_HEADERS, hdrs.stream_id, struct.pack(">I", 2) + block
            )
        )
        await writer.drain()
        await raw.read_frames(reader, lambda f: False, 5.0)  # to EOF

    async with RawServer(script) as raw:
        await expect_client_failure(raw.port)
        await raw.wait_finished()
        assert raw.client_goaway_code() == E.PROTOCOL_ERROR, raw.received[-5:]


async def test_trailers_of_a_refused_stream_do_not_end_the_connection() -> None:
    """Review regression: the trailers of a stream refused at max_concurrent_streams arrive
    before the peer sees our RST; they are a stream error, not a connection error."""
    import collections

    import h2.config
    import h2.connection
    import h2.events
    import h2.settings

    import aioh2s

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        await asyncio.sleep(0.5)
        writer.send_headers({":status": "200"}, end_stream=True)

    srv = await aioh2s.start_server(handler, "127.0.0.1", 0, max_concurrent_streams=1)
    port = srv.sockets[0].getsockname()[1]
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        c.initiate_connection()
        w.write(c.data_to_send())
        while True:
            evs = c.receive_data(await asyncio.wait_for(r.read(65536), 5))
            if any(isinstance(e, h2.events.RemoteSettingsChanged) for e in evs):
                break
        # Pretend we did not see the limit of 1, as a client racing the SETTINGS would.
        c.remote_settings._settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = (
            collections.deque([100])
        )
        hdr = [(":method", "POST"), (":scheme", "http"), (":authority", "x"), (":path", "/")]
        c.send_headers(1, hdr, end_stream=True)
        c.send_headers(3, hdr)
        c.send_data(3, b"abc")
        c.send_headers(3, [("x-trailer", "1")], end_stream=True)
        w.write(c.data_to_send())
        seen: list[object] = []
        while not any(isinstance(e, h2.events.StreamEnded) and e.stream_id == 1 for e in seen):
            data = await asyncio.wait_for(r.read(65536), 5)
            assert data, f"server closed the connection: {seen}"
            seen += c.receive_data(data)
            w.write(c.data_to_send())
        assert not any(isinstance(e, h2.events.ConnectionTerminated) for e in seen), seen
        resets = [e for e in seen if isinstance(e, h2.events.StreamReset)]
        assert resets and resets[0].stream_id == 3
        assert resets[0].error_code == E.REFUSED_STREAM
    finally:
        w.close()
        srv.close(0.1)
        await srv.wait_closed()


async def test_continuation_on_a_forgotten_stream_is_a_protocol_error(
    srv: dosharness.ServerUnderTest,
) -> None:
    """RFC 9113 §6.10: PROTOCOL_ERROR. Once idle, the server forgets its closed streams, and
    h2 then answered a stray CONTINUATION on one with STREAM_CLOSED."""
    peer = await RawPeer.connect(srv.port)
    await peer.handshake()
    resp = await peer.get("/", timeout=5.0)
    assert resp.status == "200"
    await asyncio.sleep(0.05)  # idle: stream 1 is forgotten
    await peer.send(rp.continuation(1, b"", end_headers=True))
    goaway = await peer.expect_goaway(E.PROTOCOL_ERROR)
    assert goaway.error_code == E.PROTOCOL_ERROR
    await peer.close()
