"""RFC 6455 edge cases against our server, with raw frames from the test."""
from __future__ import annotations

import asyncio
import struct
from collections import deque
from typing import Any

import pytest
from _common import ON, aioh2s, client_for, frame, raw_tunnel, server_events, websocket
from wsproto.events import CloseConnection, Pong, TextMessage

pytestmark = pytest.mark.timeout(30)


class Echo:
    def __init__(self, **accept: Any) -> None:
        self.accept = accept
        self.sockets: list[websocket.WebSocket] = []
        self.done = asyncio.Event()

    async def __call__(self, reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        try:
            async with await websocket.accept(reader, writer, **self.accept) as ws:
                self.sockets.append(ws)
                async for m in ws:
                    await ws.send(m)
        finally:
            self.done.set()


def close(code: int, reason: bytes = b"") -> bytes:
    return frame(0x8, struct.pack("!H", code) + reason)


@pytest.mark.parametrize(
    "data, code",
    [
        (close(1005), 1002),
        (close(1006), 1002),
        (close(1015), 1002),
        (close(999), 1002),
        (close(1004), 1002),
        (close(2999), 1002),
        (close(5000), 1002),
        (frame(0x8, b"\x03"), 1002),  # a 1-byte close payload
        (close(1000, b"\xff"), 1007),  # a reason that is not UTF-8
        (frame(0x1, b"\xe2\x82", fin=False) + frame(0x0, b"\x28"), 1007),  # bad across fragments
        (frame(0x1, b"\xe2\x82"), 1007),  # truncated at the end of the message
        (frame(0x1, b"a", fin=False) + frame(0x1, b"b"), 1002),  # a new message mid-message
        (frame(0x9, b"p", fin=False), 1002),  # a fragmented control frame
        (frame(0x1, "é".encode() * 500 + b"x"), 1009),  # 1001 bytes of UTF-8, 501 characters
        (frame(0x2, b"", fin=False) + frame(0x0, b"x" * 1001), 1009),
    ],
)
async def test_violation_gets_its_close_code(data: bytes, code: int) -> None:
    app = Echo(max_message_size=1000)
    async with client_for(app, ON) as (client, _):
        async with raw_tunnel(client) as st:
            st.writer.write(data)
            events = await server_events(st, CloseConnection)
            assert isinstance(events[-1], CloseConnection)
            assert events[-1].code == code, events
            st.writer.write_eof()
            await asyncio.wait_for(app.done.wait(), 5)


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1007, 1008, 1011, 1012, 1013, 3000, 4999])
async def test_a_valid_close_code_is_echoed(code: int) -> None:
    """RFC 6455 §7.4 plus the IANA registry (1012, 1013; 1014 is refused by wsproto)."""
    app = Echo()
    async with client_for(app, ON) as (client, _):
        async with raw_tunnel(client) as st:
            st.writer.write(close(code, b"why"))
            events = await server_events(st, CloseConnection)
            assert events[-1].code == code
            st.writer.write_eof()
            await asyncio.wait_for(app.done.wait(), 5)
            assert app.sockets[0].close_code == code


async def test_1014_is_not_sent_since_wsproto_refuses_it_on_receipt() -> None:
    """IANA defines 1014 (bad gateway), but wsproto answers it with 1002: we never send it."""
    app = Echo()
    async with client_for(app, ON) as (client, _):
        ws = await websocket.connect(client)
        with pytest.raises(ValueError):
            await ws.close(1014, "bad gateway")
        await asyncio.wait_for(ws.close(1013), 5)
        assert ws.close_code == 1013


async def test_exact_limit_in_multibyte_text_passes() -> None:
    app = Echo(max_message_size=1000)
    async with client_for(app, ON) as (client, _):
        async with raw_tunnel(client) as st:
            st.writer.write(frame(0x1, "é".encode() * 500))
            events = await server_events(st, TextMessage)
            text = "".join(e.data for e in events if isinstance(e, TextMessage))
            assert text == "é" * 500


async def test_fragments_interleaved_with_pings_and_split_utf8() -> None:
    app = Echo()
    async with client_for(app, ON) as (client, _):
        async with raw_tunnel(client) as st:
            euro = "€".encode()
            st.writer.write(
                frame(0x1, b"a" + euro[:1], fin=False)
                + frame(0x9, b"p1")
                + frame(0x0, euro[1:2], fin=False)
                + frame(0xA, b"unsolicited")
                + frame(0x9, b"p2")
                + frame(0x0, euro[2:] + b"z")
            )
            events = await server_events(st, TextMessage)
            pongs = [bytes(e.payload) for e in events if isinstance(e, Pong)]
            texts = "".join(e.data for e in events if isinstance(e, TextMessage))
            assert pongs == [b"p1", b"p2"]
            assert texts.startswith("a")


async def test_data_after_close_frame_is_ignored() -> None:
    app = Echo()
    async with client_for(app, ON) as (client, _):
        async with raw_tunnel(client) as st:
            st.writer.write(frame(0x1, b"before") + close(1000) + frame(0x1, b"after"))
            events = await server_events(st, CloseConnection)
            assert events[-1].code == 1000
            st.writer.write_eof()
            await asyncio.wait_for(app.done.wait(), 5)
            ws = app.sockets[0]
            assert ws._queue == deque() and ws.close_code == 1000
