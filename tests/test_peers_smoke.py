"""The peers of tests/peers.py work, and close connections the way its docstring says.

Each test drives one peer with the single-connection client (``aioh2s.connect``) and checks
both what the client saw (which requests completed, which failed and whether they were
``retry_safe``) and what the server counted (``/stats``): a request that failed as
``retry_safe`` must never have been processed, and no request may be processed twice.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from uuid import uuid4

import pytest

import aioh2s
from peers import (
    Peer,
    aioh2s_server,
    aioh2s_server_process,
    go_server,
    go_server_binary,
    nghttpd_server,
    pattern,
)

# Peers' behaviour, not ours across Pythons: CI runs these once, on the newest Python.
pytestmark = [pytest.mark.timeout(60), pytest.mark.once]

Result = dict[str, Any]


@pytest.fixture(params=["h2c", "tls"])
def certs(request: pytest.FixtureRequest) -> Any:
    """None for h2c, conftest's ``cert_files`` for TLS."""
    return None if request.param == "h2c" else request.getfixturevalue("cert_files")


async def count(client: aioh2s.Client, rid: str, path: str = "/count") -> Result:
    """One request to ``/count`` (or ``path``, which must answer like it) with id ``rid``."""
    async with client.request({":path": path, "x-request-id": rid}, end_stream=True) as st:
        headers = await st.response_headers()
        body = await st.reader.read()
    assert headers[":status"] == "200", (headers, body)
    result: Result = json.loads(body)
    assert result["id"] == rid
    return result


async def attempt(client: aioh2s.Client, rid: str) -> Result | aioh2s.ConnectionClosed:
    try:
        return await asyncio.wait_for(count(client, rid), 10)
    except aioh2s.ConnectionClosed as e:
        return e


async def check_counted(peer: Peer, completed: int, before: Result | None = None) -> Result:
    """The server counted exactly ``completed`` /count requests (since ``before``), once each."""
    stats = await peer.stats()
    base = before["total"] if before else 0
    assert stats["duplicates"] == {}, stats
    assert stats["total"] - base == completed, (
        f"the server processed {stats['total'] - base} requests, the client saw {completed} "
        f"complete: a failed request was processed (or one was lost): {stats}"
    )
    return stats


async def sequential_until_goaway(peer: Peer, n: int) -> aioh2s.ConnectionClosed:
    """``n + 1`` requests one after the other on one connection; the last must fail."""
    client = await peer.connect()
    try:
        for i in range(n):
            result = await asyncio.wait_for(count(client, uuid4().hex), 10)
            assert result["conn_request"] == i + 1 and result["seen"] == 1, result
        failed = await attempt(client, uuid4().hex)
        assert isinstance(failed, aioh2s.ConnectionClosed), f"request {n + 1} got {failed}"
        # The peer closes the connection on its own, and the client notices.
        await asyncio.wait_for(client.wait_closed(), 5)
        return failed
    finally:
        await asyncio.wait_for(client.close(grace=1), 5)


async def concurrent_burst(peer: Peer, n: int) -> tuple[list[Result], list[Any]]:
    """``n`` requests at once on one connection: (completed, failures)."""
    client = await peer.connect()
    try:
        results = await asyncio.wait_for(
            asyncio.gather(*(attempt(client, uuid4().hex) for _ in range(n))), 20
        )
        await asyncio.wait_for(client.wait_closed(), 5)
    finally:
        await asyncio.wait_for(client.close(grace=1), 5)
    ok = [r for r in results if isinstance(r, dict)]
    failed = [r for r in results if not isinstance(r, dict)]
    assert ok, results
    for e in failed:
        assert e.retry_safe, f"a request the peer did not process must be retry_safe: {e!r}"
    return ok, failed


# --------------------------------------------------------------------------- Go


def test_go_binary_is_cached() -> None:
    first = go_server_binary()
    assert first.is_file() and first == go_server_binary()


async def test_go_goaway_every_sequential(certs: Any) -> None:
    with go_server(certs=certs, goaway_every=5) as peer:
        failed = await sequential_until_goaway(peer, 5)
        # Go's GOAWAY arrived with (or before the end of) the 5th response: the 6th request
        # was refused before it was sent, or sent above the last stream id: not processed.
        assert isinstance(failed, aioh2s.ConnectionTerminated), repr(failed)
        assert failed.retry_safe, repr(failed)
        stats = await check_counted(peer, 5)
        assert stats["goaways"] == 1


async def test_go_goaway_every_concurrent_burst(certs: Any) -> None:
    with go_server(certs=certs, goaway_every=5) as peer:
        ok, failed = await concurrent_burst(peer, 20)
        assert len(ok) >= 5
        await check_counted(peer, len(ok))


async def test_go_max_streams_advertised_and_respected() -> None:
    with go_server(max_streams=2) as peer:
        client = await peer.connect()
        try:
            assert client._conn.h2.remote_settings.max_concurrent_streams == 2

            async def slow() -> bytes:
                async with client.request({":path": "/slow?ms=300"}, end_stream=True) as st:
                    assert (await st.response_headers())[":status"] == "200"
                    return await st.reader.read()

            start = time.monotonic()
            bodies = await asyncio.wait_for(asyncio.gather(*(slow() for _ in range(6))), 15)
            elapsed = time.monotonic() - start
        finally:
            await asyncio.wait_for(client.close(), 5)
        assert bodies == [b"slept 300 ms\n"] * 6
        assert elapsed >= 0.85, f"6 requests of 0.3 s, 2 at a time, took {elapsed:.2f} s"


async def test_go_idle_timeout_closes_connection(certs: Any) -> None:
    with go_server(certs=certs, idle=0.5) as peer:
        client = await peer.connect()
        try:
            await count(client, uuid4().hex)
            start = time.monotonic()
            await asyncio.wait_for(client.wait_closed(), 5)
            elapsed = time.monotonic() - start
            assert elapsed >= 0.4, elapsed
            assert client.is_closing()
            with pytest.raises(aioh2s.ConnectionClosed) as info:
                await count(client, uuid4().hex)
            assert info.value.retry_safe
            assert isinstance(info.value, aioh2s.ConnectionTerminated), repr(info.value)
        finally:
            await asyncio.wait_for(client.close(), 5)
        await check_counted(peer, 1)


async def test_go_max_age_closes_busy_connection() -> None:
    with go_server(max_age=0.5) as peer:
        client = await peer.connect()
        completed = 0
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                result = await attempt(client, uuid4().hex)
                if not isinstance(result, dict):
                    break
                completed += 1
                await asyncio.sleep(0.02)
            else:
                pytest.fail("the connection outlived -max-age by 10 s")
            assert result.retry_safe, repr(result)
            await asyncio.wait_for(client.wait_closed(), 5)
        finally:
            await asyncio.wait_for(client.close(), 5)
        assert completed >= 3
        await check_counted(peer, completed)


async def test_go_idle_goaway_races_requests() -> None:
    """Requests sent as the idle timeout fires: each completes once or fails retry_safe."""
    with go_server(idle=0.1) as peer:
        completed = failed = 0
        client = await peer.connect()
        try:
            for i in range(40):
                await asyncio.sleep(0.08 + (i % 5) * 0.01)  # around the idle timeout
                if client.is_closing():
                    await asyncio.wait_for(client.close(), 5)
                    client = await peer.connect()
                result = await attempt(client, uuid4().hex)
                if isinstance(result, dict):
                    completed += 1
                else:
                    failed += 1
                    assert result.retry_safe, repr(result)
        finally:
            await asyncio.wait_for(client.close(), 5)
        await check_counted(peer, completed)


# --------------------------------------------------------------------------- aioh2s


async def test_aioh2s_goaway_every_sequential(certs: Any) -> None:
    async with aioh2s_server(certs=certs, goaway_every=5) as peer:
        failed = await sequential_until_goaway(peer, 5)
        assert isinstance(failed, aioh2s.ConnectionTerminated), repr(failed)
        assert failed.retry_safe, repr(failed)
        await check_counted(peer, 5)
        assert peer.state.goaways == 1 and peer.state.total == 5


async def test_aioh2s_goaway_every_concurrent_burst(certs: Any) -> None:
    async with aioh2s_server(certs=certs, goaway_every=5) as peer:
        ok, _ = await concurrent_burst(peer, 20)
        await check_counted(peer, len(ok))


async def test_aioh2s_process_goaway_every(certs: Any) -> None:
    with aioh2s_server_process(certs=certs, goaway_every=3, max_streams=4) as peer:
        failed = await sequential_until_goaway(peer, 3)
        assert failed.retry_safe, repr(failed)
        stats = await check_counted(peer, 3)
        ok, _ = await concurrent_burst(peer, 12)
        await check_counted(peer, len(ok), stats)


async def test_aioh2s_idle_and_max_age() -> None:
    async with aioh2s_server(idle_timeout=0.3) as peer:
        client = await peer.connect()
        try:
            await count(client, uuid4().hex)
            await asyncio.wait_for(client.wait_closed(), 5)
        finally:
            await asyncio.wait_for(client.close(), 5)
    async with aioh2s_server(max_age=0.3) as peer:
        client = await peer.connect()
        try:
            await count(client, uuid4().hex)
            await asyncio.wait_for(client.wait_closed(), 5)
        finally:
            await asyncio.wait_for(client.close(), 5)
        assert peer.state.goaways == 1


async def test_echo_slow_bytes_routes() -> None:
    """The Go and aioh2s peers answer the same routes alike."""
    with go_server() as go:
        async with aioh2s_server() as ours:
            for peer in (go, ours):
                client = await peer.connect()
                try:
                    async with client.request({":method": "POST", ":path": "/echo"}) as st:
                        st.writer.write(pattern(300_000))
                        st.writer.write_eof()
                        assert (await st.response_headers())[":status"] == "200"
                        assert await st.reader.read() == pattern(300_000)
                    req = {":path": "/bytes?n=100000"}
                    async with client.request(req, end_stream=True) as st:
                        headers = await st.response_headers()
                        assert await st.reader.read() == pattern(100_000)
                    assert headers["x-conn-request"] == "2"
                    async with client.request({":path": "/count"}, end_stream=True) as st:
                        assert (await st.response_headers())[":status"] == "400"
                        await st.reader.read()
                finally:
                    await asyncio.wait_for(client.close(), 5)


# --------------------------------------------------------------------------- nghttpd


async def test_nghttpd_smoke_and_restart(certs: Any) -> None:
    with nghttpd_server(certs=certs, max_streams=3) as peer:
        client = await peer.connect()
        try:
            assert client._conn.h2.remote_settings.max_concurrent_streams == 3
            async with client.request({":path": "/1mib.bin"}, end_stream=True) as st:
                assert (await st.response_headers())[":status"] == "200"
                assert await st.reader.read() == pattern(1 << 20)
            # A POST whose body never ends: nghttpd waits for it, so the request is in
            # flight when nghttpd dies; it fails, and not as retry_safe (it was sent).
            async with client.request({":method": "POST", ":path": "/"}) as st:
                st.writer.write(b"x" * 1000)
                await st.writer.drain()
                peer.restart()
                with pytest.raises(aioh2s.ConnectionClosed) as info:
                    await asyncio.wait_for(st.response_headers(), 5)
            assert not info.value.retry_safe
            await asyncio.wait_for(client.wait_closed(), 5)
        finally:
            await asyncio.wait_for(client.close(), 5)
        headers, body = await peer.get("/hello.txt")
        assert headers[":status"] == "200" and body == b"hello from nghttpd\n"
        with pytest.raises(RuntimeError):
            await peer.stats()
