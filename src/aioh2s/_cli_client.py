"""What the client commands (``get``, ``ws``) share: the URL, ``-H``, connecting, ``-v``.

Theory of operation: a command-line URL becomes a :class:`Target` (where to connect, and the
``:authority`` and ``:path`` it gives), checked against the rules the library applies to
those pseudo-headers, so a URL HTTP/2 cannot carry is a usage error naming the part, not an
"HTTP/2 error" from deep inside. A command takes two schemes (``http``/``https`` for
``get``, ``ws``/``wss`` for ``ws``): the TLS one means TLS with ALPN ``h2`` (RFC 9113 §3.2),
the other h2c with prior knowledge (§3.3: the connection preface straight away, no Upgrade).
``-H`` fields are parsed by :func:`parse_header`, which refuses the connection-specific
fields HTTP/2 forbids up front, and merged with a command's defaults by
:func:`with_user_headers`; ``-k`` and ``--cacert`` make the TLS context (:func:`tls_context`).

:func:`dial` opens one connection: bounded by ``--connect-timeout``, every failure described
by :func:`~aioh2s._cli_common.describe`, ALPN checked once more, and with ``-v`` a ``*
connected ...`` line. ``-v`` also prints one ``* `` line per HTTP/2 frame of the client's
connections, from the library's frame trace (logger ``aioh2s.frames``, :func:`trace_frames`),
and header blocks as ``> `` / ``< `` lines (:func:`print_headers`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import ssl
import sys
import time
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

import aioh2s
from aioh2s._cli_common import (
    EXIT_CONNECT,
    EXIT_CONNECTION_LOST,
    EXIT_TLS,
    EXIT_USAGE,
    CLIError,
    describe,
    open_line,
)
from aioh2s.errors import ALPNError, LocalProtocolError
from aioh2s.headers import check_request
from aioh2s.tls import check_alpn, client_ssl_context

__all__ = [
    "Target",
    "add_header_option",
    "add_tls_options",
    "close_client",
    "dial",
    "parse_header",
    "print_headers",
    "tls_context",
    "trace_frames",
    "with_user_headers",
]

# Header names RFC 9113 §8.2.2 forbids in HTTP/2; refused up front with a clear message
# rather than as a ProtocolError from deep inside h2.
_CONNECTION_SPECIFIC = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
}


def parse_header(text: str) -> tuple[str, str]:
    """Parse a ``-H 'name: value'`` (``name:`` alone has the empty value); else CLIError."""
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


def with_user_headers(
    defaults: Iterable[tuple[str, str]], user: Iterable[tuple[str, str]]
) -> list[tuple[str, str]]:
    """The default fields no ``-H`` of the same name replaces, then the ``-H`` fields.

    A ``-H 'name:'`` with no value only removes a default field, as in curl.
    """
    user = list(user)
    names = {n for n, _ in user}
    return [(n, v) for n, v in defaults if n not in names] + [(n, v) for n, v in user if v]


class Target:
    """A parsed request URL: where to connect, and the pseudo-headers it gives."""

    __slots__ = ("url", "scheme", "tls", "host", "port", "authority", "path", "label")

    def __init__(self, url: str, code: int, schemes: tuple[str, str] = ("http", "https")) -> None:
        """Parse ``url``; a bad one is a CLIError with ``code`` (usage, or a bad redirect).

        ``schemes`` are the command's cleartext scheme and its TLS scheme.
        """
        plain, secure = schemes
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as e:
            raise CLIError(code, f"bad URL {url!r}: {e}") from e
        if parts.scheme not in schemes or not parts.hostname:
            raise CLIError(
                code, f"bad URL {url!r}: expected {plain}://HOST[:PORT]/PATH or {secure}://..."
            )
        self.url = url
        self.scheme = parts.scheme
        self.tls = self.scheme == secure
        self.host = parts.hostname
        self.port = port or (443 if self.tls else 80)
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


def add_header_option(parser: argparse.ArgumentParser) -> None:
    """``-H 'NAME: VALUE'`` (repeatable), read with :func:`parse_header`."""
    parser.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="add a request header (repeatable); 'NAME:' removes a default one",
    )


def add_tls_options(parser: argparse.ArgumentParser) -> None:
    """``-k`` and ``--cacert``, which :func:`tls_context` reads."""
    parser.add_argument(
        "-k", "--insecure", action="store_true", help="do not verify the server's TLS certificate"
    )
    parser.add_argument("--cacert", metavar="FILE", help="trust the CA certificates in FILE (PEM)")


def tls_context(args: argparse.Namespace) -> ssl.SSLContext:
    """The client's TLS context from ``--cacert`` and ``-k``; an unreadable file is exit 4."""
    try:
        return client_ssl_context(args.cacert, verify=not args.insecure)
    except (OSError, ssl.SSLError) as e:
        raise CLIError(EXIT_TLS, f"cannot load CA file {args.cacert}: {e}") from e


async def dial(
    target: Target, ctx: ssl.SSLContext | None, timeout: float, verbose: bool
) -> aioh2s.Client:
    """Connect to ``target`` (TLS when ``ctx`` is given), within ``timeout`` seconds."""
    try:
        if ctx is None:
            connecting = aioh2s.connect(target.host, target.port)
        else:
            connecting = aioh2s.connect(
                target.host, target.port, ssl=ctx, server_hostname=target.host
            )
        client = await asyncio.wait_for(connecting, timeout)
    except asyncio.TimeoutError:
        raise CLIError(
            EXIT_CONNECT, f"timed out connecting to {target.label} after {timeout:g} s"
        ) from None
    except Exception as e:
        code, message = describe(e, target.label)
        if code == EXIT_CONNECTION_LOST and ctx is None:
            # Typically a TLS-only or HTTP/1.1-only server hanging up on our preface.
            secure = "wss" if target.scheme == "ws" else "https"
            message += (
                f" during the HTTP/2 handshake (is it an h2c server? for TLS use {secure}://)"
            )
        raise CLIError(code, message) from e
    ssl_object = client.get_extra_info("ssl_object")
    if ssl_object is not None:
        # The core checks this too; a second look costs nothing and keeps the CLI's
        # "TLS failure" promise even against a core that forgot.
        try:
            check_alpn(ssl_object)
        except ALPNError as e:
            await close_client(client)
            raise CLIError(*describe(e, target.label)) from e
    if verbose:
        open_line.end()
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


async def close_client(client: aioh2s.Client) -> None:
    """Close ``client`` gracefully, giving up after 5 s; errors are moot by now."""
    with contextlib.suppress(Exception, asyncio.TimeoutError):
        await asyncio.wait_for(client.close(), 5)


def print_headers(prefix: str, headers: Iterable[tuple[str, str]]) -> None:
    """``-v``: a header block on stderr, one ``PREFIXname: value`` line per field."""
    open_line.end()
    for name, value in headers:
        print(f"{prefix}{name}: {value}", file=sys.stderr)


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
        open_line.end()
        super().emit(record)


def trace_frames() -> Callable[[], None]:
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
