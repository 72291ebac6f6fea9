"""Fuzz the frame path: random and mutated frame sequences into a live server connection.

Each hypothesis example opens a fresh connection, completes a valid handshake, then sends a
sequence of frames drawn from: well-formed frames of every type with random fields and
stream ids, request HEADERS for the app's routes, arbitrary (type, flags, stream, payload)
frames, frames whose length field lies, byte-mutated copies of valid frames, and raw bytes.
It then sends a PING and finally half-closes the socket.

For every example: the connection either stays usable (the PING is answered) or ends with a
GOAWAY (a silent close is not an answer); after our half-close the server closes its side
within a deadline (no connection is left hanging on an incomplete frame).  Over the whole
run: no exception reaches the event loop's exception handler (nothing escapes a reader
task), every handler task is gone at the end, no connection task outlives its connection,
and the memory held by the server's code (aioh2s, h2, hpack, hyperframe, asyncio) does not
grow with the number of connections.

The server runs in an event loop on a background thread so that hypothesis can drive plain
synchronous examples; examples never raise: they record problems, and the test reports up to
five failing examples at the end (no shrinking, so the run stays bounded in time).
"""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import threading
import time
import tracemalloc
from collections import Counter
from typing import Any

import pytest
import rawpeer as rp
from dosharness import KiB, start_test_server
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from rawpeer import RawPeer

pytestmark = pytest.mark.timeout(90)

MAX_EXAMPLES = 120
TIME_BUDGET = 20.0  # seconds for all examples; later examples are skipped (and counted)
LEAK_BOUND = 1024 * KiB
SERVER_CODE = ("aioh2s", os.sep + "h2" + os.sep, "hpack", "hyperframe", os.sep + "asyncio" + os.sep)
ROUTES = ["/", "/echo", "/hang", "/hang-read", "/hang-headers"]


class BackgroundLoop:
    """An event loop on a daemon thread; ``run(coro)`` waits for its result."""

    def __enter__(self) -> BackgroundLoop:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        return self

    def run(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def __exit__(self, *exc: object) -> None:
        async def _cancel_rest() -> None:
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in rest:
                t.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        try:
            self.run(_cancel_rest(), 5.0)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5.0)
            self.loop.close()


# --- strategies --------------------------------------------------------------------------------

stream_ids = st.sampled_from([0, 1, 2, 3, 5, 7, 9, 11, 0x7FFFFFFF, 0x80000001]) | st.integers(
    0, 2**32 - 1
)
client_streams = st.sampled_from([1, 3, 5, 7, 9, 11, 13])
error_codes = st.sampled_from([0, 1, 2, 3, 5, 7, 8, 11, 0xFF, 0xFFFFFFFF])
payloads = st.binary(max_size=48)


def _literal(index: int, value: bytes) -> bytes:
    # "Literal without indexing", name from the static table: stateless, so any example
    # can reuse it without desynchronising HPACK tables.
    return bytes([index]) + bytes([len(value)]) + value


def _request(sid: int, path: str, end_stream: bool) -> bytes:
    block = b"\x82\x86" + _literal(4, path.encode()) + _literal(1, b"127.0.0.1")
    return rp.headers_frame(sid, block, end_stream=end_stream)


requests = st.builds(_request, client_streams, st.sampled_from(ROUTES), st.booleans())
typed = st.one_of(
    st.builds(
        lambda s, p, e: rp.data(s, p, e), client_streams | stream_ids, payloads, st.booleans()
    ),
    requests,
    st.builds(lambda s, c: rp.rst(s, c), client_streams | stream_ids, error_codes),
    st.builds(
        lambda kv, ack: rp.settings(dict(kv), ack=ack),
        st.lists(st.tuples(st.integers(0, 10), st.integers(0, 2**32 - 1)), max_size=4),
        st.booleans(),
    ),
    st.builds(lambda o, ack: rp.ping(o, ack=ack), st.binary(min_size=8, max_size=8), st.booleans()),
    st.builds(lambda last, c: rp.goaway(last, c), stream_ids, error_codes),
    st.builds(
        rp.window_update, client_streams | st.just(0) | stream_ids, st.integers(0, 2**32 - 1)
    ),
    st.builds(
        lambda s, d, w, x: rp.priority(s, d, w, x),
        client_streams | stream_ids,
        stream_ids,
        st.integers(1, 256),
        st.booleans(),
    ),
    st.builds(lambda s, b, e: rp.continuation(s, b, e), client_streams, payloads, st.booleans()),
)
arbitrary = st.builds(
    lambda t, f, s, p: rp.raw_frame(t, f, s, p),
    st.integers(0, 255),
    st.integers(0, 255),
    stream_ids,
    payloads,
)
lying = st.builds(
    lambda t, f, s, p, n: rp.raw_frame(t, f, s, p, length=n),
    st.integers(0, 12),
    st.integers(0, 255),
    stream_ids,
    payloads,
    st.integers(0, 96),
)


def _mutate(frame: bytes, edits: list[tuple[int, int]]) -> bytes:
    buf = bytearray(frame)
    for pos, value in edits:
        buf[pos % len(buf)] = value
    return bytes(buf)


mutated = st.builds(
    _mutate,
    typed,
    st.lists(st.tuples(st.integers(0, 80), st.integers(0, 255)), min_size=1, max_size=3),
)
raw = st.binary(min_size=1, max_size=32)
sequences = st.lists(
    st.one_of(typed, typed, requests, arbitrary, lying, mutated, raw), min_size=1, max_size=12
)


# --- one example -------------------------------------------------------------------------------


async def _one(port: int, chunks: list[bytes]) -> tuple[str, str | None]:
    """Play one sequence; returns (outcome, problem or None)."""
    peer = await RawPeer.connect(port, track_streams=False, timeout=3.0)
    try:
        try:
            await peer.handshake(timeout=3.0)
        except rp.PeerError as exc:
            return "no-handshake", f"server did not complete a valid handshake: {exc}"
        await peer.try_send(b"".join(chunks))
        usable = await peer.ping(timeout=0.5)
        if usable:
            outcome = "usable"
        elif peer.goaway is not None:
            outcome = f"goaway {rp.code_name(peer.goaway.error_code)}"
        elif peer.eof:
            outcome = "closed"
        else:
            outcome = "waiting"  # e.g. inside a frame whose length lied: legitimate
        problem = None
        # After our own GOAWAY the server may just close (RFC 9113 section 6.8); otherwise
        # a connection error deserves a GOAWAY first (section 5.4.1).
        we_sent_goaway = any(len(c) >= 9 and c[3] == rp.GOAWAY for c in chunks)
        if outcome == "closed" and not we_sent_goaway:
            problem = f"server closed without GOAWAY: {peer.describe()}"
        # End of input: the server must end the connection, not wait for more frames.
        try:
            peer.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        if not await peer.closed(2.0) and problem is None:
            problem = f"server kept the connection open 2 s after our FIN: {peer.describe()}"
        return outcome, problem
    finally:
        await peer.close()


async def _settle(srv: Any, timeout: float) -> int:
    """Wait for handler and connection tasks to finish; return how many tasks remain."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if not tasks and not srv.app.running:
            return 0
        await asyncio.sleep(0.02)
    return len([t for t in asyncio.all_tasks() if t is not asyncio.current_task()])


def _server_bytes(snapshot: tracemalloc.Snapshot) -> int:
    return sum(
        stat.size
        for stat in snapshot.statistics("filename")
        if any(part in stat.traceback[0].filename for part in SERVER_CODE)
    )


def test_fuzz_frames() -> None:
    outcomes: Counter[str] = Counter()
    problems: list[str] = []
    skipped = 0
    with BackgroundLoop() as bg:
        srv = bg.run(start_test_server())
        started_tracing = not tracemalloc.is_tracing()
        if started_tracing:
            tracemalloc.start(1)
        try:
            for _ in range(5):  # warm caches (imports, HPACK tables, ...) before the baseline
                bg.run(rp.fresh_get(srv.port))
            bg.run(_settle(srv, 3.0))
            base_tasks = bg.run(_settle(srv, 0.1))
            base_bytes = _server_bytes(tracemalloc.take_snapshot())
            t0 = time.monotonic()

            @settings(
                max_examples=MAX_EXAMPLES,
                deadline=None,
                database=None,
                derandomize=bool(os.environ.get("CI")),
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(sequences)
            def example(chunks: list[bytes]) -> None:
                nonlocal skipped
                if time.monotonic() - t0 > TIME_BUDGET:
                    skipped += 1
                    return
                errors_before = len(srv.loop_errors)
                outcome, problem = bg.run(_one(srv.port, chunks), 15.0)
                outcomes[outcome] += 1
                if len(srv.loop_errors) > errors_before:
                    ctx = srv.loop_errors[-1]
                    problem = (problem or "") + (
                        f" unhandled exception reached the event loop: "
                        f"{ctx.get('message')} {ctx.get('exception')!r}"
                    )
                if problem and len(problems) < 5:
                    problems.append(f"{problem}\n      frames: {[c.hex() for c in chunks]}")
                elif problem:
                    problems.append("...")

            example()
            remaining = bg.run(_settle(srv, 5.0), 10.0)
            gc.collect()
            grown = _server_bytes(tracemalloc.take_snapshot()) - base_bytes
            running = len(srv.app.running)
            loop_errors = list(srv.loop_errors)
        finally:
            if started_tracing:
                tracemalloc.stop()
            bg.run(srv.close(), 10.0)

    summary = f"outcomes {dict(outcomes)}, skipped {skipped} (time budget)"
    print(f"fuzz: {summary}; server-code memory growth {grown / KiB:.0f} KiB")
    failures = []
    if problems:
        failures.append(f"{len(problems)} failing example(s):\n    " + "\n    ".join(problems[:5]))
    if loop_errors:
        failures.append(
            f"{len(loop_errors)} unhandled exception(s) reached the event loop: "
            f"{[c.get('message') for c in loop_errors[:3]]}"
        )
    if running:
        failures.append(f"{running} handler task(s) still running after all connections closed")
    if remaining > base_tasks:
        failures.append(f"{remaining - base_tasks} task(s) outlived their connections")
    if grown > LEAK_BOUND:
        failures.append(
            f"server-side memory grew by {grown / KiB:.0f} KiB over "
            f"{sum(outcomes.values())} connections (bound {LEAK_BOUND / KiB:.0f} KiB)"
        )
    assert sum(outcomes.values()) >= 20, f"too few examples ran: {summary}"
    assert not failures, f"fuzz ({summary}):\n  - " + "\n  - ".join(failures)
