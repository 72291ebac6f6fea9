"""0-length headers leak (CVE-2019-9516): header fields with empty names, on many streams.

An empty field name is malformed (RFC 9113 section 8.2: names are tokens, at least one
character); implementations that stored such fields before validating them leaked memory per
field.  Each request here carries a valid request line plus 200 empty-name fields (3 bytes
each on the wire).  The server must reject every one (stream error PROTOCOL_ERROR, or a
connection error), never hand it to a handler, and -- because each rejection is a reset the
attacker provoked -- stop after a bounded number of them.
"""

from __future__ import annotations

import pytest
import rawpeer as rp
from dosharness import Checks, HealthProbe, KiB, MemoryMeter, attack_checks
from h2.errors import ErrorCodes as E
from rawpeer import RawPeer

pytestmark = pytest.mark.timeout(45)

STREAMS = 5_000
EMPTY_FIELDS = 200
BATCH = 50
MAX_RESETS = 2_000
BOUND = 1024 * KiB


def _block() -> bytes:
    # Static-table refs (:method GET, :scheme http), literal :path and :authority without
    # indexing, then "literal without indexing, new name" with empty name and value.  Nothing
    # enters the dynamic table, so the same bytes are valid on every stream.
    path = b"\x04" + bytes([len(b"/empty")]) + b"/empty"
    authority = b"\x01" + bytes([len(b"127.0.0.1")]) + b"127.0.0.1"
    return b"\x82\x86" + path + authority + b"\x00\x00\x00" * EMPTY_FIELDS


@pytest.mark.expect_log("aioh2s", "WARNING", "closing connection from")
async def test_zero_length_header_names(serve):
    srv = await serve()
    checks = Checks("0-length header names")
    peer = await RawPeer.connect(srv.port, track_streams=False)
    await peer.handshake()
    block = _block()

    def batch(i: int) -> bytes:
        return b"".join(
            rp.headers_frame(1 + 2 * (i * BATCH + k), block, end_stream=True) for k in range(BATCH)
        )

    async with HealthProbe(srv.port) as probe:
        with MemoryMeter("0-length header names", f"{STREAMS} x {EMPTY_FIELDS} fields") as mem:
            sent = await peer.flood(
                batch,
                repeat=STREAMS // BATCH,
                seconds=5.0,
                stop=lambda p: p.goaway is not None or p.eof,
            )
            await peer.wait_for(
                lambda p: p.goaway is not None or p.eof or p.rst_count >= sent * BATCH, 10.0
            )

    checks.expect(
        peer.rst_count or peer.goaway is not None,
        f"malformed requests neither reset nor refused: {peer.describe()}",
    )
    if peer.rst_count:
        checks.expect(
            set(peer.rst_codes) == {E.PROTOCOL_ERROR},
            f"streams reset with {dict(peer.rst_codes)}, expected PROTOCOL_ERROR",
        )
    if peer.goaway is not None:
        checks.expect(
            peer.goaway.error_code in (E.PROTOCOL_ERROR, E.ENHANCE_YOUR_CALM),
            f"GOAWAY {rp.code_name(peer.goaway.error_code)}: {peer.describe()}",
        )
    else:
        checks.expect(
            sent * BATCH <= MAX_RESETS,
            f"server reset {peer.rst_count} malformed streams and kept the connection open "
            f"(bound {MAX_RESETS} provoked resets)",
        )
    checks.expect(
        "/empty" not in srv.app.paths,
        f"handler ran for a request with empty header names: {srv.app.describe()}",
    )
    await attack_checks(checks, srv, probe, mem, BOUND)
    await peer.close()
    print(f"0-length headers: {sent * BATCH} streams sent; {peer.describe()}")
    checks.done()
