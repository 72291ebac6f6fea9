"""Several processes on one port: ``start_server(reuse_port=True)`` and ``aioh2s.serve``.

The first tests run in this process: SO_REUSEPORT itself, and what a worker relies on when
it stops, namely that ``Server.close()`` closes its listener before it drains (the kernel
then hands new connections to the other listeners) and that a connection the server had
accepted but not yet heard from is served, not dropped. The rest start real supervisors
(``python -c 'aioh2s.serve(...)'``) with workers on 127.0.0.1, the application being
tests/workers_app.py (each response names its worker's pid), and read the supervisor's log
on its stderr. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import sys
from collections.abc import Callable

import h2.config
import h2.connection
import pytest
from hyperframe.frame import DataFrame, Frame, GoAwayFrame, PingFrame

import aioh2s

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="SO_REUSEPORT load balancing is Linux's")


def _named(name: str, release: asyncio.Event | None = None) -> aioh2s.Handler:
    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        writer.send_headers({":status": "200"})
        if release is not None and reader.headers[":path"] == "/slow":
            await asyncio.wait_for(release.wait(), 10)
        writer.write(name.encode())
        writer.write_eof()
    return handler


async def _get(port: int, path: str = "/") -> bytes:
    client = await aioh2s.connect("127.0.0.1", port)
    try:
        async with client.request({":path": path}, end_stream=True) as stream:
            await asyncio.wait_for(stream.response_headers(), 5)
            return await asyncio.wait_for(stream.reader.read(), 5)
    finally:
        await asyncio.wait_for(client.close(), 5)


async def _read_frames(reader: asyncio.StreamReader,
                       until: Callable[[Frame], bool]) -> list[Frame]:
    frames: list[Frame] = []
    while not frames or not until(frames[-1]):
        head = await asyncio.wait_for(reader.readexactly(9), 5)
        frame, length = Frame.parse_frame_header(memoryview(head))
        frame.parse_body(memoryview(await asyncio.wait_for(reader.readexactly(length), 5)))
        frames.append(frame)
    return frames


# -- start_server(reuse_port=True) and what Server.close() does for a worker ------------------


async def test_reuse_port_lets_servers_share_a_port_and_close_leaves_the_others() -> None:
    release = asyncio.Event()
    a = await aioh2s.start_server(_named("a", release), "127.0.0.1", 0, reuse_port=True)
    port = a.sockets[0].getsockname()[1]
    b = await aioh2s.start_server(_named("b"), "127.0.0.1", port, reuse_port=True)
    try:
        # Without SO_REUSEPORT the port is taken.
        with pytest.raises(OSError) as ei:
            await aioh2s.start_server(_named("c"), "127.0.0.1", port)
        assert ei.value.errno == errno.EADDRINUSE
        # The kernel spreads connections over both (by a hash of the client's port).
        seen = {await _get(port) for _ in range(40)}
        assert seen == {b"a", b"b"}
        # A slow request in flight on a, then a closes: its listener goes at once (every new
        # connection lands on b) while the slow request finishes.
        clients: list[aioh2s.Client] = []
        try:
            slow = None
            for _ in range(40):
                client = await aioh2s.connect("127.0.0.1", port)
                clients.append(client)
                stream = await client.request({":path": "/slow"}, end_stream=True)
                await asyncio.wait_for(stream.response_headers(), 5)
                if a.connections:
                    slow = stream
                    break
            assert slow is not None, "no connection landed on a"
            a.close(grace=5)
            assert not a.sockets
            assert {await _get(port) for _ in range(20)} == {b"b"}
            release.set()
            assert await asyncio.wait_for(slow.reader.read(), 5) == b"a"
        finally:
            for client in clients:
                await asyncio.wait_for(client.close(), 5)
        await asyncio.wait_for(a.wait_closed(), 5)
    finally:
        release.set()
        for server in (a, b):
            server.close()
            await asyncio.wait_for(server.wait_closed(), 5)


async def test_reuse_port_where_the_platform_has_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(socket, "SO_REUSEPORT")
    with pytest.raises(ValueError, match="has no SO_REUSEPORT"):
        await aioh2s.start_server(_named("a"), "127.0.0.1", 0, reuse_port=True)


async def test_start_server_on_a_listening_socket() -> None:
    sock = socket.create_server(("127.0.0.1", 0))
    server = await aioh2s.start_server(_named("s"), sock=sock)
    try:
        assert await _get(sock.getsockname()[1]) == b"s"
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), 5)


async def test_a_connection_that_has_not_spoken_yet_is_served_through_close() -> None:
    # A worker stopping under load has connections it accepted an instant ago whose request
    # is on its way: close() lets them speak (linger seconds), serves them, then GOAWAY.
    server = await aioh2s.start_server(_named("s"), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for _ in range(100):
            if server.connections:
                break
            await asyncio.sleep(0.01)
        assert server.connections == 1
        server.close(grace=5)
        h2c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        h2c.initiate_connection()
        h2c.send_headers(1, [(":method", "GET"), (":scheme", "http"),
                             (":authority", "localhost"), (":path", "/")], end_stream=True)
        writer.write(h2c.data_to_send())
        # Read the frames with hyperframe: stock h2 takes no frame after a GOAWAY.
        frames = await _read_frames(reader, until=lambda f: isinstance(f, DataFrame)
                                    and "END_STREAM" in f.flags)
        assert b"".join(f.data for f in frames if isinstance(f, DataFrame)) == b"s"
        assert [f.last_stream_id for f in frames if isinstance(f, GoAwayFrame)] == [2**31 - 1]
        # The final GOAWAY waits for the PING's ACK (or a second): answer it.
        ping = next(f for f in frames if isinstance(f, PingFrame))
        ack = PingFrame(0, ping.opaque_data)
        ack.flags.add("ACK")
        writer.write(ack.serialize())
        frames = await _read_frames(reader, until=lambda f: isinstance(f, GoAwayFrame))
        assert frames[-1].last_stream_id == 1
        await asyncio.wait_for(server.wait_closed(), 5)
    finally:
        writer.close()
        await writer.wait_closed()
        server.close()
        await asyncio.wait_for(server.wait_closed(), 5)


async def test_a_connection_that_stays_silent_through_close_is_closed_after_linger() -> None:
    server = await aioh2s.start_server(_named("s"), "127.0.0.1", 0, linger=0.2)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for _ in range(100):
            if server.connections:
                break
            await asyncio.sleep(0.01)
        loop = asyncio.get_running_loop()
        started = loop.time()
        server.close(grace=5)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # not a word
        await asyncio.wait_for(server.wait_closed(), 5)
        assert 0.15 < loop.time() - started < 2
    finally:
        writer.close()
        await writer.wait_closed()
