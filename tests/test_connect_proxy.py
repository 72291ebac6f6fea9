"""The CONNECT proxy of examples/connect_proxy.py, end to end on 127.0.0.1.

Each test runs an HTTP/2 client, the proxy (an aioh2s server, over h2c and TLS: the ``wire``
fixture) and a TCP target on real sockets. They check that bytes cross both ways and that
half-closes pass through (END_STREAM ↔ FIN). Resets pass through too: a target's TCP reset
becomes RST_STREAM(CONNECT_ERROR), and a reset stream becomes a TCP reset at the target.
Backpressure holds with a slow side: while the target (or the client) reads nothing, the
other end can push only a bounded number of bytes, whatever it offers. The bound is the sum
of the buffers on the way: the stream window, the writers' high-water marks, the kernel's
socket buffers (kept small here, as Linux autotunes them to megabytes on loopback). And
every buffer of the proxy stays within its limit. A peer nobody here wrote also goes
through the proxy: Go's ``net/http`` client (tests/interop/go_connect_client.go, built in
GOPATH mode; a missing Go skips locally and fails under ``CI=true``). The example's command
line (``client`` and ``demo``) runs as a subprocess.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import socket
import sys
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from h2.errors import ErrorCodes as E

import aioh2s
from helpers import pattern
from peers import go_binary

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))

import connect_proxy  # noqa: E402

pytestmark = pytest.mark.timeout(90)

KiB = 1024
MiB = 1024 * KiB
SMALL_BUF = 32 * KiB  # SO_SNDBUF/SO_RCVBUF of the TCP legs (the kernel doubles it)
WINDOW = 256 * KiB  # the stream window on both HTTP/2 ends


class Target:
    """A TCP server standing in for the tunnel's target (``mode``: what it does).

    ``echo`` sends back what it reads and closes after EOF; ``sink`` reads (once ``go`` is
    set) and counts, closing after EOF; ``flood`` sends ``flood`` bytes as fast as the
    connection takes them, then closes; ``reset`` reads ``reset_after`` bytes and resets.
    Accepted sockets get small kernel buffers, so what the test measures is ours.
    """

    def __init__(self, mode: str, *, flood: int = 0, reset_after: int = 1) -> None:
        self.mode = mode
        self.flood = flood
        self.reset_after = reset_after
        self.go = asyncio.Event()
        self.read = 0
        self.sha = hashlib.sha256()
        self.pushed = 0  # flood: bytes whose drain() returned
        self.errors: list[BaseException] = []
        self.ended = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Target:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUF)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUF)
        sock.bind(("127.0.0.1", 0))
        self.server = await asyncio.start_server(self._serve, sock=sock)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    @property
    def authority(self) -> str:
        assert self.server is not None
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self.mode == "flood":
                block = pattern(64 * KiB)
                while self.pushed < self.flood:
                    writer.write(block[: self.flood - self.pushed])
                    await writer.drain()
                    self.pushed += min(len(block), self.flood - self.pushed)
            elif self.mode == "reset":
                await reader.readexactly(self.reset_after)
                connect_proxy.abort_tcp(writer)
                return
            else:
                if self.mode == "sink":
                    await self.go.wait()
                while data := await reader.read(64 * KiB):
                    self.read += len(data)
                    self.sha.update(data)
                    if self.mode == "echo":
                        writer.write(data)
                        await writer.drain()
            writer.close()
            await writer.wait_closed()
        except (OSError, asyncio.IncompleteReadError) as e:
            self.errors.append(e)
            writer.close()
        finally:
            self.ended.set()


class Legs:
    """The proxy's ``connect``: TCP connections with small kernel buffers, kept for checks."""

    def __init__(self) -> None:
        self.writers: list[asyncio.StreamWriter] = []

    async def __call__(self, host: str, port: int) -> tuple[Any, Any]:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUF)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUF)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, (host, port))
        except BaseException:
            sock.close()
            raise
        reader, writer = await asyncio.open_connection(sock=sock)
        self.writers.append(writer)
        return reader, writer


@contextlib.asynccontextmanager
async def proxied(
    wire: Any, proxy: connect_proxy.ConnectProxy | None = None, **client_options: Any
) -> AsyncIterator[tuple[aioh2s.Client, aioh2s.Server, connect_proxy.ConnectProxy]]:
    proxy = proxy or connect_proxy.ConnectProxy(connect=Legs())
    server = await connect_proxy.start_proxy(proxy=proxy, stream_window=WINDOW,
                                             **wire.server_options())
    try:
        client = await wire.connect(server.sockets[0].getsockname()[1], **client_options)
        try:
            yield client, server, proxy
        finally:
            await asyncio.wait_for(client.close(grace=2), 10)
    finally:
        server.close(grace=2)
        await asyncio.wait_for(server.wait_closed(), 10)


def proxy_stream(server: aioh2s.Server) -> Any:
    """The proxy's one open tunnel stream (aioh2s internals, for the memory checks)."""
    streams = [s for c in server._connections for s in c.conn.streams.values()]
    assert len(streams) == 1, streams
    return streams[0]


async def settle(read: Any, quiet: float = 0.3, limit: float = 10.0) -> int:
    """Wait until ``read()`` stopped changing for ``quiet`` seconds; return its value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    last, since = read(), loop.time()
    while loop.time() < deadline:
        await asyncio.sleep(0.05)
        now = read()
        if now != last:
            last, since = now, loop.time()
        elif loop.time() - since >= quiet:
            return int(now)
    raise AssertionError(f"still moving after {limit} s: {last}")


# -- bytes both ways ---------------------------------------------------------------------------


async def test_echo_through_the_proxy(wire: Any) -> None:
    data = pattern(3 * MiB + 5, seed=1)
    async with Target("echo") as target, proxied(wire) as (client, _server, proxy):
        answer = await connect_proxy.send_through(client, target.authority, data)
        assert answer == data
        assert proxy.opened == 1
        await asyncio.wait_for(target.ended.wait(), 5)
        assert target.read == len(data) and not target.errors
        for _ in range(100):  # the handler returns once both directions ended
            if not proxy.open:
                break
            await asyncio.sleep(0.01)
        assert proxy.open == 0


async def test_half_close_passes_through(wire: Any) -> None:
    async with Target("echo") as target, proxied(wire) as (client, _server, _proxy):
        async with client.connect_tunnel(target.authority) as t:
            assert (await t.response_headers())[":status"] == "200"
            t.writer.write(b"one")
            assert await t.reader.readexactly(3) == b"one"  # a conversation, not a body
            t.writer.write(b"two")
            t.writer.write_eof()  # FIN to the target, which answers and closes (FIN back)
            assert await t.reader.read() == b"two"
            assert t.reader.at_eof()


@pytest.mark.parametrize("how, status", [
    ("get", "405"), ("extended", "501"), ("not-allowed", "403"), ("refused", "502"),
    ("timeout", "504"),
])
async def test_requests_the_proxy_does_not_tunnel(wire: Any, how: str, status: str) -> None:
    async def slow(host: str, port: int) -> Any:
        await asyncio.sleep(10)

    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, not listening: connecting is refused
    port = closed.getsockname()[1]
    proxy = connect_proxy.ConnectProxy(
        allow=lambda host, port: how != "not-allowed",
        connect=slow if how == "timeout" else None, connect_timeout=0.2,
    )
    try:
        server = await connect_proxy.start_proxy(proxy=proxy, enable_connect_protocol=True,
                                                 **wire.server_options())
        client = await wire.connect(server.sockets[0].getsockname()[1])
        if how == "get":
            req = client.request({":path": "/"}, end_stream=True)
        elif how == "extended":
            req = client.request({":method": "CONNECT", ":protocol": "websocket"})
        else:
            req = client.connect_tunnel(f"127.0.0.1:{port}")
        async with req as st:
            headers = await st.response_headers()
            assert headers[":status"] == status, await st.reader.read()
            assert await st.reader.read()  # a reason, in words
        if how not in ("get", "extended"):  # what the example's client makes of it
            with pytest.raises(ConnectionRefusedError, match=status):
                await connect_proxy.send_through(client, f"127.0.0.1:{port}", b"x")
        await client.close(grace=1)
        server.close()
        await server.wait_closed()
    finally:
        closed.close()


def test_parse_authority() -> None:
    assert connect_proxy.parse_authority("a.example:443") == ("a.example", 443)
    assert connect_proxy.parse_authority("[::1]:80") == ("::1", 80)
    for bad in ("a.example", "a.example:", "a:b", "u@a:1", "a:1/x", "", ":80", "a:99999"):
        assert connect_proxy.parse_authority(bad) is None, bad


# -- resets, both ways -------------------------------------------------------------------------


async def test_target_reset_becomes_connect_error(wire: Any) -> None:
    async with Target("reset", reset_after=5) as target, proxied(wire) as (client, _, _p):
        async with client.connect_tunnel(target.authority) as t:
            assert (await t.response_headers())[":status"] == "200"
            t.writer.write(b"hello, then reset")
            with pytest.raises(aioh2s.StreamReset) as info:
                await asyncio.wait_for(t.reader.read(), 5)
            assert info.value.error_code == E.CONNECT_ERROR and info.value.remote


async def test_stream_reset_becomes_tcp_reset(wire: Any) -> None:
    async with Target("echo") as target, proxied(wire) as (client, _server, _proxy):
        async with client.connect_tunnel(target.authority) as t:
            await t.response_headers()
            t.writer.write(b"x")
            assert await t.reader.readexactly(1) == b"x"
            t.writer.reset()  # RST_STREAM(CANCEL)
        await asyncio.wait_for(target.ended.wait(), 5)
        assert [type(e) for e in target.errors] == [ConnectionResetError]


async def test_proxy_shutdown_resets_open_tunnels(wire: Any) -> None:
    async with Target("echo") as target, proxied(wire) as (client, server, _proxy):
        async with client.connect_tunnel(target.authority) as t:
            await t.response_headers()
            server.close(grace=0.3)
            t.writer.write(b"in grace")  # still tunnelling during the grace period
            assert await t.reader.readexactly(8) == b"in grace"
            with pytest.raises((aioh2s.StreamReset, aioh2s.ConnectionClosed)):
                await asyncio.wait_for(t.reader.read(), 5)
        await asyncio.wait_for(target.ended.wait(), 5)
        assert [type(e) for e in target.errors] == [ConnectionResetError]


async def test_client_connection_lost_resets_the_target(wire: Any) -> None:
    async with Target("echo") as target, proxied(wire) as (client, _server, _proxy):
        t = await client.connect_tunnel(target.authority)
        await t.response_headers()
        t.writer.write(b"x")
        assert await t.reader.readexactly(1) == b"x"
        client._conn.transport.abort()  # the HTTP/2 connection is gone, no GOAWAY
        await asyncio.wait_for(target.ended.wait(), 5)
        assert [type(e) for e in target.errors] == [ConnectionResetError]


# -- backpressure: a slow side stops the fast one; every buffer stays bounded ---------------------


async def test_slow_target_bounds_what_the_client_can_push(wire: Any) -> None:
    offered = 32 * MiB
    block = pattern(64 * KiB, seed=2)
    async with Target("sink") as target, proxied(wire) as (client, server, proxy):
        async with client.connect_tunnel(target.authority) as t:
            await t.response_headers()
            pushed = 0

            async def push() -> None:
                nonlocal pushed
                while pushed < offered:
                    t.writer.write(block)
                    await t.writer.drain()
                    pushed += len(block)
                t.writer.write_eof()

            tracemalloc.start()
            base = tracemalloc.get_traced_memory()[0]
            pusher = asyncio.ensure_future(push())
            try:
                stalled = await settle(lambda: pushed)  # the target reads nothing yet
                peak = tracemalloc.get_traced_memory()[1] - base
                tracemalloc.stop()
                # Client, proxy and target live in this process: together they held at most
                # a few buffers' worth while the client offered 32 MiB.
                assert peak <= 4 * MiB, f"memory peaked {peak} bytes above the start"
                s = proxy_stream(server)
                leg = proxy.connect.writers[0]  # type: ignore[attr-defined]
                # What the proxy holds: unread stream bytes within the window it granted,
                # and the TCP writer at asyncio's high-water mark plus one chunk.
                assert len(s.buf) <= WINDOW
                assert leg.transport.get_write_buffer_size() <= 64 * KiB + connect_proxy.CHUNK
                # Everything in flight: client queue (high water + a block), the window,
                # the proxy's TCP writer, two small kernel buffers (doubled, plus slack).
                bound = 320 * KiB + WINDOW + 128 * KiB + 4 * 2 * SMALL_BUF + 256 * KiB
                assert stalled <= bound, f"{stalled} bytes pushed into a stalled tunnel"
                assert not pusher.done() and target.read == 0
                target.go.set()  # the target reads again: everything arrives, in order
                await asyncio.wait_for(pusher, 60)
                assert await asyncio.wait_for(t.reader.read(), 30) == b""
            finally:
                pusher.cancel()
                tracemalloc.stop()
        await asyncio.wait_for(target.ended.wait(), 5)
    expected = hashlib.sha256()
    for _ in range(offered // len(block)):
        expected.update(block)
    assert target.read == offered and target.sha.digest() == expected.digest()


async def test_slow_client_bounds_what_the_target_can_push(wire: Any) -> None:
    offered = 32 * MiB
    async with Target("flood", flood=offered) as target, \
            proxied(wire, stream_window=WINDOW) as (client, server, proxy):
        async with client.connect_tunnel(target.authority) as t:
            await t.response_headers()
            stalled = await settle(lambda: target.pushed)  # we read nothing yet
            s = proxy_stream(server)
            cfg = aioh2s.Config()
            # The proxy's writer waits at write_high_water (drain); its TCP reader pauses
            # at twice asyncio's limit (64 KiB) plus a read.
            assert s.out_size <= cfg.write_high_water + connect_proxy.CHUNK
            bound = (64 * KiB + 64 * KiB + 4 * 2 * SMALL_BUF + 3 * 64 * KiB
                     + cfg.write_high_water + connect_proxy.CHUNK + WINDOW + 256 * KiB)
            assert stalled <= bound, f"{stalled} bytes pushed towards a client reading nothing"
            assert not target.ended.is_set()
            got = hashlib.sha256()
            n = 0
            async for chunk in t.reader:  # now read it all: nothing was lost
                got.update(chunk)
                n += len(chunk)
            t.writer.write_eof()
            await t.writer.wait_closed()
    expected = hashlib.sha256()
    for _ in range(offered // (64 * KiB)):
        expected.update(pattern(64 * KiB))
    assert n == offered and got.digest() == expected.digest()


# -- a peer nobody here wrote: Go's net/http client through the proxy -------------------------


async def go_connect(wire: Any, proxy_port: int, target: str, n: int) -> dict[str, Any]:
    binary = go_binary(ROOT / "tests" / "interop" / "go_connect_client.go")
    argv = [str(binary), "-proxy", f"127.0.0.1:{proxy_port}", "-target", target, "-n", str(n)]
    if wire.tls:
        argv += ["-ca", wire.certs.ca]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, f"{argv}: exit {proc.returncode}\n{err.decode()}"
    result: dict[str, Any] = json.loads(out)
    return result


async def test_go_client_through_the_proxy(wire: Any) -> None:
    n = 2 * MiB + 3
    proxy = connect_proxy.ConnectProxy(connect=Legs())
    async with Target("echo") as target:
        server = await connect_proxy.start_proxy(proxy=proxy, **wire.server_options())
        try:
            port = server.sockets[0].getsockname()[1]
            res = await go_connect(wire, port, target.authority, n)
            assert res["error"] == "" and res["status"] == 200, res
            assert res["proto"] == "HTTP/2.0"
            assert res["received"] == res["sent"] == n
            assert res["received_sha256"] == res["sent_sha256"]
            assert target.read == n

            async with Target("reset", reset_after=1000) as resetting:
                res = await go_connect(wire, port, resetting.authority, 1 * MiB)
            assert "CONNECT_ERROR" in res["error"], res

            closed = socket.socket()
            closed.bind(("127.0.0.1", 0))
            try:
                res = await go_connect(wire, port, f"127.0.0.1:{closed.getsockname()[1]}", 1)
            finally:
                closed.close()
            assert res["status"] == 502 and "cannot connect" in res["body"], res
        finally:
            server.close(grace=1)
            await server.wait_closed()
    assert proxy.opened == 2 and proxy.open == 0


# -- the example's command line ----------------------------------------------------------------


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"),
                                                          os.environ.get("PYTHONPATH", "")])}


async def test_command_line_client_and_demo(wire: Any) -> None:
    data = pattern(300 * KiB, seed=3)
    async with Target("echo") as target, proxied(wire) as (_client, server, _proxy):
        argv = [sys.executable, str(ROOT / "examples" / "connect_proxy.py"), "client",
                f"127.0.0.1:{server.sockets[0].getsockname()[1]}", target.authority]
        if wire.tls:
            argv += ["--ca", wire.certs.ca]
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=_env(),
        )
        out, err = await asyncio.wait_for(proc.communicate(data), 30)
        assert proc.returncode == 0, err.decode()
        assert out == data
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "examples" / "connect_proxy.py"), "demo",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=_env(),
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0 and out == b"hello, tunnel\n", err.decode()

