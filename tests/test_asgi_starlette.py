"""A real framework on aioh2s.asgi: Starlette (tests/starlette_app.py), with our client and
foreign ones (curl, nghttp, h2load) on 127.0.0.1, over h2c and TLS.

Covered: the lifespan with state (startup before the first request, shutdown after the
server closed), a StreamingResponse, request.stream(), a background task run after the
response, an exception (Starlette's 500, then its re-raise logged by us), a client going
away in the middle of a StreamingResponse (not logged: the spec's OSError, turned into
Starlette's ClientDisconnect), and a WebSocket route; trailers against curl and nghttp.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")

import aioh2s  # noqa: E402
import starlette_app  # noqa: E402
from aioh2s import websocket  # noqa: E402
from aioh2s.asgi import ASGIAdapter  # noqa: E402
from helpers import pattern, require  # noqa: E402

pytestmark = pytest.mark.timeout(60)

ON = {"enable_connect_protocol": True}


@asynccontextmanager
async def starlette(wire: Any) -> AsyncIterator[tuple[aioh2s.Client, int]]:
    starlette_app.EVENTS.clear()
    adapter = ASGIAdapter(starlette_app.app, lifespan="on")
    await adapter.startup()
    assert starlette_app.EVENTS == ["startup"]
    try:
        async with wire.serving(adapter, **ON) as (_, port):
            client = await wire.connect(port)
            try:
                yield client, port
            finally:
                await asyncio.wait_for(client.close(), 10)
        assert "shutdown" not in starlette_app.EVENTS
    finally:
        await adapter.shutdown()
    assert starlette_app.EVENTS[-1] == "shutdown"


async def fetch(client: aioh2s.Client, path: str, method: str = "GET", body: bytes = b"",
                ) -> tuple[aioh2s.Headers, bytes, int]:
    async with client.request({":method": method, ":path": path}, end_stream=not body) as st:
        if body:
            st.writer.write(body)
            st.writer.write_eof()
        headers = await asyncio.wait_for(st.response_headers(), 10)
        data, chunks = b"", 0
        async for chunk in st.reader:
            data += chunk
            chunks += 1
        return headers, data, chunks


@pytest.mark.expect_log("aioh2s", "ERROR", "failed on stream")
async def test_starlette_with_our_client(wire: Any, log_guard: Any) -> None:
    async with starlette(wire) as (client, _):
        headers, body, _ = await fetch(client, "/")
        assert headers[":status"] == "200" and body == b"hello from the lifespan /"

        headers, body, _ = await fetch(client, "/stream?n=2000&size=10")
        assert headers[":status"] == "200" and "content-length" not in headers
        assert body == b"".join(f"{i:09d}\n".encode() for i in range(2000))

        data = pattern(3 << 20)
        headers, body, _ = await fetch(client, "/upload", "POST", data)
        got = json.loads(body)
        assert got["size"] == len(data) and got["sha256"] == hashlib.sha256(data).hexdigest()
        assert got["chunks"] > 3 * 16  # streamed in chunks of at most 64 KiB, not buffered

        headers, body, _ = await fetch(client, "/background")
        assert body == b"queued"
        for _ in range(100):
            if "background task ran" in starlette_app.EVENTS:
                break
            await asyncio.sleep(0.02)
        assert "background task ran" in starlette_app.EVENTS

        headers, body, _ = await fetch(client, "/boom")
        assert headers[":status"] == "500" and body == b"Internal Server Error"
        headers, _, _ = await fetch(client, "/nowhere")
        assert headers[":status"] == "404"
    failed = [r for r in log_guard.records if "failed on stream" in r.getMessage()]
    assert len(failed) == 1 and "boom" in repr(failed[0].exc_info[1])


async def test_starlette_client_goes_away_mid_stream(
    wire: Any, log_guard: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG", "aioh2s")
    async with starlette(wire) as (client, _):
        async with client.request({":path": "/stream?n=-1"}, end_stream=True) as st:
            await st.response_headers()
            assert await st.reader.read(10)
            st.writer.reset()
        await asyncio.sleep(0.3)
        # The connection goes on, and nothing was logged as an error (the log guard).
        headers, _, _ = await fetch(client, "/")
        assert headers[":status"] == "200"
    assert log_guard.records == []
    # Starlette turned our OSError into its ClientDisconnect, which escaped the app.
    assert "ended by ClientDisconnect" in caplog.text


async def test_starlette_websocket_route(wire: Any) -> None:
    async with starlette(wire) as (client, _):
        async with websocket.connect(client, "/ws", subprotocols=["shout.v1"]) as ws:
            assert ws.subprotocol == "shout.v1"
            await ws.send("hello")
            assert await ws.receive() == "HELLO"
        for _ in range(100):
            if "websocket closed 1000" in starlette_app.EVENTS:
                break
            await asyncio.sleep(0.02)
        assert "websocket closed 1000" in starlette_app.EVENTS
        ws = await websocket.connect(client, "/ws", subprotocols=["shout.v1"])
        await ws.send("bye")
        with pytest.raises(aioh2s.WebSocketClosed) as info:
            await ws.receive()
        assert (info.value.code, info.value.reason) == (4000, "bye yourself")


# -- foreign peers ----------------------------------------------------------------------------


async def run(argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return subprocess.CompletedProcess(argv, proc.returncode or 0, out, err)


def curl_args(wire: Any) -> list[str]:
    args = [require("curl"), "-sS", "--max-time", "25"]
    if wire.tls:
        return [*args, "--http2", "--cacert", wire.certs.ca]
    return [*args, "--http2-prior-knowledge"]


@pytest.mark.expect_log("aioh2s", "ERROR", "failed on stream")
async def test_starlette_with_curl(wire: Any, tmp_path: Path) -> None:
    async with starlette(wire) as (_, port):
        url = wire.url(port)
        r = await run([*curl_args(wire), "-i", url])
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith(b"HTTP/2 200") and r.stdout.endswith(
            b"\r\n\r\nhello from the lifespan /")
        r = await run([*curl_args(wire), f"{url}stream?n=5000&size=10"])
        assert r.stdout == b"".join(f"{i:09d}\n".encode() for i in range(5000))
        data = pattern(2 << 20)
        (tmp_path / "body").write_bytes(data)
        r = await run([*curl_args(wire), "--data-binary", f"@{tmp_path / 'body'}",
                       f"{url}upload"])
        assert json.loads(r.stdout)["sha256"] == hashlib.sha256(data).hexdigest()
        r = await run([*curl_args(wire), "-o", "/dev/null", "-w", "%{http_code}",
                       f"{url}boom"])
        assert r.stdout == b"500"
        h2load = require("h2load")
        r = await run([h2load, "-n", "400", "-c", "2", "-m", "10", url])
        assert b"400 succeeded, 0 failed, 0 errored" in r.stdout, r.stdout.decode()


async def trailers_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "trailers": True,
                "headers": [(b"trailer", b"x-checksum")]})
    await send({"type": "http.response.body", "body": b"hello\n"})
    await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"42")]})


async def test_trailers_with_curl_and_nghttp(wire: Any) -> None:
    nghttp = require("nghttp")
    async with wire.serving(ASGIAdapter(trailers_app, lifespan="off")) as (_, port):
        url = wire.url(port)
        r = await run([*curl_args(wire), "-i", "-H", "te: trailers", url])
        assert r.stdout.endswith(b"hello\nx-checksum: 42\r\n"), r.stdout
        r = await run([*curl_args(wire), "-i", url])  # no te: trailers, no trailers
        assert r.stdout.endswith(b"hello\n"), r.stdout
        r = await run([nghttp, "-v", "-H", "te: trailers", url])
        out = r.stdout.decode()
        assert r.returncode == 0, out
        trailer = out.index("x-checksum: 42")
        assert "END_STREAM" in out[trailer:] and "hello" in out[:trailer]
