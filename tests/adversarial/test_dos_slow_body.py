"""Request bodies that trickle: ``min_body_rate`` / ``body_rate_grace`` (aggregate-abuse work).

A body sent a byte a second on each of a hundred streams holds a hundred handlers for as long
as the peer likes, at almost no cost to it. While a handler waits for body bytes the
connection's clock runs; bodies slower than ``min_body_rate`` (over all its streams) for
about ``body_rate_grace`` seconds end the connection with GOAWAY(ENHANCE_YOUR_CALM).

What must *not* be cut: a fast upload, a handler that is slow to read (our time, not the
peer's), a peer held back by our own unread buffers (it has no window to send), a client
that waits for ``100 Continue`` (sent on the first read), a loop stalled by a handler, and
streams whose bodies pause by design, which the application exempts with
``reader.allow_slow_body()`` (a request header would let any client out: gRPC's content type
exempts nothing by itself).
"""

from __future__ import annotations

import asyncio
import time

import pytest
import rawpeer as rp
from dosharness import Checks, HealthProbe, assert_still_serving
from h2.errors import ErrorCodes as E
from rawpeer import RawPeer

import aioh2s
from helpers import Wire, serving

pytestmark = pytest.mark.timeout(45)

GRACE = 0.5
RATE = 240.0
SLACK = 2.0  # scheduling slack on a loaded 2-core CI machine
POST = [(":method", "POST"), (":scheme", "http"), (":authority", "127.0.0.1"), (":path", "/echo")]


async def echo(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
    if reader.headers.get("x-slow-ok"):
        reader.allow_slow_body()
    body = await reader.read()
    writer.send_headers({":status": "200"})
    writer.write(body)
    writer.write_eof()


@pytest.mark.expect_log("aioh2s", "WARNING", "min_body_rate")
async def test_trickling_bodies_on_many_streams_are_cut(serve):
    """20 streams at a byte per 0.25 s each (80 B/s in all): cut, the healthy client is not."""
    srv = await serve(min_body_rate=RATE, body_rate_grace=GRACE)
    checks = Checks("trickling bodies")
    peer = await RawPeer.connect(srv.port)
    await peer.handshake()
    sids = [peer.new_stream_id() for _ in range(20)]
    block = b"".join(
        rp.headers_frame(s, peer.encoder.encode(POST, huffman=False)) for s in sids
    )
    await peer.send(block)
    t0 = time.monotonic()
    ticks = 0
    async with HealthProbe(srv.port) as probe:
        while not peer.eof and peer.goaway is None and time.monotonic() - t0 < GRACE + 10:
            if not await peer.try_send(b"".join(rp.data(s, b"x") for s in sids), timeout=1.0):
                break
            ticks += 1
            await asyncio.sleep(0.25)
        elapsed = time.monotonic() - t0
        await peer.closed(SLACK)
    # The first GRACE seconds of waiting bring 40 bytes of the 120 due: cut then.
    checks.expect(
        peer.goaway is not None and peer.goaway.error_code == E.ENHANCE_YOUR_CALM,
        f"expected GOAWAY(ENHANCE_YOUR_CALM) after {elapsed:.1f} s: {peer.describe()}",
    )
    checks.expect(elapsed < GRACE + SLACK, f"cut only after {elapsed:.1f} s ({ticks} ticks)")
    checks.expect(ticks >= 2, f"cut after {ticks} ticks: before the grace was used up?")
    checks.call("healthy client", probe.check)
    await checks.run("server after the attack", assert_still_serving(srv.port))
    await peer.close()
    checks.done()


@pytest.mark.parametrize(("first", "grace"), [(10, GRACE), (100_000, GRACE), (10, 2.5)])
@pytest.mark.expect_log("aioh2s", "WARNING", "min_body_rate")
async def test_a_body_that_stalls_ends_the_connection(wire: Wire, first: int, grace: float):
    """A body that stops after its first bytes: GOAWAY(ENHANCE_YOUR_CALM).

    A fast start buys no credit: 100 KB at once, then nothing, is cut one window later. A
    grace over a second is counted a second at a time (a stalled loop counts no more).
    """
    async with wire.serving(echo, min_body_rate=RATE, body_rate_grace=grace) as (_, port):
        client = await wire.connect(port)
        try:
            async with client.request({":method": "POST", ":path": "/"}) as stream:
                stream.writer.write(b"x" * first)
                await stream.writer.drain()
                t0 = time.monotonic()
                with pytest.raises(aioh2s.ConnectionClosed) as info:
                    await asyncio.wait_for(stream.response_headers(), 2 * grace + 3 * SLACK)
                elapsed = time.monotonic() - t0
        finally:
            await client.close()
    assert info.value.error_code == E.ENHANCE_YOUR_CALM, info.value
    windows = 1 if first < RATE * grace else 2
    assert grace * 0.5 < elapsed < windows * grace + SLACK, elapsed


async def test_fast_uploads_and_slow_handlers_are_not_cut(wire: Wire) -> None:
    """A handler that reads late is our time, not the peer's; a steady upload is fast enough."""

    async def late_reader(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        await asyncio.sleep(4 * GRACE)  # the whole body has arrived meanwhile
        await echo(reader, writer)

    async with wire.serving(late_reader, min_body_rate=RATE, body_rate_grace=GRACE) as (_, p):
        client = await wire.connect(p)
        try:
            async with client.request({":method": "POST", ":path": "/"}) as stream:
                stream.writer.write(b"a" * 100_000)
                stream.writer.write_eof()
                assert len(await stream.reader.read()) == 100_000
            # 2 KB every 0.1 s (20 KB/s) for 5x the grace: far above 240 B/s.
            async with client.request({":method": "POST", ":path": "/"}) as stream:
                for _ in range(int(5 * GRACE / 0.1)):
                    stream.writer.write(b"b" * 2000)
                    await stream.writer.drain()
                    await asyncio.sleep(0.1)
                stream.writer.write_eof()
                body = await asyncio.wait_for(stream.reader.read(), 10)
                assert body == b"b" * (2000 * int(5 * GRACE / 0.1))
            assert not client.is_closing()
        finally:
            await client.close()


async def test_a_peer_without_window_is_not_cut(wire: Wire) -> None:
    """Our unread buffers hold the connection window: a waiting handler is not the peer's fault."""
    release = asyncio.Event()

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        if reader.headers[":path"] == "/hold":
            await release.wait()  # reads nothing until released: its bytes fill the window
        await echo(reader, writer)

    window = 65_535
    async with wire.serving(handler, min_body_rate=RATE, body_rate_grace=GRACE,
                            stream_window=window, connection_window=window) as (_, port):
        client = await wire.connect(port)
        try:
            async with client.request({":method": "POST", ":path": "/hold"}) as held:
                held.writer.write(b"h" * window)
                await asyncio.wait_for(held.writer.drain(), 5)
                async with client.request({":method": "POST", ":path": "/wait"}) as waiting:
                    waiting.writer.write(b"w" * 1000)  # cannot leave: no connection window
                    waiting.writer.write_eof()
                    await asyncio.sleep(6 * GRACE)
                    assert not client.is_closing()
                    release.set()
                    held.writer.write_eof()
                    assert await asyncio.wait_for(held.reader.read(), 10) == b"h" * window
                    assert await asyncio.wait_for(waiting.reader.read(), 10) == b"w" * 1000
        finally:
            await client.close()


async def test_streams_the_application_exempts_may_pause(wire: Wire) -> None:
    """A handler that calls ``allow_slow_body()`` may wait for its body as long as it likes."""
    async with wire.serving(echo, min_body_rate=RATE, body_rate_grace=GRACE) as (_, port):
        client = await wire.connect(port)
        try:
            headers = {":method": "POST", ":path": "/", "x-slow-ok": "1"}
            async with client.request(headers) as stream:
                stream.writer.write(b"first ")
                await stream.writer.drain()
                await asyncio.sleep(6 * GRACE)
                stream.writer.write(b"second")
                stream.writer.write_eof()
                assert await asyncio.wait_for(stream.reader.read(), 10) == b"first second"
            assert not client.is_closing()
        finally:
            await client.close()


async def test_a_tunnel_the_application_exempts_may_pause():
    """A CONNECT stream's bytes come when the tunnelled protocol has something to say."""
    async with serving(echo, min_body_rate=RATE, body_rate_grace=GRACE) as (_, port):
        peer = await RawPeer.connect(port)
        await peer.handshake()
        block = peer.encoder.encode(
            [(":method", "CONNECT"), (":authority", "example.com:443"), ("x-slow-ok", "1")],
            huffman=False)
        peer.streams[1] = rp.Response()
        await peer.send(rp.headers_frame(1, block), rp.data(1, b"hello "))
        await asyncio.sleep(6 * GRACE)
        assert not peer.eof and peer.goaway is None, peer.describe()
        await peer.send(rp.data(1, b"tunnel", end_stream=True))
        assert await peer.wait_for(lambda p: p.streams[1].ended, 10), peer.describe()
        assert bytes(peer.streams[1].body) == b"hello tunnel"
        await peer.close()


@pytest.mark.expect_log("aioh2s", "WARNING", "min_body_rate")
async def test_a_grpc_content_type_exempts_nothing_by_itself():
    """Exemptions are the application's: a header would let any client out of the limit."""
    async with serving(echo, min_body_rate=RATE, body_rate_grace=GRACE) as (_, port):
        peer = await RawPeer.connect(port)
        await peer.handshake()
        fields = [*POST, ("content-type", "application/grpc")]
        await peer.send(rp.headers_frame(1, peer.encoder.encode(fields, huffman=False)))
        assert await peer.closed(GRACE + SLACK), peer.describe()
        assert peer.goaway is not None and peer.goaway.error_code == E.ENHANCE_YOUR_CALM
        await peer.close()


async def test_a_client_waiting_for_100_continue_gets_it_and_is_not_cut():
    """``expect: 100-continue``: the first read sends 100, then the body comes (RFC 9110)."""
    async with serving(echo, min_body_rate=RATE, body_rate_grace=GRACE) as (_, port):
        peer = await RawPeer.connect(port)
        await peer.handshake()
        fields = [*POST, ("expect", "100-continue")]
        peer.streams[1] = rp.Response()
        await peer.send(rp.headers_frame(1, peer.encoder.encode(fields, huffman=False)))
        # A HEADERS frame before any body byte: the 100 (rawpeer keeps only final headers).
        assert await peer.wait_for(lambda p: p.counts[0x1] == 1, 5), peer.describe()
        assert peer.streams[1].headers is None and not peer.streams[1].ended
        await asyncio.sleep(GRACE / 2)  # then the body, promptly
        await peer.send(rp.data(1, b"the body", end_stream=True))
        assert await peer.wait_for(lambda p: p.streams[1].ended, 10), peer.describe()
        assert peer.streams[1].status == "200" and bytes(peer.streams[1].body) == b"the body"
        assert peer.goaway is None
        await peer.close()


async def test_a_loop_stall_is_not_charged_to_the_peer(wire: Wire) -> None:
    """A handler that blocks the loop longer than the grace: the waiting peer is not cut."""

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        if reader.headers[":path"] == "/block":
            time.sleep(3 * GRACE)  # blocks the whole loop, on purpose
            writer.send_headers({":status": "204"}, end_stream=True)
            return
        await echo(reader, writer)

    async with wire.serving(handler, min_body_rate=RATE, body_rate_grace=GRACE) as (_, port):
        client = await wire.connect(port)
        try:
            async with client.request({":method": "POST", ":path": "/up"}) as up:
                up.writer.write(b"u" * 200)  # more than RATE * GRACE: the first window is met
                await up.writer.drain()
                await asyncio.sleep(GRACE / 2)  # its handler is waiting now
                async with client.request({":path": "/block"}, end_stream=True) as block:
                    up.writer.write(b"u" * 50_000)  # arrives while the loop is blocked
                    up.writer.write_eof()
                    assert (await block.response_headers())[":status"] == "204"
                assert len(await asyncio.wait_for(up.reader.read(), 10)) == 50_200
            assert not client.is_closing()
        finally:
            await client.close()


@pytest.mark.parametrize("options", [{"min_body_rate": 0}, {"body_rate_grace": 0}])
def test_body_rate_options_are_checked(options):
    with pytest.raises(ValueError):
        aioh2s.Config(**options)
