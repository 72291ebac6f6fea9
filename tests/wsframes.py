"""RFC 6455 frames by hand, for tests of aioh2s.websocket against a peer that breaks the rules.

``frame()`` builds one frame (masked with a zero key: valid, and the payload stays readable);
``raw_tunnel()`` opens a WebSocket's extended CONNECT with our client and hands over the
stream, for the test to write frames into; ``server_events()`` parses what the server sends
back with a wsproto client of the test's own.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from wsproto.connection import Connection as Framing
from wsproto.connection import ConnectionType

import aioh2s

WS_REQUEST = {
    ":method": "CONNECT",
    ":protocol": "websocket",
    ":path": "/ws",
    "sec-websocket-version": "13",
}


def frame(opcode: int, payload: bytes, fin: bool = True, rsv: int = 0, mask: bool = True) -> bytes:
    """One RFC 6455 frame; masked with a zero key (valid, and the payload stays readable)."""
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
async def raw_tunnel(client: aioh2s.Client, **fields: str) -> AsyncIterator[Any]:
    """A WebSocket tunnel whose frames the test writes by hand (the server's are parsed)."""
    async with client.request({**WS_REQUEST, **fields}) as st:
        assert (await st.response_headers())[":status"] == "200"
        yield st


async def server_events(st: Any, until: type, timeout: float = 10) -> list[Any]:
    """Read the server's frames (a wsproto client parses them) until an event of ``until``."""
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
