"""``aioh2s ws`` and ``aioh2s serve --ws-echo``, run as subprocesses (the installed script).

The two against each other over h2c and TLS, ``-m`` and stdin; ``ws`` against servers of the
test's own that refuse, close abnormally, send binary or never answer; ``serve --ws-echo``
beside DIR and ``--echo``, its access log and its shutdown; and both without wsproto (a
``sitecustomize`` on the path blocks its import), when only they may fail.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import aioh2s
from aioh2s import websocket
from helpers import serving
from test_cli import ENTRY, ENV, Server, aentry, closed_port, entry

pytestmark = pytest.mark.once

ON = {"enable_connect_protocol": True}


def ws_url(server: Server) -> str:
    return server.url.replace("http", "ws", 1)


@pytest.fixture(scope="module")
def www(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ws") / "www"
    root.mkdir()
    (root / "hello.txt").write_bytes(b"hello, world\n")
    return root


@pytest.fixture(scope="module")
def echo(www: Path) -> Iterator[Server]:
    """Files and WebSockets on one server, with its access log."""
    s = Server(str(www), "--ws-echo")
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def tls() -> Iterator[tuple[Server, str]]:
    pytest.importorskip("trustme")
    s = Server("--echo", "--ws-echo", "--self-signed", "-q")
    try:
        m = s.wait_stderr(r"CA certificate: (\S+)")
    except AssertionError:
        s.stop()  # no subprocess left running to warn at garbage collection
        raise
    yield s, m.group(1)
    assert s.stop() == 0


# --------------------------------------------------------------------------- ws <-> serve


def test_messages_round_trip_over_h2c(echo: Server) -> None:
    p = entry("ws", "-m", "hello", "-m", "wörld", "-m", "", ws_url(echo) + "chat")
    assert p.returncode == 0, p.stderr
    assert p.stdout == "hello\nwörld\n\n".encode()
    assert p.stderr == b""
    line = echo.wait_stderr(r'"CONNECT /chat"', timeout=10).string
    assert re.fullmatch(
        r'127\.0\.0\.1:\d+ "CONNECT /chat" websocket, 3 messages echoed, close 1000', line
    ), line


def test_files_beside_websockets(echo: Server) -> None:
    p = entry("get", echo.url + "hello.txt")
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"hello, world\n"


def test_messages_round_trip_over_tls(tls: tuple[Server, str]) -> None:
    server, ca = tls
    url = ws_url(server)
    assert url.startswith("wss://")
    p = entry("ws", "--cacert", ca, "-m", "over TLS", url + "secure")
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"over TLS\n"
    p = entry("ws", "-k", "-m", "unverified", url)
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"unverified\n"
    p = entry("ws", "-m", "x", url)  # the throwaway CA is nobody's
    assert p.returncode == 4, p.stderr
    assert b"certificate verification failed" in p.stderr
    # --echo still answers the other requests.
    p = entry("get", "--cacert", ca, "-d", "body", server.url + "e")
    assert p.returncode == 0 and p.stdout == b"body", p.stderr


def test_verbose_shows_the_answer_the_frames_and_the_close(echo: Server) -> None:
    p = entry("ws", "-v", "--subprotocol", "chat", "--subprotocol", "other", "-m", "hi",
              ws_url(echo))
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"hi\n"
    err = p.stderr.decode().splitlines()
    assert any(re.fullmatch(r"\* connected to 127\.0\.0\.1:\d+ \(h2c, prior knowledge\)", line)
               for line in err), err
    assert "< :status: 200" in err
    assert "< sec-websocket-protocol: chat" in err  # the echo server takes the first offered
    assert "* WebSocket open, subprotocol chat" in err
    assert "* WebSocket closed: code 1000" in err
    assert any(re.match(r"\* \[ *\d+\.\d+\] send HEADERS stream=1 ", line) for line in err), err
    assert any(re.match(r"\* \[ *\d+\.\d+\] recv DATA stream=1 ", line) for line in err), err


def test_interactive_lines_and_replies(echo: Server) -> None:
    # A user at a terminal: a line out, its echo back, the next line; then EOF (Ctrl-D).
    proc = subprocess.Popen([*ENTRY, "ws", ws_url(echo) + "typed"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(b"first line\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == b"first line\n"
        proc.stdin.write(b"second, CR LF\r\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == b"second, CR LF\n"
        out, err = proc.communicate(timeout=20)  # closes stdin: the end of input
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert out == b"" and err == b""
    line = echo.wait_stderr(r'"CONNECT /typed"', timeout=10).string
    assert "2 messages echoed, close 1000" in line


def test_shutdown_closes_open_websockets_with_1001(www: Path) -> None:
    server = Server(str(www), "--ws-echo")
    proc = subprocess.Popen([*ENTRY, "ws", ws_url(server)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(b"still here\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == b"still here\n"
        assert server.stop() == 0  # SIGTERM, with the WebSocket open and stdin too
        proc.wait(20)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        server.stop()
    assert proc.returncode == 0, err  # 1001 (going away) is a normal close
    line = server.wait_stderr(r'"CONNECT /"', timeout=10).string
    assert "close 1001 server shutting down" in line


# --------------------------------------------------------------------------- against our own


class Recorder:
    """Accepts a WebSocket, records what comes in, and answers as ``reply`` says."""

    def __init__(self, reply: Any = None) -> None:
        self.reply = reply
        self.received: list[str | bytes] = []
        self.close_code: int | None = None

    async def __call__(self, reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        ws = await websocket.accept(reader, writer)
        try:
            async for message in ws:
                self.received.append(message)
                if self.reply is not None:
                    await self.reply(ws, message)
        finally:
            await ws.close()
            self.close_code = ws.close_code


async def test_stdin_lines_are_text_messages_and_its_end_closes_with_1000() -> None:
    rec = Recorder()
    async with serving(rec, **ON) as (_, port):
        rc, out, err = await aentry("ws", f"ws://127.0.0.1:{port}/",
                                    stdin=b"a\n\nb\r\nb\xffd\nlast without newline")
    assert rc == 0, err
    assert out == b"" and err == b""
    assert rec.received == ["a", "", "b", "b\ufffdd", "last without newline"]
    assert rec.close_code == 1000


async def with_open_stdin(*args: str, lines: bytes = b"") -> tuple[int, bytes, bytes]:
    """Run ``aioh2s ARGS``, write ``lines`` to its stdin and keep stdin open until it exits."""
    proc = await asyncio.create_subprocess_exec(
        *ENTRY, *args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=ENV,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        proc.stdin.write(lines)
        await proc.stdin.drain()
        out, err = await asyncio.wait_for(
            asyncio.gather(proc.stdout.read(), proc.stderr.read()), 20
        )
        rc = await asyncio.wait_for(proc.wait(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        proc.stdin.close()
    return rc, out, err


async def test_server_closing_first_ends_the_command_though_stdin_stays_open() -> None:
    async def bye(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        async with await websocket.accept(reader, writer) as ws:
            await ws.send("bye")
            await ws.close(1001, "going")

    async with serving(bye, **ON) as (_, port):
        # stdin is never closed: the thread reading it must not hold the exit.
        rc, out, err = await with_open_stdin("ws", f"ws://127.0.0.1:{port}/")
    assert rc == 0, err
    assert out == b"bye\n" and err == b""


async def test_binary_messages_print_as_hex() -> None:
    async def binary(ws: Any, message: str | bytes) -> None:
        await ws.send(bytes(range(3)) if message == "short" else b"" if message == "empty"
                      else bytes(range(40)))

    async with serving(Recorder(binary), **ON) as (_, port):
        rc, out, err = await aentry("ws", "-m", "short", "-m", "empty", "-m", "long",
                                    f"ws://127.0.0.1:{port}/")
    assert rc == 0, err
    assert out.decode().splitlines() == [
        "<binary 3 bytes: 000102>",
        "<binary 0 bytes>",
        f"<binary 40 bytes: {bytes(range(32)).hex()}...>",
    ]


async def test_refused_websocket_exit_code() -> None:
    async def not_here(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        writer.send_headers({":status": "404", "content-length": "0"}, end_stream=True)

    async with serving(not_here, **ON) as (_, port):
        rc, out, err = await aentry("ws", "-v", "-m", "x", f"ws://127.0.0.1:{port}/nowhere")
    assert rc == 10, err
    lines = err.decode().splitlines()
    refused = f"server 127.0.0.1:{port} refused the WebSocket: 404 Not Found"
    assert lines[-1] == f"aioh2s: error: {refused}"
    assert "< :status: 404" in lines  # -v shows the answer
    assert out == b""


async def test_other_refusals_and_a_reset_before_the_answer() -> None:
    async def odd(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        if reader.headers[":path"] == "/reset":
            writer.reset(aioh2s.ErrorCode.REFUSED_STREAM)
        else:  # a 200 that picks a subprotocol nobody offered (RFC 6455 §4.1: fail it)
            writer.send_headers({":status": "200", "sec-websocket-protocol": "zzz"})
            await reader.read()  # until the client gives up on the stream

    async with serving(odd, **ON) as (_, port):
        rc, _, err = await aentry("ws", "--subprotocol", "chat", "-m", "x",
                                  f"ws://127.0.0.1:{port}/")
        assert rc == 10, err
        assert err.decode().splitlines() == [
            f"aioh2s: error: server 127.0.0.1:{port} chose the subprotocol 'zzz', which was not"
            " offered"
        ]
        rc, _, err = await aentry("ws", "-m", "x", f"ws://127.0.0.1:{port}/reset")
        assert rc == 6, err
        assert err.decode().splitlines() == [
            "aioh2s: error: stream reset by the server: REFUSED_STREAM"
        ]


def test_server_without_extended_connect_is_a_refusal(www: Path) -> None:
    plain = Server(str(www), "-q")  # no --ws-echo: SETTINGS_ENABLE_CONNECT_PROTOCOL stays 0
    try:
        p = entry("ws", "-m", "x", ws_url(plain))
    finally:
        assert plain.stop() == 0
    assert p.returncode == 10, p.stderr
    assert p.stderr.decode().splitlines() == [
        f"aioh2s: error: server 127.0.0.1:{plain.port} takes no WebSockets over HTTP/2: its"
        " SETTINGS did not enable extended CONNECT (RFC 8441)"
    ]


async def test_abnormal_close_exit_code() -> None:
    async def fail(ws: Any, message: str | bytes) -> None:
        await ws.close(1011, "boom")

    async with serving(Recorder(fail), **ON) as (_, port):
        rc, out, err = await aentry("ws", "-m", "x", f"ws://127.0.0.1:{port}/")
        assert rc == 11, err
        assert err.decode().splitlines() == [
            f"aioh2s: error: the WebSocket with 127.0.0.1:{port} closed abnormally: code 1011"
            " (boom)"
        ]
        # Interactive too: the code, not the mode, decides.
        rc, out, err = await with_open_stdin("ws", f"ws://127.0.0.1:{port}/", lines=b"x\n")
        assert rc == 11, err
        assert b"code 1011 (boom)" in err


async def test_normal_close_before_every_reply_is_an_error_with_m() -> None:
    async def silent_close(ws: Any, message: str | bytes) -> None:
        await ws.close(1000)

    async with serving(Recorder(silent_close), **ON) as (_, port):
        rc, out, err = await aentry("ws", "-m", "a", "-m", "b", f"ws://127.0.0.1:{port}/")
    assert rc == 11, err
    assert err.decode().splitlines() == [
        "aioh2s: error: the server closed the WebSocket (code 1000) before its reply to message"
        " 1 of 2"
    ]


async def test_timeouts() -> None:
    async def never_answers(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        await asyncio.sleep(30)

    async with serving(never_answers, **ON) as (_, port):
        rc, _, err = await aentry("ws", "--connect-timeout", "0.5", "-m", "x",
                                  f"ws://127.0.0.1:{port}/")
    assert rc == 3, err
    assert b"no answer to the WebSocket request" in err and b"--connect-timeout 0.5 s" in err

    async with serving(Recorder(), **ON) as (_, port):  # accepts, never replies
        rc, _, err = await aentry("ws", "--max-time", "0.5", "-m", "x", f"ws://127.0.0.1:{port}/")
    assert rc == 7, err
    assert b"--max-time 0.5 s" in err


def test_connection_refused() -> None:
    p = entry("ws", "-m", "x", f"ws://127.0.0.1:{closed_port()}/")
    assert p.returncode == 3, p.stderr
    assert p.stderr.decode().startswith("aioh2s: error: connection refused: 127.0.0.1:")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["http://127.0.0.1:1/"], "expected ws://HOST[:PORT]/PATH or wss://..."),
        (["-H", ":path: /x", "ws://127.0.0.1:1/"], "pseudo-headers"),
        (["-H", "host: elsewhere", "ws://127.0.0.1:1/"], "pseudo-headers"),
        (["-H", "upgrade: websocket", "ws://127.0.0.1:1/"], "not allowed in HTTP/2"),
    ],
)
def test_usage_errors(args: list[str], message: str) -> None:
    p = entry("ws", *args)
    assert p.returncode == 2, p.stderr
    assert message in p.stderr.decode()


def test_bad_subprotocol_is_a_usage_error(echo: Server) -> None:
    p = entry("ws", "--subprotocol", "two words", "-m", "x", ws_url(echo))
    assert p.returncode == 2, p.stderr
    assert "subprotocol 'two words' is not a token" in p.stderr.decode()


# --------------------------------------------------------------------------- without wsproto


@pytest.fixture(scope="module")
def no_wsproto(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An environment in which ``import wsproto`` fails, as if it were not installed."""
    site = tmp_path_factory.mktemp("no-wsproto")
    (site / "sitecustomize.py").write_text("import sys\nsys.modules['wsproto'] = None\n")
    env = {**ENV, "PYTHONPATH": f"{site}{':' + ENV['PYTHONPATH'] if ENV.get('PYTHONPATH') else ''}"}
    # The premise, checked: without it every test below would pass for nothing.
    p = subprocess.run([sys.executable, "-c", "import wsproto"], env=env, capture_output=True,
                       timeout=20, check=False)
    assert p.returncode == 1 and b"ModuleNotFoundError" in p.stderr, p.stderr
    return env


def test_without_wsproto_ws_commands_say_what_to_install(
    no_wsproto: dict[str, str], www: Path
) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([*ENTRY, *args], env=no_wsproto, capture_output=True, timeout=20,
                              check=False)

    p = run("ws", "-m", "x", "ws://127.0.0.1:1/")
    assert p.returncode == 2, p.stderr
    assert p.stderr.decode().splitlines() == [
        "aioh2s: error: aioh2s ws needs the 'wsproto' package: pip install 'aioh2s[wsproto]'"
    ]
    p = run("serve", str(www), "--port", "0", "--ws-echo")
    assert p.returncode == 2, p.stderr
    assert p.stdout == b""  # it never listened
    assert p.stderr.decode().splitlines() == [
        "aioh2s: error: --ws-echo needs the 'wsproto' package: pip install 'aioh2s[wsproto]'"
    ]


def test_without_wsproto_the_other_commands_work(no_wsproto: dict[str, str], www: Path) -> None:
    proc = subprocess.Popen([*ENTRY, "serve", str(www), "--port", "0", "-q"], env=no_wsproto,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    try:
        url = proc.stdout.readline().decode().strip()
        assert url.startswith("http://127.0.0.1:"), url
        p = subprocess.run([*ENTRY, "get", url + "hello.txt"], env=no_wsproto,
                           capture_output=True, timeout=20, check=False)
        assert p.returncode == 0, p.stderr
        assert p.stdout == b"hello, world\n"
        # Nor does the command line load wsproto where it is installed, unless asked to.
        code = ("import os, sys; from aioh2s.cli import main; "
                f"rc = main(['get', '-o', os.devnull, {url!r}]); "
                "print(rc, 'wsproto' in sys.modules)")
        p = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True,
                           timeout=20, check=False)
        assert p.stdout == b"0 False\n", p.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
