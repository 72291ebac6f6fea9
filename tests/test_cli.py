"""The ``aioh2s`` command line, run as subprocesses against itself, curl and nghttpd."""

from __future__ import annotations

import asyncio
import hashlib
import os
import queue
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest

import aioh2s
from helpers import require

SRC = str(Path(__file__).resolve().parent.parent / "src")
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p),
}
CLI = [sys.executable, "-m", "aioh2s"]

HELLO = b"hello, world\n"
SECRET = b"TOP SECRET outside the served directory\n"


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
    m = re.search(r"CA certificate: (\S+)", "\n".join(s.stderr))
    assert m, s.stderr
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
    assert any('"GET /hello.txt" 200 13' in line for line in files.stderr)  # access log


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
    assert "(h2c, prior knowledge)" in err[0]


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
    assert re.search(r"over TLSv1\.[23] .*ALPN h2", err_lines(p)[0]), err_lines(p)[0]
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
