"""Shared bits of the WebSocket edge tests (from a hostile review of aioh2s.websocket)."""
from __future__ import annotations

import asyncio
import os
import struct
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))

import aioh2s  # noqa: E402
from aioh2s import websocket  # noqa: E402
from helpers import client_for, serving  # noqa: E402

__all__ = [
    "ON", "WS_REQUEST", "Holder", "aioh2s", "client_for", "frame", "raw_tunnel",
    "server_events", "serving", "websocket",
]

ON = {"enable_connect_protocol": True}

WS_REQUEST = {
    ":method": "CONNECT",
    ":protocol": "websocket",
    ":path": "/ws",
    "sec-websocket-version": "13",
}


def frame(opcode: int, payload: bytes, fin: bool = True, rsv: int = 0, mask: bool = True) -> bytes:
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | rsv | opcode])
    m = 0x80 if mask else 0
    if n < 126:
        head += bytes([m | n])
    elif n < 1 << 16:
        head += bytes([m | 126]) + struct.pack("!H", n)
    else:
        head += bytes([m | 127]) + struct.pack("!Q", n)
    return head + (b"\0\0\0\0" if mask else b"") + payload


@asynccontextmanager
async def raw_tunnel(client: aioh2s.Client, **hdrs: str) -> AsyncIterator[Any]:
    async with client.request({**WS_REQUEST, **hdrs}) as st:
        assert (await st.response_headers())[":status"] == "200"
        yield st


async def server_events(st: Any, until: type, timeout: float = 10) -> list[Any]:
    from wsproto.connection import Connection as Framing
    from wsproto.connection import ConnectionType

    parser = Framing(ConnectionType.CLIENT)
    seen: list[Any] = []

    async def run() -> None:
        while True:
            data = await st.reader.read(65536)
            if not data:
                return
            parser.receive_data(data)
            for e in parser.events():
                seen.append(e)
                if isinstance(e, until):
                    return

    await asyncio.wait_for(run(), timeout)
    return seen


class Holder:
    """A server handler that accepts and hands the WebSocket to the test."""

    def __init__(self, **accept: Any) -> None:
        self.accept = accept
        self.ws: list[websocket.WebSocket] = []
        self.got = asyncio.Event()
        self.release = asyncio.Event()
        self.errors: list[BaseException] = []

    async def __call__(self, reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        ws = await websocket.accept(reader, writer, **self.accept)
        self.ws.append(ws)
        self.got.set()
        try:
            await self.release.wait()
        finally:
            try:
                await asyncio.wait_for(ws.close(), 5)
            except BaseException as e:  # noqa: BLE001
                self.errors.append(e)
