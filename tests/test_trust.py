"""Regression tests for the trust-core issue: corners between the listed cases, on real sockets.

Each test names the item it pins down. Peers are raw HTTP/2 (tests/adversarial/rawpeer.py,
tests/rawh2.py), not aioh2s, so our own bugs cannot cancel out on both sides.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest
from h2.errors import ErrorCodes
from tests.helpers import client_for, serving
from tests.rawh2 import RawH2Server

import aioh2s
from aioh2s import _h2ext

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "adversarial"))
import rawpeer  # noqa: E402


class Heartbeat:
    """A task ticking every 10 ms; ``max_gap`` shows whether the loop was ever starved."""

    def __init__(self) -> None:
        self.ticks: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self.ticks.append(loop.time())
            await asyncio.sleep(0.01)

    async def __aenter__(self) -> Heartbeat:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self.ticks.append(asyncio.get_running_loop().time())

    @property
    def max_gap(self) -> float:
        return max(b - a for a, b in zip(self.ticks, self.ticks[1:], strict=False))


# -- item 1: RST_STREAM(NO_ERROR) on a server, and drain() that can make no progress ----------


async def test_server_sees_rst_no_error_as_a_reset_and_the_loop_keeps_running() -> None:
    outcome: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
    writes = 0

    async def streamer(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        nonlocal writes
        writer.send_headers({":status": "200"})
        try:
            while True:  # an event stream: the client decides when it ends
                writer.write(b"event\n")
                writes += 1
                await writer.drain()
        except BaseException as e:
            outcome.set_result(e)
            raise

    async with serving(streamer) as (_, port), Heartbeat() as hb:
        async with await rawpeer.RawPeer.connect(port) as peer:
            await peer.handshake(conn_window=2**31 - 1,
                                 values={rawpeer.INITIAL_WINDOW_SIZE: 2**31 - 1})
            await peer.send(peer.request(1, end_stream=True))  # a complete request
            assert await peer.wait_for(lambda p: p.data_received > 1000, 5)
            await peer.send(rawpeer.rst(1, ErrorCodes.NO_ERROR))
            exc = await asyncio.wait_for(outcome, 3)
    assert isinstance(exc, aioh2s.StreamReset), exc
    assert exc.error_code == ErrorCodes.NO_ERROR and exc.remote
    assert hb.max_gap < 0.5, f"the event loop was starved for {hb.max_gap:.2f} s"


async def test_client_keeps_a_complete_response_after_rst_no_error_and_drain_raises() -> None:
    """RFC 9113 §8.1 on a client: the response stays; the unwanted upload stops with an error."""

    def on_event(peer: Any, ev: Any) -> None:
        if isinstance(ev, h2.events.RequestReceived):
            peer.respond(ev.stream_id, b"early answer")
            peer.conn.reset_stream(ev.stream_id, ErrorCodes.NO_ERROR)
            peer.flush()

    async with RawH2Server(on_event) as srv, Heartbeat() as hb:
        client = await aioh2s.connect("127.0.0.1", srv.port)
        try:
            async with client.request({":method": "POST"}) as stream:
                headers = await asyncio.wait_for(stream.response_headers(), 3)
                with pytest.raises(aioh2s.StreamReset) as info:
                    for _ in range(10_000):  # bounded: a drain() that never raises fails here
                        stream.writer.write(b"x" * 1000)
                        await asyncio.wait_for(stream.writer.drain(), 3)
                assert info.value.error_code == ErrorCodes.NO_ERROR
                assert headers[":status"] == "200"
                assert await asyncio.wait_for(stream.reader.read(), 3) == b"early answer"
        finally:
            await asyncio.wait_for(client.close(), 5)
    assert hb.max_gap < 0.5


# -- item 3: cancel safety of reads -----------------------------------------------------------


async def test_readexactly_and_read_keep_their_bytes_when_timed_out() -> None:
    second, third = asyncio.Event(), asyncio.Event()

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        writer.send_headers({":status": "200"})
        writer.write(b"01234")
        await writer.drain()
        await second.wait()
        writer.write(b"56789")
        await writer.drain()
        await third.wait()
        writer.write(b"abc")
        writer.write_eof()

    async with client_for(handler) as (client, _):
        async with client.request(end_stream=True) as stream:
            await stream.response_headers()
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(stream.reader.readexactly(10), 0.2)
            second.set()
            assert await asyncio.wait_for(stream.reader.readexactly(7), 3) == b"0123456"
            # read() to the end, timed out half way, keeps what it had buffered too.
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(stream.reader.read(), 0.2)
            third.set()
            assert await asyncio.wait_for(stream.reader.read(), 3) == b"789abc"


async def test_readexactly_larger_than_the_stream_window_completes() -> None:
    size = 300_000

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        writer.send_headers({":status": "200"})
        writer.write(bytes(range(256)) * (size // 256 + 1))
        writer.write_eof()

    async with client_for(handler, stream_window=65535) as (client, _):
        async with client.request(end_stream=True) as stream:
            await stream.response_headers()
            data = await asyncio.wait_for(stream.reader.readexactly(size), 5)
            assert data == (bytes(range(256)) * (size // 256 + 1))[:size]


async def test_cancelled_readexactly_then_reset_does_not_hang() -> None:
    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        writer.send_headers({":status": "200"})
        writer.write(b"abc")
        await writer.drain()
        await asyncio.sleep(0.3)
        writer.reset(ErrorCodes.INTERNAL_ERROR)

    async with client_for(handler) as (client, _):
        async with client.request(end_stream=True) as stream:
            await stream.response_headers()
            task = asyncio.ensure_future(stream.reader.readexactly(10))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            with pytest.raises(aioh2s.StreamReset):
                await asyncio.wait_for(stream.reader.readexactly(10), 3)


# -- item 4: misuse raises before the state changes ------------------------------------------


@pytest.mark.parametrize("bad", [{"connection": "close"}, {":status": "200"}, {"x y": "1"}])
async def test_invalid_trailers_leave_the_stream_usable(bad: dict[str, str]) -> None:
    seen: list[str] = []

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        writer.send_headers({":status": "200"})
        writer.write(b"body")
        with pytest.raises(aioh2s.LocalProtocolError):
            writer.send_trailers(bad)
        seen.append("raised")
        assert not writer.is_closing()
        writer.send_trailers({"x-ok": "1"})
        await asyncio.wait_for(writer.wait_closed(), 3)
        seen.append("ended")

    async with client_for(handler) as (client, _):
        async with client.request(end_stream=True) as stream:
            await asyncio.wait_for(stream.response_headers(), 3)
            assert await asyncio.wait_for(stream.reader.read(), 3) == b"body"
            assert stream.reader.trailers == [("x-ok", "1")]
    assert seen == ["raised", "ended"]


async def test_out_of_order_calls_raise_and_change_nothing() -> None:
    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        with pytest.raises(RuntimeError, match="send_headers"):
            writer.write(b"too early")
        with pytest.raises(RuntimeError, match="send_headers"):
            writer.write_eof()
        with pytest.raises(TypeError):
            writer.write("text")  # type: ignore[arg-type]
        writer.send_headers({":status": "103", "link": "</a>; rel=preload"})
        writer.send_headers({":status": "200"})
        with pytest.raises(RuntimeError, match="send_trailers"):
            writer.send_headers({":status": "200"})
        writer.write(b"ok")
        writer.write_eof()
        with pytest.raises(RuntimeError, match="already ended"):
            writer.write(b"late")
        with pytest.raises(RuntimeError, match="already ended"):
            writer.send_trailers({"x": "1"})
        with pytest.raises(ValueError):
            writer.reset("nonsense")  # type: ignore[arg-type]

    async with client_for(handler) as (client, _):
        async with client.request(end_stream=True) as stream:
            headers = await asyncio.wait_for(stream.response_headers(), 3)
            assert headers[":status"] == "200"
            assert [h[":status"] for h in stream.informational] == ["103"]
            assert await asyncio.wait_for(stream.reader.read(), 3) == b"ok"


# -- item 6: the right error after a graceful GOAWAY, and messages that say what happened ----


async def test_request_after_graceful_goaway_is_connection_terminated_and_retry_safe() -> None:
    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        writer.send_headers({":status": "204"}, end_stream=True)

    async with client_for(handler, server_options={"idle_timeout": 0.3}) as (client, _):
        async with client.request(end_stream=True) as stream:
            await stream.response_headers()
        await asyncio.wait_for(client.wait_closed(), 5)  # the server's idle timeout ended it
        assert client.is_closing()
        with pytest.raises(aioh2s.ConnectionTerminated) as info:
            async with client.request(end_stream=True):
                pass
    err = info.value
    assert err.retry_safe and err.error_code == ErrorCodes.NO_ERROR
    assert "2147483648" not in str(err) and "safe to retry" in str(err)


async def test_a_protocol_error_message_says_what_the_peer_did() -> None:
    def on_event(peer: Any, ev: Any) -> None:
        if isinstance(ev, h2.events.RequestReceived) and ev.stream_id == 1:
            # WINDOW_UPDATE on a stream nobody opened: a connection error, and h2's own
            # message for it is only the stream id.
            peer.transport.write(rawpeer.window_update(7, 100))

    async with RawH2Server(on_event) as srv:
        client = await aioh2s.connect("127.0.0.1", srv.port)
        try:
            with pytest.raises(aioh2s.ConnectionClosed) as info:
                async with client.request(end_stream=True) as stream:
                    await asyncio.wait_for(stream.response_headers(), 3)
        finally:
            await asyncio.wait_for(client.close(), 5)
    text = str(info.value)
    assert "stream 7" in text and "never opened" in text, text
    assert not text.rstrip().split(":")[-1].strip().isdigit(), text


def test_describe_never_returns_a_bare_stream_id() -> None:
    import h2.exceptions

    for e in (h2.exceptions.StreamClosedError(7), h2.exceptions.StreamIDTooLowError(3, 5),
              h2.exceptions.NoSuchStreamError(7), h2.exceptions.ProtocolError("7")):
        text = _h2ext.describe(e)
        assert not text.isdigit() and ("7" in text or "3" in text), text


# -- item 7: shutdown --------------------------------------------------------------------------


async def test_a_second_close_with_a_shorter_grace_shortens_the_first() -> None:
    started = asyncio.Event()

    async def stuck(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        writer.send_headers({":status": "200"})
        started.set()
        await reader.read()  # the client never ends its body

    server = await aioh2s.start_server(stuck, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = await aioh2s.connect("127.0.0.1", port)
    try:
        async with client.request({":method": "POST"}) as stream:
            await asyncio.wait_for(started.wait(), 3)
            server.close(grace=30)
            await asyncio.sleep(0.1)
            server.close(grace=0)
            await asyncio.wait_for(server.wait_closed(), 3)
            with pytest.raises((aioh2s.StreamReset, aioh2s.ConnectionClosed)):
                await asyncio.wait_for(stream.reader.read(), 3)
    finally:
        await asyncio.wait_for(client.close(), 5)


async def test_closing_before_the_preface_writes_nothing() -> None:
    """A GOAWAY may not be the first frame (§3.4): a cleartext connection that said nothing yet
    gets a plain close."""
    server = await aioh2s.start_server(lambda r, w: None, "127.0.0.1", 0)  # type: ignore[arg-type]
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for _ in range(100):
            if server.connections:
                break
            await asyncio.sleep(0.01)
        assert server.connections == 1
        server.close()
        await asyncio.wait_for(server.wait_closed(), 3)
        assert await asyncio.wait_for(reader.read(), 3) == b""
    finally:
        writer.close()


async def test_graceful_close_follows_rfc9113_6_8_and_ends_without_a_reset() -> None:
    release = asyncio.Event()

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        await release.wait()
        writer.send_headers({":status": "200"})
        writer.write(reader.headers[":path"].encode())
        writer.write_eof()

    async with serving(handler) as (server, port):
        peer = await rawpeer.RawPeer.connect(port, auto_ack=False)
        try:
            await peer.handshake()
            await peer.send(peer.request(1, "/one"))
            await asyncio.sleep(0.05)
            server.close(grace=10)
            first = await peer.expect_goaway(ErrorCodes.NO_ERROR)
            assert first.last_stream_id == 2**31 - 1
            # Opened after the warning but before our PING ACK: still processed.
            await peer.send(peer.request(3, "/three"))
            assert await peer.wait_for(lambda p: p.counts[rawpeer.PING] > 0, 3)
            assert peer.goaways == 1
            await asyncio.sleep(0.05)
            for opaque in (b"aioh2s\x00\x01",):
                await peer.send(rawpeer.ping(opaque, ack=True))
            assert await peer.wait_for(lambda p: p.goaways == 2, 3)
            final = [f for f in peer.tail if f.type == rawpeer.GOAWAY][-1]
            assert int.from_bytes(final.payload[:4], "big") == 3
            release.set()
            assert await peer.wait_for(lambda p: 3 in p.streams and p.streams[3].ended, 3)
            assert peer.streams[1].body == b"/one" and peer.streams[3].body == b"/three"
            # The server shut its write side and lingers: a frame we send now is read, not
            # answered with a TCP reset that could destroy its GOAWAY on our side.
            await peer.send(rawpeer.ping(b"late\x00\x00\x00\x00"))
            assert await peer.closed(5)
            assert not peer.reset_by_peer
        finally:
            await peer.close()
        await asyncio.wait_for(server.wait_closed(), 5)


# -- item 8: writer.close(); await writer.wait_closed() in a handler ---------------------------


async def test_handler_close_and_wait_closed_return_while_the_client_still_sends() -> None:
    done = asyncio.Event()

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        writer.send_headers({":status": "200"})
        writer.write(b"not interested")
        writer.close()
        await asyncio.wait_for(writer.wait_closed(), 3)
        done.set()

    async with client_for(handler) as (client, _):
        async with client.request({":method": "POST"}) as stream:
            stream.writer.write(b"x" * 1000)
            await asyncio.wait_for(done.wait(), 3)
            assert await asyncio.wait_for(stream.reader.read(), 3) == b"not interested"
            # The server discards the rest of the body with RST_STREAM(NO_ERROR) (§8.1).
            with pytest.raises(aioh2s.StreamReset) as info:
                for _ in range(1000):
                    stream.writer.write(b"x" * 1000)
                    await asyncio.wait_for(stream.writer.drain(), 3)
            assert info.value.error_code == ErrorCodes.NO_ERROR




# -- found by review: corners between the items ------------------------------------------------


async def test_drain_after_write_eof_returns_while_another_stream_fills_the_transport() -> None:
    """F1: once our side ENDED, drain() must not wait for a transport other streams keep full."""
    results: list[str] = []

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        writer.send_headers({":status": "200"})
        if reader.headers[":path"] == "/big":
            for _ in range(64):
                writer.write(b"b" * 131072)
                await writer.drain()
            writer.write_eof()
            return
        await asyncio.sleep(0.1)
        writer.write(b"small")
        writer.write_eof()
        await writer.drain()  # plain await: nobody else may be needed to wake it
        results.append("drained")

    async with client_for(handler) as (client, _):
        async def get(path: str) -> int:
            async with client.request({":path": path}, end_stream=True) as stream:
                await stream.response_headers()
                n = 0
                async for chunk in stream.reader:
                    n += len(chunk)
                    await asyncio.sleep(0.001)  # a slowish reader keeps the transport busy
                return n

        sizes = await asyncio.wait_for(asyncio.gather(get("/big"), get("/small")), 20)
    assert sizes == [64 * 131072, 5] and results == ["drained"]


async def test_empty_trailers_end_the_stream_and_harm_no_other_stream() -> None:
    """F3: send_trailers({}) used to crash the flush and strand every queued stream."""

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        writer.send_headers({":status": "200"})
        writer.write(reader.headers[":path"].encode())
        if reader.headers[":path"] == "/empty":
            writer.send_trailers({})
        else:
            writer.write_eof()

    async with client_for(handler) as (client, _):
        async def get(path: str) -> bytes:
            async with client.request({":path": path}, end_stream=True) as stream:
                await stream.response_headers()
                return await stream.reader.read()

        bodies = await asyncio.wait_for(asyncio.gather(get("/a"), get("/empty"), get("/b")), 5)
    assert bodies == [b"/a", b"/empty", b"/b"]


async def test_partial_lines_on_many_streams_do_not_deadlock_the_connection_window() -> None:
    """F9: readline() waiting on a partial line must not hold the connection window."""
    got: list[bytes] = []

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        got.append(await reader.readline())
        writer.send_headers({":status": "204"}, end_stream=True)

    n = 12  # 12 x 30 KB partial lines > the 256 KiB connection window below
    async with client_for(
        handler, server_options={"connection_window": 262144, "stream_window": 65535}
    ) as (client, _):
        async def one(i: int) -> str:
            async with client.request({":method": "POST"}) as stream:
                stream.writer.write(b"x" * 30000)
                await asyncio.wait_for(stream.writer.drain(), 10)
                await asyncio.sleep(0.3)
                stream.writer.write(b"\n")
                stream.writer.write_eof()
                return (await stream.response_headers())[":status"]

        statuses = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(n))), 20)
    assert statuses == ["204"] * n and got == [b"x" * 30000 + b"\n"] * n


@pytest.mark.parametrize("status", ["abc", "99", "1000", "101", "600"])
async def test_bad_status_codes_are_refused_before_sending(status: str) -> None:
    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        with pytest.raises(aioh2s.LocalProtocolError):
            writer.send_headers({":status": status})
        writer.send_headers({":status": "200"}, end_stream=True)

    async with client_for(handler) as (client, _):
        async with client.request(end_stream=True) as stream:
            assert (await asyncio.wait_for(stream.response_headers(), 3))[":status"] == "200"
            assert stream.informational == []


async def test_a_malformed_request_is_a_stream_error_and_spares_the_others() -> None:
    """RFC 9113 §8.1.1: RST_STREAM(PROTOCOL_ERROR) for the bad one; the connection lives."""

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        writer.send_headers({":status": "200"})
        writer.write(b"fine")
        writer.write_eof()

    async with serving(handler) as (_, port):
        async with await rawpeer.RawPeer.connect(port) as peer:
            await peer.handshake()
            sid = peer.new_stream_id()
            await peer.send(peer.request(sid, extra=[("x-upper", "a")])
                            .replace(b"x-upper", b"X-Upper"))
            await peer.expect_rst(sid, ErrorCodes.PROTOCOL_ERROR)
            resp = await peer.get("/after")
            assert resp.status == "200" and bytes(resp.body) == b"fine"
            assert peer.goaway is None


async def test_client_close_waits_for_its_requests_before_its_goaway() -> None:
    """F5: stock h2 servers answer nothing after receiving GOAWAY, so the client sends its
    GOAWAY only when its own requests are done."""
    answered = asyncio.Event()

    def on_event(peer: Any, ev: Any) -> None:
        if isinstance(ev, h2.events.RequestReceived):
            asyncio.get_running_loop().call_later(0.3, respond, peer, ev.stream_id)

    def respond(peer: Any, sid: int) -> None:
        peer.respond(sid, b"late but fine")
        answered.set()

    async with RawH2Server(on_event) as srv:
        client = await aioh2s.connect("127.0.0.1", srv.port)
        async with client.request(end_stream=True) as stream:
            closing = asyncio.ensure_future(client.close(grace=5))
            await asyncio.sleep(0.05)
            with pytest.raises(aioh2s.ConnectionClosed) as info:
                async with client.request(end_stream=True):
                    pass
            assert info.value.retry_safe
            await asyncio.wait_for(stream.response_headers(), 3)
            assert await asyncio.wait_for(stream.reader.read(), 3) == b"late but fine"
        await asyncio.wait_for(closing, 3)


async def test_server_close_while_the_front_door_reads_is_quiet() -> None:
    """F2: close() between the preface's arrival and the front door resuming."""
    import socket
    import time

    server = await aioh2s.start_server(lambda r, w: None, "127.0.0.1", 0)  # type: ignore[arg-type]
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    s = socket.socket()
    try:
        s.connect(("127.0.0.1", port))
        preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        s.send(preface[:10])
        await asyncio.sleep(0.2)  # the front door waits for the rest
        s.send(preface[10:] + bytes.fromhex("000000040000000000"))
        time.sleep(0.05)  # the bytes are in the kernel before the loop runs again
        await asyncio.sleep(0)
        loop.call_soon(server.close, 0)
        await asyncio.wait_for(server.wait_closed(), 5)
    finally:
        s.close()
    # The conftest guard fails this test on the "aioh2s bug" / internal-error records.


async def test_a_cancelled_connect_never_returns_a_client() -> None:
    """F4: Python 3.11's wait_for() could swallow a cancel() racing the handshake's end."""
    import random

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        writer.send_headers({":status": "204"}, end_stream=True)

    rng = random.Random(7)
    async with serving(handler, idle_timeout=None) as (server, port):
        swallowed = 0
        for _ in range(150):
            task = asyncio.ensure_future(aioh2s.connect("127.0.0.1", port))
            for _ in range(rng.randint(0, 6)):
                await asyncio.sleep(0)
            if task.done():
                await asyncio.wait_for(task.result().close(0), 5)
                continue
            assert task.cancel()
            try:
                client = await asyncio.wait_for(task, 5)
            except asyncio.CancelledError:
                continue
            swallowed += 1
            await asyncio.wait_for(client.close(0), 5)
        for _ in range(100):
            if server.connections == 0:
                break
            await asyncio.sleep(0.01)
        assert swallowed == 0 and server.connections == 0


async def test_running_out_of_stream_ids_is_a_clear_retry_safe_error() -> None:
    """F6: h2's NoAvailableStreamIDError leaked out and a slot was lost every time."""

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        writer.send_headers({":status": "204"}, end_stream=True)

    async with client_for(handler, server_options={"max_concurrent_streams": 3}) as (client, _):
        conn = client._conn
        conn.h2.highest_outbound_stream_id = 2**31 - 5  # as after ~10^9 requests
        outcomes = []
        for _ in range(6):
            try:
                async with client.request(end_stream=True) as stream:
                    await asyncio.wait_for(stream.response_headers(), 3)
                outcomes.append("ok")
            except aioh2s.ConnectionClosed as e:
                assert e.retry_safe
                outcomes.append("refused")
        assert outcomes[:2] == ["ok", "ok"] and set(outcomes[2:]) == {"refused"}
        assert conn.open_outbound == 0 and client.is_closing()


async def test_server_close_after_peers_vanished_reaches_every_connection() -> None:
    """F13: write_eof() on a socket the peer had reset raised out of server.close()."""
    import socket

    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes.fromhex("000000040000000000")
    server = await aioh2s.start_server(lambda r, w: None, "127.0.0.1", 0)  # type: ignore[arg-type]
    port = server.sockets[0].getsockname()[1]
    socks = []
    try:
        for _ in range(6):
            s = socket.socket()
            s.connect(("127.0.0.1", port))
            s.sendall(preface)
            socks.append(s)
        await asyncio.sleep(0.3)
        for s in socks:
            s.setblocking(False)
            try:
                s.recv(65536)
            except BlockingIOError:
                pass
        for s in socks[:3]:
            s.close()  # the server has not seen these EOFs yet
        server.close(0)  # must not raise
        await asyncio.wait_for(server.wait_closed(), 5)
        assert server.connections == 0
    finally:
        for s in socks:
            s.close()


async def test_a_client_does_not_hold_a_servers_resets_against_it() -> None:
    """F12: a server refusing uploads with RST_STREAM is not Rapid Reset *to the client*."""

    async def refuse(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        writer.reset(ErrorCodes.REFUSED_STREAM)

    async with client_for(refuse, max_reset_burst=5, max_reset_rate=0.001) as (client, _):
        for _ in range(30):
            async with client.request({":method": "POST"}) as stream:
                stream.writer.write(b"u" * 1000)
                with pytest.raises(aioh2s.StreamReset) as info:
                    await asyncio.wait_for(stream.response_headers(), 3)
                assert info.value.retry_safe
        assert not client.is_closing()


@pytest.mark.parametrize("option", ["idle_timeout", "keepalive_interval", "handshake_timeout"])
def test_zero_or_negative_timers_are_refused(option: str) -> None:
    for bad in (0, -1):
        with pytest.raises(ValueError, match=option):
            aioh2s.Config(**{option: bad})


# -- review gaps: client request rules, writelines, reset codes, waiters, 1xx floods -----------


async def _count_requests() -> tuple[list[str], Any]:
    seen: list[str] = []

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        seen.append(str(reader.headers.get(":authority")))
        writer.send_headers({":status": "204"}, end_stream=True)

    return seen, handler


@pytest.mark.parametrize(
    ("headers", "match"),
    [
        ({":authority": "a.example", "host": "b.example"}, "differs from :authority"),
        ({":method": ""}, "not a token"),
        ({":method": "GE T"}, "not a token"),
        ({":path": "/a b"}, "space or control"),
        ({":path": "/a\tb"}, "space or control"),
    ],
)
async def test_client_refuses_a_bad_request_before_sending_it(
    headers: dict[str, str], match: str
) -> None:
    seen, handler = await _count_requests()
    async with client_for(handler) as (client, _):
        with pytest.raises(aioh2s.LocalProtocolError, match=match):
            client.request(headers, end_stream=True)
        # Nothing was sent and the connection is fine.
        async with client.request(end_stream=True) as stream:
            assert (await asyncio.wait_for(stream.response_headers(), 3))[":status"] == "204"
    assert len(seen) == 1


async def test_a_host_given_without_authority_becomes_the_authority() -> None:
    seen, handler = await _count_requests()
    async with client_for(handler) as (client, _):
        async with client.request({"host": "named.example"}, end_stream=True) as stream:
            await asyncio.wait_for(stream.response_headers(), 3)
    assert seen == ["named.example"]


async def test_writelines_with_a_bad_item_queues_nothing() -> None:
    got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        writer.send_headers({":status": "200"})
        with pytest.raises(TypeError, match="str"):
            writer.writelines([b"lost?", "text"])
        with pytest.raises(ValueError):
            writer.reset(True)  # a bool is no error code
        writer.writelines(iter([b"a", bytearray(b"b"), memoryview(b"c")]))
        writer.write_eof()

    async with client_for(handler) as (client, _):
        async with client.request(end_stream=True) as stream:
            got.set_result(await asyncio.wait_for(stream.reader.read(), 3))
    assert got.result() == b"abc"


async def test_a_woken_reader_does_not_clear_the_next_readers_waiter() -> None:
    """A reader woken but not yet resumed must leave a newer waiter in place."""
    release = asyncio.Event()

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        writer.send_headers({":status": "200"})
        await release.wait()
        writer.write(b"late")
        writer.write_eof()

    async with client_for(handler) as (client, _):
        async with client.request(end_stream=True) as stream:
            await asyncio.wait_for(stream.response_headers(), 3)
            s = stream.reader._s  # type: ignore[attr-defined]
            first = asyncio.ensure_future(s.wait_inbound())
            await asyncio.sleep(0)
            fut = s._in_waiter
            assert fut is not None
            fut.set_result(None)  # woken; it resumes in a later loop iteration
            second = s.wait_inbound()
            second.send(None)  # the next reader starts waiting before the first resumes
            await first
            assert s._in_waiter is not None and not s._in_waiter.done()
            second.close()
            release.set()
            assert await asyncio.wait_for(stream.reader.read(), 3) == b"late"


async def test_a_flood_of_1xx_responses_resets_the_stream() -> None:
    def on_event(peer: Any, ev: Any) -> None:
        if isinstance(ev, h2.events.RequestReceived):
            for _ in range(40):
                peer.conn.send_headers(ev.stream_id, [(":status", "103"), ("link", "</x>")])
            peer.flush()
        elif isinstance(ev, h2.events.StreamReset):
            resets.append(ev.error_code)

    resets: list[int] = []
    async with RawH2Server(on_event) as srv:
        client = await aioh2s.connect("127.0.0.1", srv.port)
        try:
            async with client.request(end_stream=True) as stream:
                with pytest.raises(aioh2s.RemoteProtocolError, match="1xx") as info:
                    await asyncio.wait_for(stream.response_headers(), 3)
                assert info.value.error_code == ErrorCodes.ENHANCE_YOUR_CALM
            for _ in range(100):
                if resets:
                    break
                await asyncio.sleep(0.01)
            assert resets == [ErrorCodes.ENHANCE_YOUR_CALM]
            assert not client.is_closing(), client._conn.error  # later 1xx ignored (§5.1)
        finally:
            await client.close()


# -- the Wire protocol: nothing the peer sent before closing is lost ---------------------------


class _SendAllThenClose(asyncio.Protocol):
    """A plain h2 server: one response of ``body``, GOAWAY, and close right after it."""

    body = b""

    def connection_made(self, transport: Any) -> None:
        self.t = transport
        self.c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        self.c.initiate_connection()
        transport.write(self.c.data_to_send())

    def data_received(self, data: bytes) -> None:
        if self.c.state_machine.state is h2.connection.ConnectionState.CLOSED:
            return  # GOAWAY sent: what the client still says (WINDOW_UPDATEs) is moot
        for ev in self.c.receive_data(data):
            if isinstance(ev, h2.events.RequestReceived):
                sid = ev.stream_id
                self.c.send_headers(sid, [(":status", "200")])
                mv = memoryview(self.body)
                for i in range(0, len(mv), 16384):
                    self.c.send_data(sid, mv[i:i + 16384], end_stream=i + 16384 >= len(mv))
                self.c.close_connection()
                self.t.write(self.c.data_to_send())
                if self.t.can_write_eof():
                    self.t.write_eof()  # FIN right behind the data; go on reading
                else:
                    self.t.close()  # TLS: close_notify right behind the data
                return
        self.t.write(self.c.data_to_send())


async def test_the_tail_of_what_a_peer_sent_before_closing_is_never_lost(wire: Any) -> None:
    """Over TLS on 3.11+, asyncio's SSL layer reads once when the peer closes: our buffer
    must take all it has (a 64 KiB one lost the last ~50 KiB of a 900 KiB response)."""
    body = bytes(range(256)) * (900 * 4)
    _SendAllThenClose.body = body
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(_SendAllThenClose, "127.0.0.1", 0, ssl=wire.raw_server_ssl())
    port = srv.sockets[0].getsockname()[1]
    try:
        for _ in range(5):
            client = await aioh2s.connect(
                "127.0.0.1", port, stream_window=1 << 20, connection_window=1 << 21,
                read_size=16 * 1024,  # pauses reading often: the SSL layer then has much buffered
                **wire.client_options(),
            )
            try:
                async with client.request(end_stream=True) as stream:
                    await asyncio.wait_for(stream.response_headers(), 3)
                    got = await asyncio.wait_for(stream.reader.read(), 5)
                assert len(got) == len(body) and got == body
            finally:
                client.abort()
                await client.wait_closed()
    finally:
        srv.close()
        await srv.wait_closed()


def test_uvloop_transports_work(wire: Any) -> None:
    """uvloop's transports are not asyncio.Transport subclasses; the Wire must not care."""
    uvloop = pytest.importorskip("uvloop")
    body = bytes(range(256)) * 1024  # 256 KiB each way

    async def main() -> None:
        async def echo(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
            data = await reader.read()
            writer.send_headers({":status": "200"})
            writer.write(data)
            writer.write_eof()

        async with wire.client_for(echo) as (client, _):
            async with client.request({":method": "POST"}) as stream:
                stream.writer.write(body)
                stream.writer.write_eof()
                got = await asyncio.wait_for(stream.reader.read(), 5)
            assert got == body

    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
