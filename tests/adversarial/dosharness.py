"""Server-side harness for the attack tests: an instrumented app, a memory meter, a health probe.

Theory of operation
-------------------
The server under test is a real ``aioh2s.start_server`` listening on 127.0.0.1 in the test's
own event loop, so the test can see inside it without mocks:

* `App` is the request handler.  It counts handler tasks as they start, finish, fail and get
  cancelled, and keeps the set of tasks still running, so a test can assert that handlers of
  streams the attacker reset were cancelled (the set drains) and that no more than
  ``max_concurrent_streams`` ever ran at once.  Its routes: ``/`` (200 "ok"), ``/echo``,
  ``/hang`` (never answers), ``/hang-headers`` (200 headers, then never ends), ``/hang-read``
  (reads the request body to its end, then answers), ``/big/<n>`` (n bytes through
  ``drain()``).
* `MemoryMeter` wraps an attack in ``tracemalloc``: the growth of traced memory (current and
  peak) while the attack ran is, within a small noise floor, what the server kept, because
  the attacker (`rawpeer.RawPeer`) allocates almost nothing itself.  Figures are collected in
  `FIGURES` and printed at the end of the run by ``conftest.py``.
* `HealthProbe` is a well-behaved raw client on its own connection that keeps making
  requests during the attack; every one must succeed in time.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import time
import tracemalloc
import warnings
from typing import Any

import rawpeer

KiB = 1024

MiB = 1024 * KiB

CHUNK = b"\xa5" * (64 * KiB)

#: (test name, what was measured, peak growth in bytes, bound in bytes) per measurement.
FIGURES: list[tuple[str, str, int, int]] = []


class App:
    """The instrumented request handler (see module doc for the routes)."""

    def __init__(self) -> None:
        self.running: set[asyncio.Task[Any]] = set()
        self.started = 0
        self.completed = 0
        self.cancelled = 0
        self.raised: list[str] = []
        self.max_running = 0
        self.hanging: set[asyncio.Task[Any]] = set()
        self.max_hanging = 0
        self.paths: list[str] = []
        self.big_written = 0

    async def __call__(self, reader: Any, writer: Any) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.running.add(task)
        self.started += 1
        self.max_running = max(self.max_running, len(self.running))
        if str(reader.headers.get(":path", "")).startswith("/hang"):
            # The attacker's streams; the health probe's requests are not counted here.
            self.hanging.add(task)
            self.max_hanging = max(self.max_hanging, len(self.hanging))
        try:
            await self._route(reader, writer)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        except Exception as exc:
            if len(self.raised) < 100:
                self.raised.append(repr(exc))
            raise
        else:
            self.completed += 1
        finally:
            self.running.discard(task)
            self.hanging.discard(task)

    async def _route(self, reader: Any, writer: Any) -> None:
        path = reader.headers.get(":path", "")
        if len(self.paths) < 100:
            self.paths.append(path)
        if path == "/hang":
            await asyncio.sleep(3600)
        elif path == "/hang-headers":
            writer.send_headers({":status": "200"})
            await writer.drain()
            await asyncio.sleep(3600)
        elif path == "/hang-read":
            body = await reader.read()
            writer.send_headers({":status": "200"})
            writer.write(str(len(body)).encode())
            writer.write_eof()
        elif path == "/echo":
            body = await reader.read()
            writer.send_headers({":status": "200"})
            writer.write(body)
            writer.write_eof()
        elif path.startswith("/big/"):
            left = int(path[5:])
            writer.send_headers({":status": "200"})
            while left > 0:
                n = min(left, len(CHUNK))
                # Slicing the whole chunk returns CHUNK itself: the handler allocates nothing,
                # so any memory growth is the server's own buffering.
                writer.write(CHUNK[:n])
                await writer.drain()
                self.big_written += n
                left -= n
            writer.write_eof()
        else:
            writer.send_headers({":status": "200", "content-type": "text/plain"})
            writer.write(b"ok")
            writer.write_eof()

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no handler task is running; False at the deadline."""
        deadline = time.monotonic() + timeout
        while self.running and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return not self.running

    def describe(self) -> str:
        """Handler counters, for assertion messages."""
        return (
            f"[handlers: started={self.started} running={len(self.running)} "
            f"max_running={self.max_running} max_hanging={self.max_hanging} "
            f"completed={self.completed} "
            f"cancelled={self.cancelled} raised={len(self.raised)} {self.raised[:3]}]"
        )


class ServerUnderTest:
    """A started aioh2s server plus its `App` and the loop's unhandled exceptions."""

    def __init__(self, server: Any, app: App, config: dict[str, Any]) -> None:
        self.server = server
        self.app = app
        self.config = config
        self.port: int = server.sockets[0].getsockname()[1]
        self.loop_errors: list[dict[str, Any]] = []
        self._loop = asyncio.get_running_loop()
        self._old_handler = self._loop.get_exception_handler()
        self._loop.set_exception_handler(self._on_loop_error)

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        self.loop_errors.append(context)
        loop.default_exception_handler(context)

    async def close(self) -> None:
        """Cancel leftover handlers, close the server, restore the loop's error handler."""
        for task in list(self.app.running):
            task.cancel()
        self.server.close()
        try:
            await asyncio.wait_for(self.server.wait_closed(), 5.0)
        except asyncio.TimeoutError:
            warnings.warn("aioh2s server.wait_closed() did not return within 5 s", stacklevel=1)
        await asyncio.sleep(0)
        self._loop.set_exception_handler(self._old_handler)


async def start_test_server(**config: Any) -> ServerUnderTest:
    """Start aioh2s on 127.0.0.1 with ``config`` keywords and an instrumented `App`."""
    import aioh2s

    app = App()
    server = await aioh2s.start_server(app, "127.0.0.1", 0, **config)
    return ServerUnderTest(server, app, config)


class MemoryMeter:
    """Traced-memory growth (current and peak) of everything allocated inside the block.

    ``tracemalloc`` counts Python allocations precisely (independent of what earlier tests
    left in the allocator's free lists, unlike RSS), at the price of slowing allocation-heavy
    code about 4x; floods are therefore sized in frames, not seconds.
    """

    def __init__(self, name: str, what: str = "") -> None:
        self.name = name
        self.what = what
        self.base = 0
        self.growth = 0
        self.peak_growth = 0
        self._started_here = False

    def __enter__(self) -> MemoryMeter:
        gc.collect()
        if not tracemalloc.is_tracing():
            tracemalloc.start(1)
            self._started_here = True
        self.base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        return self

    def __exit__(self, *exc: object) -> None:
        current, peak = tracemalloc.get_traced_memory()
        self.peak_growth = peak - self.base
        gc.collect()
        self.growth = tracemalloc.get_traced_memory()[0] - self.base
        if self._started_here:
            tracemalloc.stop()

    def check(self, bound: int) -> None:
        """Record the figure and assert the peak growth stayed within ``bound`` bytes."""
        FIGURES.append((self.name, self.what, self.peak_growth, bound))
        assert self.peak_growth <= bound, (
            f"{self.name}: server memory peak grew by {self.peak_growth / KiB:.0f} KiB "
            f"during the attack (bound {bound / KiB:.0f} KiB; still held "
            f"afterwards: {self.growth / KiB:.0f} KiB)"
        )


def pin_send_buffer(srv: ServerUnderTest, size: int = 64 * KiB) -> None:
    """Fix SO_SNDBUF of the server's accepted sockets (inherited from the listener).

    On loopback Linux autotunes a send buffer to megabytes, which would swallow the replies
    a non-reading attacker provokes before they ever reach the server's own queues.  A
    fixed, modest kernel buffer makes the server's user-space buffering -- the thing under
    test -- visible within a short test.
    """
    for sock in srv.server.sockets:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


class HealthProbe:
    """A healthy client on its own connection that keeps requesting ``/`` during an attack."""

    def __init__(self, port: int, *, interval: float = 0.05, timeout: float = 3.0) -> None:
        self.port = port
        self.interval = interval
        self.timeout = timeout
        self.ok = 0
        self.errors: list[str] = []
        self.max_latency = 0.0
        self._stop = False
        self._task: asyncio.Task[None] | None = None
        self._peer: rawpeer.RawPeer | None = None

    async def __aenter__(self) -> HealthProbe:
        self._peer = await rawpeer.RawPeer.connect(self.port)
        await self._peer.handshake()
        await self._one()  # the server must be healthy before the attack starts
        if self.errors:
            raise AssertionError(f"healthy client failed before the attack: {self.errors}")
        self.ok = 0
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def _one(self) -> None:
        assert self._peer is not None
        t0 = time.monotonic()
        try:
            resp = await self._peer.get("/", timeout=self.timeout)
        except (rawpeer.PeerError, OSError, asyncio.TimeoutError) as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}"[:2000])
            return
        latency = time.monotonic() - t0
        self.max_latency = max(self.max_latency, latency)
        if resp.status != "200" or bytes(resp.body) != b"ok":
            self.errors.append(f"bad answer: status={resp.status} body={bytes(resp.body)[:50]!r}")
        else:
            self.ok += 1

    async def _run(self) -> None:
        while not self._stop and not self.errors:
            await self._one()
            await asyncio.sleep(self.interval)

    async def __aexit__(self, *exc: object) -> None:
        self._stop = True
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, self.timeout + 2)
            except asyncio.TimeoutError:
                self.errors.append("probe task did not finish")
        if self._peer is not None:
            if not self.errors:
                await self._one()  # and once more after the attack, same connection
            await self._peer.close()

    def check(self, min_ok: int = 1) -> None:
        """Assert every request during the attack got its 200 and at least ``min_ok`` did."""
        assert not self.errors, f"healthy client failed during the attack: {self.errors[:3]}"
        assert self.ok >= min_ok, f"healthy client got only {self.ok} answers during the attack"


async def assert_still_serving(port: int) -> None:
    """A brand-new well-behaved connection still gets its 200 from the server."""
    resp = await rawpeer.fresh_get(port, "/", timeout=5.0)
    assert resp.status == "200" and bytes(resp.body) == b"ok", (resp.status, bytes(resp.body))


class Checks:
    """Soft assertions: collect every failed expectation, then fail once listing them all.

    An attack test checks four things (the answer, memory, the healthy client, handler
    cancellation); reporting all that failed, not just the first, tells the reader what the
    server actually did.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.failures: list[str] = []

    def expect(self, condition: object, message: str) -> bool:
        """Record ``message`` if ``condition`` is false; return the condition."""
        if not condition:
            self.failures.append(message)
        return bool(condition)

    async def run(self, label: str, awaitable: Any) -> Any:
        """Await ``awaitable``; an AssertionError becomes a recorded failure."""
        try:
            return await awaitable
        except AssertionError as exc:
            self.failures.append(f"{label}: {exc}")
            return None

    def call(self, label: str, fn: Any, *args: Any) -> Any:
        """Call ``fn(*args)``; an AssertionError becomes a recorded failure."""
        try:
            return fn(*args)
        except AssertionError as exc:
            self.failures.append(f"{label}: {exc}")
            return None

    def done(self) -> None:
        """Fail with every recorded failure, if any."""
        if self.failures:
            lines = "\n  - ".join(self.failures)
            raise AssertionError(f"{self.name}: {len(self.failures)} check(s) failed:\n  - {lines}")


async def attack_checks(
    checks: Checks,
    srv: ServerUnderTest,
    probe: HealthProbe,
    mem: MemoryMeter,
    bound: int,
    *,
    handlers_gone: float | None = 3.0,
) -> None:
    """The common tail of an attack test: memory (b), healthy client (c), handlers (d)."""
    checks.call("memory", mem.check, bound)
    checks.call("healthy client", probe.check)
    await checks.run("server after the attack", assert_still_serving(srv.port))
    if handlers_gone is not None:
        checks.expect(
            await srv.app.wait_idle(handlers_gone),
            f"handlers of the attacker's streams still running {handlers_gone}s after the "
            f"attack: {srv.app.describe()}",
        )
