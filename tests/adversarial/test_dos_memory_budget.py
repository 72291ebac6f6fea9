"""The server-wide memory budget (``max_request_memory``): header lists and unread bodies.

One connection is bounded by its own limits (streams x header list, connection window), but
many connections within every per-connection limit still add up. The budget counts what all
connections hold; over it new streams get REFUSED_STREAM and the connection holding the most
is ended with GOAWAY(ENHANCE_YOUR_CALM). Its accounting must come back to zero.
"""

from __future__ import annotations

import asyncio

import pytest
import rawpeer as rp
from dosharness import assert_still_serving
from h2.errors import ErrorCodes as E
from rawpeer import RawPeer

pytestmark = pytest.mark.timeout(45)

KiB = 1024
BUDGET = 256 * KiB


async def _peer(port: int) -> RawPeer:
    peer = await RawPeer.connect(port)
    await peer.handshake()
    return peer


async def _pool_empty(srv, timeout: float = 3.0) -> int:
    pool = srv.server._pool
    for _ in range(int(timeout / 0.02)):
        if pool.used == 0:
            break
        await asyncio.sleep(0.02)
    return pool.used


async def test_header_lists_over_the_budget_are_refused_and_nobody_is_culled(serve):
    """At the budget new streams get REFUSED_STREAM (retry-safe); open ones are left alone."""
    srv = await serve(max_request_memory=BUDGET)
    small = await _peer(srv.port)
    await small.send(small.request(1, "/hang-headers"))
    big = await _peer(srv.port)
    pad = [(f"x-pad-{i}", "p" * 1000) for i in range(15)]  # ~15.5 KiB per header list
    for i in range(30):  # ~470 KiB asked for: past the budget
        await big.send(big.request(1 + 2 * i, "/hang", extra=pad))
    assert await big.ping(timeout=3.0), big.describe()
    assert big.rst_codes[E.REFUSED_STREAM] >= 10, big.describe()
    assert big.goaway is None and not big.eof, big.describe()
    assert srv.server._pool.used <= BUDGET
    # Both connections go on; once streams end, new ones are accepted again.
    assert not small.eof and small.goaway is None and await small.ping(), small.describe()
    for i in range(30):
        await big.send(rp.rst(1 + 2 * i))
    await small.send(rp.rst(1))
    assert await _pool_empty(srv) == 0
    big.skip_stream_ids(61)
    resp = await big.get("/", timeout=3.0)
    assert resp.status == "200"
    await assert_still_serving(srv.port)
    await small.close()
    await big.close()


async def test_unread_bodies_do_not_count_so_an_honest_upload_is_never_culled(serve):
    """Bodies are bounded by flow control; an upload larger than the whole budget completes."""
    srv = await serve(max_request_memory=BUDGET, connection_window=1 << 20,
                      stream_window=256 * KiB)
    peer = await _peer(srv.port)
    body = b"u" * (16 * KiB)
    sid = peer.new_stream_id()
    peer.streams[sid] = rp.Response()
    await peer.send(peer.request(sid, "/hang-read", "POST", end_stream=False))
    sent = 0

    def room(p: RawPeer) -> int:  # what the server's windows let us send now
        stream = p.initial_window + p.window_updates[sid]
        conn = 65535 + p.window_updates[0]
        return min(stream, conn) - sent

    while sent < 4 * BUDGET:  # four times the budget; the handler reads it all (read())
        assert await peer.wait_for(lambda p: room(p) >= len(body) or p.eof, 3.0), peer.describe()
        await peer.send(rp.data(sid, body))
        sent += len(body)
    await peer.send(rp.data(sid, b"", end_stream=True))
    assert await peer.wait_for(lambda p: p.streams[sid].ended or p.eof, 5.0), peer.describe()
    assert bytes(peer.streams[sid].body) == str(sent).encode(), peer.describe()
    assert peer.goaway is None
    await peer.close()
    assert await _pool_empty(srv) == 0


async def test_the_budget_comes_back_to_zero_after_ordinary_traffic(serve):
    srv = await serve(max_request_memory=BUDGET)
    peer = await _peer(srv.port)
    for _ in range(20):
        resp = await peer.get("/echo", method="POST", body=b"e" * 15_000, timeout=3.0)
        assert resp.status == "200" and len(resp.body) == 15_000
        resp = await peer.get("/", timeout=3.0)
        assert resp.status == "200"
    assert await _pool_empty(srv) == 0
    # Streams reset mid-body, and a connection dropped with streams open, give it back too.
    await peer.send(peer.request(99, "/hang", "POST", end_stream=False), rp.data(99, b"x" * 5000),
                    rp.rst(99))
    other = await _peer(srv.port)
    await other.send(other.request(1, "/hang", "POST", end_stream=False),
                     rp.data(1, b"y" * 5000))
    await asyncio.sleep(0.1)
    await other.close()
    assert await _pool_empty(srv) == 0
    await peer.close()


@pytest.mark.expect_log("aioh2s", "WARNING", "over max_request_memory")
async def test_unfinished_header_blocks_count(serve):
    srv = await serve(max_request_memory=128 * KiB, header_timeout=30.0)
    peers = [await _peer(srv.port) for _ in range(3)]  # holding 96 + 96 + 16 KB
    for k, peer in enumerate(peers):
        # HEADERS without END_HEADERS, then CONTINUATIONs: up to ~96 KiB, never finished.
        block = peer.encoder.encode(rp.request_headers("/hang"), huffman=False)
        frames = [rp.headers_frame(1, block, end_stream=True, end_headers=False)]
        frames += [rp.continuation(1, b"\x00" * 16000) for _ in range(6 if k < 2 else 1)]
        await peer.try_send(*frames)
        await asyncio.sleep(0.1)
    cut = [p for p in peers if await p.closed(3.0)]
    assert cut and all(p.goaway is not None and p.goaway.error_code == E.ENHANCE_YOUR_CALM
                       for p in cut), [p.describe() for p in peers]
    assert len(cut) == 1 and peers[2] not in cut  # one heavy one goes, the light one stays
    await assert_still_serving(srv.port)
    for p in peers:
        await p.close()
    assert await _pool_empty(srv) == 0


@pytest.mark.expect_log("aioh2s", "WARNING", "at max_request_memory")
async def test_unfinished_header_blocks_make_room_for_new_streams(serve):
    """Over the budget but within its slack, unfinished blocks go before anyone is refused."""
    srv = await serve(max_request_memory=128 * KiB, header_timeout=30.0)
    holders = [await _peer(srv.port) for _ in range(2)]  # 2 x ~70 KB: over 128, under 160
    for peer in holders:
        block = peer.encoder.encode(rp.request_headers("/hang"), huffman=False)
        frames = [rp.headers_frame(1, block, end_stream=True, end_headers=False)]
        frames += [rp.continuation(1, b"\x00" * 14000) for _ in range(5)]
        await peer.try_send(*frames)
    await asyncio.sleep(0.6)  # unfinished for over STALE_BLOCK (0.25 s): no block in flight
    assert not any(p.eof for p in holders), [p.describe() for p in holders]  # within slack
    healthy = await _peer(srv.port)
    resp = await healthy.get("/", timeout=3.0)  # refused (REFUSED_STREAM) before the fix
    assert resp.status == "200", healthy.describe()
    cut = [p for p in holders if await p.closed(3.0)]
    assert len(cut) == 1 and cut[0].goaway.error_code == E.ENHANCE_YOUR_CALM, cut
    for p in [*holders, healthy]:
        await p.close()
    assert await _pool_empty(srv) == 0
