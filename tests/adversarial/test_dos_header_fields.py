"""Header blocks that are cheap to send and dear to decode: many tiny fields, size updates.

A 64 KiB header list can hold ~1,770 fields under h2's 32-bytes-per-field rule, and HPACK
dynamic table size updates decode to nothing at all, so neither the list size nor the block
size bounds the decoder's work. ``max_header_fields`` (default 256) counts both; past it the
connection ends with GOAWAY(ENHANCE_YOUR_CALM), since the HPACK context cannot survive a block
abandoned halfway.
"""

from __future__ import annotations

import pytest
import rawpeer as rp
from dosharness import assert_still_serving
from h2.errors import ErrorCodes as E
from rawpeer import RawPeer

pytestmark = pytest.mark.timeout(45)


@pytest.mark.parametrize("kind", ["tiny fields", "size updates"])
async def test_a_block_past_max_header_fields_ends_the_connection(serve, kind):
    srv = await serve()
    peer = await RawPeer.connect(srv.port)
    await peer.handshake()
    head = peer.encoder.encode(rp.request_headers("/"), huffman=False)
    if kind == "tiny fields":
        # 1,500 one-byte fields: an indexed reference to ":method GET", within 64 KiB.
        block = head + b"\x82" * 1500
    else:
        block = b"\x20" * 10_000 + head  # size updates to 0, then the request
    await peer.send(rp.headers_frame(1, block, end_stream=True))
    info = await peer.expect_goaway(E.ENHANCE_YOUR_CALM, E.COMPRESSION_ERROR, timeout=3.0)
    assert info.error_code == E.ENHANCE_YOUR_CALM, peer.describe()
    assert await peer.closed(3.0)
    assert srv.app.started == 0
    await assert_still_serving(srv.port)
    await peer.close()


async def test_many_fields_within_the_cap_are_served(serve):
    srv = await serve()
    peer = await RawPeer.connect(srv.port)
    await peer.handshake()
    extra = [(f"x-field-{i}", "v") for i in range(200)]
    sid = peer.new_stream_id()
    peer.streams[sid] = rp.Response()
    await peer.send(peer.request(sid, "/", extra=extra))
    assert await peer.wait_for(lambda p: p.streams[sid].ended or p.eof, 3.0), peer.describe()
    assert peer.streams[sid].status == "200"
    assert peer.goaway is None
    await peer.close()


async def test_hundreds_of_cookie_crumbs_are_served(serve):
    """Browsers send each cookie as its own field (RFC 9113 8.2.3): crumbs count a quarter."""
    srv = await serve()
    peer = await RawPeer.connect(srv.port)
    await peer.handshake()
    extra = [(f"x-field-{i}", "v") for i in range(12)]
    extra += [("cookie", f"c{i}=v{i}") for i in range(400)]
    sid = peer.new_stream_id()
    peer.streams[sid] = rp.Response()
    await peer.send(peer.request(sid, "/", extra=extra))
    assert await peer.wait_for(lambda p: p.streams[sid].ended or p.eof, 3.0), peer.describe()
    assert peer.streams[sid].status == "200" and peer.goaway is None
    await peer.close()
