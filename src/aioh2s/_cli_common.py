"""What every ``aioh2s`` command shares: exit codes, failing with one line, stderr's open line.

Theory of operation: a command fails by raising :class:`CLIError` (an exit code and a message
already written for the user) or by letting an exception from the library escape to where
the command catches it; :func:`describe` turns either into ``(exit code, one line)``, in one
place, so scripts can branch on the code and people can read the line, and every command
means the same by the same code (3 is a failed connection, 10 a refused WebSocket, whatever
the command). :func:`error` and :func:`warn` print those lines as ``aioh2s: error: ...``.
:func:`epilog` formats a command's table of exit codes for its ``--help``, so the list a
user reads is the list the code uses.

A command may leave stderr's current line open: ``get`` printing a body without a final
newline to the terminal that also shows stderr, or drawing its progress bar. Whoever writes
to stderr calls :meth:`OpenLine.end` on :data:`open_line` first, which ends that line, so a
message never runs into the text before it.
"""

from __future__ import annotations

import socket
import ssl
import sys
from collections.abc import Iterable
from http import HTTPStatus

from aioh2s.errors import (
    ALPNError,
    ConnectError,
    ConnectionClosed,
    ConnectionTerminated,
    ErrorCode,
    ExtendedConnectUnsupported,
    H2Error,
    StreamReset,
    WebSocketClosed,
    WebSocketRejected,
)
from aioh2s.headers import Headers

__all__ = [
    "CHUNK",
    "CLIError",
    "EXIT_CONNECT",
    "EXIT_CONNECTION_LOST",
    "EXIT_ERROR",
    "EXIT_HTTP_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_REDIRECT",
    "EXIT_RESET",
    "EXIT_TIMEOUT",
    "EXIT_TLS",
    "EXIT_USAGE",
    "EXIT_WS_CLOSED",
    "EXIT_WS_REFUSED",
    "OpenLine",
    "describe",
    "epilog",
    "error",
    "open_line",
    "version",
    "warn",
    "wsproto_missing",
]

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
EXIT_WS_REFUSED = 10
EXIT_WS_CLOSED = 11
EXIT_INTERRUPTED = 130

# 64 KiB: four default-size DATA frames per write, big enough that per-chunk overhead
# (a drain, a file read) is negligible, small enough to keep memory per stream trivial.
CHUNK = 64 * 1024


class CLIError(Exception):
    """A failure already described for the user: print ``message``, exit with ``code``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def version() -> str:
    """The installed version of aioh2s (``--version``, the user-agent)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("aioh2s")
    except PackageNotFoundError:
        return "0+unknown"


def wsproto_missing(what: str) -> CLIError:
    """The error for a WebSocket feature (``what``) used without wsproto installed."""
    return CLIError(
        EXIT_USAGE, f"{what} needs the 'wsproto' package: pip install 'aioh2s[wsproto]'"
    )


def status_text(status: int) -> str:
    """``404 Not Found``: a status with its reason phrase, when it has one."""
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


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


def describe(exc: BaseException, target: str) -> tuple[int, str]:
    """Map an exception from the client to ``(exit code, one-line message)``."""
    if isinstance(exc, CLIError):
        return exc.code, exc.message
    if isinstance(exc, ConnectError) and exc.__cause__ is not None:
        # connect()'s wrapper names the stage; the exit code follows what actually failed.
        return describe(exc.__cause__, target)
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
    if isinstance(exc, ExtendedConnectUnsupported):
        return EXIT_WS_REFUSED, (
            f"server {target} takes no WebSockets over HTTP/2: its SETTINGS did not enable"
            " extended CONNECT (RFC 8441)"
        )
    if isinstance(exc, WebSocketRejected):
        if 200 <= exc.status < 300:
            headers = exc.headers if isinstance(exc.headers, Headers) else Headers()
            chosen = headers.get("sec-websocket-protocol")
            return EXIT_WS_REFUSED, (
                f"server {target} chose the subprotocol {chosen!r}, which was not offered"
            )
        return EXIT_WS_REFUSED, (
            f"server {target} refused the WebSocket: {status_text(exc.status)}"
        )
    if isinstance(exc, WebSocketClosed):
        text = f"the WebSocket with {target} closed abnormally: code {exc.code}"
        if exc.reason:
            text += f" ({exc.reason})"
        if isinstance(exc.__cause__, H2Error):
            text += f": {describe(exc.__cause__, target)[1]}"
        return EXIT_WS_CLOSED, text
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


class OpenLine:
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
        """End stderr's line if it was left open."""
        if self.pending:
            self.pending = False
            sys.stderr.write("\n")
            sys.stderr.flush()


#: The process's one stderr line state.
open_line = OpenLine()


def error(message: str) -> None:
    """Print ``aioh2s: error: MESSAGE`` on stderr, on one line of its own."""
    open_line.end()
    text = " ".join(message.split("\n"))
    print(f"aioh2s: error: {text}", file=sys.stderr, flush=True)


def warn(message: str) -> None:
    """Print ``aioh2s: warning: MESSAGE`` on stderr, on a line of its own."""
    open_line.end()
    print(f"aioh2s: warning: {message}", file=sys.stderr, flush=True)


def epilog(codes: Iterable[tuple[int, str]]) -> str:
    """The "exit codes" section of a subcommand's ``--help``."""
    import textwrap

    lines = ["exit codes:"]
    for code, meaning in codes:
        wrapped = textwrap.wrap(meaning, 74)
        lines.append(f"  {code:<4} {wrapped[0]}")
        lines += [f"       {more}" for more in wrapped[1:]]
    return "\n".join(lines)
