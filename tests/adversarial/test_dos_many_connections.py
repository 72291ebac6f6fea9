"""Many connections busy at once: one loop iteration must not belong to them (aggregate abuse).

Each reader turn is bounded, but an event-loop iteration runs one turn of *every* connection
with input. With turns of hundreds of frames, twenty connections that each send 200 requests
in one write made a quiet client wait for all 4,000 before its one request was even parsed.
Turns are now ~0.3 ms of work (64 frame units, a HEADERS frame counts 32), so the quiet
client's request is served among the first. Counted in handler start order, not in time.

A request reset later in the same read (Rapid Reset) must still start no handler, even when
its HEADERS and its RST_STREAM fall into different turns.
"""

from __future__ import annotations

import asyncio

import pytest
import rawpeer as rp
from rawpeer import RawPeer

import aioh2s
from helpers import serving

pytestmark = pytest.mark.timeout(60)

ATTACKERS = 20
REQUESTS = 200


async def test_a_quiet_client_is_served_among_the_first():
    started: list[str] = []
    done = asyncio.Event()
    total = ATTACKERS * REQUESTS + 1

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        started.append(reader.headers[":path"])
        writer.send_headers({":status": "200"})
        writer.write_eof()
        if len(started) == total:
            done.set()

    async with serving(handler, max_concurrent_streams=REQUESTS) as (_, port):
        quiet = await RawPeer.connect(port)
        await quiet.handshake()
        attackers = [await RawPeer.connect(port, track_streams=False) for _ in range(ATTACKERS)]
        for p in attackers:
            await p.handshake()
        # Every attacker's requests, one write each, then the quiet request: all written
        # before the server's loop runs again, so one iteration finds every socket readable.
        sid = quiet.new_stream_id()
        quiet.streams[sid] = rp.Response()
        for p in attackers:
            blob = b"".join(p.request(p.new_stream_id(), "/attack") for _ in range(REQUESTS))
            assert p.sock.send(blob) == len(blob)
        blob = quiet.request(sid, "/quiet")
        assert quiet.sock.send(blob) == len(blob)
        assert await asyncio.wait_for(done.wait(), 30), len(started)
        assert await quiet.wait_for(lambda q: q.streams[sid].ended, 10), quiet.describe()
        for p in [quiet, *attackers]:
            await p.close()
    # With 512-frame turns one iteration parsed ~57 requests of every attacker first (over
    # 1,000); with two a turn, about 40.
    position = started.index("/quiet")
    assert position < 400, f"{position} attack requests started before the quiet one"


async def test_rapid_reset_pairs_start_no_handler_across_turns():
    """HEADERS + RST_STREAM pairs in one write: turns split pairs, yet no handler starts."""
    started = 0

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        nonlocal started
        started += 1
        writer.send_headers({":status": "200"})
        writer.write_eof()

    async with serving(handler) as (_, port):
        peer = await RawPeer.connect(port, track_streams=False)
        await peer.handshake()
        pairs = []
        for _ in range(300):  # within the reset budget (1000)
            sid = peer.new_stream_id()
            pairs.append(peer.request(sid, "/") + rp.rst(sid))
        await peer.send(b"".join(pairs))
        assert await peer.ping(10), peer.describe()  # answered after every pair was parsed
        assert started == 0, f"{started} handlers started for streams reset in the same read"
        assert not peer.eof and peer.goaway is None, peer.describe()
        await peer.close()
