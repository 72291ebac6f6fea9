"""Window-update overflow: WINDOW_UPDATE or SETTINGS that push a window past 2^31-1.

RFC 9113 section 6.9.1: a connection window overflow is a connection error
FLOW_CONTROL_ERROR, a stream window overflow a stream error FLOW_CONTROL_ERROR; section
6.9.2: a SETTINGS_INITIAL_WINDOW_SIZE change that overflows any open stream's window is a
connection error FLOW_CONTROL_ERROR.  In every case the handlers of the streams that died
are cancelled and other connections are unaffected.
"""

from __future__ import annotations

import asyncio

import pytest
import rawpeer as rp
from dosharness import Checks, HealthProbe, KiB, MemoryMeter, attack_checks
from h2.errors import ErrorCodes as E
from rawpeer import RawPeer

pytestmark = pytest.mark.timeout(45)

BOUND = 512 * KiB
OPEN_STREAMS = 10


async def _open_hanging(peer: RawPeer, n: int) -> list[int]:
    sids = [peer.new_stream_id() for _ in range(n)]
    await peer.send(*(peer.request(sid, "/hang-headers") for sid in sids))
    await peer.wait_for(
        lambda p: all(s in p.streams and p.streams[s].headers is not None for s in sids), 3.0
    )
    return sids


@pytest.mark.parametrize("where", ["connection", "settings"])
async def test_window_overflow_connection_error(serve, where):
    srv = await serve()
    checks = Checks(f"window overflow via {where}")
    peer = await RawPeer.connect(srv.port)
    await peer.handshake()
    sids = await _open_hanging(peer, OPEN_STREAMS)
    checks.expect(
        len(srv.app.hanging) == OPEN_STREAMS,
        f"expected {OPEN_STREAMS} running handlers: {srv.app.describe()}",
    )
    async with HealthProbe(srv.port) as probe:
        with MemoryMeter(f"window overflow ({where})", f"{OPEN_STREAMS} open streams") as mem:
            if where == "connection":
                await peer.try_send(rp.window_update(0, rp.MAX_WINDOW))
            else:
                # Stream 1's window goes to exactly 2^31-1 (legal); then raising the initial
                # window by one pushes it over (section 6.9.2).
                await peer.send(rp.window_update(sids[0], rp.MAX_WINDOW - rp.DEFAULT_WINDOW))
                await peer.try_send(rp.settings({rp.INITIAL_WINDOW_SIZE: rp.DEFAULT_WINDOW + 1}))
            await checks.run("answer", peer.expect_goaway(E.FLOW_CONTROL_ERROR, timeout=3.0))
            checks.expect(await peer.closed(3.0), f"connection left open: {peer.describe()}")
    await attack_checks(checks, srv, probe, mem, BOUND)
    await peer.close()
    checks.done()


async def test_window_overflow_stream_error(serve):
    srv = await serve()
    checks = Checks("stream window overflow")
    peer = await RawPeer.connect(srv.port)
    await peer.handshake()
    sids = await _open_hanging(peer, OPEN_STREAMS)
    victim = sids[0]
    async with HealthProbe(srv.port) as probe:
        with MemoryMeter("window overflow (stream)", "1 stream of 10") as mem:
            await peer.send(rp.window_update(victim, rp.MAX_WINDOW))
            kind = await checks.run(
                "answer", peer.expect_stream_error(victim, E.FLOW_CONTROL_ERROR, timeout=3.0)
            )
    if kind == "rst":
        checks.expect(
            await peer.ping(), f"connection unusable after a stream error: {peer.describe()}"
        )
        checks.expect(
            await _fewer(srv, 3.0),
            f"handler of the overflowed stream still running: {srv.app.describe()}",
        )
        checks.expect(
            len(srv.app.hanging) == OPEN_STREAMS - 1,
            f"the other streams' handlers should be untouched: {srv.app.describe()}",
        )
    await peer.close()
    await attack_checks(checks, srv, probe, mem, BOUND)
    checks.done()


async def _fewer(srv, timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(srv.app.hanging) >= OPEN_STREAMS and loop.time() < deadline:
        await asyncio.sleep(0.01)
    return len(srv.app.hanging) < OPEN_STREAMS
