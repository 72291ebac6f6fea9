"""The application that tests/test_workers.py serves from worker processes.

Every response body is the pid of the worker that answered; ``/slow?SECONDS`` answers after
that long (its headers at once, so a client knows the request is being served).
"""

from __future__ import annotations

import asyncio
import os

import aioh2s


async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
    path = reader.headers[":path"]
    writer.send_headers({":status": "200"})
    if path.startswith("/slow?"):
        await writer.drain()
        await asyncio.sleep(float(path.partition("?")[2]))
    writer.write(str(os.getpid()).encode())
    writer.write_eof()
