"""``Server.close()`` racing connections that have just arrived, over h2c and TLS.

What a worker stopping under load (a rolling restart) needs of its server:

- a connection that is open but has not made its first request yet (a client that opens a
  connection per request is sending it right now) gets no GOAWAY before that request, which
  is served; only then does the graceful close start (at most ``first_request_wait`` seconds
  later for a connection that stays silent: 1 s in ``serve()``'s workers, 0 by default for
  ``start_server()``, see tests/test_workers.py);
- ``wait_closed()`` returning means that no connection of the server is served any more: a
  TLS handshake under way at ``close()`` is waited for (and its connection served, within
  ``wait_closed()``), and one that ends after ``wait_closed()`` returned is closed unserved,
  with no task left behind.
"""

from __future__ import annotations

import asyncio
import ssl
import sys
from typing import Any

import h2.config
import h2.connection
import pytest
from hyperframe.frame import DataFrame, Frame, PingFrame

import aioh2s


async def _hello(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
    writer.send_headers({":status": "200"})
    writer.write(b"hello")
    writer.write_eof()


def _request() -> bytes:
    h2c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    h2c.initiate_connection()
    h2c.send_headers(1, [(":method", "GET"), (":scheme", "https"),
                         (":authority", "localhost"), (":path", "/")], end_stream=True)
    return h2c.data_to_send()


async def _frames_until_body_end(reader: asyncio.StreamReader) -> list[Frame]:
    """Frames (parsed by hyperframe: stock h2 takes nothing after a GOAWAY) up to END_STREAM."""
    frames: list[Frame] = []
    while not (frames and isinstance(frames[-1], DataFrame) and "END_STREAM" in frames[-1].flags):
        head = await asyncio.wait_for(reader.readexactly(9), 5)
        frame, length = Frame.parse_frame_header(memoryview(head))
        frame.parse_body(memoryview(await asyncio.wait_for(reader.readexactly(length), 5)))
        frames.append(frame)
    return frames


async def _accepted(server: aioh2s.Server, count: int = 1) -> None:
    for _ in range(200):
        if server.connections >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the server did not take the connection")


async def test_an_open_connection_without_requests_gets_its_first_request_served(wire: Any) -> None:
    # The connection is OPEN (prefaces and SETTINGS exchanged) but has made no request when
    # the server closes: its client (one connection per request, no retry) sends the request
    # 0.3 s later, and it must be served, not refused by a GOAWAY sent in between.
    server = await aioh2s.start_server(_hello, "127.0.0.1", 0, first_request_wait=1.0,
                                       **wire.server_options())
    port = server.sockets[0].getsockname()[1]
    client = await aioh2s.connect("127.0.0.1", port, **wire.client_options())
    try:
        await _accepted(server)
        await asyncio.wait_for(client.ping(), 5)  # both SETTINGS are through: OPEN
        server.close(grace=5)
        await asyncio.sleep(0.3)
        assert not client.is_closing(), "GOAWAY before the connection's first request"
        async with client.request({":path": "/"}, end_stream=True) as stream:
            assert (await asyncio.wait_for(stream.response_headers(), 5))[":status"] == "200"
            assert await asyncio.wait_for(stream.reader.read(), 5) == b"hello"
        await asyncio.wait_for(server.wait_closed(), 5)
        assert client.is_closing()  # and then it was closed, gracefully
    finally:
        await asyncio.wait_for(client.close(), 5)
        server.close()
        await asyncio.wait_for(server.wait_closed(), 5)


async def test_an_open_connection_that_stays_silent_is_closed_after_the_wait(wire: Any) -> None:
    server = await aioh2s.start_server(_hello, "127.0.0.1", 0, first_request_wait=0.3,
                                       **wire.server_options())
    port = server.sockets[0].getsockname()[1]
    client = await aioh2s.connect("127.0.0.1", port, **wire.client_options())
    try:
        await _accepted(server)
        await asyncio.wait_for(client.ping(), 5)
        loop = asyncio.get_running_loop()
        started = loop.time()
        server.close(grace=10)
        await asyncio.wait_for(server.wait_closed(), 5)
        # the wait for the first request, then the graceful close (PING round trip, linger)
        assert 0.25 < loop.time() - started < 3
        assert client.is_closing()
    finally:
        await asyncio.wait_for(client.close(), 5)


async def _tcp_then_later_tls(port: int, wire: Any) -> tuple[asyncio.StreamReader,
                                                              asyncio.StreamWriter]:
    """A TCP connection whose TLS handshake (if any) the caller starts with ``_handshake``."""
    return await asyncio.open_connection("127.0.0.1", port)


async def _handshake(writer: asyncio.StreamWriter, wire: Any) -> None:
    ctx = ssl.create_default_context(cafile=wire.certs.ca)
    ctx.set_alpn_protocols(["h2"])
    await asyncio.wait_for(writer.start_tls(ctx, server_hostname="localhost"), 5)


@pytest.mark.skipif(not hasattr(asyncio.StreamWriter, "start_tls"), reason="Python 3.11+")
async def test_a_handshake_under_way_at_close_is_served_within_wait_closed(wire: Any) -> None:
    server = await aioh2s.start_server(_hello, "127.0.0.1", 0, first_request_wait=2,
                                       **wire.server_options())
    port = server.sockets[0].getsockname()[1]
    reader, writer = await _tcp_then_later_tls(port, wire)
    try:
        await asyncio.sleep(0.1)  # accepted by the server's loop (the handshake waits for us)
        server.close(grace=5)
        closed = asyncio.ensure_future(server.wait_closed())
        await asyncio.sleep(0.1)
        assert not closed.done(), "wait_closed() returned with a connection still to serve"
        if wire.tls:
            await _handshake(writer, wire)
        writer.write(_request())
        frames = await _frames_until_body_end(reader)
        assert b"".join(f.data for f in frames if isinstance(f, DataFrame)) == b"hello"
        assert not closed.done()
        ping = next((f for f in frames if isinstance(f, PingFrame)), None)
        if ping is not None:  # the graceful close's PING: answer it, and the GOAWAY follows
            ack = PingFrame(0, ping.opaque_data)
            ack.flags.add("ACK")
            writer.write(ack.serialize())
        await asyncio.wait_for(closed, 5)
        assert not server._conn_tasks
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.mark.skipif(not hasattr(asyncio.StreamWriter, "start_tls"), reason="Python 3.11+")
async def test_a_handshake_done_after_wait_closed_is_not_served(cert_files: Any) -> None:
    from helpers import Wire

    wire = Wire("tls", cert_files)
    # (On 3.12+ asyncio's own wait_closed() waits for the handshake too, until its timeout.)
    server = await aioh2s.start_server(_hello, "127.0.0.1", 0, first_request_wait=0.2,
                                       handshake_timeout=1,
                                       **wire.server_options())
    port = server.sockets[0].getsockname()[1]
    reader, writer = await _tcp_then_later_tls(port, wire)
    try:
        await asyncio.sleep(0.1)
        server.close(grace=5)
        await asyncio.wait_for(server.wait_closed(), 5)
        # wait_closed() has returned: whatever this connection does now, nobody serves it.
        try:
            await _handshake(writer, wire)
            writer.write(_request())
            data = await asyncio.wait_for(reader.read(), 5)
        except (ConnectionError, ssl.SSLError):
            data = b""
        assert not data.startswith(b"\x00"), "served after wait_closed() returned"
        await asyncio.sleep(0.1)
        assert not server._conn_tasks and not server.connections
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass


async def _hang(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
    writer.send_headers({":status": "200"})
    await asyncio.sleep(30)


@pytest.mark.skipif(not hasattr(asyncio.StreamWriter, "start_tls"), reason="Python 3.11+")
async def test_a_later_close_keeps_the_shorter_grace_for_late_connections(wire: Any) -> None:
    """close(0.5) then close() keeps 0.5 s, for a connection whose handshake ends after
    both too (it got a fresh full grace): its hanging request is cut, not waited 5 s for."""
    server = await aioh2s.start_server(_hang, "127.0.0.1", 0, first_request_wait=2, grace=5,
                                       **wire.server_options())
    port = server.sockets[0].getsockname()[1]
    reader, writer = await _tcp_then_later_tls(port, wire)
    try:
        await asyncio.sleep(0.1)
        loop = asyncio.get_running_loop()
        started = loop.time()
        server.close(0.5)
        server.close()  # no grace given: the 0.5 s stays
        closed = asyncio.ensure_future(server.wait_closed())
        if wire.tls:
            await _handshake(writer, wire)
        writer.write(_request())
        await asyncio.wait_for(closed, 10)
        assert loop.time() - started < 3  # 0.5 s and the close, not the 5 s grace
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass


@pytest.mark.skipif(sys.version_info[:2] == (3, 12),
                    reason="3.12's asyncio waits for handshakes until handshake_timeout")
async def test_wait_closed_before_close_keeps_the_first_request_bound(wire: Any) -> None:
    """wait_closed() awaited before close() returns as one awaited after it does: a silent
    client (no ClientHello over TLS) is given first_request_wait, not handshake_timeout."""
    server = await aioh2s.start_server(_hello, "127.0.0.1", 0, first_request_wait=0.2,
                                       handshake_timeout=5, **wire.server_options())
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)  # and says nothing
    try:
        await asyncio.sleep(0.1)
        waiting = asyncio.ensure_future(server.wait_closed())
        await asyncio.sleep(0.1)
        assert not waiting.done()  # (until close(), as asyncio's)
        loop = asyncio.get_running_loop()
        started = loop.time()
        server.close()
        await asyncio.wait_for(waiting, 10)
        assert loop.time() - started < 2.5  # not handshake_timeout (5 s)
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass


async def test_a_goaway_waits_for_the_first_request_only_once(wire: Any) -> None:
    # The deferred close is one deferral: a connection silent through it gets the graceful
    # close (GOAWAY) then, and a request that arrives after that is refused as safe to retry.
    server = await aioh2s.start_server(_hello, "127.0.0.1", 0, first_request_wait=0.2,
                                       **wire.server_options())
    port = server.sockets[0].getsockname()[1]
    client = await aioh2s.connect("127.0.0.1", port, **wire.client_options())
    try:
        await _accepted(server)
        await asyncio.wait_for(client.ping(), 5)
        server.close(grace=5)
        for _ in range(100):
            if client.is_closing():
                break
            await asyncio.sleep(0.02)
        assert client.is_closing()
        with pytest.raises(aioh2s.ConnectionClosed) as ei:
            await client.request({":path": "/"}, end_stream=True)
        assert ei.value.retry_safe
        await asyncio.wait_for(server.wait_closed(), 5)
    finally:
        await asyncio.wait_for(client.close(), 5)
