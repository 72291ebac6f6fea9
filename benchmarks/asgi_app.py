"""The small ASGI 3 app that ``scale.py`` serves with aioh2s, hypercorn and granian.

Routes: ``GET /`` -> a 5-byte body; ``GET /1m`` -> a 1 MiB body; ``POST /post`` -> reads the
whole request body and answers with its length in ASCII; anything else -> 404.  The lifespan
scope completes at once, so servers that run it (all three do) start the same way.

The app does what a plain ASGI app does and no more: one ``http.response.start`` and one
``http.response.body`` per response, ``receive()`` until ``more_body`` is false.  Its only
response header is ``content-length``, as with the native handler of ``aioh2s_server.py``,
so the aioh2s-ASGI row and the native row send the same bytes and differ by the adapter
alone (hypercorn and granian add ``date`` and ``server`` fields of their own).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

BODY_5 = b"hello"
BODY_1M = b"x" * (1 << 20)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        msg = await receive()
        if msg["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif msg["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _respond(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """ASGI 3 entry point."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    method, path = scope["method"], scope["path"]
    if method == "GET" and path == "/":
        await _respond(send, 200, BODY_5)
    elif method == "GET" and path == "/1m":
        await _respond(send, 200, BODY_1M)
    elif method == "POST" and path == "/post":
        size, more = 0, True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            size += len(msg.get("body", b""))
            more = msg.get("more_body", False)
        await _respond(send, 200, str(size).encode())
    else:
        await _respond(send, 404, b"not found")
