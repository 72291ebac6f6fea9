"""TLS context helpers and the ALPN check (issue 3, "TLS and ALPN"), on real sockets.

The ``ca`` and ``cert_files`` fixtures (a trustme CA and a leaf for localhost and 127.0.0.1)
live in tests/conftest.py; the TLS close and teardown paths are in tests/test_lifecycle.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
import warnings
from collections.abc import AsyncIterator
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import pytest

import aioh2s
from aioh2s._http1 import TLSFrontDoor
from aioh2s.errors import H2Error, ProtocolError
from aioh2s.tls import ALPNError, check_alpn, client_ssl_context, server_ssl_context

pytest.importorskip("trustme")


def _tls12_ciphers(ctx: ssl.SSLContext) -> list[Any]:
    return [c for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"]


def test_server_context_options(cert_files: Any) -> None:
    cert, key, _ = cert_files
    ctx = server_ssl_context(cert, key)
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert ctx.options & ssl.OP_NO_COMPRESSION
    assert ctx.options & ssl.OP_NO_RENEGOTIATION
    assert ctx.verify_mode == ssl.CERT_NONE  # a server does not ask for client certs by default
    suites = _tls12_ciphers(ctx)
    assert suites, "no TLS 1.2 suite left at all"
    for c in suites:
        # RFC 9113 Appendix A blocks every non-ephemeral and every non-AEAD TLS 1.2 suite.
        assert c["kea"] == "kx-ecdhe", c["name"]
        assert c["aead"], c["name"]


def test_client_context_options(cert_files: Any) -> None:
    _, _, ca_path = cert_files
    ctx = client_ssl_context(ca_path)
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert ctx.options & ssl.OP_NO_COMPRESSION
    assert ctx.options & ssl.OP_NO_RENEGOTIATION
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert all(c["kea"] == "kx-ecdhe" and c["aead"] for c in _tls12_ciphers(ctx))
    insecure = client_ssl_context(verify=False)
    assert insecure.verify_mode == ssl.CERT_NONE and not insecure.check_hostname


def test_password_protected_key(ca: Any, tmp_path: Any) -> None:
    from cryptography.hazmat.primitives import serialization

    leaf = ca.issue_cert("localhost")
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), password=None)
    enc = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"s3cret"),
    )
    (tmp_path / "k.pem").write_bytes(enc)
    (tmp_path / "c.pem").write_bytes(leaf.cert_chain_pems[0].bytes())
    server_ssl_context(tmp_path / "c.pem", tmp_path / "k.pem", password="s3cret")
    with pytest.raises(ssl.SSLError):
        server_ssl_context(tmp_path / "c.pem", tmp_path / "k.pem", password="wrong")


async def _handshake(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    """TLS handshake over a real 127.0.0.1 socket; return (client, server) SSL objects."""
    got: asyncio.Future[ssl.SSLObject] = asyncio.get_running_loop().create_future()

    async def on_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        got.set_result(w.get_extra_info("ssl_object"))
        await r.read()  # until the client closes
        w.close()

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        r, w = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=client_ctx, server_hostname="localhost"),
            5,
        )
        client_obj = w.get_extra_info("ssl_object")
        server_obj = await asyncio.wait_for(got, 5)
        w.close()
        await w.wait_closed()
        return client_obj, server_obj
    finally:
        server.close()
        await server.wait_closed()


async def test_handshake_selects_h2(cert_files: Any) -> None:
    cert, key, ca_path = cert_files
    client_obj, server_obj = await _handshake(
        server_ssl_context(cert, key), client_ssl_context(ca_path)
    )
    assert client_obj.selected_alpn_protocol() == "h2"
    assert server_obj.selected_alpn_protocol() == "h2"
    check_alpn(client_obj)
    check_alpn(server_obj)
    assert client_obj.version() in ("TLSv1.2", "TLSv1.3")


async def test_tls12_handshake_uses_ecdhe_aead(cert_files: Any) -> None:
    cert, key, ca_path = cert_files
    client_ctx = client_ssl_context(ca_path)
    client_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    client_obj, _ = await _handshake(server_ssl_context(cert, key), client_ctx)
    assert client_obj.version() == "TLSv1.2"
    cipher = client_obj.cipher()
    assert cipher is not None
    name = cipher[0]
    assert name.startswith("ECDHE-") and ("GCM" in name or "CHACHA20" in name), name
    check_alpn(client_obj)


async def test_blocklisted_tls12_suite_is_refused(cert_files: Any) -> None:
    cert, key, ca_path = cert_files
    # AES128-GCM-SHA256: AEAD but static RSA key exchange, on the RFC 9113 blocklist.
    client_ctx = ssl.create_default_context(cafile=ca_path)
    client_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    client_ctx.set_ciphers("AES128-GCM-SHA256:AES256-SHA")
    client_ctx.set_alpn_protocols(["h2"])
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await _handshake(server_ssl_context(cert, key), client_ctx)


async def test_tls11_is_refused(cert_files: Any) -> None:
    cert, key, ca_path = cert_files

    def tls11_client() -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(ca_path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        # OpenSSL 3 refuses TLS < 1.2 below security level 0 on its own: lower it so
        # that the refusal we observe is the server context's.
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        return ctx

    # Control: a permissive server does complete a TLS 1.1 handshake with this client.
    permissive = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    permissive.load_cert_chain(cert, key)
    permissive.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        permissive.minimum_version = ssl.TLSVersion.TLSv1
    try:
        client_obj, _ = await _handshake(permissive, tls11_client())
    except (ssl.SSLError, ConnectionError):
        pytest.skip("this OpenSSL build cannot speak TLS 1.1 at all")
    assert client_obj.version() == "TLSv1.1"
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await _handshake(server_ssl_context(cert, key), tls11_client())


async def test_client_offering_only_http11_fails_check_alpn(
    cert_files: Any,
) -> None:
    cert, key, ca_path = cert_files
    client_ctx = client_ssl_context(ca_path)
    client_ctx.set_alpn_protocols(["http/1.1"])
    client_obj, server_obj = await _handshake(server_ssl_context(cert, key), client_ctx)
    # No common protocol: OpenSSL finishes the handshake without ALPN; both ends must refuse.
    for obj in (client_obj, server_obj):
        with pytest.raises(ALPNError) as info:
            check_alpn(obj)
        assert info.value.negotiated is None
        assert "no ALPN protocol" in str(info.value) and "h2" in str(info.value)


async def test_server_selecting_http11_names_it(cert_files: Any) -> None:
    cert, key, ca_path = cert_files
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    server_ctx.set_alpn_protocols(["http/1.1"])
    client_ctx = client_ssl_context(ca_path)
    client_ctx.set_alpn_protocols(["h2", "http/1.1"])
    client_obj, _ = await _handshake(server_ctx, client_ctx)
    with pytest.raises(ALPNError) as info:
        check_alpn(client_obj)
    err = info.value
    assert err.negotiated == "http/1.1"
    assert "'http/1.1'" in str(err)
    assert isinstance(err, ProtocolError) and isinstance(err, H2Error)


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=str)
async def test_aioh2s_round_trip(cert_files: Any, version: ssl.TLSVersion) -> None:
    """aioh2s on both sides over TLS 1.2 and 1.3: ALPN h2 on both ends, the body both ways,
    and a close that logs nothing and leaks nothing (tests/conftest.py checks)."""
    cert, key, ca_path = cert_files
    seen: list[tuple[str | None, str | None]] = []

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        obj = writer.get_extra_info("ssl_object")
        seen.append((obj.version(), obj.selected_alpn_protocol()))
        body = await reader.read()
        writer.send_headers({":status": "200"})
        writer.write(body[::-1])
        writer.write_eof()

    server = await aioh2s.start_server(
        handler, "127.0.0.1", 0, ssl=server_ssl_context(cert, key)
    )
    port = server.sockets[0].getsockname()[1]
    try:
        client_ctx = client_ssl_context(ca_path)
        client_ctx.minimum_version = client_ctx.maximum_version = version
        client = await asyncio.wait_for(
            aioh2s.connect("127.0.0.1", port, ssl=client_ctx, server_hostname="localhost"), 10
        )
        try:
            obj = client.get_extra_info("ssl_object")
            assert obj.selected_alpn_protocol() == "h2"
            assert obj.version() == version.name.replace("_", ".")
            async with client.request({":method": "POST"}) as stream:
                stream.writer.write(b"over tls")
                stream.writer.write_eof()
                assert (await asyncio.wait_for(stream.response_headers(), 5))[":status"] == "200"
                assert await asyncio.wait_for(stream.reader.read(), 5) == b"slt revo"
        finally:
            await asyncio.wait_for(client.close(), 5)
        assert seen == [(version.name.replace("_", "."), "h2")]
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), 10)


# -- the TLS front door: a client whose ALPN selected nothing --------------------------------


async def _tls_talk(
    port: int, ca: str, alpn: list[str] | None, send: bytes, done: Any = None
) -> bytes:
    """Connect with ALPN ``alpn`` (None: offer none), send ``send``, read until closed.

    ``done(chunk)``, when given, ends the reading early once it returns True.
    """
    ctx = ssl.create_default_context(cafile=ca)
    if alpn is not None:
        ctx.set_alpn_protocols(alpn)
    got = b""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname="localhost"
    )
    try:
        assert writer.get_extra_info("ssl_object").selected_alpn_protocol() != "h2"
        writer.write(send)
        while True:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), 5)
            except (ConnectionError, ssl.SSLError):
                break
            if not chunk:
                break
            got += chunk
            if done is not None and done(chunk):
                break
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()
    return got


@contextlib.asynccontextmanager
async def _tls_server(
    cert_files: Any, server_alpn: list[str] | None = None, **options: Any
) -> AsyncIterator[int]:
    """Our TLS server (ALPN ``server_alpn``, default h2 only) answering ``_hello``: its port."""
    cert, key, _ = cert_files
    sctx = server_ssl_context(cert, key)
    if server_alpn is not None:
        sctx.set_alpn_protocols(server_alpn)
    server = await aioh2s.start_server(_hello, "127.0.0.1", 0, ssl=sctx, **options)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), 10)


async def _tls_exchange(
    cert_files: Any, alpn: list[str] | None, send: bytes, caplog: pytest.LogCaptureFixture,
    done: Any = None, server_alpn: list[str] | None = None,
) -> tuple[bytes, list[logging.LogRecord]]:
    """One connection to a new server (see ``_tls_talk``); what it got, aioh2s's records."""
    caplog.set_level(logging.INFO, logger="aioh2s")
    async with _tls_server(cert_files, server_alpn) as port:
        got = await _tls_talk(port, cert_files.ca, alpn, send, done)
    return got, [r for r in caplog.records if r.name == "aioh2s"]


async def _hello(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
    writer.send_headers({":status": "200"})
    writer.write(b"hello over TLS")
    writer.write_eof()


@pytest.mark.parametrize("alpn", [["http/1.1"], None], ids=["http/1.1", "no-alpn"])
async def test_http11_over_tls_gets_505_and_an_info_record(
    cert_files: Any, alpn: list[str] | None, caplog: pytest.LogCaptureFixture
) -> None:
    # curl -k --http1.1 https://... used to get an empty reply and the server said nothing.
    request = b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: curl\r\n\r\n"
    got, records = await _tls_exchange(cert_files, alpn, request, caplog)
    head, _, body = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 505 HTTP Version Not Supported\r\n"), got
    assert b"Connection: close" in head
    assert body == (
        b"This server speaks HTTP/2 only: offer ALPN h2 in the TLS handshake"
        b" (curl --http2, or any HTTP/2 client).\n"
    )
    (record,) = records
    assert record.levelno == logging.INFO
    message = record.getMessage()
    assert "127.0.0.1" in message and "ALPN h2" in message and "505" in message


async def test_h2c_upgrade_over_tls_is_not_an_upgrade(
    cert_files: Any, caplog: pytest.LogCaptureFixture
) -> None:
    request = (
        b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"
    )
    got, _ = await _tls_exchange(cert_files, ["http/1.1"], request, caplog)
    assert got.startswith(b"HTTP/1.1 505 "), got


async def test_malformed_http11_over_tls_gets_400(
    cert_files: Any, caplog: pytest.LogCaptureFixture
) -> None:
    got, records = await _tls_exchange(
        cert_files, None, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", caplog
    )
    assert got.startswith(b"HTTP/1.1 400 Bad Request"), got
    assert records and records[0].levelno == logging.INFO and "400" in records[0].getMessage()


async def test_http2_preface_without_alpn_is_served(
    cert_files: Any, caplog: pytest.LogCaptureFixture
) -> None:
    h2conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    h2conn.initiate_connection()
    h2conn.send_headers(
        1, [(":method", "GET"), (":scheme", "https"), (":authority", "localhost"),
            (":path", "/")], end_stream=True,
    )
    events: list[Any] = []

    def ended(chunk: bytes) -> bool:
        events.extend(h2conn.receive_data(chunk))
        return any(isinstance(e, h2.events.StreamEnded) for e in events)

    _, records = await _tls_exchange(cert_files, None, h2conn.data_to_send(), caplog, ended)
    data = b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))
    assert data == b"hello over TLS"
    assert all(r.levelno < logging.INFO for r in records)


async def test_garbage_without_alpn_gets_goaway(
    cert_files: Any, caplog: pytest.LogCaptureFixture
) -> None:
    got, records = await _tls_exchange(cert_files, None, b"\x16\x03\x01 garbage\r\n", caplog)
    h2conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    h2conn.initiate_connection()
    events = h2conn.receive_data(got)
    (goaway,) = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    assert goaway.error_code == h2.errors.ErrorCodes.PROTOCOL_ERROR
    assert records and records[0].levelno == logging.INFO
    assert "neither HTTP/2 nor HTTP/1.x" in records[0].getMessage()


async def test_client_selecting_http11_gets_the_505_too(
    cert_files: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # A server context of the application's own that also offers http/1.1: ALPN selected
    # it, and the client's HTTP/1.1 request gets the 505 that says why, as without ALPN.
    request = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
    got, records = await _tls_exchange(cert_files, ["http/1.1"], request, caplog,
                                       server_alpn=["h2", "http/1.1"])
    assert got.startswith(b"HTTP/1.1 505 HTTP Version Not Supported\r\n"), got
    (record,) = records
    assert record.levelno == logging.INFO
    message = record.getMessage()
    assert "ALPN selected 'http/1.1'" in message and "505" in message


async def test_client_selecting_another_protocol_is_closed_with_a_reason(
    cert_files: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # ALPN selected a protocol that is neither h2 nor HTTP/1.1: nothing to answer in it.
    got, records = await _tls_exchange(cert_files, ["x-other"], b"hello?", caplog,
                                       server_alpn=["h2", "x-other"])
    assert got == b""
    (record,) = records
    assert record.levelno == logging.INFO
    message = record.getMessage()
    assert "'x-other'" in message and "from 127.0.0.1:" in message


async def test_front_door_records_are_throttled_with_a_count(
    cert_files: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A flood of HTTP/1.1 clients must not flood the log: one record per interval, and the
    # next one counts those left out (as the max_connections refusals do).
    monkeypatch.setattr(TLSFrontDoor, "INTERVAL", 1.0)
    caplog.set_level(logging.INFO, logger="aioh2s")
    request = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
    async with _tls_server(cert_files) as port:
        talks = [_tls_talk(port, cert_files.ca, ["http/1.1"], request) for _ in range(20)]
        answers = await asyncio.gather(*talks)
        assert all(a.startswith(b"HTTP/1.1 505 ") for a in answers)
        first = [r.getMessage() for r in caplog.records if r.name == "aioh2s"]
        await asyncio.sleep(1.1)
        await _tls_talk(port, cert_files.ca, None, request)
    messages = [r.getMessage() for r in caplog.records if r.name == "aioh2s"]
    assert len(first) == 1 and "more TLS connection" not in first[0], first
    assert len(messages) == 2, messages
    assert "(19 more TLS connection(s) refused like this since the last such record" in (
        messages[1]
    )
    # The peer reads host:port, as in aioh2s's other messages, not a tuple.
    assert re.search(r"closing TLS connection from 127\.0\.0\.1:\d+: ", messages[1])


async def test_handshake_timeout_in_an_http11_head_is_not_blamed_on_the_client(
    cert_files: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aioh2s")
    async with _tls_server(cert_files, handshake_timeout=0.5) as port:
        # The head's end never comes: the handshake timeout closes the connection.
        got = await _tls_talk(port, cert_files.ca, None, b"GET / HTTP/1.1\r\nHost: x\r\n")
        assert got == b""
        # And one whose request line never ends.
        got = await _tls_talk(port, cert_files.ca, ["http/1.1"], b"GET /slow")
    messages = [r.getMessage() for r in caplog.records if r.name == "aioh2s"]
    assert len(messages) == 1, messages  # the second was throttled
    assert "closed in" not in messages[0]
    assert messages[0].endswith(
        "its HTTP/1.x request head was still incomplete when the server closed the"
        " connection: handshake timed out: no preface/SETTINGS from the peer within 0.5 s"
    ), messages[0]


async def test_handshake_timeout_in_an_http11_request_line_says_so(
    cert_files: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aioh2s")
    async with _tls_server(cert_files, handshake_timeout=0.5) as port:
        assert await _tls_talk(port, cert_files.ca, None, b"GET /slow") == b""
    (message,) = [r.getMessage() for r in caplog.records if r.name == "aioh2s"]
    assert "what looked like its HTTP/1.x request line was still incomplete when the server" \
        " closed the connection: handshake timed out" in message, message


async def test_a_failed_handshake_does_not_hold_up_wait_closed(cert_files: Any) -> None:
    # 3.10 to 3.12 keep a failed handshake's protocol alive in a reference cycle for a while:
    # wait_closed() took it for a handshake under way and waited first_request_wait for it.
    cert, key, _ = cert_files
    server = await aioh2s.start_server(_nothing, "127.0.0.1", 0, first_request_wait=3.0,
                                       ssl=aioh2s.server_ssl_context(cert, key))
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\0" * 100)  # no ClientHello
    assert await asyncio.wait_for(reader.read(), 5) == b""  # the handshake failed
    writer.close()
    await writer.wait_closed()
    loop = asyncio.get_running_loop()
    started = loop.time()
    server.close()
    await asyncio.wait_for(server.wait_closed(), 10)
    assert loop.time() - started < 1.0


async def _nothing(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
    writer.send_headers({":status": "204"}, end_stream=True)
