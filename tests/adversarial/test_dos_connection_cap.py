"""The server-wide connection cap: a real default, idle connections shed near it, refusal at it.

- ``max_connections=None`` means half the soft file-descriptor limit, at most 10,000.
- Above three quarters of the cap, each new connection makes the server gracefully close the
  connection idle longest (if idle ``idle_near_cap`` seconds): an attacker parking idle
  connections cannot crowd out clients that are doing work.
- At the cap, with nothing idle to shed, new connections are closed on accept, with one
  warning per 10 s rather than one per connection.
"""

from __future__ import annotations

import asyncio
import resource

import pytest
import rawpeer as rp
from dosharness import assert_still_serving
from h2.errors import ErrorCodes as E
from rawpeer import RawPeer

from aioh2s.config import default_max_connections

pytestmark = pytest.mark.timeout(45)


def test_the_default_cap_follows_the_descriptor_limit():
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    expected = 10_000 if soft == resource.RLIM_INFINITY else max(16, min(10_000, soft // 2))
    assert default_max_connections() == expected


async def test_default_server_cap(serve):
    srv = await serve()
    assert srv.server.max_connections == default_max_connections()


async def _handshaken(port: int) -> RawPeer:
    peer = await RawPeer.connect(port)
    await peer.handshake()
    return peer


async def test_idle_connections_are_shed_near_the_cap(serve):
    srv = await serve(max_connections=8, idle_near_cap=0.3)
    busy = await _handshaken(srv.port)
    await busy.send(busy.request(1, "/hang-headers"))
    idle = [await _handshaken(srv.port) for _ in range(5)]  # 6 of 8: at three quarters
    await asyncio.sleep(0.5)  # now all of them are idle long enough
    newcomers = []
    for _ in range(4):
        newcomers.append(await _handshaken(srv.port))
        await asyncio.sleep(0.15)  # the server scans for idle connections every 0.1 s at most
    shed = [p for p in idle if await p.closed(3.0)]
    assert len(shed) >= 2, [p.describe() for p in idle]
    for p in shed:
        assert p.goaway is not None and p.goaway.error_code == E.NO_ERROR, p.describe()
    # The order: the connections idle longest went first.
    assert shed == idle[: len(shed)]
    assert not busy.eof and busy.goaway is None and await busy.ping(), busy.describe()
    assert all(not p.eof for p in newcomers)
    assert srv.server.connections <= 8 + len(shed)
    await assert_still_serving(srv.port)
    for p in [busy, *idle, *newcomers]:
        await p.close()


@pytest.mark.expect_log("aioh2s", "WARNING", "max_connections (4) reached")
async def test_at_the_cap_new_connections_are_refused(serve):
    srv = await serve(max_connections=4, idle_near_cap=0.3)
    busy = []
    for _ in range(4):
        p = await _handshaken(srv.port)
        await p.send(p.request(1, "/hang-headers"))
        busy.append(p)
    await asyncio.sleep(0.5)
    refused = [await RawPeer.connect(srv.port) for _ in range(5)]
    for p in refused:
        assert await p.closed(3.0), p.describe()
        assert p.goaway is None  # closed on accept: not a word of HTTP/2
    assert all(not p.eof for p in busy)
    for p in busy:
        await p.send(rp.rst(1))
    for p in [*busy, *refused]:
        await p.close()
