"""aioh2s benchmark server: the same routes as raw_h2_server.py, on the public API.

``GET /5`` (and ``GET /``, the path of asgi_app.py) -> 5-byte body, ``GET /1m`` -> 1 MiB
body, ``POST *`` -> read the whole body, answer 200 with a small body, ``GET /_mem`` -> JSON
memory stats (memory.py), other paths -> 404; any request whose path is ``/idle`` waits for
its body to end (memory.py holds such streams open).  Prints ``LISTENING <port>`` once bound.

``--workers N`` serves the same handler from N worker processes instead, through
``aioh2s.serve(..., workers=N)`` (SO_REUSEPORT; scale.py measures it): it needs ``--port``
(no LISTENING line) and runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tracemalloc

import aioh2s
from raw_h2_server import BODY_1M, BODY_5, mem_stats


async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
    h = reader.headers
    method = h[":method"]
    path = h[":path"]
    if method == "POST" or path == "/idle":
        async for _chunk in reader:
            pass
        body = b"ok"
    elif path == "/5" or path == "/":
        body = BODY_5
    elif path == "/1m":
        body = BODY_1M
    elif path == "/_mem":
        body = mem_stats()
    elif path == "/_memdiff":
        body = mem_stats(diff=True)
    else:
        writer.send_headers({":status": "404"}, end_stream=True)
        return
    writer.send_headers({":status": "200", "content-length": str(len(body))})
    writer.write(body)
    writer.write_eof()


async def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--max-streams", type=int, default=1000)
    p.add_argument("--stream-window", type=int, default=1 << 20)
    p.add_argument("--connection-window", type=int, default=16 << 20)
    p.add_argument("--tracemalloc", action="store_true")
    p.add_argument("--lifetime", type=float, default=600.0, help="exit after this many s")
    args = p.parse_args(argv)
    if args.tracemalloc:
        tracemalloc.start()
    server = await aioh2s.start_server(
        handler,
        args.host,
        args.port,
        max_concurrent_streams=args.max_streams,
        stream_window=args.stream_window,
        connection_window=args.connection_window,
    )
    port = server.sockets[0].getsockname()[1]
    print(f"LISTENING {port}", flush=True)
    async with server:
        try:
            await asyncio.wait_for(server.serve_forever(), args.lifetime)
        except asyncio.TimeoutError:
            pass


def serve_workers(argv: list[str] | None = None) -> None:
    """``--workers N``: the same handler and options under aioh2s.serve()'s supervisor."""
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--max-streams", type=int, default=1000)
    p.add_argument("--stream-window", type=int, default=1 << 20)
    p.add_argument("--connection-window", type=int, default=16 << 20)
    p.add_argument("--workers", type=int, required=True)
    args = p.parse_args(argv)
    # By name: the spawned workers import this module (benchmarks/ is on their PYTHONPATH).
    aioh2s.serve(
        "aioh2s_server:handler",
        args.host,
        args.port,
        workers=args.workers,
        max_concurrent_streams=args.max_streams,
        stream_window=args.stream_window,
        connection_window=args.connection_window,
    )


if __name__ == "__main__":
    if "--workers" in sys.argv:
        serve_workers()
        sys.exit(0)
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
