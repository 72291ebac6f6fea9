"""Minimal ASGI app for hypercorn with the routes of raw_h2_server.py.

Run: ``python -m hypercorn --bind 127.0.0.1:PORT hypercorn_app:app`` (h2c prior knowledge
works on a plain TCP bind).
"""

from __future__ import annotations

from typing import Any

BODY_5 = b"hello"
BODY_1M = b"x" * (1 << 20)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    method, path = scope["method"], scope["path"]
    if method == "POST":
        more = True
        while more:
            msg = await receive()
            more = msg.get("more_body", False)
        body = b"ok"
    elif path == "/5":
        body = BODY_5
    elif path == "/1m":
        body = BODY_1M
    else:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
