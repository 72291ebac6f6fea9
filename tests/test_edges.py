"""Edges of the public API (issue 10): connect() cancelled or failing, the cleartext front door
given bad input, header values of the wrong type, and errors that say whose fault they are.

Everything runs on real sockets on 127.0.0.1 and is bounded by timeouts.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import logging
import socket
import ssl
import struct
import warnings
from collections.abc import AsyncIterator, Callable
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest

import aioh2s
from aioh2s import headers as H
from helpers import echo_handler, serving

trustme = pytest.importorskip("trustme")

# -- helpers ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    d = tmp_path_factory.mktemp("edges-certs")
    cert, key, ca_path = d / "cert.pem", d / "key.pem", d / "ca.pem"
    cert.write_bytes(b"".join(p.bytes() for p in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_path))
    return {"cert": str(cert), "key": str(key), "ca": str(ca_path)}


@contextlib.contextmanager
def listening() -> Any:
    """A TCP listener nobody accepts on: the kernel completes the handshake, nothing answers."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(8)
    lsock.setblocking(False)
    try:
        yield lsock
    finally:
        lsock.close()


async def peer_sees_eof(lsock: socket.socket, timeout: float = 3.0) -> bytes:
    """Accept the one connection waiting on ``lsock`` and read until the client closed it."""
    loop = asyncio.get_running_loop()
    conn, _ = await asyncio.wait_for(loop.sock_accept(lsock), timeout)
    got = b""
    try:
        while True:
            try:
                chunk = await asyncio.wait_for(loop.sock_recv(conn, 65536), timeout)
            except ConnectionResetError:
                break  # an abort() is a close too
            if not chunk:
                break
            got += chunk
    finally:
        conn.close()
    return got


def other_tasks(*known: asyncio.Task[Any] | None) -> set[asyncio.Task[Any]]:
    skip = {asyncio.current_task(), *known}
    return {t for t in asyncio.all_tasks() if t not in skip and not t.done()}


def assert_nothing_leaked(loop_errors: list[dict[str, Any]]) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        gc.collect()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaks, leaks
    assert not loop_errors, loop_errors


@contextlib.contextmanager
def loop_errors() -> Any:
    """Collect what the loop's exception handler gets ("Task was destroyed but it is pending")."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    old = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    try:
        yield errors
    finally:
        loop.set_exception_handler(old)


@contextlib.asynccontextmanager
async def tls_server_without_settings(tls: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    """A TLS server that completes the handshake (ALPN h2) and then sends nothing at all."""
    state: dict[str, Any] = {"tasks": set(), "eof": asyncio.Event()}

    async def on_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        state["tasks"].add(asyncio.current_task())
        try:
            while await r.read(65536):
                pass
            state["eof"].set()
        except OSError:
            state["eof"].set()
        finally:
            w.close()

    ctx = aioh2s.server_ssl_context(tls["cert"], tls["key"])
    srv = await asyncio.start_server(on_conn, "127.0.0.1", 0, ssl=ctx)
    state["port"] = srv.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        srv.close()
        await asyncio.wait_for(srv.wait_closed(), 5)


# -- item 5: a cancelled or timed-out connect() leaves nothing behind -------------------------

# (name, TLS?, how the connection is given up on)
SILENT_CASES = [
    ("tcp-wait_for", False, "wait_for"),
    ("tcp-handshake_timeout", False, "handshake_timeout"),
    ("tls-hangs-wait_for", True, "wait_for"),
    ("tls-hangs-handshake_timeout", True, "handshake_timeout"),
]


@pytest.mark.parametrize("name,use_tls,how", SILENT_CASES, ids=[c[0] for c in SILENT_CASES])
async def test_connect_given_up_on_a_silent_peer_leaks_nothing(
    tls: dict[str, Any], name: str, use_tls: bool, how: str
) -> None:
    # The peer accepts TCP and never answers: neither the TLS handshake nor SETTINGS come.
    ctx = aioh2s.client_ssl_context(tls["ca"]) if use_tls else None
    with listening() as lsock, loop_errors() as errors:
        port = lsock.getsockname()[1]
        if how == "wait_for":
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(
                    aioh2s.connect("127.0.0.1", port, ssl=ctx, server_hostname="localhost"), 0.2
                )
        else:
            with pytest.raises(aioh2s.ConnectError) as info:
                await asyncio.wait_for(
                    aioh2s.connect("127.0.0.1", port, ssl=ctx, server_hostname="localhost",
                                   handshake_timeout=0.2),
                    5,
                )
            msg = str(info.value)
            assert f"127.0.0.1:{port}" in msg
            assert ("TLS handshake" if use_tls else "HTTP/2 handshake") in msg, msg
            assert info.value.__cause__ is not None
        # Right away, not eventually: connect() waited for its own cleanup.
        assert not other_tasks(), other_tasks()
        got = await peer_sees_eof(lsock)
        if not use_tls:
            assert got.startswith(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        assert_nothing_leaked(errors)


@pytest.mark.parametrize("how", ["wait_for", "handshake_timeout"])
async def test_connect_given_up_after_tls_leaks_nothing(tls: dict[str, Any], how: str) -> None:
    # TLS completes, but the server never sends its SETTINGS. (1 s: time enough for the TLS
    # handshake to complete on a loaded machine, so that it is the SETTINGS wait that is cut.)
    ctx = aioh2s.client_ssl_context(tls["ca"])
    async with tls_server_without_settings(tls) as srv:
        with loop_errors() as errors:
            port = srv["port"]
            if how == "wait_for":
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(aioh2s.connect("127.0.0.1", port, ssl=ctx), 1.0)
            else:
                with pytest.raises(aioh2s.ConnectError, match="HTTP/2 handshake") as info:
                    await asyncio.wait_for(
                        aioh2s.connect("127.0.0.1", port, ssl=ctx, handshake_timeout=1.0), 5
                    )
                assert isinstance(info.value.__cause__, aioh2s.ConnectionClosed)
            assert not other_tasks(*srv["tasks"]), other_tasks(*srv["tasks"])
            await asyncio.wait_for(srv["eof"].wait(), 3)
            assert_nothing_leaked(errors)


async def test_connect_cancelled_twice_still_cleans_up() -> None:
    # A second cancel() while connect() is cleaning up after the first must not cut the
    # cleanup short; the cancellation still propagates.
    with listening() as lsock, loop_errors() as errors:
        port = lsock.getsockname()[1]
        task = asyncio.ensure_future(aioh2s.connect("127.0.0.1", port))
        await asyncio.sleep(0.1)  # connected, waiting for SETTINGS
        assert not task.done()
        task.cancel()
        await asyncio.sleep(0)  # connect() is now in its cleanup
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
        assert task.cancelled()
        assert not other_tasks(), other_tasks()
        await peer_sees_eof(lsock)
        assert_nothing_leaked(errors)


# -- item 11: connect()'s errors are ConnectErrors that say what failed ------------------------


async def test_connect_refused_is_a_connect_error() -> None:
    # Bound but not listening: refused, and no parallel test can take the port meanwhile.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        with pytest.raises(aioh2s.ConnectError) as info:
            await asyncio.wait_for(aioh2s.connect("127.0.0.1", port), 5)
    err = info.value
    assert isinstance(err, aioh2s.H2Error) and isinstance(err, OSError)
    assert f"127.0.0.1:{port}" in str(err) and "TCP connect" in str(err), str(err)
    assert isinstance(err.__cause__, ConnectionRefusedError)


async def test_connect_unresolvable_host_is_a_connect_error() -> None:
    with pytest.raises(aioh2s.ConnectError) as info:
        await asyncio.wait_for(aioh2s.connect("no-such-host.invalid", 80), 10)
    assert "no-such-host.invalid:80" in str(info.value)
    assert "resolve" in str(info.value)
    assert isinstance(info.value.__cause__, socket.gaierror)


async def test_connect_bad_certificate_is_a_connect_error(tls: dict[str, Any]) -> None:
    # The client trusts the system CAs only, not the test CA: verification fails.
    server = await aioh2s.start_server(
        echo_handler, "127.0.0.1", 0, ssl=aioh2s.server_ssl_context(tls["cert"], tls["key"])
    )
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(aioh2s.ConnectError) as info:
            await asyncio.wait_for(
                aioh2s.connect("127.0.0.1", port, ssl=True, server_hostname="localhost"), 5
            )
        assert f"127.0.0.1:{port}" in str(info.value) and "TLS handshake" in str(info.value)
        assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), 5)


async def test_connect_alpn_mismatch_is_a_connect_error(tls: dict[str, Any]) -> None:
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(tls["cert"], tls["key"])
    sctx.set_alpn_protocols(["http/1.1"])

    async def on_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.TimeoutError):
            await asyncio.wait_for(r.read(), 5)
        w.close()

    srv = await asyncio.start_server(on_conn, "127.0.0.1", 0, ssl=sctx)
    port = srv.sockets[0].getsockname()[1]
    try:
        with pytest.raises(aioh2s.ALPNError) as info:
            await asyncio.wait_for(
                aioh2s.connect("127.0.0.1", port, ssl=aioh2s.client_ssl_context(tls["ca"]),
                               server_hostname="localhost"),
                5,
            )
        err = info.value
        assert isinstance(err, aioh2s.ConnectError) and isinstance(err, OSError)
        assert isinstance(err, aioh2s.RemoteProtocolError)
        assert err.negotiated is None or err.negotiated == "http/1.1"
        assert f"127.0.0.1:{port}" in str(err) and "ALPN" in str(err)
    finally:
        srv.close()
        await asyncio.wait_for(srv.wait_closed(), 5)


async def test_server_closing_before_settings_is_a_connect_error() -> None:
    async def on_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.close()

    srv = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        with pytest.raises(aioh2s.ConnectError, match="HTTP/2 handshake failed") as info:
            await asyncio.wait_for(aioh2s.connect("127.0.0.1", port), 5)
        assert isinstance(info.value.__cause__, aioh2s.ConnectionClosed)
    finally:
        srv.close()
        await asyncio.wait_for(srv.wait_closed(), 5)


# -- item 9: bad input through the cleartext front door -------------------------------------


def _settings_b64(*pairs: tuple[int, int]) -> bytes:
    return base64.urlsafe_b64encode(b"".join(struct.pack("!HL", k, v) for k, v in pairs))


GOOD_SETTINGS = _settings_b64((3, 100), (4, 65535))


def upgrade_request(settings: bytes = GOOD_SETTINGS, extra: bytes = b"",
                    host: bytes = b"Host: 127.0.0.1\r\n") -> bytes:
    return (
        b"GET /up HTTP/1.1\r\n" + host
        + b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
        + b"HTTP2-Settings: " + settings + b"\r\n" + extra + b"\r\n"
    )


async def exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` on a raw socket and read everything until the server closes."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    try:
        writer.write(data)
        got = b""
        while True:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), 5)
            except ConnectionResetError:
                break
            if not chunk:
                return got
            got += chunk
        return got
    finally:
        writer.close()


def frames(data: bytes) -> list[tuple[int, int, bytes]]:
    """(type, stream id, payload) of each HTTP/2 frame in ``data``."""
    out = []
    while len(data) >= 9:
        length = int.from_bytes(data[:3], "big")
        ftype, sid = data[3], int.from_bytes(data[5:9], "big") & 0x7FFFFFFF
        out.append((ftype, sid, data[9 : 9 + length]))
        data = data[9 + length :]
    assert not data, f"trailing bytes {data!r}"
    return out


def warnings_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.WARNING]


BAD_SETTINGS = {
    "not-base64url": b"AAMA+AAB/AAQ",  # '+' and '/' are base64, not base64url
    "junk-chars": b"AAMAAABk!!",
    "bad-padding": b"AAMAAABkA",
    "not-multiple-of-6": base64.urlsafe_b64encode(b"\x00\x03\x00\x00\x00\x64\x00\x04\x00"),
    "enable-push-2": _settings_b64((2, 2)),
    "initial-window-2^31": _settings_b64((4, 2**31)),
    "max-frame-size-100": _settings_b64((5, 100)),
}


@pytest.mark.parametrize("settings", list(BAD_SETTINGS.values()), ids=list(BAD_SETTINGS))
async def test_bad_http2_settings_get_400_before_any_switch(
    caplog: pytest.LogCaptureFixture, settings: bytes
) -> None:
    caplog.set_level(logging.DEBUG)
    calls = 0

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        nonlocal calls
        calls += 1
        await echo_handler(reader, writer)

    async with serving(handler) as (_, port):
        got = await exchange(port, upgrade_request(settings))
    assert got.startswith(b"HTTP/1.1 400 "), got
    assert b"101" not in got.split(b"\r\n")[0] and b"Switching" not in got
    assert b"HTTP2-Settings" in got  # the explanation names the culprit
    assert calls == 0
    assert not warnings_logged(caplog), warnings_logged(caplog)


BAD_FIELDS = {
    "bare-lf-in-value": upgrade_request(extra=b"X-A: one\ntwo\r\n"),
    "bare-cr-in-value": upgrade_request(extra=b"X-A: one\rtwo\r\n"),
    "nul-in-value": upgrade_request(extra=b"X-A: one\x00two\r\n"),
    "bad-name-char": upgrade_request(extra=b"X@A: 1\r\n"),
    "space-in-name": upgrade_request(extra=b"X A: 1\r\n"),
    "obs-fold": upgrade_request(extra=b"X-A: 1\r\n  continued\r\n"),
    "two-hosts": upgrade_request(extra=b"Host: other.example\r\n"),
    "no-host": upgrade_request(host=b""),
    "two-content-lengths": upgrade_request(extra=b"Content-Length: 0\r\nContent-Length: 0\r\n"),
    "content-length-not-digits": upgrade_request(extra=b"Content-Length: 1_0\r\n"),
    "bare-lf-request-line": b"GET / HTTP/1.1\nHost: x\n\n",
}


@pytest.mark.parametrize("request_bytes", list(BAD_FIELDS.values()), ids=list(BAD_FIELDS))
async def test_bad_upgrade_request_fields_get_400(
    caplog: pytest.LogCaptureFixture, request_bytes: bytes
) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[Any] = []

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        seen.append(reader.headers)
        await echo_handler(reader, writer)

    async with serving(handler) as (_, port):
        got = await exchange(port, request_bytes)
    assert got.startswith(b"HTTP/1.1 400 "), got
    assert seen == []
    assert not warnings_logged(caplog), warnings_logged(caplog)


async def test_good_upgrade_still_switches_and_drops_connection_named_fields() -> None:
    seen: list[aioh2s.Headers] = []

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        seen.append(reader.headers)
        writer.send_headers({":status": "200"})
        writer.write_eof()

    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    settings = c.initiate_upgrade_connection()
    assert settings is not None
    async with serving(handler) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"GET /up HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Connection: Upgrade, HTTP2-Settings, X-Hop\r\nUpgrade: h2c\r\n"
            b"HTTP2-Settings: " + settings + b"\r\nX-Hop: 1\r\nX-Keep: 2\r\n\r\n"
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101 ")
        writer.write(c.data_to_send())
        ended = False
        while not ended:
            chunk = await asyncio.wait_for(reader.read(65536), 5)
            assert chunk
            ended = any(isinstance(ev, h2.events.StreamEnded) for ev in c.receive_data(chunk))
            writer.write(c.data_to_send())
        writer.close()
    assert seen and seen[0][":authority"] == "127.0.0.1" and seen[0][":path"] == "/up"
    assert seen[0].get("x-keep") == "2" and "x-hop" not in seen[0]


NOT_HTTP1 = {
    "h2spec-invalid-preface": b"INVALID CONNECTION PREFACE\r\n\r\n",
    "http2-version": b"GET / HTTP/2.0\r\n\r\n",
    "no-version": b"GET /\r\n\r\n",
    "lowercase-junk": b"hello world, this is not a request\r\n\r\n",
    "binary": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,
    "long-method-no-space": b"A" * 40,
}


@pytest.mark.parametrize("garbage", list(NOT_HTTP1.values()), ids=list(NOT_HTTP1))
async def test_bytes_that_are_not_http1_get_goaway_protocol_error(
    caplog: pytest.LogCaptureFixture, garbage: bytes
) -> None:
    caplog.set_level(logging.DEBUG)
    async with serving(echo_handler) as (_, port):
        got = await exchange(port, garbage)
    assert not got.startswith(b"HTTP/1."), got
    got_frames = frames(got)
    assert got_frames and got_frames[0][0] == 0x4, got_frames  # SETTINGS first
    goaways = [payload for ftype, _, payload in got_frames if ftype == 0x7]
    assert len(goaways) == 1, got_frames
    assert struct.unpack("!LL", goaways[0][:8])[1] == aioh2s.ErrorCode.PROTOCOL_ERROR
    assert not warnings_logged(caplog), warnings_logged(caplog)


async def test_plain_http1_still_gets_505() -> None:
    async with serving(echo_handler) as (_, port):
        got = await exchange(port, b"get / HTTP/1.0\r\n\r\n")  # any token is a method
    assert got.startswith(b"HTTP/1.1 505 "), got


def test_classify() -> None:
    from aioh2s import _http1 as h1

    preface = h1.PREFACE
    assert h1.classify(preface) == h1.H2
    assert h1.classify(preface[:10]) == h1.MORE
    assert h1.classify(b"GE") == h1.MORE
    assert h1.classify(b"GET /index.html HTTP/1.") == h1.MORE
    assert h1.classify(b"GET / HTTP/1.1\r") == h1.MORE
    assert h1.classify(b"GET / HTTP/1.1\r\n") == h1.HTTP1
    assert h1.classify(b"PRI * HTTP/1.1\r\n") == h1.HTTP1
    assert h1.classify(b"GET / HTTP/2") == h1.INVALID
    assert h1.classify(b"GET  / HTTP/1.1\r\n") == h1.INVALID
    assert h1.classify(b"INVALID CONNECTION PREFACE\r\n\r\n") == h1.INVALID


# -- item 10: header names and values of the wrong type --------------------------------------

WRONG_VALUES = [50_000_000, 1.5, None, True]


@pytest.mark.parametrize("value", WRONG_VALUES, ids=[type(v).__name__ for v in WRONG_VALUES])
@pytest.mark.parametrize(
    "convert",
    [
        lambda h: H.to_wire(h, H.RESPONSE),
        lambda h: H.to_wire([(n, v) for n, v in h.items()], H.RESPONSE),
        lambda h: H.to_wire({k: v for k, v in h.items() if k != ":status"}, H.TRAILERS),
        H.pairs,
        aioh2s.Headers,
    ],
    ids=["to_wire", "to_wire-pairs", "trailers", "pairs", "Headers"],
)
def test_wrong_value_type_is_a_type_error(convert: Callable[[Any], Any], value: Any) -> None:
    with pytest.raises(TypeError, match="content-length") as info:
        convert({":status": "200", "content-length": value})
    assert type(value).__name__ in str(info.value)


@pytest.mark.parametrize("name", [5, None, 1.0, ("a",)], ids=["int", "None", "float", "tuple"])
def test_wrong_name_type_is_a_type_error(name: Any) -> None:
    for convert in (lambda h: H.to_wire(h, H.TRAILERS), H.pairs, aioh2s.Headers):
        with pytest.raises(TypeError, match="header name"):
            convert([(name, "x")])


def test_bytes_like_fields_are_accepted() -> None:
    wire = H.to_wire([(bytearray(b"X-A"), memoryview(b"1")), (b"x-b", bytearray(b"2"))],
                     H.TRAILERS)
    assert wire == [(b"x-a", b"1"), (b"x-b", b"2")]
    assert aioh2s.Headers([(bytearray(b"X-A"), memoryview(b"1"))]) == [("x-a", "1")]
    assert aioh2s.Headers([("a", "1")]) != [("a", 1)]  # a comparison, not a TypeError


def test_not_a_pair_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="pairs"):
        H.to_wire([("x-a", "1", "2")], H.TRAILERS)


async def test_wrong_types_over_real_sockets_raise_before_anything_is_sent() -> None:
    errors: list[BaseException] = []
    requests = 0

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        nonlocal requests
        requests += 1
        await reader.read()
        for bad in ({":status": "200", "content-length": 50_000_000},
                    {":status": 200},
                    {":status": "200", "X Y": "1"}):
            try:
                writer.send_headers(bad)
            except (TypeError, aioh2s.ProtocolError) as e:
                errors.append(e)
        writer.send_headers({":status": "200", "content-length": "2"})
        writer.write(b"ok")
        writer.write_eof()

    async with serving(handler) as (_, port):
        client = await aioh2s.connect("127.0.0.1", port)
        try:
            with pytest.raises(TypeError, match="x-count"):
                client.request({":path": "/", "x-count": 3})
            with pytest.raises(aioh2s.LocalProtocolError, match="passed by the application"):
                client.request({":path": "/", "connection": "close"})
            async with client.request({":path": "/"}, end_stream=True) as stream:
                headers = await asyncio.wait_for(stream.response_headers(), 5)
                assert headers[":status"] == "200"
                assert headers["content-length"] == "2"
                assert await asyncio.wait_for(stream.reader.read(), 5) == b"ok"
        finally:
            await asyncio.wait_for(client.close(), 5)
    assert requests == 1  # the refused requests never reached the server
    assert [type(e) for e in errors] == [TypeError, TypeError, aioh2s.LocalProtocolError]
    assert "content-length" in str(errors[0]) and "int" in str(errors[0])
    assert "':status'" in str(errors[1])


async def test_wrong_trailer_types_over_real_sockets_leave_the_stream_usable() -> None:
    errors: list[BaseException] = []

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        body = await reader.read()
        assert reader.trailers == [("x-sent", "1")]
        writer.send_headers({":status": "200"})
        writer.write(body)
        try:
            writer.send_trailers({"x-len": len(body)})
        except TypeError as e:
            errors.append(e)
        writer.send_trailers({"x-len": str(len(body))})

    async with serving(handler) as (_, port):
        client = await aioh2s.connect("127.0.0.1", port)
        try:
            async with client.request({":method": "POST", ":path": "/"}) as stream:
                stream.writer.write(b"abc")
                with pytest.raises(TypeError, match="x-sent"):
                    stream.writer.send_trailers({"x-sent": None})
                stream.writer.send_trailers({"x-sent": "1"})
                await asyncio.wait_for(stream.response_headers(), 5)
                assert await asyncio.wait_for(stream.reader.read(), 5) == b"abc"
                assert stream.reader.trailers == [("x-len", "3")]
        finally:
            await asyncio.wait_for(client.close(), 5)
    assert len(errors) == 1 and "x-len" in str(errors[0]) and "int" in str(errors[0])


def test_wrong_type_is_quick() -> None:
    # bytes(50_000_000) used to build 50 MB of NULs before failing.
    import time

    start = time.perf_counter()
    with pytest.raises(TypeError):
        H.to_wire({":status": "200", "content-length": 10**12}, H.RESPONSE)
    assert time.perf_counter() - start < 0.5


# -- item 11: an application's bad header is a LocalProtocolError -----------------------------

LOCAL_VIOLATIONS: dict[str, tuple[Any, int, str]] = {
    "bad-name": ({":status": "200", "X Y": "1"}, H.RESPONSE, "invalid header name 'X Y'"),
    "connection-specific": ({":status": "200", "upgrade": "h2c"}, H.RESPONSE, "connection-spec"),
    "crlf-value": ({":status": "200", "x": "a\r\nb"}, H.RESPONSE, "NUL, CR or LF"),
    "empty-path": ({":method": "GET", ":scheme": "http", ":path": ""}, H.REQUEST, ":path"),
    "te": ({":status": "200", "te": "gzip"}, H.RESPONSE, "TE"),
    "pseudo-in-trailers": ({":status": "200"}, H.TRAILERS, "trailers"),
    "pseudo-after-regular": ([("x", "1"), (":status", "200")], H.RESPONSE, "after a regular"),
    "unknown-pseudo": ({":nope": "1"}, H.RESPONSE, "unknown, misplaced or repeated"),
    "no-status": ({"x": "1"}, H.RESPONSE, ":status"),
    "no-method": ({":path": "/", ":scheme": "http"}, H.REQUEST, ":method"),
    "no-path": ({":method": "GET", ":scheme": "http"}, H.REQUEST, ":scheme and :path"),
}


@pytest.mark.parametrize("case", list(LOCAL_VIOLATIONS.values()), ids=list(LOCAL_VIOLATIONS))
def test_application_header_violations_are_local(case: tuple[Any, int, str]) -> None:
    fields, kind, words = case
    with pytest.raises(aioh2s.LocalProtocolError) as info:
        H.to_wire(fields, kind)
    err = info.value
    assert isinstance(err, aioh2s.ProtocolError)
    assert not isinstance(err, aioh2s.RemoteProtocolError)
    assert "passed by the application" in str(err) and words in str(err), str(err)
