"""Exactly once, against servers that end connections on their own (tests/peers.py).

Each test sends 10,000 requests through one :class:`aioh2s.Session`, 100 at a time, to a
server that keeps ending the pool's connections: Go's x/net/http2 server (GOAWAY every N
requests, a low stream limit, an idle timeout), aioh2s's own server in a child process (GOAWAY
every N), and nghttpd killed and restarted under load. Every request must complete exactly
once or fail with a clear error, and the *server's* count decides: no id may be seen twice,
every success must be the one the server saw, and a failure that says ``retry_safe`` must be
a request the server never saw.
"""

from __future__ import annotations

import asyncio
import collections
import json
import uuid
from typing import Any

import pytest

import aioh2s
import peers

# Long runs against external servers: CI runs them once, on the newest Python (noxfile.py).
pytestmark = pytest.mark.once

N = 10_000
CONCURRENCY = 100


async def run_many(session: aioh2s.Session, url: str, n: int = N) -> tuple[
    dict[str, int], dict[str, BaseException]
]:
    """``n`` GETs of ``url`` with unique ids, ``CONCURRENCY`` at a time: (ok, failed) by id."""
    ids = [uuid.uuid4().hex for _ in range(n)]
    todo = collections.deque(ids)
    ok: dict[str, int] = {}
    failed: dict[str, BaseException] = {}

    async def worker() -> None:
        while todo:
            rid = todo.popleft()
            try:
                r = await session.fetch(url, headers={"x-request-id": rid})
            except aioh2s.H2Error as e:
                failed[rid] = e
                continue
            assert r.status == 200, (r, r.body)
            body: dict[str, Any] = r.json()
            assert body["id"] == rid
            ok[rid] = int(body["seen"])

    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(CONCURRENCY))), 240)
    assert len(ok) + len(failed) == n
    return ok, failed


def check_exactly_once(
    stats: dict[str, Any], ok: dict[str, int], failed: dict[str, BaseException]
) -> None:
    assert stats["duplicates"] == {}, stats["duplicates"]
    assert set(ok.values()) <= {1}
    honest = [rid for rid, e in failed.items() if e.retry_safe]
    # The server saw every success, and may have seen failures that were not retry-safe.
    assert len(ok) <= stats["total"] <= len(ok) + len(failed) - len(honest)
    assert len(failed) <= N // 100, collections.Counter(type(e).__name__ for e in failed.values())


@pytest.mark.parametrize("tls", [False, True], ids=["h2c", "tls"])
async def test_go_goaway_every_50_with_20_streams(tls: bool, cert_files: Any) -> None:
    with peers.go_server(certs=cert_files if tls else None, goaway_every=50, max_streams=20,
                         idle=0.5) as peer:
        opts = peer.client_options()
        async with aioh2s.Session(ssl=opts.get("ssl"), max_connections=8) as session:
            scheme = "https" if tls else "http"
            host = "localhost" if tls else "127.0.0.1"
            ok, failed = await run_many(session, f"{scheme}://{host}:{peer.port}/count")
            stats = await peer.stats()
        check_exactly_once(stats, ok, failed)
        assert stats["goaways"] >= N // 100  # the pool went through many connections


async def test_go_idle_timeout_between_bursts() -> None:
    with peers.go_server(idle=0.1, max_streams=10) as peer:
        async with aioh2s.Session(max_connections=4) as session:
            url = f"http://127.0.0.1:{peer.port}/count"
            totals: list[tuple[dict[str, int], dict[str, BaseException]]] = []
            for _ in range(5):
                totals.append(await run_many(session, url, 200))
                await asyncio.sleep(0.15)  # the server's idle timeout ends every connection
            stats = await peer.stats()
        ok = {k: v for o, _ in totals for k, v in o.items()}
        failed = {k: v for _, f in totals for k, v in f.items()}
        assert not failed, failed
        assert stats["duplicates"] == {} and stats["total"] == len(ok) == 1000


async def test_aioh2s_child_goaway_every_40() -> None:
    with peers.aioh2s_server_process(goaway_every=40, max_streams=25) as peer:
        async with aioh2s.Session(max_connections=8) as session:
            ok, failed = await run_many(session, f"http://127.0.0.1:{peer.port}/count")
            stats = await peer.stats()
        check_exactly_once(stats, ok, failed)


async def test_nghttpd_killed_under_load() -> None:
    with peers.nghttpd_server() as peer:
        async with aioh2s.Session(max_connections=4, retries=2) as session:
            url = f"http://127.0.0.1:{peer.port}/hello.txt"
            outcomes: collections.Counter[str] = collections.Counter()

            async def load() -> None:
                for _ in range(3000):
                    try:
                        r = await session.fetch(url, timeout=aioh2s.Timeouts(read=5))
                        assert r.body == b"hello from nghttpd\n"
                        outcomes["ok"] += 1
                    except aioh2s.H2Error as e:
                        outcomes[type(e).__name__] += 1

            async def killer() -> None:
                for _ in range(3):
                    await asyncio.sleep(0.3)
                    await asyncio.get_running_loop().run_in_executor(None, peer.restart)

            await asyncio.wait_for(asyncio.gather(*(load() for _ in range(4)), killer()), 240)
            # Each kill fails what was in flight (up to 4 x 100 streams): most must still pass.
            assert outcomes["ok"] >= 12000 * 0.8, outcomes
            # Connections died without GOAWAY: what was in flight failed clearly, and the pool
            # reconnected for the rest.
            assert sum(outcomes.values()) == 12000
            r = await session.fetch(url)
            assert json.dumps(r.status) == "200"
