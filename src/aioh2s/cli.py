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
    goes to stdout (or ``-o FILE``); ``-i`` puts the response headers before it and the
    trailers after it, ``-I`` prints only the headers (and sends HEAD, unless ``-X`` names
    another method). ``-v`` prints to stderr the request headers (``> ``), the
    response headers (``< ``), trailers (after a ``* trailers`` line) and one ``* `` line
    per HTTP/2 frame, from the library's frame trace (logger ``aioh2s.frames``). A request
    body (``-d``) is sent concurrently with reading the response, so an echoing server
    cannot deadlock against us on flow control. ``-L`` follows redirects (at most
    ``--max-redirs``, default :data:`MAX_REDIRS`), on the same connection while the origin
    stays the same, else on a new one (a Location's spaces, controls and non-ASCII bytes are
    percent-encoded first, as curl does); ``Authorization`` and ``Cookie`` headers given with
    ``-H`` go to the first origin only.

    What curl users expect of a terminal holds too: a body with a NUL byte in its first 2000
    bytes is not printed to a terminal (``-o -`` insists), the progress bar never draws onto
    the terminal the body is printed to (an explicit ``--progress`` says why), and when
    stdout and stderr are the same terminal or file, a stderr line after a body without a
    final newline (or after the progress bar) starts on a line of its own (:class:`_OpenLine`).

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

Exit codes: :data:`GET_EXIT_CODES` and :data:`SERVE_EXIT_CODES`, which ``--help`` prints
(the argparse epilog), so the list a user reads is the list the code uses.

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
import re
import shutil
import signal
import socket
import ssl
import stat
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from http import HTTPStatus
from pathlib import Path
from typing import IO, Any, BinaryIO, NoReturn, TextIO
from urllib.parse import quote, unquote, urljoin, urlsplit

import aioh2s
from aioh2s.client import RequestStream
from aioh2s.errors import (
    ALPNError,
    ConnectError,
    ConnectionClosed,
    ConnectionTerminated,
    ErrorCode,
    H2Error,
    LocalProtocolError,
    StreamReset,
)
from aioh2s.headers import check_request
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
EXIT_REDIRECT = 9
EXIT_INTERRUPTED = 130

#: ``get``'s exit codes and what each means (printed by ``aioh2s get --help``).
GET_EXIT_CODES = (
    (EXIT_OK, "a complete response with a status below 400 (or --help/--version)"),
    (EXIT_ERROR, "local error: cannot read the -d @file or write the output (or refused to"
     " print binary output to a terminal), or an unexpected error"),
    (EXIT_USAGE, "usage error (bad option, bad URL, bad header)"),
    (EXIT_CONNECT, "connection failed: refused, unresolvable host, unreachable, connect timeout"),
    (EXIT_TLS, "TLS failure: handshake or certificate verification failed, or ALPN did not"
     " select h2"),
    (EXIT_CONNECTION_LOST, "the connection failed after it was set up: the peer closed it,"
     " sent GOAWAY, or broke the protocol"),
    (EXIT_RESET, "the stream was reset (RST_STREAM); the message names the error code, e.g."
     " REFUSED_STREAM"),
    (EXIT_TIMEOUT, "--max-time elapsed"),
    (EXIT_HTTP_ERROR, "the server answered with status 400 or above (the body is still"
     " written)"),
    (EXIT_REDIRECT, "-L could not follow a redirect: more than --max-redirs, a Location that is"
     " not a valid http(s) URL, or a body that cannot be sent again (stdin)"),
    (EXIT_INTERRUPTED, "interrupted (Ctrl-C)"),
)

#: ``serve``'s exit codes (printed by ``aioh2s serve --help``).
SERVE_EXIT_CODES = (
    (EXIT_OK, "stopped by SIGINT or SIGTERM, after a graceful shutdown"),
    (EXIT_USAGE, "usage error (DIR is not a directory, a lone --tls-cert)"),
    (EXIT_CONNECT, "cannot listen on the address"),
    (EXIT_TLS, "TLS setup failed: unreadable certificate or key, or --self-signed without"
     " trustme"),
)

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
    _line.end()
    text = " ".join(message.split("\n"))
    print(f"aioh2s: error: {text}", file=sys.stderr, flush=True)


def _warn(message: str) -> None:
    _line.end()
    print(f"aioh2s: warning: {message}", file=sys.stderr, flush=True)


def _epilog(codes: Iterable[tuple[int, str]]) -> str:
    """The "exit codes" section of a subcommand's ``--help``."""
    import textwrap

    lines = ["exit codes:"]
    for code, meaning in codes:
        wrapped = textwrap.wrap(meaning, 74)
        lines.append(f"  {code:<4} {wrapped[0]}")
        lines += [f"       {more}" for more in wrapped[1:]]
    return "\n".join(lines)


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
        _line.pending = False

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
        # The bar's line stays open until finish(): an error or warning printed meanwhile
        # (a reset mid-body) ends it first (_OpenLine), instead of running into it.
        _line.pending = True


# --------------------------------------------------------------------------- get


class _Body:
    """A request body: literal bytes, a file, or stdin; streamed in chunks."""

    def __init__(self, spec: str) -> None:
        self.data: bytes | None = None
        self.file: BinaryIO | None = None
        self.length: int | None = None
        self.name = "the request body"
        self.start: int | None = None  # where a regular file's body starts (to send it again)
        self.sent = False
        if not spec.startswith("@"):
            self.data = spec.encode("utf-8", "surrogateescape")
            self.length = len(self.data)
            return
        name = spec[1:]
        self.name = "stdin" if name == "-" else name
        try:
            f: BinaryIO = sys.stdin.buffer if name == "-" else open(name, "rb")
        except OSError as e:
            raise CLIError(EXIT_ERROR, f"cannot read {name}: {e.strerror or e}") from e
        self.file = f
        with contextlib.suppress(OSError, ValueError):
            st = os.fstat(f.fileno())
            if stat.S_ISREG(st.st_mode):
                self.start = f.tell()
                self.length = st.st_size - self.start

    def rewind(self, why: str) -> None:
        """Make the body ready to be sent again (a redirect that keeps it); else CLIError."""
        if not self.sent or self.data is not None:
            return
        if self.file is None or self.start is None:
            raise CLIError(EXIT_REDIRECT, f"cannot follow {why}: the request body came from "
                           f"{self.name}, which cannot be read again")
        try:
            self.file.seek(self.start)
        except OSError as e:
            raise CLIError(EXIT_ERROR, f"cannot read {self.name}: {e.strerror or e}") from e

    async def chunks(self) -> AsyncIterator[bytes]:
        """Yield the body in chunks; file reads run in a thread (stdin may block)."""
        self.sent = True
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


class _Target:
    """A parsed request URL: where to connect, and the pseudo-headers it gives."""

    __slots__ = ("url", "scheme", "host", "port", "authority", "path", "label")

    def __init__(self, url: str, code: int) -> None:
        """Parse ``url``; a bad one is a CLIError with ``code`` (usage, or a bad redirect)."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as e:
            raise CLIError(code, f"bad URL {url!r}: {e}") from e
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CLIError(
                code, f"bad URL {url!r}: expected http://HOST[:PORT]/PATH or https://..."
            )
        self.url = url
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = port or (443 if self.scheme == "https" else 80)
        self.authority = parts.netloc.rpartition("@")[2]
        self.path = parts.path or "/"
        if parts.query:
            self.path += "?" + parts.query
        # The rules the library applies to :authority and :path, checked here so that a URL
        # that breaks them is a bad URL (exit 2, or 9 for a Location), not an "HTTP/2 error".
        for name, value, what in ((":authority", self.authority, "host[:port]"),
                                  (":path", self.path, "path")):
            try:
                check_request([(name.encode(), value.encode("utf-8", "surrogateescape"))])
            except LocalProtocolError:
                raise CLIError(code, f"bad URL {url!r}: invalid {what} {value!r}") from None
        host = self.host
        self.label = f"{host}:{self.port}" if ":" not in host else f"[{host}]:{self.port}"

    @property
    def origin(self) -> tuple[str, str, int]:
        """(scheme, host, port): a redirect elsewhere needs a connection of its own."""
        return self.scheme, self.host.lower(), self.port


# Headers that carry the user's credentials: sent only to the origin of the URL given, never
# to another one a redirect names (as curl does, CVE-2018-1000007 and CVE-2022-27776).
_CREDENTIALS = {"authorization", "cookie", "proxy-authorization"}


def _request_headers(
    args: argparse.Namespace,
    target: _Target,
    method: str,
    body: _Body | None,
    *,
    first: bool,
    same_origin: bool,
) -> list[tuple[str, str]]:
    """The request's header list: pseudo-headers from the URL, defaults, then ``-H``.

    On a redirect (``first`` false) the URL decides the pseudo-headers; a ``Host`` given
    with ``-H`` still applies on the same origin; credentials go to the original origin only.
    """
    pseudo = {
        ":method": method,
        ":scheme": target.scheme,
        ":authority": target.authority,
        ":path": target.path,
    }
    regular: list[tuple[str, str]] = [("user-agent", f"aioh2s/{_version()}"), ("accept", "*/*")]
    if body is not None and body.length is not None:
        regular.append(("content-length", str(body.length)))
    user = [_parse_header(h) for h in args.header]
    if not same_origin:
        user = [(n, v) for n, v in user if n not in _CREDENTIALS]
    user_names = {n for n, _ in user}
    regular = [(n, v) for n, v in regular if n not in user_names]
    for name, value in user:
        if name == "host":
            # HTTP/2 carries the host in :authority (RFC 9113 §8.3.1).
            if same_origin:
                pseudo[":authority"] = value
        elif name.startswith(":"):
            if name not in pseudo:
                raise CLIError(EXIT_USAGE, f"unknown request pseudo-header {name!r}")
            if first:
                pseudo[name] = value
        elif value:
            regular.append((name, value))
        # "name:" with no value only removes a default header, as in curl.
    return list(pseudo.items()) + regular


def _print_headers(prefix: str, headers: Iterable[tuple[str, str]]) -> None:
    _line.end()
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


def _same_file(a: IO[Any], b: IO[Any]) -> bool:
    """Whether two streams write to the same file, pipe or terminal (``2>&1``, a tty)."""
    try:
        return os.path.samestat(os.fstat(a.fileno()), os.fstat(b.fileno()))
    except (OSError, ValueError, AttributeError):
        return False


class _OpenLine:
    """Whether stderr's current line was left open: by the body, or by the progress bar.

    A body without a final newline, printed to the terminal that also shows ``-v`` output or
    an error, would run into the next stderr line (``hello* trailers``): whoever writes to
    stderr after the body calls :meth:`end` first, which ends that line on stderr. Only
    stderr gets the newline: the body stays byte for byte what the server sent. The progress
    bar (drawn on stderr, never where the body goes) leaves its line open the same way
    until it finishes, so an error in mid-transfer starts on a line of its own too.
    """

    def __init__(self) -> None:
        self.pending = False

    def end(self) -> None:
        if self.pending:
            self.pending = False
            sys.stderr.write("\n")
            sys.stderr.flush()


_line = _OpenLine()


#: How much of the body the binary check looks at: curl's 2000 bytes. A NUL past them comes
#: after text the terminal already showed; refusing then would only cut a long text short.
_BINARY_WINDOW = 2000


class _Output:
    """Where the response goes (stdout or ``-o FILE``), opened at its first byte."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.stream: IO[bytes] | None = None
        self.to_stdout = path is None or path == "-"
        self.shares_stderr = self.to_stdout and _same_file(sys.stdout, sys.stderr)
        # curl's rule: a body with a NUL byte (in its first 2000 bytes) is not written to a
        # terminal unless asked for with "-o -", since control sequences in it can garble
        # (or reprogram) the terminal.
        self.guard_binary = path is None and _isatty(sys.stdout)
        self.body_bytes = 0  # body bytes written so far (while guard_binary: see write)

    def open(self) -> None:
        if self.stream is not None:
            return
        if self.to_stdout:
            self.stream = sys.stdout.buffer
            return
        assert self.path is not None
        try:
            self.stream = open(self.path, "wb")
        except OSError as e:
            raise CLIError(EXIT_ERROR, f"cannot write {self.path}: {e.strerror or e}") from e

    def write_head(self, status: str, headers: Iterable[tuple[str, str]]) -> None:
        """``-i``: a response's status line and headers, as curl prints HTTP/2 ones."""
        lines = [f"HTTP/2 {status}\r\n"]
        lines += [f"{n}: {v}\r\n" for n, v in headers if not n.startswith(":")]
        lines.append("\r\n")
        self._write("".join(lines).encode("utf-8", "surrogateescape"))

    def write_trailers(self, trailers: Iterable[tuple[str, str]]) -> None:
        """``-i``: the trailer fields after the body, as curl writes them."""
        lines = [f"{n}: {v}\r\n" for n, v in trailers if not n.startswith(":")]
        self._write("".join(lines).encode("utf-8", "surrogateescape"))

    def write(self, chunk: bytes) -> None:
        """Write body bytes; the binary check looks at the first :data:`_BINARY_WINDOW`."""
        if self.guard_binary:
            seen = self.body_bytes
            if seen < _BINARY_WINDOW and b"\0" in chunk[: _BINARY_WINDOW - seen]:
                raise CLIError(
                    EXIT_ERROR,
                    "binary output can mess up your terminal: use '-o FILE' to save it, "
                    "or '-o -' to print it anyway",
                )
            self.body_bytes = seen + len(chunk)
        self._write(chunk)

    def _write(self, chunk: bytes) -> None:
        if not chunk:
            return
        self.open()
        assert self.stream is not None
        try:
            self.stream.write(chunk)
            if self.to_stdout:
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
        if self.shares_stderr:
            _line.pending = not chunk.endswith(b"\n")

    def close(self) -> None:
        if self.stream is not None and not self.to_stdout:
            self.stream.close()


def _isatty(f: IO[Any]) -> bool:
    try:
        return f.isatty()
    except (ValueError, AttributeError):
        return False


def _want_progress(args: argparse.Namespace, out: _Output) -> bool:
    """Whether to draw the bar: ``--progress`` says so, else when stderr is a terminal.

    Never onto the terminal the body is printed to: the two would garble each other. An
    explicit ``--progress`` that cannot be honoured says so instead of being ignored.
    """
    if args.progress is False:
        return False
    if out.shares_stderr:
        if args.progress:
            _warn("--progress ignored: the body goes to the same terminal as the bar; "
                  "use -o FILE or redirect stdout")
        return False
    if args.progress:
        return True
    return _isatty(sys.stderr) and not args.verbose


class _Connections:
    """The connections of one ``get``: one per origin, so a redirect elsewhere opens another."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.clients: dict[tuple[str, str, int], aioh2s.Client] = {}
        self.ctx: ssl.SSLContext | None = None

    def _tls(self) -> ssl.SSLContext:
        if self.ctx is None:
            args = self.args
            try:
                self.ctx = client_ssl_context(args.cacert, verify=not args.insecure)
            except (OSError, ssl.SSLError) as e:
                raise CLIError(EXIT_TLS, f"cannot load CA file {args.cacert}: {e}") from e
        return self.ctx

    async def get(self, target: _Target) -> aioh2s.Client:
        """The open connection to ``target``'s origin, or a new one."""
        client = self.clients.get(target.origin)
        if client is not None and not client.is_closing():
            return client
        args = self.args
        ctx = self._tls() if target.scheme == "https" else None
        try:
            if ctx is None:
                connecting = aioh2s.connect(target.host, target.port)
            else:
                connecting = aioh2s.connect(
                    target.host, target.port, ssl=ctx, server_hostname=target.host
                )
            client = await asyncio.wait_for(connecting, args.connect_timeout)
        except asyncio.TimeoutError:
            raise CLIError(
                EXIT_CONNECT,
                f"timed out connecting to {target.label} after {args.connect_timeout:g} s",
            ) from None
        except Exception as e:
            code, message = _describe(e, target.label)
            if code == EXIT_CONNECTION_LOST and ctx is None:
                # Typically a TLS-only or HTTP/1.1-only server hanging up on our preface.
                message += " during the HTTP/2 handshake (is it an h2c server? for TLS use https://)"
            raise CLIError(code, message) from e
        old = self.clients.pop(target.origin, None)
        if old is not None:
            await self._close(old)
        self.clients[target.origin] = client
        ssl_object = client.get_extra_info("ssl_object")
        if ssl_object is not None:
            # The core checks this too; a second look costs nothing and keeps the CLI's
            # "TLS failure" promise even against a core that forgot.
            try:
                check_alpn(ssl_object)
            except ALPNError as e:
                raise CLIError(*_describe(e, target.label)) from e
        if args.verbose:
            _line.end()
            if ssl_object is not None:
                cipher = ssl_object.cipher()
                print(
                    f"* connected to {target.label} over {ssl_object.version()}"
                    f" ({cipher[0] if cipher else '?'}), ALPN h2",
                    file=sys.stderr,
                )
            else:
                print(f"* connected to {target.label} (h2c, prior knowledge)", file=sys.stderr)
        return client

    @staticmethod
    async def _close(client: aioh2s.Client) -> None:
        with contextlib.suppress(Exception, asyncio.TimeoutError):
            await asyncio.wait_for(client.close(), 5)

    async def close(self) -> None:
        clients = list(self.clients.values())
        self.clients.clear()
        for client in clients:
            await self._close(client)


# What a Location must not hold raw but servers send anyway: space, controls, and anything
# outside ASCII (surrogates included: undecodable bytes, kept by surrogateescape).
_RAW_IN_URL = re.compile(r"[\x00-\x20\x7f-\U0010ffff]")
# Where an absolute ("http://host/...") or network-path ("//host/...") Location's authority is.
_AUTHORITY_PART = re.compile(r"(?:[A-Za-z][A-Za-z0-9+.-]*:)?//[^/?#]*")


def _encode_location(location: str) -> str:
    """Percent-encode what a Location holds raw (spaces, controls, non-ASCII), as curl does.

    Servers do send ``Location: /a b`` or UTF-8 paths; curl encodes those bytes (``/a%20b``,
    ``/%C3%A9``) and follows. (Python's ``urlsplit`` would instead drop tabs and newlines
    silently, and a raw space is no valid ``:path``.) The authority is left as it is: a
    host that needs encoding is no host name, and ``_Target`` refuses it (exit code 9).
    """
    m = _AUTHORITY_PART.match(location)
    start = m.end() if m else 0

    def encode(found: re.Match[str]) -> str:
        raw = found.group().encode("utf-8", "surrogateescape")
        return "".join(f"%{b:02X}" for b in raw)

    return location[:start] + _RAW_IN_URL.sub(encode, location[start:])


#: Statuses ``-L`` follows (RFC 9110 §15.4), when the response has a Location.
_REDIRECTS = {301, 302, 303, 307, 308}
#: ``--max-redirs`` default: what browsers allow (Chrome and Firefox stop after 20); curl's
#: 50 only makes a redirect loop take longer to report.
MAX_REDIRS = 20


async def _get(args: argparse.Namespace) -> int:
    if args.head and args.data is not None:
        raise CLIError(EXIT_USAGE, "-I (HEAD) sends no request body: drop -d, or use -X HEAD")
    body = _Body(args.data) if args.data is not None else None
    trace = _trace_frames() if args.verbose else None
    try:
        target = _Target(args.url, EXIT_USAGE)
        try:
            return await asyncio.wait_for(_transfer(args, target, body), args.max_time)
        except asyncio.TimeoutError:
            raise CLIError(
                EXIT_TIMEOUT, f"no complete response within --max-time {args.max_time:g} s"
            ) from None
    finally:
        if body is not None:
            body.close()
        if trace is not None:
            trace()


async def _transfer(args: argparse.Namespace, first: _Target, body: _Body | None) -> int:
    """The request, and with ``-L`` the redirects after it; returns the exit code."""
    if args.method:
        method = args.method
    elif args.head:
        method = "HEAD"
    else:
        method = "POST" if body is not None else "GET"
    out = _Output(args.output)
    conns = _Connections(args)
    target = first
    redirects = 0
    try:
        while True:
            headers = _request_headers(
                args, target, method, body,
                first=target is first, same_origin=target.origin == first.origin,
            )
            client = await conns.get(target)
            try:
                status, location = await _exchange(args, client, headers, body, out)
            except CLIError:
                raise
            except Exception as e:
                raise CLIError(*_describe(e, target.label)) from e
            if location is None:
                break
            if redirects >= args.max_redirs:
                raise CLIError(EXIT_REDIRECT, f"more than {args.max_redirs} redirects "
                               f"(--max-redirs), the last to {location!r}")
            redirects += 1
            joined = urljoin(target.url, _encode_location(location.strip()))
            nxt = _Target(joined.partition("#")[0], EXIT_REDIRECT)
            # RFC 9110 §15.4: a 303 asks for a GET (of anything but HEAD); browsers and curl
            # also turn a POST into a GET on 301 and 302. 307 and 308 keep method and body.
            if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
                method, body = "GET", None
            elif body is not None:
                body.rewind(f"the {status} redirect to {nxt.url}")
            if args.verbose:
                _line.end()
                print(f"* following the {status} redirect to {nxt.url}", file=sys.stderr)
            target = nxt
    finally:
        out.close()
        await conns.close()
    if status >= 400:
        try:
            phrase = " " + HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        _error(f"server answered {status}{phrase}")
        return EXIT_HTTP_ERROR
    return EXIT_OK


async def _exchange(
    args: argparse.Namespace,
    client: aioh2s.Client,
    headers: list[tuple[str, str]],
    body: _Body | None,
    out: _Output,
) -> tuple[int, str | None]:
    """One request; returns its status, and the Location when ``-L`` is to follow it."""
    if args.verbose:
        _print_headers("> ", headers)
        print(">", file=sys.stderr, flush=True)
    # Without a body the HEADERS frame ends the stream (no empty DATA frame after it).
    async with client.request(headers, end_stream=body is None) as stream:
        upload: asyncio.Task[None] | None = None
        if body is not None:
            upload = asyncio.ensure_future(_upload(stream.writer, body))
        try:
            return await _receive(args, stream, out)
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
                    # e.g. a 405 for a POST, or a redirect: stop uploading (RFC 9113 §8.1).
                    upload.cancel()
                # Also collects an error the upload met after a complete response (the
                # server's RST_STREAM(NO_ERROR)), which changes nothing for the user.
                with contextlib.suppress(asyncio.CancelledError, H2Error, CLIError):
                    await upload


async def _receive(
    args: argparse.Namespace, stream: RequestStream, out: _Output
) -> tuple[int, str | None]:
    response = await stream.response_headers()
    status = int(response[":status"])
    if args.verbose:
        for informational in stream.informational:
            _print_headers("< ", informational)
            print("<", file=sys.stderr)
        _print_headers("< ", response)
        print("<", file=sys.stderr, flush=True)
    if args.include or args.head:
        for informational in stream.informational:
            out.write_head(informational[":status"], informational)
        out.write_head(response[":status"], response)
    location = response.get("location")
    if args.location and status in _REDIRECTS and location is not None:
        # Its body is of no use: leaving the request resets the stream if it is still coming.
        return status, location
    if args.head:
        # -I writes the headers only, whatever the method (curl's -I -X GET too): a body
        # that comes anyway is not read (leaving the request resets the stream).
        return status, None
    out.open()
    progress = None
    if _want_progress(args, out):
        length = response.get("content-length")
        progress = _Progress(sys.stderr, int(length) if length and length.isdigit() else None)
    async for chunk in stream.reader:
        out.write(chunk)
        if progress is not None:
            progress.update(len(chunk))
    if progress is not None:
        progress.finish()
    trailers = stream.reader.trailers
    if args.include and trailers is not None:
        # As curl -i does: the trailer fields after the body, in the header lines' form.
        out.write_trailers(trailers)
    if args.verbose and trailers is not None:
        _line.end()
        print("* trailers", file=sys.stderr)
        _print_headers("< ", trailers)
        sys.stderr.flush()
    return status, None


class _TraceHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """``-v``'s frame lines on stderr: ``* [seconds] send|recv FRAME ...``, client side only."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.start = time.time()  # (a record's ``created`` is wall-clock time)

    def filter(self, record: logging.LogRecord) -> bool:
        # `demo` runs its echo server in this process: only the client's frames are ours.
        return getattr(record, "h2_side", None) == "client"

    def format(self, record: logging.LogRecord) -> str:
        elapsed = record.created - self.start
        return f"* [{elapsed:7.3f}] {getattr(record, 'h2_direction', '')} " + str(
            getattr(record, "h2_frame", record.getMessage())
        )

    def emit(self, record: logging.LogRecord) -> None:
        _line.end()
        super().emit(record)


def _trace_frames() -> Callable[[], None]:
    """Print the client's HTTP/2 frames to stderr (``aioh2s.frames``); returns the undo."""
    logger = logging.getLogger("aioh2s.frames")
    handler = _TraceHandler()
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False  # not also through the root handler, as a DEBUG record

    def undo() -> None:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate

    return undo


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
        if not args.quiet:
            # The library says at INFO why it refused a connection (a TLS client without
            # ALPN h2, for one): an operator trying curl against the server wants to know.
            logging.getLogger("aioh2s").setLevel(logging.INFO)
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


class _LogFormat(logging.Formatter):
    """Log records as ``aioh2s: warning: ...``, like the command's own messages."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record).removeprefix("aioh2s: ")
        return f"aioh2s: {record.levelname.lower()}: {text}"


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


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
        epilog=_epilog(GET_EXIT_CODES),
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
        "-o",
        "--output",
        metavar="FILE",
        help="write the body to FILE instead of stdout ('-': stdout, even binary to a terminal)",
    )
    g.add_argument(
        "-i",
        "--include",
        action="store_true",
        help="write the response headers before the body (HTTP/2 STATUS, then name: value),"
        " and the trailers after it",
    )
    g.add_argument(
        "-I",
        "--head",
        action="store_true",
        help="write only the response headers (sends HEAD unless -X names another method)",
    )
    g.add_argument(
        "-L",
        "--location",
        action="store_true",
        help="follow redirects (301, 302, 303, 307, 308 with a Location)",
    )
    g.add_argument(
        "--max-redirs",
        type=_non_negative,
        default=MAX_REDIRS,
        metavar="N",
        help=f"with -L, give up after N redirects (default {MAX_REDIRS})",
    )
    g.add_argument(
        "-k", "--insecure", action="store_true", help="do not verify the server's TLS certificate"
    )
    g.add_argument("--cacert", metavar="FILE", help="trust the CA certificates in FILE (PEM)")
    g.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="print request/response headers, trailers and every HTTP/2 frame to stderr",
    )
    g.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr while the body goes to -o FILE or a redirected stdout"
        " (default: when stderr is a terminal and -v is off)",
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
        epilog=_epilog(SERVE_EXIT_CODES),
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    s.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no access log on stderr (nor why a connection was refused)",
    )

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
    handler = logging.StreamHandler()
    handler.setFormatter(_LogFormat())
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    commands = {"get": _get, "serve": _serve, "demo": _demo}
    coro = commands[args.command](args)
    try:
        return asyncio.run(coro)
    except CLIError as e:
        _error(e.message)
        return e.code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
