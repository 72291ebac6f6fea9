"""aioh2s benchmark server: the same routes as raw_h2_server.py, on the public API.

``GET /5`` -> 5-byte body, ``GET /1m`` -> 1 MiB body, ``POST *`` -> read the whole body,
answer 200 with a small body, ``GET /_mem`` -> JSON memory stats (memory.py), other paths
-> 404; any request whose path is ``/idle`` waits for its body to end (memory.py holds such
streams open).  Prints ``LISTENING <port>`` once bound.
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
    elif path == "/5":
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


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
