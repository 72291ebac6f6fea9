"""Data dribble (CVE-2019-9511) and internal data buffering (CVE-2019-9517).

A client asks for a large response and then either reads nothing at all while advertising
huge windows (so flow control never stops the server: only the transport can), or grants
its window a few bytes at a time.  The server's outbound memory must stay bounded: the
handler's ``drain()`` blocks at the write high-water mark and the transport's, instead of
``write()`` buffering the whole body; and when the attacker goes away the blocked handler is
cancelled (or its drain raises), not left waiting forever.
"""

from __future__ import annotations

import asyncio

import pytest
import rawpeer as rp
from dosharness import Checks, HealthProbe, MemoryMeter, MiB, attack_checks, pin_send_buffer
from h2.errors import ErrorCodes as E
from rawpeer import RawPeer

pytestmark = pytest.mark.timeout(45)

BODY = 64 * MiB
BOUND = 4 * MiB  # high-water marks, one stream window's worth of frames, read buffers


async def test_not_reading_a_big_response(serve):
    srv = await serve()
    pin_send_buffer(srv)
    checks = Checks("not reading a 64 MiB response (huge windows)")
    peer = await RawPeer.connect(srv.port, rcvbuf=4096, autoread=False, track_streams=False)
    # Windows wide open: flow control will not stop the server, only its own buffering can.
    await peer.handshake({rp.INITIAL_WINDOW_SIZE: rp.MAX_WINDOW}, conn_window=rp.MAX_WINDOW)

    async with HealthProbe(srv.port) as probe:
        with MemoryMeter("not reading a big response", f"{BODY >> 20} MiB asked") as mem:
            await peer.send(peer.request(1, f"/big/{BODY}"))
            await asyncio.sleep(2.0)
            written = srv.app.big_written
        checks.expect(
            written <= BOUND,
            f"handler's drain() let it write {written >> 10} KiB to a peer that reads nothing "
            f"(expected to block within {BOUND >> 10} KiB)",
        )
        # The attacker vanishes (closing with unread data sends a TCP RST).
        await peer.close()
        checks.expect(
            await srv.app.wait_idle(3.0),
            f"handler blocked on a dead connection still running: {srv.app.describe()}",
        )
    await attack_checks(checks, srv, probe, mem, BOUND, handlers_gone=None)
    print(f"not reading: handler wrote {written >> 10} KiB; {srv.app.describe()}")
    checks.done()


async def test_window_dribble(serve):
    srv = await serve()
    checks = Checks("window dribble (1-10 bytes of window at a time)")
    peer = await RawPeer.connect(srv.port, track_streams=False, auto_window=False)
    # Stream windows start at zero; the connection window (65,535) is never the limit here.
    await peer.handshake({rp.INITIAL_WINDOW_SIZE: 0})
    granted = 0

    async with HealthProbe(srv.port) as probe:
        with MemoryMeter("window dribble", "10 B grants for 2 s") as mem:
            await peer.send(peer.request(1, f"/big/{BODY}"))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 2.0
            while loop.time() < deadline and not peer.eof and peer.goaway is None:
                await peer.send(rp.window_update(1, 1) * 10)
                granted += 10
                await asyncio.sleep(0.002)
            await peer.wait_for(lambda p: p.data_received >= granted, 1.0)
            written = srv.app.big_written
        checks.expect(
            peer.data_received <= granted,
            f"server sent {peer.data_received} bytes for {granted} bytes of window",
        )
        checks.expect(
            written <= BOUND,
            f"handler wrote {written >> 10} KiB ahead of a {granted} byte window "
            f"(drain() should block within {BOUND >> 10} KiB)",
        )
        # The attacker cancels; the handler blocked in drain() must go away.
        await peer.send(rp.rst(1, E.CANCEL))
        checks.expect(
            await srv.app.wait_idle(3.0),
            f"handler of the cancelled stream still running: {srv.app.describe()}",
        )
        checks.expect(await peer.ping(), f"connection unusable after RST_STREAM: {peer.describe()}")
    await attack_checks(checks, srv, probe, mem, BOUND, handlers_gone=None)
    await peer.close()
    print(
        f"window dribble: granted {granted} B, received {peer.data_received} B in "
        f"{peer.counts[rp.DATA]} DATA frames; handler wrote {written >> 10} KiB"
    )
    checks.done()
