"""aioh2s.asgi's websocket scope (RFC 8441) with plain ASGI applications and our client.

The spec's WebSocket rules as the checklist: the scope, connect / accept (subprotocol,
headers) / receive / send (text and bytes) / disconnect (code, reason) / close, a denial
before the accept (403) and the ``websocket.http.response`` extension, ``send()`` after the
close raising an ``OSError``, errors after the accept (1011). Over h2c and TLS.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

import aioh2s
from aioh2s import websocket
from aioh2s.asgi import ASGIAdapter, ClientDisconnected

pytestmark = pytest.mark.timeout(60)


@asynccontextmanager
async def asgi(wire: Any, app: Any) -> AsyncIterator[aioh2s.Client]:
    handler = ASGIAdapter(app, lifespan="off", ws_close_timeout=5)
    async with wire.client_for(handler, {"enable_connect_protocol": True}) as (client, _):
        yield client


class Echo:
    """Accepts (first subprotocol, one extra header) and echoes until the disconnect."""

    def __init__(self) -> None:
        self.scopes: list[dict[str, Any]] = []
        self.disconnects: list[dict[str, Any]] = []
        self.errors: list[type[BaseException]] = []
        self.done = asyncio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.scopes.append(scope)
        try:
            assert (await receive()) == {"type": "websocket.connect"}
            offered = scope["subprotocols"]
            await send({"type": "websocket.accept", "subprotocol": offered[0] if offered
                        else None, "headers": [(b"x-accepted", b"yes")]})
            while True:
                m = await receive()
                if m["type"] == "websocket.disconnect":
                    self.disconnects.append(m)
                    break
                if m.get("text") == "close-me":
                    await send({"type": "websocket.close", "code": 4002, "reason": "asked"})
                    continue
                await send({"type": "websocket.send", **{k: m[k] for k in ("text", "bytes")
                                                        if m.get(k) is not None}})
            try:
                await send({"type": "websocket.send", "text": "after the close"})
            except OSError as e:
                self.errors.append(type(e))
        finally:
            self.done.set()


async def test_websocket_scope_and_messages(wire: Any) -> None:
    app = Echo()
    async with asgi(wire, app) as client:
        ws = await websocket.connect(client, "/chat%20room?x=1", subprotocols=["v2", "v1"],
                                     headers={"origin": "https://example.com"})
        assert ws.subprotocol == "v2" and ws.reader.headers["x-accepted"] == "yes"
        await ws.send("héllo")
        assert await ws.receive() == "héllo"
        await ws.send(b"\x00\xff")
        assert await ws.receive() == b"\x00\xff"
        await ws.close(4001, "bye")
        await asyncio.wait_for(app.done.wait(), 5)
    scope = app.scopes[0]
    assert scope["type"] == "websocket" and "method" not in scope
    assert scope["asgi"]["spec_version"] == "2.5" and scope["http_version"] == "2"
    assert scope["scheme"] == ("wss" if wire.tls else "ws")
    assert (scope["path"], scope["raw_path"], scope["query_string"]) == (
        "/chat room", b"/chat%20room", b"x=1")
    assert scope["subprotocols"] == ["v2", "v1"]
    assert scope["headers"][0][0] == b"host"
    assert (b"origin", b"https://example.com") in scope["headers"]
    assert "websocket.http.response" in scope["extensions"]
    assert app.disconnects == [{"type": "websocket.disconnect", "code": 4001, "reason": "bye"}]
    assert app.errors == [aioh2s.asgi.ClientDisconnected]


async def test_app_closes_with_code_and_reason(wire: Any) -> None:
    app = Echo()
    async with asgi(wire, app) as client:
        ws = await websocket.connect(client, "/")
        await ws.send("close-me")
        with pytest.raises(aioh2s.WebSocketClosed) as info:
            await ws.receive()
        assert (info.value.code, info.value.reason) == (4002, "asked")
        await asyncio.wait_for(app.done.wait(), 5)
    assert app.disconnects[0]["code"] == 4002


async def test_denial_before_accept_and_http_response_extension(wire: Any) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        if scope["path"] == "/deny":
            await send({"type": "websocket.close"})
            return
        await send({"type": "websocket.http.response.start", "status": 418,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "websocket.http.response.body", "body": b"I'm a ",
                    "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"teapot"})

    async with asgi(wire, app) as client:
        with pytest.raises(aioh2s.WebSocketRejected) as info:
            await websocket.connect(client, "/deny")
        assert info.value.status == 403
        with pytest.raises(aioh2s.WebSocketRejected) as info:
            await websocket.connect(client, "/teapot")
        assert (info.value.status, info.value.body) == (418, b"I'm a teapot")


@pytest.mark.expect_log("aioh2s", "ERROR", "failed on WebSocket stream")
@pytest.mark.expect_log("aioh2s", "ERROR", "handler failed on stream")
@pytest.mark.expect_log("aioh2s", "ERROR", "without accepting or denying")
async def test_websocket_errors_and_returns(wire: Any) -> None:
    """After the accept: an exception closes with 1011 (logged), a return with 1000. Before:
    an exception is a 500 (the handler's rule), a return without an answer a 500 too."""
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        path = scope["path"]
        if path == "/raise-early":
            raise ValueError("before the accept")
        if path == "/return-early":
            return
        await send({"type": "websocket.accept"})
        if path == "/raise":
            raise ValueError("after the accept")
        await send({"type": "websocket.send", "text": "bye"})

    async with asgi(wire, app) as client:
        for path, code in (("/raise", 1011), ("/return", 1000)):
            ws = await websocket.connect(client, path)
            if code == 1000:
                assert await ws.receive() == "bye"
            with pytest.raises(aioh2s.WebSocketClosed) as info:
                await ws.receive()
            assert info.value.code == code
            await ws.wait_closed()
        for path in ("/raise-early", "/return-early"):
            with pytest.raises(aioh2s.WebSocketRejected) as rejected:
                await websocket.connect(client, path)
            assert rejected.value.status == 500


async def test_invalid_websocket_messages(wire: Any) -> None:
    seen: list[type[BaseException]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        for message in (
            {"type": "websocket.send", "text": "too early"},
            {"type": "http.response.start", "status": 200},
            {"type": "websocket.accept", "subprotocol": 1},
            {"type": "websocket.accept", "headers": [(b"sec-websocket-protocol", b"x")]},
            {"type": "websocket.accept", "subprotocol": "not offered"},
        ):
            try:
                await send(message)
            except Exception as e:
                seen.append(type(e))
        await send({"type": "websocket.accept"})
        for message in (
            {"type": "websocket.send"},
            {"type": "websocket.send", "text": "a", "bytes": b"b"},
            {"type": "websocket.send", "text": b"bytes as text"},
            {"type": "websocket.close", "code": 999},
            {"type": "websocket.accept"},
        ):
            try:
                await send(message)
            except Exception as e:
                seen.append(type(e))
        await send({"type": "websocket.send", "bytes": b"fine"})
        await receive()

    async with asgi(wire, app) as client:
        async with websocket.connect(client, "/") as ws:
            assert await ws.receive() == b"fine"
    assert seen == [RuntimeError, ValueError, TypeError, ValueError, ValueError,
                    ValueError, ValueError, TypeError, ValueError, RuntimeError]


async def test_disconnect_when_the_stream_is_reset(wire: Any) -> None:
    got: list[dict[str, Any]] = []
    done = asyncio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        got.append(await receive())
        done.set()

    async with asgi(wire, app) as client:
        ws = await websocket.connect(client, "/")
        ws.abort()
        await asyncio.wait_for(done.wait(), 5)
    assert got[0]["type"] == "websocket.disconnect" and got[0]["code"] == 1006


async def test_plain_connect_is_not_passed_to_the_app(wire: Any) -> None:
    called: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        called.append(scope["type"])

    async with asgi(wire, app) as client:
        async with client.connect_tunnel("example.com:443") as tunnel:
            assert (await tunnel.response_headers())[":status"] == "501"
    assert called == []


async def test_denial_after_the_client_reset_raises_client_disconnected(wire: Any) -> None:
    """websocket.close before the accept, the client gone already: ClientDisconnected (an
    OSError, spec 2.4), not the StreamReset of aioh2s; escaping the app it is not logged."""
    raised: list[BaseException] = []
    done = asyncio.Event()
    reset = asyncio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await reset.wait()  # the auth check takes a while; the client gives up meanwhile
        await asyncio.sleep(0.1)
        try:
            await send({"type": "websocket.close", "code": 1008})
        except BaseException as e:
            raised.append(e)
            raise
        finally:
            done.set()

    async with asgi(wire, app) as client:
        async with client.request({":method": "CONNECT", ":protocol": "websocket",
                                   ":path": "/", ":scheme": "https" if wire.tls else "http",
                                   "sec-websocket-version": "13"}) as st:
            await asyncio.sleep(0.05)
            st.writer.reset()
            reset.set()
            await asyncio.wait_for(done.wait(), 5)
    assert len(raised) == 1 and isinstance(raised[0], ClientDisconnected)


async def test_an_error_after_the_disconnect_is_not_logged(wire: Any) -> None:
    """Starlette's endpoint loop lets WebSocketDisconnect escape as the client closes: an
    exception raised after websocket.disconnect was delivered is logged at DEBUG only."""
    done = asyncio.Event()

    class Disconnect(Exception):
        pass

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        try:
            while True:
                m = await receive()
                if m["type"] == "websocket.disconnect":
                    raise Disconnect(m["code"])
                await send({"type": "websocket.send", "text": m["text"]})
        finally:
            done.set()

    async with asgi(wire, app) as client:
        async with websocket.connect(client, "/") as ws:
            await ws.send("hi")
            assert await ws.receive() == "hi"
        await asyncio.wait_for(done.wait(), 5)
        await asyncio.sleep(0.05)  # (the log guard fails the test on an ERROR record)
