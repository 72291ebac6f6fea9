"""``aioh2s serve --asgi MODULE:APP`` in a child process: the Starlette app of
tests/starlette_app.py served, its lifespan run around the server, SIGTERM a clean stop;
an application that cannot be loaded, or whose startup fails, is exit code 1 (2 for a bad
spec)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import aioh2s
from aioh2s import websocket

pytest.importorskip("starlette")

pytestmark = [pytest.mark.once, pytest.mark.timeout(60)]

HERE = Path(__file__).resolve().parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    p for p in (str(HERE.parent / "src"), os.environ.get("PYTHONPATH")) if p)}
CLI = [sys.executable, "-m", "aioh2s", "serve", "--port", "0", "-q"]


async def test_serve_asgi_runs_the_app_with_its_lifespan(tmp_path: Path) -> None:
    events = tmp_path / "events"
    proc = await asyncio.create_subprocess_exec(
        *CLI, "--asgi", "starlette_app:app", cwd=HERE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env={**ENV, "ASGI_TEST_EVENTS": str(events)})
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        m = re.fullmatch(r"http://127\.0\.0\.1:(\d+)/\n", line)
        assert m, line
        assert events.read_text() == "startup\n"  # before the first connection
        async with await aioh2s.connect("127.0.0.1", int(m.group(1))) as client:
            async with client.request({":path": "/"}, end_stream=True) as st:
                assert (await st.response_headers())[":status"] == "200"
                assert await st.reader.read() == b"hello from the lifespan /"
            async with websocket.connect(client, "/ws", subprotocols=["shout.v1"]) as ws:
                await ws.send("hi")
                assert await ws.receive() == "HI"
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert events.read_text().splitlines() == ["startup", "websocket closed 1000", "shutdown"]


@pytest.mark.parametrize(("spec", "code", "message"), [
    ("no_such_module:app", 1, "cannot load the ASGI application no_such_module:app"),
    ("starlette_app:nothing", 1, "has no attribute 'nothing'"),
    ("starlette_app", 2, "is not a 'package.module:attribute' spec"),
])
def test_serve_asgi_that_cannot_load(spec: str, code: int, message: str) -> None:
    p = subprocess.run([*CLI, "--asgi", spec], cwd=HERE, env=ENV, capture_output=True,
                       timeout=30, check=False)
    assert p.returncode == code, p.stderr
    assert message in p.stderr.decode() and p.stdout == b""


def test_serve_asgi_startup_failure(tmp_path: Path) -> None:
    (tmp_path / "failing_app.py").write_text(
        "async def app(scope, receive, send):\n"
        "    await receive()\n"
        "    await send({'type': 'lifespan.startup.failed', 'message': 'no database'})\n")
    p = subprocess.run([*CLI, "--asgi", "failing_app:app"], cwd=tmp_path, env=ENV,
                       capture_output=True, timeout=30, check=False)
    assert p.returncode == 1 and p.stdout == b""
    assert "ASGI lifespan startup failed: no database" in p.stderr.decode()


async def test_serve_asgi_with_workers(tmp_path: Path) -> None:
    """``--workers 2 --asgi``: each worker imports the app and runs its lifespan around its
    own server; a request is answered, SIGTERM stops both after their shutdown."""
    events = tmp_path / "events"
    proc = await asyncio.create_subprocess_exec(
        *CLI, "--workers", "2", "--asgi", "starlette_app:app", cwd=HERE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**ENV, "ASGI_TEST_EVENTS": str(events)})
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        m = re.fullmatch(r"http://127\.0\.0\.1:(\d+)/\n", line)
        assert m, line
        # The URL is printed once every worker accepts: both startups have run.
        assert events.read_text().splitlines() == ["startup", "startup"]
        async with await aioh2s.connect("127.0.0.1", int(m.group(1))) as client:
            async with client.request({":path": "/"}, end_stream=True) as st:
                assert (await st.response_headers())[":status"] == "200"
                assert await st.reader.read() == b"hello from the lifespan /"
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert sorted(events.read_text().splitlines()) == ["shutdown"] * 2 + ["startup"] * 2


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--asgi", "failing_app:app"], 1, "ASGI lifespan startup failed: no database"),
    (["--asgi", "failing_app"], 2, "is not a 'package.module:attribute' spec"),
    (["--asgi", "failing_app:app", "--echo"], 2, "--asgi serves the application alone"),
])
def test_serve_asgi_with_workers_refused(tmp_path: Path, args: list[str], code: int,
                                         message: str) -> None:
    (tmp_path / "failing_app.py").write_text(
        "async def app(scope, receive, send):\n"
        "    await receive()\n"
        "    await send({'type': 'lifespan.startup.failed', 'message': 'no database'})\n")
    p = subprocess.run([*CLI, "--workers", "2", *args], cwd=tmp_path, env=ENV,
                       capture_output=True, timeout=60, check=False)
    assert p.returncode == code, p.stderr
    assert message in p.stderr.decode() and p.stdout == b""


def test_serve_asgi_sigterm_during_a_hanging_startup(tmp_path: Path) -> None:
    """A signal cancels a lifespan startup that hangs: exit code 1 at once, not after the
    startup_timeout."""
    (tmp_path / "hanging_app.py").write_text(
        "import asyncio\n"
        "async def app(scope, receive, send):\n"
        "    await receive()\n"
        "    print('startup begun', flush=True)\n"
        "    await asyncio.sleep(3600)\n")
    proc = subprocess.Popen([*CLI, "--asgi", "hanging_app:app"], cwd=tmp_path, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"startup begun\n"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1
    assert "ASGI lifespan startup interrupted by SIGINT or SIGTERM" in err.decode()
