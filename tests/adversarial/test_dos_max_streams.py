"""Max concurrent streams: enforced with REFUSED_STREAM, and a client that keeps trying is cut off.

The server advertises SETTINGS_MAX_CONCURRENT_STREAMS (default 100).  A stream opened beyond
it gets RST_STREAM(REFUSED_STREAM) -- RFC 9113 section 5.1.2 allows PROTOCOL_ERROR too, but
REFUSED_STREAM tells the client the request was not processed and may be retried (section
8.7), which is what issue 6 asks for -- and its handler never runs.  The connection stays
usable.  A client that keeps opening streams past the limit anyway is abusing it: after a
bound the server ends the connection (GOAWAY(ENHANCE_YOUR_CALM); Go closes when more than 4x
the limit pile up).  When the connection goes, the handlers of its open streams are cancelled.
"""

from __future__ import annotations

import asyncio

import pytest
import rawpeer as rp
from dosharness import Checks, HealthProbe, MemoryMeter, MiB, attack_checks
from h2.errors import ErrorCodes as E
from rawpeer import RawPeer

pytestmark = pytest.mark.timeout(45)

EXCESS = 10_000
BATCH = 100
BOUND = 4 * MiB  # 100 open streams with handlers, plus ~1000 refusals' worth of state


@pytest.mark.expect_log("aioh2s", "WARNING", "closing connection from")
async def test_max_concurrent_streams(serve):
    srv = await serve()
    checks = Checks("max concurrent streams")
    peer = await RawPeer.connect(srv.port, track_streams=True, keep_body=False)
    settings = await peer.handshake()
    mcs = settings.get(rp.MAX_CONCURRENT_STREAMS)
    assert mcs is not None, f"server does not advertise SETTINGS_MAX_CONCURRENT_STREAMS: {settings}"
    assert 1 <= mcs <= 1000, f"SETTINGS_MAX_CONCURRENT_STREAMS={mcs} is not a safe default"

    # Fill every slot with a request whose handler never returns.
    sids = [peer.new_stream_id() for _ in range(mcs)]
    for i in range(0, mcs, BATCH):
        await peer.send(*(peer.request(sid, "/hang") for sid in sids[i : i + BATCH]))
    loop_ok = await _until(lambda: len(srv.app.hanging) >= mcs, 5.0)
    checks.expect(loop_ok, f"{mcs} handlers expected running: {srv.app.describe()}")

    # One more: refused, its handler never runs, the connection stays usable.
    extra = peer.new_stream_id()
    await peer.send(peer.request(extra, "/hang-excess"))
    await checks.run("excess stream", peer.expect_rst(extra, E.REFUSED_STREAM, timeout=3.0))
    checks.expect(
        "/hang-excess" not in srv.app.paths,
        f"handler ran for a stream beyond the limit: {srv.app.describe()}",
    )
    checks.expect(await peer.ping(), f"connection unusable after one refusal: {peer.describe()}")

    # Keep opening: the server must give up on this client after a bound.
    hdrs = rp.request_headers("/hang-excess")
    block = None

    def batch(i: int) -> bytes:
        nonlocal block
        out = []
        for _ in range(BATCH):
            sid = peer.new_stream_id()
            if block is None:
                out.append(peer.headers(sid, hdrs, end_stream=True))
                block = peer.encoder.encode(hdrs, huffman=False)
            else:
                out.append(rp.headers_frame(sid, block, end_stream=True))
        return b"".join(out)

    peer.track_streams = False  # keep the attacker's own bookkeeping small from here on
    async with HealthProbe(srv.port) as probe:
        with MemoryMeter("streams beyond the limit", f"{EXCESS} excess HEADERS") as mem:
            sent = await peer.flood(
                batch,
                repeat=EXCESS // BATCH,
                seconds=5.0,
                stop=lambda p: p.goaway is not None or p.eof,
            )
            await peer.wait_for(lambda p: p.goaway is not None or p.eof, 3.0)
    await checks.run(
        "persistent excess",
        peer.expect_goaway(E.ENHANCE_YOUR_CALM, E.PROTOCOL_ERROR, timeout=0.5),
    )
    checks.expect(await peer.closed(3.0), f"abusive connection left open: {peer.describe()}")
    checks.expect(
        srv.app.max_hanging <= mcs,
        f"{srv.app.max_hanging} handlers ran at once (limit {mcs}): {srv.app.describe()}",
    )
    checks.expect(
        "/hang-excess" not in srv.app.paths,
        f"handler ran for a stream beyond the limit: {srv.app.describe()}",
    )
    await attack_checks(checks, srv, probe, mem, BOUND)
    await peer.close()
    print(f"max streams {mcs}: {sent * BATCH} excess sent; {peer.describe()}")
    checks.done()


async def _until(predicate, timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate() and loop.time() < deadline:
        await asyncio.sleep(0.01)
    return bool(predicate())
