"""A finished server connection and its streams are freed at once, by reference counting.

Left in reference cycles they wait for a full garbage collection: with thousands of short
attacking connections those took ~100 ms each and held tens of MiB (issue 11's availability
row 7). Each case ends a connection its own way with the garbage collector off, and checks
that the server's connection and stream objects are gone all the same.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import struct
from typing import Any

import pytest
import rawpeer as rp

import aioh2s
from aioh2s._connection import Connection, Stream
from helpers import Wire

pytestmark = pytest.mark.timeout(30)

GET = {":method": "GET", ":path": "/"}
POST = {":method": "POST", ":path": "/"}
# :method POST, :scheme http, :path /, :authority 127.0.0.1 (HPACK, no dynamic table)
POST_BLOCK = b"\x83\x86\x84\x01\x09127.0.0.1"


class Kept:
    """What the server built for the last request, by identity (slotted: no weak refs)."""

    def __init__(self) -> None:
        self.ids: set[int] = set()
        self.seen = asyncio.Event()

    def keep(self, reader: aioh2s.H2StreamReader) -> None:
        s = reader._s  # the stream object behind the public reader
        self.ids = {id(s), id(s.conn)}
        self.seen.set()

    def alive(self) -> list[str]:
        """Those still alive: with the collector off, objects in a cycle are still tracked."""
        return [type(o).__name__ for o in gc.get_objects()
                if type(o) in (Stream, Connection) and id(o) in self.ids]


async def _gone(server: aioh2s.Server, kept: Kept) -> list[str]:
    """Wait for the server to forget its connections; what of ``kept`` is still alive."""
    for _ in range(200):
        if not server._connections:
            break
        await asyncio.sleep(0.01)
    for _ in range(3):  # handler task and reaper finish in the next iterations
        await asyncio.sleep(0.02)
    return kept.alive()


def _goaway_codes(data: bytes) -> list[int]:
    """The error codes of the GOAWAY frames in ``data`` (whole frames from the server)."""
    codes, i = [], 0
    while i + 9 <= len(data):
        length, ftype = int.from_bytes(data[i : i + 3], "big"), data[i + 3]
        if ftype == 0x7:
            codes.append(int.from_bytes(data[i + 13 : i + 17], "big"))
        i += 9 + length
    return codes


async def _raw(port: int, wire: Wire) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A non-aioh2s client connection (TLS with ALPN h2 when ``wire`` is TLS)."""
    return await asyncio.open_connection("127.0.0.1", port, **wire.raw_client_options())


@pytest.fixture
def no_gc() -> Any:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.usefixtures("no_gc")
async def test_a_connection_that_served_a_request(wire: Wire) -> None:
    kept = Kept()

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        kept.keep(reader)
        writer.send_headers({":status": "200"})
        writer.write(b"hello")
        writer.write_eof()
        await writer.drain()

    async with wire.serving(handler) as (server, port):
        client = await wire.connect(port)
        async with client.request(GET) as stream:
            assert await stream.reader.read() == b"hello"
        await client.close()
        assert await _gone(server, kept) == []


@pytest.mark.usefixtures("no_gc")
async def test_a_handler_that_saw_its_connection_die(wire: Wire) -> None:
    """The handler is blocked reading the body when the client goes: it gets the error."""
    kept = Kept()
    errors: list[BaseException] = []

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        kept.keep(reader)
        try:
            await reader.read()
        except aioh2s.H2Error as e:
            errors.append(e)
            raise

    async with wire.serving(handler) as (server, port):
        client = await wire.connect(port)
        async with client.request(POST) as stream:
            stream.writer.write(b"x")
            await stream.writer.drain()
            await asyncio.wait_for(kept.seen.wait(), 5)
            client.abort()
        with pytest.raises(aioh2s.H2Error):
            await stream.response_headers()
        assert await _gone(server, kept) == []
    assert errors, "the handler never saw the connection end"


@pytest.mark.usefixtures("no_gc")
async def test_a_connection_ended_for_a_protocol_error(wire: Wire) -> None:
    """h2's exception (and its traceback through our frames) must not keep it alive."""
    kept = Kept()

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        kept.keep(reader)
        await reader.read()

    async with wire.serving(handler) as (server, port):
        reader, writer = await _raw(port, wire)
        try:
            writer.write(rp.PREFACE + rp.settings() + rp.headers_frame(1, POST_BLOCK))
            await asyncio.wait_for(kept.seen.wait(), 5)  # a request whose handler waits
            # A CONTINUATION flood of tiny fragments: past h2's backlog, PROTOCOL_ERROR.
            start = rp.headers_frame(3, POST_BLOCK, end_headers=False)
            writer.write(start + rp.continuation(3, b"\x00\x01x\x00") * 200)
            got = b""
            while chunk := await asyncio.wait_for(reader.read(65536), 5):
                got += chunk
        finally:
            writer.close()
        assert _goaway_codes(got) == [rp.ErrorCodes.PROTOCOL_ERROR]
        assert await _gone(server, kept) == []


@pytest.mark.usefixtures("no_gc")
@pytest.mark.parametrize("how", ["rst_idle", "rst_in_request", "fin_in_request"])
async def test_a_connection_the_peer_reset(wire: Wire, how: str) -> None:
    """The client vanishes with a TCP RST (SO_LINGER 0): the commonest end of an attack."""
    kept = Kept()

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        kept.keep(reader)
        if how == "rst_idle":
            writer.send_headers({":status": "200"})
            writer.write_eof()
            return
        await reader.read()

    async with wire.serving(handler) as (server, port):
        r, w = await _raw(port, wire)
        w.write(rp.PREFACE + rp.settings() + rp.headers_frame(1, POST_BLOCK,
                                                              end_stream=how == "rst_idle"))
        await asyncio.wait_for(kept.seen.wait(), 5)
        await asyncio.sleep(0.05)
        sock = w.get_extra_info("socket")
        if how.startswith("rst"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        w.transport.abort() if how.startswith("rst") else w.close()
        left = await _gone(server, kept)
        assert left == []


@pytest.mark.usefixtures("no_gc")
@pytest.mark.parametrize("how", ["handler_raises", "server_close_hanging", "min_body_rate",
                                 "idle_timeout", "handler_cancelled_after_reset"])
async def test_other_ends(wire: Wire, how: str, caplog: pytest.LogCaptureFixture) -> None:
    kept = Kept()
    caplog.set_level(100)  # log records with exc_info would keep frames alive themselves

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        kept.keep(reader)
        if how == "handler_raises":
            raise ValueError("boom")
        if how == "min_body_rate":
            await reader.read()
        if how == "idle_timeout":
            writer.send_headers({":status": "204"}, end_stream=True)
            return
        await asyncio.sleep(3600)

    opts = {}
    if how == "min_body_rate":
        opts = dict(min_body_rate=1000.0, body_rate_grace=0.2)
    if how == "idle_timeout":
        # grace 0.5: where the kernel's send queue cannot be read (not Linux), a peer that
        # neither reads nor closes holds an idle close for the rest of the grace period
        opts = dict(idle_timeout=0.3, grace=0.5)
    if how == "handler_cancelled_after_reset":
        opts = dict(reset_handler_timeout=0.1)
    async with wire.serving(handler, **opts) as (server, port):
        r, w = await _raw(port, wire)
        end = how in ("handler_raises", "idle_timeout")
        w.write(rp.PREFACE + rp.settings() + rp.headers_frame(1, POST_BLOCK, end_stream=end))
        await asyncio.wait_for(kept.seen.wait(), 5)
        if how == "server_close_hanging":
            server.close(grace=0)
        if how == "handler_cancelled_after_reset":
            w.write(rp.rst(1))
        if how in ("handler_raises", "handler_cancelled_after_reset"):
            await asyncio.sleep(0.6)
            w.close()
        else:
            await asyncio.sleep(1.5)
        left = await _gone(server, kept)
        w.close()
        assert left == []


@pytest.mark.usefixtures("no_gc")
async def test_a_handler_that_pings_after_its_connection_died(wire: Wire) -> None:
    """Connection.ping() raises the connection's own (shared) error object with a fresh
    traceback through the handler: conn.error -> traceback -> handler frame -> conn."""
    kept = Kept()
    got: list[str] = []

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        kept.keep(reader)
        try:
            await reader.read()
        except aioh2s.H2Error:
            try:
                await writer.connection.ping(timeout=1)
            except aioh2s.H2Error as e:
                got.append(type(e).__name__)

    async with wire.serving(handler) as (server, port):
        r, w = await _raw(port, wire)
        w.write(rp.PREFACE + rp.settings() + rp.headers_frame(1, POST_BLOCK))
        await asyncio.wait_for(kept.seen.wait(), 5)
        await asyncio.sleep(0.05)
        w.close()
        left = await _gone(server, kept)
        assert got, "handler did not get to ping"
        assert left == []
