"""A Starlette application for tests/test_asgi_starlette.py and ``aioh2s serve --asgi``.

Each route exercises one thing a framework does through ASGI: the lifespan's state, a
StreamingResponse, request.stream(), a background task, an exception (Starlette answers
500 and re-raises), a WebSocket route. ``EVENTS`` records what happened, in order; with
``ASGI_TEST_EVENTS`` set to a file name, the lifespan's events are appended to it too (the
command-line test runs the app in a child process).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

EVENTS: list[str] = []


def _event(what: str) -> None:
    EVENTS.append(what)
    path = os.environ.get("ASGI_TEST_EVENTS")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(what + "\n")


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, str]]:
    _event("startup")
    yield {"greeting": "hello from the lifespan"}
    _event("shutdown")


async def home(request: Request) -> Response:
    return PlainTextResponse(f"{request.state.greeting} {request.url.path}")


async def stream(request: Request) -> Response:
    n = int(request.query_params.get("n", "10"))
    size = int(request.query_params.get("size", "10"))

    async def chunks() -> AsyncIterator[bytes]:
        i = 0
        while n < 0 or i < n:  # n < 0: forever, until the client goes away
            yield f"{i:0{size - 1}d}\n".encode()
            i += 1
            if n < 0:
                await asyncio.sleep(0.001)
        _event("stream done")

    return StreamingResponse(chunks(), media_type="text/plain")


async def upload(request: Request) -> Response:
    digest = hashlib.sha256()
    size = chunks = 0
    async for chunk in request.stream():
        digest.update(chunk)
        size += len(chunk)
        chunks += 1
    return JSONResponse({"size": size, "sha256": digest.hexdigest(), "chunks": chunks})


async def background(request: Request) -> Response:
    async def later() -> None:
        await asyncio.sleep(0.05)
        _event("background task ran")

    return PlainTextResponse("queued", background=BackgroundTask(later))


async def boom(request: Request) -> Response:
    raise RuntimeError("boom")


async def shout(websocket: WebSocket) -> None:
    await websocket.accept(subprotocol="shout.v1")
    try:
        while True:
            text = await websocket.receive_text()
            if text == "bye":
                await websocket.close(4000, "bye yourself")
                break
            await websocket.send_text(text.upper())
    except WebSocketDisconnect as e:
        _event(f"websocket closed {e.code}")


app = Starlette(
    routes=[
        Route("/", home),
        Route("/stream", stream),
        Route("/upload", upload, methods=["POST"]),
        Route("/background", background),
        Route("/boom", boom),
        WebSocketRoute("/ws", shout),
    ],
    lifespan=lifespan,
)
