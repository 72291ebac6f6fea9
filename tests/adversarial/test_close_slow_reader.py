"""A graceful close while a slow client still has response bytes to read (found by review).

The client (SO_RCVBUF 16 KiB, window 2^31-1) asks for a large response, the server starts a
graceful close, and the client reads nothing for 3 s, then reads everything, giving window
back as it goes. The whole body must arrive: the connection lingers while the response is
still in the kernel's send queue, up to the rest of the grace period.

Over TLS it used to end in a TCP reset as soon as the client read again: the server sent
close_notify when it began to linger, the client's next WINDOW_UPDATE was application data
after close_notify, which OpenSSL refuses (APPLICATION_DATA_AFTER_CLOSE_NOTIFY), and
asyncio's SSL transport then aborted the socket with ~700 KB still in the kernel's send
queue. A TLS server now sends close_notify only once the peer has everything.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time

import hpack
import pytest
import rawpeer as rp

import aioh2s
from helpers import Wire, pattern


async def _run(wire: Wire, size: int, sleep: float, grace: float = 10.0, wait_eof: bool = False,
               **opts) -> tuple[int, bool, float, str]:
    body = pattern(size)

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        writer.send_headers({":status": "200"})
        writer.write(body)
        await writer.drain()

    async with wire.serving(handler, grace=grace, **opts) as (srv, port):
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=16384,
                                                       **wire.raw_client_options())
        hdrs = hpack.Encoder().encode(rp.request_headers(scheme="https" if wire.tls else "http"))
        writer.write(rp.PREFACE + rp.settings({rp.INITIAL_WINDOW_SIZE: 2**31 - 1})
                     + rp.window_update(0, 2**30) + rp.headers_frame(1, hdrs, end_stream=True))
        await writer.drain()
        await asyncio.sleep(0.2)
        srv.close(grace=grace)
        t0 = time.monotonic()
        await asyncio.sleep(sleep)  # a slow client: reads nothing for a while
        got, ended, why, buf, unacked = 0, False, "", b"", 0
        try:
            while not ended:
                chunk = await asyncio.wait_for(reader.read(65536), 15)
                if not chunk:
                    why = "EOF"
                    break
                buf += chunk
                while len(buf) >= 9:
                    n = int.from_bytes(buf[:3], "big")
                    if len(buf) < 9 + n:
                        break
                    ftype, flags = buf[3], buf[4]
                    sid = struct.unpack(">I", buf[5:9])[0] & 0x7FFFFFFF
                    payload, buf = buf[9:9 + n], buf[9 + n:]
                    if ftype == rp.DATA and sid == 1:
                        got += n
                        unacked += n
                        ended = bool(flags & rp.END_STREAM)
                    elif ftype == rp.RST_STREAM:
                        why = f"RST {payload.hex()}"
                    elif ftype == rp.PING and not flags & 1:
                        writer.write(rp.ping(payload, ack=True))
                    elif ftype == rp.SETTINGS and not flags & 1:
                        writer.write(rp.settings(ack=True))
                if unacked >= 65536:  # like any h2 client: give the window back as we read
                    writer.write(rp.window_update(0, unacked))
                    unacked = 0
            while wait_eof and not why:  # then wait for the server to close, sending nothing
                if not await asyncio.wait_for(reader.read(65536), 15):
                    why = "EOF"
        except (ConnectionError, OSError) as e:
            why = repr(e)
        writer.close()
        return got, ended, time.monotonic() - t0, why


@pytest.mark.parametrize("size", [1024 * 1024, 4 * 1024 * 1024])
async def test_slow_reader_gets_whole_response_on_graceful_close(wire: Wire, size: int) -> None:
    got, ended, took, why = await _run(wire, size, sleep=3.0)
    assert got == size and ended, (got, size, took, why)


async def test_slow_reader_that_waits_for_our_close_gets_a_clean_end(wire: Wire) -> None:
    """The client reads the whole response and then waits for the server to close: it gets
    the end of the stream (over TLS, the server's close_notify once the client was quiet for
    ``linger``), not a reset, and well before the grace period is over."""
    got, ended, took, why = await _run(wire, 1024 * 1024, sleep=3.0, wait_eof=True)
    assert got == 1024 * 1024 and ended and why == "EOF", (got, took, why)
    assert took < 3.0 + 5.0, took
