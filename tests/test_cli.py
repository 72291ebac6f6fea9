"""The ``aioh2s`` command line, run as subprocesses against itself, curl and nghttpd."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import queue
import re
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import IO

import pytest

import aioh2s
from aioh2s import _cli_common, _cli_get, _cli_serve, _cli_ws
from helpers import IN_CI, require

# The CLI, the README and typing do not change with the Python version: CI runs this
# file once, on the newest Python (noxfile.py).
pytestmark = pytest.mark.once

SRC = str(Path(__file__).resolve().parent.parent / "src")
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p),
}
CLI = [sys.executable, "-m", "aioh2s"]


def _entry_point() -> list[str]:
    """The ``aioh2s`` console script that installing the project puts next to the interpreter.

    With ``ENV``'s PYTHONPATH it runs this tree's ``aioh2s.cli:main`` through the entry point
    pyproject.toml declares, as a user's shell would; ``python -m aioh2s`` where the project
    is not installed (a bare checkout).
    """
    script = shutil.which("aioh2s", path=os.path.dirname(sys.executable))
    return [script] if script else CLI


ENTRY = _entry_point()

HELLO = b"hello, world\n"
NO_NEWLINE = b"a body without a final newline"
SECRET = b"TOP SECRET outside the served directory\n"
LONG_TEXT = b"a long text\n" * 20_000


def run(
    *args: str, input: bytes | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*CLI, *args], input=input, capture_output=True, env=ENV, timeout=timeout, check=False
    )


def curl(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [require("curl"), "-sS", "--max-time", "20", *args],
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def err_lines(p: subprocess.CompletedProcess[bytes]) -> list[str]:
    return p.stderr.decode().splitlines()


class Server:
    """``aioh2s serve ... --port 0`` in a subprocess; the URL is its first stdout line."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [*CLI, "serve", *args, "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=ENV,
            text=True,
        )
        self.stderr: list[str] = []
        self._stdout: queue.Queue[str] = queue.Queue()
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._threads = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self._stdout.put)),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr.append)),
        ]
        for t in self._threads:
            t.daemon = True
            t.start()
        try:
            self.url = self._stdout.get(timeout=20).strip()
        except queue.Empty:
            self.proc.kill()
            self.stop()
            raise AssertionError(f"server printed no URL; stderr: {self.stderr}") from None
        m = re.fullmatch(r"(https?)://127\.0\.0\.1:(\d+)/", self.url)
        assert m, self.url
        self.port = int(m.group(2))

    def wait_stderr(self, pattern: str, timeout: float = 20) -> re.Match[str]:
        """The first stderr line matching *pattern*, waiting for it: stderr has its own pump
        thread, so a line written before the URL may still be in flight when the URL arrives."""
        deadline = time.monotonic() + timeout
        while True:
            given_up = self.proc.poll() is not None or time.monotonic() > deadline
            if self.proc.poll() is not None:
                self._threads[1].join(5)  # an exited server's last lines are still pumped
            for line in list(self.stderr):
                if m := re.search(pattern, line):
                    return m
            if given_up:
                raise AssertionError(f"no stderr line matched {pattern!r}: {self.stderr}")
            time.sleep(0.02)

    @staticmethod
    def _pump(pipe: IO[str], sink: Callable[[str], object]) -> None:
        for line in pipe:
            sink(line.rstrip("\n"))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(15)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)
            for t in self._threads:
                t.join(5)
            for pipe in (self.proc.stdout, self.proc.stderr):
                if pipe is not None:
                    pipe.close()


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("cli")
    root = base / "www"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "hello.txt").write_bytes(HELLO)
    (root / "sub" / "inner.txt").write_bytes(b"inner\n")
    (root / "sub" / "deeper" / "x.json").write_bytes(b"{}")
    (root / "with space.html").write_bytes(b"<p>space</p>")
    (root / "empty.bin").write_bytes(b"")
    (root / "nonl.txt").write_bytes(NO_NEWLINE)
    (root / "nul.bin").write_bytes(b"text\x00with a NUL byte")
    (root / "late-nul.txt").write_bytes(LONG_TEXT + b"\x00tail\n")  # NUL past 2000 bytes
    (root / "nul-1999.bin").write_bytes(b"a" * 1999 + b"\x00")  # the last byte checked
    (root / "big.bin").write_bytes(os.urandom(5 * 1024 * 1024))
    (base / "secret.txt").write_bytes(SECRET)
    (root / "link_out").symlink_to(base / "secret.txt")
    (root / "dir_out").symlink_to(base)
    (root / "link_in").symlink_to(root / "hello.txt")
    if hasattr(os, "mkfifo"):
        os.mkfifo(root / "fifo")  # opening it would block the server's event loop forever
    return root


@pytest.fixture(scope="module")
def files(tree: Path) -> Iterator[Server]:
    s = Server(str(tree))
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def echo(tree: Path) -> Iterator[Server]:
    s = Server("--echo", "-q")
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def tls(tree: Path) -> Iterator[tuple[Server, str]]:
    pytest.importorskip("trustme")
    s = Server(str(tree), "--self-signed", "-q")
    try:
        m = s.wait_stderr(r"CA certificate: (\S+)")
    except AssertionError:
        s.stop()  # no subprocess left running to warn at garbage collection
        raise
    yield s, m.group(1)
    assert s.stop() == 0


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- get <-> serve


def test_get_file(files: Server) -> None:
    p = run("get", files.url + "hello.txt")
    assert p.returncode == 0, p.stderr
    assert p.stdout == HELLO
    assert p.stderr == b""
    files.wait_stderr(re.escape('"GET /hello.txt" 200 13'))  # access log


def test_get_verbose_headers(files: Server) -> None:
    p = run("get", "-v", "-H", "x-custom: 1", files.url + "with%20space.html")
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"<p>space</p>"
    err = err_lines(p)
    for line in (
        "> :method: GET",
        "> :path: /with%20space.html",
        "> :scheme: http",
        f"> :authority: 127.0.0.1:{files.port}",
        "> x-custom: 1",
        "< :status: 200",
        "< content-type: text/html",
        "< content-length: 12",
        "< accept-ranges: bytes",
    ):
        assert line in err, (line, err)
    assert err.index("> :method: GET") < err.index("< :status: 200")
    (connected,) = [line for line in err if line.startswith("* connected to 127.0.0.1:")]
    assert connected.endswith("(h2c, prior knowledge)")


def test_head(files: Server) -> None:
    p = run("get", "-X", "HEAD", "-v", files.url + "hello.txt")
    assert p.returncode == 0, p.stderr
    assert p.stdout == b""
    assert "< content-length: 13" in err_lines(p)
    assert "< content-type: text/plain" in err_lines(p)


def test_empty_file(files: Server) -> None:
    p = run("get", "-v", files.url + "empty.bin")
    assert p.returncode == 0 and p.stdout == b""
    assert "< content-length: 0" in err_lines(p)


def test_404_exit_code(files: Server) -> None:
    p = run("get", files.url + "nope.txt")
    assert p.returncode == 8
    assert p.stdout == b"not found\n"
    assert err_lines(p) == ["aioh2s: error: server answered 404 Not Found"]


def test_405_and_unsent_body_is_abandoned(files: Server, tree: Path) -> None:
    # A 5 MiB POST the server never reads: the 405 must end the command, not a flow-control stall.
    p = run("get", "-v", "-d", f"@{tree / 'big.bin'}", files.url + "hello.txt", timeout=20)
    assert p.returncode == 8, p.stderr
    err = err_lines(p)
    assert "> :method: POST" in err and "< :status: 405" in err and "< allow: GET, HEAD" in err
    p = run("get", "-X", "DELETE", files.url + "hello.txt")
    assert p.returncode == 8 and b"405" in p.stderr


@pytest.mark.parametrize(
    ("range_", "status", "body"),
    [
        ("bytes=0-4", 206, HELLO[0:5]),
        ("bytes=0-0", 206, HELLO[0:1]),
        ("bytes=7-", 206, HELLO[7:]),
        ("bytes=-3", 206, HELLO[-3:]),
        ("bytes=-100", 206, HELLO),
        ("bytes=5-1000", 206, HELLO[5:]),
        ("bytes=12-", 206, HELLO[12:]),
        ("bytes=13-", 416, b"range not satisfiable\n"),
        ("bytes=-0", 416, b"range not satisfiable\n"),
        ("bytes=0-1,3-4", 200, HELLO),  # several ranges: ignored, whole file
        ("bytes=4-2", 200, HELLO),  # invalid: ignored
        ("items=0-1", 200, HELLO),  # unknown unit: ignored
    ],
)
def test_range(files: Server, range_: str, status: int, body: bytes) -> None:
    p = run("get", "-v", "-H", f"range: {range_}", files.url + "hello.txt")
    err = err_lines(p)
    assert f"< :status: {status}" in err, err
    assert p.stdout == body
    if status == 206:
        first = HELLO.index(body) if body != HELLO[-3:] else len(HELLO) - 3
        assert f"< content-range: bytes {first}-{first + len(body) - 1}/13" in err
        assert f"< content-length: {len(body)}" in err
    elif status == 416:
        assert "< content-range: bytes */13" in err
        assert p.returncode == 8


def test_if_range_mismatch_serves_whole_file(files: Server) -> None:
    p = run(
        "get",
        "-v",
        "-H",
        "range: bytes=0-1",
        "-H",
        "if-range: Mon, 01 Jan 1990 00:00:00 GMT",
        files.url + "hello.txt",
    )
    assert "< :status: 200" in err_lines(p) and p.stdout == HELLO


ESCAPES = [
    "/../secret.txt",
    "/%2e%2e/secret.txt",
    "/%2E%2E/secret.txt",
    "/.%2e/secret.txt",
    "/..%2fsecret.txt",
    "/sub/..%2f..%2fsecret.txt",
    "/sub/%2e%2e/%2e%2e/secret.txt",
    "/%2f..%2fsecret.txt",
    "/..%5csecret.txt",
    "/link_out",
    "/dir_out/secret.txt",
    "/dir_out/",
    "/%00secret.txt",
    "/%252e%252e/secret.txt",
    "/%ff%fe",
]


@pytest.mark.parametrize("path", ESCAPES)
def test_path_escape_refused(files: Server, tree: Path, path: str) -> None:
    p = run("get", "-v", files.url.rstrip("/") + path)
    assert p.returncode == 8, p.stderr
    assert "< :status: 404" in err_lines(p)
    assert SECRET not in p.stdout


def test_absolute_paths_stay_inside(files: Server, tree: Path) -> None:
    secret = tree.parent / "secret.txt"
    for path in (
        "/" + str(secret),
        "//" + str(secret).lstrip("/"),
        "/%2f" + str(secret).lstrip("/"),
    ):
        p = run("get", "-v", files.url.rstrip("/") + path)
        assert p.returncode == 8 and SECRET not in p.stdout, path
    # A path with a leading double slash that does exist inside DIR is served from DIR.
    p = run("get", files.url.rstrip("/") + "//hello.txt")
    assert p.returncode == 0 and p.stdout == HELLO


def test_path_escape_with_curl(files: Server) -> None:
    for path in ("/../secret.txt", "/%2e%2e/secret.txt", "/..%2fsecret.txt", "/link_out"):
        p = curl(
            "--http2-prior-knowledge",
            "--path-as-is",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            files.url.rstrip("/") + path,
        )
        assert p.returncode == 0, p.stderr
        assert p.stdout.endswith(b"\n404"), (path, p.stdout)
        assert SECRET not in p.stdout


def test_symlink_inside_is_served(files: Server) -> None:
    p = run("get", files.url + "link_in")
    assert p.returncode == 0 and p.stdout == HELLO


def test_directory_redirect_and_listing(files: Server) -> None:
    p = run("get", "-v", files.url + "sub")
    assert p.returncode == 0
    assert "< :status: 301" in err_lines(p) and "< location: /sub/" in err_lines(p)
    p = run("get", files.url + "sub/")
    assert p.returncode == 0
    assert b'href="inner.txt"' in p.stdout and b'href="deeper/"' in p.stdout
    p = run("get", files.url)
    assert b"hello.txt" in p.stdout and b"with%20space.html" in p.stdout
    assert b"link_out" not in p.stdout and b"dir_out" not in p.stdout  # links out are hidden


def test_no_open_redirect_and_no_fifo(files: Server) -> None:
    p = run("get", "-v", files.url.rstrip("/") + "//sub")
    assert "< :status: 301" in err_lines(p) and "< location: /sub/" in err_lines(p)
    if hasattr(os, "mkfifo"):
        p = run("get", "-v", files.url + "fifo", timeout=10)
        assert p.returncode == 8 and "< :status: 404" in err_lines(p)
        assert run("get", files.url + "hello.txt", timeout=10).stdout == HELLO  # still serving


def test_query_string_ignored_for_files(files: Server) -> None:
    p = run("get", files.url + "sub/deeper/x.json?v=1")
    assert p.returncode == 0 and p.stdout == b"{}"


def test_download_5mib_to_file_with_progress(files: Server, tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.bin"
    p = run("get", "--progress", "-o", str(out), files.url + "big.bin", timeout=30)
    assert p.returncode == 0, p.stderr
    assert p.stdout == b""
    want = hashlib.sha256((tree / "big.bin").read_bytes()).hexdigest()
    assert hashlib.sha256(out.read_bytes()).hexdigest() == want
    last = p.stderr.decode().rsplit("\r", 1)[-1]
    assert "100%" in last and "5.0 MiB/5.0 MiB" in last, p.stderr[-200:]


def test_no_progress_when_not_a_tty(files: Server, tmp_path: Path) -> None:
    out = tmp_path / "h.txt"
    p = run("get", "-o", str(out), files.url + "hello.txt")
    assert p.returncode == 0 and p.stderr == b"" and out.read_bytes() == HELLO


def test_unwritable_output(files: Server, tmp_path: Path) -> None:
    p = run("get", "-o", str(tmp_path / "no" / "such" / "dir" / "f"), files.url + "hello.txt")
    assert p.returncode == 1
    assert len(err_lines(p)) == 1 and "cannot write" in p.stderr.decode()


# --------------------------------------------------------------------------- echo


def test_echo_body_and_trailers(echo: Server, tmp_path: Path) -> None:
    data = os.urandom(1024 * 1024 + 17)
    src = tmp_path / "up.bin"
    src.write_bytes(data)
    p = run("get", "-v", "-d", f"@{src}", "-H", "content-type: application/x-test", echo.url + "up")
    assert p.returncode == 0, p.stderr
    assert p.stdout == data
    err = err_lines(p)
    assert f"> content-length: {len(data)}" in err
    assert "< content-type: application/x-test" in err
    assert err.index("* trailers") < err.index(f"< x-sha256: {hashlib.sha256(data).hexdigest()}")
    assert f"< x-request-bytes: {len(data)}" in err


def test_echo_stdin_and_literal(echo: Server) -> None:
    p = run("get", "-d", "@-", echo.url, input=b"from stdin")
    assert p.returncode == 0 and p.stdout == b"from stdin"
    p = run("get", "-v", "-d", "literal", echo.url)
    assert p.stdout == b"literal" and "> :method: POST" in err_lines(p)
    p = run("get", "-v", "-X", "PUT", "-d", "", echo.url)
    assert p.returncode == 0 and p.stdout == b"" and "< x-request-bytes: 0" in err_lines(p)


def test_curl_against_echo(echo: Server, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    (tmp_path / "c.bin").write_bytes(data)
    p = curl("--http2-prior-knowledge", "--data-binary", f"@{tmp_path / 'c.bin'}", echo.url)
    assert p.returncode == 0, p.stderr
    assert p.stdout == data


# --------------------------------------------------------------------------- curl -> serve


def test_curl_get_head_range(files: Server) -> None:
    p = curl(
        "--http2-prior-knowledge", "-w", "\n%{http_version} %{http_code}", files.url + "hello.txt"
    )
    assert p.stdout == HELLO + b"\n2 200", p
    p = curl("--http2-prior-knowledge", "-I", files.url + "hello.txt")
    head = p.stdout.decode().lower()
    assert head.startswith("http/2 200") and "content-length: 13" in head
    assert "content-type: text/plain" in head
    p = curl(
        "--http2-prior-knowledge", "-r", "7-11", "-w", "\n%{http_code}", files.url + "hello.txt"
    )
    assert p.stdout == HELLO[7:12] + b"\n206"
    p = curl("--http2-prior-knowledge", "-o", "-", "-w", "%{http_code}", files.url + "missing")
    assert p.stdout.endswith(b"404")


def test_curl_downloads_big_file(files: Server, tree: Path) -> None:
    p = curl("--http2-prior-knowledge", files.url + "big.bin")
    assert p.returncode == 0
    assert (
        hashlib.sha256(p.stdout).digest()
        == hashlib.sha256((tree / "big.bin").read_bytes()).digest()
    )


# --------------------------------------------------------------------------- TLS


def test_tls_self_signed(tls: tuple[Server, str]) -> None:
    server, ca = tls
    assert server.url.startswith("https://")
    p = run("get", "-v", "--cacert", ca, server.url + "hello.txt")
    assert p.returncode == 0, p.stderr
    assert p.stdout == HELLO
    (connected,) = [line for line in err_lines(p) if line.startswith("* connected to")]
    assert re.search(r"over TLSv1\.[23] .*ALPN h2", connected), connected
    p = run("get", "-k", server.url + "hello.txt")
    assert p.returncode == 0 and p.stdout == HELLO


def test_tls_untrusted_certificate(tls: tuple[Server, str]) -> None:
    server, _ = tls
    p = run("get", server.url + "hello.txt")
    assert p.returncode == 4
    (line,) = err_lines(p)
    assert line.startswith("aioh2s: error: TLS failure") and "certificate verif" in line


def test_https_to_h2c_port_is_tls_failure(files: Server) -> None:
    p = run("get", "-k", f"https://127.0.0.1:{files.port}/hello.txt")
    assert p.returncode == 4, p.stderr
    (line,) = err_lines(p)
    assert "TLS failure" in line


def test_h2c_to_tls_port_is_connection_failure(tls: tuple[Server, str]) -> None:
    server, _ = tls
    p = run("get", f"http://127.0.0.1:{server.port}/hello.txt")
    assert p.returncode == 5, p.stderr
    (line,) = err_lines(p)
    assert "during the HTTP/2 handshake" in line and "https://" in line


def test_curl_over_tls(tls: tuple[Server, str]) -> None:
    server, ca = tls
    p = curl("--http2", "--cacert", ca, "-w", "\n%{http_version}", server.url + "hello.txt")
    assert p.returncode == 0, p.stderr
    assert p.stdout == HELLO + b"\n2"


def test_tls_with_given_cert(tree: Path, tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "c.pem"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "k.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    s = Server(
        str(tree), "--tls-cert", str(tmp_path / "c.pem"), "--tls-key", str(tmp_path / "k.pem")
    )
    try:
        p = run("get", "--cacert", str(tmp_path / "ca.pem"), s.url + "sub/inner.txt")
        assert p.returncode == 0, p.stderr
        assert p.stdout == b"inner\n"
    finally:
        assert s.stop() == 0


async def test_alpn_mismatch_is_tls_failure() -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    ctx.set_alpn_protocols(["http/1.1"])

    async def http11(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.read(100)
        w.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
        w.close()

    server = await asyncio.start_server(http11, "127.0.0.1", 0, ssl=ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        rc, _, err = await arun("get", "-k", f"https://127.0.0.1:{port}/")
    finally:
        server.close()
    assert rc == 4, err
    (line,) = err.decode().splitlines()
    # The client offers only h2, the server only http/1.1: OpenSSL completes the handshake
    # with no ALPN at all, and the client must say so rather than talk HTTP/2 to it.
    assert "TLS failure" in line and "no ALPN protocol" in line and "'h2'" in line


# --------------------------------------------------------------------------- errors


def test_connection_refused() -> None:
    # Bound but not listening: connecting is refused, and no parallel test can take the port.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        p = run("get", f"http://127.0.0.1:{port}/")
    assert p.returncode == 3
    assert err_lines(p) == [f"aioh2s: error: connection refused: 127.0.0.1:{port}"]


@pytest.mark.parametrize(
    "args",
    [
        ["get", "ftp://example.com/"],
        ["get", "http:///nohost"],
        ["get", "http://127.0.0.1:99999/"],
        ["get", "-H", "no colon here", "http://127.0.0.1:1/"],
        ["get", "-H", "connection: close", "http://127.0.0.1:1/"],
        ["get", "--no-such-option", "http://127.0.0.1:1/"],
        ["frobnicate"],
        ["serve", "/definitely/not/a/dir"],
        ["serve", ".", "--tls-cert", "x.pem"],
        ["serve", ".", "--self-signed", "--tls-cert", "x.pem", "--tls-key", "y.pem"],
    ],
)
def test_usage_errors(args: list[str]) -> None:
    p = run(*args)
    assert p.returncode == 2, (args, p.stderr)
    assert "aioh2s: error:" in p.stderr.decode()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_right_after_url_is_clean_exit(tree: Path, sig: signal.Signals) -> None:
    s = Server(str(tree), "-q")
    s.proc.send_signal(sig)
    # Wait for that signal's exit: stop() would add a SIGTERM, which, landing after the loop
    # removed its handlers on the way out, kills the process (-15) instead.
    try:
        assert s.proc.wait(15) == 0
    finally:
        s.stop()


def test_listen_failure(files: Server) -> None:
    p = subprocess.run(
        [*CLI, "serve", "--port", str(files.port)],
        capture_output=True,
        env=ENV,
        timeout=20,
        check=False,
    )
    assert p.returncode == 3
    assert "cannot listen" in p.stderr.decode()


def test_self_signed_without_trustme(tree: Path) -> None:
    code = (
        "import sys; sys.modules['trustme'] = None; from aioh2s.cli import main; "
        f"sys.exit(main(['serve', {str(tree)!r}, '--port', '0', '--self-signed']))"
    )
    p = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, env=ENV, timeout=20, check=False
    )
    assert p.returncode == 4
    assert "needs the 'trustme' package" in p.stderr.decode()
    assert p.stdout == b""


def test_version_and_help() -> None:
    p = run("--version")
    assert p.returncode == 0 and p.stdout.startswith(b"aioh2s ")
    p = run("get", "--help")
    assert p.returncode == 0 and b"--insecure" in p.stdout


async def arun(*args: str, timeout: float = 20) -> tuple[int, bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(
        *CLI, *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out, err


async def test_stream_reset_exit_code() -> None:
    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        if reader.headers[":path"] == "/refuse":
            writer.reset(aioh2s.ErrorCode.REFUSED_STREAM)
        else:
            writer.send_headers({":status": "200"})
            writer.write(b"partial")
            await writer.drain()
            writer.reset(aioh2s.ErrorCode.INTERNAL_ERROR)

    server = await aioh2s.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        rc, out, err = await arun("get", f"http://127.0.0.1:{port}/refuse")
        assert rc == 6, err
        assert err.decode().splitlines() == [
            "aioh2s: error: stream reset by the server: REFUSED_STREAM"
        ]
        rc, out, err = await arun("get", f"http://127.0.0.1:{port}/midway")
        assert rc == 6, err
        assert err.decode().splitlines() == [
            "aioh2s: error: stream reset by the server: INTERNAL_ERROR"
        ]
    finally:
        server.close()
        await server.wait_closed()


async def test_max_time() -> None:
    async def slow(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        await asyncio.sleep(30)

    server = await aioh2s.start_server(slow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        rc, _, err = await arun("get", "--max-time", "0.5", f"http://127.0.0.1:{port}/")
    finally:
        server.close()
    assert rc == 7
    assert "--max-time" in err.decode()


async def test_peer_closing_is_connection_lost() -> None:
    async def bad(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        # Not an HTTP/2 server at all: a peer that closes right after accepting.
        w.close()

    server = await asyncio.start_server(bad, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        rc, _, err = await arun("get", f"http://127.0.0.1:{port}/")
    finally:
        server.close()
    assert rc == 5, err
    assert len(err.decode().splitlines()) == 1


# --------------------------------------------------------------------------- nghttpd


def test_get_against_nghttpd(tree: Path) -> None:
    nghttpd = require("nghttpd")
    port = closed_port()
    proc = subprocess.Popen(
        [nghttpd, "--no-tls", "-d", str(tree), "-a", "127.0.0.1", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            threading.Event().wait(0.05)
        p = run("get", "-v", f"http://127.0.0.1:{port}/hello.txt")
        assert p.returncode == 0, p.stderr
        assert p.stdout == HELLO
        assert "< :status: 200" in err_lines(p)
    finally:
        proc.terminate()
        proc.wait(10)


def test_demo_subcommand_round_trip() -> None:
    import hashlib

    proc = subprocess.run(
        [sys.executable, "-m", "aioh2s", "demo", "ping from the demo"],
        capture_output=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"ping from the demo"
    digest = hashlib.sha256(b"ping from the demo").hexdigest()
    assert f"x-sha256: {digest}".encode() in proc.stderr
    assert b"< :status: 200" in proc.stderr


# --------------------------------------------------------------------------- the user's face
# Through the installed `aioh2s` entry point (ENTRY), as a user runs it.


def entry(
    *args: str, input: bytes | None = None, merged: bool = False, timeout: float = 30
) -> subprocess.CompletedProcess[bytes]:
    """Run ``aioh2s ARGS``; ``merged`` sends stderr into stdout's pipe, as ``2>&1`` does."""
    return subprocess.run(
        [*ENTRY, *args], input=input, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merged else subprocess.PIPE,
        env=ENV, timeout=timeout, check=False,
    )


def test_entry_point_is_the_console_script() -> None:
    if ENTRY == CLI and IN_CI:
        pytest.fail("the aioh2s console script is not installed next to the interpreter")
    p = entry("--version")
    assert p.returncode == 0 and p.stdout.startswith(b"aioh2s ")


@pytest.mark.parametrize(
    ("command", "codes"),
    [
        ("get", _cli_get.GET_EXIT_CODES),
        ("ws", _cli_ws.WS_EXIT_CODES),
        ("serve", _cli_serve.SERVE_EXIT_CODES),
    ],
)
def test_help_lists_every_exit_code(command: str, codes: tuple[tuple[int, str], ...]) -> None:
    p = entry(command, "--help")
    assert p.returncode == 0, p.stderr
    text = p.stdout.decode()
    assert "exit codes:" in text
    epilog = text[text.index("exit codes:"):]
    listed = [int(m) for m in re.findall(r"^  (\d+) +\S", epilog, re.M)]
    assert listed == [code for code, _ in codes]
    for code, meaning in codes:
        first_words = " ".join(meaning.split()[:3])
        assert re.search(rf"^  {code} +{re.escape(first_words)}", epilog, re.M), (code, epilog)


def test_every_exit_code_is_in_a_help_table() -> None:
    # Every exit code the command line can return is documented in some command's --help.
    constants = {v for k, v in vars(_cli_common).items() if k.startswith("EXIT_")}
    tables = (_cli_get.GET_EXIT_CODES, _cli_ws.WS_EXIT_CODES, _cli_serve.SERVE_EXIT_CODES)
    assert {code for table in tables for code, _ in table} == constants
    # get's table covers every code but the WebSocket ones.
    websocket = {_cli_common.EXIT_WS_REFUSED, _cli_common.EXIT_WS_CLOSED}
    assert {code for code, _ in _cli_get.GET_EXIT_CODES} == constants - websocket


def test_include_headers(files: Server) -> None:
    p = entry("get", "-i", files.url + "hello.txt")
    assert p.returncode == 0, p.stderr
    head, sep, body = p.stdout.partition(b"\r\n\r\n")
    assert sep and body == HELLO
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/2 200"
    assert "content-length: 13" in lines and "content-type: text/plain" in lines
    assert not any(line.startswith(":") for line in lines)


def test_head_prints_headers_only(files: Server) -> None:
    p = entry("get", "-I", files.url + "hello.txt")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(b"HTTP/2 200\r\n") and p.stdout.endswith(b"\r\n\r\n")
    assert b"content-length: 13\r\n" in p.stdout and HELLO not in p.stdout
    files.wait_stderr(re.escape('"HEAD /hello.txt" 200 0'))
    p = entry("get", "-I", "-d", "x", files.url + "hello.txt")
    assert p.returncode == 2 and b"-I (HEAD) sends no request body" in p.stderr
    p = entry("get", "-I", files.url + "nope")
    assert p.returncode == 8 and p.stdout.startswith(b"HTTP/2 404\r\n")


def test_include_writes_trailers_after_the_body(echo: Server) -> None:
    # As curl -i does: the trailer fields follow the body, in the header lines' form.
    p = entry("get", "-i", "-d", "abc", echo.url)
    assert p.returncode == 0, p.stderr
    head, _, rest = p.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/2 200\r\n")
    digest = hashlib.sha256(b"abc").hexdigest()
    assert rest == b"abc" + f"x-request-bytes: 3\r\nx-sha256: {digest}\r\n".encode()
    p = entry("get", "-d", "abc", echo.url)  # without -i: the body alone
    assert p.stdout == b"abc"


async def test_head_option_writes_only_headers_whatever_the_method() -> None:
    seen: list[str] = []

    async def body_anyway(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        method = reader.headers[":method"]
        seen.append(method)
        writer.send_headers({":status": "200", "x-kind": "full"}, end_stream=method == "HEAD")
        if method != "HEAD":
            writer.write(b"BODY-SENT-ANYWAY\n")
            writer.write_eof()

    async with await aioh2s.start_server(body_anyway, "127.0.0.1", 0) as server:
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        for extra in (["-X", "GET"], ["-X", "POST"], []):
            rc, out, err = await aentry("get", "-I", *extra, url)
            assert rc == 0, (extra, err)
            assert out == b"HTTP/2 200\r\nx-kind: full\r\n\r\n", extra
    assert seen == ["GET", "POST", "HEAD"]


async def test_progress_bar_line_is_ended_before_an_error() -> None:
    async def reset_midway(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        writer.send_headers({":status": "200", "content-length": "1000000"})
        writer.write(b"x" * 16384)
        await writer.drain()
        await asyncio.sleep(0.3)
        writer.reset(aioh2s.ErrorCode.INTERNAL_ERROR)

    async with await aioh2s.start_server(reset_midway, "127.0.0.1", 0) as server:
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        rc, out, err = await aentry("get", "--progress", url)
    assert rc == 6 and out == b"x" * 16384
    bar, sep, message = err.partition(b"aioh2s: error: ")
    assert sep and bar.startswith(b"\r") and b"16.0 KiB" in bar, err
    assert bar.endswith(b"\n") and bar.count(b"\n") == 1, err  # the bar's line was ended
    assert message == b"stream reset by the server: INTERNAL_ERROR\n"


def test_verbose_prints_the_frame_trace(files: Server) -> None:
    p = entry("get", "-v", files.url + "hello.txt")
    assert p.returncode == 0, p.stderr
    assert p.stdout == HELLO
    err = err_lines(p)
    frame = re.compile(r"\* \[ *\d+\.\d{3}\] (send|recv) ([A-Z_]+) stream=(\d+) length=(\d+) ")
    frames = [m.groups() for line in err if (m := frame.match(line))]
    assert ("send", "SETTINGS", "0", "48") in frames
    assert ("recv", "SETTINGS", "0", "0") in frames  # the server's ACK
    assert ("recv", "DATA", "1", "13") in frames
    headers = [line for line in err if " send HEADERS stream=1 " in line]
    assert len(headers) == 1 and headers[0].endswith("flags=END_STREAM|END_HEADERS")
    # The frame lines sit among the header lines, and hpack's DEBUG lines are not there.
    assert err.index("> :method: GET") < err.index(headers[0])
    assert not any("hpack" in line for line in err)


def test_demo_shows_only_the_clients_frames() -> None:
    p = entry("demo", "frames")
    assert p.returncode == 0, p.stderr
    err = p.stderr.decode()
    assert err.count("] send HEADERS stream=1") == 1  # not the echo server's too
    assert err.count("] recv HEADERS stream=1") == 2  # response headers and trailers


def test_body_without_newline_does_not_run_into_stderr(files: Server) -> None:
    # stdout and stderr are one pipe (2>&1, or a terminal): the next stderr line starts on a
    # line of its own.
    p = entry("get", "-v", files.url + "nonl.txt", merged=True)
    assert p.returncode == 0, p.stdout
    assert NO_NEWLINE + b"\n" in p.stdout and NO_NEWLINE + b"*" not in p.stdout
    p = entry("demo", "no newline", merged=True)
    assert p.returncode == 0, p.stdout
    assert b"no newline\n* " in p.stdout and b"no newline*" not in p.stdout
    # Separate pipes: the body is exactly what was served, stderr gets no stray newline.
    p = entry("get", "-v", files.url + "nonl.txt")
    assert p.stdout == NO_NEWLINE
    assert b"\n\n" not in p.stderr


async def test_error_after_body_without_newline_starts_a_new_line() -> None:
    async def oops(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        writer.send_headers({":status": "500"})
        writer.write(b"oops")
        writer.write_eof()

    async with await aioh2s.start_server(oops, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        rc, out, _ = await aentry("get", f"http://127.0.0.1:{port}/", merged=True)
    assert rc == 8
    assert out == b"oops\naioh2s: error: server answered 500 Internal Server Error\n"


def test_progress_without_output_file(files: Server, tree: Path) -> None:
    big = (tree / "big.bin").read_bytes()
    # stdout redirected (a pipe), stderr elsewhere: the bar is drawn, the body is intact.
    p = entry("get", "--progress", files.url + "big.bin")
    assert p.returncode == 0, p.stderr
    assert p.stdout == big
    last = p.stderr.decode().rsplit("\r", 1)[-1]
    assert "100%" in last and "5.0 MiB/5.0 MiB" in last, p.stderr[-200:]
    # Body and bar would share one terminal or pipe: not silently ignored any more.
    p = entry("get", "--progress", files.url + "hello.txt", merged=True)
    assert p.returncode == 0
    assert p.stdout.startswith(b"aioh2s: warning: --progress ignored: the body goes to the same")
    assert p.stdout.endswith(b"\n" + HELLO) and b"%" not in p.stdout
    p = entry("get", "--no-progress", "-o", "-", files.url + "hello.txt")
    assert p.stdout == HELLO and p.stderr == b""


def on_tty(*args: str, timeout: float = 20) -> tuple[int, bytes, bytes]:
    """Run ``aioh2s ARGS`` with stdout on a pseudo-terminal (raw: bytes pass unchanged)."""
    import pty
    import tty

    master, slave = pty.openpty()
    tty.setraw(slave)
    try:
        proc = subprocess.Popen(
            [*ENTRY, *args], stdout=slave, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            env=ENV,
        )
        os.close(slave)
        slave = -1
        out = b""
        while True:
            ready, _, _ = select.select([master], [], [], timeout)
            if not ready:
                proc.kill()
                raise AssertionError("no end of output from the command on the terminal")
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the command exited and closed the terminal
                break
            if not chunk:
                break
            out += chunk
        assert proc.stderr is not None
        err = proc.stderr.read()
        proc.stderr.close()
        return proc.wait(timeout), out, err
    finally:
        os.close(master)
        if slave != -1:
            os.close(slave)


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_binary_output_to_a_terminal_is_refused(files: Server) -> None:
    rc, out, err = on_tty("get", files.url + "nul.bin")
    assert rc == 1, err
    assert b"\x00" not in out
    assert err.decode().splitlines() == [
        "aioh2s: error: binary output can mess up your terminal: use '-o FILE' to save it, "
        "or '-o -' to print it anyway"
    ]
    rc, out, err = on_tty("get", "-o", "-", files.url + "nul.bin")
    assert rc == 0 and out == b"text\x00with a NUL byte", err
    rc, out, err = on_tty("get", files.url + "hello.txt")  # text is printed as before
    assert rc == 0 and out == HELLO, err
    # As curl, only the first 2000 bytes are looked at: a NUL after a long text (already on
    # the terminal) no longer cuts it short; one at byte 2000 still counts.
    rc, out, err = on_tty("get", files.url + "late-nul.txt")
    assert rc == 0 and out == LONG_TEXT + b"\x00tail\n", err
    rc, out, err = on_tty("get", files.url + "nul-1999.bin")
    assert rc == 1 and b"\x00" not in out and b"binary output" in err
    p = entry("get", files.url + "nul.bin")  # not a terminal: written as it is
    assert p.returncode == 0 and p.stdout == b"text\x00with a NUL byte"


def test_tls_server_answers_http11_client_and_says_why(tree: Path) -> None:
    pytest.importorskip("trustme")
    s = Server(str(tree), "--self-signed")  # not -q: the refusals are logged
    try:
        p = curl("-k", "--http1.1", "-i", s.url + "hello.txt")
        assert p.returncode == 0, p.stderr
        assert p.stdout.startswith(b"HTTP/1.1 505 HTTP Version Not Supported\r\n"), p.stdout
        assert b"offer ALPN h2" in p.stdout
        s.wait_stderr("closing TLS connection", timeout=5)
        (line,) = [line for line in s.stderr if "closing TLS connection" in line]
        assert re.match(r"aioh2s: info: closing TLS connection from 127\.0\.0\.1:\d+: ", line)
        assert "did not offer ALPN h2" in line and "505" in line
        p = curl("-k", "--http2", "-w", "\n%{http_version}", s.url + "hello.txt")
        assert p.stdout == HELLO + b"\n2"
    finally:
        assert s.stop() == 0


# -- -L: redirects, through in-process servers that answer what they were asked ----------------


class Redirector:
    """A handler: ``/to?s=STATUS&u=URL`` redirects; ``/echo`` describes the request as JSON."""

    def __init__(self) -> None:
        self.requests: list[dict[str, object]] = []

    async def __call__(self, reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        import json
        from urllib.parse import parse_qs, urlsplit

        h = reader.headers
        body = await reader.read()
        url = urlsplit(h[":path"])
        seen = {
            "method": h[":method"], "path": url.path, "body": body.decode(),
            "authority": h[":authority"], "peer": writer.get_extra_info("peername")[1],
            "headers": {n: v for n, v in h if n in ("authorization", "cookie", "x-keep")},
        }
        self.requests.append(seen)
        if url.path == "/to":
            q = parse_qs(url.query)
            head = h[":method"] == "HEAD"
            writer.send_headers({":status": q["s"][0], "location": q["u"][0]}, end_stream=head)
            if not head:
                writer.write(b"redirect body\n")
                writer.write_eof()
        elif url.path == "/loop":
            writer.send_headers({":status": "302", "location": "/loop"}, end_stream=True)
        elif h[":method"] == "HEAD":
            writer.send_headers({":status": "200"}, end_stream=True)
        else:
            writer.send_headers({":status": "200", "content-type": "application/json"})
            writer.write(json.dumps(seen).encode())
            writer.write_eof()


async def aentry(
    *args: str, stdin: bytes | None = None, merged: bool = False, timeout: float = 20
) -> tuple[int, bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(
        *ENTRY, *args, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT if merged else subprocess.PIPE, env=ENV,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out, err or b""


@contextlib.asynccontextmanager
async def redirectors(n: int) -> AsyncIterator[list[tuple[Redirector, str]]]:
    """``n`` servers on their own ports (origins), each with its base URL."""
    made = []
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(n):
            handler = Redirector()
            server = await aioh2s.start_server(handler, "127.0.0.1", 0)
            stack.push_async_callback(server.wait_closed)
            stack.callback(server.close)
            made.append((handler, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"))
        yield made


def to(status: int, url: str) -> str:
    from urllib.parse import quote

    return f"/to?s={status}&u={quote(url, safe='')}"


async def test_redirects_followed_with_L_keep_or_change_the_method() -> None:
    import json

    async with redirectors(1) as [(seen, base)]:
        rc, out, err = await aentry("get", base + to(302, "/echo"))
        assert rc == 0 and out == b"redirect body\n", err  # without -L: the 3xx itself
        cases = [
            (["-d", "data"], 307, "POST", "data"),
            (["-d", "data"], 308, "POST", "data"),
            (["-d", "data"], 302, "GET", ""),
            (["-d", "data"], 301, "GET", ""),
            (["-X", "PUT", "-d", "data"], 301, "PUT", "data"),
            (["-X", "PUT", "-d", "data"], 303, "GET", ""),
            (["-I"], 303, "HEAD", ""),
        ]
        for extra, status, method, body in cases:
            seen.requests.clear()
            rc, out, err = await aentry("get", "-L", *extra, base + to(status, "/echo"))
            assert rc == 0, (extra, status, err)
            assert [r["method"] for r in seen.requests][1:] == [method], (extra, status)
            assert seen.requests[1]["body"] == body
            # Same origin: one connection for both requests.
            assert seen.requests[0]["peer"] == seen.requests[1]["peer"]
            if method != "HEAD":
                assert json.loads(out)["path"] == "/echo"


async def test_redirect_to_another_origin_drops_credentials() -> None:
    import json

    async with redirectors(2) as [(a, base_a), (_, base_b)]:
        args = ["get", "-L", "-v", "-H", "authorization: Bearer secret", "-H", "cookie: k=v",
                "-H", "x-keep: 1"]
        rc, out, err = await aentry(*args, base_a + to(302, base_b + "/echo"))
        assert rc == 0, err
        assert json.loads(out)["headers"] == {"x-keep": "1"}
        assert a.requests[0]["headers"] == {
            "authorization": "Bearer secret", "cookie": "k=v", "x-keep": "1",
        }
        assert f"* following the 302 redirect to {base_b}/echo" in err.decode()
        assert err.decode().count("* connected to") == 2  # a new connection for the new origin
        # Back on the first origin (a relative Location): they are sent again only there.
        a.requests.clear()
        rc, out, err = await aentry(*args, base_a + to(307, "/echo"))
        assert json.loads(out)["headers"]["authorization"] == "Bearer secret"
        assert err.decode().count("* connected to") == 1


async def test_redirect_limits_and_failures() -> None:
    async with redirectors(1) as [(seen, base)]:
        rc, _, err = await aentry("get", "-L", "--max-redirs", "3", base + "/loop")
        assert rc == 9
        assert err.decode().splitlines() == [
            "aioh2s: error: more than 3 redirects (--max-redirs), the last to '/loop'"
        ]
        assert len(seen.requests) == 4
        seen.requests.clear()
        rc, _, err = await aentry("get", "-L", base + "/loop", timeout=30)
        assert rc == 9 and len(seen.requests) == _cli_get.MAX_REDIRS + 1
        rc, _, err = await aentry("get", "-L", base + to(302, "ftp://example.com/"))
        assert rc == 9 and "bad URL 'ftp://example.com/'" in err.decode()
        rc, _, err = await aentry("get", "-L", "-d", "@-", base + to(307, "/echo"), stdin=b"x")
        assert rc == 9 and "came from stdin, which cannot be read again" in err.decode()
        rc, _, err = await aentry("get", "-L", "--max-redirs", "-1", base)
        assert rc == 2


async def test_redirect_with_a_file_body_sends_it_again(tmp_path: Path) -> None:
    import json

    (tmp_path / "up.txt").write_bytes(b"from a file")
    async with redirectors(1) as [(seen, base)]:
        rc, out, err = await aentry(
            "get", "-L", "-i", "-d", f"@{tmp_path / 'up.txt'}", base + to(308, "/echo")
        )
        assert rc == 0, err
        assert [r["body"] for r in seen.requests] == ["from a file", "from a file"]
        # -i: the headers of every response, the redirect's first.
        assert out.startswith(b"HTTP/2 308\r\n") and b"location: /echo\r\n" in out
        head2 = out.index(b"HTTP/2 200\r\n")
        assert json.loads(out[head2:].partition(b"\r\n\r\n")[2])["body"] == "from a file"


async def test_redirect_location_is_percent_encoded_as_curl_does() -> None:
    async with redirectors(1) as [(seen, base)]:
        for location, path in [("/a b", "/a%20b"), ("/\u00e9t\u00e9", "/%C3%A9t%C3%A9"),
                               ("/tab\there?q=x y", "/tab%09here")]:
            seen.requests.clear()
            rc, out, err = await aentry("get", "-L", base + to(302, location))
            assert rc == 0, (location, err)
            assert [r["path"] for r in seen.requests] == ["/to", path], location
        # The query is encoded too.
        seen.requests.clear()
        rc, out, err = await aentry("get", "-L", "-v", base + to(307, "/echo?q=a b"))
        assert rc == 0 and "* following the 307 redirect to " in err.decode()
        assert f"{base}/echo?q=a%20b" in err.decode()
        # A Location whose host cannot be one is still a redirect that cannot be followed.
        rc, _, err = await aentry("get", "-L", base + to(302, "http://bad host/x"))
        assert rc == 9, err
        assert err.decode().splitlines() == [
            "aioh2s: error: bad URL 'http://bad host/x': invalid host[:port] 'bad host'"
        ]
        # The user's own URL is not rewritten: a space in it is a usage error, said so.
        rc, _, err = await aentry("get", base + "/a b")
        assert rc == 2 and "invalid path '/a b'" in err.decode(), err
