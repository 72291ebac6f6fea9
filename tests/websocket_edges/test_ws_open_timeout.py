"""open_timeout must bound the opening: no hang, no leak."""
from __future__ import annotations

import asyncio
import socket

import pytest
from _common import ON, Holder, aioh2s, client_for, websocket

pytestmark = pytest.mark.timeout(60)


async def test_open_timeout_bounds_the_wait_for_a_stream_slot() -> None:
    app = Holder()
    async with client_for(app, {**ON, "max_concurrent_streams": 1}) as (client, _):
        first = await websocket.connect(client)
        await asyncio.wait_for(app.got.wait(), 5)
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            with pytest.raises(asyncio.TimeoutError):
                # ConnectTimeout after ~0.5 s, though no stream slot came free.
                await asyncio.wait_for(websocket.connect(client, open_timeout=0.5), 5)
            assert loop.time() - start < 2, "open_timeout did not bound the opening"
        finally:
            app.release.set()
            await asyncio.wait_for(first.close(), 5)


async def test_open_timeout_bounds_dialing_a_silent_server() -> None:
    """A TCP listener that never speaks HTTP/2: connect(url, open_timeout=0.5)."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(8)
    lsock.setblocking(False)
    port = lsock.getsockname()[1]
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        with pytest.raises((asyncio.TimeoutError, aioh2s.ConnectError)):
            await asyncio.wait_for(
                websocket.connect(f"ws://127.0.0.1:{port}/", open_timeout=0.5), 15
            )
        elapsed = loop.time() - start
        assert elapsed < 2, f"open_timeout=0.5 but the opening took {elapsed:.1f} s"
    finally:
        lsock.close()


async def test_open_timeout_on_a_silent_handler_frees_the_stream() -> None:
    gone = asyncio.Event()

    async def silent(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            gone.set()

    async with client_for(silent, {**ON, "max_concurrent_streams": 1}) as (client, _):
        for _ in range(3):  # a leaked stream would hold the only slot
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(websocket.connect(client, open_timeout=0.3), 3)
        await asyncio.wait_for(gone.wait(), 3)
