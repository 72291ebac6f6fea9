"""Every close path bounded by close_timeout: the URL form also closes its connection."""
from __future__ import annotations

import asyncio
import os
import sys

import h2.events
import h2.settings
import pytest
from _common import ON, Holder, aioh2s, client_for, websocket

sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))
from rawh2 import RawH2Server  # noqa: E402

pytestmark = pytest.mark.timeout(90)


def lingering_server() -> RawH2Server:
    """Answers the CONNECT 200, echoes the close frame with END_STREAM, then ignores GOAWAY
    and keeps the TCP connection open (as a proxy holding other streams might)."""

    def on_event(peer, ev) -> None:
        c = peer.conn
        if isinstance(ev, h2.events.RequestReceived):
            c.send_headers(ev.stream_id, [(":status", "200")])
        elif isinstance(ev, h2.events.DataReceived):
            c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            if ev.data[:1] == b"\x88":
                c.send_data(ev.stream_id, b"\x88\x02\x03\xe8", end_stream=True)
        elif isinstance(ev, h2.events.StreamEnded):
            pass

    return RawH2Server(
        on_event, settings={h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL: 1}
    )


async def test_url_form_close_is_bounded_by_close_timeout() -> None:
    async with lingering_server() as srv:
        ws = await websocket.connect(f"ws://127.0.0.1:{srv.port}/", close_timeout=1)
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            await asyncio.wait_for(ws.close(), 60)
        finally:
            elapsed = loop.time() - start
        assert ws.close_code == 1000
        assert elapsed < 1.5, f"close() with close_timeout=1 took {elapsed:.1f} s"


async def test_client_close_while_websocket_open() -> None:
    """Client.close() with a WebSocket open: how long, and what the WebSocket sees."""
    app = Holder()
    async with client_for(app, ON) as (client, _):
        ws = await websocket.connect(client)
        await asyncio.wait_for(app.got.wait(), 5)
        loop = asyncio.get_running_loop()
        start = loop.time()
        closing = asyncio.create_task(client.close(grace=0.5))
        with pytest.raises(aioh2s.WebSocketClosed) as info:
            await asyncio.wait_for(ws.receive(), 5)
        await asyncio.wait_for(closing, 5)
        assert loop.time() - start < 3
        assert info.value.code == 1006
        await asyncio.wait_for(ws.wait_closed(), 5)
        app.release.set()


async def test_abort_while_the_url_form_closes_its_connection() -> None:
    """abort() (a cleanup path) while the reader task awaits the dialed connection's close."""
    async with lingering_server() as srv:
        ws = await websocket.connect(f"ws://127.0.0.1:{srv.port}/", close_timeout=5)
        conn = ws.writer.connection
        closing = asyncio.create_task(ws.close())
        for _ in range(200):
            if ws.close_code is not None:
                break
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)  # the reader task is in on_closed -> client.close() now
        ws.abort()
        # The caller, not cancelled, sees close() and wait_closed() return.
        r = await asyncio.gather(closing, ws.wait_closed(), return_exceptions=True)
        assert r == [None, None], r
        await asyncio.wait_for(conn.wait_closed(), 5)
