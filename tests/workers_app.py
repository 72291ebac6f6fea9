"""The application that the worker tests serve from worker processes.

Every response body is the pid of the worker that answered; ``/slow?SECONDS`` answers after
that long (its headers at once, so a client knows the request is being served);
``/after?SECONDS`` answers at once, then works on that long and logs a line on stderr.

``app`` is the same handler with the lifespan hook (``startup``/``shutdown``), which log a
line each on stderr. What ``startup`` does is read from the file that the environment
variable ``WORKERS_APP_STARTUP`` names, when it exists, at the moment it runs: ``slow
SECONDS`` sleeps that long first, ``fail`` raises. So a test decides how the *next* workers
start by writing that file; ``WORKERS_APP_SHUTDOWN`` (``slow SECONDS``) makes ``shutdown``
hang that long. ``WORKERS_APP_IMPORT`` does the same for the import of this
module (``slow SECONDS`` only): a worker that is slow to load its handler, with or
without the lifespan hook. ``/pool`` answers "WORKERPID POOLPID", the second from a
ProcessPoolExecutor's process (started by the first such request); ``/forked`` answers
"WORKERPID CHILDPID", the second a child it forked (os.fork) that sleeps a minute, holding
the worker's inherited descriptors (its multiprocessing sentinel among them).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import sys
import time

import aioh2s


def _import_delay() -> None:
    path = os.environ.get("WORKERS_APP_IMPORT")
    if path and os.path.exists(path):
        with open(path) as f:
            what = f.read().strip()
        print(f"workers_app: imported in {os.getpid()} ({what})", file=sys.stderr, flush=True)
        if what.startswith("slow "):
            time.sleep(float(what.split()[1]))  # (an import is synchronous: no loop yet)


_import_delay()


_pool: concurrent.futures.ProcessPoolExecutor | None = None


async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
    global _pool
    path = reader.headers[":path"]
    if path == "/pool":  # "WORKER POOLPROCESS": a worker with a ProcessPoolExecutor
        if _pool is None:
            _pool = concurrent.futures.ProcessPoolExecutor(1)
        child = await asyncio.get_running_loop().run_in_executor(_pool, os.getpid)
        writer.send_headers({":status": "200"})
        writer.write(f"{os.getpid()} {child}".encode())
        writer.write_eof()
        return
    if path == "/forked":
        pid = os.fork()
        if pid == 0:  # the child: sleeps, holding what it inherited, until killed
            try:
                time.sleep(60)
            finally:
                os._exit(0)
        writer.send_headers({":status": "200"})
        writer.write(f"{os.getpid()} {pid}".encode())
        writer.write_eof()
        return
    writer.send_headers({":status": "200"})
    if path.startswith("/slow?"):
        await writer.drain()
        await asyncio.sleep(float(path.partition("?")[2]))
    writer.write(str(os.getpid()).encode())
    writer.write_eof()
    if path.startswith("/after?"):  # work after the response (a background job)
        await asyncio.sleep(float(path.partition("?")[2]))
        print(f"workers_app: work after the response done in {os.getpid()}", file=sys.stderr,
              flush=True)


class App:
    """``handler`` with ``async startup()`` and ``async shutdown()``."""

    async def __call__(self, reader: aioh2s.H2StreamReader,
                       writer: aioh2s.H2StreamWriter) -> None:
        await handler(reader, writer)

    async def startup(self) -> None:
        path = os.environ.get("WORKERS_APP_STARTUP")
        what = ""
        if path and os.path.exists(path):
            with open(path) as f:
                what = f.read().strip()
        print(f"workers_app: startup in {os.getpid()} ({what or 'plain'})", file=sys.stderr,
              flush=True)
        if what.startswith("slow "):
            await asyncio.sleep(float(what.split()[1]))
        elif what == "fail":
            raise RuntimeError("the test asked this startup to fail")

    async def shutdown(self) -> None:
        print(f"workers_app: shutdown in {os.getpid()}", file=sys.stderr, flush=True)
        path = os.environ.get("WORKERS_APP_SHUTDOWN")
        if path and os.path.exists(path):
            with open(path) as f:
                await asyncio.sleep(float(f.read().split()[1]))  # "slow SECONDS"


app = App()
