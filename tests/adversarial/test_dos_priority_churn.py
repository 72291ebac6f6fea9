"""Resource loop (CVE-2019-9513): PRIORITY churn.

The attacker sends tens of thousands of PRIORITY frames that keep reshuffling a dependency
tree over idle and open streams.  RFC 9113 deprecates the RFC 7540 priority scheme; the
server should ignore priorities (advertising SETTINGS_NO_RFC7540_PRIORITIES) and keep no
per-frame state.  Two answers are correct: the connection stays usable (a PING is answered and
a request still gets its 200 afterwards) with memory flat, or the server counts PRIORITY
frames as glitches and ends the connection with GOAWAY(ENHANCE_YOUR_CALM).
"""

from __future__ import annotations

import random

import pytest
import rawpeer as rp
from dosharness import Checks, HealthProbe, KiB, MemoryMeter, attack_checks
from h2.errors import ErrorCodes as E
from rawpeer import RawPeer

pytestmark = pytest.mark.timeout(45)

FRAMES = 40_000
PER_BLOB = 1000
BOUND = 512 * KiB  # an ignored PRIORITY frame costs nothing to keep


@pytest.mark.expect_log("aioh2s", "WARNING", "closing connection from")
async def test_priority_churn(serve):
    srv = await serve()
    checks = Checks("PRIORITY churn")
    peer = await RawPeer.connect(srv.port, track_streams=True)
    settings = await peer.handshake()
    checks.expect(
        settings.get(rp.NO_RFC7540_PRIORITIES) == 1,
        f"server does not advertise SETTINGS_NO_RFC7540_PRIORITIES=1 (RFC 9113 section 5.3.2): "
        f"{settings}",
    )
    # Two open streams whose priorities get churned too.
    await peer.send(peer.request(1, "/hang-headers"), peer.request(3, "/hang-headers"))
    rng = random.Random(9513)
    ids = [1, 3] + list(range(5, 5 + 2 * 400, 2))  # open streams plus 400 idle ones

    def one() -> bytes:
        sid = rng.choice(ids)
        dep = rng.choice(ids + [0])
        if dep == sid:  # a self-dependency is a (legitimate) PROTOCOL_ERROR: not this test
            dep = 0
        return rp.priority(sid, dep, rng.randint(1, 256), exclusive=rng.random() < 0.5)

    def blob(i: int) -> bytes:
        return b"".join(one() for _ in range(PER_BLOB))

    blobs = [blob(i) for i in range(8)]  # reused round-robin: the attacker allocates little
    async with HealthProbe(srv.port) as probe:
        with MemoryMeter("PRIORITY churn", f"{FRAMES} frames over {len(ids)} streams") as mem:
            sent = await peer.flood(
                lambda i: blobs[i % len(blobs)],
                repeat=FRAMES // PER_BLOB,
                seconds=5.0,
                stop=lambda p: p.goaway is not None or p.eof,
            )
            usable = await peer.ping(timeout=3.0)

    if peer.goaway is not None:
        checks.expect(
            peer.goaway.error_code == E.ENHANCE_YOUR_CALM,
            f"GOAWAY {rp.code_name(peer.goaway.error_code)}; valid PRIORITY frames deserve "
            f"ENHANCE_YOUR_CALM or nothing: {peer.describe()}",
        )
    else:
        checks.expect(usable, f"connection neither usable nor closed: {peer.describe()}")
        peer.skip_stream_ids(5 + 2 * 400)
        try:
            resp = await peer.get("/", timeout=3.0)
            checks.expect(resp.status == "200", f"request after churn got {resp.status}")
        except rp.PeerError as exc:
            checks.expect(False, f"request after churn failed: {exc}")
    await attack_checks(checks, srv, probe, mem, BOUND, handlers_gone=None)
    await peer.close()
    checks.expect(
        await srv.app.wait_idle(3.0),
        f"handlers still running after the connection closed: {srv.app.describe()}",
    )
    print(f"PRIORITY churn: sent {sent * PER_BLOB}; {peer.describe()}")
    checks.done()
