"""aioh2s.Session: the pool per origin, safe retries, timeouts, the whole-response fetch().

Every test runs a real aioh2s server on 127.0.0.1 (``Origin`` below) whose handler can be told,
per request path, to answer, hang, refuse, reset, say GOAWAY after N requests, or hold a body
back; it counts every request it *saw* by its ``x-request-id``, so "exactly once" is checked
by the server, not by the client that might be wrong. Close paths run over h2c and TLS.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import h2.events
import h2.settings
import pytest

import aioh2s
from aioh2s import ErrorCode
from helpers import Wire
from rawh2 import RawH2Server


class Origin:
    """A test server's behaviour and what it saw."""

    def __init__(self, goaway_every: int | None = None) -> None:
        self.goaway_every = goaway_every
        self.seen: collections.Counter[str] = collections.Counter()
        self.per_conn: collections.Counter[aioh2s.ConnectionHandle] = collections.Counter()
        self.active: collections.Counter[aioh2s.ConnectionHandle] = collections.Counter()
        self.most_active = 0
        self.refusals: collections.Counter[str] = collections.Counter()
        self.release = asyncio.Event()
        self.started = 0

    async def handler(self, reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        conn = writer.connection
        h = reader.headers
        parts = urlsplit(h[":path"])
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        rid = h.get("x-request-id", "")
        self.started += 1
        if parts.path == "/refuse" and self.refusals[rid] < int(query.get("n", "1")):
            self.refusals[rid] += 1
            writer.reset(ErrorCode.REFUSED_STREAM)
            return
        self.seen[rid] += 1
        self.per_conn[conn] += 1
        self.active[conn] += 1
        self.most_active = max(self.most_active, self.active[conn])
        try:
            if self.goaway_every and self.per_conn[conn] == self.goaway_every:
                conn.close(grace=10)
            if parts.path == "/reset":
                writer.reset(int(query["code"]))
                return
            if parts.path == "/hang":
                await self.release.wait()
            elif parts.path == "/slow":
                await asyncio.sleep(float(query.get("s", "0.05")))
            elif parts.path == "/noread":
                await asyncio.sleep(30)
            body = await reader.read()
            writer.send_headers({":status": "200", "content-type": "application/json"})
            if parts.path == "/drip":
                writer.write(b"[")
                await writer.drain()
                await asyncio.sleep(float(query.get("s", "1")))
                writer.write(b"]")
            else:
                writer.write(json.dumps({"id": rid, "body": body.decode("latin-1"),
                                         "method": h[":method"], "path": h[":path"]}).encode())
            writer.send_trailers({"x-seen": str(self.seen[rid])})
        finally:
            self.active[conn] -= 1


@contextlib.asynccontextmanager
async def origin(wire: Wire, goaway_every: int | None = None, **options: Any
                 ) -> AsyncIterator[tuple[Origin, int]]:
    o = Origin(goaway_every)
    async with wire.serving(o.handler, **options) as (_server, port):
        try:
            yield o, port
        finally:
            o.release.set()


def h2c() -> Wire:
    return Wire("h2c")


# -- targets --------------------------------------------------------------------------------


async def test_url_and_header_targets_reach_the_same_origin() -> None:
    async with origin(h2c()) as (o, port), aioh2s.Session(headers={"user-agent": "t"}) as s:
        r = await s.fetch(f"http://127.0.0.1:{port}/a/b?x=1&y=2#frag", method="PUT", body=b"hi")
        assert r.status == 200 and r.json() == {
            "id": "", "body": "hi", "method": "PUT", "path": "/a/b?x=1&y=2"}
        assert r.trailers == [("x-seen", "1")]
        r2 = await s.fetch({":scheme": "http", ":authority": f"127.0.0.1:{port}", ":path": "/c"})
        assert r2.json()["path"] == "/c" and r2.json()["method"] == "GET"
        r3 = await s.fetch(f"http://127.0.0.1:{port}/j", method="POST", json={"k": [1, 2]})
        assert json.loads(r3.json()["body"]) == {"k": [1, 2]}
        assert len(s.connections()) == 1  # one origin, one connection


@pytest.mark.parametrize("url", [
    "ftp://127.0.0.1/x", "http:///x", "http://u:p@127.0.0.1/", "http://127.0.0.1:99999/",
])
async def test_bad_urls_raise_before_anything_is_sent(url: str) -> None:
    async with aioh2s.Session() as s:
        with pytest.raises(ValueError):
            await s.fetch(url)
        assert s.connections() == []


async def test_pseudo_headers_in_headers_and_misuse_raise() -> None:
    async with aioh2s.Session() as s:
        with pytest.raises(ValueError, match="pseudo-headers go in the target"):
            await s.fetch("http://127.0.0.1:1/", headers={":path": "/x"})
        with pytest.raises(ValueError, match="need :scheme"):
            await s.fetch({":path": "/x"})
        with pytest.raises(aioh2s.LocalProtocolError):
            await s.fetch("http://127.0.0.1:1/", method="GE T")
        with pytest.raises(ValueError, match="either body or json"):
            await s.fetch("http://127.0.0.1:1/", body=b"x", json=1)
    with pytest.raises(RuntimeError, match="closed"):
        await s.fetch("http://127.0.0.1:1/")
    with pytest.raises(ValueError):
        aioh2s.Session(max_connections=0)
    with pytest.raises(ValueError):
        aioh2s.Timeouts(read=0)


# -- the pool -------------------------------------------------------------------------------


async def test_pool_opens_connections_up_to_the_cap_and_keeps_the_peer_limit() -> None:
    async with origin(h2c(), max_concurrent_streams=2) as (o, port):
        async with aioh2s.Session(max_connections=3) as s:
            url = f"http://127.0.0.1:{port}/slow?s=0.05"
            rs = await asyncio.gather(*(
                s.fetch(url, headers={"x-request-id": str(i)}) for i in range(30)))
            assert [r.status for r in rs] == [200] * 30
            assert len(s.connections()) == 3
            assert o.most_active <= 2  # never above the server's SETTINGS_MAX_CONCURRENT_STREAMS
            assert sorted(o.seen) == sorted(str(i) for i in range(30))
            assert set(o.seen.values()) == {1}


async def test_pool_wait_is_fifo_and_times_out_with_pool_timeout() -> None:
    async with origin(h2c(), max_concurrent_streams=1) as (o, port):
        async with aioh2s.Session(max_connections=1) as s:
            base = f"http://127.0.0.1:{port}"
            hanging = asyncio.ensure_future(s.fetch(base + "/hang"))
            while not o.started:
                await asyncio.sleep(0.01)
            t0 = time.monotonic()
            with pytest.raises(aioh2s.PoolTimeout) as ei:
                await s.fetch(base + "/x", timeout=aioh2s.Timeouts(pool=0.2))
            assert 0.15 < time.monotonic() - t0 < 2
            assert ei.value.retry_safe and ei.value.timeout == "pool" and ei.value.seconds == 0.2
            assert isinstance(ei.value, TimeoutError) and isinstance(ei.value, asyncio.TimeoutError)
            assert "nothing was sent" in str(ei.value)
            order: list[int] = []

            async def one(i: int) -> None:
                await s.fetch(base + "/x", headers={"x-request-id": str(i)})
                order.append(i)

            waiters = [asyncio.ensure_future(one(i)) for i in range(5)]
            await asyncio.sleep(0.05)
            o.release.set()
            await asyncio.wait_for(asyncio.gather(hanging, *waiters), 10)
            assert order == [0, 1, 2, 3, 4]  # served in the order they asked


async def test_cancelled_waiters_give_their_slot_to_the_next() -> None:
    async with origin(h2c(), max_concurrent_streams=1) as (o, port):
        async with aioh2s.Session(max_connections=1) as s:
            base = f"http://127.0.0.1:{port}"
            hanging = asyncio.ensure_future(s.fetch(base + "/hang"))
            while not o.started:
                await asyncio.sleep(0.01)
            doomed = [asyncio.ensure_future(s.fetch(base + "/x")) for _ in range(3)]
            last = asyncio.ensure_future(s.fetch(base + "/x", headers={"x-request-id": "L"}))
            await asyncio.sleep(0.05)
            o.release.set()
            # The first waiter is granted the slot and cancelled in the same iteration.
            await asyncio.sleep(0)
            for d in doomed:
                d.cancel()
            r = await asyncio.wait_for(last, 5)
            assert r.status == 200 and o.seen["L"] == 1
            await hanging
            for d in doomed:
                with contextlib.suppress(asyncio.CancelledError):
                    await d
            conn = s.connections()[0]._conn
            await asyncio.sleep(0.05)
            assert conn.open_outbound == 0  # nothing leaked


# -- retries --------------------------------------------------------------------------------


@pytest.mark.parametrize("goaway_every", [1, 7])
async def test_goaway_every_n_requests_each_request_exactly_once(goaway_every: int) -> None:
    async with origin(h2c(), goaway_every=goaway_every, max_concurrent_streams=20) as (o, port):
        async with aioh2s.Session(max_connections=4, retries=5) as s:
            url = f"http://127.0.0.1:{port}/count"
            n = 600
            rs = await asyncio.gather(*(
                s.fetch(url, headers={"x-request-id": str(i)}) for i in range(n)),
                return_exceptions=True)
            failed = [r for r in rs if isinstance(r, BaseException)]
            for e in failed:  # allowed, if clear: but no exception may be a silent duplicate
                assert isinstance(e, aioh2s.H2Error), repr(e)
            ok = [r for r in rs if isinstance(r, aioh2s.Response)]
            assert len(ok) + len(failed) == n
            assert all(int(r.trailers["x-seen"]) == 1 for r in ok if r.trailers)
            assert max(o.seen.values()) == 1, [k for k, v in o.seen.items() if v > 1]
            assert len(ok) >= n * 0.99, failed[:3]


async def test_refused_streams_are_retried_and_the_body_is_sent_again() -> None:
    async with origin(h2c()) as (o, port), aioh2s.Session(retries=2) as s:
        url = f"http://127.0.0.1:{port}/refuse?n=2"
        r = await s.fetch(url, method="POST", body=b"payload", headers={"x-request-id": "a"})
        assert r.status == 200 and r.json()["body"] == "payload"
        assert o.refusals["a"] == 2 and o.seen["a"] == 1
        with pytest.raises(aioh2s.StreamReset) as ei:
            await s.fetch(f"http://127.0.0.1:{port}/refuse?n=9", headers={"x-request-id": "b"})
        assert ei.value.retry_safe and ei.value.error_code == ErrorCode.REFUSED_STREAM
        assert o.refusals["b"] == 3  # one try and two retries


async def test_a_body_that_was_started_is_not_sent_again() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"one"
        yield b"two"

    async with origin(h2c()) as (o, port), aioh2s.Session(retries=3) as s:
        with pytest.raises(aioh2s.StreamReset) as ei:
            await s.fetch(f"http://127.0.0.1:{port}/refuse?n=1", method="POST", body=chunks(),
                          headers={"x-request-id": "c"})
        assert ei.value.retry_safe  # the caller may resend, if it can make the body again
        assert o.refusals["c"] == 1 and o.seen["c"] == 0
        r = await s.fetch(f"http://127.0.0.1:{port}/echo", method="POST", body=chunks())
        assert r.json()["body"] == "onetwo"


@pytest.mark.parametrize("code", [ErrorCode.INTERNAL_ERROR, ErrorCode.CANCEL])
async def test_what_may_have_been_processed_is_never_retried(code: int) -> None:
    async with origin(h2c()) as (o, port), aioh2s.Session(retries=3) as s:
        with pytest.raises(aioh2s.StreamReset) as ei:
            await s.fetch(f"http://127.0.0.1:{port}/reset?code={code}",
                          headers={"x-request-id": "r"})
        assert not ei.value.retry_safe and o.seen["r"] == 1


async def test_streaming_request_without_body_is_reopened_when_refused() -> None:
    async with origin(h2c()) as (o, port), aioh2s.Session() as s:
        url = f"http://127.0.0.1:{port}/refuse?n=1"
        async with s.request(url, headers={"x-request-id": "s"}, end_stream=True) as st:
            first = st.writer.connection
            h = await st.response_headers()
            # Retried on a new connection: the one that refused is avoided.
            assert h[":status"] == "200" and st.writer.connection != first
            assert json.loads(await st.reader.read())["id"] == "s"
        async with s.request(url, method="POST", headers={"x-request-id": "t"}) as st:
            st.writer.write(b"x")
            st.writer.write_eof()
            with pytest.raises(aioh2s.StreamReset):  # it has a body: the caller decides
                await st.response_headers()


async def test_a_request_that_never_left_is_retry_safe_one_that_left_is_not() -> None:
    async with origin(h2c()) as (_o, port):
        client = await aioh2s.connect("127.0.0.1", port)
        async with client.request({":path": "/hang"}) as st:  # HEADERS queued, not yet written
            client._conn.fail(aioh2s.ConnectionClosed("gone"))
            with pytest.raises(aioh2s.ConnectionClosed) as ei:
                await st.response_headers()
            assert ei.value.retry_safe and "no byte of stream" in str(ei.value)
        await client.wait_closed()
        client = await aioh2s.connect("127.0.0.1", port)
        async with client.request({":path": "/hang"}) as st:
            await asyncio.sleep(0.05)  # written
            client._conn.fail(aioh2s.ConnectionClosed("gone"))
            with pytest.raises(aioh2s.ConnectionClosed) as ei:
                await st.response_headers()
            assert not ei.value.retry_safe
        await client.wait_closed()


# -- timeouts -------------------------------------------------------------------------------


async def test_read_timeout_names_itself_and_loses_nothing() -> None:
    async with origin(h2c()) as (o, port), aioh2s.Session() as s:
        url = f"http://127.0.0.1:{port}/drip?s=0.7"
        t = aioh2s.Timeouts(read=0.45)
        with pytest.raises(aioh2s.ReadTimeout) as ei:
            await s.fetch(url, timeout=t)
        assert ei.value.timeout == "read" and ei.value.seconds == 0.45
        assert "more of the body" in str(ei.value)
        async with s.request(url, end_stream=True, timeout=t) as st:
            await st.response_headers()
            assert await st.reader.read(1) == b"["
            with pytest.raises(aioh2s.ReadTimeout):
                await st.reader.read(1)
            assert await st.reader.read(1) == b"]"  # waiting again after a timeout works
        with pytest.raises(aioh2s.ReadTimeout, match="response headers"):
            await s.fetch(f"http://127.0.0.1:{port}/hang", timeout=aioh2s.Timeouts(read=0.2))


async def test_write_timeout_when_the_server_reads_nothing() -> None:
    async with origin(h2c(), stream_window=65535, connection_window=65535) as (_o, port):
        async with aioh2s.Session() as s:
            t0 = time.monotonic()
            with pytest.raises(aioh2s.WriteTimeout) as ei:
                await s.fetch(f"http://127.0.0.1:{port}/noread", method="POST",
                              body=b"x" * 1_000_000, timeout=aioh2s.Timeouts(write=0.3))
            assert ei.value.timeout == "write" and 0.25 < time.monotonic() - t0 < 5


async def test_total_timeout() -> None:
    async with origin(h2c()) as (_o, port), aioh2s.Session() as s:
        with pytest.raises(aioh2s.RequestTimeout) as ei:
            await s.fetch(f"http://127.0.0.1:{port}/drip?s=5",
                          timeout=aioh2s.Timeouts(total=0.3))
        assert ei.value.timeout == "total" and "took more than 0.3 s" in str(ei.value)


async def test_connect_timeout_and_connect_errors_reach_every_waiter() -> None:
    held: list[asyncio.StreamWriter] = []

    async def say_nothing(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        held.append(w)

    silent = await asyncio.start_server(say_nothing, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    try:
        async with aioh2s.Session(timeout=aioh2s.Timeouts(connect=0.3)) as s:
            rs = await asyncio.gather(*(s.fetch(f"http://127.0.0.1:{port}/") for _ in range(5)),
                                      return_exceptions=True)
            assert all(isinstance(r, aioh2s.ConnectTimeout) for r in rs), rs
            e = rs[0]
            assert isinstance(e, aioh2s.ConnectError) and isinstance(e, TimeoutError)
            assert e.timeout == "connect"
    finally:
        for w in held:
            w.close()
        silent.close()
        await silent.wait_closed()
    with socket.socket() as sock:  # bound, not listening: refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        async with aioh2s.Session() as s:
            rs = await asyncio.gather(*(s.fetch(f"http://127.0.0.1:{port}/") for _ in range(3)),
                                      return_exceptions=True)
            assert all(isinstance(r, aioh2s.ConnectError) for r in rs), rs
            assert "TCP connect failed" in str(rs[0])


# -- connection lifetime --------------------------------------------------------------------


async def test_idle_connections_expire_and_old_ones_retire(wire: Wire) -> None:
    async with origin(wire) as (_o, port):
        async with wire.session(idle_timeout=0.2) as s:
            await s.fetch(wire.url(port))
            first = s.connections()[0]
            await asyncio.wait_for(first.wait_closed(), 5)
            assert s.connections() == []
            await s.fetch(wire.url(port))
            assert s.connections()[0] is not first
        async with wire.session(max_connection_age=0.2) as s:
            await s.fetch(wire.url(port))
            first = s.connections()[0]
            await asyncio.sleep(0.4)
            await s.fetch(wire.url(port))
            assert first not in s.connections() and len(s.connections()) == 1


async def test_a_request_refused_for_its_header_list_leaves_the_connection_idle(
        wire: Wire) -> None:
    """A request the server's header-list limit refuses before anything is sent leaves its
    connection idle: the idle sweep still ends it."""
    async with origin(wire, max_header_list_size=1024) as (_o, port):
        async with wire.session(idle_timeout=0.2) as s:
            await s.fetch(wire.url(port))
            first = s.connections()[0]
            with pytest.raises(aioh2s.LocalProtocolError):
                await s.fetch(wire.url(port), headers={"x-big": "a" * 2000})
            await asyncio.wait_for(first.wait_closed(), 5)
            assert s.connections() == []


async def test_close_fails_waiters_and_ends_every_connection(wire: Wire) -> None:
    async with origin(wire, max_concurrent_streams=1) as (o, port):
        s = wire.session(max_connections=1)
        hanging = asyncio.ensure_future(s.fetch(wire.url(port, "/hang")))
        while not o.started:
            await asyncio.sleep(0.01)
        waiting = asyncio.ensure_future(s.fetch(wire.url(port)))
        await asyncio.sleep(0.05)
        conns = s.connections()
        closing = asyncio.ensure_future(s.close(grace=0.2))
        with pytest.raises(aioh2s.ConnectionClosed, match="session was closed"):
            await waiting
        with pytest.raises(aioh2s.H2Error):
            await hanging  # reset when the grace period ran out
        await asyncio.wait_for(closing, 5)
        assert all(c._conn.closed for c in conns)
        with pytest.raises(RuntimeError):
            s.request(wire.url(port))


async def test_a_server_closing_the_pool_connection_is_survived(wire: Wire) -> None:
    async with origin(wire, idle_timeout=0.1) as (_o, port):
        async with wire.session() as s:
            for _ in range(3):
                r = await s.fetch(wire.url(port))
                assert r.status == 200
                await asyncio.sleep(0.25)  # the server's idle timeout ends the connection
            assert len(s.connections()) <= 1


class BlackHole:
    """A TCP proxy to ``port`` that can stop forwarding (a black-holed path) per connection."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.links: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self.holes: set[int] = set()
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._link, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _link(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        ur, uw = await asyncio.open_connection("127.0.0.1", self.port)
        n = len(self.links)
        self.links.append((w, uw))
        for a, b in ((r, uw), (ur, w)):
            task = asyncio.ensure_future(self._pump(n, a, b))
            self.tasks.add(task)

    async def _pump(self, n: int, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await r.read(65536):
                if n not in self.holes:  # black-holed: bytes vanish, nothing is closed
                    w.write(data)
        with contextlib.suppress(OSError):
            w.close()

    async def close(self) -> None:
        self.server.close()
        for a, b in self.links:
            a.close()
            b.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.wait_closed()


async def test_keepalive_finds_a_black_holed_connection_and_the_pool_moves_on() -> None:
    async with origin(h2c()) as (_o, port):
        hole = BlackHole(port)
        via = await hole.start()
        try:
            async with aioh2s.Session(keepalive_interval=0.2, keepalive_timeout=0.3,
                                      timeout=aioh2s.Timeouts(read=5)) as s:
                url = f"http://127.0.0.1:{via}/x"
                assert (await s.fetch(url)).status == 200
                first = s.connections()[0]
                hole.holes.add(0)
                await asyncio.wait_for(first.wait_closed(), 5)  # PING unanswered: closed
                assert first not in s.connections()
                assert (await s.fetch(url)).status == 200  # a new connection, not black-holed
                hole.holes.add(1)
                t0 = time.monotonic()
                with pytest.raises(aioh2s.H2Error) as ei:  # in flight: the PING or read fails
                    await s.fetch(url, timeout=aioh2s.Timeouts(read=3))
                assert time.monotonic() - t0 < 3
                assert not ei.value.retry_safe  # the request went out: never resent
        finally:
            await hole.close()


# -- from the review: each of these failed (hung, leaked, dialled in a loop...) before its fix --


def _answer(peer: Any, ev: Any) -> None:
    if isinstance(ev, h2.events.StreamEnded):
        peer.respond(ev.stream_id, b"ok")


async def test_a_limit_lowered_after_a_slot_was_granted_ends_in_pool_timeout() -> None:
    held: list[tuple[Any, int]] = []

    def hold(peer: Any, ev: Any) -> None:
        if isinstance(ev, h2.events.StreamEnded):
            held.append((peer, ev.stream_id))

    mcs = h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS
    async with RawH2Server(hold, settings={mcs: 1}) as srv:
        t = aioh2s.Timeouts(pool=0.5, read=10)
        async with aioh2s.Session(timeout=t, max_connections=1) as s:
            a = asyncio.ensure_future(s.fetch(srv.url))
            while not held:
                await asyncio.sleep(0.01)
            b = asyncio.ensure_future(s.fetch(srv.url))  # in the pool's line
            await asyncio.sleep(0.05)
            peer, sid = held.pop()
            # One write: the answer that frees b's slot, then a limit of 0 streams.
            peer.conn.send_headers(sid, [(":status", "200")], end_stream=True)
            peer.conn.update_settings({mcs: 0})
            peer.flush()
            assert (await a).status == 200
            with pytest.raises(aioh2s.PoolTimeout):
                await asyncio.wait_for(b, 5)


async def test_a_server_that_says_goaway_at_once_is_not_dialled_in_a_loop() -> None:
    def goaway(peer: Any) -> None:
        peer.conn.close_connection(last_stream_id=0)

    async with RawH2Server(_answer, on_connect=goaway) as srv:
        async with aioh2s.Session(timeout=aioh2s.Timeouts(pool=2)) as s:
            t0 = time.monotonic()
            with pytest.raises(aioh2s.H2Error) as ei:
                await s.fetch(srv.url)
            assert time.monotonic() - t0 < 2.5
            assert "before it served a request" in str(ei.value) or isinstance(
                ei.value, aioh2s.PoolTimeout), ei.value
        assert srv.accepted < 20, srv.accepted


async def test_after_a_failed_attempt_the_pool_dials_again() -> None:
    mcs = h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS

    def busy_first(peer: Any, ev: Any) -> None:
        if isinstance(ev, h2.events.StreamEnded) and peer is not peer.server.peers[0]:
            peer.respond(ev.stream_id, b"ok")  # the first connection never answers

    def fail_second(peer: Any) -> bool:
        if peer.server.accepted == 2:
            assert peer.transport is not None
            peer.transport.abort()  # one attempt fails (an overloaded server)
            return True
        return False

    async with RawH2Server(busy_first, settings={mcs: 1}, pre_connect=fail_second) as srv:
        t = aioh2s.Timeouts(pool=4, read=10)
        async with aioh2s.Session(timeout=t, max_connections=3) as s:
            long = asyncio.ensure_future(s.fetch(srv.url))
            await asyncio.sleep(0.2)
            r = await s.fetch(srv.url)
            assert r.body == b"ok" and srv.accepted == 3
            long.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await long


async def test_max_age_never_cuts_a_running_response() -> None:
    async def slow(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        writer.send_headers({":status": "200"})
        for _ in range(15):
            writer.write(b"x" * 1000)
            await writer.drain()
            await asyncio.sleep(0.05)
        writer.write_eof()

    async with Wire("h2c").serving(slow) as (_server, port):
        async with aioh2s.Session(max_connection_age=0.1, grace=0.2) as s:
            r = await s.fetch(f"http://127.0.0.1:{port}/")
            assert len(r.body) == 15000
            await asyncio.sleep(0.1)
            conns = s.connections()
            assert all(c.is_closing() for c in conns)  # retired once its stream was over


async def test_explicit_config_values_are_kept() -> None:
    cfg = aioh2s.Config(keepalive_interval=5, handshake_timeout=2)
    s = aioh2s.Session(config=cfg)
    assert s._config.keepalive_interval == 5 and s._config.handshake_timeout == 2
    assert s.timeouts.connect == 2
    s = aioh2s.Session(config=cfg, keepalive_interval=None, timeout=aioh2s.Timeouts(connect=3))
    assert s._config.keepalive_interval is None and s._config.handshake_timeout == 3
    s = aioh2s.Session()
    assert s._config.keepalive_interval == 30 and s.timeouts == aioh2s.Timeouts()


async def test_bad_bodies_raise_before_anything_is_sent() -> None:
    async with origin(h2c()) as (o, port), aioh2s.Session() as s:
        url = f"http://127.0.0.1:{port}/echo"
        for body in ("text", [b"a"], 5):
            with pytest.raises(TypeError):
                await s.fetch(url, method="POST", body=body)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            await s.fetch(url, max_body_size=-1)
        assert o.started == 0
        r = await s.fetch(url, method="POST", json=[1],
                          headers={"content-type": "application/merge-patch+json"})
        assert r.json()["body"] == "[1]"


async def test_a_large_body_is_echoed_while_it_is_sent(wire: Wire) -> None:
    async def echo(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        writer.send_headers({":status": "200"})
        async for chunk in reader:
            writer.write(chunk)
            await writer.drain()
        writer.write_eof()

    async def parts() -> AsyncIterator[bytes]:
        for _ in range(64):
            yield b"y" * 65536

    async with wire.serving(echo) as (_server, port):
        async with wire.session(timeout=aioh2s.Timeouts(read=5, write=5)) as s:
            r = await s.fetch(wire.url(port), method="POST", body=b"x" * (8 << 20))
            assert len(r.body) == 8 << 20
            r = await s.fetch(wire.url(port), method="POST", body=parts())
            assert r.body == b"y" * (64 * 65536)


async def test_close_cancelled_then_closed_again_waits_for_the_end(wire: Wire) -> None:
    async with origin(wire) as (o, port):
        s = wire.session()
        hanging = asyncio.ensure_future(s.fetch(wire.url(port, "/hang")))
        while not o.started:
            await asyncio.sleep(0.01)
        conn = s.connections()[0]._conn
        first = asyncio.ensure_future(s.close(grace=0.3))
        await asyncio.sleep(0.05)
        first.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await first
        await asyncio.wait_for(s.close(), 5)  # waits for the same closing, not a no-op
        assert conn.closed
        with pytest.raises(aioh2s.H2Error):
            await hanging


async def test_waiters_failed_together_get_their_own_exceptions() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        async with aioh2s.Session() as s:
            rs = await asyncio.gather(*(s.fetch(f"http://127.0.0.1:{port}/") for _ in range(4)),
                                      return_exceptions=True)
    assert len({id(r) for r in rs}) == 4 and all(isinstance(r, aioh2s.ConnectError) for r in rs)


async def test_total_timeout_and_an_outside_cancel_are_told_apart() -> None:
    from aioh2s import _aio

    def err() -> BaseException:
        return aioh2s.RequestTimeout("total", 0.05)

    async def cancelled_once_then_deadline() -> str:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(10)
        try:
            await _aio.deadline(asyncio.sleep(1), 0.05, err)
        except aioh2s.RequestTimeout:
            return "timeout"
        return "no timeout"

    task = asyncio.ensure_future(cancelled_once_then_deadline())
    await asyncio.sleep(0.01)
    task.cancel()
    assert await task == "timeout"  # its own expiry, although the task was cancelled before

    async def outside_cancel_at_the_deadline() -> None:
        me = asyncio.current_task()
        assert me is not None
        loop = asyncio.get_running_loop()
        loop.call_at(loop.time() + 0.05, me.cancel)  # just before the deadline's own timer
        await _aio.deadline(asyncio.sleep(1), 0.05, err)

    task = asyncio.ensure_future(outside_cancel_at_the_deadline())
    with pytest.raises(asyncio.CancelledError):
        await task  # the outside cancel is never turned into a timeout


async def test_httpx_host_header_names_the_authority_not_the_server() -> None:
    httpx = pytest.importorskip("httpx")
    from aioh2s.httpx_transport import Transport

    seen: list[Any] = []

    def record(peer: Any, ev: Any) -> None:
        if isinstance(ev, h2.events.RequestReceived):
            seen.append(dict(ev.headers))
        if isinstance(ev, h2.events.StreamEnded):
            peer.conn.send_headers(ev.stream_id, [
                (":status", "200"),
                ("content-disposition", 'attachment; filename="café.txt"'),
            ], end_stream=True)
            peer.flush()

    async with RawH2Server(record) as srv:
        async with httpx.AsyncClient(transport=Transport()) as c:
            r = await c.get(srv.url, headers={"Host": "vhost.invalid"})
            assert r.status_code == 200 and "café" in r.headers["content-disposition"]
    assert seen[0][":authority"] == "vhost.invalid"


# -- from the second review -------------------------------------------------------------------


async def test_an_early_answer_stops_an_endless_body() -> None:
    pulled = 0

    async def answer_unread(_r: aioh2s.H2StreamReader, w: aioh2s.H2StreamWriter) -> None:
        w.send_headers({":status": "200"})  # aioh2s then resets the unread body, NO_ERROR
        w.write(b"done")
        w.write_eof()

    async def endless() -> AsyncIterator[bytes]:
        nonlocal pulled
        while True:
            pulled += 1
            yield b"x" * 1024

    async with Wire("h2c").serving(answer_unread) as (_server, port), aioh2s.Session() as s:
        r = await asyncio.wait_for(
            s.fetch(f"http://127.0.0.1:{port}/", method="POST", body=endless()), 5)
        assert r.body == b"done" and pulled < 2000


async def test_the_body_error_is_the_error_even_after_the_headers() -> None:
    async def headers_only(_r: aioh2s.H2StreamReader, w: aioh2s.H2StreamWriter) -> None:
        w.send_headers({":status": "200"})
        await w.drain()
        await asyncio.sleep(30)

    async def failing() -> AsyncIterator[bytes]:
        yield b"x"
        await asyncio.sleep(0.2)
        raise ValueError("the body's source broke")

    async with Wire("h2c").serving(headers_only) as (_server, port):
        async with aioh2s.Session(timeout=aioh2s.Timeouts(read=5, write=0.5)) as s:
            url = f"http://127.0.0.1:{port}/"
            with pytest.raises(aioh2s.WriteTimeout):
                await s.fetch(url, method="POST", body=b"x" * 4_000_000)
            with pytest.raises(ValueError, match="source broke"):
                await s.fetch(url, method="POST", body=failing())


async def test_a_body_iterator_cancelled_elsewhere_fails_the_request_at_once() -> None:
    loop = asyncio.get_running_loop()
    producer: asyncio.Future[bytes] = loop.create_future()
    loop.call_later(0.1, producer.cancel)

    async def body() -> AsyncIterator[bytes]:
        yield b"a"
        yield await producer

    def on_event(peer: Any, ev: Any) -> None:
        if isinstance(ev, h2.events.StreamEnded):
            peer.respond(ev.stream_id, b"ok")
        elif isinstance(ev, h2.events.DataReceived):
            peer.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)

    async with RawH2Server(on_event) as srv:
        async with aioh2s.Session(timeout=aioh2s.Timeouts(read=3)) as s:
            t0 = time.monotonic()
            with pytest.raises(RuntimeError, match="CancelledError"):
                await s.fetch(srv.url, method="POST", body=body())
            assert time.monotonic() - t0 < 1


async def test_a_retry_avoiding_a_connection_does_not_block_the_line() -> None:
    refused: list[int] = []

    def on_event(peer: Any, ev: Any) -> None:
        if isinstance(ev, h2.events.RequestReceived):
            if not refused:
                refused.append(ev.stream_id)
                peer.conn.reset_stream(ev.stream_id, ErrorCode.REFUSED_STREAM)
                peer.flush()
            else:
                peer.respond(ev.stream_id, b"ok")

    # Only the first connection is served; later ones never get SETTINGS.
    async with RawH2Server(on_event, pre_connect=lambda peer: peer.server.accepted > 1) as srv:
        t = aioh2s.Timeouts(connect=0.5, pool=3, read=5)
        async with aioh2s.Session(timeout=t) as s:
            a = asyncio.ensure_future(s.fetch(srv.url + "a"))
            while not refused:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            t0 = time.monotonic()
            rb, ra = await asyncio.gather(s.fetch(srv.url + "b"), a)
            assert rb.body == ra.body == b"ok" and time.monotonic() - t0 < 2


async def test_close_during_a_retry_pause_and_a_shorter_second_close() -> None:
    n = 0

    def refuse(peer: Any, ev: Any) -> None:
        nonlocal n
        if isinstance(ev, h2.events.RequestReceived):
            n += 1
            peer.conn.reset_stream(ev.stream_id, ErrorCode.REFUSED_STREAM)
            peer.flush()

    async with RawH2Server(refuse) as srv:
        s = aioh2s.Session(retries=8, timeout=5)
        t = asyncio.ensure_future(s.fetch(srv.url))
        while n < 4:  # in the pause before attempt 5
            await asyncio.sleep(0.01)
        await asyncio.wait_for(s.close(), 3)
        # In the pause: "the session was closed"; if an attempt was in flight instead, its
        # own refusal, not retried once closed. Either way an H2Error, and retry-safe.
        with pytest.raises(aioh2s.H2Error) as ei:
            await t
        assert ei.value.retry_safe, ei.value

    async with RawH2Server(lambda peer, ev: None) as srv:  # never answers
        s = aioh2s.Session(timeout=aioh2s.Timeouts(read=60))
        req = asyncio.ensure_future(s.fetch(srv.url))
        await asyncio.sleep(0.2)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(s.close(), 0.3)  # 30 s of grace
        t0 = time.monotonic()
        await asyncio.wait_for(s.close(grace=0), 5)
        assert time.monotonic() - t0 < 2
        with pytest.raises(aioh2s.H2Error):
            await req


async def test_connect_through_fetch_is_refused_before_it_can_break_the_connection() -> None:
    async with origin(h2c()) as (o, port), aioh2s.Session() as s:
        other = asyncio.ensure_future(s.fetch(f"http://127.0.0.1:{port}/slow?s=0.2"))
        with pytest.raises(ValueError, match="plain CONNECT"):
            await s.fetch(f"http://127.0.0.1:{port}/", method="CONNECT")
        assert (await other).status == 200
        with pytest.raises(aioh2s.LocalProtocolError, match=":scheme or :path"):
            aioh2s.headers.check_request(
                [(b":method", b"CONNECT"), (b":authority", b"a:1"), (b":path", b"/")])


async def test_wide_memoryview_bodies_and_unknown_charsets() -> None:
    import array

    async with origin(h2c()) as (_o, port), aioh2s.Session() as s:
        mv = memoryview(array.array("i", range(10_000)))
        r = await s.fetch(f"http://127.0.0.1:{port}/echo", method="POST", body=mv)
        assert len(r.json()["body"]) == mv.nbytes
    r = aioh2s.Response(200, aioh2s.Headers([("content-type", "text/plain; charset=utf8mb4")]),
                        "héllo".encode(), None, "http://x/")
    assert r.text() == "héllo"
