"""``aioh2s serve --workers N``, run as a subprocess: h2c and TLS, SIGHUP and SIGTERM."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path

import pytest

import aioh2s
from workers_harness import ENV, Supervisor

pytestmark = [
    pytest.mark.once,  # (the CLI does not change with the Python version)
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT is Linux's"),
]


async def _serve(*args: str) -> tuple[Supervisor, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aioh2s", "serve", "--port", "0", *args,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=ENV,
    )
    sup = Supervisor(proc)
    assert proc.stdout is not None
    try:
        url = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode().strip()
    except asyncio.TimeoutError:
        await sup.close()
        pytest.fail("no URL on stdout:\n" + sup.log())
    if not url:
        await sup.close()
        pytest.fail("no URL on stdout:\n" + sup.log())
    m = await sup.line(r"serving \S+ with \d+ worker\(s\) \(pids ([\d, ]+)\)")
    sup.pids = {int(p) for p in m.group(1).split(", ")}
    return sup, url


async def _fetch(url: str, cafile: str | None = None, data: bytes | None = None) -> bytes:
    ctx = aioh2s.client_ssl_context(cafile) if cafile else None
    async with aioh2s.Session(ssl=ctx) as session:
        method = "POST" if data is not None else "GET"
        r = await asyncio.wait_for(session.fetch(url, method=method, body=data), 10)
        assert r.status == 200
        return r.body


async def test_serve_workers_h2c_rolls_on_sighup_and_stops_on_sigterm(tmp_path: Path) -> None:
    (tmp_path / "hello.txt").write_bytes(b"hello from a worker\n")
    sup, url = await _serve(str(tmp_path), "--workers", "2")
    try:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", url), url
        assert len(sup.pids) == 2
        assert await _fetch(url + "hello.txt") == b"hello from a worker\n"
        await sup.line(r'"GET /hello.txt" 200')  # the worker's access log, on our stderr
        mark = len(sup.lines)
        sup.signal(signal.SIGHUP)
        m = await sup.line(r"rolling restart done \(pids ([\d, ]+)\)", after=mark)
        new = {int(p) for p in m.group(1).split(", ")}
        assert len(new) == 2 and not new & sup.pids
        assert await _fetch(url + "hello.txt") == b"hello from a worker\n"
        sup.signal(signal.SIGTERM)
        assert await sup.wait(20) == 0
        assert "all workers stopped" in sup.log()
    finally:
        await sup.close()


async def test_serve_workers_tls_self_signed_echo(tmp_path: Path) -> None:
    sup, url = await _serve("--workers", "2", "--self-signed", "--echo")
    try:
        assert re.fullmatch(r"https://127\.0\.0\.1:\d+/", url), url
        ca = (await sup.line(r"CA certificate: (\S+) ")).group(1)
        body = b"x" * 100_000
        assert await _fetch(url + "echo", ca, body) == body
        sup.signal(signal.SIGTERM)
        assert await sup.wait(20) == 0
    finally:
        await sup.close()


async def test_serve_workers_refuses_a_bad_count(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aioh2s", "serve", str(tmp_path), "--workers", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=ENV,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 2
    assert b"workers must be a whole number from 1 to 256" in err


@pytest.mark.parametrize(("args", "message"), [
    (("--workers", "1", "--start-timeout", "0"), b"start_timeout must be a finite number"),
    (("--start-timeout", "5"), b"--start-timeout is for --workers"),
])
async def test_serve_start_timeout_is_checked(tmp_path: Path, args: tuple[str, ...],
                                              message: bytes) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aioh2s", "serve", str(tmp_path), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=ENV,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 2
    assert message in err
