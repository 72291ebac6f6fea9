"""The application that tests/test_lb.py serves from worker processes behind a proxy.

Every response carries ``x-worker: <pid>`` (HAProxy logs it, and the HTTP/1.1 client reads
it, so a test sees which worker served each request) and the pid as its body, except the
health check's ``/healthz``, which answers ``ok``.
"""

from __future__ import annotations

import os

import aioh2s

PID = str(os.getpid())


async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
    """Answer 200 naming the worker (``/healthz``: ``ok``)."""
    writer.send_headers({":status": "200", "x-worker": PID, "content-type": "text/plain"})
    writer.write(b"ok\n" if reader.headers[":path"] == "/healthz" else PID.encode() + b"\n")
    writer.write_eof()
