"""aioh2s benchmark client: the same modes as raw_h2_client.py, on the public API.

``gets``: N GETs over one connection with C worker tasks (C requests in flight);
``download``: one GET of a large body read chunk by chunk.  Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import aioh2s


async def main(argv: list[str] | None = None) -> dict[str, object]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/5")
    p.add_argument("-n", type=int, default=5000, help="requests")
    p.add_argument("-c", type=int, default=1, help="concurrency (streams in flight)")
    p.add_argument("--stream-window", type=int, default=16 << 20)
    p.add_argument("--connection-window", type=int, default=64 << 20)
    p.add_argument("--timeout", type=float, default=120.0)
    args = p.parse_args(argv)

    statuses: dict[str, int] = {}
    nbytes = 0
    finished = 0
    t0 = time.perf_counter()
    c0 = time.process_time()
    client = await aioh2s.connect(
        args.host,
        args.port,
        stream_window=args.stream_window,
        connection_window=args.connection_window,
    )
    headers = {":path": args.path}
    remaining = args.n

    async def worker() -> None:
        nonlocal remaining, nbytes, finished
        while remaining > 0:
            remaining -= 1
            async with client.request(headers, end_stream=True) as stream:
                status = (await stream.response_headers())[":status"]
                statuses[status] = statuses.get(status, 0) + 1
                async for chunk in stream.reader:
                    nbytes += len(chunk)
            finished += 1

    async with client:
        await asyncio.wait_for(
            asyncio.gather(*(worker() for _ in range(min(args.c, args.n)))), args.timeout
        )
    seconds = time.perf_counter() - t0
    cpu_seconds = time.process_time() - c0
    result = {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "requests": finished,
        "bytes": nbytes,
        "statuses": statuses,
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    asyncio.run(main())
