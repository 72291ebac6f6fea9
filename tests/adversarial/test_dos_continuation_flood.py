"""CONTINUATION flood (2024: CVE-2024-27316, CVE-2023-45288): a header block that never ends.

HEADERS without END_HEADERS, then CONTINUATION after CONTINUATION.  Nothing can be decoded
until the block ends, so a server that buffers the block and checks its size afterwards
holds everything the attacker sends.  The server must cap the block *while it is being
assembled* (nghttp2: 8 CONTINUATION frames; Go: stop at the max header list size) and end
the connection -- HPACK state cannot survive an abandoned block, so the answer is GOAWAY
(ENHANCE_YOUR_CALM, or PROTOCOL_ERROR), never a handler call.  h2 itself stops only after
64 frames (``h2.frame_buffer.CONTINUATION_BACKLOG``) of up to the frame size each, i.e.
after buffering 1 MiB with the default frame size: more than the bound here.
"""

from __future__ import annotations

import pytest
import rawpeer as rp
from dosharness import Checks, HealthProbe, KiB, MemoryMeter, attack_checks
from h2.errors import ErrorCodes as E
from hpack.hpack import encode_integer
from rawpeer import RawPeer

pytestmark = pytest.mark.timeout(45)

TOTAL = 8 * 1024 * KiB  # what the attacker is willing to send in total
# A block capped at ~2x the 64 KiB default max_header_list_size, plus the server's read
# buffers (asyncio reads 256 KiB at a time; h2 copies into its frame buffer).  h2 alone
# buffers 64 full frames (1 MiB) before it objects.
BOUND = 1024 * KiB


def literal_field(name: bytes, value: bytes) -> bytes:
    """A complete HPACK "literal without indexing, new name" field: decodable if decoded."""
    return (
        b"\x00"
        + bytes(encode_integer(len(name), 7))
        + name
        + bytes(encode_integer(len(value), 7))
        + value
    )


@pytest.mark.parametrize("frame_kind", ["full-size", "tiny"])
async def test_continuation_flood(serve, frame_kind):
    srv = await serve()
    checks = Checks(f"CONTINUATION flood ({frame_kind} frames)")
    peer = await RawPeer.connect(srv.port, track_streams=False)
    await peer.handshake()
    if frame_kind == "full-size":
        # Each frame carries one big, valid literal header field.
        payload = literal_field(b"x-flood", b"a" * (peer.max_frame_size - 16))
    else:
        payload = literal_field(b"x", b"")  # 3 bytes: many frames, little data
    frame = rp.continuation(1, payload)
    per_blob = max(1, (64 * KiB) // len(frame))
    blob = frame * per_blob
    repeat = max(1, TOTAL // len(blob)) if frame_kind == "full-size" else 40
    start = peer.headers(1, rp.request_headers("/flood"), end_stream=True, end_headers=False)
    await peer.send(start)

    async with HealthProbe(srv.port) as probe:
        with MemoryMeter(
            f"CONTINUATION flood {frame_kind}", f"up to {repeat * per_blob} frames"
        ) as mem:
            sent = await peer.flood(
                blob, repeat=repeat, seconds=5.0, stop=lambda p: p.goaway is not None or p.eof
            )
            await peer.wait_for(lambda p: p.goaway is not None or p.eof, 3.0)

    await checks.run(
        "answer", peer.expect_goaway(E.ENHANCE_YOUR_CALM, E.PROTOCOL_ERROR, timeout=0.5)
    )
    checks.expect(await peer.closed(3.0), f"connection left open: {peer.describe()}")
    checks.expect(
        "/flood" not in srv.app.paths, f"handler ran for the flooded block: {srv.app.describe()}"
    )
    await attack_checks(checks, srv, probe, mem, BOUND)
    await peer.close()
    print(f"CONTINUATION flood {frame_kind}: sent {sent * per_blob} frames; {peer.describe()}")
    checks.done()
