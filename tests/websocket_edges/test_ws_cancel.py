"""Cancel-safety of the public awaits."""
from __future__ import annotations

import asyncio

import pytest
from _common import ON, Holder, aioh2s, client_for, websocket

pytestmark = pytest.mark.timeout(30)


async def test_receive_right_after_cancelling_a_receive() -> None:
    """asyncio.Queue.get(): a cancelled get() leaves the queue usable at once."""
    app = Holder()
    async with client_for(app, ON) as (client, _):
        ws = await websocket.connect(client)
        t = asyncio.create_task(ws.receive())
        await asyncio.sleep(0)
        t.cancel()
        # The cancelled receive() is over as far as the caller is concerned; a new one by
        # another consumer must not be told "another task is waiting".
        nxt = asyncio.create_task(ws.receive())
        await asyncio.sleep(0.1)
        assert not nxt.done() or nxt.exception() is None, nxt.exception()
        nxt.cancel()
        await asyncio.gather(t, nxt, return_exceptions=True)
        app.release.set()
        await ws.close()


async def test_send_surrogate_raises_and_changes_nothing() -> None:
    async def echo(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        async with await websocket.accept(reader, writer) as ws:
            async for m in ws:
                await ws.send(m)

    async with client_for(echo, ON) as (client, _):
        async with websocket.connect(client) as ws:
            with pytest.raises(UnicodeEncodeError):
                await ws.send("\ud800")
            await ws.send("ok")
            assert await ws.receive() == "ok"
            with pytest.raises(TypeError):
                await ws.ping(5)  # type: ignore[arg-type]  # bytes(5) == b"\0" * 5
