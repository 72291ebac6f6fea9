"""httpx's normal API over aioh2s.httpx_transport.Transport, against a real aioh2s server.

get, stream, post with bytes and with an async iterator body, concurrent requests, each
timeout mapped onto httpx's exception, and a clean close (the suite's guard fails a test on
any leaked socket, task or warning); close paths over h2c and TLS.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

import aioh2s
from helpers import Wire

httpx = pytest.importorskip("httpx")
from aioh2s.httpx_transport import Transport  # noqa: E402


async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
    h = reader.headers
    path = h[":path"]
    if path == "/hang":
        await asyncio.sleep(30)
    if path.startswith("/big"):
        writer.send_headers({":status": "200"})
        for _ in range(64):
            writer.write(b"x" * 65536)
            await writer.drain()
        writer.write_eof()
        return
    if path == "/noread":
        await asyncio.sleep(30)
    body = await reader.read()
    writer.send_headers({":status": "404" if path == "/missing" else "200",
                         "x-authority": h[":authority"], "x-method": h[":method"],
                         "x-sha": hashlib.sha256(body).hexdigest(),
                         "x-connection-header": str("connection" in h)})
    writer.write(body or path.encode())
    writer.write_eof()


def client(wire: Wire, **options: Any) -> Any:
    if wire.tls:
        options.setdefault("ssl", aioh2s.client_ssl_context(wire.certs.ca))
    timeout = options.pop("timeout", 10.0)
    return httpx.AsyncClient(transport=Transport(**options), timeout=timeout)


async def test_get_post_stream_and_concurrency(wire: Wire) -> None:
    async with wire.serving(handler) as (_server, port):
        base = wire.url(port)
        async with client(wire) as c:
            r = await c.get(base + "a/b?x=1", headers={"Connection": "keep-alive"})
            assert r.status_code == 200 and r.text == "/a/b?x=1"
            assert r.http_version == "HTTP/2"
            assert r.headers["x-authority"] == f"127.0.0.1:{port}"
            assert r.headers["x-connection-header"] == "False"  # dropped, as HTTP/2 requires
            r = await c.post(base + "echo", content=b"payload")
            assert r.content == b"payload" and r.headers["x-method"] == "POST"

            async def parts() -> AsyncIterator[bytes]:
                for i in range(100):
                    yield bytes([i]) * 1000

            r = await c.post(base + "echo", content=parts())
            want = b"".join(bytes([i]) * 1000 for i in range(100))
            assert r.headers["x-sha"] == hashlib.sha256(want).hexdigest()
            r = await c.get(base + "missing")
            assert r.status_code == 404
            async with c.stream("GET", base + "big") as resp:
                n = 0
                async for chunk in resp.aiter_bytes():
                    n += len(chunk)
                assert n == 64 * 65536
            async with c.stream("GET", base + "big") as resp:  # left unread: reset, not leaked
                assert resp.status_code == 200
            rs = await asyncio.gather(*(c.get(f"{base}n{i}") for i in range(200)))
            assert [r.text for r in rs] == [f"/n{i}" for i in range(200)]


async def test_timeouts_map_to_httpx_exceptions() -> None:
    wire = Wire("h2c")
    async with wire.serving(handler, stream_window=65535, connection_window=65535,
                            max_concurrent_streams=1) as (_server, port):
        base = wire.url(port)
        async with client(wire, max_connections=1) as c:
            with pytest.raises(httpx.ReadTimeout) as ei:
                await c.get(base + "hang", timeout=httpx.Timeout(10, read=0.2))
            assert isinstance(ei.value.__cause__, aioh2s.ReadTimeout)
            with pytest.raises(httpx.WriteTimeout):
                await c.post(base + "noread", content=b"x" * 1_000_000,
                             timeout=httpx.Timeout(10, write=0.2))
            hanging = asyncio.ensure_future(c.get(base + "hang"))
            await asyncio.sleep(0.1)
            with pytest.raises(httpx.PoolTimeout):
                await c.get(base + "x", timeout=httpx.Timeout(10, pool=0.2))
            hanging.cancel()
            with pytest.raises(asyncio.CancelledError):
                await hanging
            r = await c.get(base + "after")  # the cancelled request gave its slot back
            assert r.text == "/after"


async def test_connect_errors_map_to_httpx_exceptions() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        async with httpx.AsyncClient(transport=Transport()) as c:
            with pytest.raises(httpx.ConnectError):
                await c.get(f"http://127.0.0.1:{port}/")
        sock.listen()  # accepts, but never speaks HTTP/2
        async with httpx.AsyncClient(
            transport=Transport(timeout=aioh2s.Timeouts(connect=0.3))
        ) as c:
            with pytest.raises(httpx.ConnectTimeout):
                await c.get(f"http://127.0.0.1:{port}/")


async def test_a_shared_session_is_not_closed_by_the_transport() -> None:
    async with Wire("h2c").serving(handler) as (_server, port):
        async with aioh2s.Session() as session:
            async with httpx.AsyncClient(transport=Transport(session)) as c:
                assert (await c.get(f"http://127.0.0.1:{port}/x")).text == "/x"
            r = await session.fetch(f"http://127.0.0.1:{port}/y")  # still usable
            assert r.text() == "/y"
    with pytest.raises(TypeError):
        Transport(aioh2s.Session(), retries=1)
