"""A finished server connection and its streams are freed at once, by reference counting.

Left in reference cycles they wait for a full garbage collection: with thousands of short
attacking connections those took ~100 ms each and held tens of MiB (issue 11's availability
row 7). Each case ends a connection its own way with the garbage collector off, and checks
that the server's connection and stream objects are gone all the same.
"""

from __future__ import annotations

import asyncio
import gc
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
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, **wire.raw_client_options())
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
