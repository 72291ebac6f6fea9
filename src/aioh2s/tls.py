"""TLS contexts that meet RFC 9113 §9.2, and the ALPN check that guards every TLS connection.

Theory of operation: HTTP/2 over TLS is negotiated with ALPN (RFC 7301): the client offers
``h2`` in its ClientHello and the server selects it. Nothing in a TLS handshake forces the two
to agree, so after the handshake the connection layer calls :func:`check_alpn`, which raises
:class:`ALPNError` naming what was (or was not) selected instead of letting an HTTP/2 preface
meet an HTTP/1.1 peer and fail in some garbled way later.

RFC 9113 §9.2 adds requirements on the TLS layer itself, which the two context factories
apply so that callers do not have to know them:

- TLS 1.2 or later (§9.2);
- no TLS compression (§9.2.1; CRIME) and no renegotiation (§9.2.1; renegotiation would also
  let a peer change identity mid-connection);
- for TLS 1.2, only ephemeral key exchange with AEAD ciphers (§9.2.2 and the Appendix A
  blocklist, which lists every non-ephemeral and every non-AEAD suite). We allow exactly
  ECDHE with AES-GCM or ChaCha20-Poly1305. TLS 1.3 suites are all acceptable and OpenSSL
  configures them separately, so they are left at their defaults;
- SNI (§9.2): the client context verifies the hostname by default, and ``asyncio`` sends the
  ``server_hostname`` as SNI.
"""

from __future__ import annotations

import os
import ssl
from typing import Union

from aioh2s.errors import ALPNError

__all__ = ["ALPN_PROTOCOL", "ALPNError", "check_alpn", "client_ssl_context", "server_ssl_context"]

#: The ALPN protocol id of HTTP/2 over TLS (RFC 9113 §3.2).
ALPN_PROTOCOL = "h2"

# ECDHE key exchange (either certificate type) with an AEAD cipher: every TLS 1.2 suite that
# survives RFC 9113 Appendix A. Excluding aNULL keeps anonymous (unauthenticated) suites out.
_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!PSK:!SRP"

# OP_NO_RENEGOTIATION needs OpenSSL 1.1.0h+; on older builds the constant is missing and TLS
# 1.2 renegotiation cannot be switched off from Python (TLS 1.3 has no renegotiation at all).
_OP_NO_RENEGOTIATION: int = getattr(ssl, "OP_NO_RENEGOTIATION", 0)

_PathLike = Union[str, "os.PathLike[str]"]


def _harden(ctx: ssl.SSLContext) -> ssl.SSLContext:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | _OP_NO_RENEGOTIATION
    ctx.set_ciphers(_TLS12_CIPHERS)
    ctx.set_alpn_protocols([ALPN_PROTOCOL])
    return ctx


def server_ssl_context(
    certfile: _PathLike,
    keyfile: _PathLike | None,
    *,
    password: str | bytes | None = None,
) -> ssl.SSLContext:
    """Build a server :class:`ssl.SSLContext` for HTTP/2: ALPN ``h2`` and RFC 9113 §9.2.

    *certfile* is a PEM file with the certificate (and any intermediates after it); *keyfile*
    the PEM private key, or ``None`` when it is in *certfile*; *password* decrypts an
    encrypted key. Pass the result as ``start_server(..., ssl=ctx)``.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certfile, keyfile, password)
    # The server picks the suite: prefer its order, which puts the strongest AEAD first.
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    return _harden(ctx)


def client_ssl_context(cafile: _PathLike | None = None, *, verify: bool = True) -> ssl.SSLContext:
    """Build a client :class:`ssl.SSLContext` for HTTP/2: ALPN ``h2`` and RFC 9113 §9.2.

    Certificates are checked against *cafile* (PEM) when given, else the system's trust
    store. ``verify=False`` skips certificate and hostname checks (testing only: it lets
    anyone impersonate the server). Pass the result as ``connect(..., ssl=ctx)``.
    """
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return _harden(ctx)


def check_alpn(ssl_object: ssl.SSLObject | ssl.SSLSocket, peer: str | None = None) -> None:
    """Raise :class:`ALPNError` unless the finished TLS handshake selected ALPN ``h2``.

    *ssl_object* is what ``transport.get_extra_info("ssl_object")`` returns (an
    :class:`ssl.SSLSocket` works too). Call it on both sides right after the handshake.
    *peer* (``"host:port"``), when given, is named in the error's message.
    """
    negotiated = ssl_object.selected_alpn_protocol()
    if negotiated != ALPN_PROTOCOL:
        raise ALPNError(negotiated, peer)
