"""Option validation: bad options raise before anything is sent or changed."""
from __future__ import annotations

import asyncio

import pytest
from _common import ON, Holder, aioh2s, client_for, websocket

pytestmark = pytest.mark.timeout(30)


async def test_close_timeout_none_is_refused_up_front_or_works() -> None:
    app = Holder()
    async with client_for(app, ON) as (client, _):
        try:
            ws = await websocket.connect(client, close_timeout=None)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            app.release.set()
            return  # refused before anything happened: fine
        await asyncio.wait_for(app.got.wait(), 5)
        # Accepted: then close() must work (or raise before sending anything).
        try:
            await asyncio.wait_for(ws.close(), 5)
        except TypeError:
            # Misuse must raise before anything changes; here the close frame is gone already.
            assert ws.state == "open", f"close() raised TypeError after changing state: {ws.state}"
            raise
        app.release.set()


async def test_accept_refuses_close_timeout_none_before_answering() -> None:
    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        with pytest.raises(TypeError):
            await websocket.accept(reader, writer, close_timeout=None)  # type: ignore[arg-type]
        assert not writer.headers_sent
        writer.send_headers({":status": "503", "content-length": "0"}, end_stream=True)

    async with client_for(handler, ON) as (client, _):
        with pytest.raises(aioh2s.WebSocketRejected) as info:
            await websocket.connect(client)
        assert info.value.status == 503


async def test_negative_close_timeout_is_refused() -> None:
    app = Holder()
    async with client_for(app, ON) as (client, _):
        with pytest.raises(ValueError):
            await websocket.connect(client, close_timeout=-1)
        app.release.set()


async def test_close_with_a_float_code_raises_before_anything_changes() -> None:
    app = Holder()
    async with client_for(app, ON) as (client, _):
        ws = await websocket.connect(client)
        await asyncio.wait_for(app.got.wait(), 5)
        with pytest.raises((TypeError, ValueError)):
            await ws.close(1000.0)  # type: ignore[arg-type]
        assert ws._local is False, "a refused close() marked the WebSocket as closed by us"
        app.release.set()  # the server closes first now
        with pytest.raises(aioh2s.WebSocketClosed) as info:
            await asyncio.wait_for(ws.receive(), 5)
        assert info.value.local is False
