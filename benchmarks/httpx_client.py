"""httpx benchmark client (``http1=False, http2=True``, h2c prior knowledge).

Same modes and output as raw_h2_client.py.  Needs ``httpx[http2]`` (bench extra only).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import httpx


async def main(argv: list[str] | None = None) -> dict[str, object]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/5")
    p.add_argument("-n", type=int, default=5000, help="requests")
    p.add_argument("-c", type=int, default=1, help="concurrency (streams in flight)")
    p.add_argument("--timeout", type=float, default=120.0)
    args = p.parse_args(argv)

    url = f"http://{args.host}:{args.port}{args.path}"
    statuses: dict[str, int] = {}
    nbytes = 0
    finished = 0
    remaining = args.n
    t0 = time.perf_counter()
    c0 = time.process_time()
    # One connection: a pool of one, and streams multiplexed on it.
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(
        http1=False, http2=True, limits=limits, timeout=args.timeout
    ) as client:

        async def worker() -> None:
            nonlocal remaining, nbytes, finished
            while remaining > 0:
                remaining -= 1
                async with client.stream("GET", url) as resp:
                    key = str(resp.status_code)
                    statuses[key] = statuses.get(key, 0) + 1
                    async for chunk in resp.aiter_raw():
                        nbytes += len(chunk)
                finished += 1

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
