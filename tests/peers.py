"""Servers that close connections on their own, for tests of the client (and its pool).

Theory of operation: a connection pool is only as good as its handling of connections the
*server* ends, so its tests need servers nobody here wrote that do so, on a real 127.0.0.1
socket. Each peer is started by a context manager that yields a :class:`Peer` (``host``,
``port``, ``process``, ``connect()``, ``stats()``), and is stopped and waited on at exit:

- :func:`go_server`: Go's ``golang.org/x/net/http2`` server (``interop/go_server.go``, built
  once per source hash into :func:`cache_dir`). Observed (tests/test_peers_smoke.py):

  * ``goaway_every=N``: the Nth request of a connection answers with ``Connection: close``;
    x/net/http2 then sends one GOAWAY(NO_ERROR) naming the highest stream it read (no
    two-step GOAWAY, no PING), finishes the open streams and closes TCP one second after the
    last ended. Streams above the last stream id are silently ignored, never answered.
  * ``idle=D``: after D without open streams the same single GOAWAY(NO_ERROR), then close.
  * ``max_age=D``: the same graceful shutdown D after accept, whatever the connection does.
  * ``max_streams=N`` is advertised in SETTINGS; a client that opens more before it
    acknowledged them gets REFUSED_STREAM, after that PROTOCOL_ERROR (stream errors).

- :func:`nghttpd_server`: nghttp2's ``nghttpd``, which has **no** option to end connections
  on its own: no idle timeout, no request or age limit. It ends one only for a missing
  SETTINGS ACK (10 s, GOAWAY SETTINGS_TIMEOUT) or a protocol error; a stream that sends
  nothing for 60 s is reset (RST_STREAM INTERNAL_ERROR), the connection stays. So
  :meth:`NghttpdPeer.restart` is how a test makes it close connections: the process is
  killed (connections end with FIN or RST, no GOAWAY) and started again on the same port.
  Serves the files of ``peer.docroot``; POST/PUT bodies are echoed (``--echo-upload``);
  ``stats()`` is not available (it counts nothing).

- :func:`aioh2s_server` (in this process, on the test's loop) and
  :func:`aioh2s_server_process` (the same server in a child Python, so it runs beside the
  client instead of interleaved with it): aioh2s's own server; ``goaway_every=N`` makes the
  handler of the Nth request of a connection call ``writer.connection.close(grace)``, which
  sends PING and GOAWAY(2^31-1), then the final GOAWAY(last stream id) when the PING's ACK
  arrives; streams opened after that get REFUSED_STREAM.

The Go and aioh2s servers serve the same routes: ``/count`` (header ``x-request-id``
required; the body is JSON ``{"id", "seen", "conn", "conn_request"}``, ``seen`` being how
often the server saw that id: more than 1 is a duplicate), ``/stats`` (JSON ``total``,
``distinct``, ``duplicates`` {id: times}, ``connections``, ``goaways``), ``/echo`` (the
request body back, chunk by chunk), ``/slow?ms=N``, ``/bytes?n=N`` (N bytes of
``i % 251``). Responses carry ``x-conn`` (the server's connection number) and
``x-conn-request`` (the request's number on it). A peer shared by several tests keeps
counting: use unique request ids (``uuid4().hex``).

Missing tools skip a test locally and fail it under ``CI=true`` (:func:`helpers.require`).
This module has no tests; run as a script, it serves the aioh2s peer (see
:func:`aioh2s_server_process`).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import fcntl
import functools
import hashlib
import json
import os
import select
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

import aioh2s
from helpers import require, unavailable

HERE = Path(__file__).resolve().parent
GO_SOURCE = HERE / "interop" / "go_server.go"
#: Where Debian's golang-golang-x-net-dev puts golang.org/x/net (a GOPATH tree).
SYSTEM_GOPATH = "/usr/share/gocode"
STARTUP_TIMEOUT = 15.0
BUILD_TIMEOUT = 300.0
STOP_TIMEOUT = 5.0


def pattern(n: int) -> bytes:
    """``n`` bytes of ``byte[i] = i % 251`` (what ``/bytes?n=N`` answers)."""
    block = bytes(range(251))
    return (block * (n // 251 + 1))[:n]


# --------------------------------------------------------------------------- the peer


@dataclass
class Peer:
    """A running server: where it listens and how to talk to it.

    ``certs`` (an object with ``cert``, ``key`` and ``ca`` paths, as conftest's
    ``cert_files``) is set when it speaks TLS; ``process`` is None for an in-process server.
    """

    name: str
    port: int
    argv: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    certs: Any = None
    log_path: Path | None = None
    counts: bool = True  # serves /count and /stats
    host: str = "127.0.0.1"

    @property
    def tls(self) -> bool:
        return self.certs is not None

    def client_options(self) -> dict[str, Any]:
        """Keywords for ``aioh2s.connect`` (TLS: trust the test CA, name ``localhost``)."""
        if not self.tls:
            return {}
        ctx = aioh2s.client_ssl_context(str(self.certs.ca))
        return {"ssl": ctx, "server_hostname": "localhost"}

    async def connect(self, timeout: float = 10.0, **options: Any) -> aioh2s.Client:
        """A new client connection (``options`` are ``aioh2s.Config`` fields)."""
        opts = {**self.client_options(), **options}
        return await asyncio.wait_for(aioh2s.connect(self.host, self.port, **opts), timeout)

    async def get(
        self, path: str, headers: dict[str, str] | None = None, timeout: float = 10.0
    ) -> tuple[aioh2s.Headers, bytes]:
        """One GET on a fresh connection, closed afterwards: (response headers, body)."""

        async def go() -> tuple[aioh2s.Headers, bytes]:
            client = await self.connect()
            try:
                req = {":path": path, **(headers or {})}
                async with client.request(req, end_stream=True) as st:
                    return await st.response_headers(), await st.reader.read()
            finally:
                await client.close(grace=1)

        return await asyncio.wait_for(go(), timeout)

    async def stats(self) -> dict[str, Any]:
        """The server's ``/stats`` (fetched on a connection of its own)."""
        if not self.counts:
            raise RuntimeError(f"{self.name} does not count requests (no /stats)")
        headers, body = await self.get("/stats")
        assert headers[":status"] == "200", (headers, body)
        result: dict[str, Any] = json.loads(body)
        return result

    def log_tail(self, limit: int = 4000) -> str:
        """The end of what the server wrote to stderr."""
        if self.log_path is None:
            return ""
        try:
            text = self.log_path.read_text("utf-8", "replace")
        except OSError:
            return ""
        return text if len(text) <= limit else "...\n" + text[-limit:]

    def describe(self) -> str:
        return f"{self.name} on {self.host}:{self.port}\n$ {shlex.join(self.argv)}\n" + (
            f"--- stderr\n{self.log_tail()}" if self.log_path else ""
        )


class _Child:
    """A server process: stdin kept open (servers of ours exit when it closes), stderr to a file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = argv
        fd, path = tempfile.mkstemp(prefix=f"aioh2s-{name}-", suffix=".log")
        self.log_path = Path(path)
        try:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=fd, env=env,
                start_new_session=True,  # a ^C in the terminal reaches pytest, not the peer
            )
        except BaseException:
            self.log_path.unlink(missing_ok=True)
            raise
        finally:
            os.close(fd)

    def fail(self, why: str) -> None:
        try:
            log = self.log_path.read_text("utf-8", "replace")[-4000:]
        except OSError:
            log = ""
        pytest.fail(f"{self.name} {why}\n$ {shlex.join(self.argv)}\n--- stderr\n{log}",
                    pytrace=False)

    def read_listen_line(self, timeout: float = STARTUP_TIMEOUT) -> int:
        """The port from the child's first line, ``LISTEN 127.0.0.1:PORT``."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, left))
            if not ready:
                self.fail(f"did not print its port within {timeout} s (got {line!r})")
            chunk = os.read(self.proc.stdout.fileno(), 1)
            if not chunk:
                self.proc.wait(STOP_TIMEOUT)
                self.fail(f"exited with {self.proc.returncode} before listening (got {line!r})")
            line += chunk
        word, _, hostport = line.decode().strip().partition(" ")
        if word != "LISTEN" or not hostport.rpartition(":")[2].isdigit():
            self.fail(f"printed {line!r}, not 'LISTEN host:port'")
        return int(hostport.rpartition(":")[2])

    def stop(self, stdin_ends_it: bool = True) -> None:
        """Close stdin (our servers exit then), terminate, then kill; waits for the process."""
        proc = self.proc
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        try:
            proc.wait(1.0 if stdin_ends_it else 0)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT)

    def remove_log(self) -> None:
        self.log_path.unlink(missing_ok=True)


# --------------------------------------------------------------------------- Go


def cache_dir() -> Path:
    """``$AIOH2S_TEST_CACHE``, else ``$XDG_CACHE_HOME/aioh2s-tests`` (``~/.cache/...``)."""
    root = os.environ.get("AIOH2S_TEST_CACHE")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(xdg, "aioh2s-tests")
    path = Path(root)
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK):
            raise PermissionError(path)
    except OSError:
        path = Path(tempfile.gettempdir()) / f"aioh2s-tests-{os.getuid()}"
        path.mkdir(parents=True, exist_ok=True)
    return path


def _gopath() -> str:
    """A GOPATH entry that has golang.org/x/net/http2 (GOPATH mode: no module downloads)."""
    for entry in [*os.environ.get("GOPATH", "").split(os.pathsep), SYSTEM_GOPATH]:
        if entry and (Path(entry) / "src/golang.org/x/net/http2/server.go").is_file():
            return entry
    unavailable(
        f"golang.org/x/net/http2 is not in GOPATH or {SYSTEM_GOPATH} "
        "(Debian/Ubuntu: apt-get install golang-golang-x-net-dev)"
    )


@functools.cache
def _go_build_key(go: str, gopath: str, source: Path = GO_SOURCE) -> str:
    """Hash of what the binary depends on: our source, the Go toolchain, x/net's http2."""
    h = hashlib.sha256(source.read_bytes())
    version = subprocess.run([go, "version"], capture_output=True, timeout=30, check=False)
    h.update(version.stdout)
    for name in ("server.go", "frame.go", "transport.go"):
        h.update((Path(gopath) / "src/golang.org/x/net/http2" / name).read_bytes())
    return h.hexdigest()[:16]


_go_builds: dict[str, Path | str] = {}  # key -> binary, or why its build failed


def go_server_binary() -> Path:
    """Build ``interop/go_server.go`` once (per source hash, across runs) and return it."""
    return go_binary(GO_SOURCE)


def go_binary(source: Path) -> Path:
    """Build the Go program ``source`` once (per source hash, across runs) and return it.

    GOPATH mode (``GO111MODULE=off``) against the system's x/net, so no network is needed;
    concurrent pytest-xdist workers take turns through a lock file. A missing toolchain or
    x/net skips (fails under ``CI=true``); a failed build fails every test that wants it.
    """
    go = require("go")
    gopath = _gopath()
    key = f"{source.stem}-{_go_build_key(go, gopath, source)}"
    if key not in _go_builds:
        _go_builds[key] = _build_go(go, gopath, key, source)
    built = _go_builds[key]
    if isinstance(built, str):
        pytest.fail(built, pytrace=False)
    return built


def _build_go(go: str, gopath: str, key: str, source: Path) -> Path | str:
    cache = cache_dir()
    name = source.stem
    out = cache / key
    if out.is_file():
        return out
    with open(cache / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another worker may be building it right now
        if out.is_file():
            return out
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            env = {
                **os.environ,
                "GO111MODULE": "off",
                "GOPATH": os.pathsep.join([os.path.join(tmp, "gopath"), gopath]),
                "GOCACHE": str(cache / "go-build"),
                "GOFLAGS": "",
                "GOENV": "off",
                "GOPROXY": "off",
                "CGO_ENABLED": "0",
            }
            argv = [go, "build", "-o", os.path.join(tmp, name), str(source)]
            try:
                res = subprocess.run(
                    argv, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                return f"go build did not finish within {BUILD_TIMEOUT} s\n$ {shlex.join(argv)}"
            if res.returncode != 0:
                return (
                    f"building {source.name} failed (exit {res.returncode})\n"
                    f"$ {shlex.join(argv)}\n{res.stdout}{res.stderr}"
                )
            os.replace(os.path.join(tmp, name), out)
        for old in cache.glob(f"{name}-*"):  # binaries of older sources
            if old != out and not old.name.endswith(".lock"):
                old.unlink(missing_ok=True)
    return out


def _duration(seconds: float) -> str:
    return f"{int(round(seconds * 1000))}ms"


@contextlib.contextmanager
def go_server(
    *,
    certs: Any = None,
    max_streams: int = 0,
    idle: float | None = None,
    goaway_every: int = 0,
    max_age: float | None = None,
    extra: Sequence[str] = (),
) -> Iterator[Peer]:
    """Run the Go server (h2c, or TLS with ``certs``); see the module docstring."""
    argv = [str(go_server_binary()), "-addr", "127.0.0.1:0"]
    if certs is not None:
        argv += ["-cert", str(certs.cert), "-key", str(certs.key)]
    if max_streams:
        argv += ["-max-streams", str(max_streams)]
    if idle is not None:
        argv += ["-idle", _duration(idle)]
    if goaway_every:
        argv += ["-goaway-every", str(goaway_every)]
    if max_age is not None:
        argv += ["-max-age", _duration(max_age)]
    argv += list(extra)
    child = _Child("go-server", argv)
    try:
        port = child.read_listen_line()
        yield Peer("go", port, argv, child.proc, certs, child.log_path)
    finally:
        child.stop()
        child.remove_log()


# --------------------------------------------------------------------------- nghttpd


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PolledPeer(Peer):
    """A peer that cannot report its port (nghttpd, nghttpx): started, then polled."""

    _child: _Child | None = None

    def _start(self) -> None:
        self._child = _Child(self.name, self.argv)
        self.process = self._child.proc
        self.log_path = self._child.log_path
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:  # poll until it accepts
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
                return
            except OSError:
                if self.process.poll() is not None:
                    self._child.fail(f"exited with {self.process.returncode} before listening")
                if time.monotonic() > deadline:
                    self._child.fail(f"did not accept connections within {STARTUP_TIMEOUT} s")
                time.sleep(0.05)

    def _stop(self, kill: bool) -> None:
        if self._child is None:
            return
        if kill and self._child.proc.poll() is None:
            self._child.proc.kill()
        self._child.stop(stdin_ends_it=False)
        self._child.remove_log()
        self._child = None

    def restart(self, *, kill: bool = True) -> None:
        """Stop the peer (SIGKILL; else SIGTERM) and start it again on the same port.

        Its connections end without GOAWAY: the kernel closes their sockets.
        """
        self._stop(kill)
        self._start()


@dataclass
class NghttpdPeer(PolledPeer):
    """nghttpd: ``docroot`` holds ``hello.txt`` and ``1mib.bin`` (``pattern(2**20)``)."""

    docroot: Path = Path()


def _start_polled(make: Callable[[int], PolledPeer]) -> PolledPeer:
    """Start the peer ``make(port)`` builds on a free port, trying another if it was taken."""
    for attempt in range(3):  # a free port may be taken before the peer binds it
        peer = make(free_port())
        try:
            peer._start()
            return peer
        except pytest.fail.Exception:
            peer._stop(kill=True)
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


@contextlib.contextmanager
def nghttpd_server(
    *,
    certs: Any = None,
    max_streams: int | None = None,
    workers: int = 1,
    extra: Sequence[str] = (),
) -> Iterator[NghttpdPeer]:
    """Run ``nghttpd`` (h2c, or TLS with ``certs``) on a docroot of its own."""
    nghttpd = require("nghttpd")
    with tempfile.TemporaryDirectory(prefix="aioh2s-nghttpd-") as tmp:
        docroot = Path(tmp)
        (docroot / "hello.txt").write_bytes(b"hello from nghttpd\n")
        (docroot / "1mib.bin").write_bytes(pattern(1 << 20))

        def make(port: int) -> PolledPeer:
            argv = [nghttpd, "--echo-upload", "-a", "127.0.0.1", "-d", str(docroot),
                    "-n", str(workers)]
            if max_streams is not None:
                argv += ["-m", str(max_streams)]
            argv += list(extra)
            if certs is None:
                argv += ["--no-tls", str(port)]
            else:
                argv += [str(port), str(certs.key), str(certs.cert)]
            return NghttpdPeer("nghttpd", port, argv, certs=certs, counts=False,
                               docroot=docroot)

        peer = _start_polled(make)
        assert isinstance(peer, NghttpdPeer)
        try:
            yield peer
        finally:
            peer._stop(kill=False)


# --------------------------------------------------------------------------- nghttpx


@contextlib.contextmanager
def nghttpx_proxy(
    backend_port: int,
    *,
    certs: Any = None,
    backend_h2: bool = False,
    backend_tls: bool = False,
) -> Iterator[PolledPeer]:
    """Run nghttp2's reverse proxy ``nghttpx`` in front of 127.0.0.1:``backend_port``.

    The frontend speaks h2c and HTTP/1.1 (or TLS with ALPN h2 and http/1.1 with ``certs``);
    the backend is HTTP/1.1, or HTTP/2 with ``backend_h2`` (over TLS, unverified, with
    ``backend_tls``). nghttpx does RFC 8441 on both sides: an extended CONNECT for
    ``websocket`` from the frontend becomes an HTTP/1.1 Upgrade to an HTTP/1.1 backend, and
    an HTTP/1.1 Upgrade becomes an extended CONNECT to an HTTP/2 backend that enabled it.
    """
    nghttpx = require("nghttpx")
    with tempfile.TemporaryDirectory(prefix="aioh2s-nghttpx-") as tmp:

        def make(port: int) -> PolledPeer:
            frontend = f"127.0.0.1,{port}" + ("" if certs is not None else ";no-tls")
            proto = "h2" if backend_h2 else "http/1.1"
            backend = f"127.0.0.1,{backend_port};;proto={proto}"
            if backend_tls:
                backend += ";tls"
            argv = [nghttpx, f"--frontend={frontend}", f"--backend={backend}", "--workers=1",
                    "--conf=/dev/null", f"--pid-file={tmp}/pid", "--no-ocsp",
                    "--accesslog-file=/dev/null", "--errorlog-file=/dev/stderr"]
            if backend_tls:
                argv.append("--insecure")  # the backend's certificate is the test CA's
            if certs is not None:
                argv += [str(certs.key), str(certs.cert)]
            return PolledPeer("nghttpx", port, argv, certs=certs, counts=False)

        peer = _start_polled(make)
        try:
            yield peer
        finally:
            peer._stop(kill=False)


# --------------------------------------------------------------------------- aioh2s


@dataclass
class CountingState:
    """What an aioh2s peer counted (the same numbers as its ``/stats``)."""

    seen: collections.Counter[str] = field(default_factory=collections.Counter)
    total: int = 0
    connections: int = 0
    goaways: int = 0
    # Connection -> [its number, requests so far], while it is open.
    per_conn: dict[aioh2s.ConnectionHandle, list[int]] = field(default_factory=dict)

    def stats(self) -> dict[str, Any]:
        dups = {k: v for k, v in self.seen.items() if v > 1}
        return {"total": self.total, "distinct": len(self.seen), "duplicates": dups,
                "connections": self.connections, "goaways": self.goaways}


class CountingHandler:
    """The aioh2s peer's handler (routes in the module docstring).

    ``goaway_every=N``: the Nth request of a connection starts its graceful close
    (``writer.connection.close(grace)``) before it is answered; ``max_age``: the same, that
    many seconds after the connection's first request (the handler sees no connection
    before).
    """

    def __init__(
        self,
        state: CountingState,
        *,
        goaway_every: int = 0,
        grace: float | None = None,
        max_age: float | None = None,
    ) -> None:
        self.state = state
        self.goaway_every = goaway_every
        self.grace = grace
        self.max_age = max_age
        self._timers: list[asyncio.TimerHandle] = []

    def close(self, conn: aioh2s.ConnectionHandle) -> None:
        """Start the graceful close of ``conn`` (once)."""
        if conn.is_closing():
            return
        self.state.goaways += 1
        conn.close(self.grace)

    def cancel_timers(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()

    async def __call__(self, reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        state = self.state
        conn = writer.connection
        entry = state.per_conn.get(conn)
        if entry is None:
            state.connections += 1
            if state.connections % 64 == 0:  # forget ended connections (no weakrefs to them)
                for c in [c for c in state.per_conn if c._c.closed]:
                    del state.per_conn[c]
            entry = state.per_conn[conn] = [state.connections, 0]
            if self.max_age is not None:
                loop = asyncio.get_running_loop()
                self._timers.append(loop.call_later(self.max_age, self.close, conn))
        entry[1] += 1
        number, n = entry
        if self.goaway_every and n == self.goaway_every:
            self.close(conn)
        url = urlsplit(reader.headers[":path"])
        query = parse_qs(url.query)
        meta = {"x-conn": str(number), "x-conn-request": str(n)}
        if url.path == "/echo":
            writer.send_headers({":status": "200", **meta})
            async for chunk in reader:
                writer.write(chunk)
                await writer.drain()
            writer.write_eof()
            return
        await reader.read()
        status, body, ctype = "200", b"", "text/plain"
        if url.path == "/count":
            rid = reader.headers.get("x-request-id")
            if rid is None:
                status, body = "400", b"x-request-id header missing\n"
            else:
                state.seen[rid] += 1
                state.total += 1
                ctype = "application/json"
                body = json.dumps({"id": rid, "seen": state.seen[rid], "conn": number,
                                   "conn_request": n}).encode() + b"\n"
        elif url.path == "/stats":
            ctype, body = "application/json", json.dumps(state.stats()).encode() + b"\n"
        elif url.path == "/slow":
            ms = int(query.get("ms", ["0"])[0])
            await asyncio.sleep(ms / 1000)
            body = f"slept {ms} ms\n".encode()
        elif url.path == "/bytes":
            body = pattern(int(query.get("n", ["0"])[0]))
            ctype = "application/octet-stream"
        else:
            status, body = "404", b"not found\n"
        writer.send_headers({":status": status, "content-type": ctype,
                             "content-length": str(len(body)), **meta})
        writer.write(body)
        writer.write_eof()


@dataclass
class AioH2sPeer(Peer):
    """An in-process aioh2s peer: ``state`` is what it counted, ``server`` the server."""

    state: CountingState = field(default_factory=CountingState)
    server: aioh2s.Server | None = None


@contextlib.asynccontextmanager
async def aioh2s_server(
    *,
    goaway_every: int = 0,
    certs: Any = None,
    grace: float | None = None,
    max_age: float | None = None,
    **options: Any,
) -> AsyncIterator[AioH2sPeer]:
    """An aioh2s server on this loop; ``options`` are ``aioh2s.Config`` fields."""
    state = CountingState()
    handler = CountingHandler(state, goaway_every=goaway_every, grace=grace, max_age=max_age)
    ssl_ctx = None
    if certs is not None:
        ssl_ctx = aioh2s.server_ssl_context(str(certs.cert), str(certs.key))
    server = await aioh2s.start_server(handler, "127.0.0.1", 0, ssl=ssl_ctx, **options)
    try:
        port = server.sockets[0].getsockname()[1]
        yield AioH2sPeer("aioh2s", port, certs=certs, state=state, server=server)
    finally:
        handler.cancel_timers()
        server.close()
        await asyncio.wait_for(server.wait_closed(), 10)
        state.per_conn.clear()


@contextlib.contextmanager
def aioh2s_server_process(
    *,
    goaway_every: int = 0,
    certs: Any = None,
    grace: float | None = None,
    max_age: float | None = None,
    max_streams: int | None = None,
    idle: float | None = None,
) -> Iterator[Peer]:
    """The aioh2s peer in a child Python (this module run as a script)."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--goaway-every", str(goaway_every)]
    if certs is not None:
        argv += ["--cert", str(certs.cert), "--key", str(certs.key)]
    for flag, value in (("--grace", grace), ("--max-age", max_age),
                        ("--max-streams", max_streams), ("--idle", idle)):
        if value is not None:
            argv += [flag, str(value)]
    src = str(HERE.parent / "src")
    path = os.pathsep.join(p for p in (src, str(HERE), os.environ.get("PYTHONPATH")) if p)
    child = _Child("aioh2s-server", argv, env={**os.environ, "PYTHONPATH": path})
    try:
        port = child.read_listen_line()
        yield Peer("aioh2s-process", port, argv, child.proc, certs, child.log_path)
    finally:
        child.stop()
        child.remove_log()


async def _serve_main(args: argparse.Namespace) -> None:
    options: dict[str, Any] = {}
    if args.max_streams is not None:
        options["max_concurrent_streams"] = args.max_streams
    if args.idle is not None:
        options["idle_timeout"] = args.idle
    certs = argparse.Namespace(cert=args.cert, key=args.key) if args.cert else None
    loop = asyncio.get_running_loop()
    stdin_closed = asyncio.Event()

    def watch_stdin() -> None:  # exit when the test runner goes away
        while sys.stdin.buffer.read(65536):
            pass
        loop.call_soon_threadsafe(stdin_closed.set)

    threading.Thread(target=watch_stdin, daemon=True).start()
    async with aioh2s_server(goaway_every=args.goaway_every, certs=certs, grace=args.grace,
                             max_age=args.max_age, **options) as peer:
        print(f"LISTEN 127.0.0.1:{peer.port}", flush=True)
        await stdin_closed.wait()


def main() -> None:
    p = argparse.ArgumentParser(description="The aioh2s peer of tests/peers.py.")
    p.add_argument("--goaway-every", type=int, default=0)
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--grace", type=float)
    p.add_argument("--max-age", type=float)
    p.add_argument("--max-streams", type=int)
    p.add_argument("--idle", type=float)
    asyncio.run(_serve_main(p.parse_args()))


if __name__ == "__main__":
    main()
