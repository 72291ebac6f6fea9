"""Tunnels: CONNECT (RFC 9113 §8.5) and extended CONNECT (RFC 8441), on real sockets.

Our client against our server over h2c and TLS (the ``wire`` fixture): a tunnel is a stream
whose DATA are bytes both ways, END_STREAM a half-close and RST_STREAM an abort. Against
peers nobody here wrote: a raw h2 server (tests/rawh2.py) that enables, withdraws or abuses
extended CONNECT for our client, and a raw socket client (tests/adversarial/rawpeer.py) that
sends malformed CONNECT requests to our server, which must answer RST_STREAM(PROTOCOL_ERROR)
and never run the handler. Misuse by the application raises before anything is sent. The
CONNECT proxy of examples/ is tested in tests/test_connect_proxy.py.
"""

from __future__ import annotations

import asyncio
import logging
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

pytestmark = pytest.mark.timeout(60)


class Tunnels:
    """A server handler: GET answers "ok"; CONNECT answers 200, then echoes until EOF.

    After the client's END_STREAM it still sends ``after EOF``: the other direction of a
    half-closed tunnel stays open.
    """

    def __init__(self, allow_slow: bool = False) -> None:
        self.requests: list[aioh2s.Headers] = []
        self.errors: list[BaseException] = []
        self.done = asyncio.Event()
        self.allow_slow = allow_slow

    async def __call__(self, reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        self.requests.append(reader.headers)
        if reader.headers[":method"] != "CONNECT":
            writer.send_headers({":status": "200"})
            writer.write(b"ok")
            writer.write_eof()
            return
        if self.allow_slow:
            reader.allow_slow_body()
        writer.send_headers({":status": "200"})
        try:
            async for chunk in reader:
                writer.write(chunk)
                await writer.drain()
            writer.write(b"after EOF")
            writer.write_eof()
        except aioh2s.H2Error as e:
            self.errors.append(e)
            raise
        finally:
            self.done.set()


async def get_ok(client: aioh2s.Client) -> None:
    async with client.request({":path": "/"}, end_stream=True) as st:
        assert (await st.response_headers())[":status"] == "200"
        assert await st.reader.read() == b"ok"


# -- both ways, our client and our server ----------------------------------------------------


async def test_plain_connect_is_a_byte_tunnel_with_half_close(wire: Any) -> None:
    app = Tunnels()
    async with wire.client_for(app) as (client, _server):
        async with client.connect_tunnel("example.com:443") as t:
            headers = await t.response_headers()
            assert headers[":status"] == "200"
            for i in range(3):  # an exchange, not one body: each answer arrives on its own
                t.writer.write(b"ping %d" % i)
                await t.writer.drain()
                assert await t.reader.readexactly(6) == b"ping %d" % i
            t.writer.write_eof()  # our half: the server's direction goes on
            assert await t.reader.read() == b"after EOF"
            assert t.reader.at_eof() and t.reader.trailers is None
        assert app.requests[0] == [(":method", "CONNECT"), (":authority", "example.com:443")]
        assert "content-length" not in headers
        await get_ok(client)  # the connection serves on


async def test_extended_connect_with_the_setting(wire: Any) -> None:
    app = Tunnels()
    async with wire.client_for(app, {"enable_connect_protocol": True}) as (client, _server):
        req = {":method": "CONNECT", ":protocol": "websocket", ":path": "/chat"}
        async with client.request(req) as t:
            assert (await t.response_headers())[":status"] == "200"
            t.writer.write(b"frame")
            t.writer.write_eof()
            assert await t.reader.read() == b"frameafter EOF"
        seen = dict(app.requests[0])
        scheme = "https" if wire.tls else "http"
        assert seen == {":method": "CONNECT", ":protocol": "websocket", ":path": "/chat",
                        ":scheme": scheme, ":authority": seen[":authority"]}
        assert seen[":authority"].startswith("127.0.0.1:")


async def test_extended_connect_without_the_setting_raises_and_sends_nothing(wire: Any) -> None:
    app = Tunnels()
    async with wire.client_for(app) as (client, _server):
        req = {":method": "CONNECT", ":protocol": "websocket", ":path": "/chat"}
        with pytest.raises(aioh2s.ExtendedConnectUnsupported,
                           match="SETTINGS_ENABLE_CONNECT_PROTOCOL") as info:
            async with client.request(req):
                pass
        assert isinstance(info.value, aioh2s.LocalProtocolError)
        assert not info.value.retry_safe
        async with client.request({":path": "/"}, end_stream=True) as st:
            assert st.stream_id == 1  # nothing of the refused request reached h2
            await st.reader.read()
        assert [h[":method"] for h in app.requests] == ["GET"]


async def test_extended_connect_through_a_session(wire: Any) -> None:
    app = Tunnels()
    async with wire.serving(app, enable_connect_protocol=True) as (_server, port):
        authority = f"127.0.0.1:{port}"
        target = {":method": "CONNECT", ":protocol": "websocket",
                  ":scheme": "https" if wire.tls else "http", ":authority": authority,
                  ":path": "/chat"}
        async with wire.session() as session:
            quiet = aioh2s.Timeouts(read=None)  # a tunnel may be silent for long
            async with session.request(target, timeout=quiet) as t:
                assert (await t.response_headers())[":status"] == "200"
                t.writer.write(b"x")
                t.writer.write_eof()
                assert await t.reader.read() == b"xafter EOF"
            with pytest.raises(ValueError, match="plain CONNECT"):
                session.request({":method": "CONNECT", ":scheme": "http", ":authority": "a:1"})
            with pytest.raises(ValueError, match="plain CONNECT"):
                session.request(f"http://{authority}/", method="CONNECT")
    async with wire.serving(app) as (_server, port):
        target[":authority"] = f"127.0.0.1:{port}"
        async with wire.session() as session:
            with pytest.raises(aioh2s.ExtendedConnectUnsupported):
                async with session.request(target):
                    pass


async def test_reset_aborts_a_tunnel(wire: Any) -> None:
    app = Tunnels()
    async with wire.client_for(app) as (client, _server):
        async with client.connect_tunnel("example.com:443") as t:
            await t.response_headers()
            t.writer.write(b"x")
            assert await t.reader.readexactly(1) == b"x"
            t.writer.reset(aioh2s.ErrorCode.CANCEL)
        await asyncio.wait_for(app.done.wait(), 5)
        assert isinstance(app.errors[0], aioh2s.StreamReset)
        assert app.errors[0].error_code == E.CANCEL and app.errors[0].remote
        await get_ok(client)


# -- misuse by the application: raised before anything changes -------------------------------


@pytest.mark.parametrize("headers, match", [
    ({":method": "GET", ":protocol": "websocket"}, "only an extended CONNECT"),
    ({":method": "CONNECT", ":protocol": ""}, "not a token"),
    ({":method": "CONNECT", ":protocol": "web socket"}, "not a token"),
    ({":method": "CONNECT", ":authority": "a.example:1", ":path": "/"}, "neither"),
    ({":method": "CONNECT", ":authority": "a.example:1", ":scheme": "http"}, "neither"),
    ({":method": "CONNECT"}, "not host:port"),
    ({":method": "CONNECT", ":authority": "a.example"}, "not host:port"),
], ids=["protocol-on-get", "empty-protocol", "protocol-not-token", "plain-with-path",
        "plain-with-scheme", "plain-without-authority", "plain-without-port"])
async def test_bad_connect_requests_raise_before_sending(
    wire: Any, headers: dict[str, str], match: str
) -> None:
    app = Tunnels()
    async with wire.client_for(app, {"enable_connect_protocol": True}) as (client, _server):
        with pytest.raises(aioh2s.LocalProtocolError, match=match):
            client.request(headers)
        await get_ok(client)
        assert len(app.requests) == 1


async def test_connect_tunnel_arguments(wire: Any) -> None:
    async with wire.client_for(Tunnels()) as (client, _server):
        for bad in ("example.com", "example.com:", "exa mple.com:80", "a:b", "[::1]"):
            with pytest.raises(aioh2s.LocalProtocolError, match="host:port"):
                client.connect_tunnel(bad)
        with pytest.raises(ValueError, match="pseudo-headers"):
            client.connect_tunnel("a.example:1", {":path": "/"})
        with pytest.raises(TypeError):
            client.connect_tunnel(443)  # type: ignore[arg-type]
        async with client.connect_tunnel("[::1]:443", {"proxy-authorization": "x"}) as t:
            assert (await t.response_headers())[":status"] == "200"
            assert t.stream_id == 1
            t.writer.write_eof()
            assert await t.reader.read() == b"after EOF"


async def test_server_misuse_of_an_open_tunnel(wire: Any) -> None:
    raised: list[str] = []

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        with pytest.raises(aioh2s.LocalProtocolError, match="no content length") as e1:
            writer.send_headers({":status": "200", "content-length": "0"})
        raised.append(str(e1.value))
        writer.send_headers({":status": "200"})  # nothing was sent: answering still works
        with pytest.raises(aioh2s.LocalProtocolError, match="only DATA") as e2:
            writer.send_trailers({"x-done": "1"})
        raised.append(str(e2.value))
        writer.write(await reader.read())
        writer.send_trailers({})  # no fields: END_STREAM alone, which a tunnel may send

    async with wire.client_for(handler) as (client, _server):
        async with client.connect_tunnel("a.example:1") as t:
            assert (await t.response_headers())[":status"] == "200"
            t.writer.write(b"data")
            t.writer.write_eof()
            assert await t.reader.read() == b"data"
            assert t.reader.trailers is None
    assert len(raised) == 2


async def test_a_refused_connect_is_an_ordinary_response(wire: Any) -> None:
    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        writer.send_headers({":status": "407", "content-length": "4"})  # not 2xx: a body
        writer.write(b"auth")
        writer.send_trailers({"x-why": "credentials"})

    async with wire.client_for(handler) as (client, _server):
        async with client.connect_tunnel("a.example:1") as t:
            assert (await t.response_headers())[":status"] == "407"
            assert await t.reader.read() == b"auth"
            assert t.reader.trailers == [("x-why", "credentials")]


# -- min_body_rate: an open extended CONNECT tunnel is exempt, a plain one if its handler says so,
# a CONNECT not answered yet is not ------------------------------------------------------------

RATE = {"min_body_rate": 100_000.0, "body_rate_grace": 0.2}


@pytest.mark.parametrize("kind", ["extended", "plain, allowed by the handler"])
async def test_an_open_tunnel_may_stay_silent(wire: Any, kind: str) -> None:
    extended = kind == "extended"
    app = Tunnels(allow_slow=not extended)
    async with wire.client_for(app, {**RATE, "enable_connect_protocol": True}) as (client, _):
        if extended:
            opening = client.request({":method": "CONNECT", ":protocol": "x", ":path": "/"})
        else:
            opening = client.connect_tunnel("a.example:1")
        async with opening as t:
            await t.response_headers()
            await asyncio.sleep(1.0)  # five grace periods without a byte
            t.writer.write(b"still here")
            t.writer.write_eof()
            assert await t.reader.read() == b"still hereafter EOF"
        assert not client.is_closing()


@pytest.mark.expect_log("aioh2s", logging.WARNING, "closing connection")
async def test_a_plain_tunnel_is_held_to_the_rate_unless_its_handler_allows_it(wire: Any) -> None:
    """Any client may send a plain CONNECT (no setting needed) to a handler that answers 200
    first, an echo say: were that exempt by itself, it would be a way out of the limit."""
    app = Tunnels()
    async with wire.client_for(app, RATE) as (client, _server):
        async with client.connect_tunnel("a.example:1") as t:
            await t.response_headers()
            with pytest.raises(aioh2s.H2Error):
                for _ in range(100):  # dribble: 1 byte per 0.05 s, far below the rate
                    t.writer.write(b"x")
                    await t.writer.drain()
                    await asyncio.sleep(0.05)
        await asyncio.wait_for(client.wait_closed(), 5)


@pytest.mark.expect_log("aioh2s", logging.WARNING, "closing connection")
async def test_a_connect_read_before_it_is_answered_is_held_to_the_rate() -> None:
    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        await reader.read()  # no 2xx: this is no tunnel yet, only a request the peer dribbles

    async with client_for(handler, RATE) as (client, _server):
        async with client.connect_tunnel("a.example:1") as t:
            with pytest.raises(aioh2s.H2Error):
                await asyncio.wait_for(t.response_headers(), 10)
        await asyncio.wait_for(client.wait_closed(), 5)


# -- teardown with a tunnel open ---------------------------------------------------------------


async def test_server_close_ends_an_open_tunnel_after_grace(wire: Any) -> None:
    app = Tunnels()
    async with wire.serving(app) as (server, port):
        client = await wire.connect(port)
        try:
            async with client.connect_tunnel("a.example:1") as t:
                await t.response_headers()
                server.close(grace=0.3)
                t.writer.write(b"in grace")  # the tunnel works on during the grace period
                assert await t.reader.readexactly(8) == b"in grace"
                with pytest.raises((aioh2s.StreamReset, aioh2s.ConnectionClosed)):
                    await asyncio.wait_for(t.reader.read(), 5)
            await asyncio.wait_for(server.wait_closed(), 5)
        finally:
            await client.close(grace=1)
    assert app.done.is_set()


async def test_client_close_ends_an_open_tunnel_after_grace(wire: Any) -> None:
    app = Tunnels()
    async with wire.client_for(app) as (client, _server):
        async with client.connect_tunnel("a.example:1") as t:
            await t.response_headers()
            closing = asyncio.ensure_future(client.close(grace=0.3))
            await asyncio.sleep(0.05)
            t.writer.write(b"x")
            assert await t.reader.readexactly(1) == b"x"
            await asyncio.wait_for(closing, 5)
            with pytest.raises((aioh2s.StreamReset, aioh2s.ConnectionClosed)):
                await t.reader.read()
        await asyncio.wait_for(app.done.wait(), 5)
    assert app.errors and isinstance(app.errors[0], (aioh2s.StreamReset,
                                                     aioh2s.ConnectionClosed))


async def test_client_abort_ends_an_open_tunnel(wire: Any) -> None:
    app = Tunnels()
    async with wire.client_for(app) as (client, _server):
        t = await client.connect_tunnel("a.example:1")
        await t.response_headers()
        client.abort()
        with pytest.raises(aioh2s.ConnectionClosed):
            await t.reader.read()
        await asyncio.wait_for(app.done.wait(), 5)


# -- a raw h2 server (not aioh2s) serving our client --------------------------------------------


def _raw_tunnel_server(wire: Any, settings: dict[int, int], answer: Any) -> RawH2Server:
    def on_event(peer: Any, ev: Any) -> None:
        if isinstance(ev, h2.events.RequestReceived):
            answer(peer, ev)

    return RawH2Server(on_event, ssl=wire.raw_server_ssl(), settings=settings)


async def test_extended_connect_to_a_server_that_enabled_it(wire: Any) -> None:
    seen: list[dict[str, str]] = []

    def answer(peer: Any, ev: Any) -> None:
        seen.append(dict(ev.headers))
        peer.conn.send_headers(ev.stream_id, [(":status", "200")])
        peer.conn.send_data(ev.stream_id, b"hi", end_stream=True)
        peer.flush()

    async with _raw_tunnel_server(wire, {8: 1}, answer) as raw:
        client = await wire.connect(raw.port)
        try:
            req = {":method": "CONNECT", ":protocol": "x-test", ":path": "/t"}
            async with client.request(req) as t:
                assert (await t.response_headers())[":status"] == "200"
                assert await t.reader.read() == b"hi"
                t.writer.write_eof()
                await t.writer.wait_closed()
        finally:
            await client.close(grace=1)
    assert seen[0][":protocol"] == "x-test" and seen[0][":method"] == "CONNECT"


async def test_a_server_withdrawing_the_setting_is_a_connection_error(wire: Any) -> None:
    goaways: list[int] = []

    def on_event(peer: Any, ev: Any) -> None:
        if isinstance(ev, h2.events.ConnectionTerminated):
            goaways.append(ev.error_code)

    def on_connect(peer: Any) -> None:
        peer.conn.update_settings({8: 0})  # after {8: 1} in the preface: forbidden (§3)

    async with RawH2Server(on_event, ssl=wire.raw_server_ssl(), settings={8: 1},
                           on_connect=on_connect) as raw:
        try:
            client = await wire.connect(raw.port)
        except aioh2s.ConnectError:
            pass  # both SETTINGS came in one read, before connect() returned
        else:
            await asyncio.wait_for(client.wait_closed(), 5)
            assert "SETTINGS_ENABLE_CONNECT_PROTOCOL" in str(client._conn.error)
        for _ in range(50):
            if goaways:
                break
            await asyncio.sleep(0.02)
    assert goaways == [E.PROTOCOL_ERROR]


async def test_client_ignores_content_length_of_a_2xx_to_connect(wire: Any) -> None:
    def answer(peer: Any, ev: Any) -> None:
        peer.conn.send_headers(ev.stream_id, [(":status", "200"), ("content-length", "3")])
        peer.conn.send_data(ev.stream_id, b"0123456789", end_stream=True)
        peer.flush()

    async with _raw_tunnel_server(wire, {}, answer) as raw:
        client = await wire.connect(raw.port)
        try:
            async with client.connect_tunnel("a.example:1") as t:
                assert (await t.response_headers())[":status"] == "200"
                assert await t.reader.read() == b"0123456789"  # RFC 9110 §9.3.6
                t.writer.write_eof()
                await t.writer.wait_closed()
        finally:
            await client.close(grace=1)


async def test_client_refuses_trailers_on_an_open_tunnel(wire: Any) -> None:
    resets: list[int] = []

    def on_event(peer: Any, ev: Any) -> None:
        if isinstance(ev, h2.events.RequestReceived):
            peer.conn.send_headers(ev.stream_id, [(":status", "200")])
            if ev.stream_id == 1:
                peer.conn.send_data(ev.stream_id, b"tunnel")
                peer.conn.send_headers(ev.stream_id, [("x-late", "1")], end_stream=True)
            else:
                peer.conn.send_data(ev.stream_id, b"fine", end_stream=True)
            peer.flush()
        elif isinstance(ev, h2.events.StreamReset):
            resets.append(ev.error_code)

    async with RawH2Server(on_event, ssl=wire.raw_server_ssl()) as raw:
        client = await wire.connect(raw.port)
        try:
            async with client.connect_tunnel("a.example:1") as t:
                await t.response_headers()
                with pytest.raises(aioh2s.RemoteProtocolError, match="RFC 9113 §8.5"):
                    await t.reader.read()
            await get_raw_ok(client)
        finally:
            await client.close(grace=1)
    assert resets == [E.PROTOCOL_ERROR]


async def get_raw_ok(client: aioh2s.Client) -> None:
    async with client.connect_tunnel("b.example:1") as t:  # the connection is still usable
        await t.response_headers()
        assert await t.reader.read() == b"fine"
        t.writer.write_eof()
        await t.writer.wait_closed()  # END_STREAM went out: leaving resets nothing


# -- malformed CONNECT requests from a raw client: RST_STREAM(PROTOCOL_ERROR) ------------------

A = (":authority", "a.example:443")
EXT = [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "http"),
       (":path", "/chat"), A]
MALFORMED_CONNECT = {
    "protocol-without-the-setting": (False, EXT),
    "protocol-on-get": (True, rp.request_headers("/", "GET") + [(":protocol", "websocket")]),
    "plain-with-path": (True, [(":method", "CONNECT"), A, (":path", "/")]),
    "plain-with-scheme": (True, [(":method", "CONNECT"), (":scheme", "http"), A]),
    "plain-host-only": (True, [(":method", "CONNECT"), ("host", "a.example:443")]),
    "plain-no-authority": (True, [(":method", "CONNECT")]),
    "extended-no-path": (True, [h for h in EXT if h[0] != ":path"]),
    "extended-no-scheme": (True, [h for h in EXT if h[0] != ":scheme"]),
    "extended-empty-protocol": (True, [(n, "" if n == ":protocol" else v) for n, v in EXT]),
    "protocol-twice": (True, EXT + [(":protocol", "x")]),
}


async def _raw_client(app: Any, enable: bool) -> Any:
    server = await aioh2s.start_server(app, "127.0.0.1", 0, enable_connect_protocol=enable)
    port = server.sockets[0].getsockname()[1]
    peer = await RawPeer.connect(port)
    settings = await peer.handshake()
    assert settings.get(0x8, 0) == (1 if enable else 0)
    return server, peer


@pytest.mark.parametrize("case", list(MALFORMED_CONNECT.values()), ids=list(MALFORMED_CONNECT))
async def test_malformed_connect_gets_protocol_error(case: tuple[bool, list[Any]]) -> None:
    enable, header_list = case
    app = Tunnels()
    server, peer = await _raw_client(app, enable)
    try:
        sid = peer.new_stream_id()
        await peer.send(peer.headers(sid, header_list, end_stream=False))
        assert await peer.expect_stream_error(sid, E.PROTOCOL_ERROR) == "rst"
        assert (await peer.get("/")).status == "200"  # a stream error: the connection goes on
        assert [h[":method"] for h in app.requests] == ["GET"], "handler ran for it"
    finally:
        await peer.close()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("header_list", [
    [(":method", "CONNECT"), A],
    EXT,
    [(":method", "CONNECT"), A, ("content-length", "3")],  # no meaning on a tunnel
], ids=["plain", "extended", "plain-content-length"])
async def test_well_formed_connect_from_a_raw_client(header_list: list[Any]) -> None:
    app = Tunnels()
    server, peer = await _raw_client(app, True)
    try:
        sid = peer.new_stream_id()
        peer.streams[sid] = rp.Response()
        await peer.send(peer.headers(sid, header_list), rp.data(sid, b"0123456789"))
        await peer.send(rp.data(sid, b"!", end_stream=True))
        assert await peer.wait_for(lambda p: p.streams[sid].ended, 5), peer.describe()
        assert peer.streams[sid].status == "200"
        assert bytes(peer.streams[sid].body) == b"0123456789!after EOF"
    finally:
        await peer.close()
        server.close()
        await server.wait_closed()


async def test_trailers_from_the_client_on_an_open_tunnel() -> None:
    app = Tunnels()
    server, peer = await _raw_client(app, False)
    try:
        sid = peer.new_stream_id()
        peer.streams[sid] = rp.Response()
        await peer.send(peer.headers(sid, [(":method", "CONNECT"), A]))
        assert await peer.wait_for(lambda p: p.streams[sid].status == "200", 5)
        await peer.send(rp.data(sid, b"x"), peer.headers(sid, [("x-t", "1")], end_stream=True))
        assert await peer.expect_stream_error(sid, E.PROTOCOL_ERROR) == "rst"
        await asyncio.wait_for(app.done.wait(), 5)
        assert isinstance(app.errors[0], aioh2s.RemoteProtocolError)
        assert (await peer.get("/")).status == "200"
    finally:
        await peer.close()
        server.close()
        await server.wait_closed()


# -- deciding on extended CONNECT only after the server's first SETTINGS ------------------------


@pytest.mark.parametrize("enable", [True, False], ids=["enabled", "not-enabled"])
async def test_extended_connect_waits_for_the_first_settings(wire: Any, enable: bool) -> None:
    # connect() returns after the server's SETTINGS; a connection used before them (built
    # here by hand) must wait for them rather than decide on h2's default (not enabled).
    from aioh2s._connection import Connection
    from aioh2s._wire import Wire

    app = Tunnels()
    async with wire.serving(app, enable_connect_protocol=enable) as (_server, port):
        cfg = aioh2s.Config()
        opts = wire.client_options()
        _transport, proto = await asyncio.get_running_loop().create_connection(
            lambda: Wire(cfg.read_size), "127.0.0.1", port, **opts
        )
        conn = Connection(proto, client=True, config=cfg)
        conn.start()
        client = aioh2s.Client(conn, f"127.0.0.1:{port}", "https" if wire.tls else "http")
        try:
            assert not conn._settled
            req = {":method": "CONNECT", ":protocol": "websocket", ":path": "/chat"}
            if enable:
                async with client.request(req) as t:
                    assert (await t.response_headers())[":status"] == "200"
                    t.writer.write_eof()
                    assert await t.reader.read() == b"after EOF"
            else:
                with pytest.raises(aioh2s.ExtendedConnectUnsupported):
                    await client.request(req)
                assert conn._settled
        finally:
            await client.close(grace=1)
