"""Slow header blocks and control-frame floods that a reading peer sends (aggregate-abuse work).

- A HEADERS frame sent a byte at a time, and a header block left unfinished (HEADERS without
  END_HEADERS, then nothing), hold a stream slot and a partial block forever unless timed:
  ``header_timeout`` cuts both with GOAWAY(ENHANCE_YOUR_CALM).
- A peer that reads our replies but sends PING or SETTINGS far faster than any keepalive or
  BDP estimator is cut by the ``max_control_burst``/``max_control_rate`` budget.
- Neither trips for a well-behaved client: back-to-back requests for several times
  ``header_timeout``, and a burst of pings well inside the budget.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import rawpeer as rp
from dosharness import Checks, HealthProbe, assert_still_serving
from h2.errors import ErrorCodes as E
from rawpeer import RawPeer

pytestmark = pytest.mark.timeout(45)

HEADER_TIMEOUT = 0.5
SLACK = 1.5  # scheduling slack on a loaded 2-core CI machine


async def _trickle(peer: RawPeer, data: bytes, interval: float) -> None:
    for i in range(len(data)):
        if peer.eof or not await peer.try_send(data[i : i + 1], timeout=1.0):
            return
        await asyncio.sleep(interval)


@pytest.mark.parametrize("how", ["byte-a-tick", "unfinished-block"])
@pytest.mark.expect_log("aioh2s", "WARNING", "header block was not completed")
async def test_a_slow_header_block_is_cut(serve, how):
    srv = await serve(header_timeout=HEADER_TIMEOUT)
    checks = Checks(f"slow header block ({how})")
    peer = await RawPeer.connect(srv.port)
    await peer.handshake()
    t0 = time.monotonic()
    async with HealthProbe(srv.port) as probe:
        if how == "byte-a-tick":
            frame = peer.request(1, "/", extra=[("x-pad", "p" * 200)])
            trickle = asyncio.ensure_future(_trickle(peer, frame, 0.05))  # ~11 s for all
        else:
            block = peer.encoder.encode(rp.request_headers("/hang"), huffman=False)
            await peer.send(rp.headers_frame(1, block[:5], end_headers=False))
            trickle = None
        closed = await peer.closed(HEADER_TIMEOUT + SLACK)
        elapsed = time.monotonic() - t0
        if trickle is not None:
            trickle.cancel()
            await asyncio.gather(trickle, return_exceptions=True)
    checks.expect(closed, f"still open {elapsed:.1f} s later: {peer.describe()}")
    checks.expect(
        peer.goaway is not None and peer.goaway.error_code == E.ENHANCE_YOUR_CALM,
        f"expected GOAWAY(ENHANCE_YOUR_CALM): {peer.describe()}",
    )
    checks.call("healthy client", probe.check)
    await checks.run("server after the attack", assert_still_serving(srv.port))
    await peer.close()
    checks.done()


async def test_back_to_back_requests_outlast_the_header_timeout(serve):
    """Requests for 4x header_timeout, split at every byte boundary, are never cut."""
    srv = await serve(header_timeout=HEADER_TIMEOUT)
    peer = await RawPeer.connect(srv.port)
    await peer.handshake()
    deadline = time.monotonic() + 4 * HEADER_TIMEOUT
    done = 0
    while time.monotonic() < deadline:
        sid = peer.new_stream_id()
        frame = peer.request(sid, "/", extra=[("x-n", str(sid))])
        peer.streams[sid] = rp.Response()
        # Each request arrives in two writes, the split inside its HEADERS frame.
        cut = 1 + sid % (len(frame) - 1)
        await peer.send(frame[:cut])
        await asyncio.sleep(0.01)
        await peer.send(frame[cut:])
        assert await peer.wait_for(lambda p, sid=sid: p.streams[sid].ended or p.eof, 3.0)
        assert peer.streams.pop(sid).status == "200", peer.describe()
        done += 1
    assert peer.goaway is None and not peer.eof, peer.describe()
    assert done > 10
    await peer.close()


@pytest.mark.parametrize("kind", ["ping", "settings"])
@pytest.mark.expect_log("aioh2s", "WARNING", "faster than max_control_rate")
async def test_a_control_frame_flood_is_cut_while_the_peer_reads(serve, kind):
    srv = await serve()
    checks = Checks(f"{kind} flood while reading")
    peer = await RawPeer.connect(srv.port, track_streams=False)
    await peer.handshake()
    frame = rp.ping(b"floodfl\x00") if kind == "ping" else rp.settings()
    t0 = time.monotonic()
    async with HealthProbe(srv.port) as probe:
        await peer.flood(frame * 100, repeat=100, seconds=3.0,
                         stop=lambda p: p.goaway is not None or p.eof)
        closed = await peer.closed(2.0)
    elapsed = time.monotonic() - t0
    checks.expect(closed and elapsed < 2.0, f"not cut within 2 s ({elapsed:.2f} s): "
                  f"{peer.describe()}")
    checks.expect(
        peer.goaway is not None and peer.goaway.error_code == E.ENHANCE_YOUR_CALM,
        f"expected GOAWAY(ENHANCE_YOUR_CALM): {peer.describe()}",
    )
    checks.call("healthy client", probe.check)
    await checks.run("server after the attack", assert_still_serving(srv.port))
    await peer.close()
    checks.done()


async def test_pings_inside_the_budget_are_answered(serve):
    srv = await serve()
    peer = await RawPeer.connect(srv.port)
    await peer.handshake()
    for _ in range(100):
        assert await peer.ping(timeout=3.0), peer.describe()
    assert peer.goaway is None and not peer.eof
    await peer.close()


async def test_pings_that_follow_our_data_are_free(serve):
    """A BDP estimator (gRPC) pings once per burst of data it receives: never a flood."""
    srv = await serve()
    peer = await RawPeer.connect(srv.port)
    await peer.handshake()
    sid = peer.new_stream_id()
    peer.streams[sid] = rp.Response()
    await peer.send(peer.request(sid, "/big/64000000"))
    pings = 0
    seen = 0
    while not peer.streams[sid].ended and not peer.eof and pings < 600:
        assert await peer.wait_for(
            lambda p, seen=seen: p.counts[rp.DATA] > seen or p.streams[sid].ended or p.eof, 3.0
        ), peer.describe()
        seen = peer.counts[rp.DATA]
        await peer.send(rp.ping(pings.to_bytes(8, "big")))  # one per burst of DATA
        pings += 1
    assert pings > 220, pings  # beyond the 200-frame burst of the control budget
    assert peer.goaway is None and not peer.eof, peer.describe()
    await peer.close()
