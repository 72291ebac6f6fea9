"""Empty frames flood (CVE-2019-9518): frames that cost work but carry no progress.

Zero-length DATA without END_STREAM, zero-length CONTINUATION, unknown extension frames:
none asks for a reply, each costs the server a parse and an event.  The reference
implementations count such "glitches" (nghttp2: a burst of 10,000 then 330/s; Envoy: one
empty frame in a row) and end the connection with GOAWAY(ENHANCE_YOUR_CALM).  h2 caps
CONTINUATION frames at 64 per block (PROTOCOL_ERROR), so that answer is accepted for them.
"""

from __future__ import annotations

import pytest
import rawpeer as rp
from dosharness import Checks, HealthProbe, KiB, MemoryMeter, attack_checks
from h2.errors import ErrorCodes as E
from rawpeer import RawPeer

pytestmark = pytest.mark.timeout(45)

FRAMES = 30_000  # 3x nghttp2's glitch burst of 10,000
PER_BLOB = 1000
# Nothing needs storing; what remains is one read's worth of parsed frames and events
# (h2 returns the events of a whole receive_data() call at once) plus read buffers.
BOUND = 1024 * KiB

KINDS = {
    "empty-data": (E.ENHANCE_YOUR_CALM,),
    "empty-continuation": (E.ENHANCE_YOUR_CALM, E.PROTOCOL_ERROR),
    "unknown-frame-type": (E.ENHANCE_YOUR_CALM,),
}


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.expect_log("aioh2s", "WARNING", "closing connection from")
async def test_empty_frames_flood(serve, kind):
    srv = await serve()
    checks = Checks(f"empty frames flood ({kind})")
    peer = await RawPeer.connect(srv.port, track_streams=False)
    await peer.handshake()
    if kind == "empty-data":
        # An open request whose handler reads the body: each empty DATA is a wake-up for
        # nothing.
        await peer.send(peer.request(1, "/hang-read", "POST", end_stream=False))
        blob = rp.data(1, b"") * PER_BLOB
    elif kind == "empty-continuation":
        await peer.send(
            peer.headers(1, rp.request_headers("/hang"), end_stream=True, end_headers=False)
        )
        blob = rp.continuation(1, b"") * PER_BLOB
    else:
        # RFC 9113 section 5.5: unknown types are ignored -- which is what makes them free
        # for the attacker unless counted.
        blob = rp.raw_frame(0xEE, 0, 0, b"") * PER_BLOB

    async with HealthProbe(srv.port) as probe:
        with MemoryMeter(f"empty frames {kind}", f"{FRAMES} frames") as mem:
            sent = await peer.flood(
                blob,
                repeat=FRAMES // PER_BLOB,
                seconds=5.0,
                stop=lambda p: p.goaway is not None or p.eof,
            )
            await peer.wait_for(lambda p: p.goaway is not None or p.eof, 2.0)

    await checks.run("answer", peer.expect_goaway(*KINDS[kind], timeout=0.5))
    checks.expect(await peer.closed(2.0), f"connection left open: {peer.describe()}")
    await attack_checks(checks, srv, probe, mem, BOUND)
    await peer.close()
    print(f"empty frames {kind}: sent {sent * PER_BLOB}; {peer.describe()}")
    checks.done()
