"""``aioh2s ws URL``: a WebSocket over HTTP/2 (RFC 8441); messages out, what comes back printed.

Theory of operation: the command connects as ``get`` does (:func:`~aioh2s._cli_client.dial`:
``wss://`` is TLS with ALPN ``h2``, ``ws://`` h2c with prior knowledge), then opens the
WebSocket with :func:`aioh2s.websocket.connect` on that connection: an extended CONNECT with
``:protocol websocket`` and the URL's path, which the server must have enabled (its
SETTINGS_ENABLE_CONNECT_PROTOCOL) and must answer 2xx. ``--connect-timeout`` bounds the
connection's setup and, again, the wait for that answer. Then one of two modes:

- ``-m TEXT`` (repeatable): each TEXT goes out as a text message and the next message that
  comes back is printed, one reply per message, in turn; then a close with 1000.
- without ``-m``: each line of stdin goes out as a text message (without its line end) while
  every message that comes in is printed, until stdin ends, which closes with 1000 and waits
  for the server's close; a server that closes first ends the command. The close follows the
  last line at once, so replies still on their way may not come (a server that got the
  close frame sends no more messages): ``-m`` is the mode that waits for each reply. Stdin
  is read by a daemon thread of its own (:class:`_StdinLines`), so a terminal that is never
  typed into cannot keep the process from exiting, and the thread reads ahead by two chunks
  at most.

A text message is printed as it is, followed by a newline; a binary one as ``<binary N
bytes: HEX>``, the hex of its first 32 bytes and ``...`` if there are more
(:func:`_render`). Text from the command line or stdin is taken as UTF-8 (an invalid byte
becomes U+FFFD). ``-v`` adds the ``* connected`` line, the answer's ``< `` header lines,
what opened and how it closed, and one ``* `` line per HTTP/2 frame; it cannot show the
request's own header lines, which :func:`aioh2s.websocket.connect` writes.

Exit codes (:data:`WS_EXIT_CODES`): a close with 1000, 1001 or 1005 is success; any other
close code is 11, and so is a close before the reply to every ``-m`` message; a WebSocket
the server refused (a status other than 2xx, or no extended CONNECT) is 10. aioh2s.websocket
needs wsproto (the extra ``aioh2s[wsproto]``): it is imported only when the command runs, so
the other commands never load it, and its absence is a usage error that says what to install.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import ssl
import sys
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

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
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_RESET,
    EXIT_TIMEOUT,
    EXIT_TLS,
    EXIT_USAGE,
    EXIT_WS_CLOSED,
    EXIT_WS_REFUSED,
    CLIError,
    describe,
    epilog,
    open_line,
    version,
    wsproto_missing,
)
from aioh2s._cli_output import Output
from aioh2s.errors import WebSocketClosed, WebSocketRejected
from aioh2s.headers import Headers

if TYPE_CHECKING:
    from aioh2s.websocket import WebSocket

__all__ = ["WS_EXIT_CODES", "add_parser", "run"]

#: ``ws``'s exit codes and what each means (printed by ``aioh2s ws --help``).
WS_EXIT_CODES = (
    (EXIT_OK, "the WebSocket closed normally (code 1000, 1001 or 1005), after the reply to"
     " every -m message (or --help)"),
    (EXIT_ERROR, "local error: cannot write the output, or an unexpected error"),
    (EXIT_USAGE, "usage error (bad option, URL, header or subprotocol), or the wsproto package"
     " is not installed"),
    (EXIT_CONNECT, "connection failed: refused, unresolvable host, unreachable, or no connection,"
     " or no answer to the WebSocket request, within --connect-timeout"),
    (EXIT_TLS, "TLS failure: handshake or certificate verification failed, or ALPN did not"
     " select h2"),
    (EXIT_CONNECTION_LOST, "the connection failed before the WebSocket opened: the peer closed"
     " it, sent GOAWAY, or broke the protocol"),
    (EXIT_RESET, "the WebSocket request's stream was reset (RST_STREAM) before an answer"),
    (EXIT_TIMEOUT, "--max-time elapsed"),
    (EXIT_WS_REFUSED, "the server refused the WebSocket: a status other than 2xx (the message"
     " names it), SETTINGS without extended CONNECT (RFC 8441), or a subprotocol not offered"),
    (EXIT_WS_CLOSED, "the WebSocket closed abnormally: a close code other than 1000, 1001 or"
     " 1005 (1006: the stream or connection ended without a close handshake), or, with -m,"
     " before the reply to every message"),
    (EXIT_INTERRUPTED, "interrupted (Ctrl-C)"),
)

#: How much of a binary message is printed, in hex.
_HEX_SHOWN = 32


def _render(message: str | bytes) -> bytes:
    """A received message as its line on stdout."""
    if isinstance(message, str):
        return message.encode() + b"\n"
    if not message:
        return b"<binary 0 bytes>\n"
    more = "..." if len(message) > _HEX_SHOWN else ""
    return f"<binary {len(message)} bytes: {message[:_HEX_SHOWN].hex()}{more}>\n".encode()


def _text(raw: bytes) -> str:
    """Bytes from stdin or the command line as a text message: UTF-8, invalid bytes U+FFFD."""
    return raw.decode("utf-8", "replace")


class _StdinLines:
    """Stdin's lines for the event loop, read by a daemon thread (:meth:`_read`).

    The thread reads the file descriptor itself (``os.read``: no lock of ``sys.stdin``'s that
    a thread blocked in it would hold at exit) and hands each chunk to the loop; it reads
    ahead by at most two chunks, so a big file on stdin is read as fast as it is sent.
    """

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._chunks: collections.deque[bytes] = collections.deque()
        self._arrived = asyncio.Event()
        self._room = threading.Semaphore(2)
        self._buffer = bytearray()
        self._eof = False
        threading.Thread(target=self._read, name="aioh2s ws stdin", daemon=True).start()

    def _read(self) -> None:
        try:
            fd = sys.stdin.fileno()
        except (AttributeError, ValueError, OSError):
            fd = -1  # no stdin at all: at its end already
        while True:
            self._room.acquire()
            try:
                chunk = os.read(fd, CHUNK) if fd >= 0 else b""
            except OSError:
                chunk = b""  # a closed or unreadable stdin ends like an empty one
            try:
                self._loop.call_soon_threadsafe(self._arrive, chunk)
            except RuntimeError:
                return  # the loop is closed: the command is over
            if not chunk:
                return

    def _arrive(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._arrived.set()

    async def readline(self) -> str | None:
        """The next line, without its line end (LF or CR LF); None at the end of stdin.

        Cancel-safe: a cancelled call loses nothing.
        """
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                return _text(line.removesuffix(b"\r"))
            if self._eof:
                if not self._buffer:
                    return None
                line = bytes(self._buffer)
                self._buffer.clear()
                return _text(line)  # a last line without a newline
            while not self._chunks:
                self._arrived.clear()
                await self._arrived.wait()
            chunk = self._chunks.popleft()
            self._room.release()
            if chunk:
                self._buffer += chunk
            else:
                self._eof = True


async def _send_each(ws: WebSocket, messages: Sequence[str], out: Output) -> None:
    """``-m``: each message out, its reply printed, in turn; then close with 1000."""
    for n, message in enumerate(messages, 1):
        try:
            await ws.send(_text(message.encode("utf-8", "surrogateescape")))
            reply = await ws.receive()
        except WebSocketClosed as e:
            if not e.clean:
                raise
            await ws.wait_closed()
            raise CLIError(
                EXIT_WS_CLOSED,
                f"the server closed the WebSocket (code {e.code}) before its reply to message"
                f" {n} of {len(messages)}",
            ) from e
        out.write(_render(reply))
    await ws.close(1000)


async def _print_all(ws: WebSocket, out: Output) -> None:
    """Print every message until the WebSocket closes; raise if it closed abnormally."""
    async for message in ws:
        out.write(_render(message))


async def _interactive(ws: WebSocket, out: Output) -> None:
    """Without ``-m``: stdin's lines out, every message in printed; stdin's end closes."""
    lines = _StdinLines()
    printing = asyncio.ensure_future(_print_all(ws, out))
    reading: asyncio.Future[str | None] | None = None
    try:
        while True:
            reading = asyncio.ensure_future(lines.readline())
            await asyncio.wait([reading, printing], return_when=asyncio.FIRST_COMPLETED)
            if not reading.done():
                break  # the WebSocket closed first: `printing` says how
            line = reading.result()
            if line is None:
                await ws.close(1000)
                break
            try:
                await ws.send(line)
            except WebSocketClosed:
                break  # closed meanwhile: `printing` says how
        await printing
    finally:
        for task in (reading, printing):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


def _request_headers(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The request's regular fields: a user-agent, then ``-H``."""
    user = [parse_header(h) for h in args.header]
    for name, _ in user:
        if name == "host" or name.startswith(":"):
            raise CLIError(
                EXIT_USAGE, f"-H {name!r}: the URL gives the WebSocket request's pseudo-headers"
            )
    return with_user_headers([("user-agent", f"aioh2s/{version()}")], user)


async def run(args: argparse.Namespace) -> int:
    """``aioh2s ws``: open the WebSocket, exchange messages, close; returns the exit code."""
    try:
        from aioh2s import websocket  # noqa: F401  (to learn whether wsproto is there)
    except ImportError as e:
        raise wsproto_missing("aioh2s ws") from e
    target = Target(args.url, EXIT_USAGE, ("ws", "wss"))
    headers = _request_headers(args)
    ctx = tls_context(args) if target.tls else None
    trace = trace_frames() if args.verbose else None
    try:
        return await asyncio.wait_for(_session(args, target, headers, ctx), args.max_time)
    except asyncio.TimeoutError:
        raise CLIError(
            EXIT_TIMEOUT, f"the WebSocket was not over within --max-time {args.max_time:g} s"
        ) from None
    finally:
        if trace is not None:
            trace()


async def _session(
    args: argparse.Namespace,
    target: Target,
    headers: list[tuple[str, str]],
    ctx: ssl.SSLContext | None,
) -> int:
    from aioh2s import websocket  # run() made sure it imports

    client = await dial(target, ctx, args.connect_timeout, args.verbose)
    try:
        try:
            opening = websocket.connect(
                client,
                target.path,
                subprotocols=args.subprotocol,
                headers=headers,
                open_timeout=args.connect_timeout,
            )
        except ValueError as e:  # a subprotocol that is no token
            raise CLIError(EXIT_USAGE, str(e)) from None
        if args.verbose:
            open_line.end()
            print(f"* WebSocket request: CONNECT {target.path} (:protocol websocket)",
                  file=sys.stderr, flush=True)
        try:
            ws = await opening
        except asyncio.TimeoutError:
            raise CLIError(
                EXIT_CONNECT,
                f"no answer to the WebSocket request from {target.label} within"
                f" --connect-timeout {args.connect_timeout:g} s",
            ) from None
        except Exception as e:
            if args.verbose and isinstance(e, WebSocketRejected):
                _print_response(e.headers)
            raise CLIError(*describe(e, target.label)) from e
        if args.verbose:
            _print_response(ws.reader.headers)
            chosen = f", subprotocol {ws.subprotocol}" if ws.subprotocol else ""
            print(f"* WebSocket open{chosen}", file=sys.stderr, flush=True)
        await _talk(args, ws, target)
        return EXIT_OK
    finally:
        await close_client(client)


def _print_response(headers: object) -> None:
    if isinstance(headers, Headers):
        print_headers("< ", headers)
        print("<", file=sys.stderr, flush=True)


async def _talk(args: argparse.Namespace, ws: WebSocket, target: Target) -> None:
    """The messages of either mode, then how the WebSocket closed (an error unless normal)."""
    out = Output("-")  # "-": no binary check, the lines are ours
    try:
        if args.message:
            await _send_each(ws, args.message, out)
        else:
            await _interactive(ws, out)
    except WebSocketClosed as e:  # (a normal close ends the modes without one)
        raise CLIError(*describe(e, target.label)) from e
    except BaseException:
        if ws.state != "closed":
            ws.abort()  # cancelled (--max-time, Ctrl-C), or the output failed
        raise
    finally:
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await ws.wait_closed()
    if args.verbose:
        open_line.end()
        reason = f" ({ws.close_reason})" if ws.close_reason else ""
        print(f"* WebSocket closed: code {ws.close_code}{reason}", file=sys.stderr, flush=True)
    closed = WebSocketClosed(ws.close_code or 1006, ws.close_reason or "", local=True)
    if not closed.clean:
        raise CLIError(*describe(closed, target.label))


def add_parser(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``ws`` and its options to the command line's subcommands."""
    w = sub.add_parser(
        "ws",
        help="open a WebSocket over HTTP/2, send messages, print what comes back",
        description="Open a WebSocket over HTTP/2 (RFC 8441; TLS+ALPN for wss, h2c prior\n"
        "knowledge for ws). With -m, send each message and print its reply, then close;\n"
        "without, send each line of stdin and print every message received, until stdin\n"
        "ends. A text message prints as a line, a binary one as <binary N bytes: HEX>\n"
        "(the hex of its first 32 bytes). Needs wsproto: pip install 'aioh2s[wsproto]'.",
        epilog=epilog(WS_EXIT_CODES),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    w.add_argument("url")
    w.add_argument(
        "-m",
        "--message",
        action="append",
        default=[],
        metavar="TEXT",
        help="send TEXT as a text message and print the reply (repeatable, in order); then"
        " close",
    )
    add_header_option(w)
    w.add_argument(
        "--subprotocol",
        action="append",
        default=[],
        metavar="NAME",
        help="offer subprotocol NAME (repeatable, in order of preference)",
    )
    add_tls_options(w)
    w.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="print the answer's headers, the open and close, and every HTTP/2 frame to stderr",
    )
    w.add_argument(
        "--connect-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="give up connecting, and again waiting for the WebSocket's answer, after this"
        " long (default 10)",
    )
    w.add_argument(
        "--max-time",
        type=float,
        default=None,
        metavar="SECONDS",
        help="give up on the whole WebSocket after this long (default: no limit)",
    )
    w.set_defaults(run=run)
