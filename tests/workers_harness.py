"""Real ``aioh2s.serve`` supervisors for the worker tests: start one, read its log, signal it.

A :class:`Supervisor` is a ``python -c 'aioh2s.serve(...)'`` process serving
tests/workers_app.py from worker processes on 127.0.0.1, port 0; its log (the supervisor's
and the workers' stderr, which they share) is read line by line as it arrives, and
:meth:`Supervisor.line` waits, bounded, for a line matching a pattern. The ``supervisors``
fixture of each test file (:func:`stopped_at_exit`) stops every supervisor a test started
(SIGTERM, then SIGKILL after 15 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import aioh2s

TESTS = Path(__file__).resolve().parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join((str(TESTS.parent / "src"), str(TESTS)))}
SERVE = """
import functools, logging, sys
import aioh2s
logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                    format="%(name)s %(levelname)s %(message)s")
aioh2s.serve({handler}, {host!r}, 0, workers={workers}, grace={grace}{extra})
"""


class Supervisor:
    """A ``python -c 'aioh2s.serve(...)'`` process, and its log lines as they arrive."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._more = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())
        self.port = 0
        self.pids: set[int] = set()

    @classmethod
    async def start(cls, workers: int = 2, grace: float = 3.0,
                    handler: str = "'workers_app:handler'", host: str | None = "127.0.0.1",
                    extra: str = "", env: dict[str, str] | None = None,
                    new_session: bool = False) -> Supervisor:
        """Start one; ``handler`` and ``extra`` (", keyword=value, ...") are Python source."""
        code = SERVE.format(handler=handler, host=host, workers=workers, grace=grace,
                            extra=extra)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", code,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, env={**ENV, **(env or {})},
            start_new_session=new_session,
        )
        return cls(proc)

    async def serving(self) -> None:
        """Wait for the "serving" line; learn the port and the workers' pids from it."""
        m = await self.line(r"serving https?://(?:127\.0\.0\.1|\[::\]):(\d+)(?: \(IPv4 and IPv6\))?"
                            r" with \d+ worker\(s\) \(pids ([\d, ]+)\)")
        self.port = int(m.group(1))
        self.pids = {int(p) for p in m.group(2).split(", ")}

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))
            self._more.set()
        self._more.set()

    async def line(self, pattern: str, after: int = 0, timeout: float = 15) -> re.Match[str]:
        """The first log line from index ``after`` on that matches ``pattern``."""
        async def find() -> re.Match[str]:
            i = after
            while True:
                while i < len(self.lines):
                    m = re.search(pattern, self.lines[i])
                    if m:
                        return m
                    i += 1
                if self._reader.done():
                    raise AssertionError(f"no line matching {pattern!r}")
                self._more.clear()
                await self._more.wait()
        try:
            return await asyncio.wait_for(find(), timeout)
        except (AssertionError, asyncio.TimeoutError):
            pytest.fail(f"no log line matching {pattern!r}; the log:\n" + self.log())

    def log(self) -> str:
        """Everything logged so far."""
        return "\n".join(self.lines)

    def signal(self, signum: int) -> None:
        """Signal the supervisor process."""
        self.proc.send_signal(signum)

    def signal_group(self, signum: int) -> None:
        """Signal its whole process group (started with ``new_session=True``)."""
        os.killpg(self.proc.pid, signum)

    def workers(self) -> set[int]:
        """The pids of its live worker processes (spawned children; not the tracker)."""
        found = set()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            ppid = int(stat.rpartition(")")[2].split()[1])
            state = stat.rpartition(")")[2].split()[0]
            if ppid == self.proc.pid and b"spawn_main" in cmdline and state != "Z":
                found.add(int(entry.name))
        return found

    async def wait(self, timeout: float) -> int:
        """Its exit code, once its stderr (which the workers share) is closed too."""
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout)
            await asyncio.wait_for(self._reader, 5)  # the workers' stderr closed too
        except asyncio.TimeoutError:
            pytest.fail(f"the supervisor was still running after {timeout} s:\n{self.log()}")
        return code

    async def close(self) -> None:
        """Stop it (SIGTERM; SIGKILL if it hangs) and read its log to the end."""
        if self.proc.returncode is None:
            self.signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except asyncio.TimeoutError:
                self.proc.kill()  # (its workers see their pipe end and stop themselves)
                await self.proc.wait()
        try:
            await asyncio.wait_for(self._reader, 10)
        except asyncio.TimeoutError:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)


@contextlib.asynccontextmanager
async def stopped_at_exit() -> AsyncIterator[list[Supervisor]]:
    """The list of supervisors a test starts (``_start``), stopped at its end (a fixture's)."""
    started: list[Supervisor] = []
    try:
        yield started
    finally:
        for sup in started:
            await sup.close()


async def _start(supervisors: list[Supervisor], **kwargs: Any) -> Supervisor:
    sup = await Supervisor.start(**kwargs)
    supervisors.append(sup)
    await sup.serving()
    return sup


async def get(port: int, path: str = "/", host: str = "127.0.0.1", **connect: Any) -> bytes:
    """One request on a connection of its own (no retry): the response body."""
    client = await aioh2s.connect(host, port, **connect)
    try:
        async with client.request({":path": path}, end_stream=True) as stream:
            await asyncio.wait_for(stream.response_headers(), 5)
            return await asyncio.wait_for(stream.reader.read(), 5)
    finally:
        await asyncio.wait_for(client.close(), 5)
