"""What happens to an ASGI application (and a native handler) when its client or server goes.

Work after the response (Starlette's BackgroundTask) outlives its connection and gets the
grace period of a graceful close; a handler whose stream was cut is still cancelled
``reset_handler_timeout`` after; a bidirectional stream is not taken for a slow upload;
a graceful close says 1001 to open WebSockets at once. Every teardown path runs over h2c
and TLS (the ``wire`` fixture).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import aioh2s
from aioh2s.asgi import ASGIAdapter

pytestmark = pytest.mark.timeout(60)


def background_app(done: dict[str, str], seconds: float) -> Any:
    """Responds, then works on for ``seconds`` inside the application call (a BackgroundTask)."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        key = scope["path"]
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"queued"})
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            done[key] = "cancelled"
            raise
        done[key] = "completed"

    return app


async def fetch(client: aioh2s.Client, path: str) -> bytes:
    async with client.request({":method": "GET", ":path": path}, end_stream=True) as st:
        await asyncio.wait_for(st.response_headers(), 10)
        return await asyncio.wait_for(st.reader.read(), 10)


# -- work after the response ----------------------------------------------------------------


@pytest.mark.parametrize("how", ["close", "abort"])
async def test_work_after_the_response_outlives_the_connection(wire: Any, how: str) -> None:
    """The client closing (or dropping) its connection right after a complete response does
    not cancel the application's work after it, however long past reset_handler_timeout."""
    done: dict[str, str] = {}
    adapter = ASGIAdapter(background_app(done, 0.5), lifespan="off")
    server = await aioh2s.start_server(adapter, "127.0.0.1", 0, reset_handler_timeout=0.1,
                                       **wire.server_options())
    try:
        port = server.sockets[0].getsockname()[1]
        client = await aioh2s.connect("127.0.0.1", port, **wire.client_options())
        assert await fetch(client, "/job") == b"queued"
        if how == "close":
            await asyncio.wait_for(client.close(), 10)
        else:
            client.abort()
        for _ in range(100):
            if server.connections == 0:
                break
            await asyncio.sleep(0.01)
        assert server.connections == 0
        await asyncio.sleep(0.7)
        assert done == {"/job": "completed"}
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), 10)


async def test_graceful_close_waits_for_work_after_the_response(wire: Any) -> None:
    """close(grace) then wait_closed(): the work after a response finishes within the grace
    (and wait_closed() returns as soon as it did), the same for a native handler."""
    done: dict[str, str] = {}

    async def native(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        writer.send_headers({":status": "200"}, end_stream=True)
        await asyncio.sleep(0.5)
        done["native"] = "completed"

    for handler in (ASGIAdapter(background_app(done, 0.5), lifespan="off"), native):
        server = await aioh2s.start_server(handler, "127.0.0.1", 0, reset_handler_timeout=0.1,
                                           **wire.server_options())
        client = await aioh2s.connect("127.0.0.1", server.sockets[0].getsockname()[1],
                                      **wire.client_options())
        await fetch(client, "/job")
        t0 = time.monotonic()
        server.close(10)
        await asyncio.wait_for(server.wait_closed(), 10)
        took = time.monotonic() - t0
        await asyncio.wait_for(client.close(), 10)
        assert 0.3 < took < 5
    assert done == {"/job": "completed", "native": "completed"}


@pytest.mark.expect_log("aioh2s", "INFO", "cancelling 1 handler(s) still running after")
async def test_work_after_the_response_is_cancelled_when_the_grace_ends(wire: Any) -> None:
    """Past the grace period wait_closed() cancels it (logged at INFO): nothing runs on."""
    done: dict[str, str] = {}
    adapter = ASGIAdapter(background_app(done, 30), lifespan="off")
    server = await aioh2s.start_server(adapter, "127.0.0.1", 0, **wire.server_options())
    client = await aioh2s.connect("127.0.0.1", server.sockets[0].getsockname()[1],
                                  **wire.client_options())
    await fetch(client, "/job")
    await asyncio.wait_for(client.close(), 10)
    t0 = time.monotonic()
    server.close(5)
    server.close(0.3)  # a shorter grace given later (a second signal) is the one in force
    await asyncio.wait_for(server.wait_closed(), 10)
    assert time.monotonic() - t0 < 3
    assert done == {"/job": "cancelled"}


async def test_a_handler_whose_stream_was_cut_is_still_cancelled(wire: Any) -> None:
    """An unfinished exchange (the request body still coming) whose connection dies: its
    handler is cancelled reset_handler_timeout later, as before."""
    outcome: list[str] = []
    started = asyncio.Event()

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        writer.send_headers({":status": "200"}, end_stream=True)
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    server = await aioh2s.start_server(handler, "127.0.0.1", 0, reset_handler_timeout=0.1,
                                       **wire.server_options())
    try:
        client = await aioh2s.connect("127.0.0.1", server.sockets[0].getsockname()[1],
                                      **wire.client_options())
        async with client.request({":method": "POST", ":path": "/"}) as st:
            st.writer.write(b"part")
            await st.writer.drain()
            await asyncio.wait_for(started.wait(), 10)
            client.abort()
        for _ in range(200):
            if outcome:
                break
            await asyncio.sleep(0.01)
        assert outcome == ["cancelled"]
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), 10)


# -- request bodies that pause ------------------------------------------------------------------


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Responds at once, then echoes each request chunk as it arrives (a bidirectional stream)."""
    await send({"type": "http.response.start", "status": 200})
    while True:
        m = await receive()
        if m["type"] == "http.disconnect":
            return
        await send({"type": "http.response.body", "body": m["body"],
                    "more_body": m["more_body"]})
        if not m["more_body"]:
            return


async def chat(client: aioh2s.Client, messages: int, pause: float) -> bytes:
    """POST one small message every ``pause`` seconds, reading each echo, then end."""
    echoed = b""
    async with client.request({":method": "POST", ":path": "/chat"}) as st:
        await asyncio.wait_for(st.response_headers(), 10)
        for i in range(messages):
            st.writer.write(b"%d\n" % i)
            await st.writer.drain()
            echoed += await asyncio.wait_for(st.reader.read(100), 5)
            await asyncio.sleep(pause)
        st.writer.write_eof()
        echoed += await asyncio.wait_for(st.reader.read(), 5)
    return echoed


SLOW = {"body_rate_grace": 0.3}  # 240 bytes/s over 0.3 s: 72 bytes, more than the chat sends


async def test_a_bidirectional_stream_is_not_a_slow_upload(wire: Any) -> None:
    """An application that answered before the body ended may get its body at any pace."""
    adapter = ASGIAdapter(echo_app, lifespan="off")
    async with wire.client_for(adapter, SLOW) as (client, _):
        assert await chat(client, 6, 0.2) == b"".join(b"%d\n" % i for i in range(6))


async def test_answering_exempts_a_receive_already_waiting(wire: Any) -> None:
    """A receive() already waiting when the application answers stops min_body_rate's clock
    too (it started it): the body may then pause far past body_rate_grace."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        got: list[bytes] = []

        async def reader() -> None:
            while True:
                m = await receive()
                got.append(m.get("body", b""))
                if m["type"] == "http.disconnect" or not m.get("more_body"):
                    return

        task = asyncio.ensure_future(reader())
        await asyncio.sleep(0.05)  # the reader waits in receive() now
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"hi", "more_body": True})
        await task
        await send({"type": "http.response.body", "body": b"".join(got)})

    async with wire.client_for(ASGIAdapter(app, lifespan="off"), SLOW) as (client, _):
        async with client.request({":method": "POST", ":path": "/bidi"}) as st:
            st.writer.write(b"0123456789")
            await st.writer.drain()
            await asyncio.wait_for(st.response_headers(), 5)
            assert await asyncio.wait_for(st.reader.read(2), 5) == b"hi"
            await asyncio.sleep(1.0)  # > body_rate_grace with the reader waiting all along
            st.writer.write(b"end")
            st.writer.write_eof()
            assert await asyncio.wait_for(st.reader.read(), 5) == b"0123456789end"


@pytest.mark.expect_log("aioh2s", "WARNING", "min_body_rate")
@pytest.mark.parametrize("slow_body", ["auto", "never"])
async def test_slow_uploads_are_still_cut(wire: Any, slow_body: str) -> None:
    """A body that trickles before any answer (or with slow_body="never", any body) still
    gets its connection GOAWAY(ENHANCE_YOUR_CALM); slow_body="always" exempts it."""

    async def upload_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"thanks"})

    app = echo_app if slow_body == "never" else upload_app
    async with wire.client_for(ASGIAdapter(app, lifespan="off", slow_body=slow_body),
                               SLOW) as (client, _):
        with pytest.raises(aioh2s.ConnectionClosed) as e:
            if slow_body == "never":
                await chat(client, 6, 0.2)
            else:
                async with client.request({":method": "POST", ":path": "/up"}) as st:
                    for _ in range(6):
                        st.writer.write(b"x")
                        await st.writer.drain()
                        await asyncio.sleep(0.2)
                    st.writer.write_eof()
                    await asyncio.wait_for(st.response_headers(), 5)
        assert e.value.error_code == aioh2s.ErrorCode.ENHANCE_YOUR_CALM
    async with wire.client_for(ASGIAdapter(upload_app, lifespan="off", slow_body="always"),
                               SLOW) as (client, _):
        async with client.request({":method": "POST", ":path": "/up"}) as st:
            for _ in range(4):
                st.writer.write(b"x")
                await st.writer.drain()
                await asyncio.sleep(0.2)
            st.writer.write_eof()
            assert await asyncio.wait_for(st.reader.read(), 5) == b"thanks"
    with pytest.raises(ValueError, match="slow_body"):
        ASGIAdapter(app, slow_body="sometimes")


# -- WebSockets when the server closes ------------------------------------------------------------


async def test_graceful_close_says_1001_to_open_websockets(wire: Any) -> None:
    """Server.close(grace): each open WebSocket gets a close frame 1001 at once (one accepted
    during the close too), the application websocket.disconnect 1001, and wait_closed()
    returns without waiting out the grace."""
    from aioh2s import websocket

    seen: list[Any] = []
    accepted = asyncio.Event()
    closing = asyncio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        if scope["path"] == "/late":
            await closing.wait()  # accepts only once the server is closing
        else:
            accepted.set()
        await send({"type": "websocket.accept"})
        while (m := await receive())["type"] != "websocket.disconnect":
            pass
        seen.append((scope["path"], m["code"], m["reason"]))

    adapter = ASGIAdapter(app, lifespan="off")
    server = await aioh2s.start_server(adapter, "127.0.0.1", 0, enable_connect_protocol=True,
                                       **wire.server_options())
    client = await aioh2s.connect("127.0.0.1", server.sockets[0].getsockname()[1],
                                  **wire.client_options())
    try:
        first = await websocket.connect(client, "/")
        late = asyncio.ensure_future(websocket.connect(client, "/late"))
        await asyncio.wait_for(accepted.wait(), 5)
        await asyncio.sleep(0.05)  # the /late request is in
        t0 = time.monotonic()
        server.close(30)
        closing.set()
        second = await asyncio.wait_for(late, 5)
        for ws in (first, second):
            with pytest.raises(aioh2s.WebSocketClosed) as e:
                await asyncio.wait_for(ws.receive(), 5)
            assert e.value.code == 1001
        await asyncio.wait_for(server.wait_closed(), 10)
        assert time.monotonic() - t0 < 5
        assert sorted(seen) == [("/", 1001, "the server is shutting down"),
                                ("/late", 1001, "the server is shutting down")]
    finally:
        await asyncio.wait_for(client.close(), 10)


# -- a header block larger than the peer takes ----------------------------------------------------


@pytest.mark.expect_log("aioh2s", "ERROR", "handler failed on stream")
@pytest.mark.expect_log("aioh2s", "ERROR", "more than the 1024 the peer accepts")
async def test_headers_over_the_peers_limit_are_refused_locally(wire: Any) -> None:
    """Response headers over the client's SETTINGS_MAX_HEADER_LIST_SIZE: LocalProtocolError
    before anything is sent (ASGI: a 500, whether the body followed at once or not; native:
    from send_headers, trailers too), and the connection lives on. A client's request over
    the server's limit is refused the same way."""
    big = b"x" * 1100
    errors: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-big", big)]})
        if scope["path"] == "/later":
            await asyncio.sleep(0.05)  # the held headers go out on their own
        await send({"type": "http.response.body", "body": b"never"})

    async def native(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        try:
            writer.send_headers({":status": "200", "x-big": big.decode()})
        except aioh2s.LocalProtocolError as e:
            errors.append(str(e))
        writer.send_headers({":status": "200"})
        writer.write(b"small")
        try:
            writer.send_trailers({"x-big": big.decode()})
        except aioh2s.LocalProtocolError as e:
            errors.append(str(e))
        writer.write_eof()

    async with wire.client_for(ASGIAdapter(app, lifespan="off"),
                               max_header_list_size=1024) as (client, _):
        for path in ("/now", "/later"):
            async with client.request({":path": path}, end_stream=True) as st:
                assert (await asyncio.wait_for(st.response_headers(), 5))[":status"] == "500"
        assert not client.is_closing()
    async with wire.client_for(native, {"max_header_list_size": 1024},
                               max_header_list_size=1024) as (client, _):
        async with client.request({":path": "/"}, end_stream=True) as st:
            assert (await asyncio.wait_for(st.response_headers(), 5))[":status"] == "200"
            assert await asyncio.wait_for(st.reader.read(), 5) == b"small"
        with pytest.raises(aioh2s.LocalProtocolError, match="SETTINGS_MAX_HEADER_LIST_SIZE"):
            async with client.request({":path": "/", "x-big": big.decode()}, end_stream=True):
                pass
        assert (await fetch(client, "/")) == b"small"
    assert len(errors) == 4 and all("more than the 1024 the peer accepts" in e for e in errors)



async def _under_a_tiny_limit(port: int, wire: Any, paths: list[str]) -> dict[str, Any]:
    """GET each path from a raw h2 client whose SETTINGS_MAX_HEADER_LIST_SIZE is 60 (below
    any aioh2s client's): what each stream got (its response headers or its reset code),
    with "ping" True if the connection still answers a PING after them."""
    import ssl

    import h2.config
    import h2.connection
    import h2.events
    import h2.settings

    ctx = None
    if wire.tls:
        ctx = ssl.create_default_context(cafile=wire.certs.ca)
        ctx.set_alpn_protocols(["h2"])
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname="localhost" if ctx else None)
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    c.update_settings({h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 60})
    ids = {}
    for path in paths:
        sid = c.get_next_available_stream_id()
        ids[sid] = path
        c.send_headers(sid, [(":method", "GET"), (":scheme", "https" if ctx else "http"),
                             (":authority", "localhost"), (":path", path)], end_stream=True)
    writer.write(c.data_to_send())
    got: dict[str, Any] = {}
    pinged = False
    try:
        while "ping" not in got or len(got) < len(paths) + 1:
            data = await asyncio.wait_for(reader.read(65536), 5)
            if not data:
                break
            for ev in c.receive_data(data):
                if isinstance(ev, h2.events.StreamReset) and ev.stream_id in ids:
                    got[ids[ev.stream_id]] = ev.error_code
                elif isinstance(ev, h2.events.ResponseReceived):
                    got[ids[ev.stream_id]] = dict(ev.headers)
                elif isinstance(ev, h2.events.PingAckReceived) and ev.ping_data == b"after...":
                    got["ping"] = True
            if len(got) == len(paths) and not pinged:
                pinged = True
                c.ping(b"after...")  # every stream is answered: the connection lives on?
            writer.write(c.data_to_send())
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass
    return got


@pytest.mark.expect_log("aioh2s", "ERROR", "handler failed on stream")
@pytest.mark.expect_log("aioh2s", "ERROR", "ASGI application's response on stream")
@pytest.mark.expect_log("aioh2s", "ERROR", "handler returned without a response")
async def test_a_peer_limit_below_the_500_gets_a_reset(wire: Any) -> None:
    """A client limit even the fallback 500 is over (under some 90 bytes): the stream is
    reset with INTERNAL_ERROR (the 500 raised in a loop callback and left the cycle
    half-done), and the connection lives on."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"x-big", b"x" * 100)]})
        if scope["path"] == "/later":
            await asyncio.sleep(0.05)  # the held headers go out on their own
        await send({"type": "http.response.body", "body": b"never"})

    async def native(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        if reader.headers[":path"] == "/raise":
            raise RuntimeError("boom")  # (before any answer: the server's 500)

    for handler, paths in ((ASGIAdapter(app, lifespan="off"), ["/now", "/later"]),
                           (native, ["/silent", "/raise"])):
        async with wire.serving(handler) as (_server, port):
            got = await _under_a_tiny_limit(port, wire, paths)
        assert got == {**{p: aioh2s.ErrorCode.INTERNAL_ERROR for p in paths}, "ping": True}
