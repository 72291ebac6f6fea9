"""Several processes on one port: ``start_server(reuse_port=True)`` and ``aioh2s.serve``.

The first tests run in this process: SO_REUSEPORT itself, and what a worker relies on when
it stops, namely that ``Server.close()`` closes its listener before it drains (the kernel
then hands new connections to the other listeners) and that a connection the server had
accepted but not yet heard from is served, not dropped. The rest start real supervisors
(``python -c 'aioh2s.serve(...)'``, tests/workers_harness.py) with workers on 127.0.0.1, the
application being tests/workers_app.py (each response names its worker's pid), and read the
supervisor's log on its stderr. Every wait is bounded. What goes wrong (signals to the whole
group, deaths during a rollout, failing startups) is tests/test_workers_faults.py.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import h2.config
import h2.connection
import pytest
from hyperframe.frame import DataFrame, Frame, GoAwayFrame, PingFrame

import aioh2s
from workers_harness import Supervisor, _start, stopped_at_exit

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="SO_REUSEPORT load balancing is Linux's")


def _named(name: str, release: asyncio.Event | None = None) -> aioh2s.Handler:
    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        writer.send_headers({":status": "200"})
        if release is not None and reader.headers[":path"] == "/slow":
            await asyncio.wait_for(release.wait(), 10)
        writer.write(name.encode())
        writer.write_eof()
    return handler


async def _get(port: int, path: str = "/") -> bytes:
    client = await aioh2s.connect("127.0.0.1", port)
    try:
        async with client.request({":path": path}, end_stream=True) as stream:
            await asyncio.wait_for(stream.response_headers(), 5)
            return await asyncio.wait_for(stream.reader.read(), 5)
    finally:
        await asyncio.wait_for(client.close(), 5)


async def _read_frames(reader: asyncio.StreamReader,
                       until: Callable[[Frame], bool]) -> list[Frame]:
    frames: list[Frame] = []
    while not frames or not until(frames[-1]):
        head = await asyncio.wait_for(reader.readexactly(9), 5)
        frame, length = Frame.parse_frame_header(memoryview(head))
        frame.parse_body(memoryview(await asyncio.wait_for(reader.readexactly(length), 5)))
        frames.append(frame)
    return frames


# -- start_server(reuse_port=True) and what Server.close() does for a worker ------------------


async def test_reuse_port_lets_servers_share_a_port_and_close_leaves_the_others() -> None:
    release = asyncio.Event()
    a = await aioh2s.start_server(_named("a", release), "127.0.0.1", 0, reuse_port=True)
    port = a.sockets[0].getsockname()[1]
    b = await aioh2s.start_server(_named("b"), "127.0.0.1", port, reuse_port=True)
    try:
        # Without SO_REUSEPORT the port is taken.
        with pytest.raises(OSError) as ei:
            await aioh2s.start_server(_named("c"), "127.0.0.1", port)
        assert ei.value.errno == errno.EADDRINUSE
        # The kernel spreads connections over both (by a hash of the client's port).
        seen = {await _get(port) for _ in range(40)}
        assert seen == {b"a", b"b"}
        # A slow request in flight on a, then a closes: its listener goes at once (every new
        # connection lands on b) while the slow request finishes.
        clients: list[aioh2s.Client] = []
        try:
            slow = None
            for _ in range(40):
                client = await aioh2s.connect("127.0.0.1", port)
                clients.append(client)
                stream = await client.request({":path": "/slow"}, end_stream=True)
                await asyncio.wait_for(stream.response_headers(), 5)
                if a.connections:
                    slow = stream
                    break
            assert slow is not None, "no connection landed on a"
            a.close(grace=5)
            assert not a.sockets
            assert {await _get(port) for _ in range(20)} == {b"b"}
            release.set()
            assert await asyncio.wait_for(slow.reader.read(), 5) == b"a"
        finally:
            for client in clients:
                await asyncio.wait_for(client.close(), 5)
        await asyncio.wait_for(a.wait_closed(), 5)
    finally:
        release.set()
        for server in (a, b):
            server.close()
            await asyncio.wait_for(server.wait_closed(), 5)


async def test_reuse_port_where_the_platform_has_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(socket, "SO_REUSEPORT")
    with pytest.raises(ValueError, match="has no SO_REUSEPORT"):
        await aioh2s.start_server(_named("a"), "127.0.0.1", 0, reuse_port=True)


async def test_start_server_on_a_listening_socket() -> None:
    sock = socket.create_server(("127.0.0.1", 0))
    server = await aioh2s.start_server(_named("s"), sock=sock)
    try:
        assert await _get(sock.getsockname()[1]) == b"s"
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), 5)


async def test_a_connection_that_has_not_spoken_yet_is_served_through_close() -> None:
    # A worker stopping under load has connections it accepted an instant ago whose request
    # is on its way: close() lets them speak (first_request_wait), serves them, then GOAWAY.
    server = await aioh2s.start_server(_named("s"), "127.0.0.1", 0, first_request_wait=1.0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for _ in range(100):
            if server.connections:
                break
            await asyncio.sleep(0.01)
        assert server.connections == 1
        server.close(grace=5)
        h2c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        h2c.initiate_connection()
        h2c.send_headers(1, [(":method", "GET"), (":scheme", "http"),
                             (":authority", "localhost"), (":path", "/")], end_stream=True)
        writer.write(h2c.data_to_send())
        # Read the frames with hyperframe: stock h2 takes no frame after a GOAWAY.
        frames = await _read_frames(reader, until=lambda f: isinstance(f, DataFrame)
                                    and "END_STREAM" in f.flags)
        assert b"".join(f.data for f in frames if isinstance(f, DataFrame)) == b"s"
        assert [f.last_stream_id for f in frames if isinstance(f, GoAwayFrame)] == [2**31 - 1]
        # The final GOAWAY waits for the PING's ACK (or a second): answer it.
        ping = next(f for f in frames if isinstance(f, PingFrame))
        ack = PingFrame(0, ping.opaque_data)
        ack.flags.add("ACK")
        writer.write(ack.serialize())
        frames = await _read_frames(reader, until=lambda f: isinstance(f, GoAwayFrame))
        assert frames[-1].last_stream_id == 1
        await asyncio.wait_for(server.wait_closed(), 5)
    finally:
        writer.close()
        await writer.wait_closed()
        server.close()
        await asyncio.wait_for(server.wait_closed(), 5)


async def test_a_silent_connection_is_closed_after_first_request_wait() -> None:
    server = await aioh2s.start_server(_named("s"), "127.0.0.1", 0, first_request_wait=0.2)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for _ in range(100):
            if server.connections:
                break
            await asyncio.sleep(0.01)
        loop = asyncio.get_running_loop()
        started = loop.time()
        server.close(grace=5)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # not a word
        await asyncio.wait_for(server.wait_closed(), 5)
        assert 0.15 < loop.time() - started < 2
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.mark.parametrize("peer", ["h2", "silent"])
async def test_start_server_closes_idle_connections_at_once_by_default(wire: Any,
                                                                       peer: str) -> None:
    # first_request_wait is 0 for start_server(): close() waits for no first request
    # (``linger`` is 1 s: it used to be that wait too).
    server = await aioh2s.start_server(_named("s"), "127.0.0.1", 0, handshake_timeout=1,
                                       **wire.server_options())
    port = server.sockets[0].getsockname()[1]
    # (3.12's asyncio waits for a handshake under way until its timeout; 3.13 can abort it.)
    bound = 1.5 if wire.tls and peer == "silent" and sys.version_info[:2] == (3, 12) else 0.5
    client: aioh2s.Client | None = None
    raw: socket.socket | None = None
    try:
        if peer == "h2":  # SETTINGS exchanged, no request
            client = await aioh2s.connect("127.0.0.1", port, **wire.client_options())
        else:  # TCP connected, not a byte (no ClientHello over TLS)
            raw = socket.create_connection(("127.0.0.1", port))
        for _ in range(100):
            if server.connections or (raw is not None and wire.tls):
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        loop = asyncio.get_running_loop()
        started = loop.time()
        server.close()
        await asyncio.wait_for(server.wait_closed(), 5)
        assert loop.time() - started < bound
        if client is not None:
            assert client.is_closing()  # it got the GOAWAY
    finally:
        if client is not None:
            await asyncio.wait_for(client.close(), 5)
        if raw is not None:
            raw.close()


# -- aioh2s.serve: real supervisors ------------------------------------------------------------


@pytest.fixture
async def supervisors() -> AsyncIterator[list[Supervisor]]:
    async with stopped_at_exit() as started:
        yield started


async def _pid(port: int, path: str = "/") -> int:
    return int(await _get(port, path))


async def test_two_workers_both_serve(supervisors: list[Supervisor]) -> None:
    sup = await _start(supervisors, workers=2)
    assert len(sup.pids) == 2
    seen = {await _pid(sup.port) for _ in range(40)}
    assert seen == sup.pids  # (a new connection each: the kernel's hash picks the worker)
    sup.signal(signal.SIGTERM)
    assert await sup.wait(10) == 0
    assert "all workers stopped" in sup.log()


async def test_sigterm_lets_work_after_the_response_finish(
    supervisors: list[Supervisor],
) -> None:
    """A worker's graceful stop (close, then wait_closed) gives a handler working on after
    its complete response the grace period: it is not cancelled as its connection closes."""
    sup = await _start(supervisors, workers=1)
    pid = await _pid(sup.port, "/after?1.5")  # (the client's connection is closed already)
    sup.signal(signal.SIGTERM)
    assert await sup.wait(10) == 0
    assert f"workers_app: work after the response done in {pid}" in sup.log()


async def test_a_killed_worker_is_restarted_and_the_log_says_why(
    supervisors: list[Supervisor],
) -> None:
    sup = await _start(supervisors, workers=2)
    victim = min(sup.pids)
    mark = len(sup.lines)
    os.kill(victim, signal.SIGKILL)
    m = await sup.line(rf"WARNING aioh2s: worker {victim} \(slot (\d)\) was killed by signal 9 "
                       r"\(SIGKILL\); restarting it in 0\.1 s", after=mark)
    back = await sup.line(rf"worker (\d+) \(slot {m.group(1)}\) is accepting connections",
                          after=mark)
    new = int(back.group(1))
    assert new not in sup.pids
    seen = {await _pid(sup.port) for _ in range(40)}
    assert seen == sup.pids - {victim} | {new}
    sup.signal(signal.SIGTERM)
    assert await sup.wait(10) == 0


async def test_sigterm_lets_inflight_requests_finish_then_refuses_and_exits(
    supervisors: list[Supervisor],
) -> None:
    sup = await _start(supervisors, workers=2, grace=5)
    loop = asyncio.get_running_loop()
    client = await aioh2s.connect("127.0.0.1", sup.port)
    try:
        stream = await client.request({":path": "/slow?1.5"}, end_stream=True)
        await asyncio.wait_for(stream.response_headers(), 5)
        body = asyncio.ensure_future(stream.reader.read())
        started = loop.time()
        sup.signal(signal.SIGTERM)
        await sup.line(r"SIGTERM: stopping 2 worker\(s\) gracefully")
        # The listeners are closed at once: new connections are refused, well before the
        # slow request is done.
        while True:
            try:
                probe = socket.create_connection(("127.0.0.1", sup.port), timeout=1)
            except ConnectionRefusedError:
                break
            probe.close()
            assert loop.time() - started < 1, "still accepting connections after SIGTERM"
            await asyncio.sleep(0.02)
        assert not body.done()
        assert int(await asyncio.wait_for(body, 5)) in sup.pids
        assert await sup.wait(8) == 0
        assert loop.time() - started < 5  # the slow request, then at most a linger
    finally:
        await asyncio.wait_for(client.close(), 5)
    assert "killing" not in sup.log()


async def test_sighup_replaces_every_worker_and_fails_no_request(
    supervisors: list[Supervisor],
) -> None:
    sup = await _start(supervisors, workers=2, grace=3)
    old = set(sup.pids)
    url = f"http://127.0.0.1:{sup.port}/"
    failures: list[BaseException] = []
    seen: dict[str, list[int]] = {"connections": [], "session": []}
    stop = asyncio.Event()

    async def new_connection_each() -> None:
        # A connection per request and no retry: its first request must never meet a
        # GOAWAY, nor the connection a reset in an accept queue.
        while not stop.is_set():
            try:
                seen["connections"].append(await _pid(sup.port))
            except Exception as e:  # every failure counts
                failures.append(e)

    async def one_session() -> None:
        async with aioh2s.Session(max_connections=1) as session:
            while not stop.is_set():
                try:
                    r = await session.fetch(url + "slow?0.05")
                    seen["session"].append(int(r.body))
                except Exception as e:
                    failures.append(e)

    clients = [asyncio.ensure_future(f()) for f in (*[new_connection_each] * 4, one_session)]
    try:
        await asyncio.sleep(0.5)
        mark = len(sup.lines)
        sup.signal(signal.SIGHUP)
        done = await sup.line(r"rolling restart done \(pids ([\d, ]+)\)", after=mark)
        new = {int(p) for p in done.group(1).split(", ")}
        await asyncio.sleep(0.5)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*clients), 10)
    assert not failures, failures
    assert len(new) == 2 and not new & old
    for name, pids in seen.items():
        assert set(pids[:3]) <= old, name
        assert set(pids[-3:]) <= new, name  # the long-lived connection got GOAWAY and moved
        assert len(pids) > 20, name
    # Each old worker was stopped only once its replacement was accepting connections.
    for pid in new:
        await sup.line(rf"worker {pid} \(slot \d\) is accepting connections; it replaces "
                       r"worker \d+", after=mark)
    sup.signal(signal.SIGTERM)
    assert await sup.wait(10) == 0


async def test_workers_stop_by_themselves_when_the_supervisor_is_killed(
    supervisors: list[Supervisor],
) -> None:
    sup = await _start(supervisors, workers=2, grace=2)
    assert await _pid(sup.port) in sup.pids
    sup.proc.kill()
    await sup.proc.wait()
    # Each worker sees its pipe's end, closes gracefully and exits; the supervisor's stderr,
    # which they share, ends with the last of them.
    await asyncio.wait_for(sup._reader, 10)
    assert sup.log().count("the supervisor is gone; closing") == 2
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", sup.port), timeout=1).close()


async def test_a_handler_that_cannot_load_stops_serve_with_an_error(
    supervisors: list[Supervisor],
) -> None:
    sup = await Supervisor.start(workers=1, handler="'workers_app:missing'")
    supervisors.append(sup)
    assert await sup.wait(15) == 1
    log = sup.log()
    assert "'workers_app:missing'" in log and "has no attribute 'missing'" in log
    assert "1 of 1 worker(s) ended before accepting connections" in log


def test_serve_refuses_what_it_cannot_do() -> None:
    with pytest.raises(TypeError, match="top-level function"):
        aioh2s.serve(lambda r, w: None, workers=2)  # type: ignore[arg-type,return-value]
    with pytest.raises(ValueError, match="not a 'package.module:attribute' spec"):
        aioh2s.serve("workers_app.handler")
    with pytest.raises(ValueError, match="workers must be a whole number from 1 to 256"):
        aioh2s.serve("workers_app:handler", workers=0)
    with pytest.raises(TypeError, match="unknown option"):
        aioh2s.serve("workers_app:handler", gracee=1)  # type: ignore[call-arg]
