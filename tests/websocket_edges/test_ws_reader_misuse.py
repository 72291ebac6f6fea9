"""The app reads ws.reader under the reader task: the documented 1011 path."""
from __future__ import annotations

import asyncio

import pytest
from _common import ON, aioh2s, client_for, websocket

pytestmark = pytest.mark.timeout(30)


async def test_app_reading_the_stream_under_the_websocket() -> None:
    seen: list[BaseException] = []

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        ws = await websocket.accept(reader, writer)
        try:
            await ws.reader.read(10)  # first waiter: the reader task's read() then raises
        except aioh2s.H2Error as e:
            seen.append(e)
        with pytest.raises(aioh2s.WebSocketClosed) as info:
            await ws.receive()
        seen.append(info.value)
        await ws.wait_closed()

    async with client_for(handler, ON) as (client, _):
        ws = await websocket.connect(client)
        with pytest.raises(aioh2s.WebSocketClosed) as info:
            await asyncio.wait_for(ws.receive(), 5)
        assert info.value.code == 1006
        await asyncio.sleep(0.1)
        assert any(isinstance(e, aioh2s.WebSocketClosed) and e.code == 1011 for e in seen), seen
