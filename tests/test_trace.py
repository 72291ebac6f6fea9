"""The frame trace (logger ``aioh2s.frames``): a line per frame each way, off and free if off."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest

import aioh2s
from aioh2s import _h2ext, _trace
from helpers import Wire, echo_handler

FRAMES = "aioh2s.frames"


class Frames(logging.Handler):
    """Collects the trace's records."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def lines(self, side: str, direction: str | None = None) -> list[str]:
        return [
            r.h2_frame for r in self.records  # type: ignore[attr-defined]
            if r.h2_side == side  # type: ignore[attr-defined]
            and (direction is None or r.h2_direction == direction)  # type: ignore[attr-defined]
        ]

    def first(self, side: str, direction: str, start: str) -> str:
        found = [line for line in self.lines(side, direction) if line.startswith(start)]
        assert found, (side, direction, start, self.lines(side))
        return found[0]


@pytest.fixture
def frames() -> Iterator[Frames]:
    logger = logging.getLogger(FRAMES)
    handler = Frames()
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)


async def test_every_frame_both_ways_with_key_fields(frames: Frames, wire: Wire) -> None:
    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        if reader.headers[":path"] == "/reset":
            writer.reset(aioh2s.ErrorCode.REFUSED_STREAM)
            return
        await echo_handler(reader, writer)

    async with wire.serving(handler, stream_window=100_000) as (_, port):
        client = await wire.connect(port)
        async with client.request({":method": "POST", ":path": "/echo"}) as stream:
            stream.writer.write(b"x" * 1000)
            stream.writer.write_eof()
            await stream.response_headers()
            assert await stream.reader.read() == b"x" * 1000
        async with client.request({":path": "/reset"}, end_stream=True) as stream:
            with pytest.raises(aioh2s.StreamReset):
                await stream.response_headers()
        await client.ping()
        await asyncio.wait_for(client.close(), 5)

    # The server's preface SETTINGS (written by h2 outside its frame queue) and its values.
    settings = frames.first("server", "send", "SETTINGS")
    assert "stream=0" in settings and "INITIAL_WINDOW_SIZE=100000" in settings
    assert "MAX_CONCURRENT_STREAMS=100" in settings and "flags=0" in settings
    assert frames.first("client", "recv", "SETTINGS stream=0 length=48") == settings
    assert "flags=ACK" in frames.first("client", "send", "SETTINGS stream=0 length=0")
    assert frames.first("client", "send", "WINDOW_UPDATE").startswith(
        "WINDOW_UPDATE stream=0 length=4 flags=0 increment="
    )
    assert frames.first("client", "send", "HEADERS") .startswith(
        "HEADERS stream=1 length="
    ) and "flags=END_HEADERS" in frames.first("client", "send", "HEADERS")
    # Written with write_eof() in the same iteration: one frame ends the stream.
    assert frames.first("server", "recv", "DATA stream=1 length=1000 flags=END_STREAM")
    assert frames.first("server", "send", "DATA stream=1 length=1000 flags=0")
    assert frames.first("server", "send", "RST_STREAM stream=3 length=4 flags=0 "
                        "error=REFUSED_STREAM")
    assert frames.first("client", "recv", "RST_STREAM stream=3").endswith("error=REFUSED_STREAM")
    ping = frames.first("client", "send", "PING")
    data = ping.split("data=")[1]
    assert len(data) == 16 and ping.startswith("PING stream=0 length=8 flags=0 ")
    assert frames.first("client", "recv", "PING").endswith(f"flags=ACK data={data}")
    assert frames.first("client", "send", "GOAWAY") == (
        "GOAWAY stream=0 length=8 flags=0 last_stream=0 error=NO_ERROR"
    )
    # Each frame sent by one side was received by the other, in the same order.
    assert frames.lines("client", "send")[:6] == frames.lines("server", "recv")[:6]

    record = frames.records[0]
    assert record.levelno == logging.DEBUG and record.name == FRAMES
    assert record.getMessage() == (
        f"[{record.h2_peer}] {record.h2_direction} {record.h2_frame}"  # type: ignore[attr-defined]
    )
    assert record.h2_peer.startswith("127.0.0.1:")  # type: ignore[attr-defined]


async def test_goaway_debug_data_and_error_code(frames: Frames) -> None:
    server = await aioh2s.start_server(echo_handler, "127.0.0.1", 0, max_frame_size=16384)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"not HTTP/2 at all\r\n\r\n")
        await asyncio.wait_for(reader.read(), 5)
        writer.close()
        await writer.wait_closed()
    finally:
        server.close()
        await server.wait_closed()
    goaway = frames.first("server", "send", "GOAWAY")
    assert "error=PROTOCOL_ERROR" in goaway and "last_stream=0" in goaway


async def test_off_by_default_and_nothing_is_hooked() -> None:
    assert not logging.getLogger(FRAMES).isEnabledFor(logging.DEBUG)
    seen: list[type] = []

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        conn = writer._s.conn  # type: ignore[attr-defined]
        seen.append(type(conn.h2))
        seen.append(type(conn.h2.incoming_buffer))
        await echo_handler(reader, writer)

    handler_records = Frames()
    logging.getLogger(FRAMES).addHandler(handler_records)
    try:
        async with aioh2s.Session() as session:
            server = await aioh2s.start_server(handler, "127.0.0.1", 0)
            try:
                port = server.sockets[0].getsockname()[1]
                r = await session.fetch(f"http://127.0.0.1:{port}/", body=b"hi")
                assert r.body == b"hi"
                (client,) = session.connections()
                seen.append(type(client._conn.h2))
                seen.append(type(client._conn.h2.incoming_buffer))
            finally:
                server.close()
                await server.wait_closed()
    finally:
        logging.getLogger(FRAMES).removeHandler(handler_records)
    # Untraced connections keep h2's class and the frame buffer's without the hooks: no
    # per-frame cost at all.
    assert seen == [_h2ext.H2, _h2ext.GuardedFrameBuffer] * 2
    assert handler_records.records == []


async def test_switched_on_and_off_on_a_live_connection() -> None:
    logger = logging.getLogger(FRAMES)
    handler = Frames()
    logger.addHandler(handler)
    try:
        async with await aioh2s.start_server(echo_handler, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            client = await aioh2s.connect("127.0.0.1", port)
            conn = client._conn
            assert type(conn.h2) is _h2ext.H2
            logger.setLevel(logging.DEBUG)
            await client.ping()  # the next input turns it on...
            await client.ping()
            assert type(conn.h2) is _h2ext.TracedH2
            assert type(conn.h2.incoming_buffer) is _h2ext.TracedFrameBuffer
            assert "PING" in " ".join(handler.lines("client", "send"))
            logger.setLevel(logging.NOTSET)
            await client.ping()  # ...and off
            assert type(conn.h2) is _h2ext.H2 and "trace" not in conn.h2.__dict__
            buf = conn.h2.incoming_buffer
            assert type(buf) is _h2ext.GuardedFrameBuffer and "trace" not in buf.__dict__
            n = len(handler.records)
            await client.ping()
            assert len(handler.records) == n
            await asyncio.wait_for(client.close(), 5)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)


async def _send_raw_request(frames_after_preface: bytes) -> None:
    """Open a connection to a server, send the preface, SETTINGS and these frames."""
    import hyperframe.frame as hf

    async def ok(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        writer.send_headers({":status": "200"}, end_stream=True)

    async with await aioh2s.start_server(ok, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + hf.SettingsFrame(0).serialize()
                     + frames_after_preface)
        got = b""
        while b"\x01\x05\x00\x00\x00\x01" not in got:  # HEADERS, END_STREAM|END_HEADERS, 1
            chunk = await asyncio.wait_for(reader.read(65536), 5)
            assert chunk, got
            got += chunk
        writer.close()
        await writer.wait_closed()


def _request_block() -> bytes:
    import hpack

    return hpack.Encoder().encode([(":method", "GET"), (":scheme", "http"),
                                   (":authority", "x"), (":path", "/" + "a" * 40)])


async def test_received_continuation_frames_are_traced_one_by_one(frames: Frames) -> None:
    # h2's frame buffer merges CONTINUATION frames into their HEADERS before h2 processes
    # them; the trace reports each frame as it came, with its own length and flags.
    import hyperframe.frame as hf

    block = _request_block()
    h = hf.HeadersFrame(1, block[:10], flags=["END_STREAM"])
    c1 = hf.ContinuationFrame(1, block[10:20])
    c2 = hf.ContinuationFrame(1, block[20:], flags=["END_HEADERS"])
    await _send_raw_request(h.serialize() + c1.serialize() + c2.serialize())
    recv = [line for line in frames.lines("server", "recv") if "stream=1" in line]
    assert recv == [
        "HEADERS stream=1 length=10 flags=END_STREAM",
        "CONTINUATION stream=1 length=10 flags=0",
        f"CONTINUATION stream=1 length={len(block) - 20} flags=END_HEADERS",
    ]


async def test_received_padded_headers_length_is_the_wire_length(frames: Frames) -> None:
    import hyperframe.frame as hf

    h = hf.HeadersFrame(1, _request_block(), flags=["END_STREAM", "END_HEADERS", "PADDED"])
    h.pad_length = 5
    wire = h.serialize()
    length = int.from_bytes(wire[:3], "big")
    await _send_raw_request(wire)
    line = frames.first("server", "recv", "HEADERS stream=1")
    assert line == (
        f"HEADERS stream=1 length={length} flags=END_STREAM|END_HEADERS|PADDED padding=5"
    )


async def test_h2c_upgrade_is_traced(frames: Frames) -> None:
    async with await aioh2s.start_server(echo_handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101")
        writer.close()
        await writer.wait_closed()
    assert frames.first("server", "send", "SETTINGS stream=0")


def test_describe_unknown_and_priority_frames() -> None:
    import hyperframe.frame as hf

    ext = hf.ExtensionFrame(0x42, 3, 0x5, b"abc")
    ext.body_len = 3
    assert _trace.describe(ext) == "UNKNOWN(type=0x42) stream=3 length=3 flags=0x05"
    pri = hf.PriorityFrame(5, depends_on=3, stream_weight=15, exclusive=True)
    pri.body_len = 5
    assert _trace.describe(pri) == (
        "PRIORITY stream=5 length=5 flags=0 depends_on=3 weight=16 exclusive=1"
    )
    settings = hf.SettingsFrame(0, settings={0x4: 65535, 0x77: 1})
    assert _trace.describe(settings).endswith("INITIAL_WINDOW_SIZE=65535 0x77=1")
    rst = hf.RstStreamFrame(1, error_code=0x99)
    assert _trace.describe(rst).endswith("error=0x99")
    data = hf.DataFrame(1, b"x", flags=["PADDED", "END_STREAM"], pad_length=4)
    data.serialize()
    assert _trace.describe(data) == "DATA stream=1 length=6 flags=END_STREAM|PADDED padding=4"
