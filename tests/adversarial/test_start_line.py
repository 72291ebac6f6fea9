"""Handlers that wait in the server-wide start line (``ServerBudget.start_handler``).

A stream reset, or a server closed, while its handler waited must not start the
application's handler (found by review), and nothing may be left behind.
"""
from __future__ import annotations

import asyncio
import socket

import hpack
import pytest
import rawpeer as rp

import aioh2s

pytestmark = pytest.mark.timeout(30)


@pytest.mark.expect_log("aioh2s", "WARNING", "closing connection from")
@pytest.mark.parametrize("then", ["rst_streams", "server_close_grace0"])
async def test_no_handler_starts_for_a_stream_that_died_in_the_line(then):
    stats = {"entered": 0, "dead": 0}

    async def handler(reader, writer):
        stats["entered"] += 1
        if reader._s.error is not None:
            stats["dead"] += 1
        await asyncio.sleep(3600)

    server = await aioh2s.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    socks = []
    try:
        for _ in range(30):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(rp.PREFACE + rp.settings())
            socks.append(s)
        await asyncio.sleep(0.2)
        # All requests land in the kernel before the server's loop runs again.
        for s in socks:
            enc = hpack.Encoder()
            s.sendall(b"".join(rp.headers_frame(1 + 2 * k, enc.encode(rp.request_headers("/x")),
                                                end_stream=True) for k in range(100)))
        line = server._pool._start_line
        for _ in range(2000):
            await asyncio.sleep(0)
            if len(line) > 500:
                break
        waiting = len(line)
        assert waiting > 500, waiting
        if then == "rst_streams":
            for s in socks:
                s.sendall(b"".join(rp.rst(1 + 2 * k) for k in range(100)))
        else:
            server.close(grace=0)
        await asyncio.sleep(1.0)
        assert stats["dead"] == 0, (
            f"{stats['dead']} of {stats['entered']} application handlers started on streams "
            f"already reset ({then}); {waiting} had been waiting in the start line")
    finally:
        for s in socks:
            s.close()
        server.close(grace=0)
        await asyncio.wait_for(server.wait_closed(), 10)
        pool = server._pool
        assert len(pool._start_line) == 0 and len(pool._turn_line) == 0 and pool.busy == 0
