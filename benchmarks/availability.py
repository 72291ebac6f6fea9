"""Availability under attack: does an aioh2s server with default settings keep serving?

Theory of operation
-------------------
Each row is one attack against a fresh server process (``taskset -c 0 python
benchmarks/availability_server.py``: ``aioh2s.start_server`` with no options, so every limit
is a default; that is what is under test). This process pins itself to CPU 1 and raises its
descriptor soft limit to the hard limit (the server inherits it, so its default connection
cap is derived from the same limit). Per row:

1. start the server, make one warm-up request, read the server's VmRSS and CPU time;
2. start together the attacker (one coroutine per connection in this event loop), a cut
   watcher, a thread sampling the server's VmRSS every 50 ms, and the healthy client: a
   process of its own, also on CPU 1 (so it waits for neither this process's GIL nor its
   loop) that every 200 ms opens a new TCP connection, does the HTTP/2 handshake and
   ``GET /5``, with 2 s for all of it;
3. after ``--seconds`` cancel the attacker and take the cut verdict, let the healthy client's
   last requests finish, close every socket and kill the server (it also has ``--lifetime``).

Everything speaks raw HTTP/2 through ``tests/adversarial/rawpeer.py`` (exact bytes out,
frames parsed in). A connection is *cut* when the server closed it: EOF seen by its reader
or, for a connection that does not read, its TCP state (``TCP_INFO``) leaving ESTABLISHED
(FIN or RST arrived). A connection's clock starts when its abusive pattern starts (after its
handshake); the target allows 2 s past the limit that applies (0 s for budgets that trip at
once, the timeout for slow patterns). "n/a": that timeout had not passed when the row ended;
"none" in the limit column: the attack stays within every default limit.

Caveats: the attacker shares CPU 1 with the healthy client, so an attack that saturates this
process slows the healthy client too ("client lag" in the notes: how late it started its
requests); RSS growth includes memory the allocator keeps after the server freed it.

    python benchmarks/availability.py [--seconds 10] [--only KEY|NUMBER ...]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import contextlib
import functools
import math
import multiprocessing
import os
import platform
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests" / "adversarial"))

import h2  # noqa: E402
import rawpeer as rp  # noqa: E402
from hpack.hpack import encode_integer  # noqa: E402
from rawpeer import RawPeer  # noqa: E402

from aioh2s import Config  # noqa: E402

KiB, MiB = 1024, 1024 * 1024
D = Config()  # the defaults under test
HEALTH_PERIOD, HEALTH_TIMEOUT = 0.2, 2.0
TARGET_OK, TARGET_P99_MS, TARGET_RSS, TARGET_CUT = 99.0, 250.0, 64 * MiB, 2.0
ROW_SLACK = 45.0  # hard timeout of a row: --seconds plus this

# HPACK blocks (RFC 7541) built by hand, so sizes are exact. Both request heads weigh 175
# bytes under the 32-bytes-per-field rule (":method GET" 42 + ":path /5" 39, or ":method
# POST" 43 + ":path /" 38, plus ":scheme http" 43 and ":authority 127.0.0.1" 51).
AUTHORITY = b"\x01\x09127.0.0.1"  # literal without indexing, name = static index 1
GET_5 = b"\x82\x86\x04\x02/5" + AUTHORITY  # :method GET, :scheme http, :path /5
POST_ROOT = b"\x83\x86\x84" + AUTHORITY  # :method POST, :scheme http, :path /
HEAD_SIZE = 175
AT_LIMIT_FIELDS = (D.max_header_list_size - HEAD_SIZE) // 37  # 1,766 (+4 pseudo) at 64 KiB


def tiny_fields(n: int) -> bytes:
    """``n`` literal fields ``x: 0000``, ``x: 0001``.. (8 bytes on the wire, 37 in the list)."""
    return b"".join(b"\x00\x01x\x04%04d" % (i % 10_000) for i in range(n))


def block_frames(sid: int, block: bytes, size: int, *, end_stream: bool = False,
                 end_headers: bool = True) -> bytes:
    """``block`` as HEADERS + CONTINUATION frames of at most ``size`` bytes each."""
    parts = [block[i : i + size] for i in range(0, len(block), size)] or [b""]
    last = len(parts) - 1
    out = [rp.headers_frame(sid, parts[0], end_stream=end_stream,
                            end_headers=end_headers and last == 0)]
    out += [rp.continuation(sid, p, end_headers=end_headers and i == last)
            for i, p in enumerate(parts[1:], 1)]
    return b"".join(out)


# --- The attack context: connections, their clocks, the cut watcher --------------------------


class Conn:
    """One attacking connection: its peer, when its pattern started, when it was cut."""

    __slots__ = ("peer", "t0", "cut_at", "refused", "retired")

    def __init__(self, peer: RawPeer) -> None:
        self.peer, self.t0, self.cut_at = peer, time.monotonic(), None
        self.refused = self.retired = False

    def check(self, now: float) -> None:
        """Note the cut: EOF seen, or (not reading) FIN or RST arrived, read up to or not."""
        if self.cut_at is not None or self.refused or self.retired:
            return
        try:
            state = self.peer.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]
        except OSError:
            state = 7  # TCP_CLOSE
        if self.peer.eof or state not in (1, 2):  # TCP_ESTABLISHED, TCP_SYN_SENT
            self.cut_at = self.peer.eof_at or now


class Attack:
    """What a row's attacker shares with the harness: port, clock, connections, counters."""

    def __init__(self, seconds: float) -> None:
        self.port, self.seconds = 0, seconds
        self.start = self.end = 0.0
        self.conns: list[Conn] = []
        self.refused = 0
        self.sent: collections.Counter[str] = collections.Counter()

    def begin(self) -> None:
        self.start = time.monotonic()
        self.end = self.start + self.seconds

    @property
    def left(self) -> float:
        return max(0.0, self.end - time.monotonic())

    async def open(self, *, autoread: bool = True, rcvbuf: int | None = None) -> Conn | None:
        """Connect and handshake; None (counted as refused) if the server would not."""
        try:
            peer = await RawPeer.connect(self.port, rcvbuf=rcvbuf, autoread=autoread,
                                         track_streams=False, timeout=5.0)
        except (OSError, asyncio.TimeoutError):
            self.refused += 1
            return None
        c = Conn(peer)
        self.conns.append(c)
        try:
            await peer.handshake(timeout=5.0)
        except (rp.PeerError, OSError, asyncio.TimeoutError):
            c.refused = True
            self.refused += 1
            await peer.close()
            return None
        c.t0 = time.monotonic()  # the pattern starts now unless the attacker says otherwise
        return c

    async def retire(self, c: Conn) -> None:
        """Done with a connection before the row ends: note a cut, close it."""
        c.check(time.monotonic())
        c.retired = True
        await c.peer.close()

    async def flood(self, c: Conn, blob: bytes, what: str, count: int) -> None:
        """Send ``blob`` (``count`` frames) back to back until the row ends or the server cuts."""
        while self.left > 0 and not c.peer.eof:
            if not await c.peer.try_send(blob, timeout=1.0):
                break  # closed, or the server stopped reading for 1 s
            self.sent[what] += count
            await asyncio.sleep(0)  # let the readers (and the watcher) run

    def tally(self, results: list[object]) -> None:
        for r in results:
            if isinstance(r, Exception):
                self.sent[f"attacker error {type(r).__name__}"] += 1

    async def fan_out(self, n: int, body: Callable[[Conn, int], Awaitable[None]] | None, *,
                      concurrency: int = 100, **open_kw: object) -> None:
        """Open ``n`` connections (``concurrency`` at a time), run ``body`` on each, hold."""
        sem = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with sem:
                c = await self.open(**open_kw)  # type: ignore[arg-type]
            if c is not None and body is not None:
                await body(c, i)
            await asyncio.sleep(self.left)

        self.tally(await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True))


async def watch(a: Attack) -> None:
    """Poll every connection for its cut until cancelled."""
    while True:
        now = time.monotonic()
        for c in a.conns:
            c.check(now)
        await asyncio.sleep(0.05 if len(a.conns) < 1000 else 0.25)


# --- The attackers, one per row --------------------------------------------------------------


async def ping_flood_unread(a: Attack) -> None:
    async def body(c: Conn, i: int) -> None:
        await a.flood(c, rp.ping() * 128, "PING", 128)

    await a.fan_out(50, body, autoread=False, rcvbuf=4096)


async def tiny_field_streams(a: Attack) -> None:
    block = POST_ROOT + tiny_fields(AT_LIMIT_FIELDS)

    async def body(c: Conn, i: int) -> None:
        for _ in range(100):  # POST without END_STREAM: each stream stays open
            frames = block_frames(c.peer.new_stream_id(), block, c.peer.max_frame_size)
            if not await c.peer.try_send(frames, timeout=1.0):
                break
            a.sent["HEADERS (1,770 fields)"] += 1

    await a.fan_out(20, body)


async def hpack_amplification(a: Attack) -> None:
    async def body(c: Conn, i: int) -> None:
        p = c.peer
        value = b"v" * min(4050, p.server_settings.get(rp.HEADER_TABLE_SIZE, 4096) - 37)
        # Stream 1 stores ("x-big", value) at dynamic index 62 (0xbe: literal with incremental
        # indexing, new name) and references it 14 times; every later block is 29 bytes: the
        # POST head plus 15 one-byte references.
        store = b"\x40\x05x-big" + bytes(encode_integer(len(value), 7)) + value
        seed = POST_ROOT + store + b"\xbe" * 14
        ref = POST_ROOT + b"\xbe" * 15
        n = min(100, p.server_settings.get(rp.MAX_CONCURRENT_STREAMS, 100))
        out = rp.headers_frame(p.new_stream_id(), seed)
        out += b"".join(rp.headers_frame(p.new_stream_id(), ref) for _ in range(n - 1))
        if await p.try_send(out):
            a.sent[f"HEADERS ({len(ref)} B -> {15 * (len(value) + 37) + HEAD_SIZE:,} B)"] += n

    await a.fan_out(50, body)


async def at_limit_lists(a: Attack) -> None:
    block = GET_5 + tiny_fields(AT_LIMIT_FIELDS)

    async def body(c: Conn, i: int) -> None:
        p, sent = c.peer, 0
        limit = p.server_settings.get(rp.MAX_CONCURRENT_STREAMS, 100)
        while a.left > 0 and not p.eof:
            done = p.counts[rp.HEADERS] + p.rst_count  # one response HEADERS per request
            room = limit - (sent - done)
            if room <= 0:  # as fast as allowed: never more than the stream limit in flight
                await p.wait_for(lambda q, d=done: q.counts[rp.HEADERS] + q.rst_count > d
                                 or q.eof, min(1.0, a.left))
                continue
            out = b"".join(block_frames(p.new_stream_id(), block, p.max_frame_size,
                                        end_stream=True) for _ in range(room))
            if not await p.try_send(out, timeout=1.0):
                break
            sent += room
            a.sent["GET (1,770 fields)"] += room

    await a.fan_out(1, body)


async def size_update_blocks(a: Attack) -> None:
    async def body(c: Conn, i: int) -> None:
        p = c.peer
        size = 9 * p.max_frame_size  # 147,456 bytes with the default frame size
        block = b"\x20" * (size - len(GET_5)) + GET_5  # size updates (to 0), then a request
        while a.left > 0 and not p.eof:
            out = block_frames(p.new_stream_id(), block, p.max_frame_size, end_stream=True)
            if not await p.try_send(out, timeout=1.0):
                break
            a.sent[f"{size:,} B blocks"] += 1
            await asyncio.sleep(0)

    await a.fan_out(1, body)


async def rapid_reset(a: Attack) -> None:
    burst, rate = int(D.max_reset_burst * 0.9), D.max_reset_rate * 0.9

    def pairs(p: RawPeer, k: int) -> bytes:
        sids = [p.new_stream_id() for _ in range(k)]
        return b"".join(rp.headers_frame(s, GET_5, end_stream=True) + rp.rst(s) for s in sids)

    async def body(c: Conn, i: int) -> None:
        p = c.peer
        sent = 0
        while a.left > 0 and not p.eof:
            due = burst + int((time.monotonic() - c.t0) * rate)
            if due > sent:
                if not await p.try_send(pairs(p, due - sent), timeout=1.0):
                    break
                a.sent["HEADERS+RST_STREAM pairs"] += due - sent
                sent = due
            await asyncio.sleep(0.1)

    await a.fan_out(100, body)


async def continuation_flood(a: Attack) -> None:
    start = rp.headers_frame(1, GET_5, end_stream=True, end_headers=False)
    blob = rp.continuation(1, b"\x00\x01x\x00") * 1000  # 4-byte fragments (field "x: ")

    async def worker() -> None:
        while a.left > 0:
            c = await a.open()
            if c is None:
                await asyncio.sleep(0.05)
                continue
            if await c.peer.try_send(start):
                await a.flood(c, blob, "CONTINUATION", 1000)
                await c.peer.closed(timeout=min(TARGET_CUT + 0.5, a.left))
            await a.retire(c)  # cut (or given up on): reconnect

    a.tally(await asyncio.gather(*(worker() for _ in range(100)), return_exceptions=True))


async def unfinished_blocks(a: Attack) -> None:
    head = GET_5 + b"\x00\x05x-pad" + bytes(encode_integer(1 << 20, 7))  # a 1 MiB value...
    block = head + b"a" * (96 * KiB - len(head))  # ...of which 96 KiB arrive, then silence

    async def body(c: Conn, i: int) -> None:
        out = block_frames(1, block, c.peer.max_frame_size, end_stream=True, end_headers=False)
        if await c.peer.try_send(out):
            a.sent["unfinished 96 KiB blocks"] += 1

    await a.fan_out(500, body)


async def byte_per_second_headers(a: Attack) -> None:
    frame = rp.headers_frame(1, GET_5, end_stream=True)

    async def body(c: Conn, i: int) -> None:
        for k in range(len(frame)):
            if a.left <= 0 or c.peer.eof or not await c.peer.try_send(frame[k : k + 1]):
                break
            a.sent["HEADERS bytes"] += 1
            await asyncio.sleep(min(1.0, a.left))

    await a.fan_out(200, body)


async def idle_connections(a: Attack) -> None:
    await a.fan_out(5000, None, concurrency=256, autoread=False)  # handshake, then hold


async def slow_bodies(a: Attack) -> None:
    async def body(c: Conn, i: int) -> None:
        p = c.peer
        sids = [p.new_stream_id()
                for _ in range(min(100, p.server_settings.get(rp.MAX_CONCURRENT_STREAMS, 100)))]
        if not await p.try_send(b"".join(rp.headers_frame(s, POST_ROOT) for s in sids)):
            return
        a.sent["POST streams"] += len(sids)
        tick = b"".join(rp.data(s, b"x") for s in sids)
        await asyncio.sleep(min(i / 100, a.left))  # spread the connections over the second
        while a.left > 0 and not p.eof:
            if not await p.try_send(tick, timeout=1.0):
                break
            a.sent["DATA (1 byte)"] += len(sids)
            await asyncio.sleep(min(1.0, a.left))

    await a.fan_out(100, body)


async def control_floods(a: Attack) -> None:
    kinds = [("PING", rp.ping()), ("SETTINGS", rp.settings())]

    async def body(c: Conn, i: int) -> None:
        name, frame = kinds[i]
        await a.flood(c, frame * 64, name, 64)

    await a.fan_out(2, body)


@dataclass
class Row:
    num: int
    key: str
    title: str
    attack: Callable[[Attack], Awaitable[None]]
    limit: str  # the default limit that should end the attack
    allow: float | None  # seconds that limit grants after the pattern starts (None: no limit)


CONTROL = f"PING/SETTINGS budget {D.max_control_burst} + {D.max_control_rate:g}/s"
FIELDS = f"max_header_fields {D.max_header_fields}"
BLOCK = f"header block {D.header_block_limit // KiB} KiB"
REQ_MEM = getattr(D, "max_request_memory", None)  # new in 0.1: a server-wide budget
ROWS = [
    Row(1, "ping-unread", "50 conns flood PING, never read (SO_RCVBUF 4 KiB)",
        ping_flood_unread, f"{CONTROL}; {D.max_queued_control} unread replies", 0.0),
    Row(2, "tiny-fields", "20 conns x 100 open streams, 64 KiB lists of 1,770 tiny fields",
        tiny_field_streams, FIELDS, 0.0),
    Row(3, "hpack-amplification", "50 conns x 100 open streams, 29 B blocks -> 61.5 KB lists",
        hpack_amplification, f"max_request_memory {REQ_MEM // MiB} MiB refuses streams; the "
        f"open ones (no body yet) min_body_rate, {D.body_rate_grace:g} s", D.body_rate_grace),
    Row(4, "at-limit-lists", "1 conn, 1,770-field requests as fast as allowed",
        at_limit_lists, FIELDS, 0.0),
    Row(5, "size-updates", "1 conn, 147 KB blocks of HPACK size updates, repeatedly",
        size_update_blocks, f"{FIELDS}; {BLOCK}", 0.0),
    Row(6, "rapid-reset", "100 conns Rapid Reset under budget (900 burst, then 30/s)",
        rapid_reset, f"none (reset budget {D.max_reset_burst} + {D.max_reset_rate:g}/s)", None),
    Row(7, "continuation-flood", "100 parallel CONTINUATION floods (4 B frames), reconnecting",
        continuation_flood, f"h2's 64-frame backlog; {BLOCK}", 0.0),
    Row(8, "unfinished-block", "500 conns each hold an unfinished 96 KiB header block",
        unfinished_blocks, f"header_timeout {D.header_timeout:g} s", D.header_timeout),
    Row(9, "slow-headers", "200 conns send a HEADERS frame at 1 byte/s",
        byte_per_second_headers, f"header_timeout {D.header_timeout:g} s", D.header_timeout),
    Row(10, "idle", "5,000 idle conns after a valid handshake", idle_connections,
        f"idle_timeout {D.idle_timeout:g} s (idle_near_cap {D.idle_near_cap:g} s above 3/4 of"
        " the cap)", D.idle_timeout),
    Row(11, "slow-body", "100 conns x 100 POST streams, body 1 byte/s each",
        slow_bodies, f"min_body_rate {D.min_body_rate:g} B/s per {D.body_rate_grace:g} s of "
        "waiting", D.body_rate_grace),
    Row(12, "control-floods", "PING flood and SETTINGS flood, reading replies (1 conn each)",
        control_floods, CONTROL, 0.0),
]


# --- Measurement: the server process, its memory, the healthy client -------------------------


def proc_stat(pid: int) -> tuple[int, float]:
    """(VmRSS bytes, user+system CPU seconds) of a process; zeros once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0, 0.0
    rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) * KiB  # type: ignore[union-attr]
    return rss, (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    """The server under test, pinned to CPU 0; its stderr goes to a temporary file."""

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self.log = tempfile.TemporaryFile()
        self.port = self.pid = self.max_connections = self.max_rss = 0
        self.sampling = threading.Event()

    async def start(self, lifetime: float) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT / "src"), str(HERE)] + ([env["PYTHONPATH"]] if "PYTHONPATH" in env else []))
        argv = [sys.executable, str(HERE / "availability_server.py"), "--port", "0",
                "--lifetime", f"{lifetime:.0f}"]
        if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
            argv = ["taskset", "-c", "0", *argv]
        self.proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=self.log, env=env)
        self.pid = self.proc.pid
        for _ in range(2):  # LISTENING <port>, MAX_CONNECTIONS <n>
            line = await asyncio.wait_for(self.proc.stdout.readline(), 15)  # type: ignore
            word, _, value = line.decode().partition(" ")
            if word not in ("LISTENING", "MAX_CONNECTIONS"):
                raise RuntimeError(f"server said {line!r}")
            setattr(self, "port" if word == "LISTENING" else "max_connections", int(value))

    def sample(self) -> None:
        """Thread body: the highest VmRSS until ``sampling`` is cleared."""
        self.sampling.set()
        while self.sampling.is_set():
            self.max_rss = max(self.max_rss, proc_stat(self.pid)[0])
            time.sleep(0.05)

    async def stop(self) -> collections.Counter[str]:
        """Kill the server; return why it closed connections (its warnings)."""
        self.sampling.clear()
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self.log.seek(0)
        text = self.log.read().decode(errors="replace")
        self.log.close()
        why = collections.Counter(m.group(1) for m in re.finditer(
            r"closing connection from .*?\): (.*)", text))
        why.update(line.strip()[:90] for line in text.splitlines()
                   if "max_connections" in line or "Traceback" in line)
        return why


@functools.cache
def health_pool() -> concurrent.futures.ProcessPoolExecutor:
    """The process the healthy client runs in, started (and warmed up) on first use.

    Its own process, not a thread here: a thread waited for this process's GIL, up to
    120 ms whenever the attacker's coroutines or its garbage collector held it, and that
    is no measure of the server.
    """
    pool = concurrent.futures.ProcessPoolExecutor(
        1, mp_context=multiprocessing.get_context("spawn"))
    pool.submit(os.getpid).result()  # the process is up and this module imported
    return pool


class Health:
    """The healthy client: a request every HEALTH_PERIOD on a fresh connection (own process)."""

    def __init__(self, port: int, seconds: float) -> None:
        self.port = port
        self.latencies: list[float] = []
        # The three slowest: (latency, start in s into the row, ms spent per phase).
        self.slowest: list[tuple[float, float, str]] = []
        self.failures: collections.Counter[str] = collections.Counter()
        self.max_lag = 0.0
        asyncio.run(self.run(seconds))

    async def run(self, seconds: float) -> None:
        start, tasks = time.monotonic(), []
        self.start = start
        for k in range(max(1, round(seconds / HEALTH_PERIOD))):
            await asyncio.sleep(max(0.0, start + k * HEALTH_PERIOD - time.monotonic()))
            tasks.append(asyncio.ensure_future(self.one(start + k * HEALTH_PERIOD)))
        await asyncio.gather(*tasks)

    async def one(self, at: float) -> None:
        t = time.monotonic()
        self.max_lag = max(self.max_lag, t - at)
        peer: RawPeer | None = None
        phase = "connect"
        marks = [t]

        async def attempt() -> rp.Response:
            nonlocal peer, phase
            peer = await RawPeer.connect(self.port, timeout=HEALTH_TIMEOUT)
            phase = "handshake"
            marks.append(time.monotonic())
            await peer.handshake(timeout=HEALTH_TIMEOUT)
            phase = "GET"
            marks.append(time.monotonic())
            return await peer.get("/5", timeout=HEALTH_TIMEOUT)

        try:
            resp = await asyncio.wait_for(attempt(), HEALTH_TIMEOUT)
            if resp.status != "200" or len(resp.body) != 5:
                raise rp.PeerError(f"answer: status {resp.status}, {len(resp.body)} bytes")
            marks.append(time.monotonic())
            self.latencies.append(marks[-1] - t)
            steps = zip(marks[:-1], marks[1:], strict=True)
            phases = "/".join(f"{(b - a) * 1000:.0f}" for a, b in steps)
            self.slowest = sorted(self.slowest + [(marks[-1] - t, t - self.start, phases)])[-3:]
        except asyncio.TimeoutError:
            self.failures[f"timeout in {phase}"] += 1
        except rp.PeerError as e:
            self.failures[(str(e).split(": ") + ["?"])[1][:40]] += 1
        except OSError as e:
            self.failures[type(e).__name__] += 1
        finally:
            if peer is not None:
                await peer.close()


# --- One row, its verdicts, the table --------------------------------------------------------


def mark(ok: bool | None) -> str:
    return "n/a" if ok is None else "ok" if ok else "**MISS**"


def secs(t: float) -> str:
    return f"{t * 1000:.0f} ms" if t < 1 else f"{t:.1f} s"


def cut_verdict(row: Row, a: Attack) -> tuple[str, bool | None]:
    """The cut cell: what happened, and ok / MISS / None (n/a: no timeout had passed)."""
    conns = [c for c in a.conns if not c.refused]
    if not conns:
        return "no attacking connection was accepted", None
    grant = (row.allow or 0.0) + TARGET_CUT
    ttc = sorted(c.cut_at - c.t0 for c in conns if c.cut_at is not None)
    still = [c for c in conns if c.cut_at is None]
    # Still open, but its limit had not run out (plus the 2 s) when the row ended: no verdict.
    pending = [c for c in still if row.allow is not None and a.end - c.t0 < grant]
    overdue = len(still) - len(pending)
    if row.key == "continuation-flood":
        text = f"{len(conns):,} instances, {len(ttc):,} cut"
        text += f"; median {secs(ttc[len(ttc) // 2])}, max {secs(ttc[-1])}" if ttc else ""
        text += f"; {overdue} not cut" if overdue else ""
        text += f"; {len(pending)} still running at the end" if pending else ""
    elif still:
        text = f"not cut: {len(still):,} of {len(conns):,} still open"
        text += f" ({len(ttc):,} cut, slowest {secs(ttc[-1])})" if ttc else ""
    else:
        last = max(c.cut_at for c in conns) - a.start  # type: ignore[type-var]
        text = f"all {len(conns):,} cut by {secs(last)} (slowest {secs(ttc[-1])} after its start)"
    if overdue or (ttc and ttc[-1] > grant):
        return text, False
    if not ttc:
        return text + "; the timeout had not passed", None
    return text, True


async def run_row(row: Row, seconds: float) -> dict[str, str]:
    server, a = Server(), Attack(seconds)
    tasks: list[asyncio.Future[object]] = []
    try:
        await server.start(lifetime=seconds + ROW_SLACK + 60)
        a.port = server.port
        await rp.fresh_get(server.port, "/5", timeout=5.0)  # warm-up: lazy imports, caches
        rss0, cpu0 = proc_stat(server.pid)
        threading.Thread(target=server.sample, daemon=True).start()
        a.begin()
        health_f = asyncio.get_running_loop().run_in_executor(
            health_pool(), Health, server.port, seconds)
        attack = asyncio.ensure_future(row.attack(a))
        tasks = [asyncio.ensure_future(watch(a)), attack, health_f]
        await asyncio.wait([attack], timeout=a.left)
        attack.cancel()
        await asyncio.wait([attack], timeout=5)
        for c in a.conns:
            c.check(time.monotonic())
        cut_text, cut_ok = cut_verdict(row, a)
        open_at_end = [c for c in a.conns if c.cut_at is None and not (c.refused or c.retired)]
        health = await health_f
        for c in open_at_end:
            c.check(time.monotonic())
        cut_later = sum(c.cut_at is not None for c in open_at_end)
        rss, cpu = server.max_rss - rss0, proc_stat(server.pid)[1] - cpu0
    finally:
        for t in tasks:
            t.cancel()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.gather(
                *(c.peer.close() for c in a.conns), return_exceptions=True), 10)
        for c in a.conns:
            c.peer.sock.close()
        reasons = await server.stop()
    lat = sorted(health.latencies)
    total = len(lat) + sum(health.failures.values())
    ok_pct = 100.0 * len(lat) / total if total else 0.0
    p50 = lat[len(lat) // 2] * 1000 if lat else math.nan
    p99 = lat[max(0, math.ceil(0.99 * len(lat)) - 1)] * 1000 if lat else math.nan
    accepted = sum(not c.refused for c in a.conns)
    notes = [f"conns {accepted + a.refused:,} tried: {accepted:,} accepted, {a.refused:,} refused"]
    notes += [f"server cap {server.max_connections:,}"] if row.key == "idle" else []
    notes += [f"{cut_later:,} more cut after the row ended"] if cut_later else []
    notes += [f"sent {k} {v:,}" for k, v in a.sent.items()]
    notes += [f"server: {n:,}x {why}" for why, n in reasons.most_common(3)]
    notes += [f"server CPU {cpu:.1f} s; client lag max {health.max_lag * 1000:.0f} ms"]
    notes += ["slowest healthy requests (ms connect/handshake/GET) " + ", ".join(
        f"{lat * 1000:.0f} ms at {at:.1f} s ({ph})" for lat, at, ph in reversed(health.slowest))]
    notes += [", ".join(f"{k} x{v}" for k, v in health.failures.items())] * bool(health.failures)
    return {
        "row": f"{row.num}. {row.title}", "ok": f"{ok_pct:.1f}% {mark(ok_pct >= TARGET_OK)}",
        "p50": f"{p50:.0f}", "p99": f"{p99:.0f} {mark(p99 <= TARGET_P99_MS)}",
        "rss": f"{rss / MiB:+.1f} MiB {mark(rss <= TARGET_RSS)}",
        "cut": f"{cut_text} {mark(cut_ok)}", "limit": row.limit,
        "failed": f"{total - len(lat)} of {total} {mark(total == len(lat))}",
        "notes": "; ".join(notes),
    }


COLUMNS = {
    "row": "attack", "ok": f"healthy ok (>= {TARGET_OK:g}%)", "p50": "p50 ms",
    "p99": f"p99 ms (<= {TARGET_P99_MS:g})", "rss": f"RSS growth (<= {TARGET_RSS // MiB} MiB)",
    "cut": f"attackers cut (<= {TARGET_CUT:g} s past the limit)", "limit": "limit that applies",
    "failed": "healthy failed (0)", "notes": "notes",
}


def report(results: list[dict[str, str]], seconds: float, took: float, load: str) -> str:
    rev = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                         capture_output=True, text=True).stdout.strip()
    cpu = re.findall(r"model name\s*: (.*)", Path("/proc/cpuinfo").read_text())[0]
    lines = [
        f"aioh2s {rev} with default settings; {cpu}, {os.cpu_count()} CPUs (server on CPU 0, "
        f"attacker and healthy client on CPU 1); Python {platform.python_version()}, h2 "
        f"{h2.__version__}; {seconds:g} s of attack per row; the run took {took:.0f} s; load "
        f"average {load} (start, end; the machine is shared).", "",
        f"Healthy client: every {HEALTH_PERIOD * 1000:.0f} ms a new connection, handshake and "
        f"GET /5, {HEALTH_TIMEOUT:g} s for all of it. Targets: healthy success >= "
        f"{TARGET_OK:g}%, p99 <= {TARGET_P99_MS:g} ms, server RSS growth (max VmRSS during the "
        f"row minus VmRSS before) <= {TARGET_RSS // MiB} MiB, every attacking connection cut "
        f"within {TARGET_CUT:g} s once its pattern is clear (after the limit that applies), no "
        "healthy request failed. n/a: the timeout that applies had not passed when the row "
        "ended.", "",
        "| " + " | ".join(COLUMNS.values()) + " |", "|" + "---|" * len(COLUMNS),
    ]
    lines += ["| " + " | ".join(r[k].replace("|", "/") for k in COLUMNS) + " |" for r in results]
    return "\n".join(lines) + "\n"


async def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=10.0, help="attack duration per row")
    p.add_argument("--only", action="append", default=[], metavar="SUBSTR",
                   help="rows whose key or title contains SUBSTR, or row NUMBER (repeatable)")
    args = p.parse_args(argv)
    rows = [r for r in ROWS if not args.only or any(
        s == str(r.num) if s.isdigit() else s.lower() in f"{r.key} {r.title}".lower()
        for s in args.only)]
    if not rows:
        p.error(f"no row matches {args.only}; rows: {', '.join(r.key for r in ROWS)}")
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) > 1:
        os.sched_setaffinity(0, {cpus[1]})  # threads started later inherit it
    sys.setswitchinterval(0.001)  # the RSS sampler's thread gets the GIL back sooner
    health_pool()  # started before the first row, so that it misses no row's first second
    began, results, load0 = time.monotonic(), [], os.getloadavg()[0]
    for row in rows:
        t = time.monotonic()
        try:
            r = await asyncio.wait_for(run_row(row, args.seconds), args.seconds + ROW_SLACK)
        except Exception as e:  # a broken row must not lose the others
            why = "hard timeout" if isinstance(e, asyncio.TimeoutError) else repr(e)
            r = dict.fromkeys(COLUMNS, "") | {"row": f"{row.num}. {row.title}",
                                               "notes": f"**row failed: {why}**"}
        results.append(r)
        print(f"row {row.num} ({row.key}) took {time.monotonic() - t:.1f} s: "
              + "; ".join(f"{k}={r[k]}" for k in list(COLUMNS)[1:-1]), flush=True)
    load = f"{load0:.2f}, {os.getloadavg()[0]:.2f}"
    text = report(results, args.seconds, time.monotonic() - began, load)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    path = out / f"availability-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.md"
    path.write_text("# aioh2s availability under attack\n\n" + text)
    print(f"\n{text}\nwritten to {path}")
    health_pool().shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
