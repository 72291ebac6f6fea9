"""Ping flood (CVE-2019-9512), Settings flood (9515), Reset flood (9514), while not reading.

Each of these frames forces a reply (PING ACK, SETTINGS ACK, RST_STREAM).  The attacker never
reads, with a small receive buffer, so the replies back up into the server.  A server that
keeps reading and queueing replies grows without bound; the reference implementations bound
the queue of control replies (nghttp2: 1000 outbound ACKs; Go: maxQueuedControlFrames 10000)
and then send GOAWAY(ENHANCE_YOUR_CALM) and close.

What is asserted: the server closes the connection soon after the flood (a server that only
stops reading leaves a dead connection open forever), any GOAWAY it managed to queue says
ENHANCE_YOUR_CALM, its memory stays bounded, handlers of flooded streams are cancelled, and
a healthy client is served throughout.  (A GOAWAY cannot always reach a peer that does not
read before the server gives up on it, so seeing one is not required.)
"""

from __future__ import annotations

import asyncio

import pytest
import rawpeer as rp
from dosharness import (
    Checks,
    HealthProbe,
    KiB,
    MemoryMeter,
    MiB,
    assert_still_serving,
    attack_checks,
    pin_send_buffer,
)
from h2.errors import ErrorCodes as E
from rawpeer import RawPeer

pytestmark = pytest.mark.timeout(45)

PER_BLOB = 1000
RCVBUF = 4096
# Frames per flood, sized so that an unbounded server queues ~1 MB of replies (PING ACK 17
# bytes, SETTINGS ACK 9) -- far past nghttp2's 1000 queued ACKs and Go's 10,000.
FRAMES = {"ping": 60_000, "settings": 100_000}
STREAMS = 20_000  # reset flood: each stream earns one RST_STREAM
# Peak traced-memory growth allowed: a defended server holds at most ~1000 replies plus its
# read buffers (asyncio reads 256 KiB at a time); the reset flood also holds per-stream state
# for the ~1000 streams before the budget trips.
BOUNDS = {"ping": 512 * KiB, "settings": 512 * KiB, "reset": 4 * MiB}


def _pings(peer: RawPeer, i: int) -> bytes:
    return rp.ping(b"floodfl\x00") * PER_BLOB


def _settings(peer: RawPeer, i: int) -> bytes:
    return rp.settings() * PER_BLOB


class _ResetProvoker:
    """HEADERS(END_STREAM) + DATA on the half-closed stream: each earns an RST_STREAM."""

    def __init__(self, peer: RawPeer) -> None:
        hdrs = rp.request_headers("/hang")
        self.first = peer.encoder.encode(hdrs, huffman=False)
        self.block = peer.encoder.encode(hdrs, huffman=False)

    def __call__(self, peer: RawPeer, i: int) -> bytes:
        out = []
        for k in range(PER_BLOB // 10):
            sid = 1 + 2 * (i * (PER_BLOB // 10) + k)
            blk = self.first if sid == 1 else self.block
            out.append(rp.headers_frame(sid, blk, end_stream=True) + rp.data(sid, b"x"))
        return b"".join(out)


FLOODS = ["ping", "settings", "reset"]


@pytest.mark.parametrize("kind", FLOODS)
@pytest.mark.expect_log("aioh2s", "WARNING", "closing connection from")
async def test_control_flood_while_not_reading(serve, kind):
    srv = await serve()
    # A few KiB of kernel buffer: past ~1000 replies they must queue in the server itself,
    # however slowly a loaded machine lets the flood through.
    pin_send_buffer(srv, 4 * KiB)
    checks = Checks(f"{kind} flood while not reading")
    peer = await RawPeer.connect(srv.port, rcvbuf=RCVBUF, autoread=False, track_streams=False)
    await peer.handshake()
    if kind == "reset":
        make = _ResetProvoker(peer)
        repeat = STREAMS // (PER_BLOB // 10)
        what = f"{STREAMS} streams"
    else:
        make = _pings if kind == "ping" else _settings
        repeat = FRAMES[kind] // PER_BLOB
        what = f"{FRAMES[kind]} frames"

    async with HealthProbe(srv.port) as probe:
        with MemoryMeter(f"{kind} flood (not reading)", what) as mem:
            sent = await peer.flood(
                lambda i: make(peer, i), repeat=repeat, seconds=4.0, send_timeout=1.0
            )
            # Still not reading: a defended server gives up on us meanwhile (nghttp2 and
            # Go close at once; we send GOAWAY, flush, and hard-close after ~1 s).
            await asyncio.sleep(1.0)
        # Now read whatever the server queued, up to its close.
        closed_early = await peer.closed(3.0)

    checks.expect(
        closed_early,
        f"server did not close the flooding connection within 4 s after the flood: "
        f"{peer.describe()}",
    )
    if peer.goaway is not None:
        checks.expect(
            peer.goaway.error_code == E.ENHANCE_YOUR_CALM,
            f"GOAWAY {rp.code_name(peer.goaway.error_code)}, expected ENHANCE_YOUR_CALM",
        )
    await attack_checks(checks, srv, probe, mem, BOUNDS[kind])
    await peer.close()
    print(
        f"{kind} flood: sent {sent} blobs of {PER_BLOB}; replies: pings={peer.ping_ack_count} "
        f"settings-acks={peer.settings_acks} rst={peer.rst_count}; {peer.describe()}"
    )
    checks.done()


async def test_unknown_settings_are_ignored_and_cost_nothing(serve):
    """RFC 9113 §6.5.2: unknown settings are ignored. h2 kept each (a deque per id), and a
    process-wide cache of settings dicts kept them after the peer left: 20 frames of 2,000
    unknown ids each held ~48 MB."""
    srv = await serve()
    peer = await RawPeer.connect(srv.port)
    await peer.handshake()
    with MemoryMeter("unknown settings", "20 x 2,000 unknown ids") as mem:
        for k in range(20):
            ids = {0x100 + k * 2000 + i: i for i in range(2000)}
            await peer.send(rp.settings(ids))
        assert await peer.ping(5), peer.describe()  # all of them processed
    assert not peer.eof and peer.goaway is None, peer.describe()
    await assert_still_serving(srv.port)
    await peer.close()
    mem.check(1 * MiB)  # one frame's parse is ~150 KB; the old code held ~48 MB
