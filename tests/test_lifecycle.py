"""Connection lifecycle (issue 3): graceful GOAWAY both ways, abrupt close, ping, keepalive,
idle and handshake timeouts, SETTINGS changes, and the HTTP/1.1 front door (h2c Upgrade / 505).

Every close and teardown path runs over h2c and over TLS (the ``wire`` fixture, ids ``h2c`` and
``tls``); the non-aioh2s peers (tests/rawh2.py, raw sockets) speak TLS with ALPN h2 there too.
The ``test_tls_*`` tests at the end are teardown paths that only TLS has trouble with, each
with an h2c twin. tests/conftest.py fails any of them that logs at WARNING or above or leaks a
transport.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import sys
import time
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest

import aioh2s
from aioh2s import ConnectionClosed, ConnectionTerminated, StreamReset
from helpers import Wire, echo_handler, require, serving
from rawh2 import RawH2Server

GET = [(":method", "GET"), (":scheme", "https"), (":authority", "localhost"), (":path", "/")]
POST = [(":method", "POST"), *GET[1:]]

# -- graceful shutdown ------------------------------------------------------------------------


async def test_server_close_lets_inflight_streams_finish(wire: Wire) -> None:
    release = asyncio.Event()
    saw_closing: list[bool] = []

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        writer.send_headers({":status": "200"})
        await asyncio.wait_for(release.wait(), 10)
        saw_closing.append(writer.connection.is_closing())
        writer.write(b"finished")
        writer.write_eof()

    server = await aioh2s.start_server(handler, "127.0.0.1", 0, **wire.server_options())
    port = server.sockets[0].getsockname()[1]
    client = await wire.connect(port)
    try:
        async with client.request(end_stream=True) as stream:
            await asyncio.wait_for(stream.response_headers(), 5)
            server.close()
            assert server.is_closing()
            closed = asyncio.ensure_future(server.wait_closed())
            await asyncio.sleep(0.1)
            assert not closed.done()  # the in-flight stream holds it open
            # The client got the GOAWAY: no new requests, but the open one goes on.
            assert client.is_closing()
            with pytest.raises(ConnectionClosed) as ei:
                async with client.request():
                    pass
            assert ei.value.retry_safe
            # No new connections are accepted.
            with pytest.raises(OSError):
                await wire.connect(port)
            release.set()
            assert await asyncio.wait_for(stream.reader.read(), 5) == b"finished"
        await asyncio.wait_for(closed, 5)
        assert saw_closing == [True]
        await asyncio.wait_for(client.wait_closed(), 5)
        assert client._conn.closed
    finally:
        release.set()
        server.close()
        await asyncio.wait_for(server.wait_closed(), 10)
        await asyncio.wait_for(client.close(), 5)


async def test_server_close_grace_resets_what_is_left(wire: Wire) -> None:
    cancelled = asyncio.Event()

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        writer.send_headers({":status": "200"})
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    server = await aioh2s.start_server(handler, "127.0.0.1", 0, **wire.server_options())
    port = server.sockets[0].getsockname()[1]
    client = await wire.connect(port)
    try:
        async with client.request(end_stream=True) as stream:
            await asyncio.wait_for(stream.response_headers(), 5)
            start = time.monotonic()
            server.close(grace=0.3)
            await asyncio.wait_for(server.wait_closed(), 5)
            assert time.monotonic() - start < 3
            with pytest.raises((StreamReset, ConnectionClosed)):
                await asyncio.wait_for(stream.reader.read(), 5)
        assert cancelled.is_set()
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), 10)
        await asyncio.wait_for(client.close(), 5)


async def test_client_close_lets_open_requests_finish(wire: Wire) -> None:
    release = asyncio.Event()

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        writer.send_headers({":status": "200"})
        await asyncio.wait_for(release.wait(), 10)
        writer.write(b"done")
        writer.write_eof()

    async with wire.serving(handler) as (_, port):
        client = await wire.connect(port)
        async with client.request(end_stream=True) as stream:
            await asyncio.wait_for(stream.response_headers(), 5)
            closing = asyncio.ensure_future(client.close())
            await asyncio.sleep(0.05)
            assert client.is_closing() and not closing.done()
            with pytest.raises(ConnectionClosed):
                async with client.request():
                    pass
            release.set()
            assert await asyncio.wait_for(stream.reader.read(), 5) == b"done"
        await asyncio.wait_for(closing, 5)


async def test_received_goaway_fails_higher_streams_as_retry_safe(wire: Wire) -> None:
    """A server (plain h2) sends GOAWAY(last_stream_id=3) while streams 1, 3, 5 are open."""
    opened: list[int] = []

    def on_event(peer, ev):  # type: ignore[no-untyped-def]
        if isinstance(ev, h2.events.RequestReceived):
            opened.append(ev.stream_id)
            if len(opened) == 3:
                peer.conn.close_connection(error_code=0, last_stream_id=3)
                # h2 itself refuses to send after its own GOAWAY; answer stream 3 by hand.
                peer.flush()
                peer.conn.state_machine.state = h2.connection.ConnectionState.SERVER_OPEN
                peer.respond(3, b"three")

    async with RawH2Server(on_event, ssl=wire.raw_server_ssl()) as raw:
        client = await wire.connect(raw.port)
        ctxs = [client.request(end_stream=True) for _ in range(3)]
        streams = [await asyncio.wait_for(c.__aenter__(), 5) for c in ctxs]
        try:
            with pytest.raises(ConnectionTerminated) as ei:
                await asyncio.wait_for(streams[2].response_headers(), 5)
            assert ei.value.retry_safe
            assert ei.value.last_stream_id == 3
            h = await asyncio.wait_for(streams[1].response_headers(), 5)
            assert h[":status"] == "200"
            assert await asyncio.wait_for(streams[1].reader.read(), 5) == b"three"
            assert client.is_closing()
            with pytest.raises(ConnectionClosed) as e2:
                async with client.request():
                    pass
            assert e2.value.retry_safe
        finally:
            for c in ctxs:
                await asyncio.wait_for(c.__aexit__(None, None, None), 5)
            client.abort()
            await asyncio.wait_for(client.wait_closed(), 5)


async def test_abrupt_tcp_close_fails_waiters_promptly(wire: Wire) -> None:
    def on_event(peer, ev):  # type: ignore[no-untyped-def]
        if isinstance(ev, h2.events.RequestReceived):
            peer.conn.send_headers(ev.stream_id, [(":status", "200")])
            peer.flush()
            asyncio.get_running_loop().call_later(0.1, peer.transport.abort)

    async with RawH2Server(on_event, ssl=wire.raw_server_ssl()) as raw:
        client = await wire.connect(raw.port)
        async with client.request({":method": "POST"}) as stream:
            await asyncio.wait_for(stream.response_headers(), 5)
            stream.writer.write(b"x" * 5_000_000)
            start = time.monotonic()
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(stream.reader.read(), 5)
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(stream.writer.drain(), 5)
            assert time.monotonic() - start < 2
        assert client.is_closing()
        await asyncio.wait_for(client.wait_closed(), 5)
        await asyncio.wait_for(client.close(), 5)


# -- ping, keepalive, timeouts ------------------------------------------------------------------


async def test_ping_round_trip_client_and_server_side(wire: Wire) -> None:
    rtts: list[float] = []

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        rtts.append(await writer.connection.ping(timeout=5))
        writer.send_headers({":status": "200"}, end_stream=True)

    async with wire.client_for(handler) as (client, _):
        results = await asyncio.gather(*(client.ping(timeout=5) for _ in range(10)))
        assert all(0 < r < 5 for r in results)
        async with client.request(end_stream=True) as stream:
            await asyncio.wait_for(stream.response_headers(), 5)
    assert len(rtts) == 1 and 0 < rtts[0] < 5


async def test_keepalive_closes_when_pings_go_unanswered(wire: Wire) -> None:
    silent = RawH2Server(lambda p, e: None, auto_ack_pings=False, ssl=wire.raw_server_ssl())
    async with silent as raw:
        client = await wire.connect(raw.port, keepalive_interval=0.1, keepalive_timeout=0.2)
        start = time.monotonic()
        await asyncio.wait_for(client.wait_closed(), 5)
        assert time.monotonic() - start < 2
        assert raw.pings_seen >= 1
        assert "keepalive" in str(client._conn.error)
        await asyncio.wait_for(client.close(), 5)


async def test_keepalive_keeps_a_healthy_idle_connection(wire: Wire) -> None:
    async with wire.serving(echo_handler) as (_, port):
        client = await wire.connect(port, keepalive_interval=0.05, keepalive_timeout=1)
        await asyncio.sleep(0.5)
        assert not client.is_closing()
        await asyncio.wait_for(client.close(), 5)


async def test_server_idle_timeout_closes_idle_connections_only(wire: Wire) -> None:
    release = asyncio.Event()

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        writer.send_headers({":status": "200"})
        await asyncio.wait_for(release.wait(), 10)
        writer.write_eof()

    async with wire.serving(handler, idle_timeout=0.3) as (_, port):
        busy = await wire.connect(port)
        idle = await wire.connect(port)
        async with busy.request(end_stream=True) as stream:
            await asyncio.wait_for(stream.response_headers(), 5)
            await asyncio.sleep(0.8)
            assert idle.is_closing()  # GOAWAY after 0.3 s without streams
            assert not busy.is_closing()  # an open stream keeps it alive
            release.set()
            await asyncio.wait_for(stream.reader.read(), 5)
        await asyncio.wait_for(busy.wait_closed(), 3)
        await asyncio.wait_for(idle.wait_closed(), 3)
        await asyncio.wait_for(busy.close(), 5)
        await asyncio.wait_for(idle.close(), 5)


async def _read_until_closed(reader: asyncio.StreamReader, limit: float) -> bytes:
    """Read to EOF; a reset or TLS error from the closing server counts as the end too."""
    got = b""
    deadline = time.monotonic() + limit
    while True:
        try:
            left = max(0.01, deadline - time.monotonic())
            chunk = await asyncio.wait_for(reader.read(65536), left)
        except (ConnectionError, ssl.SSLError):
            return got
        if not chunk:
            return got
        got += chunk


async def _until_no_connections(server: aioh2s.Server, limit: float = 3) -> None:
    """The server forgets a connection once the transport is gone; over TLS that waits for the
    peer's close_notify or EOF, a moment after the client saw the end."""
    deadline = time.monotonic() + limit
    while server.connections and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert server.connections == 0


@pytest.mark.parametrize("send", [b"", b"PRI * HTTP/2.0\r\n", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"])
async def test_handshake_timeout(wire: Wire, send: bytes) -> None:
    async with wire.serving(echo_handler, handshake_timeout=0.3) as (server, port):
        reader, writer = await wire.open_raw(port)
        try:
            writer.write(send)
            start = time.monotonic()
            await _read_until_closed(reader, 5)
            assert time.monotonic() - start < 3
        finally:
            writer.close()
        await _until_no_connections(server)


async def test_tls_handshake_timeout_when_the_client_never_says_hello(cert_files: Any) -> None:
    """A TCP connection to a TLS server that never starts the TLS handshake is closed too."""
    wire = Wire("tls", cert_files)
    async with wire.serving(echo_handler, handshake_timeout=0.3) as (server, port):
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        try:
            start = time.monotonic()
            await _read_until_closed(reader, 5)
            assert time.monotonic() - start < 3
        finally:
            writer.close()
        await _until_no_connections(server)


async def test_client_connect_handshake_timeout(wire: Wire) -> None:
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen()
    port = lsock.getsockname()[1]
    try:
        start = time.monotonic()
        with pytest.raises(aioh2s.ConnectError, match="handshake") as info:
            await asyncio.wait_for(
                aioh2s.connect("127.0.0.1", port, handshake_timeout=0.3, **wire.client_options()),
                10,
            )
        if not wire.tls:
            assert isinstance(info.value.__cause__, ConnectionClosed)
        assert time.monotonic() - start < 3
    finally:
        lsock.close()


async def test_peer_settings_changes_are_honoured() -> None:
    """The server lowers MAX_CONCURRENT_STREAMS to 1 and raises the initial window."""
    active = 0
    peak = 0
    pending: list[int] = []

    def on_event(peer, ev):  # type: ignore[no-untyped-def]
        nonlocal active, peak
        if isinstance(ev, h2.events.RequestReceived):
            active += 1
            peak = max(peak, active)
            pending.append(ev.stream_id)
            loop = asyncio.get_running_loop()

            def answer(sid: int = ev.stream_id) -> None:
                nonlocal active
                active -= 1
                peer.respond(sid, b"ok")

            loop.call_later(0.02, answer)

    async with RawH2Server(on_event) as raw:
        client = await aioh2s.connect("127.0.0.1", raw.port)
        peer = raw.peers[0]
        peer.conn.update_settings(
            {
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1_000_000,
            }
        )
        peer.flush()
        for _ in range(100):
            if client._conn.h2.remote_settings.max_concurrent_streams == 1:
                break
            await asyncio.sleep(0.01)

        async def one() -> bytes:
            async with client.request(end_stream=True) as s:
                await s.response_headers()
                return await s.reader.read()

        assert await asyncio.wait_for(asyncio.gather(*(one() for _ in range(5))), 10) == [
            b"ok"
        ] * 5
        assert peak == 1
        assert client._conn.h2.remote_settings.initial_window_size == 1_000_000
        await asyncio.wait_for(client.close(), 5)


# -- the HTTP/1.1 front door ----------------------------------------------------------------------


async def test_plain_http1_request_gets_505_and_close() -> None:
    async with serving(echo_handler) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), 5)  # read() to EOF: the server closes
        writer.close()
        assert data.startswith(b"HTTP/1.1 505 ")
        assert b"HTTP/2" in data


async def test_h2c_upgrade_raw_with_body() -> None:
    async with serving(echo_handler) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        settings = c.initiate_upgrade_connection()
        assert settings is not None
        body = b"upgrade body"
        writer.write(
            b"POST /up HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: " + settings + b"\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101 ")
        writer.write(c.data_to_send())
        got = b""
        trailers = None
        ended = False
        while not ended:
            chunk = await asyncio.wait_for(reader.read(65536), 5)
            assert chunk
            for ev in c.receive_data(chunk):
                if isinstance(ev, h2.events.DataReceived):
                    got += ev.data
                    c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.TrailersReceived):
                    trailers = dict(ev.headers)
                elif isinstance(ev, h2.events.StreamEnded):
                    ended = True
            writer.write(c.data_to_send())
        assert got == body
        assert trailers is not None and trailers[b"x-len"] == str(len(body)).encode()
        writer.close()


async def test_h2c_upgrade_with_curl() -> None:
    curl = require("curl")

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        writer.send_headers({":status": "200"})
        writer.write(b"hello over " + reader.headers[":scheme"].encode())
        writer.write_eof()

    async with serving(handler) as (_, port):
        proc = await asyncio.create_subprocess_exec(
            curl, "-sS", "--http2", "--max-time", "10",
            "-w", "\n%{http_version}", f"http://127.0.0.1:{port}/",
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 15)
        assert proc.returncode == 0, err
        body, _, version = out.decode().rpartition("\n")
        assert body == "hello over http"
        assert version == "2"


# -- TLS ------------------------------------------------------------------------------------------


async def test_alpn_mismatch_is_a_clear_error(cert_files: Any) -> None:
    cert, key, cafile = cert_files
    # A TLS server that only offers http/1.1
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(cert, key)
    sctx.set_alpn_protocols(["http/1.1"])

    async def on_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(r.read(), 5)
        except (OSError, asyncio.TimeoutError):
            pass
        w.close()

    srv = await asyncio.start_server(on_conn, "127.0.0.1", 0, ssl=sctx)
    port = srv.sockets[0].getsockname()[1]
    try:
        with pytest.raises(aioh2s.ALPNError, match="ALPN"):
            await asyncio.wait_for(
                aioh2s.connect(
                    "127.0.0.1", port, ssl=aioh2s.client_ssl_context(cafile),
                    server_hostname="localhost",
                ),
                10,
            )
    finally:
        srv.close()
        await asyncio.wait_for(srv.wait_closed(), 5)

    # And our TLS server answers an HTTP/1.1 client that does not offer h2 with a 505, then
    # closes (see tests/test_tls.py for the rest of the TLS front door).
    server = await aioh2s.start_server(
        echo_handler, "127.0.0.1", 0, ssl=aioh2s.server_ssl_context(cert, key)
    )
    port = server.sockets[0].getsockname()[1]
    cctx = ssl.create_default_context(cafile=cafile)
    cctx.set_alpn_protocols(["http/1.1"])
    try:
        r, w = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=cctx, server_hostname="localhost"), 5
        )
        try:
            w.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            answer = await _read_until_closed(r, 5)
            assert answer.startswith(b"HTTP/1.1 505 HTTP Version Not Supported\r\n"), answer
        finally:
            w.close()
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), 10)


async def test_roundtrip_ours_both_sides(wire: Wire) -> None:
    seen: list[Any] = []

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        seen.append(writer.get_extra_info("ssl_object"))
        await echo_handler(reader, writer)

    async with wire.serving(handler) as (_, port):
        client = await wire.connect(port)
        try:
            async with client.request({":method": "POST"}) as stream:
                stream.writer.write(b"secret")
                stream.writer.write_eof()
                await asyncio.wait_for(stream.response_headers(), 5)
                assert await asyncio.wait_for(stream.reader.read(), 5) == b"secret"
                ssl_object = stream.writer.get_extra_info("ssl_object")
                if wire.tls:
                    assert ssl_object.selected_alpn_protocol() == "h2"
                    assert seen[0].selected_alpn_protocol() == "h2"
                else:
                    assert ssl_object is None and seen == [None]
            assert client._authority == f"127.0.0.1:{port}"
        finally:
            await asyncio.wait_for(client.close(), 5)


async def test_graceful_close_delivers_responses_still_in_the_transport(wire: Wire) -> None:
    """Review regression: a response already handed to the transport must reach a slow reader
    after server.close(grace=30); the 1 s hard abort is for abusive peers only."""
    size = 3_000_000
    handler_done = asyncio.Event()

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        # A slow path: a small kernel send buffer keeps the response in our transport buffer.
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        writer.send_headers({":status": "200"})
        for _ in range(size // 100_000):
            writer.write(b"z" * 100_000)
            await writer.drain()
        writer.write_eof()
        await writer.drain()
        handler_done.set()

    server = await aioh2s.start_server(handler, "127.0.0.1", 0, **wire.server_options())
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    sock.setblocking(False)
    got = 0
    ended = False
    goaway = None
    writer: asyncio.StreamWriter | None = None
    try:
        await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), 5)
        # A small StreamReader limit: the transport stops reading while 32 KiB are unread.
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(sock=sock, limit=16384, **wire.raw_client_options()), 5
        )
        c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        c.initiate_connection()
        c.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
        c.increment_flow_control_window(2**31 - 1 - 65535)
        c.send_headers(1, GET, end_stream=True)
        writer.write(c.data_to_send())
        closed = False
        start = loop.time()
        while loop.time() - start < 20 and not (ended and goaway is not None):
            if handler_done.is_set() and not closed:
                closed = True
                server.close(grace=30)
            try:
                data = await asyncio.wait_for(reader.read(16384), 1)
            except asyncio.TimeoutError:
                continue
            if not data:
                break
            for ev in c.receive_data(data):
                if isinstance(ev, h2.events.DataReceived):
                    got += len(ev.data)
                elif isinstance(ev, h2.events.StreamEnded):
                    ended = True
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    goaway = ev
            await asyncio.sleep(0.02)  # a slow reader
    finally:
        if writer is not None:
            writer.close()
        else:
            sock.close()
    assert got == size and ended
    assert goaway is not None and goaway.error_code == 0
    await asyncio.wait_for(server.wait_closed(), 10)


# -- TLS teardown paths (each with its h2c twin) ---------------------------------------------------


async def _peer_vanishes(wire: Wire, when: str) -> None:
    """A non-aioh2s client aborts its transport (no GOAWAY, no close_notify) while idle, with a
    request open, or while the server streams a response into full buffers. The server must
    notice, fail the handler's reads and drains with ConnectionClosed, log nothing at WARNING+
    (no "internal error in the connection reader task", no "socket.send() raised exception")
    and close within seconds."""
    handler_saw: list[BaseException] = []
    handler_in = asyncio.Event()

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        writer.send_headers({":status": "200"})
        await asyncio.wait_for(writer.drain(), 5)
        if when == "idle":
            writer.write_eof()
            return
        handler_in.set()
        try:
            if when == "request-open":
                await asyncio.wait_for(reader.read(), 10)  # the client never ends its body
            else:
                for _ in range(1000):  # bounded: at most 100 MB
                    writer.write(b"x" * 100_000)
                    await asyncio.wait_for(writer.drain(), 10)
        except (aioh2s.H2Error, asyncio.TimeoutError) as e:
            handler_saw.append(e)
            raise

    server = await aioh2s.start_server(handler, "127.0.0.1", 0, **wire.server_options())
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await wire.open_raw(port)
        try:
            c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            c.initiate_connection()
            if when == "sending":  # windows wide open: the server may fill every buffer
                c.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
                c.increment_flow_control_window(2**31 - 1 - 65535)
            opened = when == "request-open"
            c.send_headers(1, POST if opened else GET, end_stream=not opened)
            writer.write(c.data_to_send())
            got = 0
            done = False
            while not done:  # response headers / the whole response / 200 kB of it
                data = await asyncio.wait_for(reader.read(65536), 5)
                assert data, "the server closed first"
                for ev in c.receive_data(data):
                    if isinstance(ev, h2.events.ResponseReceived) and when == "request-open":
                        done = True
                    elif isinstance(ev, h2.events.DataReceived):
                        got += len(ev.data)
                        done = done or (when == "sending" and got >= 200_000)
                    elif isinstance(ev, h2.events.StreamEnded):
                        done = True
                writer.write(c.data_to_send())
            if when != "idle":
                await asyncio.wait_for(handler_in.wait(), 5)
            if when == "sending":
                await asyncio.sleep(0.3)  # not reading: the server's buffers fill up
            assert server.connections == 1
            writer.transport.abort()
        finally:
            writer.close()
        for _ in range(500):  # the server notices the reset: at most 5 s
            if server.connections == 0 and (handler_saw or when == "idle"):
                break
            await asyncio.sleep(0.01)
        assert server.connections == 0
        if when != "idle":
            assert len(handler_saw) == 1, handler_saw
            assert isinstance(handler_saw[0], ConnectionClosed), handler_saw
    finally:
        server.close()
        start = time.monotonic()
        await asyncio.wait_for(server.wait_closed(), 5)
        assert time.monotonic() - start < 3


async def test_tls_peer_vanishes_with_a_request_open(cert_files: Any) -> None:
    await _peer_vanishes(Wire("tls", cert_files), "request-open")


async def test_tls_peer_vanishes_while_the_server_sends(cert_files: Any) -> None:
    await _peer_vanishes(Wire("tls", cert_files), "sending")


async def test_tls_peer_vanishes_while_idle(cert_files: Any) -> None:
    await _peer_vanishes(Wire("tls", cert_files), "idle")


async def test_h2c_peer_vanishes_with_a_request_open() -> None:
    await _peer_vanishes(Wire("h2c"), "request-open")


async def test_h2c_peer_vanishes_while_the_server_sends() -> None:
    await _peer_vanishes(Wire("h2c"), "sending")


async def test_h2c_peer_vanishes_while_idle() -> None:
    await _peer_vanishes(Wire("h2c"), "idle")


async def _client_outlives_server_idle_timeout(wire: Wire) -> None:
    """An aioh2s client stays connected, idle, past the server's idle_timeout: the server's
    GOAWAY and close reach it, wait_closed() and close() return, nothing is logged."""
    async with wire.serving(echo_handler, idle_timeout=0.5) as (server, port):
        client = await wire.connect(port)
        try:
            async with client.request({":method": "POST"}) as stream:
                stream.writer.write(b"once")
                stream.writer.write_eof()
                assert await asyncio.wait_for(stream.reader.read(), 5) == b"once"
            start = time.monotonic()
            await asyncio.wait_for(client.wait_closed(), 5)
            assert 0.3 < time.monotonic() - start < 4
            assert client.is_closing()
            with pytest.raises(ConnectionClosed):
                async with client.request():
                    pass
        finally:
            await asyncio.wait_for(client.close(), 5)
        await _until_no_connections(server)


async def test_tls_client_outlives_server_idle_timeout(cert_files: Any) -> None:
    await _client_outlives_server_idle_timeout(Wire("tls", cert_files))


async def test_h2c_client_outlives_server_idle_timeout() -> None:
    await _client_outlives_server_idle_timeout(Wire("h2c"))


async def _server_closed_while_a_request_is_open(wire: Wire) -> None:
    """server.close(grace=0.5) while an aioh2s client's request is open and its handler is
    blocked: the stream is reset at the grace deadline, every side finishes within seconds."""
    handler_in = asyncio.Event()

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        writer.send_headers({":status": "200"})
        writer.write(b"partial")
        await writer.drain()
        handler_in.set()
        await asyncio.wait_for(reader.read(), 10)  # the client never ends its body

    server = await aioh2s.start_server(handler, "127.0.0.1", 0, **wire.server_options())
    port = server.sockets[0].getsockname()[1]
    client = await wire.connect(port)
    try:
        async with client.request({":method": "POST"}) as stream:
            assert (await asyncio.wait_for(stream.response_headers(), 5))[":status"] == "200"
            assert await asyncio.wait_for(stream.reader.readexactly(7), 5) == b"partial"
            await asyncio.wait_for(handler_in.wait(), 5)
            start = time.monotonic()
            server.close(grace=0.5)
            await asyncio.wait_for(server.wait_closed(), 5)
            assert time.monotonic() - start < 4
            with pytest.raises((StreamReset, ConnectionClosed)):
                await asyncio.wait_for(stream.reader.read(), 5)
        await asyncio.wait_for(client.wait_closed(), 5)
        assert client.is_closing()
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), 10)
        await asyncio.wait_for(client.close(), 5)


async def test_tls_server_closed_while_a_request_is_open(cert_files: Any) -> None:
    await _server_closed_while_a_request_is_open(Wire("tls", cert_files))


async def test_h2c_server_closed_while_a_request_is_open() -> None:
    await _server_closed_while_a_request_is_open(Wire("h2c"))



async def test_an_idle_close_of_a_peer_that_neither_reads_nor_closes_takes_linger(
    wire: Wire,
) -> None:
    """Closed for idling with nothing left to send: gone after ``linger``, not ``grace``.

    The peer sends its preface and then nothing, and never closes. The idle close's PING gets
    no ACK (1 s at most), the final GOAWAY goes out, and once the peer's TCP has acknowledged
    it and the peer has been quiet for ``linger``, the connection ends (over TLS with
    close_notify first); it used to wait out the whole grace period (30 s) over cleartext,
    which kept connections shed near the connection cap alive as long. Linux only: elsewhere
    the kernel's send queue cannot be read, and the grace period still bounds it.
    """
    if not sys.platform.startswith("linux"):
        pytest.skip("reads the kernel's send queue (SIOCOUTQ), Linux only")
    async with wire.serving(echo_handler, idle_timeout=0.3, linger=0.5, grace=30) as (srv, port):
        _reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, **wire.raw_client_options())
        try:
            empty_settings = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
            writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + empty_settings)
            t0 = time.monotonic()
            while srv._connections or time.monotonic() - t0 < 0.1:
                assert time.monotonic() - t0 < 10, "still served 10 s after idling"
                await asyncio.sleep(0.05)
            elapsed = time.monotonic() - t0
        finally:
            writer.close()
    assert 0.3 <= elapsed < 0.3 + 1.0 + 0.5 + 2.0, elapsed
