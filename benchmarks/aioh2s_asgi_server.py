"""aioh2s serving an ASGI app through ``aioh2s.asgi.ASGIAdapter`` (benchmark peer of scale.py).

Runs the lifespan startup, serves ``--app`` (default ``asgi_app:app``) with the same stream
and connection windows and stream limit as ``aioh2s_server.py``, prints ``LISTENING <port>``
once bound, and on SIGTERM (or after ``--lifetime``) closes the server and runs the lifespan
shutdown.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import signal
import sys

import aioh2s


def load(target: str) -> object:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr or "app")


async def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--app", default="asgi_app:app", help="module:attr of the ASGI app")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--max-streams", type=int, default=1000)
    p.add_argument("--stream-window", type=int, default=1 << 20)
    p.add_argument("--connection-window", type=int, default=16 << 20)
    p.add_argument("--lifetime", type=float, default=600.0, help="exit after this many s")
    args = p.parse_args(argv)
    # Imported here so that --help works on a tree without the adapter.
    from aioh2s.asgi import ASGIAdapter

    adapter = ASGIAdapter(load(args.app))
    await adapter.startup()
    server = await aioh2s.start_server(
        adapter,
        args.host,
        args.port,
        max_concurrent_streams=args.max_streams,
        stream_window=args.stream_window,
        connection_window=args.connection_window,
    )
    port = server.sockets[0].getsockname()[1]
    print(f"LISTENING {port}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), args.lifetime)
    finally:
        server.close()
        await server.wait_closed()
        await adapter.shutdown()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
    sys.exit(0)
