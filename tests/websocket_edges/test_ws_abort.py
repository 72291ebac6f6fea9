"""abort() right after connect()/accept(), before the reader task ever ran."""
from __future__ import annotations

import asyncio

import pytest
from _common import ON, Holder, aioh2s, client_for, serving, websocket

pytestmark = pytest.mark.timeout(30)


async def test_abort_right_after_connect_then_receive_raises() -> None:
    app = Holder()
    async with client_for(app, ON) as (client, _):
        ws = await websocket.connect(client)
        ws.abort()
        # WebSocketClosed(1006): the reader task runs to its end even when aborted at once.
        with pytest.raises(aioh2s.WebSocketClosed):
            await asyncio.wait_for(ws.receive(), 3)
        app.release.set()


async def test_abort_right_after_connect_then_wait_closed_returns() -> None:
    app = Holder()
    async with client_for(app, ON) as (client, _):
        ws = await websocket.connect(client)
        ws.abort()
        # Returns: the caller was not cancelled.
        await asyncio.wait_for(ws.wait_closed(), 3)
        assert ws.close_code == 1006
        app.release.set()


async def test_abort_inside_async_with_does_not_raise_cancelled() -> None:
    app = Holder()
    async with client_for(app, ON) as (client, _):
        # A natural pattern: bail out of a WebSocket we do not like.
        async with websocket.connect(client) as ws:
            ws.abort()
        # No CancelledError escapes the async with: nobody cancelled us.
        app.release.set()


async def test_abort_right_after_url_connect_closes_its_own_connection() -> None:
    app = Holder()
    async with serving(app, **ON) as (_server, port):
        ws = await websocket.connect(f"ws://127.0.0.1:{port}/")
        conn = ws.writer.connection
        ws.abort()
        try:
            await asyncio.wait_for(ws.wait_closed(), 3)
        except asyncio.CancelledError:
            pass
        # The URL form owns its connection: it must be closed once the WebSocket is over.
        await asyncio.sleep(0.5)
        assert conn.is_closing(), "the dialed connection was leaked"
        app.release.set()
