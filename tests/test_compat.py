"""aioh2s.compat: aioh2 0.2.3's API on aioh2s, on real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

import aioh2s
import aioh2s.compat as aioh2

Handler = Callable[[aioh2.H2Protocol], Awaitable[None]]


@contextlib.asynccontextmanager
async def pair(
    on_connected: Handler, client_kw: dict[str, Any] | None = None, **server_kw: Any
) -> AsyncIterator[tuple[aioh2s.Server, aioh2.H2Protocol]]:
    """A compat server running ``on_connected`` per connection, and a compat client to it."""
    server = await aioh2.start_server(on_connected, "127.0.0.1", 0, **server_kw)
    port = server.sockets[0].getsockname()[1]
    client = await aioh2.open_connection("127.0.0.1", port, **(client_kw or {}))
    try:
        yield server, client
    finally:
        client.close_connection()
        await asyncio.wait_for(client.wait_closed(), 5)
        server.close()
        await asyncio.wait_for(server.wait_closed(), 10)


async def hello_server(proto: aioh2.H2Protocol) -> None:
    """aioh2's README server, written with aioh2 0.2.3's own calls."""
    while True:
        stream_id, headers = await proto.recv_request()
        await proto.start_response(stream_id, {":status": "200"})
        await proto.send_data(stream_id, b"hello, ")
        name = await proto.read_stream(stream_id, -1)
        await proto.send_data(stream_id, name)
        await proto.send_trailers(stream_id, {"len": str(len(name))})


# -- the aioh2 README example of issue 4, verbatim but for the import ---------------------------


async def test_issue_readme_example_verbatim() -> None:
    # fmt: off
    async def on_connected(proto):
        while True:
            stream_id, headers = await proto.recv_request()
            await proto.send_headers(stream_id, {':status': '200'})
            await proto.send_data(stream_id, b'hello, ')
            resp = await proto.read_stream(stream_id, -1)
            await proto.send_data(stream_id, resp)
            await proto.send_headers(stream_id, {'len': str(len(resp))}, end_stream=True)

    server = await aioh2.start_server(
        lambda p: asyncio.get_event_loop().create_task(on_connected(p)), port=0, concurrency=3)
    port = server.sockets[0].getsockname()[1]
    client = await aioh2.open_connection('127.0.0.1', port)
    stream_id = await client.start_request({':method': 'GET', ':path': '/index.html'})
    await client.send_data(stream_id, b'world', end_stream=True)
    headers = await client.recv_response(stream_id)
    resp = await client.read_stream(stream_id, -1)
    trailers = await client.recv_trailers(stream_id)
    # fmt: on

    assert headers == [(":status", "200")]
    assert all(type(n) is str and type(v) is str for n, v in headers)
    assert resp == b"hello, world"
    assert trailers == [("len", "5")]
    # Every socket of a port=0 server on all interfaces shares the port the example reads.
    assert {s.getsockname()[1] for s in server.sockets} == {port}
    client.close_connection()
    await asyncio.wait_for(client.wait_closed(), 5)
    server.close()
    await asyncio.wait_for(server.wait_closed(), 10)


async def test_aioh2_own_readme_example() -> None:
    async with pair(hello_server, concurrency=3, client_kw={"functional_timeout": 0.1}) as (
        _,
        client,
    ):
        await asyncio.sleep(0.15)
        rtt = await client.wait_functional()
        assert rtt is not None and 0 < rtt < 1
        stream_id = await client.start_request({":method": "GET", ":path": "/index.html"})
        await client.send_data(stream_id, b"world", end_stream=True)
        assert await client.recv_response(stream_id) == [(":status", "200")]
        assert await client.read_stream(stream_id, -1) == b"hello, world"
        assert await client.recv_trailers(stream_id) == [("len", "5")]


# -- shapes -----------------------------------------------------------------------------------


async def test_request_and_response_header_shapes() -> None:
    seen: list[tuple[int, list[tuple[str, str]]]] = []

    async def on_connected(proto: aioh2.H2Protocol) -> None:
        while True:
            req = await proto.recv_request()
            seen.append(req)
            stream_id, _ = req
            await proto.start_response(
                stream_id,
                [(":status", "201"), ("x-a", "1"), ("x-a", "2"), ("content-type", "text/plain")],
                end_stream=True,
            )

    async with pair(on_connected) as (_, client):
        sid = await client.start_request(
            [(":method", "POST"), (":path", "/p?q=1"), ("X-Custom", "é")], end_stream=True
        )
        headers = await client.recv_response(sid)
        assert headers == [
            (":status", "201"),
            ("x-a", "1"),
            ("x-a", "2"),
            ("content-type", "text/plain"),
        ]
        assert type(headers) is list and all(type(h) is tuple for h in headers)
        assert await client.read_stream(sid, -1) == b""
        assert await client.recv_trailers(sid) == {}  # aioh2 returned {} without trailers

    ((stream_id, req_headers),) = seen
    assert type(seen[0]) is tuple and stream_id == sid == 1
    assert type(req_headers) is list
    d = dict(req_headers)
    assert d[":method"] == "POST" and d[":path"] == "/p?q=1" and d[":scheme"] == "http"
    assert d[":authority"].startswith("127.0.0.1:")
    assert d["x-custom"] == "é"  # names lowercased on the wire, values decoded as utf-8


# -- each API method ------------------------------------------------------------------------------


async def test_read_stream_sizes() -> None:
    body = bytes(range(256)) * 400  # 102,400 bytes

    async def on_connected(proto: aioh2.H2Protocol) -> None:
        while True:
            sid, _ = await proto.recv_request()
            await proto.start_response(sid, {":status": "200"})
            for i in range(0, len(body), 10_000):
                await proto.send_data(sid, body[i : i + 10_000])
            await proto.end_stream(sid)

    async with pair(on_connected) as (_, client):
        sid = await client.start_request({":path": "/"}, end_stream=True)
        await client.recv_response(sid)
        assert await client.read_stream(sid, 0) == b""
        first = await client.read_stream(sid, 1)
        assert first == body[:1]
        got = first + await client.read_stream(sid, 4999)
        assert got == body[:5000]  # n > 0 waits for exactly n bytes while the body lasts
        chunk = await client.read_stream(sid)  # size=None: one chunk as it arrived
        assert 0 < len(chunk) and body.startswith(got + chunk)
        got += chunk
        while len(got) < len(body) - 777:
            part = await client.read_stream(sid, 777)
            assert len(part) == 777
            got += part
        tail = await client.read_stream(sid, 100_000)  # fewer than n: only at the end
        assert got + tail == body and len(tail) < 100_000
        assert await client.read_stream(sid) == b""
        assert await client.read_stream(sid, 10) == b""
        assert await client.read_stream(sid, -1) == b""
        assert await client.recv_trailers(sid) == {}

        sid = await client.start_request({":path": "/"}, end_stream=True)
        chunks = []
        while True:
            c = await client.read_stream(sid)
            if not c:
                break
            chunks.append(c)
        assert b"".join(chunks) == body and len(chunks) > 1


async def test_send_headers_trailers_and_1xx() -> None:
    async def on_connected(proto: aioh2.H2Protocol) -> None:
        while True:
            sid, headers = await proto.recv_request()
            path = dict(headers)[":path"]
            if path == "/early-hints":
                await proto.send_headers(sid, {":status": "103", "link": "</a.css>"})
                await proto.send_headers(sid, {":status": "200"})
                await proto.send_data(sid, b"body")
                await proto.send_headers(sid, [("x-t", "1"), ("x-t", "2")], end_stream=True)
            elif path == "/bad-trailers":
                await proto.send_headers(sid, {":status": "200"})
                try:
                    await proto.send_headers(sid, {"x": "y"})
                except ValueError as e:
                    await proto.send_data(sid, str(e).encode(), end_stream=True)
            else:
                body = await proto.read_stream(sid, -1)
                trailers = await proto.recv_trailers(sid)
                await proto.send_headers(sid, {":status": "200"}, end_stream=False)
                await proto.send_data(sid, body)
                await proto.send_trailers(sid, trailers if trailers else {"none": "1"})

    async with pair(on_connected) as (_, client):
        sid = await client.start_request({":path": "/early-hints"}, end_stream=True)
        assert await client.recv_response(sid) == [(":status", "200")]  # 1xx skipped
        assert await client.read_stream(sid, -1) == b"body"
        assert await client.recv_trailers(sid) == [("x-t", "1"), ("x-t", "2")]

        sid = await client.start_request({":path": "/bad-trailers"}, end_stream=True)
        await client.recv_response(sid)
        assert b"end_stream=True" in await client.read_stream(sid, -1)

        # Client-side trailers: send_trailers and send_headers(..., end_stream=True).
        sid = await client.start_request({":method": "POST", ":path": "/echo"})
        await client.send_data(sid, b"abc")
        await client.send_trailers(sid, {"x-req": "t1"})
        await client.recv_response(sid)
        assert await client.read_stream(sid, -1) == b"abc"
        assert await client.recv_trailers(sid) == [("x-req", "t1")]

        sid = await client.start_request({":method": "POST", ":path": "/echo"})
        await client.send_data(sid, b"def")
        await client.send_headers(sid, {"x-req": "t2"}, end_stream=True)
        assert await client.read_stream(sid, -1) == b"def"
        assert await client.recv_trailers(sid) == [("x-req", "t2")]

        sid = await client.start_request({":method": "POST", ":path": "/echo"})
        await client.send_data(sid, b"ghi")
        await client.end_stream(sid)
        assert await client.read_stream(sid, -1) == b"ghi"
        assert await client.recv_trailers(sid) == [("none", "1")]


async def test_send_exception() -> None:
    assert issubclass(aioh2.SendException, aioh2.AIOH2Exception)
    async with pair(hello_server) as (_, client):
        sid = await client.start_request({":path": "/"})
        await client.send_data(sid, b"x", end_stream=True)
        with pytest.raises(aioh2.SendException) as ei:
            await client.send_data(sid, b"after the end")
        assert ei.value.data == b"after the end"
        assert await client.read_stream(sid, -1) == b"hello, x"

        with pytest.raises(aioh2.SendException) as ei:
            await client.send_data(999, b"no such stream")
        assert ei.value.data == b"no such stream"
        with pytest.raises(aioh2.AIOH2Exception):
            await client.read_stream(999)

        # A request without a body (end_stream=True) cannot take data either.
        sid = await client.start_request({":path": "/"}, end_stream=True)
        with pytest.raises(aioh2.SendException):
            await client.send_data(sid, b"late")
        assert await client.read_stream(sid, -1) == b"hello, "


async def test_send_exception_when_peer_goes_away() -> None:
    requests: asyncio.Queue[int] = asyncio.Queue()

    async def on_connected(proto: aioh2.H2Protocol) -> None:
        sid, _ = await proto.recv_request()
        await requests.put(sid)
        await proto.start_response(sid, {":status": "200"})
        await proto.read_stream(sid, 10)
        proto.close_connection()  # abrupt, as aioh2's transport.close()

    async with pair(on_connected) as (_, client):
        sid = await client.start_request({":method": "POST", ":path": "/"})
        await requests.get()
        with pytest.raises(aioh2.SendException) as ei:
            # 16 MiB cannot fit in the windows: the send is pending when the connection dies.
            await asyncio.wait_for(client.send_data(sid, b"z" * (16 << 20)), 10)
        assert len(ei.value.data) == 16 << 20
        # The server's close resets what is open (CANCEL) and ends the connection.
        assert isinstance(ei.value.__cause__, (aioh2s.StreamReset, aioh2s.ConnectionClosed))
        with pytest.raises((aioh2s.StreamReset, aioh2s.ConnectionClosed)):
            await client.read_stream(sid, -1)
        with pytest.raises((aioh2s.StreamReset, aioh2s.ConnectionClosed)):
            await client.recv_trailers(sid)


async def test_upload_backpressure_and_read_stream_n() -> None:
    body = hashlib.sha256(b"seed").digest() * (8 << 15)  # 8 MiB
    go = asyncio.Event()
    result: dict[str, Any] = {}

    async def on_connected(proto: aioh2.H2Protocol) -> None:
        sid, _ = await proto.recv_request()
        await go.wait()  # do not read for a while
        h = hashlib.sha256()
        n = 0
        while True:
            part = await proto.read_stream(sid, 65_536)
            if not part:
                break
            assert len(part) == 65_536 or n + len(part) == len(body)
            h.update(part)
            n += len(part)
        result["sha"] = h.hexdigest()
        await proto.start_response(sid, {":status": "200"}, end_stream=True)

    async with pair(on_connected) as (_, client):
        sid = await client.start_request({":method": "POST", ":path": "/upload"})
        send = asyncio.ensure_future(client.send_data(sid, body, end_stream=True))
        await asyncio.sleep(0.5)
        assert not send.done()  # the server buffers at most its windows: the sender waits
        go.set()
        await asyncio.wait_for(send, 30)
        assert await client.recv_response(sid) == [(":status", "200")]
        assert result["sha"] == hashlib.sha256(body).hexdigest()


async def test_response_before_request_body_is_read_frees_the_stream() -> None:
    async def on_connected(proto: aioh2.H2Protocol) -> None:
        while True:
            sid, _ = await proto.recv_request()
            # Answer without reading the (large) request body at all.
            await proto.start_response(sid, {":status": "413"}, end_stream=True)

    # concurrency=1: the second request gets a slot only if the first stream was freed.
    async with pair(on_connected, concurrency=1) as (_, client):
        sid = await client.start_request({":method": "POST", ":path": "/big"})
        send = asyncio.ensure_future(client.send_data(sid, b"u" * (8 << 20)))
        assert await client.recv_response(sid) == [(":status", "413")]
        assert await client.read_stream(sid, -1) == b""
        # The server stopped the upload (RST_STREAM NO_ERROR after its complete response).
        with pytest.raises(aioh2.SendException):
            await asyncio.wait_for(send, 10)
        with pytest.raises(aioh2.SendException):
            await client.send_data(sid, b"more")
        sid2 = await asyncio.wait_for(client.start_request({":path": "/"}, end_stream=True), 10)
        assert await client.recv_response(sid2) == [(":status", "413")]


async def test_set_handler_and_close_connection() -> None:
    cancelled = asyncio.Event()
    connected: list[aioh2.H2Protocol] = []

    async def on_connected(proto: aioh2.H2Protocol) -> None:
        connected.append(proto)
        try:
            await hello_server(proto)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    server = await aioh2.start_server(on_connected, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = await aioh2.open_connection("127.0.0.1", port)
    try:
        client_task_cancelled = asyncio.Event()

        async def client_handler() -> None:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                client_task_cancelled.set()
                raise

        client.set_handler(client_handler())
        second = asyncio.sleep(0)
        with pytest.raises(Exception, match="already set"):
            client.set_handler(second)
        second.close()
        sid = await client.start_request({":path": "/"}, end_stream=True)
        assert await client.read_stream(sid, -1) == b"hello, "
        assert len(connected) == 1
        # A second request reuses the connection's protocol (no second callback).
        sid = await client.start_request({":path": "/"}, end_stream=True)
        assert await client.read_stream(sid, -1) == b"hello, "
        assert len(connected) == 1

        client.close_connection()
        await asyncio.wait_for(client.wait_closed(), 5)
        await asyncio.wait_for(client_task_cancelled.wait(), 5)
        await asyncio.wait_for(cancelled.wait(), 5)  # server side: handler cancelled too
        with pytest.raises(aioh2s.ConnectionClosed):
            await client.start_request({":path": "/"})

        # A new connection gets a new protocol and a new callback.
        client2 = await aioh2.open_connection("127.0.0.1", port)
        client2.set_handler(None)
        sid = await client2.start_request({":path": "/"}, end_stream=True)
        assert await client2.read_stream(sid, -1) == b"hello, "
        assert len(connected) == 2 and connected[0] is not connected[1]
        client2.close_connection()
        await asyncio.wait_for(client2.wait_closed(), 5)
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), 10)


async def test_server_close_connection_fails_client_reads() -> None:
    async def on_connected(proto: aioh2.H2Protocol) -> None:
        sid, _ = await proto.recv_request()
        await proto.start_response(sid, {":status": "200"})
        await proto.send_data(sid, b"partial")
        await asyncio.sleep(0.2)
        proto.close_connection()

    async with pair(on_connected) as (_, client):
        sid = await client.start_request({":path": "/"}, end_stream=True)
        assert await client.read_stream(sid) == b"partial"
        with pytest.raises((aioh2s.StreamReset, aioh2s.ConnectionClosed)):
            await asyncio.wait_for(client.read_stream(sid), 5)


async def test_functional_and_wait_functional() -> None:
    server_rtts: list[float | None] = []

    async def on_connected(proto: aioh2.H2Protocol) -> None:
        proto.functional_timeout = 0.05
        while True:
            sid, _ = await proto.recv_request()
            await asyncio.sleep(0.1)
            assert not proto.functional
            server_rtts.append(await proto.wait_functional())
            await proto.start_response(sid, {":status": "200"}, end_stream=True)

    async with pair(on_connected, client_kw={"functional_timeout": 0.5}) as (_, client):
        assert client.functional_timeout == 0.5
        assert client.functional  # a new connection counts as active
        assert await client.wait_functional() is None  # no PING needed
        await asyncio.sleep(0.6)
        assert not client.functional
        rtt = await asyncio.wait_for(client.wait_functional(), 5)
        assert isinstance(rtt, float) and 0 < rtt < 0.5
        assert client.functional
        assert await client.wait_functional() == rtt  # still functional: last RTT, no PING
        client.functional_timeout = 0.01
        await asyncio.sleep(0.02)
        assert not client.functional
        client.functional_timeout = 60  # a larger timeout makes it functional again at once
        assert client.functional

        sid = await client.start_request({":path": "/"}, end_stream=True)
        assert await client.recv_response(sid) == [(":status", "200")]
        assert len(server_rtts) == 1 and isinstance(server_rtts[0], float)


async def test_settings_priorities_and_unix() -> None:
    async with pair(
        hello_server,
        concurrency=5,
        stream_window=1 << 20,
        client_kw={"stream_window": 300_000, "concurrency": 4},
    ) as (_, client):
        assert client.initial_window_size == 300_000
        assert client.max_frame_size == 16384
        assert client.max_concurrent_streams == 4
        with pytest.raises(NotImplementedError):
            client.update_settings({4: 100_000})
        with pytest.raises(NotImplementedError):
            client.initial_window_size = 100_000
        with pytest.raises(NotImplementedError):
            client.max_frame_size = 32768
        with pytest.raises(NotImplementedError):
            client.max_concurrent_streams = 10
        sid = await client.start_request({":path": "/"}, end_stream=True)
        client.reprioritize(sid, depends_on=None, weight=200, exclusive=True)  # accepted, no-op
        assert await client.read_stream(sid, -1) == b"hello, "
    with pytest.raises(NotImplementedError):
        await aioh2.open_unix_connection("/tmp/x.sock")
    with pytest.raises(NotImplementedError):
        await aioh2.start_unix_server(hello_server, "/tmp/x.sock")
    with pytest.raises(TypeError, match="unknown option"):
        await aioh2.open_connection("127.0.0.1", 1, no_such_option=1)
    with pytest.raises(ValueError):
        await aioh2.open_connection()


async def test_custom_protocol_class() -> None:
    class MyProtocol(aioh2.H2Protocol):
        async def get(self, path: str) -> bytes:
            sid = await self.start_request({":path": path}, end_stream=True)
            return await self.read_stream(sid, -1)

    server_protos: list[aioh2.H2Protocol] = []

    class MyServerProtocol(aioh2.H2Protocol):
        def __init__(self, client_side: bool, **kw: Any) -> None:
            super().__init__(client_side, **kw)
            server_protos.append(self)

    server = await aioh2.start_server(
        hello_server, "127.0.0.1", 0, cls=MyServerProtocol, functional_timeout=7
    )
    port = server.sockets[0].getsockname()[1]
    client = await aioh2.open_connection("127.0.0.1", port, cls=MyProtocol)
    try:
        assert isinstance(client, MyProtocol)
        assert await client.get("/") == b"hello, "
        assert len(server_protos) == 1 and server_protos[0].functional_timeout == 7
        assert server_protos[0].max_concurrent_streams == 8  # aioh2's default concurrency
    finally:
        client.close_connection()
        await client.wait_closed()
        server.close()
        await server.wait_closed()


async def test_tls() -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    with cert.private_key_and_cert_chain_pem.tempfile() as chain, ca.cert_pem.tempfile() as cafile:
        server_ctx = aioh2s.server_ssl_context(chain, chain)
        client_ctx = aioh2s.client_ssl_context(cafile)
        server = await aioh2.start_server(hello_server, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        client = await aioh2.open_connection(
            "127.0.0.1", port, ssl=client_ctx, server_hostname="localhost"
        )
        try:
            sid = await client.start_request({":method": "POST", ":path": "/"})
            await client.send_data(sid, b"tls", end_stream=True)
            assert await client.read_stream(sid, -1) == b"hello, tls"
            assert await client.recv_trailers(sid) == [("len", "3")]
        finally:
            client.close_connection()
            await client.wait_closed()
            server.close()
            await server.wait_closed()


# -- recv_request: timeouts and concurrency --------------------------------------------------------


async def test_recv_request_timeout_loses_nothing() -> None:
    protos: asyncio.Queue[aioh2.H2Protocol] = asyncio.Queue()

    async def on_connected(proto: aioh2.H2Protocol) -> None:
        await protos.put(proto)

    async with pair(on_connected) as (_, client):
        sid1 = await client.start_request({":path": "/1"}, end_stream=True)
        proto = await asyncio.wait_for(protos.get(), 5)
        assert (await proto.recv_request(timeout=5))[0] == sid1
        # Calls that belong to the other side fail clearly instead of hanging.
        with pytest.raises(aioh2.AIOH2Exception, match="client connection"):
            await proto.start_request({":path": "/"})
        with pytest.raises(aioh2.AIOH2Exception, match="start_request"):
            await proto.recv_response(sid1)
        with pytest.raises(aioh2.AIOH2Exception, match="recv_request"):
            await client.start_response(sid1, {":status": "200"})
        await proto.start_response(sid1, {":status": "200"}, end_stream=True)

        t0 = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await proto.recv_request(timeout=0.2)
        assert 0.15 < time.monotonic() - t0 < 2
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(proto.recv_request(), 0.1)  # the aioh2 way
        waiter = asyncio.ensure_future(proto.recv_request())
        await asyncio.sleep(0.05)
        waiter.cancel()

        # Requests that arrive after timed-out / cancelled waits are all still delivered.
        sid2 = await client.start_request({":path": "/2"}, end_stream=True)
        sid3 = await client.start_request({":path": "/3"}, end_stream=True)
        got = [await proto.recv_request(timeout=5), await proto.recv_request(timeout=5)]
        assert [g[0] for g in got] == [sid2, sid3]
        assert [dict(g[1])[":path"] for g in got] == ["/2", "/3"]
        for sid, _ in got:
            await proto.start_response(sid, {":status": "204"}, end_stream=True)
        assert await client.recv_response(sid3) == [(":status", "204")]

        # Once the connection is gone, queued requests come first, then ConnectionClosed.
        sid4 = await client.start_request({":path": "/4"}, end_stream=True)
        await asyncio.sleep(0.1)
        client.close_connection()
        await client.wait_closed()
        assert (await proto.recv_request(timeout=5))[0] == sid4
        with pytest.raises(aioh2s.ConnectionClosed):
            await proto.recv_request(timeout=5)
        with pytest.raises(aioh2s.ConnectionClosed):
            await proto.recv_request(timeout=5)


async def test_concurrency_limits_open_requests() -> None:
    protos: asyncio.Queue[aioh2.H2Protocol] = asyncio.Queue()

    async def on_connected(proto: aioh2.H2Protocol) -> None:
        await protos.put(proto)

    async with pair(on_connected, concurrency=3) as (_, client):
        starts = [
            asyncio.ensure_future(client.start_request({":path": f"/{i}"}, end_stream=True))
            for i in range(5)
        ]
        proto = await asyncio.wait_for(protos.get(), 5)
        received = [await proto.recv_request(timeout=5) for _ in range(3)]
        await asyncio.sleep(0.2)
        assert sum(t.done() for t in starts) == 3  # the client waits for a slot, FIFO
        with pytest.raises(asyncio.TimeoutError):
            await proto.recv_request(timeout=0.2)  # never more than 3 open at once

        await proto.start_response(received[0][0], {":status": "200"}, end_stream=True)
        received.append(await proto.recv_request(timeout=5))
        await asyncio.sleep(0.1)
        assert sum(t.done() for t in starts) == 4
        with pytest.raises(asyncio.TimeoutError):
            await proto.recv_request(timeout=0.2)

        for sid, _ in received[1:]:
            await proto.start_response(sid, {":status": "200"}, end_stream=True)
        received.append(await proto.recv_request(timeout=5))
        await proto.start_response(received[-1][0], {":status": "200"}, end_stream=True)
        sids = [await asyncio.wait_for(t, 5) for t in starts]
        assert sorted(sids) == sorted(sid for sid, _ in received)
        assert [dict(h)[":path"] for _, h in received] == [f"/{i}" for i in range(5)]
        for sid in sids:
            assert await client.recv_response(sid) == [(":status", "200")]


# -- volume: aioh2's own server failed at the 1,001st stream ------------------------------------


async def test_5000_sequential_requests_on_one_connection() -> None:
    server_protos: list[aioh2.H2Protocol] = []

    async def on_connected(proto: aioh2.H2Protocol) -> None:
        server_protos.append(proto)
        await hello_server(proto)

    async with pair(on_connected) as (_, client):
        t0 = time.monotonic()
        for i in range(5000):
            sid = await client.start_request({":method": "POST", ":path": "/"})
            assert sid == 2 * i + 1
            await client.send_data(sid, b"%d" % i, end_stream=True)
            assert await client.recv_response(sid) == [(":status", "200")]
            assert await client.read_stream(sid, -1) == b"hello, %d" % i
            assert await client.recv_trailers(sid) == [("len", str(len(b"%d" % i)))]
        elapsed = time.monotonic() - t0
        assert elapsed < 60, elapsed
        # Finished streams are forgotten beyond a bound: memory does not grow with the count.
        with pytest.raises(aioh2.AIOH2Exception, match="unknown stream 1 "):
            await client.read_stream(1)
        assert await client.recv_trailers(sid) == [("len", "4")]  # the recent ones stay
        # White-box: no live per-stream state or task is left behind on the client.
        await asyncio.sleep(0.05)
        assert not client._streams and not client._tasks
        assert len(client._finished) == client.finished_streams_kept
        (sproto,) = server_protos  # one connection, one protocol, 5,000 requests
        assert not sproto._streams and len(sproto._finished) == sproto.finished_streams_kept
