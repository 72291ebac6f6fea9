"""Rapid Reset (CVE-2023-44487): open a stream and reset it at once, as fast as possible.

Each HEADERS costs the server a stream, a handler task and a decode, and each RST_STREAM
throws the work away before the attacker could ever be refused for concurrency.  The server
must count resets per unit of time and answer GOAWAY(ENHANCE_YOUR_CALM) past a budget
(nghttp2: a burst of 1000 then 33/s), cancel the handlers of reset streams so that no more
than SETTINGS_MAX_CONCURRENT_STREAMS of them ever run at once (Go's defence), and keep
serving other connections while it does.
"""

from __future__ import annotations

import pytest
import rawpeer as rp
from dosharness import Checks, HealthProbe, MemoryMeter, MiB, attack_checks
from h2.errors import ErrorCodes as E
from rawpeer import RawPeer

pytestmark = pytest.mark.timeout(45)

PAIRS = 20_000  # well past nghttp2's burst of 1000 resets
BATCH = 100
BOUND = 4 * MiB  # ~1000 streams of h2 + aioh2s state; an unbounded server passes 50 MiB


@pytest.mark.expect_log("aioh2s", "WARNING", "closing connection from")
async def test_rapid_reset(serve):
    srv = await serve()
    checks = Checks("rapid reset")
    peer = await RawPeer.connect(srv.port, track_streams=False)
    server_settings = await peer.handshake()
    mcs = server_settings.get(rp.MAX_CONCURRENT_STREAMS)
    checks.expect(mcs is not None, "server does not advertise SETTINGS_MAX_CONCURRENT_STREAMS")

    hdrs = rp.request_headers("/hang")
    first = peer.encoder.encode(hdrs, huffman=False)
    # The second encoding is all indexed references; it is stateless from then on, so one
    # block serves every later stream without touching the HPACK tables again.
    block = peer.encoder.encode(hdrs, huffman=False)

    def batch(i: int) -> bytes:
        out = []
        for k in range(BATCH):
            sid = 1 + 2 * (i * BATCH + k)
            blk = first if sid == 1 else block
            out.append(rp.headers_frame(sid, blk, end_stream=True) + rp.rst(sid, E.CANCEL))
        return b"".join(out)

    async with HealthProbe(srv.port) as probe:
        with MemoryMeter("rapid reset", f"{PAIRS} HEADERS+RST_STREAM") as mem:
            sent = await peer.flood(
                batch,
                repeat=PAIRS // BATCH,
                seconds=5.0,
                stop=lambda p: p.goaway is not None or p.eof,
            )
            await peer.wait_for(lambda p: p.goaway is not None or p.eof, 3.0)

    await checks.run("answer", peer.expect_goaway(E.ENHANCE_YOUR_CALM, timeout=0.5))
    checks.expect(
        await peer.closed(3.0), f"server did not close the abusive connection: {peer.describe()}"
    )
    if mcs is not None:
        checks.expect(
            srv.app.max_hanging <= mcs,
            f"{srv.app.max_hanging} handlers of reset streams ran at once (limit {mcs}): "
            f"{srv.app.describe()}",
        )
    await attack_checks(checks, srv, probe, mem, BOUND)
    await peer.close()
    print(f"rapid reset: sent {sent * BATCH} pairs; {peer.describe()}; {srv.app.describe()}")
    checks.done()


async def test_a_request_reset_in_the_same_read_starts_no_handler(serve):
    """HEADERS + RST_STREAM arriving together cost h2's bookkeeping, not a handler task."""
    srv = await serve()
    peer = await RawPeer.connect(srv.port)
    await peer.handshake()
    out = b"".join(peer.request(1 + 2 * i, "/hang") + rp.rst(1 + 2 * i) for i in range(50))
    await peer.send(out)
    assert await peer.ping(timeout=3.0)
    # The server may read the write in more than one piece (a pair split across reads
    # starts its handler); nearly all pairs must cost nothing.
    started = srv.app.started
    assert started <= 2, srv.app.describe()
    peer.skip_stream_ids(101)
    resp = await peer.get("/", timeout=3.0)
    assert resp.status == "200" and srv.app.started == started + 1
    await peer.close()


@pytest.mark.expect_log("aioh2s", "WARNING", "reset budget is overdrawn")
async def test_rapid_reset_spread_over_connections_is_cut_server_wide(serve):
    """Each connection stays far inside its own budget; together they overdraw the server's."""
    # Each connection's own budget: 100 resets (it spends 60, past half of it); the
    # server's: 100 in all.
    srv = await serve(max_server_reset_burst=100, max_server_reset_rate=1.0,
                      max_reset_burst=100, max_reset_rate=1.0)
    peers = [await RawPeer.connect(srv.port) for _ in range(4)]
    for p in peers:
        await p.handshake()
    for k in range(60):  # 240 resets in all, 60 per connection
        for p in peers:
            sid = 1 + 2 * k
            if not p.eof:
                await p.try_send(p.request(sid, "/hang") + rp.rst(sid))
    cut = [p for p in peers if await p.closed(2.0)]
    assert cut, [p.describe() for p in peers]
    for p in cut:
        assert p.goaway is not None and p.goaway.error_code == E.ENHANCE_YOUR_CALM, p.describe()
    await assert_still_serving_ok(srv.port)
    for p in peers:
        await p.close()


async def assert_still_serving_ok(port: int) -> None:
    resp = await rp.fresh_get(port, "/", timeout=5.0)
    assert resp.status == "200"


@pytest.mark.expect_log("aioh2s", "WARNING", "reset budget is overdrawn")
async def test_a_busy_client_cancelling_some_requests_is_spared_server_wide(serve):
    """While the server's budget is overdrawn, only connections that reset most of what they
    opened go: one that resets a quarter of many requests (more resets than the attackers'
    threshold, but no Rapid Reset) stays, and its requests are answered."""
    srv = await serve(max_server_reset_burst=50, max_server_reset_rate=1.0)
    peers: list[RawPeer] = []
    busy = await RawPeer.connect(srv.port)
    peers.append(busy)
    try:
        await busy.handshake()
        attackers = [await RawPeer.connect(srv.port) for _ in range(3)]
        peers += attackers
        for p in attackers:
            await p.handshake()
        for k in range(40):  # busy: 40 requests answered, then 20 of 80 hanging ones reset
            await busy.send(busy.request(1 + 2 * k, "/"))
        for k in range(40, 120):
            sid = 1 + 2 * k
            await busy.send(busy.request(sid, "/hang") + (rp.rst(sid) if k % 4 == 0 else b""))
        assert await busy.wait_for(lambda p: sum(r.ended for r in p.streams.values()) >= 40, 5)
        for k in range(60):  # then each attacker: 60 pairs
            for p in attackers:
                if not p.eof:
                    sid = 1 + 2 * k
                    await p.try_send(p.request(sid, "/hang") + rp.rst(sid))
        cut = [p for p in attackers if await p.closed(2.0)]
        assert cut, [p.describe() for p in attackers]
        for p in cut:
            assert p.goaway is not None and p.goaway.error_code == E.ENHANCE_YOUR_CALM, p.describe()
        assert not busy.eof and busy.goaway is None, busy.describe()
    finally:
        for p in peers:
            await p.close()
