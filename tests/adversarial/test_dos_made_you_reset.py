"""MadeYouReset (CVE-2025-8671): frames that make the *server* reset the attacker's streams.

Rapid Reset budgets count RST_STREAM frames the peer sends.  MadeYouReset gets the same
effect without sending any: each stream is opened and then given a frame the server must
answer with RST_STREAM (DATA on a half-closed stream, a stream WINDOW_UPDATE that overflows
the window).  h2 generates those resets itself (``StreamReset`` with ``remote_reset=False``),
so the server must count them like received ones: GOAWAY(ENHANCE_YOUR_CALM) past the budget,
or escalate the provoked error to a connection error at once; either way the number of
resets it hands out is bounded, the handlers of the reset streams are cancelled, and other
connections are served throughout.
"""

from __future__ import annotations

import pytest
import rawpeer as rp
from dosharness import Checks, HealthProbe, MemoryMeter, MiB, attack_checks
from h2.errors import ErrorCodes as E
from rawpeer import RawPeer

pytestmark = pytest.mark.timeout(45)

STREAMS = 10_000
BATCH = 100
MAX_RESETS = 2_000  # nghttp2 allows a burst of 1000 then 33/s; twice that is the bound here
BOUND = 4 * MiB


def _provoke_data(sid: int) -> bytes:
    # After END_STREAM the stream is half-closed (remote): DATA is a stream error
    # STREAM_CLOSED (RFC 9113 section 5.1).
    return rp.data(sid, b"x")


def _provoke_window(sid: int) -> bytes:
    # WINDOW_UPDATE is allowed on a half-closed (remote) stream, but this one overflows the
    # send window past 2^31-1: stream error FLOW_CONTROL_ERROR (section 6.9.1).
    return rp.window_update(sid, rp.MAX_WINDOW)


PROVOCATIONS = {
    "data-on-half-closed": (_provoke_data, E.STREAM_CLOSED),
    "window-update-overflow": (_provoke_window, E.FLOW_CONTROL_ERROR),
}


@pytest.mark.parametrize("case", list(PROVOCATIONS.values()), ids=list(PROVOCATIONS))
@pytest.mark.expect_log("aioh2s", "WARNING", "closing connection from")
async def test_made_you_reset(serve, case):
    provoke, provoked_code = case
    srv = await serve()
    checks = Checks("MadeYouReset")
    peer = await RawPeer.connect(srv.port, track_streams=False)
    await peer.handshake()
    hdrs = rp.request_headers("/hang")
    first = peer.encoder.encode(hdrs, huffman=False)
    block = peer.encoder.encode(hdrs, huffman=False)

    def batch(i: int) -> bytes:
        out = []
        for k in range(BATCH):
            sid = 1 + 2 * (i * BATCH + k)
            blk = first if sid == 1 else block
            out.append(rp.headers_frame(sid, blk, end_stream=True) + provoke(sid))
        return b"".join(out)

    async with HealthProbe(srv.port) as probe:
        with MemoryMeter(f"MadeYouReset {provoked_code.name}", f"{STREAMS} provoked resets") as mem:
            sent = await peer.flood(
                batch,
                repeat=STREAMS // BATCH,
                seconds=5.0,
                stop=lambda p: p.goaway is not None or p.eof,
            )
            await peer.wait_for(lambda p: p.goaway is not None or p.eof, 3.0)

    if peer.rst_count:
        checks.expect(
            set(peer.rst_codes) == {provoked_code},
            f"server reset the streams with {dict(peer.rst_codes)}, expected "
            f"{rp.code_name(provoked_code)}",
        )
    await checks.run("answer", peer.expect_goaway(E.ENHANCE_YOUR_CALM, provoked_code, timeout=0.5))
    checks.expect(
        peer.rst_count <= MAX_RESETS,
        f"server sent {peer.rst_count} RST_STREAM before giving up (bound {MAX_RESETS})",
    )
    checks.expect(await peer.closed(3.0), f"abusive connection left open: {peer.describe()}")
    await attack_checks(checks, srv, probe, mem, BOUND)
    await peer.close()
    print(f"MadeYouReset: {sent * BATCH} streams sent; {peer.describe()}; {srv.app.describe()}")
    checks.done()
