"""Both sides send big messages and ping each other: no side stops reading.

A reader task that awaited drain() after answering a PING waited behind the application's
own big message, and read nothing meanwhile; the peer the same: neither read again.
"""
from __future__ import annotations

import asyncio

import pytest
from _common import ON, aioh2s, client_for, websocket

pytestmark = pytest.mark.timeout(60)

BIG = 8 * 1024 * 1024


def where(task: asyncio.Task) -> str:
    coro, chain = task.get_coro(), []
    while coro is not None and hasattr(coro, "cr_code"):
        chain.append(f"{coro.cr_code.co_name}:{coro.cr_frame.f_lineno if coro.cr_frame else '?'}")
        coro = coro.cr_await
    return " -> ".join(chain)


async def exchange(ws: websocket.WebSocket, orphans: list[asyncio.Task]) -> list[int]:
    """Send one message, ping, send another; meanwhile receive the peer's two."""
    got: list[int] = []

    async def sender() -> None:
        await ws.send(b"a" * (BIG // 4))
        ping = asyncio.create_task(ws.ping(timeout=None))
        orphans.append(ping)
        await asyncio.sleep(0)  # the PING frame is queued now, between the two messages
        await ws.send(b"b" * BIG)
        await ping

    async def receiver() -> None:
        for _ in range(2):
            got.append(len(await ws.receive()))

    await asyncio.gather(sender(), receiver())
    return got


@pytest.mark.parametrize("window", [65535, None])
async def test_pings_during_bulk_transfer_both_ways_do_not_deadlock(window: int | None) -> None:
    server_ws: list[websocket.WebSocket] = []
    orphans: list[asyncio.Task] = []

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        async with await websocket.accept(reader, writer, max_message_size=32 << 20) as ws:
            server_ws.append(ws)
            await exchange(ws, orphans)
            await ws.receive()  # until the client closes

    w = {} if window is None else {"stream_window": window}
    async with client_for(handler, {**ON, **w}, **w) as (client, _):
        ws = await websocket.connect(client, max_message_size=32 << 20, close_timeout=1)
        try:
            got = await asyncio.wait_for(exchange(ws, orphans), 20)
        except asyncio.TimeoutError:
            pytest.fail(
                f"deadlock after 20 s:\n client reader: {where(ws._task)}\n"
                f" server reader: {where(server_ws[0]._task)}\n"
                f" client unsent {ws.writer._s.out_size}, "
                f"server unsent {server_ws[0].writer._s.out_size}"
            )
        finally:
            ws.abort()
            for t in orphans:
                t.cancel()
            await asyncio.gather(*orphans, return_exceptions=True)
        assert got == [BIG // 4, BIG]
