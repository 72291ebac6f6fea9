"""Shared bits of the WebSocket edge tests (from a hostile review of aioh2s.websocket)."""
from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))

import aioh2s  # noqa: E402
from aioh2s import websocket  # noqa: E402
from helpers import client_for, serving  # noqa: E402
from wsframes import WS_REQUEST, frame, raw_tunnel, server_events  # noqa: E402

__all__ = [
    "ON", "WS_REQUEST", "Holder", "aioh2s", "client_for", "frame", "raw_tunnel",
    "server_events", "serving", "websocket",
]

ON = {"enable_connect_protocol": True}


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
