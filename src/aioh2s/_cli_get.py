"""``aioh2s get URL``: one HTTP/2 request, its response body to stdout, as curl users expect.

Theory of operation: the command is one coroutine (:func:`run`) built only on the public API
(``aioh2s.connect``, ``Client.request``), so it is also a worked example of it. ``https://``
URLs use TLS with ALPN ``h2``, ``http://`` URLs h2c with prior knowledge (:mod:`._cli_client`).
The body goes to stdout (or ``-o FILE``, :mod:`._cli_output`); ``-i`` puts the response
headers before it and the trailers after it, ``-I`` prints only the headers (and sends HEAD,
unless ``-X`` names another method). ``-v`` prints to stderr the request headers (``> ``),
the response headers (``< ``), trailers (after a ``* trailers`` line) and one ``* `` line per
HTTP/2 frame.

Bodies are streamed both ways in chunks with ``write`` + ``await drain()``: the command never
holds a whole file in memory, and flow control (the peer's window) paces the transfer. A
request body (``-d``, :class:`_Body`) is sent by a task of its own concurrently with reading
the response, so an echoing server cannot deadlock against us on flow control; a response
that ends first (a 405, a redirect) stops the upload (RFC 9113 §8.1).

``-L`` follows redirects (at most ``--max-redirs``, default :data:`MAX_REDIRS`), on the same
connection while the origin stays the same, else on a new one (:class:`_Connections`); a
Location's spaces, controls and non-ASCII bytes are percent-encoded first, as curl does
(:func:`_encode_location`), and ``Authorization`` and ``Cookie`` headers given with ``-H``
go to the first origin only. 303, and 301/302 for a POST, turn the request into a GET;
307/308 send the same body again, which a body from stdin cannot be (exit code 9).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import ssl
import stat
import sys
from collections.abc import AsyncIterator
from typing import Any, BinaryIO
from urllib.parse import urljoin

import aioh2s
from aioh2s._cli_client import (
    Target,
    add_header_option,
    add_tls_options,
    close_client,
    dial,
    parse_header,
    print_headers,
    tls_context,
    trace_frames,
    with_user_headers,
)
from aioh2s._cli_common import (
    CHUNK,
    EXIT_CONNECT,
    EXIT_CONNECTION_LOST,
    EXIT_ERROR,
    EXIT_HTTP_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_REDIRECT,
    EXIT_RESET,
    EXIT_TIMEOUT,
    EXIT_TLS,
    EXIT_USAGE,
    CLIError,
    describe,
    epilog,
    error,
    open_line,
    status_text,
    version,
)
from aioh2s._cli_output import Output, Progress, want_progress
from aioh2s.client import RequestStream
from aioh2s.errors import ErrorCode, H2Error

__all__ = ["GET_EXIT_CODES", "MAX_REDIRS", "add_parser", "run"]

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


# Headers that carry the user's credentials: sent only to the origin of the URL given, never
# to another one a redirect names (as curl does, CVE-2018-1000007 and CVE-2022-27776).
_CREDENTIALS = {"authorization", "cookie", "proxy-authorization"}


def _request_headers(
    args: argparse.Namespace,
    target: Target,
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
    defaults = [("user-agent", f"aioh2s/{version()}"), ("accept", "*/*")]
    if body is not None and body.length is not None:
        defaults.append(("content-length", str(body.length)))
    user = [parse_header(h) for h in args.header]
    if not same_origin:
        user = [(n, v) for n, v in user if n not in _CREDENTIALS]
    regular = []
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
        else:
            regular.append((name, value))
    return list(pseudo.items()) + with_user_headers(defaults, regular)


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


class _Connections:
    """The connections of one ``get``: one per origin, so a redirect elsewhere opens another."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.clients: dict[tuple[str, str, int], aioh2s.Client] = {}
        self.ctx: ssl.SSLContext | None = None

    async def get(self, target: Target) -> aioh2s.Client:
        """The open connection to ``target``'s origin, or a new one."""
        client = self.clients.get(target.origin)
        if client is not None and not client.is_closing():
            return client
        args = self.args
        ctx = None
        if target.tls:
            if self.ctx is None:
                self.ctx = tls_context(args)
            ctx = self.ctx
        client = await dial(target, ctx, args.connect_timeout, args.verbose)
        old = self.clients.pop(target.origin, None)
        if old is not None:
            await close_client(old)
        self.clients[target.origin] = client
        return client

    async def close(self) -> None:
        """Close every connection."""
        clients = list(self.clients.values())
        self.clients.clear()
        for client in clients:
            await close_client(client)


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
    host that needs encoding is no host name, and ``Target`` refuses it (exit code 9).
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


async def run(args: argparse.Namespace) -> int:
    """``aioh2s get``: the request (and redirects with ``-L``); returns the exit code."""
    if args.head and args.data is not None:
        raise CLIError(EXIT_USAGE, "-I (HEAD) sends no request body: drop -d, or use -X HEAD")
    body = _Body(args.data) if args.data is not None else None
    trace = trace_frames() if args.verbose else None
    try:
        target = Target(args.url, EXIT_USAGE)
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


async def _transfer(args: argparse.Namespace, first: Target, body: _Body | None) -> int:
    """The request, and with ``-L`` the redirects after it; returns the exit code."""
    if args.method:
        method = args.method
    elif args.head:
        method = "HEAD"
    else:
        method = "POST" if body is not None else "GET"
    out = Output(args.output)
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
                raise CLIError(*describe(e, target.label)) from e
            if location is None:
                break
            if redirects >= args.max_redirs:
                raise CLIError(EXIT_REDIRECT, f"more than {args.max_redirs} redirects "
                               f"(--max-redirs), the last to {location!r}")
            redirects += 1
            joined = urljoin(target.url, _encode_location(location.strip()))
            nxt = Target(joined.partition("#")[0], EXIT_REDIRECT)
            # RFC 9110 §15.4: a 303 asks for a GET (of anything but HEAD); browsers and curl
            # also turn a POST into a GET on 301 and 302. 307 and 308 keep method and body.
            if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
                method, body = "GET", None
            elif body is not None:
                body.rewind(f"the {status} redirect to {nxt.url}")
            if args.verbose:
                open_line.end()
                print(f"* following the {status} redirect to {nxt.url}", file=sys.stderr)
            target = nxt
    finally:
        out.close()
        await conns.close()
    if status >= 400:
        error(f"server answered {status_text(status)}")
        return EXIT_HTTP_ERROR
    return EXIT_OK


async def _exchange(
    args: argparse.Namespace,
    client: aioh2s.Client,
    headers: list[tuple[str, str]],
    body: _Body | None,
    out: Output,
) -> tuple[int, str | None]:
    """One request; returns its status, and the Location when ``-L`` is to follow it."""
    if args.verbose:
        print_headers("> ", headers)
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
    args: argparse.Namespace, stream: RequestStream, out: Output
) -> tuple[int, str | None]:
    response = await stream.response_headers()
    status = int(response[":status"])
    if args.verbose:
        for informational in stream.informational:
            print_headers("< ", informational)
            print("<", file=sys.stderr)
        print_headers("< ", response)
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
    if want_progress(args, out):
        length = response.get("content-length")
        progress = Progress(sys.stderr, int(length) if length and length.isdigit() else None)
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
        open_line.end()
        print("* trailers", file=sys.stderr)
        print_headers("< ", trailers)
        sys.stderr.flush()
    return status, None


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def add_parser(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``get`` and its options to the command line's subcommands."""
    g = sub.add_parser(
        "get",
        help="make one HTTP/2 request and print the response body",
        description="Make one HTTP/2 request (TLS+ALPN for https, h2c prior "
        "knowledge for http) and write the body to stdout.",
        epilog=epilog(GET_EXIT_CODES),
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
    add_header_option(g)
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
    add_tls_options(g)
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
    g.set_defaults(run=run)
