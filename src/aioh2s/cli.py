"""The ``aioh2s`` command line: a tiny HTTP/2 client (``get``) and file/echo server (``serve``).

Theory of operation: each subcommand is one coroutine run by :func:`asyncio.run`, built only
on the public API (``aioh2s.connect`` / ``aioh2s.start_server``), so the command line is also a
worked example of it. Bodies are streamed both ways in chunks with ``write`` + ``await
drain()``: neither command ever holds a whole file in memory, and flow control (the peer's
window) paces the transfer. Every failure is turned into one line on stderr and an exit code
by :func:`_describe`, in one place, so scripts can branch on the code and people can read the
line.

``aioh2s get URL``
    ``https://`` URLs use TLS with ALPN ``h2`` (RFC 9113 §3.2); ``http://`` URLs use h2c
    with prior knowledge (§3.3: the connection preface straight away, no Upgrade). The body
    goes to stdout (or ``-o FILE``); ``-v`` prints the request headers (``> ``), the response
    headers (``< ``) and trailers (after a ``* trailers`` line) to stderr. A request body
    (``-d``) is sent concurrently with reading the response, so an echoing server cannot
    deadlock against us on flow control.

``aioh2s serve [DIR]``
    Serves DIR (default ``.``) over h2c, or TLS with ``--tls-cert/--tls-key`` or
    ``--self-signed``: GET and HEAD, content-type from :mod:`mimetypes`, content-length,
    single byte ranges (206/416), 301 to add a directory's trailing slash, index.html or a
    listing for directories, 404 for anything missing *or outside DIR*, 405 for other
    methods. A request path is percent-decoded once, split on ``/``, any ``..`` segment is
    refused, and the joined path is resolved (following symlinks) and must still lie under
    DIR. ``--echo`` instead streams every request body back and ends with trailers
    ``x-request-bytes`` and ``x-sha256``. The first line on stdout is the listening URL
    (read it to learn the port chosen for ``--port 0``); an access log goes to stderr
    unless ``-q``. SIGINT/SIGTERM close the server gracefully (GOAWAY, then in-flight
    streams finish).

Exit codes (``get``):

==== ====================================================================================
0    a complete response with a status below 400 (or ``--help``/``--version``)
1    local error: cannot read the ``-d @file`` or write the output, or an unexpected error
2    usage error (bad option, bad URL, bad header)
3    connection failed: refused, unresolvable host, unreachable, connect timeout
4    TLS failure: handshake or certificate verification failed, or ALPN did not select h2
5    the connection failed after it was set up: peer closed it, sent GOAWAY, or broke the
     protocol
6    the stream was reset (RST_STREAM); the message names the error code, e.g. REFUSED_STREAM
7    ``--max-time`` elapsed
8    the server answered with status 400 or above (the body is still written)
130  interrupted (Ctrl-C)
==== ====================================================================================

``serve`` exits 0 after a signal-initiated shutdown, 2 on a usage error (DIR is not a
directory, a lone ``--tls-cert``), 3 when it cannot listen, and 4 when the TLS setup fails
(unreadable certificate or key, or ``--self-signed`` without ``trustme``).

Why a hand-written progress bar: the bar needs bytes done, total (from content-length),
rate, and a redraw throttled to 10 Hz with a carriage return: about thirty lines
(:class:`_Progress`).
``rich`` or ``tqdm`` would add a dependency (or an optional extra with two code paths to test)
to a package whose only runtime dependencies are ``h2`` and ``hpack``, for one line of output.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email.utils
import hashlib
import html
import logging
import mimetypes
import os
import shutil
import signal
import socket
import ssl
import stat
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from http import HTTPStatus
from pathlib import Path
from typing import IO, BinaryIO, NoReturn, TextIO
from urllib.parse import quote, unquote, urlsplit

import aioh2s
from aioh2s.client import RequestStream
from aioh2s.errors import (
    ALPNError,
    ConnectError,
    ConnectionClosed,
    ConnectionTerminated,
    ErrorCode,
    H2Error,
    StreamReset,
)
from aioh2s.tls import check_alpn, client_ssl_context, server_ssl_context

__all__ = ["main"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CONNECT = 3
EXIT_TLS = 4
EXIT_CONNECTION_LOST = 5
EXIT_RESET = 6
EXIT_TIMEOUT = 7
EXIT_HTTP_ERROR = 8
EXIT_INTERRUPTED = 130

# 64 KiB: four default-size DATA frames per write, big enough that per-chunk overhead
# (a drain, a file read) is negligible, small enough to keep memory per stream trivial.
CHUNK = 64 * 1024

# Header names RFC 9113 §8.2.2 forbids in HTTP/2; refused up front with a clear message
# rather than as a ProtocolError from deep inside h2.
_CONNECTION_SPECIFIC = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
}

log = logging.getLogger("aioh2s.cli")


class CLIError(Exception):
    """A failure already described for the user: print ``message``, exit with ``code``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("aioh2s")
    except PackageNotFoundError:
        return "0+unknown"


def _code_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"error code {code:#x}"


def _chain(exc: BaseException) -> list[BaseException]:
    """*exc* and its causes/contexts: the core may wrap a socket or TLS error."""
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen and len(seen) < 10:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


def _describe(exc: BaseException, target: str) -> tuple[int, str]:
    """Map an exception from the client to ``(exit code, one-line message)``."""
    if isinstance(exc, CLIError):
        return exc.code, exc.message
    if isinstance(exc, ConnectError) and exc.__cause__ is not None:
        # connect()'s wrapper names the stage; the exit code follows what actually failed.
        return _describe(exc.__cause__, target)
    chain = _chain(exc)
    # TLS first: a handshake failure may surface wrapped in a connection error.
    for e in chain:
        if isinstance(e, ALPNError):
            return EXIT_TLS, f"TLS failure with {target}: {e}"
        if isinstance(e, ssl.SSLCertVerificationError):
            reason = e.verify_message or e.reason or str(e)
            return EXIT_TLS, f"TLS failure with {target}: certificate verification failed: {reason}"
        if isinstance(e, ssl.SSLError):
            return EXIT_TLS, f"TLS failure with {target}: {e.reason or e}"
    if isinstance(exc, StreamReset):
        who = "the server" if exc.remote else "us"
        return EXIT_RESET, f"stream reset by {who}: {_code_name(exc.error_code)}"
    if isinstance(exc, ConnectionTerminated):
        return (
            EXIT_CONNECTION_LOST,
            f"server {target} closed the connection (GOAWAY {_code_name(exc.error_code)}): {exc}",
        )
    if isinstance(exc, ConnectionClosed):
        if isinstance(exc.__cause__, ConnectionRefusedError):
            return EXIT_CONNECT, f"connection refused: {target}"
        return EXIT_CONNECTION_LOST, f"connection to {target} lost: {exc}"
    if isinstance(exc, H2Error):
        return EXIT_CONNECTION_LOST, f"HTTP/2 error with {target}: {exc}"
    if isinstance(exc, ConnectionRefusedError):
        return EXIT_CONNECT, f"connection refused: {target}"
    if isinstance(exc, socket.gaierror):
        return EXIT_CONNECT, f"cannot resolve host of {target}: {exc.strerror or exc}"
    if isinstance(exc, ConnectionError):
        return EXIT_CONNECTION_LOST, f"connection to {target} lost: {exc.strerror or exc}"
    if isinstance(exc, OSError):
        return EXIT_CONNECT, f"cannot connect to {target}: {exc.strerror or exc}"
    return EXIT_ERROR, f"unexpected error: {type(exc).__name__}: {exc}"


def _error(message: str) -> None:
    text = " ".join(message.split("\n"))
    print(f"aioh2s: error: {text}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- progress bar


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


class _Progress:
    """A one-line download progress bar on a text stream, redrawn at most 10 times a second."""

    WIDTH = 30

    def __init__(self, out: TextIO, total: int | None) -> None:
        self.out = out
        self.total = total
        self.done = 0
        self.start = time.monotonic()
        self.last_draw = 0.0

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last_draw >= 0.1:
            self.last_draw = now
            self._draw(now)

    def finish(self) -> None:
        self._draw(time.monotonic())
        self.out.write("\n")
        self.out.flush()

    def _draw(self, now: float) -> None:
        rate = self.done / max(now - self.start, 1e-6)
        if self.total:
            frac = min(self.done / self.total, 1.0)
            bar = "#" * int(self.WIDTH * frac)
            text = (
                f"{frac * 100:3.0f}% [{bar:<{self.WIDTH}}] "
                f"{_human(self.done)}/{_human(self.total)} {_human(rate)}/s"
            )
        else:
            text = f"{_human(self.done)} {_human(rate)}/s"
        # Trailing spaces wipe what a longer previous line left behind.
        self.out.write(f"\r{text}   ")
        self.out.flush()


# --------------------------------------------------------------------------- get


class _Body:
    """A request body: literal bytes, a file, or stdin; streamed in chunks."""

    def __init__(self, spec: str) -> None:
        self.data: bytes | None = None
        self.file: BinaryIO | None = None
        self.length: int | None = None
        if not spec.startswith("@"):
            self.data = spec.encode("utf-8", "surrogateescape")
            self.length = len(self.data)
            return
        name = spec[1:]
        try:
            f: BinaryIO = sys.stdin.buffer if name == "-" else open(name, "rb")
        except OSError as e:
            raise CLIError(EXIT_ERROR, f"cannot read {name}: {e.strerror or e}") from e
        self.file = f
        with contextlib.suppress(OSError, ValueError):
            st = os.fstat(f.fileno())
            if stat.S_ISREG(st.st_mode):
                self.length = st.st_size - f.tell()

    async def chunks(self) -> AsyncIterator[bytes]:
        """Yield the body in chunks; file reads run in a thread (stdin may block)."""
        if self.data is not None:
            if self.data:
                yield self.data
            return
        assert self.file is not None
        loop = asyncio.get_running_loop()
        while True:
            try:
                chunk = await loop.run_in_executor(None, self.file.read, CHUNK)
            except OSError as e:
                raise CLIError(EXIT_ERROR, f"cannot read request body: {e.strerror or e}") from e
            if not chunk:
                return
            yield chunk

    def close(self) -> None:
        if self.file is not None and self.file is not sys.stdin.buffer:
            self.file.close()


def _parse_header(text: str) -> tuple[str, str]:
    # A leading colon is a pseudo-header (":authority: x"): split at the second colon.
    sep = text.find(":", 1 if text.startswith(":") else 0)
    if sep <= 0:
        raise CLIError(EXIT_USAGE, f"bad header {text!r}: expected 'name: value'")
    name, value = text[:sep].strip().lower(), text[sep + 1 :].strip()
    if not name or any(c.isspace() for c in name):
        raise CLIError(EXIT_USAGE, f"bad header name in {text!r}")
    if name in _CONNECTION_SPECIFIC:
        raise CLIError(EXIT_USAGE, f"header {name!r} is not allowed in HTTP/2 (RFC 9113 §8.2.2)")
    return name, value


def _build_request(
    args: argparse.Namespace, body: _Body | None
) -> tuple[list[tuple[str, str]], str, int, str, ssl.SSLContext | None]:
    try:
        url = urlsplit(args.url)
        port = url.port
    except ValueError as e:
        raise CLIError(EXIT_USAGE, f"bad URL {args.url!r}: {e}") from e
    if url.scheme not in ("http", "https") or not url.hostname:
        raise CLIError(
            EXIT_USAGE, f"bad URL {args.url!r}: expected http://HOST[:PORT]/PATH or https://..."
        )
    tls = url.scheme == "https"
    host = url.hostname
    port = port or (443 if tls else 80)
    authority = url.netloc.rpartition("@")[2]
    path = url.path or "/"
    if url.query:
        path += "?" + url.query
    method = args.method or ("POST" if body is not None else "GET")
    pseudo = {":method": method, ":scheme": url.scheme, ":authority": authority, ":path": path}
    regular: list[tuple[str, str]] = [("user-agent", f"aioh2s/{_version()}"), ("accept", "*/*")]
    if body is not None and body.length is not None:
        regular.append(("content-length", str(body.length)))
    user = [_parse_header(h) for h in args.header]
    user_names = {n for n, _ in user}
    regular = [(n, v) for n, v in regular if n not in user_names]
    for name, value in user:
        if name == "host":
            # HTTP/2 carries the host in :authority (RFC 9113 §8.3.1).
            pseudo[":authority"] = value
        elif name.startswith(":"):
            if name not in pseudo:
                raise CLIError(EXIT_USAGE, f"unknown request pseudo-header {name!r}")
            pseudo[name] = value
        elif value:
            regular.append((name, value))
        # "name:" with no value only removes a default header, as in curl.
    ctx = None
    if tls:
        try:
            ctx = client_ssl_context(args.cacert, verify=not args.insecure)
        except (OSError, ssl.SSLError) as e:
            raise CLIError(EXIT_TLS, f"cannot load CA file {args.cacert}: {e}") from e
    target = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
    return list(pseudo.items()) + regular, host, port, target, ctx


def _print_headers(prefix: str, headers: Iterable[tuple[str, str]]) -> None:
    for name, value in headers:
        print(f"{prefix}{name}: {value}", file=sys.stderr)


async def _upload(writer: aioh2s.H2StreamWriter, body: _Body) -> None:
    try:
        async for chunk in body.chunks():
            writer.write(chunk)
            await writer.drain()
    except CLIError:
        # Tell the server the request is abandoned, so the response side stops too.
        writer.reset(ErrorCode.CANCEL)
        raise
    writer.write_eof()


class _Output:
    """Where the response body goes; the file is opened when the response starts."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.stream: IO[bytes] | None = None

    def open(self) -> None:
        if self.path is None or self.path == "-":
            self.stream = sys.stdout.buffer
            return
        try:
            self.stream = open(self.path, "wb")
        except OSError as e:
            raise CLIError(EXIT_ERROR, f"cannot write {self.path}: {e.strerror or e}") from e

    def write(self, chunk: bytes) -> None:
        assert self.stream is not None
        try:
            self.stream.write(chunk)
            if self.stream is sys.stdout.buffer:
                self.stream.flush()
        except BrokenPipeError:
            # A reader like `head` left: stop writing, and keep Python's exit-time flush of
            # stdout from raising again.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise CLIError(EXIT_ERROR, "output closed (broken pipe)") from None
        except OSError as e:
            raise CLIError(
                EXIT_ERROR, f"cannot write {self.path or 'stdout'}: {e.strerror or e}"
            ) from e

    def close(self) -> None:
        if self.stream is not None and self.stream is not sys.stdout.buffer:
            self.stream.close()


async def _get(args: argparse.Namespace) -> int:
    body = _Body(args.data) if args.data is not None else None
    try:
        headers, host, port, target, ctx = _build_request(args, body)
        try:
            return await asyncio.wait_for(
                _fetch(args, headers, host, port, target, ctx, body), args.max_time
            )
        except asyncio.TimeoutError:
            raise CLIError(
                EXIT_TIMEOUT, f"no complete response within --max-time {args.max_time:g} s"
            ) from None
    finally:
        if body is not None:
            body.close()


async def _fetch(
    args: argparse.Namespace,
    headers: list[tuple[str, str]],
    host: str,
    port: int,
    target: str,
    ctx: ssl.SSLContext | None,
    body: _Body | None,
) -> int:
    verbose: bool = args.verbose
    try:
        if ctx is None:
            connecting = aioh2s.connect(host, port)
        else:
            connecting = aioh2s.connect(host, port, ssl=ctx, server_hostname=host)
        client = await asyncio.wait_for(connecting, args.connect_timeout)
    except asyncio.TimeoutError:
        raise CLIError(
            EXIT_CONNECT, f"timed out connecting to {target} after {args.connect_timeout:g} s"
        ) from None
    except Exception as e:
        code, message = _describe(e, target)
        if code == EXIT_CONNECTION_LOST and ctx is None:
            # Typically a TLS-only or HTTP/1.1-only server hanging up on our preface.
            message += " during the HTTP/2 handshake (is it an h2c server? for TLS use https://)"
        raise CLIError(code, message) from e
    out = _Output(args.output)
    try:
        async with client.request(headers) as stream:
            ssl_object = stream.writer.get_extra_info("ssl_object")
            if ssl_object is not None:
                # The core checks this too; a second look costs nothing and keeps the CLI's
                # "TLS failure" promise even against a core that forgot.
                check_alpn(ssl_object)
            if verbose:
                if ssl_object is not None:
                    cipher = ssl_object.cipher()
                    print(
                        f"* connected to {target} over {ssl_object.version()}"
                        f" ({cipher[0] if cipher else '?'}), ALPN h2",
                        file=sys.stderr,
                    )
                else:
                    print(f"* connected to {target} (h2c, prior knowledge)", file=sys.stderr)
                _print_headers("> ", headers)
                print(">", file=sys.stderr, flush=True)
            upload: asyncio.Task[None] | None = None
            if body is None:
                stream.writer.write_eof()
            else:
                upload = asyncio.ensure_future(_upload(stream.writer, body))
            try:
                status = await _receive(args, stream, out)
            except BaseException:
                if upload is not None and upload.done() and not upload.cancelled():
                    up_exc = upload.exception()
                    if up_exc is not None:
                        raise up_exc from None
                raise
            finally:
                if upload is not None:
                    if not upload.done():
                        # The response ended (or failed) before the request body was sent,
                        # e.g. a 405 for a POST: stop uploading (RFC 9113 §8.1).
                        upload.cancel()
                    # Also collects an error the upload met after a complete response (the
                    # server's RST_STREAM(NO_ERROR)), which changes nothing for the user.
                    with contextlib.suppress(asyncio.CancelledError, H2Error, CLIError):
                        await upload
    except CLIError:
        raise
    except Exception as e:
        raise CLIError(*_describe(e, target)) from e
    finally:
        out.close()
        with contextlib.suppress(Exception, asyncio.TimeoutError):
            await asyncio.wait_for(client.close(), 5)
    if status >= 400:
        try:
            phrase = " " + HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        _error(f"server answered {status}{phrase}")
        return EXIT_HTTP_ERROR
    return EXIT_OK


async def _receive(args: argparse.Namespace, stream: RequestStream, out: _Output) -> int:
    response = await stream.response_headers()
    if args.verbose:
        for informational in stream.informational:
            _print_headers("< ", informational)
            print("<", file=sys.stderr)
        _print_headers("< ", response)
        print("<", file=sys.stderr, flush=True)
    status = int(response[":status"])
    out.open()
    progress = None
    if args.output not in (None, "-") and (
        args.progress or (args.progress is None and sys.stderr.isatty())
    ):
        length = response.get("content-length")
        progress = _Progress(sys.stderr, int(length) if length and length.isdigit() else None)
    async for chunk in stream.reader:
        out.write(chunk)
        if progress is not None:
            progress.update(len(chunk))
    if progress is not None:
        progress.finish()
    trailers = stream.reader.trailers
    if args.verbose and trailers is not None:
        print("* trailers", file=sys.stderr)
        _print_headers("< ", trailers)
        sys.stderr.flush()
    return status


# --------------------------------------------------------------------------- serve


class _Unsatisfiable(Exception):
    pass


def _parse_range(value: str, size: int) -> tuple[int, int] | None:
    """Parse a ``Range`` header into an inclusive ``(first, last)``, or ``None`` to ignore it.

    Only a single ``bytes`` range is honoured; anything else (other units, several ranges,
    bad syntax) is ignored and the whole file is served, as RFC 9110 §14.2 allows. Raises
    :class:`_Unsatisfiable` for a valid range outside the file (answered with 416).
    """
    unit, _, spec = value.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first_s, dash, last_s = spec.strip().partition("-")
    if not dash:
        return None
    first_s, last_s = first_s.strip(), last_s.strip()
    if not (first_s.isdigit() or first_s == "") or not (last_s.isdigit() or last_s == ""):
        return None
    if first_s == "":
        if last_s == "":
            return None
        suffix = int(last_s)
        if suffix == 0 or size == 0:
            raise _Unsatisfiable
        return max(size - suffix, 0), size - 1
    first = int(first_s)
    if last_s and int(last_s) < first:
        return None
    last = int(last_s) if last_s else size - 1
    if first >= size:
        raise _Unsatisfiable
    return first, min(last, size - 1)


class _FileServer:
    """The ``serve DIR`` request handler."""

    def __init__(self, root: Path, access_log: bool) -> None:
        self.root = root
        self.access_log = access_log

    def resolve(self, raw_path: str) -> Path | None:
        """Map a request ``:path`` to a file or directory inside the root, or ``None``."""
        if not raw_path.startswith("/"):
            return None  # "*" (OPTIONS) or absolute-form: nothing to serve.
        path = raw_path.split("?", 1)[0].split("#", 1)[0]
        try:
            decoded = unquote(path, errors="strict")
        except UnicodeDecodeError:
            return None
        if "\x00" in decoded:
            return None
        parts = [p for p in decoded.split("/") if p not in ("", ".")]
        for p in parts:
            if p == ".." or (os.sep != "/" and os.sep in p) or (os.altsep and os.altsep in p):
                return None
            if os.name == "nt" and ":" in p:
                return None  # drive letters and alternate data streams
        try:
            resolved = self.root.joinpath(*parts).resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        # resolve() followed every symlink: this is where a link pointing out is caught.
        if resolved != self.root and not resolved.is_relative_to(self.root):
            return None
        return resolved

    async def __call__(self, reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        """Answer one request."""
        req = reader.headers
        method = req.get(":method", "")
        raw_path = req.get(":path", "")
        status, sent = 500, 0
        try:
            status, sent = await self.respond(method, raw_path, req, writer)
        except (StreamReset, ConnectionClosed):
            status = 499  # the client went away mid-response; nothing left to tell it
        finally:
            if self.access_log:
                peer = writer.get_extra_info("peername")
                who = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "-"
                print(f'{who} "{method} {raw_path}" {status} {sent}', file=sys.stderr, flush=True)

    async def respond(
        self, method: str, raw_path: str, req: aioh2s.Headers, writer: aioh2s.H2StreamWriter
    ) -> tuple[int, int]:
        """Send the response; return ``(status, body bytes sent)`` for the access log."""
        head = method == "HEAD"
        if method not in ("GET", "HEAD"):
            return await _simple(
                writer, 405, "method not allowed\n", head, [("allow", "GET, HEAD")]
            )
        target = self.resolve(raw_path)
        if target is None:
            return await _simple(writer, 404, "not found\n", head)
        if target.is_dir():
            path_only = raw_path.split("?", 1)[0]
            if not path_only.endswith("/"):
                # Relative links in the listing need the trailing slash. One leading slash
                # only: "//host/dir" would be a protocol-relative redirect to another site.
                location = "/" + path_only.lstrip("/\\") + "/"
                return await _simple(writer, 301, "moved\n", head, [("location", location)])
            index = target / "index.html"
            if index.is_file():
                target = index
            else:
                return await _simple(
                    writer,
                    200,
                    self.listing(target, path_only),
                    head,
                    content_type="text/html; charset=utf-8",
                )
        if not target.is_file():
            # Sockets, FIFOs, devices: opening a FIFO would block the event loop.
            return await _simple(writer, 404, "not found\n", head)
        try:
            f = open(target, "rb")
        except PermissionError:
            return await _simple(writer, 403, "forbidden\n", head)
        except OSError:
            return await _simple(writer, 404, "not found\n", head)
        with f:
            return await self.send_file(f, target, req, writer, head)

    async def send_file(
        self,
        f: BinaryIO,
        target: Path,
        req: aioh2s.Headers,
        writer: aioh2s.H2StreamWriter,
        head: bool,
    ) -> tuple[int, int]:
        """Send a regular file, or the single byte range the request asked for."""
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            return await _simple(writer, 404, "not found\n", head)
        size = st.st_size
        ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        last_modified = email.utils.formatdate(st.st_mtime, usegmt=True)
        first, last = 0, size - 1
        status = 200
        extra: list[tuple[str, str]] = []
        range_value = req.get("range")
        if_range = req.get("if-range")
        if range_value is not None and (if_range is None or if_range == last_modified):
            try:
                rng = _parse_range(range_value, size)
            except _Unsatisfiable:
                return await _simple(
                    writer,
                    416,
                    "range not satisfiable\n",
                    head,
                    [("content-range", f"bytes */{size}")],
                )
            if rng is not None:
                first, last = rng
                status = 206
                extra.append(("content-range", f"bytes {first}-{last}/{size}"))
        length = last - first + 1
        writer.send_headers(
            [
                (":status", str(status)),
                ("content-type", ctype),
                ("content-length", str(length)),
                ("accept-ranges", "bytes"),
                ("last-modified", last_modified),
                *extra,
            ]
        )
        if head or length == 0:
            writer.write_eof()
            return status, 0
        f.seek(first)
        remaining = length
        while remaining:
            # A local file read of 64 KiB takes microseconds; a thread hop per chunk would
            # cost more than the blocking read it avoids.
            chunk = f.read(min(CHUNK, remaining))
            if not chunk:
                # The file shrank under us: the promised content-length cannot be met.
                writer.reset(ErrorCode.INTERNAL_ERROR)
                return status, length - remaining
            writer.write(chunk)
            remaining -= len(chunk)
            await writer.drain()
        writer.write_eof()
        return status, length

    def listing(self, directory: Path, url_path: str) -> str:
        """A minimal HTML index of *directory* (entries that resolve outside are hidden)."""
        rows = []
        for entry in sorted(directory.iterdir(), key=lambda p: p.name):
            if self.resolve(url_path + quote(entry.name)) is None:
                continue
            name = entry.name + ("/" if entry.is_dir() else "")
            rows.append(f'<li><a href="{quote(name)}">{html.escape(name)}</a></li>')
        title = html.escape(unquote(url_path))
        return (
            f"<!doctype html>\n<title>Index of {title}</title>\n<h1>Index of {title}</h1>\n"
            f"<ul>\n{chr(10).join(rows)}\n</ul>\n"
        )


async def _simple(
    writer: aioh2s.H2StreamWriter,
    status: int,
    text: str,
    head: bool,
    extra: Sequence[tuple[str, str]] = (),
    content_type: str = "text/plain; charset=utf-8",
) -> tuple[int, int]:
    data = text.encode()
    writer.send_headers(
        [
            (":status", str(status)),
            ("content-type", content_type),
            ("content-length", str(len(data))),
            *extra,
        ]
    )
    if not head:
        writer.write(data)
        await writer.drain()
    writer.write_eof()
    return status, 0 if head else len(data)


class _EchoServer:
    """The ``serve --echo`` handler: stream the body back, then trailers with its size/hash."""

    def __init__(self, access_log: bool) -> None:
        self.access_log = access_log

    async def __call__(self, reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        """Echo one request."""
        req = reader.headers
        head = req.get(":method") == "HEAD"
        writer.send_headers(
            [
                (":status", "200"),
                ("content-type", req.get("content-type", "application/octet-stream")),
            ]
        )
        digest = hashlib.sha256()
        n = 0
        try:
            async for chunk in reader:
                digest.update(chunk)
                n += len(chunk)
                if not head:
                    writer.write(chunk)
                    await writer.drain()
            writer.send_trailers([("x-request-bytes", str(n)), ("x-sha256", digest.hexdigest())])
        except (StreamReset, ConnectionClosed):
            return
        finally:
            if self.access_log:
                print(
                    f'"{req.get(":method")} {req.get(":path")}" echo {n}',
                    file=sys.stderr,
                    flush=True,
                )


def _self_signed(host: str, tmpdir: str) -> tuple[str, str]:
    try:
        import trustme
    except ImportError:
        raise CLIError(
            EXIT_TLS,
            "--self-signed needs the 'trustme' package: pip install trustme "
            "(or pass --tls-cert and --tls-key)",
        ) from None
    ca = trustme.CA(organization_name="aioh2s self-signed")
    names = ["localhost", "127.0.0.1", "::1"]
    if host and host not in names and host not in ("0.0.0.0", "::"):
        names.append(host)
    leaf = ca.issue_cert(*names)
    cert = os.path.join(tmpdir, "cert.pem")
    key = os.path.join(tmpdir, "key.pem")
    ca_path = os.path.join(tmpdir, "ca.pem")
    with open(cert, "wb") as fh:
        for pem in leaf.cert_chain_pems:
            fh.write(pem.bytes())
    leaf.private_key_pem.write_to_path(key)
    ca.cert_pem.write_to_path(ca_path)
    print(
        f"aioh2s: self-signed certificate for {', '.join(names)}; CA certificate: {ca_path} "
        "(curl --cacert / aioh2s get --cacert)",
        file=sys.stderr,
        flush=True,
    )
    return cert, key


async def _serve(args: argparse.Namespace) -> int:
    root = Path(args.dir)
    if not root.is_dir():
        raise CLIError(EXIT_USAGE, f"{args.dir} is not a directory")
    root = root.resolve()
    if bool(args.tls_cert) != bool(args.tls_key):
        raise CLIError(EXIT_USAGE, "--tls-cert and --tls-key go together")
    tmpdir: str | None = None
    try:
        ctx: ssl.SSLContext | None = None
        cert, key = args.tls_cert, args.tls_key
        if args.self_signed:
            tmpdir = tempfile.mkdtemp(prefix="aioh2s-")
            cert, key = _self_signed(args.host, tmpdir)
        if cert:
            try:
                ctx = server_ssl_context(cert, key)
            except (OSError, ssl.SSLError) as e:
                raise CLIError(EXIT_TLS, f"cannot load certificate {cert} / key {key}: {e}") from e
        handler = _EchoServer(not args.quiet) if args.echo else _FileServer(root, not args.quiet)
        try:
            server = await aioh2s.start_server(handler, args.host, args.port, ssl=ctx)
        except OSError as e:
            raise CLIError(
                EXIT_CONNECT, f"cannot listen on {args.host}:{args.port}: {e.strerror or e}"
            ) from e
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        # Handlers before the URL is printed: whoever reads the URL may signal at once.
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, stop.set)
        sockname = server.sockets[0].getsockname()
        shown = f"[{sockname[0]}]" if ":" in sockname[0] else sockname[0]
        print(f"{'https' if ctx else 'http'}://{shown}:{sockname[1]}/", flush=True)
        try:
            await stop.wait()
        finally:
            server.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 10)
        return EXIT_OK
    finally:
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)


async def _demo(args: argparse.Namespace) -> int:
    """An echo server on a free port and a ``get -v -d`` against it, in one process."""
    server = await aioh2s.start_server(_EchoServer(False), "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}/echo"
        print(f"* echo server listening on {url}", file=sys.stderr, flush=True)
        get_args = _build_parser().parse_args(["get", "-v", "-d", args.message, url])
        return await _get(get_args)
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), 10)


# --------------------------------------------------------------------------- entry point


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        _error(message)
        raise SystemExit(EXIT_USAGE)


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="aioh2s", description="HTTP/2 client and server from the aioh2s library.")
    parser.add_argument("--version", action="version", version=f"aioh2s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    g = sub.add_parser(
        "get",
        help="make one HTTP/2 request and print the response body",
        description="Make one HTTP/2 request (TLS+ALPN for https, h2c prior "
        "knowledge for http) and write the body to stdout.",
    )
    g.add_argument("url")
    g.add_argument(
        "-X",
        "--request",
        dest="method",
        metavar="METHOD",
        help="request method (default GET, or POST with -d)",
    )
    g.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="add a request header (repeatable); 'NAME:' removes a default one",
    )
    g.add_argument(
        "-d",
        "--data",
        metavar="DATA|@FILE",
        help="request body: literal text, @FILE, or @- for stdin (sent as-is)",
    )
    g.add_argument(
        "-o", "--output", metavar="FILE", help="write the body to FILE instead of stdout"
    )
    g.add_argument(
        "-k", "--insecure", action="store_true", help="do not verify the server's TLS certificate"
    )
    g.add_argument("--cacert", metavar="FILE", help="trust the CA certificates in FILE (PEM)")
    g.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="print request/response headers and trailers to stderr",
    )
    g.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr with -o (default: when stderr is a terminal)",
    )
    g.add_argument(
        "--connect-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="give up connecting after this long (default 10)",
    )
    g.add_argument(
        "--max-time",
        type=float,
        default=None,
        metavar="SECONDS",
        help="give up on the whole request after this long (default: no limit)",
    )

    s = sub.add_parser(
        "serve",
        help="serve a directory (or echo bodies) over HTTP/2",
        description="Serve DIR over HTTP/2 (h2c, or TLS with a certificate). "
        "The first line on stdout is the listening URL.",
    )
    s.add_argument("dir", nargs="?", default=".", metavar="DIR")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    s.add_argument("--tls-cert", metavar="FILE", help="PEM certificate chain (with --tls-key)")
    s.add_argument("--tls-key", metavar="FILE", help="PEM private key (with --tls-cert)")
    s.add_argument(
        "--self-signed",
        action="store_true",
        help="TLS with a throwaway certificate from a throwaway CA (needs trustme)",
    )
    s.add_argument(
        "--echo",
        action="store_true",
        help="echo request bodies back, with trailers x-request-bytes and x-sha256",
    )
    s.add_argument("-q", "--quiet", action="store_true", help="no access log on stderr")

    d = sub.add_parser(
        "demo",
        help="start an echo server and send it one request, in one process",
        description="Start an HTTP/2 echo server on a free 127.0.0.1 port and POST MESSAGE to "
        "it with 'get -v': a self-contained check that aioh2s works here.",
    )
    d.add_argument("message", nargs="?", default="hello, HTTP/2", metavar="MESSAGE")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line on *argv* (default ``sys.argv[1:]``); return the exit code."""
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (EXIT_OK if e.code is None else EXIT_USAGE)
    if args.command == "serve" and args.self_signed and (args.tls_cert or args.tls_key):
        _error("--self-signed and --tls-cert/--tls-key are exclusive")
        return EXIT_USAGE
    logging.basicConfig(level=logging.WARNING, format="aioh2s: %(levelname)s: %(message)s")
    commands = {"get": _get, "serve": _serve, "demo": _demo}
    coro = commands[args.command](args)
    try:
        return asyncio.run(coro)
    except CLIError as e:
        _error(e.message)
        return e.code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
