"""Rapid Reset spread over connections, each reset padded with answered requests.

With two answered requests per reset, a connection resets a third of what it opens, which
the quick server-wide measure (``Abuse.rapid_resetter``) leaves alone: the slow one (a tenth
of its own reset budget spent) must still cut it (found by review).
"""
from __future__ import annotations

import asyncio

import pytest
import rawpeer as rp
from rawpeer import RawPeer

pytestmark = pytest.mark.timeout(60)


async def _first_cut(peers: list[RawPeer], timeout: float) -> None:
    """Wait until the server has cut one of ``peers``, at most ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not any(p.eof for p in peers) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)


@pytest.mark.expect_log("aioh2s", "WARNING", "closing connection from")
@pytest.mark.parametrize("pad", [0, 1, 2])
async def test_padded_spread_rapid_reset_is_still_cut(serve, pad):
    # Refill rates well under what even a slow, loaded machine parses (a few thousand of
    # these a second), so that the server's bucket is overdrawn and each connection's own
    # budget drains however fast this machine is.
    srv = await serve(max_server_reset_burst=2000, max_server_reset_rate=100.0,
                      max_reset_rate=5.0)
    attackers = [await RawPeer.connect(srv.port, track_streams=False) for _ in range(20)]
    for p in attackers:
        await p.handshake()
    resets = 0
    for _k in range(0, 900, 10):  # 900 resets per connection: inside its own 1000 budget
        for p in attackers:
            if p.eof:
                continue
            out = []
            for _ in range(10):
                for _ in range(pad):
                    out.append(p.request(p.new_stream_id(), "/"))  # answered at once
                sid = p.new_stream_id()
                out.append(p.request(sid, "/hang") + rp.rst(sid))
            if await p.try_send(b"".join(out)):
                resets += 10
        await asyncio.sleep(0.005)
    # The server parses ~5,000 of these a second (less on a loaded machine): give it time.
    await _first_cut(attackers, 15.0)
    cut = sum(p.eof for p in attackers)
    for p in attackers:
        await p.close()
    assert cut, f"{resets} resets over 20 connections, none cut (server bucket 2000)"
