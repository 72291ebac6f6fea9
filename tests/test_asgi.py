"""aioh2s.asgi, the http and lifespan scopes, with plain ASGI applications on real sockets.

The ASGI spec (HTTP & WebSocket 2.5, lifespan 2.0, the trailers and early-hint extensions)
is the checklist: each test names the rules it checks. Teardown paths (resets, a lost
connection, application errors) run over h2c and TLS (the ``wire`` fixture). Starlette and
foreign peers are tests/test_asgi_starlette.py, WebSockets tests/test_asgi_ws.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

import aioh2s
from aioh2s.asgi import ASGIAdapter, ClientDisconnected, LifespanFailure
from helpers import pattern

pytestmark = pytest.mark.timeout(60)

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


@asynccontextmanager
async def asgi(wire: Any, app: App, server: dict[str, Any] | None = None,
               client: dict[str, Any] | None = None, **adapter: Any,
               ) -> AsyncIterator[tuple[aioh2s.Client, ASGIAdapter]]:
    adapter.setdefault("lifespan", "off")  # (the lifespan tests say otherwise)
    handler = ASGIAdapter(app, **adapter)
    await handler.startup()
    try:
        async with wire.client_for(handler, server or {}, **(client or {})) as (c, _):
            yield c, handler
    finally:
        await handler.shutdown()


async def get(client: aioh2s.Client, path: str = "/", method: str = "GET", body: bytes = b"",
              **headers: str) -> tuple[aioh2s.Headers, bytes, aioh2s.Headers | None]:
    h = {":method": method, ":path": path, **{k.replace("_", "-"): v for k, v in headers.items()}}
    async with client.request(h, end_stream=not body) as st:
        if body:
            st.writer.write(body)
            st.writer.write_eof()
        resp = await asyncio.wait_for(st.response_headers(), 10)
        data = await asyncio.wait_for(st.reader.read(), 10)
        return resp, data, st.reader.trailers


async def respond(send: Any, body: bytes = b"ok", status: int = 200) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive: Any) -> tuple[bytes, list[dict[str, Any]]]:
    messages, body = [], b""
    while True:
        m = await receive()
        messages.append(m)
        assert m["type"] == "http.request"
        body += m.get("body", b"")
        if not m.get("more_body", False):
            return body, messages


# -- the scope --------------------------------------------------------------------------------


async def test_http_scope_fields(wire: Any) -> None:
    """type, asgi, http_version "2", method, scheme, path (decoded), raw_path, query_string,
    root_path, headers (lowercased bytes, pseudo-headers gone, :authority as the first host,
    duplicates kept in order), client, server, extensions, state."""
    scopes: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scopes.append(scope)
        await respond(send)

    async with asgi(wire, app) as (client, _):
        await get(client, "/caf%C3%A9/a%20b?x=1&y=%20", x_dup="1", cookie="a=1")
        async with client.request(
            [(":method", "POST"), (":path", "/p"), ("X-Dup", "1"), ("x-dup", "2")],
            end_stream=True,
        ) as st:
            await st.response_headers()
        ours = client.get_extra_info("sockname")
    first, second = scopes
    assert first["type"] == "http"
    assert first["asgi"] == {"version": "3.0", "spec_version": "2.5"}
    assert first["http_version"] == "2"
    assert first["method"] == "GET" and second["method"] == "POST"
    assert first["scheme"] == ("https" if wire.tls else "http")
    assert first["path"] == "/café/a b"
    assert first["raw_path"] == b"/caf%C3%A9/a%20b"
    assert first["query_string"] == b"x=1&y=%20"
    assert first["root_path"] == ""
    headers = first["headers"]
    assert headers[0][0] == b"host" and headers[0][1].startswith(b"127.0.0.1:")
    assert all(type(n) is bytes and type(v) is bytes for n, v in headers)
    assert not any(n.startswith(b":") for n, _ in headers)
    assert (b"x-dup", b"1") in headers and (b"cookie", b"a=1") in headers
    assert [v for n, v in second["headers"] if n == b"x-dup"] == [b"1", b"2"]
    client_host, client_port = first["client"]
    server_host, server_port = first["server"]
    assert client_host == server_host == "127.0.0.1"
    assert isinstance(client_port, int) and isinstance(server_port, int)
    assert int(headers[0][1].split(b":")[1]) == server_port
    assert (client_host, client_port) == ours[:2]
    assert "http.response.trailers" in first["extensions"]
    assert first["state"] == {}


async def test_root_path_is_prepended(wire: Any) -> None:
    scopes: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scopes.append(scope)
        await respond(send)

    async with asgi(wire, app, root_path="/api") as (client, _):
        await get(client, "/v1/items?q")
    assert (scopes[0]["root_path"], scopes[0]["path"], scopes[0]["raw_path"]) == (
        "/api", "/api/v1/items", b"/api/v1/items")
    with pytest.raises(ValueError):
        ASGIAdapter(app, root_path="api/")


# -- request bodies: http.request, more_body, flow control -------------------------------------


async def test_request_body_streams_in_chunks(wire: Any) -> None:
    got: list[list[dict[str, Any]]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        body, messages = await read_body(receive)
        got.append(messages)
        await respond(send, str(len(body)).encode() + b" " + body[:4])

    async with asgi(wire, app, chunk_size=10_000) as (client, _):
        data = pattern(100_000)
        _, body, _ = await get(client, "/", "POST", data)
        assert body == b"100000 " + data[:4]
        _, body, _ = await get(client)  # no body: one message, empty, more_body False
        assert body == b"0 "
    chunks, empty = got
    assert all(len(m["body"]) <= 10_000 for m in chunks) and len(chunks) >= 10
    assert [m["more_body"] for m in chunks] == [True] * (len(chunks) - 1) + [False]
    assert empty == [{"type": "http.request", "body": b"", "more_body": False}]


async def test_inbound_flow_control_follows_receive(wire: Any) -> None:
    """No receive() call: the client's drain() blocks (no window granted); reads unblock it."""
    go = asyncio.Event()
    first: list[dict[str, Any]] = []
    done: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await go.wait()
        first.append(await receive())
        await asyncio.sleep(0.2)  # one chunk taken: the client must still be held back
        go.clear()
        await go.wait()
        body, _ = await read_body(receive)
        done.set_result(len(first[0]["body"]) + len(body))
        await respond(send)

    async with asgi(wire, app, {"stream_window": 65535}, chunk_size=1000) as (client, _):
        total = 600_000
        async with client.request({":method": "POST", ":path": "/"}) as st:
            st.writer.write(pattern(total))
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(drained := asyncio.ensure_future(
                    st.writer.drain())), 0.5)
            go.set()
            await asyncio.sleep(0.3)
            assert len(first[0]["body"]) == 1000 and first[0]["more_body"] is True
            assert not drained.done()  # one chunk read grants (next to) nothing
            go.set()
            await asyncio.wait_for(drained, 10)
            st.writer.write_eof()
            assert (await st.response_headers())[":status"] == "200"
            await st.reader.read()
        assert await done == total


# -- responses: streaming, backpressure, trailers, HEAD, early hints ---------------------------


async def test_slow_client_slows_the_app(wire: Any) -> None:
    """send() waits on drain(): a client that does not read stops the app after ~a window."""
    sent = 0
    total = 4 << 20

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal sent
        await send({"type": "http.response.start", "status": 200})
        chunk = b"x" * 16384
        while sent < total:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            sent += len(chunk)
        await send({"type": "http.response.body", "body": b""})

    async with asgi(wire, app, client={"stream_window": 65535}) as (client, _):
        async with client.request({":path": "/"}, end_stream=True) as st:
            await st.response_headers()
            await asyncio.sleep(0.5)
            held = sent
            await asyncio.sleep(0.3)
            assert sent == held  # stopped, not just slow
            # client window 64 KiB + write_high_water 256 KiB + one chunk (and margins)
            assert held < 512 * 1024
            body = await asyncio.wait_for(st.reader.read(), 30)
    assert len(body) == total


async def test_trailers_extension(wire: Any) -> None:
    """trailers: True holds the end for http.response.trailers (more_trailers gathers them);
    sent only to a client that said te: trailers."""
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "trailers": True,
                    "headers": [(b"trailer", b"x-a, x-b")]})
        await send({"type": "http.response.body", "body": b"part1", "more_body": True})
        await send({"type": "http.response.body", "body": b"part2"})
        await send({"type": "http.response.trailers", "headers": [(b"x-a", b"1")],
                    "more_trailers": True})
        await send({"type": "http.response.trailers", "headers": [(b"x-b", b"2")]})

    async with asgi(wire, app) as (client, _):
        _, body, trailers = await get(client, te="trailers")
        assert body == b"part1part2" and trailers == [("x-a", "1"), ("x-b", "2")]
        _, body, trailers = await get(client)
        assert body == b"part1part2" and trailers is None


async def test_head_response_has_no_body_and_early_hints(wire: Any) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.early_hint", "links": [b"</a.css>; rel=preload"]})
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"5")]})
        await send({"type": "http.response.early_hint", "links": [b"</b.js>; rel=preload"]})
        await send({"type": "http.response.body", "body": b"hello"})
        await send({"type": "http.response.early_hint", "links": [b"</late>"]})  # ignored

    async with asgi(wire, app) as (client, _):
        _, body, _ = await get(client, method="HEAD")
        assert body == b""
        async with client.request({":path": "/"}, end_stream=True) as st:
            assert (await st.response_headers())[":status"] == "200"
            assert [h.get("link") for h in st.informational] == [
                "</a.css>; rel=preload", "</b.js>; rel=preload"]
            assert await st.reader.read() == b"hello"


async def test_headers_do_not_wait_for_a_slow_first_chunk(wire: Any) -> None:
    """The start is held only until the loop's next turn: an event stream's client sees its
    headers before the first event."""
    seen = asyncio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        await asyncio.wait_for(seen.wait(), 10)  # the first event comes only after that
        await send({"type": "http.response.body", "body": b"data: 1\n\n"})

    async with asgi(wire, app) as (client, _):
        async with client.request({":path": "/events"}, end_stream=True) as st:
            headers = await asyncio.wait_for(st.response_headers(), 5)
            assert headers["content-type"] == "text/event-stream"
            seen.set()
            assert await st.reader.read() == b"data: 1\n\n"


async def test_empty_response_is_one_headers_frame(
    wire: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        # HTTP/1.1's connection fields mean nothing in HTTP/2: dropped (transfer-encoding
        # by the spec's rule), not a LocalProtocolError.
        await send({"type": "http.response.start", "status": 204, "headers": [
            (b"Transfer-Encoding", b"chunked"), (b"connection", b"close"), (b"x-kept", b"1")]})
        await send({"type": "http.response.body"})
        await send({"type": "http.response.body", "body": b"ignored after the end"})

    async with asgi(wire, app) as (client, _):
        caplog.set_level(logging.DEBUG, "aioh2s.frames")
        resp, body, _ = await get(client)
        assert resp == [(":status", "204"), ("x-kept", "1")] and body == b""
    sent = [r.h2_frame for r in caplog.records  # type: ignore[attr-defined]
            if getattr(r, "h2_side", "") == "server" and r.h2_direction == "send"  # type: ignore[attr-defined]
            and r.h2_frame.split()[1] == "stream=1"]  # type: ignore[attr-defined]
    assert len(sent) == 1 and sent[0].startswith("HEADERS") and "END_STREAM" in sent[0], sent


# -- http.disconnect and send() after it -------------------------------------------------------


async def test_disconnect_when_the_client_resets(wire: Any) -> None:
    """receive() gives http.disconnect on a reset, mid-body or waiting after the body;
    send() then raises an OSError subclass (spec 2.4), which is not logged."""
    events: list[Any] = []
    finished = asyncio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            if scope["path"] == "/upload":
                while (m := await receive())["type"] == "http.request":
                    pass
                events.append(m["type"])
            else:
                await receive()  # the (empty) body
                await send({"type": "http.response.start", "status": 200})
                await send({"type": "http.response.body", "body": b"a", "more_body": True})
                events.append((await receive())["type"])  # waits: the response is open
            try:
                await send({"type": "http.response.body", "body": b"more", "more_body": True})
            except OSError as e:
                events.append(type(e))
                raise
        finally:
            finished.set()

    async with asgi(wire, app) as (client, _):
        for path in ("/upload", "/stream"):
            finished.clear()
            async with client.request({":method": "POST", ":path": path}) as st:
                st.writer.write(b"some")
                await st.writer.drain()
                if path == "/stream":
                    st.writer.write_eof()
                    await st.response_headers()
                    assert await st.reader.read(1) == b"a"
                await asyncio.sleep(0.1)
                st.writer.reset()
            await asyncio.wait_for(finished.wait(), 5)
    assert events == ["http.disconnect", ClientDisconnected] * 2
    assert issubclass(ClientDisconnected, OSError)


async def test_disconnect_after_the_response_and_when_the_connection_dies(wire: Any) -> None:
    events: list[str] = []
    waiting = asyncio.Event()
    finished = asyncio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["path"] == "/done":
            await respond(send)
            events.append((await receive())["type"])  # at once: the response is complete
            events.append((await receive())["type"])
            return
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        await receive()
        waiting.set()
        events.append((await receive())["type"])
        finished.set()

    async with asgi(wire, app) as (client, _):
        await get(client, "/done")
        async with client.request({":path": "/lost"}, end_stream=True) as st:
            await st.response_headers()
            await asyncio.wait_for(waiting.wait(), 5)
            client.abort()  # the connection dies under the stream
            await asyncio.wait_for(finished.wait(), 5)
    assert events == ["http.disconnect"] * 3


# -- errors from the application ---------------------------------------------------------------


@pytest.mark.expect_log("aioh2s", "ERROR", "handler failed on stream")
@pytest.mark.expect_log("aioh2s", "ERROR", "returned without completing its response")
@pytest.mark.expect_log("aioh2s", "ERROR", "after its response")
async def test_application_errors(wire: Any, log_guard: Any) -> None:
    """An exception before the first body (the start is held) is a 500, after it a reset;
    returning without a complete response likewise; an error after the response is logged
    and leaves it intact."""
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope["path"]
        if path == "/raise-first":
            raise ValueError("before anything")
        await send({"type": "http.response.start", "status": 200})
        if path == "/raise-after-start":
            raise ValueError("after the start")
        if path == "/return-after-start":
            return
        await send({"type": "http.response.body", "body": b"some", "more_body": True})
        if path == "/raise-mid-body":
            raise ValueError("mid body")
        if path == "/return-mid-body":
            return
        await send({"type": "http.response.body", "body": b" done"})
        raise ValueError("after the response")

    async with asgi(wire, app) as (client, _):
        for path in ("/raise-first", "/raise-after-start", "/return-after-start"):
            resp, body, _ = await get(client, path)
            assert resp[":status"] == "500" and body == b"", path
        for path in ("/raise-mid-body", "/return-mid-body"):
            with pytest.raises(aioh2s.StreamReset) as info:
                await get(client, path)
            assert info.value.error_code == aioh2s.ErrorCode.INTERNAL_ERROR
        resp, body, _ = await get(client, "/after")
        assert resp[":status"] == "200" and body == b"some done"
    messages = [r.getMessage() for r in log_guard.records]
    assert sum("handler failed" in m for m in messages) == 3
    assert sum("without completing" in m for m in messages) == 2
    assert sum("after its response" in m for m in messages) == 1


BAD_MESSAGES: list[tuple[Any, type[Exception]]] = [
    ("not a dict", TypeError),
    ({"status": 200}, TypeError),
    ({"type": "http.response.bogus"}, ValueError),
    ({"type": "websocket.accept"}, ValueError),
    ({"type": "http.response.start"}, TypeError),
    ({"type": "http.response.start", "status": "200"}, TypeError),
    ({"type": "http.response.start", "status": True}, TypeError),
    ({"type": "http.response.start", "status": 99}, ValueError),
    ({"type": "http.response.start", "status": 103}, ValueError),
    ({"type": "http.response.start", "status": 200, "headers": b"x"}, TypeError),
    ({"type": "http.response.start", "status": 200, "headers": [("a", "b")]}, TypeError),
    ({"type": "http.response.start", "status": 200, "headers": [(b"a",)]}, TypeError),
    ({"type": "http.response.start", "status": 200, "headers": [(b":status", b"1")]},
     ValueError),
    ({"type": "http.response.start", "status": 200, "headers": [(b"bad name", b"1")]},
     aioh2s.LocalProtocolError),
    ({"type": "http.response.start", "status": 200, "headers": [(b"x", b"a\nb")]},
     aioh2s.LocalProtocolError),
    ({"type": "http.response.start", "status": 200, "trailers": "yes"}, TypeError),
    ({"type": "http.response.body", "body": "text"}, TypeError),
    ({"type": "http.response.body", "body": b"x"}, RuntimeError),  # before the start
    ({"type": "http.response.trailers"}, RuntimeError),
    ({"type": "http.response.early_hint"}, TypeError),
    ({"type": "http.response.early_hint", "links": b"x"}, TypeError),
]


async def test_invalid_messages_raise_before_anything_changes(wire: Any) -> None:
    seen: list[type[BaseException]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        for message, _ in BAD_MESSAGES:
            try:
                await send(message)
            except Exception as e:
                seen.append(type(e))
        await send({"type": "http.response.start", "status": 200, "trailers": False})
        for message in ({"type": "http.response.start", "status": 200},
                        {"type": "http.response.body", "more_body": 1},
                        {"type": "http.response.trailers"}):
            try:
                await send(message)
            except Exception as e:
                seen.append(type(e))
        await send({"type": "http.response.body", "body": b"still fine"})

    async with asgi(wire, app) as (client, _):
        resp, body, _ = await get(client)
        assert resp[":status"] == "200" and body == b"still fine"
    assert seen == [e for _, e in BAD_MESSAGES] + [RuntimeError, TypeError, RuntimeError]


# -- lifespan ----------------------------------------------------------------------------------


def lifespan_app(log: list[str], startup: str = "complete", shutdown: str = "complete") -> App:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            assert scope["asgi"]["version"] == "3.0"
            m = await receive()
            log.append(m["type"])
            scope["state"]["pool"] = "the pool"
            if startup == "raise":
                raise RuntimeError("lifespan? what's that")
            await send({"type": f"lifespan.startup.{startup}", "message": "no database"})
            if startup != "complete":
                return
            m = await receive()
            log.append(m["type"])
            await send({"type": f"lifespan.shutdown.{shutdown}", "message": "leaked"})
            return
        scope["state"]["mine"] = True  # a per-request copy: the next request does not see it
        await respond(send, repr(sorted(scope["state"].items())).encode())
    return app


async def test_lifespan_startup_state_shutdown(wire: Any) -> None:
    events: list[str] = []
    async with asgi(wire, lifespan_app(events), lifespan="on") as (client, adapter):
        assert events == ["lifespan.startup"]
        for _ in range(2):
            _, body, _ = await get(client)
            assert body == b"[('mine', True), ('pool', 'the pool')]"
        assert adapter.state == {"pool": "the pool"}
    assert events == ["lifespan.startup", "lifespan.shutdown"]


@pytest.mark.expect_log("aioh2s", "ERROR", "lifespan startup failed: no database")
@pytest.mark.expect_log("aioh2s", "ERROR", "lifespan shutdown failed: leaked")
async def test_lifespan_failures() -> None:
    events: list[str] = []
    adapter = ASGIAdapter(lifespan_app(events, startup="failed"))
    with pytest.raises(LifespanFailure, match="no database"):
        await adapter.startup()
    adapter = ASGIAdapter(lifespan_app(events, shutdown="failed"))
    await adapter.startup()
    with pytest.raises(LifespanFailure, match="leaked"):
        await adapter.shutdown()


async def test_lifespan_auto_on_off(caplog: pytest.LogCaptureFixture) -> None:
    """auto: an app raising in its lifespan scope does not support it (the spec's rule), and
    the server goes on; on: that is an error; off: no lifespan scope at all."""
    events: list[str] = []
    caplog.set_level(logging.INFO, "aioh2s")
    adapter = ASGIAdapter(lifespan_app(events, startup="raise"))
    await adapter.startup()
    assert "does not support lifespan" in caplog.text
    await adapter.shutdown()  # nothing to do
    with pytest.raises(LifespanFailure, match="what's that"):
        await ASGIAdapter(lifespan_app(events, startup="raise"), lifespan="on").startup()
    events.clear()
    adapter = ASGIAdapter(lifespan_app(events), lifespan="off")
    await adapter.startup()
    await adapter.shutdown()
    assert events == []


async def test_lifespan_timeout_leaves_no_task() -> None:
    async def mute(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await asyncio.sleep(3600)

    before = len(asyncio.all_tasks())
    with pytest.raises(LifespanFailure, match="within 0.2 s"):
        await ASGIAdapter(mute, startup_timeout=0.2).startup()
    assert len(asyncio.all_tasks()) == before
    with pytest.raises(RuntimeError, match="out of turn"):
        adapter = ASGIAdapter(lifespan_app([]))
        await adapter.startup()
        await adapter._lifespan._send({"type": "lifespan.startup.complete"})
    await adapter.shutdown()


@pytest.mark.expect_log("aioh2s", "ERROR", "lifespan scope failed after its startup")
async def test_lifespan_failing_between_phases_is_logged(log_guard: Any) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.complete"})
        raise RuntimeError("the pool died")

    adapter = ASGIAdapter(app, lifespan="on")
    await adapter.startup()
    await asyncio.sleep(0.05)
    assert any("pool died" in repr(r.exc_info) for r in log_guard.records)
    await adapter.shutdown()  # the scope is over: nothing to send it


async def test_serve_runs_until_sigterm() -> None:
    """aioh2s.asgi.serve (what run() runs): startup, serve, SIGTERM, graceful close, shutdown."""
    import os
    import signal

    from aioh2s.asgi import serve

    events: list[str] = []
    bodies: list[bytes] = []
    tasks: list[asyncio.Task[None]] = []

    async def use(server: aioh2s.Server) -> None:
        port = server.sockets[0].getsockname()[1]
        async with await aioh2s.connect("127.0.0.1", port) as client:
            bodies.append((await get(client))[1])
        # serve() installed its handler: the signal stops it instead of this process.
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN)
        os.kill(os.getpid(), signal.SIGTERM)

    def ready(server: aioh2s.Server) -> None:
        tasks.append(asyncio.ensure_future(use(server)))

    await asyncio.wait_for(serve(lifespan_app(events), "127.0.0.1", 0, ready=ready), 20)
    await tasks[0]
    assert bodies == [b"[('mine', True), ('pool', 'the pool')]"]
    assert events == ["lifespan.startup", "lifespan.shutdown"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


@pytest.mark.expect_log("aioh2s", "ERROR", "lifespan startup failed: no database")
async def test_lifespan_failed_then_raising_is_logged_once(log_guard: Any) -> None:
    """Starlette's way: lifespan.startup.failed, then the error raised again. One ERROR (the
    startup's), not a second one claiming it failed after its startup."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})
        raise RuntimeError("no database")

    with pytest.raises(LifespanFailure, match="no database"):
        await ASGIAdapter(app, lifespan="on").startup()
    errors = [r for r in log_guard.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == ["aioh2s: ASGI lifespan startup failed: no database"]


async def test_serve_stops_during_a_hanging_startup() -> None:
    """SIGTERM while the lifespan startup hangs: serve() cancels the startup at once and
    raises LifespanFailure (nothing served, no shutdown), leaving no task behind."""
    import os
    import signal
    import time

    from aioh2s.asgi import serve

    cancelled: list[str] = []

    async def hang(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        asyncio.get_running_loop().call_later(0.1, os.kill, os.getpid(), signal.SIGTERM)
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append("startup")
            raise

    before = len(asyncio.all_tasks())
    t0 = time.monotonic()
    with pytest.raises(LifespanFailure, match="interrupted by SIGINT or SIGTERM"):
        await asyncio.wait_for(serve(ASGIAdapter(hang, startup_timeout=30), "127.0.0.1", 0), 20)
    assert time.monotonic() - t0 < 5
    assert cancelled == ["startup"]
    assert len(asyncio.all_tasks()) == before
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
