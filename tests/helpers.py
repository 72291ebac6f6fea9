"""Shared test helpers: a server on 127.0.0.1 with a given handler, a connected client, peers."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
from collections.abc import AsyncIterator
from typing import Any

import pytest

import aioh2s

IN_CI = os.environ.get("CI") == "true"


def require(tool: str) -> str:
    """The path of ``tool``; skip locally if missing, fail in CI (where .ci/run installs it)."""
    path = shutil.which(tool)
    if path is None:
        if IN_CI:
            pytest.fail(f"{tool} is required in CI but is not installed")
        pytest.skip(f"{tool} not installed")
    return path


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
