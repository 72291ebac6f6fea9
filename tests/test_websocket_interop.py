"""aioh2s.websocket against WebSocket stacks nobody here wrote, through nghttpx's RFC 8441.

nghttpx (nghttp2's reverse proxy) speaks RFC 8441 on both sides and translates to and from
HTTP/1.1 WebSockets, and the ``websockets`` library is a WebSocket implementation of its own
(HTTP/1.1 only). So:

- our client -> nghttpx (extended CONNECT, h2c or TLS) -> ``websockets`` server (Upgrade);
- ``websockets`` client (Upgrade) -> nghttpx -> our server (extended CONNECT over h2c or TLS).

Both carry text, a 1 MiB binary message, pings and the close handshake from either side,
with codes and reasons. The browser (Chromium) is tests/test_websocket_browser.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import aioh2s
from aioh2s import websocket
from helpers import pattern, serving
from peers import nghttpx_proxy

pytestmark = pytest.mark.timeout(60)

ws_server = pytest.importorskip("websockets.asyncio.server")
ws_client = pytest.importorskip("websockets.asyncio.client")
ws_exceptions = pytest.importorskip("websockets.exceptions")


class TheirEcho:
    """A ``websockets`` echo handler; "close-me" makes it close with 4002."""

    def __init__(self) -> None:
        self.closes: list[tuple[int | None, str | None]] = []
        self.paths: list[str] = []

    async def __call__(self, conn: Any) -> None:
        self.paths.append(conn.request.path)
        try:
            async for message in conn:
                if message == "close-me":
                    await conn.close(4002, "theirs")
                    break
                await conn.send(message)
        except ws_exceptions.ConnectionClosed:
            pass  # a close code other than 1000/1001 ends its iteration so
        await conn.wait_closed()
        rcvd = conn.protocol.close_rcvd
        self.closes.append((rcvd.code, rcvd.reason) if rcvd else (None, None))


async def test_our_client_through_nghttpx_to_the_websockets_library(wire: Any) -> None:
    theirs = TheirEcho()
    async with ws_server.serve(theirs, "127.0.0.1", 0, max_size=None) as backend:
        port = backend.sockets[0].getsockname()[1]
        with nghttpx_proxy(port, certs=wire.certs) as proxy:
            scheme = "wss" if wire.tls else "ws"
            ssl_ctx = aioh2s.client_ssl_context(wire.certs.ca) if wire.tls else None
            url = f"{scheme}://127.0.0.1:{proxy.port}/echo?via=nghttpx"
            async with websocket.connect(url, ssl=ssl_ctx) as ws:
                await ws.send("hello, websockets")
                assert await ws.receive() == "hello, websockets"
                big = pattern(1 << 20, seed=3)
                await ws.send(big)
                assert await ws.receive() == big
                assert await ws.ping(b"through nghttpx") < 5
                await ws.close(4001, "ours")
            assert ws.close_code == 4001 and ws.close_reason == "ours"

            ws = await websocket.connect(url, ssl=ssl_ctx)
            await ws.send("close-me")
            with pytest.raises(aioh2s.WebSocketClosed) as info:
                await asyncio.wait_for(ws.receive(), 10)
            assert (info.value.code, info.value.reason, info.value.local) == (4002, "theirs", False)
            await asyncio.wait_for(ws.wait_closed(), 10)
        await asyncio.sleep(0)
    assert theirs.paths == ["/echo?via=nghttpx"] * 2
    assert theirs.closes == [(4001, "ours"), (4002, "theirs")]


class OurEcho:
    def __init__(self) -> None:
        self.requests: list[aioh2s.Headers] = []
        self.closes: list[int | None] = []
        self.done = asyncio.Event()

    async def __call__(self, reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        self.requests.append(reader.headers)
        if not websocket.is_websocket(reader.headers):
            writer.send_headers({":status": "404", "content-length": "0"}, end_stream=True)
            return
        try:
            async with await websocket.accept(reader, writer) as ws:
                async for message in ws:
                    if message == "close-me":
                        await ws.close(4000, "ours")
                        break
                    await ws.send(message)
            self.closes.append(ws.close_code)
        finally:
            self.done.set()


async def test_the_websockets_library_through_nghttpx_to_our_server(wire: Any) -> None:
    ours = OurEcho()
    async with serving(ours, enable_connect_protocol=True, **wire.server_options()) as (_, port):
        with nghttpx_proxy(port, backend_h2=True, backend_tls=wire.tls) as proxy:
            url = f"ws://127.0.0.1:{proxy.port}/chat"
            async with ws_client.connect(url, max_size=None, compression=None) as conn:
                await conn.send("hello, aioh2s")
                assert await conn.recv() == "hello, aioh2s"
                big = pattern(1 << 20, seed=4)
                await conn.send(big)
                assert await conn.recv() == big
                pong = await conn.ping(b"ping")
                await asyncio.wait_for(pong, 5)
            # Their close; the server side is over once the close frames crossed (nghttpx
            # keeps the backend stream open after that).
            await asyncio.wait_for(ours.done.wait(), 3)
            assert ours.closes == [1000]

            ours.done.clear()
            async with ws_client.connect(url) as conn:
                await conn.send("close-me")
                with pytest.raises(ws_exceptions.ConnectionClosed) as info:
                    await asyncio.wait_for(conn.recv(), 10)
                assert info.value.rcvd is not None
                assert (info.value.rcvd.code, info.value.rcvd.reason) == (4000, "ours")
            await asyncio.wait_for(ours.done.wait(), 3)
    h = ours.requests[0]
    assert h[":method"] == "CONNECT" and h[":protocol"] == "websocket" and h[":path"] == "/chat"
    assert "nghttpx" in h.get("via", "")
