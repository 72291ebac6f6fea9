"""Tools for tests/test_lb.py: aioh2s workers, h2load bursts and HAProxy as subprocesses.

Theory of operation
-------------------
:class:`Workers` runs ``aioh2s.serve("lb_app:handler", ..., workers=N)`` in a child Python
and reads the supervisor's log on its stderr, each line stamped with the time it arrived
(the tests measure how long an old worker takes to stop). :func:`h2load` runs one
``h2load`` to completion and parses its summary into :class:`Load`; :func:`load_until`
repeats such bursts back to back until told to stop, so the load lasts exactly as long as
the rollouts it covers, whatever the machine's speed, and every burst finishes all of its
requests (a duration-bound ``h2load -D`` abandons those in flight at its end, which the
proxy then logs as client aborts). :func:`haproxy_stats` reads ``show stat`` from HAProxy's
stats socket. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import os
import re
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join((str(ROOT / "src"), str(TESTS)))}
SERVE = """
import logging, sys
import aioh2s
logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                    format="%(name)s %(levelname)s %(message)s")
aioh2s.serve("lb_app:handler", "127.0.0.1", 0, workers={workers}, grace={grace})
"""


class Workers:
    """A supervisor process serving tests/lb_app.py, and its log lines as they arrive."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[tuple[float, str]] = []  # (time.monotonic() on arrival, line)
        self._more = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())
        self.port = 0
        self.pids: set[int] = set()

    @classmethod
    async def start(cls, workers: int = 2, grace: float = 10.0) -> Workers:
        """Start the supervisor and wait until it serves (its port and pids known)."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", SERVE.format(workers=workers, grace=grace),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, env=ENV,
        )
        self = cls(proc)
        try:
            m = await self.line(r"serving http://127\.0\.0\.1:(\d+) with \d+ worker\(s\) "
                                r"\(pids ([\d, ]+)\)")
        except BaseException:
            await self.close()
            raise
        self.port = int(m.group(1))
        self.pids = {int(p) for p in m.group(2).split(", ")}
        return self

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            self.lines.append((time.monotonic(), raw.decode(errors="replace").rstrip("\n")))
            self._more.set()
        self._more.set()

    async def line(self, pattern: str, after: int = 0, timeout: float = 30) -> re.Match[str]:
        """The first log line from index ``after`` on that matches ``pattern``."""
        return (await self.stamped_line(pattern, after, timeout))[1]

    async def stamped_line(self, pattern: str, after: int = 0,
                           timeout: float = 30) -> tuple[float, re.Match[str]]:
        """Like :meth:`line`, with the time the line arrived."""
        async def find() -> tuple[float, re.Match[str]]:
            i = after
            while True:
                while i < len(self.lines):
                    m = re.search(pattern, self.lines[i][1])
                    if m:
                        return self.lines[i][0], m
                    i += 1
                if self._reader.done():
                    raise AssertionError(pattern)
                self._more.clear()
                await self._more.wait()
        try:
            return await asyncio.wait_for(find(), timeout)
        except (AssertionError, asyncio.TimeoutError):
            pytest.fail(f"no log line matching {pattern!r}; the log:\n" + self.log())

    def log(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    async def rollout(self) -> set[int]:
        """SIGHUP, then wait for the rolling restart to finish: the new workers' pids."""
        mark = len(self.lines)
        self.signal(signal.SIGHUP)
        done = await self.line(r"rolling restart done \(pids ([\d, ]+)\)", after=mark)
        return {int(p) for p in done.group(1).split(", ")}

    async def close(self) -> int | None:
        """SIGTERM and wait (SIGKILL after 20 s); the exit code, None if it had to be killed."""
        code: int | None = self.proc.returncode
        if code is None:
            self.signal(signal.SIGTERM)
            try:
                code = await asyncio.wait_for(self.proc.wait(), 20)
            except asyncio.TimeoutError:
                self.proc.kill()  # (its workers see their pipe end and stop themselves)
                await self.proc.wait()
                code = None
        try:
            await asyncio.wait_for(self._reader, 10)  # the workers' stderr closed too
        except asyncio.TimeoutError:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        return code


# -- h2load ---------------------------------------------------------------------------------

_REQUESTS = re.compile(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                       r"(\d+) failed, (\d+) errored, (\d+) timeout")
_STATUS = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")
_FINISHED = re.compile(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s")


@dataclass
class Load:
    """What h2load's summary said, added up over bursts."""

    total: int = 0
    started: int = 0
    done: int = 0
    succeeded: int = 0
    failed: int = 0
    errored: int = 0
    timeout: int = 0
    status: list[int] = field(default_factory=lambda: [0, 0, 0, 0])  # 2xx, 3xx, 4xx, 5xx
    seconds: float = 0.0
    runs: int = 0
    outputs: list[str] = field(default_factory=list)
    #: Requests done per query tag: each run's URL ends with ``?h2-N``, N its number.
    tags: collections.Counter[str] = field(default_factory=collections.Counter)

    def add(self, output: str, tag: str = "") -> None:
        """Add one h2load run's summary (fails the test if there is none)."""
        req, st, fin = _REQUESTS.search(output), _STATUS.search(output), _FINISHED.search(output)
        if req is None or st is None or fin is None:
            pytest.fail(f"h2load printed no summary:\n{output}")
        total, started, done, ok, failed, errored, timeout = map(int, req.groups())
        self.total += total
        self.started += started
        self.done += done
        self.succeeded += ok
        self.failed += failed
        self.errored += errored
        self.timeout += timeout
        self.status = [a + int(b) for a, b in zip(self.status, st.groups(), strict=True)]
        self.seconds += float(fin.group(1)) / (1000 if fin.group(2) == "ms" else 1)
        self.runs += 1
        self.outputs.append(output)
        self.tags[tag] += done

    def check(self, name: str, context: object = None) -> None:
        """Assert that every request of every run succeeded with a 2xx (``context`` goes
        into the failure's message)."""
        assert self.runs, f"{name}: no h2load run"
        assert (self.failed, self.errored, self.timeout) == (0, 0, 0), (name, self, context)
        assert self.total == self.started == self.done == self.succeeded, (name, self, context)
        assert self.status == [self.done, 0, 0, 0], (name, self, context)

    def __repr__(self) -> str:
        failing = [o for o in self.outputs if not re.search(r" 0 failed, 0 errored, 0 timeout", o)]
        return (f"Load({self.runs} runs: {self.total} total, {self.started} started, "
                f"{self.done} done, {self.succeeded} succeeded, {self.failed} failed, "
                f"{self.errored} errored, {self.timeout} timeout; 2xx/3xx/4xx/5xx {self.status}"
                f"{'; first failing run: ' + failing[0] if failing else ''})")


async def h2load(h2load_path: str, url: str, *args: str, timeout: float = 60) -> str:
    """Run h2load to completion; its output (stdout and stderr)."""
    proc = await asyncio.create_subprocess_exec(
        h2load_path, *args, url, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail(f"h2load {' '.join(args)} {url} was still running after {timeout} s")
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    return out.decode(errors="replace")


async def load_until(stop: asyncio.Event, h2load_path: str, url: str, *args: str) -> Load:
    """h2load bursts back to back until ``stop`` is set (the burst running then finishes)."""
    load = Load()
    while not stop.is_set():
        tag = f"h2-{load.runs}"
        load.add(await h2load(h2load_path, f"{url}?{tag}", *args), tag)
    return load


class H1Load:
    """HTTP/1.1 requests made by httpx (h2load's HTTP/1.1 client counts a status line
    without a reason phrase, ``HTTP/1.1 200 ``, which HAProxy sends for an HTTP/2 answer, as
    a failure). ``pids`` are the ``x-worker`` headers in the order the responses came."""

    def __init__(self) -> None:
        self.done = 0
        self.status: collections.Counter[int] = collections.Counter()
        self.failures: list[str] = []
        self.pids: list[int] = []
        #: Requests done per query tag: the Nth request's URL ends with ``?h1-N``.
        self.tags: collections.Counter[str] = collections.Counter()

    def check(self, name: str, context: object = None) -> None:
        """Assert that every request succeeded with a 200 (``context``: as Load.check)."""
        assert self.done and not self.failures, (name, self.done, self.failures[:10], context)
        assert self.status == {200: self.done}, (name, self.status, context)


async def h1_load_until(stop: asyncio.Event, url: str, connections: int = 2) -> H1Load:
    """Requests on ``connections`` keep-alive HTTP/1.1 connections until ``stop`` is set."""
    import httpx

    load = H1Load()
    numbers = itertools.count()
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(http1=True, http2=False, limits=limits, timeout=10) as client:

        async def one_connection() -> None:
            while not stop.is_set():
                tag = f"h1-{next(numbers)}"
                try:
                    r = await client.get(f"{url}?{tag}")
                except httpx.HTTPError as e:
                    load.failures.append(repr(e))
                    continue
                load.done += 1
                load.tags[tag] += 1
                load.status[r.status_code] += 1
                if "x-worker" in r.headers:
                    load.pids.append(int(r.headers["x-worker"]))

        await asyncio.gather(*(one_connection() for _ in range(connections)))
    return load


# -- HAProxy --------------------------------------------------------------------------------

def haproxy_command(sock_path: Path, command: str) -> str:
    """Send one command to HAProxy's stats socket; its answer."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(sock_path))
        s.sendall(command.encode() + b"\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.decode()


def haproxy_info(sock_path: Path) -> dict[str, str]:
    """``show info`` from HAProxy's stats socket (``DroppedLogs``, ...)."""
    lines = haproxy_command(sock_path, "show info").splitlines()
    return dict(line.split(": ", 1) for line in lines if ": " in line)


def haproxy_stats(sock_path: Path) -> dict[tuple[str, str], dict[str, str]]:
    """``show stat`` from HAProxy's stats socket: {(proxy, server): {column: value}}."""
    header, *rows = haproxy_command(sock_path, "show stat").splitlines()
    names = header.lstrip("# ").split(",")
    stats = {}
    for row in rows:
        if row:
            values = dict(zip(names, row.split(","), strict=False))  # (a trailing comma)
            stats[values["pxname"], values["svname"]] = values
    return stats


#: One request as ``option httplog`` logs it (with one captured response header).
HTTPLOG = re.compile(
    r"^\S+:\d+ \[[^]]+\] (?P<frontend>\S+) (?P<backend>[^/ ]+)/(?P<server>\S+) "
    r"(?P<timers>\S+) (?P<status>-?\d+) (?P<bytes>\d+) \S+ \S+ (?P<term>\S{4}) "
    r"\d+/\d+/\d+/\d+/(?P<retries>\+?\d+) \d+/\d+ \{(?P<captured>[^}]*)\} \"(?P<request>[^\"]*)\"$"
)


def missing_from_log(requests: list[re.Match[str]], *loads: Load | H1Load) -> dict[str, int]:
    """{tag: done by the clients less logged by the proxy}, where they differ."""
    logged = collections.Counter(
        m.group(1) for m in (re.search(r"\?(h[12]-\d+) ", r.group("request")) for r in requests)
        if m)
    done: collections.Counter[str] = collections.Counter()
    for load in loads:
        done.update(load.tags)
    return {tag: done[tag] - logged[tag] for tag in done | logged if done[tag] != logged[tag]}
