"""CONNECT at the edges: the rules a hostile review of the tunnels found missing.

- Content-Length: malformed or conflicting on a request is a *stream* error (RFC 9113
  §8.1.1), not the connection's; on a 2xx answer to CONNECT it is ignored (RFC 9110 §9.3.6).
- Trailers on a CONNECT are refused before the 2xx as after it (only DATA follows, §8.5).
- An HTTP/1.1 CONNECT cannot come in through an h2c Upgrade.
- A plain CONNECT names a port; a client refuses a port over 65535.
- Leaving ``async with`` after ``write_eof()`` loses nothing once the peer is done; a second
  ``write_eof()`` does nothing (as asyncio's).
- A server's handler told its connection died is not told its stream is "safe to retry".
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import h2.events
import pytest
from h2.errors import ErrorCodes as E

import aioh2s
from helpers import client_for
from rawh2 import RawH2Server

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "adversarial"))

import rawpeer as rp  # noqa: E402
from rawpeer import RawPeer  # noqa: E402

pytestmark = pytest.mark.timeout(30)


async def ok(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
    writer.send_headers({":status": "200"})
    writer.write(b"ok")
    writer.write_eof()


async def get_ok(port: int) -> None:
    async with await aioh2s.connect("127.0.0.1", port) as client:
        async with client.request({":path": "/"}, end_stream=True) as st:
            assert await st.reader.read() == b"ok"


# -- Content-Length ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header_list",
    [
        [(":method", "CONNECT"), (":authority", "a.example:1"), ("content-length", "abc")],
        [(":method", "CONNECT"), (":authority", "a.example:1"), ("content-length", "1"),
         ("content-length", "2")],
        rp.request_headers("/", "POST") + [("content-length", "abc")],
        rp.request_headers("/", "POST") + [("content-length", "1"), ("content-length", "2")],
    ],
    ids=["connect-not-digits", "connect-conflicting", "post-not-digits", "post-conflicting"],
)
async def test_a_bad_content_length_is_a_stream_error(header_list: list[Any]) -> None:
    server = await aioh2s.start_server(ok, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    peer = await RawPeer.connect(port)
    try:
        await peer.handshake()
        sid = peer.new_stream_id()
        await peer.send(peer.headers(sid, header_list, end_stream=False))
        assert await peer.expect_stream_error(sid, E.PROTOCOL_ERROR) == "rst"
        assert peer.goaway is None
        # The connection carries on: another request on it is answered.
        sid = peer.new_stream_id()
        peer.streams[sid] = rp.Response()
        await peer.send(peer.headers(sid, rp.request_headers("/"), end_stream=True))
        assert await peer.wait_for(lambda p: p.streams[sid].ended, 5)
        assert peer.streams[sid].body == b"ok"
    finally:
        await peer.close()
        server.close()
        await server.wait_closed()


async def test_a_valid_content_length_on_a_connect_does_not_count_its_bytes() -> None:
    async def echo(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        writer.send_headers({":status": "200"})
        writer.write(await reader.read())
        writer.write_eof()

    async with client_for(echo) as (client, _):
        async with client.connect_tunnel("a.example:1", {"content-length": "1"}) as t:
            t.writer.write(b"more than one byte")
            t.writer.write_eof()
            assert await t.reader.read() == b"more than one byte"


@pytest.mark.parametrize(
    "fields",
    [[("content-length", "abc")], [("content-length", "1"), ("content-length", "2")],
     [("content-length", "2")]],
    ids=["not-digits", "conflicting", "too-small"],
)
async def test_a_client_ignores_content_length_on_a_2xx_to_connect(fields: list[Any]) -> None:
    def on_event(peer: Any, ev: Any) -> None:
        if isinstance(ev, h2.events.RequestReceived):
            peer.conn.config.validate_outbound_headers = False
            peer.conn.config.normalize_outbound_headers = False
            peer.conn.send_headers(ev.stream_id, [(":status", "200"), *fields])
            peer.conn.send_data(ev.stream_id, b"tunnel bytes", end_stream=True)
            peer.flush()

    async with RawH2Server(on_event) as raw:
        async with await aioh2s.connect("127.0.0.1", raw.port) as client:
            async with client.connect_tunnel("a.example:1") as t:
                assert (await t.response_headers())[":status"] == "200"
                assert await t.reader.read() == b"tunnel bytes"
                t.writer.write_eof()
                await t.writer.wait_closed()


async def test_a_client_resets_only_the_stream_of_a_response_with_a_bad_content_length() -> None:
    def on_event(peer: Any, ev: Any) -> None:
        if isinstance(ev, h2.events.RequestReceived):
            peer.conn.config.validate_outbound_headers = False
            path = dict(ev.headers).get(b":path", dict(ev.headers).get(":path"))
            bad = path in (b"/bad", "/bad")
            fields = [("content-length", "x")] if bad else [("content-length", "2")]
            peer.conn.send_headers(ev.stream_id, [(":status", "200"), *fields])
            peer.conn.send_data(ev.stream_id, b"ok", end_stream=True)
            peer.flush()

    async with RawH2Server(on_event) as raw:
        async with await aioh2s.connect("127.0.0.1", raw.port) as client:
            async with client.request({":path": "/bad"}, end_stream=True) as st:
                with pytest.raises(aioh2s.H2Error) as info:
                    await st.response_headers()
                assert isinstance(info.value, (aioh2s.StreamReset, aioh2s.RemoteProtocolError))
            async with client.request({":path": "/good"}, end_stream=True) as st:
                assert await st.reader.read() == b"ok"
            assert not client.is_closing()


# -- trailers on CONNECT -----------------------------------------------------------------------


async def test_a_client_may_not_send_trailers_on_an_unanswered_connect() -> None:
    got: list[str] = []

    def on_event(peer: Any, ev: Any) -> None:
        got.append(type(ev).__name__)

    async with RawH2Server(on_event) as raw:
        async with await aioh2s.connect("127.0.0.1", raw.port) as client:
            async with client.connect_tunnel("a.example:1") as t:
                t.writer.write(b"x")
                with pytest.raises(aioh2s.LocalProtocolError, match="CONNECT"):
                    t.writer.send_trailers({"x-late": "1"})
                t.writer.write_eof()  # the stream is still usable
                await t.writer.wait_closed()
    assert "TrailersReceived" not in got


async def test_trailers_on_a_connect_before_its_answer_reset_it() -> None:
    seen: list[Any] = []

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        await asyncio.sleep(0.2)  # a proxy connecting to its target
        try:
            writer.send_headers({":status": "200"})
            seen.append(await reader.read())
        except aioh2s.H2Error as e:
            seen.append(e)
            raise

    server = await aioh2s.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    peer = await RawPeer.connect(port)
    try:
        await peer.handshake()
        sid = peer.new_stream_id()
        peer.streams[sid] = rp.Response()
        await peer.send(
            peer.headers(sid, [(":method", "CONNECT"), (":authority", "a.example:1")]),
            rp.data(sid, b"abc"),
            peer.headers(sid, [("x-t", "1")], end_stream=True),
        )
        assert await peer.expect_stream_error(sid, E.PROTOCOL_ERROR) == "rst"
        await asyncio.sleep(0.4)
    finally:
        await peer.close()
        server.close()
        await server.wait_closed()
    assert all(not isinstance(x, bytes) for x in seen), seen  # no tunnel ever read them


# -- the front doors and :authority -------------------------------------------------------------


UPGRADE_CONNECT = (
    b"CONNECT a.example:443 HTTP/1.1\r\nHost: internal.example:22\r\n"
    b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
    b"HTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"
)


@pytest.mark.parametrize(
    "head",
    [UPGRADE_CONNECT, UPGRADE_CONNECT.replace(b"CONNECT a.example:443", b"GET http://a.example/")],
    ids=["connect", "absolute-form"],
)
async def test_an_h2c_upgrade_needs_an_origin_form_request(head: bytes) -> None:
    seen: list[aioh2s.Headers] = []

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        seen.append(reader.headers)
        writer.send_headers({":status": "200"}, end_stream=True)

    server = await aioh2s.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        w.write(head)
        answer = await asyncio.wait_for(r.read(), 5)
    finally:
        w.close()
        await w.wait_closed()
        server.close()
        await server.wait_closed()
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:60]
    assert seen == []


@pytest.mark.parametrize("authority", ["a.example", "[::1]", "a.example:"], ids=str)
async def test_a_plain_connect_without_a_port_is_malformed(authority: str) -> None:
    ran: list[str] = []

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        ran.append(reader.headers[":authority"])
        writer.send_headers({":status": "200"}, end_stream=True)

    server = await aioh2s.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    peer = await RawPeer.connect(port)
    try:
        await peer.handshake()
        sid = peer.new_stream_id()
        await peer.send(peer.headers(sid, [(":method", "CONNECT"), (":authority", authority)]))
        assert await peer.expect_stream_error(sid, E.PROTOCOL_ERROR) == "rst"
    finally:
        await peer.close()
        server.close()
        await server.wait_closed()
    assert ran == []


async def test_a_client_refuses_a_port_out_of_range() -> None:
    async with client_for(ok) as (client, _):
        for target in ("a.example:65536", "a.example:99999"):
            with pytest.raises(aioh2s.LocalProtocolError, match="host:port"):
                client.connect_tunnel(target)
        async with client.connect_tunnel("a.example:65535") as t:
            assert (await t.response_headers())[":status"] == "200"


# -- leaving, ending twice ---------------------------------------------------------------------


async def test_leaving_after_write_eof_loses_nothing_once_the_peer_is_done(wire: Any) -> None:
    got: list[Any] = []

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        writer.send_headers({":status": "200"})
        writer.write(b"bye")
        writer.write_eof()  # the server's side ends first
        n = 0
        try:
            while c := await reader.read(16384):
                n += len(c)
                await asyncio.sleep(0.002)  # a slow reader: our bytes queue behind END_STREAM
            got.append(("EOF", n))
        except aioh2s.H2Error as e:
            got.append((repr(e), n))

    size = 1_012_345
    async with wire.client_for(handler, {"stream_window": 65535}) as (client, _):
        async with client.connect_tunnel("a.example:1") as t:
            await t.response_headers()
            t.writer.write(b"x" * size)
            t.writer.write_eof()
            t.writer.write_eof()  # a second one does nothing
            await t.writer.drain()
            assert await t.reader.read() == b"bye"
        for _ in range(200):
            if got:
                break
            await asyncio.sleep(0.05)
    assert got == [("EOF", size)]


async def test_a_servers_stream_is_not_said_to_be_retry_safe_when_the_client_aborts() -> None:
    errors: list[BaseException] = []
    started = asyncio.Event()

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        writer.send_headers({":status": "200"})
        started.set()
        try:
            await reader.read()
        except aioh2s.H2Error as e:
            errors.append(e)
            raise

    async with client_for(handler) as (client, _):
        async with client.connect_tunnel("a.example:1") as t:
            await t.response_headers()
            await asyncio.wait_for(started.wait(), 5)
            client.abort()
        for _ in range(100):
            if errors:
                break
            await asyncio.sleep(0.02)
    assert len(errors) == 1 and isinstance(errors[0], aioh2s.ConnectionClosed)
    assert not errors[0].retry_safe and "retry" not in str(errors[0])
