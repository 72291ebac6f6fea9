"""HPACK bomb: a small header block that decodes into a huge header list.

The attacker stores one ~4 KiB header in the server's HPACK dynamic table (a legitimate
request), then sends a block made of one-byte references to it: 16 KiB on the wire that
decode to ~64 MiB of headers.  The server must cap the *decoded* size
(``max_header_list_size``, default in the tens of KiB) while decoding, and refuse the request
-- GOAWAY (ENHANCE_YOUR_CALM or COMPRESSION_ERROR: the decoder state is gone once decoding
stopped half way), or, for a server that finishes decoding without storing, RST_STREAM/431 on
that stream.  The handler never sees the bombed request, and memory stays small.
"""

from __future__ import annotations

import pytest
import rawpeer as rp
from dosharness import Checks, HealthProbe, KiB, MemoryMeter, attack_checks
from h2.errors import ErrorCodes as E
from hpack.hpack import encode_integer
from rawpeer import RawPeer

pytestmark = pytest.mark.timeout(45)

BOUND = 1024 * KiB  # the decoded list would be ~64 MiB; 64 KiB is the default cap

# Static-table references (RFC 7541 appendix A): :method GET, :scheme http, :path /.
METHOD_GET, SCHEME_HTTP, PATH_ROOT = b"\x82", b"\x86", b"\x84"


def literal_indexed_name(index: int, value: bytes) -> bytes:
    """Literal without indexing, name from the static table (4-bit prefix)."""
    return bytes(encode_integer(index, 4)) + bytes(encode_integer(len(value), 7)) + value


def literal_incremental(name: bytes, value: bytes) -> bytes:
    """Literal with incremental indexing, new name: adds (name, value) to the table."""
    first = encode_integer(0, 6)
    first[0] |= 0x40
    return (
        bytes(first)
        + bytes(encode_integer(len(name), 7))
        + name
        + bytes(encode_integer(len(value), 7))
        + value
    )


async def test_hpack_bomb(serve):
    srv = await serve()
    checks = Checks("HPACK bomb")
    peer = await RawPeer.connect(srv.port)
    await peer.handshake()
    table = peer.server_settings.get(rp.HEADER_TABLE_SIZE, 4096)
    value = b"b" * max(16, min(4000, table - 32 - 8))
    authority = literal_indexed_name(1, b"127.0.0.1")

    # Stream 1: an ordinary request that also stores ("x-bomb", value) at dynamic index 62.
    seed = METHOD_GET + SCHEME_HTTP + PATH_ROOT + authority + literal_incremental(b"x-bomb", value)
    await peer.send(rp.headers_frame(1, seed, end_stream=True))
    ok = await peer.wait_for(lambda p: 1 in p.streams and p.streams[1].ended, 3.0)
    checks.expect(
        ok and peer.streams[1].status == "200",
        f"seed request (one 4 KiB header) was not answered 200: {peer.describe()}",
    )

    # Stream 3: :path /bomb, then as many one-byte references to index 62 as fit in a frame.
    head = METHOD_GET + SCHEME_HTTP + literal_indexed_name(4, b"/bomb") + authority
    refs = b"\xbe" * (peer.max_frame_size - len(head))
    decoded = len(refs) * (len(value) + len(b"x-bomb") + 32)

    async with HealthProbe(srv.port) as probe:
        with MemoryMeter("HPACK bomb", f"{len(refs)} B decoding to {decoded >> 20} MiB") as mem:
            await peer.try_send(rp.headers_frame(3, head + refs, end_stream=True))
            await peer.wait_for(
                lambda p: (
                    p.goaway is not None
                    or p.eof
                    or (
                        3 in p.streams
                        and (p.streams[3].ended or p.streams[3].reset_code is not None)
                    )
                ),
                5.0,
            )

    resp = peer.streams.get(3)
    refused_stream = resp is not None and (
        resp.reset_code is not None or (resp.status or "").startswith("4")
    )
    if peer.goaway is not None:
        checks.expect(
            peer.goaway.error_code in (E.ENHANCE_YOUR_CALM, E.COMPRESSION_ERROR),
            f"GOAWAY {rp.code_name(peer.goaway.error_code)}, expected ENHANCE_YOUR_CALM or "
            f"COMPRESSION_ERROR: {peer.describe()}",
        )
    else:
        checks.expect(refused_stream, f"bombed request not refused: {peer.describe()}")
    checks.expect(
        "/bomb" not in srv.app.paths,
        f"handler ran with the bombed header list: {srv.app.describe()}",
    )
    await attack_checks(checks, srv, probe, mem, BOUND)
    await peer.close()
    print(f"HPACK bomb: {peer.describe()}")
    checks.done()
