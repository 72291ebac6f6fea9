"""TLS context helpers and the ALPN check (issue 3, "TLS and ALPN"), on real sockets.

The ``ca`` and ``cert_files`` fixtures (a trustme CA and a leaf for localhost and 127.0.0.1)
live in tests/conftest.py; the TLS close and teardown paths are in tests/test_lifecycle.py.
"""

from __future__ import annotations

import asyncio
import ssl
import warnings
from typing import Any

import pytest

import aioh2s
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
