"""Shared test helpers: a server on 127.0.0.1 with a given handler, a connected client, peers."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, NoReturn

import pytest

import aioh2s

IN_CI = os.environ.get("CI") == "true"


_EXTRA_BIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")  # nghttpd lives in /usr/sbin


def require(tool: str) -> str:
    """Return the path of ``tool``; skip if it is missing, but fail when ``CI=true``.

    Interop tests must not silently vanish in CI (issue 2, item 10): there a missing peer is an
    installation bug in ``.ci/run``, not a reason to skip.
    """
    path = shutil.which(tool) or shutil.which(tool, path=os.pathsep.join(_EXTRA_BIN_DIRS))
    if path is None:
        unavailable(f"interop peer {tool!r} is not installed (not on PATH)")
    return path


def unavailable(msg: str) -> NoReturn:
    """Skip the test because a peer (or what it needs) is missing; fail it when ``CI=true``."""
    if IN_CI:
        pytest.fail(f"{msg}; CI=true, so .ci/run must install it", pytrace=False)
    pytest.skip(msg)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pattern(n: int, seed: int = 0) -> bytes:
    """Deterministic, non-repeating-looking bytes (cheap to build, catches reordering)."""
    block = hashlib.sha256(str(seed).encode()).digest() * 2048  # 64 KiB
    reps, rest = divmod(n, len(block))
    return block * reps + block[:rest]


@contextlib.asynccontextmanager
async def serving(handler: Any, **options: Any) -> AsyncIterator[tuple[aioh2s.Server, int]]:
    server = await aioh2s.start_server(handler, "127.0.0.1", 0, **options)
    try:
        yield server, server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), 10)


@contextlib.asynccontextmanager
async def client_for(
    handler: Any, server_options: dict[str, Any] | None = None, **client_options: Any
) -> AsyncIterator[tuple[aioh2s.Client, aioh2s.Server]]:
    async with serving(handler, **(server_options or {})) as (server, port):
        client = await aioh2s.connect("127.0.0.1", port, **client_options)
        try:
            yield client, server
        finally:
            await asyncio.wait_for(client.close(), 10)


async def echo_handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
    """Echo the body back in chunks as it arrives, then trailers with its length and SHA-256."""
    writer.send_headers({":status": "200"})
    h = hashlib.sha256()
    n = 0
    async for chunk in reader:
        h.update(chunk)
        n += len(chunk)
        writer.write(chunk)
        await writer.drain()
    writer.send_trailers({"x-len": str(n), "x-sha256": h.hexdigest()})


@dataclass(frozen=True)
class Wire:
    """How a test's connections travel: ``h2c`` (cleartext) or ``tls`` (TLS with ALPN h2).

    The ``wire`` fixture (tests/conftest.py) runs a test once per kind. ``certs`` is
    conftest's ``CertFiles`` (a leaf for localhost and 127.0.0.1, and its CA) for TLS.
    """

    name: str
    certs: Any = None

    @property
    def tls(self) -> bool:
        return self.certs is not None

    def server_options(self) -> dict[str, Any]:
        """Keywords for ``aioh2s.start_server``."""
        if not self.tls:
            return {}
        return {"ssl": aioh2s.server_ssl_context(self.certs.cert, self.certs.key)}

    def client_options(self) -> dict[str, Any]:
        """Keywords for ``aioh2s.connect``."""
        if not self.tls:
            return {}
        return {"ssl": aioh2s.client_ssl_context(self.certs.ca), "server_hostname": "localhost"}

    def raw_server_ssl(self) -> ssl.SSLContext | None:
        """A plain (not aioh2s) server context offering ALPN h2, for non-aioh2s peers."""
        if not self.tls:
            return None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.certs.cert, self.certs.key)
        ctx.set_alpn_protocols(["h2"])
        return ctx

    def raw_client_options(self) -> dict[str, Any]:
        """Keywords for ``asyncio.open_connection`` by a non-aioh2s client (ALPN h2)."""
        if not self.tls:
            return {}
        ctx = ssl.create_default_context(cafile=self.certs.ca)
        ctx.set_alpn_protocols(["h2"])
        return {"ssl": ctx, "server_hostname": "localhost"}

    def serving(self, handler: Any, **options: Any) -> Any:
        return serving(handler, **self.server_options(), **options)

    def url(self, port: int, path: str = "/") -> str:
        """The URL of ``path`` on a test server of this kind (the leaf covers 127.0.0.1)."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{port}{path}"

    def session(self, **options: Any) -> aioh2s.Session:
        """An ``aioh2s.Session`` that trusts the test CA."""
        if self.tls:
            options.setdefault("ssl", aioh2s.client_ssl_context(self.certs.ca))
        return aioh2s.Session(**options)

    def client_for(
        self, handler: Any, server_options: dict[str, Any] | None = None, **client_options: Any
    ) -> Any:
        return client_for(
            handler,
            {**self.server_options(), **(server_options or {})},
            **self.client_options(),
            **client_options,
        )

    async def connect(self, port: int, **options: Any) -> aioh2s.Client:
        return await asyncio.wait_for(
            aioh2s.connect("127.0.0.1", port, **self.client_options(), **options), 10
        )

    async def open_raw(self, port: int, **options: Any) -> tuple[
        asyncio.StreamReader, asyncio.StreamWriter
    ]:
        """A plain asyncio stream to 127.0.0.1:port (TLS with ALPN h2 on a TLS wire)."""
        return await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, **self.raw_client_options(), **options),
            10,
        )
