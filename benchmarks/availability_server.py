"""aioh2s server with every limit at its default, for availability.py.

``aioh2s_server.py`` raises ``max_concurrent_streams`` and the windows for the throughput
benchmarks; the availability benchmark needs the defaults a user gets from
``aioh2s.start_server(handler, host, port)`` (that is what it tests), so this file calls
exactly that, with the same routes (``GET /5`` -> 5 bytes, ``POST *`` -> reads the whole
body). Prints ``LISTENING <port>`` and then ``MAX_CONNECTIONS <n>`` (the connection cap the
defaults derived from the descriptor limit) once bound.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import aioh2s
from aioh2s_server import handler


async def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--lifetime", type=float, default=600.0, help="exit after this many s")
    args = p.parse_args(argv)
    server = await aioh2s.start_server(handler, args.host, args.port)
    port = server.sockets[0].getsockname()[1]
    print(f"LISTENING {port}", flush=True)
    print(f"MAX_CONNECTIONS {server.max_connections}", flush=True)
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
