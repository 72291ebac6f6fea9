"""Healthy clients that reset streams are not cut while others overdraw the server's budget.

Default server-wide budget (``max_server_reset_burst`` 2000, 1000 a second). Attackers keep
it overdrawn from 20 connections, each far inside its own 1000-reset budget, while a healthy
client hedges requests (resets half of what it opens) or closes a page with 30 requests in
flight (found by review: the first quick measure cut both).
"""
from __future__ import annotations

import asyncio

import pytest
import rawpeer as rp
from rawpeer import RawPeer

pytestmark = pytest.mark.timeout(40)


async def _attack(attackers, stop: asyncio.Event, per_conn: int = 900, batch: int = 10) -> None:
    for k in range(0, per_conn, batch):
        if stop.is_set():
            return
        for p in attackers:
            if not p.eof:
                await p.try_send(b"".join(p.request(1 + 2 * j, "/hang") + rp.rst(1 + 2 * j)
                                          for j in range(k, k + batch)))
        await asyncio.sleep(0.005)


async def _victim_browser_tab_close(v: RawPeer, n: int) -> None:
    # 30 slow requests in flight (images, XHRs of a page) ...
    sids = [v.new_stream_id() for _ in range(n)]
    await v.send(b"".join(v.request(s, "/hang") for s in sids))
    await asyncio.sleep(0.3)  # their handlers are running
    # ... and the user closes the tab / navigates: the browser cancels all of them.
    await v.send(b"".join(rp.rst(s) for s in sids))


async def _victim_hedging(v: RawPeer, pairs: int) -> None:
    # gRPC hedging / "send two, keep the faster": every call goes out twice and the slower
    # copy is cancelled once the first answered: exactly half of what it opens is reset.
    for _ in range(pairs):
        a, b = v.new_stream_id(), v.new_stream_id()
        v.streams[a] = rp.Response()
        await v.send(v.request(a, "/") + v.request(b, "/hang"))
        await v.wait_for(lambda p, a=a: p.streams[a].ended or p.eof, 2)
        await v.send(rp.rst(b))
        await asyncio.sleep(0.005)


@pytest.mark.expect_log("aioh2s", "WARNING", "closing connection from")
@pytest.mark.parametrize("victim", ["tab_close_30", "hedging_25", "hedging_25_then_attack"])
async def test_a_healthy_client_survives_an_attack_by_others(serve, victim):
    srv = await serve()
    attackers = [await RawPeer.connect(srv.port, track_streams=False) for _ in range(20)]
    for p in attackers:
        await p.handshake()
    v = await RawPeer.connect(srv.port)
    await v.handshake()
    stop = asyncio.Event()
    first = victim.endswith("then_attack")
    if first:
        await _victim_hedging(v, 25)
    attack = asyncio.ensure_future(_attack(attackers, stop))
    try:
        await asyncio.sleep(0.2)
        if first:
            await asyncio.sleep(0.5)
        elif victim == "tab_close_30":
            await _victim_browser_tab_close(v, 30)
        else:
            await _victim_hedging(v, 25)
        await asyncio.sleep(0.3)
        deadline = asyncio.get_running_loop().time() + 15.0  # slower on a loaded machine
        while not any(p.eof for p in attackers) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        cut = sum(p.eof for p in attackers)
        assert cut, "the attack was not even cut"
        assert v.goaway is None and not v.eof, f"healthy client cut: {v.describe()}"
    finally:
        stop.set()
        await attack
        for p in attackers + [v]:
            await p.close()
