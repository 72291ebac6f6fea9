"""close() during a blocked send, concurrent closes, a close racing the peer's."""
from __future__ import annotations

import asyncio

import pytest
from _common import ON, Holder, aioh2s, client_for, websocket

pytestmark = pytest.mark.timeout(60)


async def test_close_during_a_blocked_send_is_bounded() -> None:
    app = Holder(max_message_size=8 << 20)
    async with client_for(app, ON) as (client, _):
        ws = await websocket.connect(client, close_timeout=1)
        await asyncio.wait_for(app.got.wait(), 5)

        async def sends() -> None:
            for _ in range(4):
                await ws.send(b"x" * (4 << 20))

        t = asyncio.create_task(sends())
        await asyncio.sleep(1)
        assert not t.done()
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.wait_for(ws.close(), 10)
        assert loop.time() - start < 2
        with pytest.raises(aioh2s.WebSocketClosed):
            await asyncio.wait_for(t, 5)
        assert ws.state == "closed"
        app.release.set()


async def test_two_concurrent_closes_and_a_racing_peer_close() -> None:
    go = asyncio.Event()
    seen: list[int | None] = []

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        ws = await websocket.accept(reader, writer, close_timeout=5)
        await go.wait()
        await ws.close(4001, "server")
        seen.append(ws.close_code)

    async with client_for(handler, ON) as (client, _):
        ws = await websocket.connect(client, close_timeout=5)
        await asyncio.sleep(0.1)
        loop = asyncio.get_running_loop()
        start = loop.time()
        go.set()
        await asyncio.gather(ws.close(4002, "a"), ws.close(4003, "b"))
        assert loop.time() - start < 1
        assert ws.close_code in (4001, 4002)
        await asyncio.sleep(0.1)
        assert seen and seen[0] in (4001, 4002)
