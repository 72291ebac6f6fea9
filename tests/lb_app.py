"""The application that tests/test_lb.py serves from worker processes behind a load balancer.

Every response carries ``x-worker: <pid>`` (the proxy logs it, so a test sees which worker
served each request) and a short body; ``/healthz`` is the health check's endpoint.
"""

from __future__ import annotations

import os

import aioh2s

PID = str(os.getpid())


async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
    """Answer 200 with the worker's pid, in the ``x-worker`` header and as the body."""
    writer.send_headers({":status": "200", "x-worker": PID, "content-type": "text/plain"})
    writer.write(PID.encode() + b"\n")
    writer.write_eof()
