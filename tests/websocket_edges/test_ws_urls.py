"""The URL form: IPv6 literals, query strings, what reaches :path and :authority."""
from __future__ import annotations

import asyncio
import socket

import pytest
from _common import ON, aioh2s, websocket

pytestmark = pytest.mark.timeout(30)


def have_ipv6() -> bool:
    try:
        s = socket.socket(socket.AF_INET6)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


@pytest.mark.parametrize(
    "suffix, path",
    [
        ("/a/b?x=1&y=%20z", "/a/b?x=1&y=%20z"),
        ("?only=query", "/?only=query"),
        ("", "/"),
        ("/p#frag", "/p"),
        ("/p?", "/p"),
    ],
)
@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]"])
async def test_url_path_and_authority(host: str, suffix: str, path: str) -> None:
    if host == "[::1]" and not have_ipv6():
        pytest.skip("no IPv6 loopback")
    seen: list[tuple[str, str]] = []

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        seen.append((reader.headers[":path"], reader.headers[":authority"]))
        async with await websocket.accept(reader, writer) as ws:
            async for m in ws:
                await ws.send(m)

    server = await aioh2s.start_server(handler, host.strip("[]"), 0, **ON)
    try:
        port = server.sockets[0].getsockname()[1]
        async with websocket.connect(f"ws://{host}:{port}{suffix}") as ws:
            await ws.send("hi")
            assert await ws.receive() == "hi"
        assert seen == [(path, f"{host}:{port}")]
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), 5)


async def test_port_zero_in_url_is_not_port_80() -> None:
    with pytest.raises(ValueError):
        websocket.connect("ws://127.0.0.1:0/")
