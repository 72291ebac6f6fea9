"""aioh2s.websocket: WebSockets over HTTP/2 (RFC 8441 + RFC 6455), on real sockets.

Our client and our server over h2c and TLS (the ``wire`` fixture): messages both ways, the
close handshake from either side, pings, subprotocols, refusals. Against a peer that breaks
RFC 6455 (raw frames written into an extended CONNECT tunnel and read back through a wsproto
client of the test's own): the right close code, and never a hang. Bounded memory with a
slow consumer or a PING flood; cancel-safety; misuse raising before anything is sent; no
task left behind. A real browser is tests/test_websocket_browser.py.
"""

from __future__ import annotations

import asyncio
import gc
import struct
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from wsproto.events import CloseConnection, Pong, TextMessage

import aioh2s
from aioh2s import websocket
from helpers import pattern
from wsframes import WS_REQUEST, frame, raw_tunnel, server_events

pytestmark = pytest.mark.timeout(60)

ON = {"enable_connect_protocol": True}


class Echo:
    """Accepts WebSockets (choosing the first subprotocol offered) and echoes messages."""

    def __init__(self, **accept: Any) -> None:
        self.accept = accept
        self.closes: list[aioh2s.WebSocketClosed] = []
        self.sockets: list[websocket.WebSocket] = []
        self.done = asyncio.Event()

    async def __call__(self, reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        if not websocket.is_websocket(reader.headers):
            writer.send_headers({":status": "404", "content-length": "4"})
            writer.write(b"nope")
            writer.write_eof()
            return
        offered = websocket.subprotocols(reader.headers)
        try:
            async with await websocket.accept(
                reader, writer, subprotocol=offered[0] if offered else None, **self.accept
            ) as ws:
                self.sockets.append(ws)
                try:
                    async for message in ws:
                        if message == "close-me":
                            await ws.close(4000, "as asked")
                            break
                        await ws.send(message)
                except aioh2s.WebSocketClosed as e:
                    self.closes.append(e)
                    raise
        finally:
            self.done.set()


# -- our client and our server ---------------------------------------------------------------


async def test_messages_both_ways(wire: Any) -> None:
    app = Echo()
    async with wire.client_for(app, ON) as (client, _):
        async with websocket.connect(client, "/chat", subprotocols=["chat.v2", "chat.v1"]) as ws:
            assert ws.subprotocol == "chat.v2"
            assert ws.reader.stream_id % 2 == 1
            await ws.send("héllo")
            assert await ws.receive() == "héllo"
            await ws.send(b"\x00\xff")
            assert await ws.receive() == b"\x00\xff"
            await ws.send(bytearray(b"ba"))
            assert await ws.receive() == b"ba"
            await ws.send(memoryview(b"mv"))
            assert await ws.receive() == b"mv"
            big = pattern(1 << 20, seed=1)
            await ws.send(big)
            assert await ws.receive() == big
            text = "ü" * (1 << 19)
            await ws.send(text)
            assert await ws.receive() == text
            await ws.send("")
            assert await ws.receive() == ""
            assert 0 <= await ws.ping() < 5
            assert 0 <= await ws.ping(b"payload") < 5
        assert ws.state == "closed" and ws.close_code == 1000
        await asyncio.wait_for(app.done.wait(), 5)
    assert app.closes == []  # the server's loop ended cleanly


async def test_url_form_dials_and_closes_its_own_connection(wire: Any) -> None:
    app = Echo()
    async with wire.serving(app, **ON) as (_server, port):
        scheme = "wss" if wire.tls else "ws"
        ssl = wire.client_options().get("ssl")
        url = f"{scheme}://127.0.0.1:{port}/echo?x=1"
        async with websocket.connect(url, ssl=ssl) as ws:
            await ws.send("over its own connection")
            assert await ws.receive() == "over its own connection"
            conn = ws.writer.connection
        assert conn.is_closing()
        ws2 = await websocket.connect(url, ssl=ssl)
        await ws2.send(b"x")
        assert await ws2.receive() == b"x"
        await ws2.close()
        assert ws2.writer.connection.is_closing()


async def test_server_closes_first(wire: Any) -> None:
    app = Echo()
    async with wire.client_for(app, ON) as (client, _):
        ws = await websocket.connect(client)
        await ws.send("one")
        await ws.send("close-me")
        assert await ws.receive() == "one"
        with pytest.raises(aioh2s.WebSocketClosed) as info:
            await ws.receive()
        assert (info.value.code, info.value.reason, info.value.local) == (4000, "as asked", False)
        assert not info.value.clean
        with pytest.raises(aioh2s.WebSocketClosed):
            await ws.send("too late")
        await asyncio.wait_for(ws.wait_closed(), 5)
        assert ws.state == "closed" and ws.close_code == 4000
        await ws.close()  # closing a closed WebSocket only waits
        await asyncio.wait_for(app.done.wait(), 5)
        assert app.sockets[0].close_code == 4000


async def test_client_close_code_and_reason_reach_the_server(wire: Any) -> None:
    app = Echo()
    async with wire.client_for(app, ON) as (client, _):
        ws = await websocket.connect(client)
        await ws.close(4321, "bye now")
        await asyncio.wait_for(app.done.wait(), 5)
        assert [(c.code, c.reason, c.local) for c in app.closes] == [(4321, "bye now", False)]
        assert ws.close_code == 4321 and ws.close_reason == "bye now"


async def test_iteration_ends_on_a_normal_close_only(wire: Any) -> None:
    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        code = int(reader.headers[":path"].strip("/"))
        async with await websocket.accept(reader, writer) as ws:
            await ws.send("m")
            await ws.close(code)

    async with wire.client_for(handler, ON) as (client, _):
        for code, clean in ((1000, True), (1001, True), (1011, False)):
            ws = await websocket.connect(client, f"/{code}")
            got = []
            try:
                async for message in ws:
                    got.append(message)
                assert clean
            except aioh2s.WebSocketClosed as e:
                assert not clean and e.code == code
            assert got == ["m"]
            await ws.wait_closed()


async def test_an_exception_in_async_with_closes_with_1011(wire: Any) -> None:
    app = Echo()
    async with wire.client_for(app, ON) as (client, _):
        with pytest.raises(KeyError):
            async with websocket.connect(client):
                raise KeyError("app bug")
        await asyncio.wait_for(app.done.wait(), 5)
        assert [c.code for c in app.closes] == [1011]


async def test_rejections(wire: Any) -> None:
    app = Echo()
    async with wire.client_for(app) as (client, _):  # extended CONNECT not enabled
        with pytest.raises(aioh2s.ExtendedConnectUnsupported):
            await websocket.connect(client)
    async with wire.client_for(app, ON) as (client, _):

        async def not_ws(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
            writer.send_headers({":status": "403"})
            writer.write(b"go away")
            writer.write_eof()

    async with wire.client_for(not_ws, ON) as (client, _):
        with pytest.raises(aioh2s.WebSocketRejected) as info:
            await websocket.connect(client)
        assert info.value.status == 403 and info.value.body == b"go away"
        # The connection is fine afterwards.
        async with client.request({":path": "/"}, end_stream=True) as st:
            assert (await st.response_headers())[":status"] == "403"


async def test_a_subprotocol_not_offered_fails_the_client(wire: Any) -> None:
    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        writer.send_headers({":status": "200", "sec-websocket-protocol": "unasked"})
        await reader.read()

    async with wire.client_for(handler, ON) as (client, _):
        with pytest.raises(aioh2s.WebSocketRejected):
            await websocket.connect(client, subprotocols=["asked"])


async def test_a_wrong_version_is_answered_400() -> None:
    app = Echo()
    async with aioh2s_client(app) as client:
        async with client.request({**WS_REQUEST, "sec-websocket-version": "8"}) as st:
            h = await st.response_headers()
            assert h[":status"] == "400" and h["sec-websocket-version"] == "13"
            assert await st.reader.read() == b""


@asynccontextmanager
async def aioh2s_client(handler: Any, **server: Any) -> AsyncIterator[aioh2s.Client]:
    from helpers import client_for

    async with client_for(handler, {**ON, **server}) as (client, _):
        yield client


# -- peers that break RFC 6455 ---------------------------------------------------------------


@pytest.mark.parametrize(
    "data, code",
    [
        (frame(0x1, b"unmasked", mask=False), 1002),  # a client's frames must be masked
        (frame(0x1, b"\xff\xfe"), 1007),  # text that is not UTF-8
        (frame(0x2, b"x", rsv=0x40), 1002),  # a reserved bit without an extension
        (frame(0x9, b"p" * 126), 1002),  # a control frame over 125 bytes
        (frame(0x0, b"orphan"), 1002),  # a continuation with no message to continue
        (frame(0x3, b"?"), 1002),  # a reserved opcode
        (frame(0x2, b"y" * 2000), 1009),  # over the server's max_message_size (1000)
        (frame(0x1, b"a" * 600, fin=False) + frame(0x0, b"b" * 600), 1009),  # so in fragments
    ],
)
async def test_a_peer_breaking_rfc6455_gets_the_close_code(data: bytes, code: int) -> None:
    app = Echo(max_message_size=1000)
    async with aioh2s_client(app) as client:
        async with raw_tunnel(client) as st:
            st.writer.write(data)
            events = await server_events(st, CloseConnection)
            assert events[-1].code == code
            # The server ended its side; its handler saw its own close frame, and is done once
            # we end ours.
            assert await asyncio.wait_for(st.reader.read(), 5) == b""
            st.writer.write_eof()
            await asyncio.wait_for(app.done.wait(), 5)
            assert [(c.code, c.local) for c in app.closes] == [(code, True)]


async def test_a_peer_that_never_answers_our_close_is_reset_after_close_timeout() -> None:
    app = Echo(close_timeout=0.3)
    async with aioh2s_client(app) as client:
        async with raw_tunnel(client) as st:
            st.writer.write(frame(0x1, b"close-me"))
            events = await server_events(st, CloseConnection)
            assert events[-1].code == 4000
            # We neither echo the close frame nor end our side: the server resets the stream.
            loop = asyncio.get_running_loop()
            start = loop.time()
            with pytest.raises(aioh2s.StreamReset) as info:
                await asyncio.wait_for(st.reader.read(), 5)
            assert info.value.error_code == aioh2s.ErrorCode.CANCEL
            assert loop.time() - start < 2
            await asyncio.wait_for(app.done.wait(), 5)


async def test_a_client_that_keeps_its_side_open_after_the_close_handshake_is_reset() -> None:
    """A server is done once the close frames are exchanged (nghttpx keeps its side open)."""
    app = Echo(close_timeout=30)
    async with aioh2s_client(app) as client:
        async with raw_tunnel(client) as st:
            st.writer.write(frame(0x1, b"close-me"))
            await server_events(st, CloseConnection)
            st.writer.write(frame(0x8, struct.pack("!H", 4000)))
            assert await asyncio.wait_for(st.reader.read(), 5) == b""  # the server ended its side
            await asyncio.wait_for(app.done.wait(), 2)  # long before close_timeout
            assert app.sockets[0].close_code == 4000
            with pytest.raises(aioh2s.StreamReset) as info:
                for _ in range(100):  # our side still open: the server's reset arrives
                    await asyncio.sleep(0.02)
                    await st.writer.drain()
            assert info.value.error_code == aioh2s.ErrorCode.NO_ERROR


async def test_a_client_waits_for_the_servers_end_of_stream_within_close_timeout(
    wire: Any,
) -> None:
    hold = asyncio.Event()

    async def lingering(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        writer.send_headers({":status": "200"})
        data = await reader.read(100)  # the client's close frame: echo it, keep our side open
        assert data[0] == 0x88
        writer.write(frame(0x8, struct.pack("!H", 1000), mask=False))
        await hold.wait()

    async with wire.client_for(lingering, ON) as (client, _):
        ws = await websocket.connect(client, close_timeout=0.3)
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.wait_for(ws.close(), 5)
        assert 0.25 < loop.time() - start < 2
        assert ws.close_code == 1000
        hold.set()


async def test_a_stream_ending_without_a_close_frame_is_1006(wire: Any) -> None:
    app = Echo()
    async with wire.client_for(app, ON) as (client, _):
        async with raw_tunnel(client) as st:
            st.writer.write(frame(0x1, b"hi"))
            events = await server_events(st, TextMessage)
            assert events[-1].data == "hi"
            st.writer.write_eof()  # no close frame: the server ends its side too
            assert await asyncio.wait_for(st.reader.read(), 5) == b""
            await asyncio.wait_for(app.done.wait(), 5)
            assert [(c.code, c.local) for c in app.closes] == [(1006, False)]

        async def abrupt(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
            writer.send_headers({":status": "200"})
            writer.write(frame(0x1, b"last words", mask=False))
            writer.write_eof()

    async with wire.client_for(abrupt, ON) as (client, _):
        ws = await websocket.connect(client)
        assert await ws.receive() == "last words"
        with pytest.raises(aioh2s.WebSocketClosed) as info:
            await ws.receive()
        assert info.value.code == 1006 and not info.value.clean
        await asyncio.wait_for(ws.wait_closed(), 5)


async def test_a_reset_stream_is_1006_with_the_reset_as_cause(wire: Any) -> None:
    async def reset(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        ws = await websocket.accept(reader, writer)
        assert await ws.receive() == "x"
        writer.reset(aioh2s.ErrorCode.INTERNAL_ERROR)

    async with wire.client_for(reset, ON) as (client, _):
        ws = await websocket.connect(client)
        await ws.send("x")
        with pytest.raises(aioh2s.WebSocketClosed) as info:
            await asyncio.wait_for(ws.receive(), 5)
        assert info.value.code == 1006
        assert isinstance(info.value.__cause__, aioh2s.StreamReset)
        assert info.value.__cause__.error_code == aioh2s.ErrorCode.INTERNAL_ERROR
        with pytest.raises(aioh2s.WebSocketClosed):
            await ws.ping()
        await asyncio.wait_for(ws.close(), 5)  # nothing left to close: returns


async def test_server_shutdown_ends_open_websockets(wire: Any) -> None:
    app = Echo()
    async with wire.serving(app, grace=0.2, **ON) as (server, port):
        client = await wire.connect(port)
        try:
            ws = await websocket.connect(client)
            await ws.send("a")
            assert await ws.receive() == "a"
            server.close()
            await asyncio.wait_for(server.wait_closed(), 5)
            with pytest.raises(aioh2s.WebSocketClosed) as info:
                await asyncio.wait_for(ws.receive(), 5)
            assert info.value.code == 1006
            await asyncio.wait_for(ws.wait_closed(), 5)
        finally:
            await client.close()


# -- bounded memory, cancel-safety -----------------------------------------------------------


async def test_a_slow_consumer_pauses_the_sender() -> None:
    """The server does not read: the client's sends stop once the server holds its bound."""
    accepted: list[websocket.WebSocket] = []
    release = asyncio.Event()

    async def slow(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        async with await websocket.accept(reader, writer, max_message_size=64 * 1024) as ws:
            accepted.append(ws)
            await release.wait()
            n = 0
            async for message in ws:
                n += len(message)
                if message == b"end":
                    break
            await ws.send(str(n))

    async with aioh2s_client(slow) as client:
        ws = await websocket.connect(client)
        chunk = b"z" * 16 * 1024
        sent = 0

        async def flood() -> None:
            nonlocal sent
            while True:
                await ws.send(chunk)
                sent += len(chunk)

        task = asyncio.create_task(flood())
        await asyncio.sleep(1)
        # Bound: the server's queue (max_message_size plus one message), the stream's window
        # and receive buffer, our write high-water mark; far below what was offered in 1 s.
        held = accepted[0]._queued
        assert held <= 64 * 1024 + len(chunk), held
        assert sent <= 4 * 1024 * 1024, sent
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()
        await ws.send(b"end")
        # Everything sent arrived (the cancelled send had queued its whole message).
        total = int(await asyncio.wait_for(ws.receive(), 10))
        assert total >= sent + 3 and (total - 3 - sent) % len(chunk) == 0
        await ws.close()


async def test_a_ping_flood_without_reading_stays_bounded() -> None:
    app = Echo()
    async with aioh2s_client(app, stream_window=65535) as client:
        async with raw_tunnel(client) as st:
            ping = frame(0x9, b"p" * 125)
            sent = 0
            # Without reading our pongs: the server stops reading once its pongs fill our
            # window and its write buffer, so our writes stop being taken.
            try:
                for _ in range(200):
                    st.writer.write(ping * 100)
                    sent += len(ping) * 100
                    await asyncio.wait_for(st.writer.drain(), 0.5)
            except asyncio.TimeoutError:
                pass
            assert sent < 20 * 1024 * 1024, "the server kept taking pings it could not answer"
            ws = app.sockets[0]
            out = ws.writer._s.out_size if hasattr(ws.writer._s, "out_size") else 0
            assert out <= 2 * 1024 * 1024, out
            # Reading now: every ping answered, in order.
            events = await server_events(st, Pong, timeout=10)
            assert isinstance(events[0], Pong)


async def test_a_cancelled_receive_loses_no_message(wire: Any) -> None:
    app = Echo()
    async with wire.client_for(app, ON) as (client, _):
        async with websocket.connect(client) as ws:
            want = [f"m{i}" for i in range(30)]
            for m in want:
                await ws.send(m)
            got: list[Any] = []
            cancelled = 0
            for i in range(1000):
                if len(got) == len(want):
                    break
                task = asyncio.create_task(ws.receive())
                for _ in range(i % 4):
                    await asyncio.sleep(0)
                task.cancel()
                try:
                    got.append(await task)
                except asyncio.CancelledError:
                    cancelled += 1
            assert got == want and cancelled > 0
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(ws.receive(), 0.05)
            await ws.send("after")
            assert await ws.receive() == "after"


async def test_a_cancelled_close_still_closes(wire: Any) -> None:
    app = Echo()
    async with wire.client_for(app, ON) as (client, _):
        ws = await websocket.connect(client)
        task = asyncio.create_task(ws.close(4001))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(ws.wait_closed(), 5)
        await asyncio.wait_for(app.done.wait(), 5)
        assert [c.code for c in app.closes] == [4001]


async def test_a_ping_nobody_answers_times_out_and_close_fails_it(wire: Any) -> None:
    async def silent(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        writer.send_headers({":status": "200"})
        await reader.read()

    async with wire.client_for(silent, ON) as (client, _):
        ws = await websocket.connect(client, close_timeout=0.2)
        with pytest.raises(asyncio.TimeoutError):
            await ws.ping(timeout=0.05)
        pending = asyncio.create_task(ws.ping(timeout=None))
        await asyncio.sleep(0.01)
        await asyncio.wait_for(ws.close(), 5)  # no answer: reset after close_timeout
        with pytest.raises(aioh2s.WebSocketClosed):
            await pending
        assert ws.close_code == 1006


# -- misuse ----------------------------------------------------------------------------------


async def test_misuse_raises_before_anything_is_sent(wire: Any) -> None:
    seen: list[Any] = []

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        if not websocket.is_websocket(reader.headers):
            with pytest.raises(ValueError, match="not a WebSocket"):
                await websocket.accept(reader, writer)
            writer.send_headers({":status": "204"}, end_stream=True)
            return
        with pytest.raises(ValueError, match="not offered"):
            await websocket.accept(reader, writer, subprotocol="nobody-asked")
        with pytest.raises(ValueError):
            await websocket.accept(reader, writer, max_message_size=0)
        ws = await websocket.accept(reader, writer)
        with pytest.raises(ValueError, match="headers were sent"):
            await websocket.accept(reader, writer)
        seen.append(ws)
        async with ws:
            async for m in ws:
                await ws.send(m)

    async with wire.client_for(handler, ON) as (client, _):
        async with client.request({":path": "/"}, end_stream=True) as st:
            assert (await st.response_headers())[":status"] == "204"
        with pytest.raises(ValueError):
            websocket.connect(client, subprotocols=["a b"])
        with pytest.raises(ValueError):
            websocket.connect("http://127.0.0.1/")
        with pytest.raises(ValueError):
            websocket.connect("ws://127.0.0.1/", "/path")
        with pytest.raises(ValueError):
            websocket.connect(client, headers={":path": "/x"})
        async with websocket.connect(client) as ws:
            for code in (999, 1005, 1006, 1015, 2999, 5000):
                with pytest.raises(ValueError):
                    await ws.close(code)
            with pytest.raises(ValueError):
                await ws.close(1000, "r" * 124)
            with pytest.raises(TypeError):
                await ws.send(42)  # type: ignore[arg-type]
            with pytest.raises(ValueError):
                await ws.ping(b"p" * 126)
            waiting = asyncio.create_task(ws.receive())
            await asyncio.sleep(0)
            with pytest.raises(RuntimeError, match="another task"):
                await ws.receive()
            # After all of that, the WebSocket still works.
            await ws.send("still fine")
            assert await waiting == "still fine"
        assert ws.close_code == 1000


async def test_no_task_is_left_behind(wire: Any) -> None:
    app = Echo()
    before = {t for t in asyncio.all_tasks()}
    async with wire.client_for(app, ON) as (client, _):
        for i in range(10):
            ws = await websocket.connect(client)
            await ws.send("x")
            assert await ws.receive() == "x"
            if i % 3 == 0:
                await ws.close()
            elif i % 3 == 1:
                ws.abort()
                await ws.wait_closed()
            else:
                async with ws:
                    pass
            assert ws._task.done()
    gc.collect()
    left = {t for t in asyncio.all_tasks() if t not in before and not t.done()}
    assert left <= {asyncio.current_task()}


async def test_server_handler_returning_without_close_ends_the_websocket(wire: Any) -> None:
    async def careless(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        ws = await websocket.accept(reader, writer)
        await ws.send("bye")
        # returns with the WebSocket open: the stream ends under it

    async with wire.client_for(careless, ON) as (client, _):
        ws = await websocket.connect(client)
        assert await ws.receive() == "bye"
        with pytest.raises(aioh2s.WebSocketClosed) as info:
            await asyncio.wait_for(ws.receive(), 5)
        assert info.value.code == 1006
        await asyncio.wait_for(ws.wait_closed(), 5)



async def test_close_while_unread_messages_fill_the_queue_still_completes(wire: Any) -> None:
    async def chatty(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        async with await websocket.accept(reader, writer) as ws:
            try:
                while True:
                    await ws.send(b"m" * 1000)
            except aioh2s.WebSocketClosed:
                pass

    async with wire.client_for(chatty, ON) as (client, _):
        ws = await websocket.connect(client, max_message_size=10_000)
        for _ in range(100):  # the queue fills: the reader pauses
            if ws._queued >= 10_000:
                break
            await asyncio.sleep(0.01)
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.wait_for(ws.close(4003), 5)
        assert loop.time() - start < 2  # not close_timeout: the peer's close frame was read
        assert ws.close_code == 4003
        assert ws._queued <= 10_000 + 1100  # the bound, plus one message and its overhead


async def test_a_cancelled_handler_ends_its_websocket_at_once(wire: Any) -> None:
    """Its close frame (1001) is queued, but a cancelled handler's stream is reset (CANCEL)."""
    entered = asyncio.Event()
    tasks: list[asyncio.Task[Any]] = []

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        tasks.append(asyncio.current_task())  # type: ignore[arg-type]
        async with await websocket.accept(reader, writer) as ws:
            entered.set()
            await ws.receive()

    async with wire.client_for(handler, ON) as (client, _):
        ws = await websocket.connect(client)
        await asyncio.wait_for(entered.wait(), 5)
        tasks[0].cancel()
        with pytest.raises(aioh2s.WebSocketClosed) as info:
            await asyncio.wait_for(ws.receive(), 2)
        assert info.value.code in (1001, 1006) and not info.value.local
        await asyncio.wait_for(ws.wait_closed(), 2)


async def test_a_url_websocket_closes_its_connection_when_it_ends_by_itself(wire: Any) -> None:
    app = Echo()
    async with wire.serving(app, **ON) as (_server, port):
        scheme = "wss" if wire.tls else "ws"
        ssl = wire.client_options().get("ssl")
        ws = await websocket.connect(f"{scheme}://127.0.0.1:{port}/", ssl=ssl)
        await ws.send("close-me")
        with pytest.raises(aioh2s.WebSocketClosed):
            await asyncio.wait_for(ws.receive(), 5)
        conn = ws.writer.connection
        await asyncio.wait_for(conn.wait_closed(), 5)  # nobody called close()/wait_closed()


async def test_a_cancelled_client_block_closes_with_1001_without_waiting(wire: Any) -> None:
    app = Echo()
    async with wire.client_for(app, ON) as (client, _):
        entered = asyncio.Event()

        async def user() -> None:
            async with websocket.connect(client) as ws:
                entered.set()
                await ws.receive()

        task = asyncio.create_task(user())
        await asyncio.wait_for(entered.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 1)
        await asyncio.wait_for(app.done.wait(), 5)  # the close went on without the caller
        assert app.closes == [] and app.sockets[0].close_code == 1001


class Idle:
    """Accepts (max_message_size 64 KiB) and never receives: the test floods it."""

    def __init__(self) -> None:
        self.accepted: list[websocket.WebSocket] = []

    async def __call__(self, reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        ws = await websocket.accept(reader, writer, max_message_size=64 * 1024)
        self.accepted.append(ws)
        await ws.wait_closed()


@pytest.mark.parametrize(
    "unit", [frame(0x2, b""), frame(0x1, b""), frame(0x2, b"ab")], ids=["empty", "empty-text", "2B"]
)
async def test_a_flood_of_tiny_messages_stays_within_the_bound(unit: bytes) -> None:
    """Each queued message counts the memory it takes, and a full queue stops the parsing of
    what was already read: a 64 KiB read of empty frames is some 10,000 messages."""
    idle = Idle()
    accepted = idle.accepted
    async with aioh2s_client(idle) as client:
        async with raw_tunnel(client) as st:
            block = unit * (256 * 1024 // len(unit))
            sent = 0
            try:
                while sent < 4 * 1024 * 1024:
                    st.writer.write(block)
                    await asyncio.wait_for(st.writer.drain(), 1)
                    sent += len(block)
            except asyncio.TimeoutError:
                pass  # the server stopped taking them: flow control
            ws = accepted[0]
            assert ws._queued <= 64 * 1024 + 200, ws._queued
            assert len(ws._queue) * 33 <= 64 * 1024 + 200  # bytes objects: 33 bytes or more
            assert sent < 4 * 1024 * 1024
            st.writer.reset()


async def test_a_message_of_endless_empty_fragments_holds_nothing() -> None:
    idle = Idle()
    accepted = idle.accepted
    async with aioh2s_client(idle) as client:
        async with raw_tunnel(client) as st:
            st.writer.write(frame(0x2, b"", fin=False))
            block = frame(0x0, b"", fin=False) * 40_000
            tracemalloc.start()
            try:
                base = tracemalloc.get_traced_memory()[0]
                st.writer.write(block)  # 240 KB: 40,000 fragments
                await asyncio.wait_for(st.writer.drain(), 10)
                for _ in range(400):  # until the server parsed them all
                    if accepted[0]._reader._s.buf or accepted[0]._queue:
                        await asyncio.sleep(0.05)
                    else:
                        break
                grown = tracemalloc.get_traced_memory()[0] - base
                st.writer.write(frame(0x0, b"end", fin=True))
                assert await asyncio.wait_for(accepted[0].receive(), 20) == b"end"
            finally:
                tracemalloc.stop()
            # A list of the fragments would be 320 KB of slots alone.
            assert grown < 150 * 1024, grown
            st.writer.reset()
