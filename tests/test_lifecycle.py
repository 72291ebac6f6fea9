"""Connection lifecycle (issue 3): graceful GOAWAY both ways, abrupt close, ping, keepalive,
idle and handshake timeouts, SETTINGS changes, and the HTTP/1.1 front door (h2c Upgrade / 505)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time

import h2.events
import h2.settings
import pytest

import aioh2s
from aioh2s import ConnectionClosed, ConnectionTerminated, StreamReset
from helpers import client_for, echo_handler, require, serving
from rawh2 import RawH2Server

# -- graceful shutdown ------------------------------------------------------------------------


async def test_server_close_lets_inflight_streams_finish() -> None:
    release = asyncio.Event()
    saw_closing: list[bool] = []

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        writer.send_headers({":status": "200"})
        await release.wait()
        saw_closing.append(writer.connection.is_closing())
        writer.write(b"finished")
        writer.write_eof()

    server = await aioh2s.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = await aioh2s.connect("127.0.0.1", port)
    async with client.request(end_stream=True) as stream:
        await stream.response_headers()
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
            await aioh2s.connect("127.0.0.1", port)
        release.set()
        assert await asyncio.wait_for(stream.reader.read(), 5) == b"finished"
    await asyncio.wait_for(closed, 5)
    assert saw_closing == [True]
    await asyncio.wait_for(client._conn.wait_closed(), 5)
    assert client._conn.closed


async def test_server_close_grace_resets_what_is_left() -> None:
    cancelled = asyncio.Event()

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        writer.send_headers({":status": "200"})
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    server = await aioh2s.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = await aioh2s.connect("127.0.0.1", port)
    async with client.request(end_stream=True) as stream:
        await stream.response_headers()
        start = time.monotonic()
        server.close(grace=0.3)
        await asyncio.wait_for(server.wait_closed(), 5)
        assert time.monotonic() - start < 3
        with pytest.raises((StreamReset, ConnectionClosed)):
            await asyncio.wait_for(stream.reader.read(), 5)
    assert cancelled.is_set()
    await client.close()


async def test_client_close_lets_open_requests_finish() -> None:
    release = asyncio.Event()

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        writer.send_headers({":status": "200"})
        await release.wait()
        writer.write(b"done")
        writer.write_eof()

    async with serving(handler) as (_, port):
        client = await aioh2s.connect("127.0.0.1", port)
        async with client.request(end_stream=True) as stream:
            await stream.response_headers()
            closing = asyncio.ensure_future(client.close())
            await asyncio.sleep(0.05)
            assert client.is_closing() and not closing.done()
            with pytest.raises(ConnectionClosed):
                async with client.request():
                    pass
            release.set()
            assert await asyncio.wait_for(stream.reader.read(), 5) == b"done"
        await asyncio.wait_for(closing, 5)


async def test_received_goaway_fails_higher_streams_as_retry_safe() -> None:
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

    async with RawH2Server(on_event) as raw:
        client = await aioh2s.connect("127.0.0.1", raw.port)
        ctxs = [client.request(end_stream=True) for _ in range(3)]
        streams = [await c.__aenter__() for c in ctxs]
        try:
            with pytest.raises(ConnectionTerminated) as ei:
                await asyncio.wait_for(streams[2].response_headers(), 5)
            assert ei.value.retry_safe
            assert ei.value.last_stream_id == 3
            h = await asyncio.wait_for(streams[1].response_headers(), 5)
            assert h[":status"] == "200"
            assert await streams[1].reader.read() == b"three"
            assert client.is_closing()
            with pytest.raises(ConnectionClosed) as e2:
                async with client.request():
                    pass
            assert e2.value.retry_safe
        finally:
            for c in ctxs:
                await c.__aexit__(None, None, None)
            client.abort()


async def test_abrupt_tcp_close_fails_waiters_promptly() -> None:
    def on_event(peer, ev):  # type: ignore[no-untyped-def]
        if isinstance(ev, h2.events.RequestReceived):
            peer.conn.send_headers(ev.stream_id, [(":status", "200")])
            peer.flush()
            asyncio.get_running_loop().call_later(0.1, peer.transport.abort)

    async with RawH2Server(on_event) as raw:
        client = await aioh2s.connect("127.0.0.1", raw.port)
        async with client.request({":method": "POST"}) as stream:
            await stream.response_headers()
            stream.writer.write(b"x" * 5_000_000)
            start = time.monotonic()
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(stream.reader.read(), 5)
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(stream.writer.drain(), 5)
            assert time.monotonic() - start < 2
        assert client.is_closing()


# -- ping, keepalive, timeouts ------------------------------------------------------------------


async def test_ping_round_trip_client_and_server_side() -> None:
    rtts: list[float] = []

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        rtts.append(await writer.connection.ping(timeout=5))
        writer.send_headers({":status": "200"}, end_stream=True)

    async with client_for(handler) as (client, _):
        results = await asyncio.gather(*(client.ping(timeout=5) for _ in range(10)))
        assert all(0 < r < 5 for r in results)
        async with client.request(end_stream=True) as stream:
            await stream.response_headers()
    assert len(rtts) == 1 and 0 < rtts[0] < 5


async def test_keepalive_closes_when_pings_go_unanswered() -> None:
    async with RawH2Server(lambda p, e: None, auto_ack_pings=False) as raw:
        client = await aioh2s.connect(
            "127.0.0.1", raw.port, keepalive_interval=0.1, keepalive_timeout=0.2
        )
        start = time.monotonic()
        await asyncio.wait_for(client._conn.wait_closed(), 5)
        assert time.monotonic() - start < 2
        assert raw.pings_seen >= 1
        assert "keepalive" in str(client._conn.error)


async def test_keepalive_keeps_a_healthy_idle_connection() -> None:
    async with serving(echo_handler) as (_, port):
        client = await aioh2s.connect(
            "127.0.0.1", port, keepalive_interval=0.05, keepalive_timeout=1
        )
        await asyncio.sleep(0.5)
        assert not client.is_closing()
        await client.close()


async def test_server_idle_timeout_closes_idle_connections_only() -> None:
    release = asyncio.Event()

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        writer.send_headers({":status": "200"})
        await release.wait()
        writer.write_eof()

    async with serving(handler, idle_timeout=0.3) as (_, port):
        busy = await aioh2s.connect("127.0.0.1", port)
        idle = await aioh2s.connect("127.0.0.1", port)
        async with busy.request(end_stream=True) as stream:
            await stream.response_headers()
            await asyncio.sleep(0.8)
            assert idle.is_closing()  # GOAWAY after 0.3 s without streams
            assert not busy.is_closing()  # an open stream keeps it alive
            release.set()
            await stream.reader.read()
        await asyncio.wait_for(busy._conn.wait_closed(), 3)
        await idle.close()


@pytest.mark.parametrize("send", [b"", b"PRI * HTTP/2.0\r\n", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"])
async def test_handshake_timeout(send: bytes) -> None:
    async with serving(echo_handler, handshake_timeout=0.3) as (server, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(send)
        start = time.monotonic()
        got = b""
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), 5)
            if not chunk:
                break
            got += chunk
        assert time.monotonic() - start < 3
        writer.close()
        assert server.connections == 0


async def test_client_connect_handshake_timeout() -> None:
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen()
    port = lsock.getsockname()[1]
    try:
        start = time.monotonic()
        with pytest.raises(ConnectionClosed, match="handshake"):
            await aioh2s.connect("127.0.0.1", port, handshake_timeout=0.3)
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
        await client.close()


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
    import base64

    import h2.config
    import h2.connection

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
        del base64
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


async def test_alpn_mismatch_is_a_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    trustme = pytest.importorskip("trustme")
    import ssl

    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    # A TLS server that only offers http/1.1
    sctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(sctx)
    sctx.set_alpn_protocols(["http/1.1"])

    async def on_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(r.read(), 5)
        except (OSError, asyncio.TimeoutError, asyncio.CancelledError):
            pass
        w.close()

    srv = await asyncio.start_server(on_conn, "127.0.0.1", 0, ssl=sctx)
    port = srv.sockets[0].getsockname()[1]
    cafile = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    try:
        with pytest.raises(aioh2s.ALPNError, match="ALPN"):
            await aioh2s.connect(
                "127.0.0.1", port, ssl=aioh2s.client_ssl_context(str(cafile)),
                server_hostname="localhost",
            )
    finally:
        srv.close()
        await srv.wait_closed()

    # And our TLS server closes a client that does not offer h2.
    server = await aioh2s.start_server(
        echo_handler, "127.0.0.1", 0,
        ssl=aioh2s.server_ssl_context(*_write_cert(ca, cert, tmp_path)),
    )
    port = server.sockets[0].getsockname()[1]
    cctx = ssl.create_default_context(cafile=str(cafile))
    cctx.set_alpn_protocols(["http/1.1"])
    try:
        r, w = await asyncio.open_connection(
            "127.0.0.1", port, ssl=cctx, server_hostname="localhost"
        )
        assert await asyncio.wait_for(r.read(), 5) == b""
        w.close()
    except (ConnectionError, ssl.SSLError):
        pass  # closing during/after the handshake is also a clear refusal
    finally:
        server.close()
        await server.wait_closed()


def _write_cert(ca, cert, tmp_path):  # type: ignore[no-untyped-def]
    certfile = tmp_path / "cert.pem"
    keyfile = tmp_path / "key.pem"
    cert.private_key_pem.write_to_path(str(keyfile))
    with open(certfile, "wb") as f:
        for blob in cert.cert_chain_pems:
            f.write(blob.bytes())
    return str(certfile), str(keyfile)


async def test_tls_roundtrip_ours_both_sides(tmp_path) -> None:  # type: ignore[no-untyped-def]
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    cafile = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    server = await aioh2s.start_server(
        echo_handler, "127.0.0.1", 0,
        ssl=aioh2s.server_ssl_context(*_write_cert(ca, cert, tmp_path)),
    )
    port = server.sockets[0].getsockname()[1]
    try:
        client = await aioh2s.connect(
            "127.0.0.1", port, ssl=aioh2s.client_ssl_context(str(cafile)),
            server_hostname="localhost",
        )
        async with client.request({":method": "POST"}) as stream:
            stream.writer.write(b"secret")
            stream.writer.write_eof()
            await stream.response_headers()
            assert await stream.reader.read() == b"secret"
            assert stream.writer.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
        assert client._authority == f"127.0.0.1:{port}"
        await client.close()
    finally:
        server.close()
        await server.wait_closed()



async def test_graceful_close_delivers_responses_still_in_the_transport() -> None:
    """Review regression: a response already handed to the transport must reach a slow reader
    after server.close(grace=30); the 1 s hard abort is for abusive peers only."""
    import h2.config
    import h2.connection

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

    server = await aioh2s.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    sock.setblocking(False)
    got = 0
    ended = False
    goaway = None
    try:
        await loop.sock_connect(sock, ("127.0.0.1", port))
        c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        c.initiate_connection()
        c.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
        c.increment_flow_control_window(2**31 - 1 - 65535)
        hdrs = [(":method", "GET"), (":scheme", "http"), (":authority", "x"), (":path", "/")]
        c.send_headers(1, hdrs, end_stream=True)
        await loop.sock_sendall(sock, c.data_to_send())
        closed = False
        start = loop.time()
        while loop.time() - start < 20 and not (ended and goaway is not None):
            if handler_done.is_set() and not closed:
                closed = True
                server.close(grace=30)
            try:
                data = await asyncio.wait_for(loop.sock_recv(sock, 16384), 1)
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
        sock.close()
    assert got == size and ended
    assert goaway is not None and goaway.error_code == 0
    await asyncio.wait_for(server.wait_closed(), 10)
