"""The ``aioh2s`` command line: tiny HTTP/2 clients (``get``, ``ws``) and a server (``serve``).

Theory of operation: :func:`main` parses the command line and runs the subcommand's
coroutine with :func:`asyncio.run`; each subcommand lives in a module of its own, which adds
its options to the parser (``add_parser``) and names the coroutine that runs it (``run``):

- ``get`` (:mod:`aioh2s._cli_get`): one request, the body to stdout, curl's habits; its
  client side (URLs, ``-H``, connecting, the ``-v`` frame trace) is
  :mod:`aioh2s._cli_client`, where the body goes is :mod:`aioh2s._cli_output`;
- ``ws`` (:mod:`aioh2s._cli_ws`): a WebSocket over HTTP/2 (RFC 8441), messages from ``-m``
  or stdin, what comes back to stdout; the only command that needs wsproto, imported when
  it runs (``serve --ws-echo`` too), so the others work without it;
- ``serve`` (:mod:`aioh2s._cli_serve`): a directory, or an echo server, over h2c or TLS, and
  with ``--ws-echo`` a WebSocket echo server as well; with ``--workers N`` from N processes
  (:mod:`aioh2s._cli_workers`, which blocks in :func:`aioh2s.serve` instead of returning a
  coroutine: ``run_blocking``);
- ``demo`` (here): the echo server and a ``get -v -d`` against it, in one process.

The commands use only the public API (``aioh2s.connect``, ``aioh2s.start_server``), so the
command line is also a worked example of it. Every failure becomes one line on stderr and an
exit code (:mod:`aioh2s._cli_common`: :class:`~aioh2s._cli_common.CLIError` and
:func:`~aioh2s._cli_common.describe`, in one place), so scripts can branch on the code and
people can read the line. Each command's ``--help`` ends with its table of exit codes
(``GET_EXIT_CODES``, ``WS_EXIT_CODES``, ``SERVE_EXIT_CODES``), so the list a user reads is the
list the code uses. A usage error is exit code 2, as argparse has it; Ctrl-C is 130.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

import aioh2s
from aioh2s import _cli_get, _cli_serve, _cli_ws
from aioh2s._cli_common import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    CLIError,
    error,
    version,
)

__all__ = ["main", "setup_logging"]


class _LogFormat(logging.Formatter):
    """Log records as ``aioh2s: warning: ...``, like the command's own messages."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record).removeprefix("aioh2s: ")
        return f"aioh2s: {record.levelname.lower()}: {text}"


def setup_logging(info: bool = False) -> None:
    """Log records at WARNING and above to stderr as ``aioh2s: warning: ...``.

    Also what ``serve --workers`` sets up in each worker, with ``info``: the library's INFO
    records too (why a connection was refused), as the one-process server has them.
    """
    handler = logging.StreamHandler()
    handler.setFormatter(_LogFormat())
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    if info:
        logging.getLogger("aioh2s").setLevel(logging.INFO)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        error(message)
        raise SystemExit(EXIT_USAGE)


async def _demo(args: argparse.Namespace) -> int:
    """An echo server on a free port and a ``get -v -d`` against it, in one process."""
    server = await aioh2s.start_server(_cli_serve.EchoServer(False), "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}/echo"
        print(f"* echo server listening on {url}", file=sys.stderr, flush=True)
        get_args = _build_parser().parse_args(["get", "-v", "-d", args.message, url])
        return await _cli_get.run(get_args)
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), 10)


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="aioh2s", description="HTTP/2 client and server from the aioh2s library.")
    parser.add_argument("--version", action="version", version=f"aioh2s {version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _cli_get.add_parser(sub)
    _cli_ws.add_parser(sub)
    _cli_serve.add_parser(sub)
    d = sub.add_parser(
        "demo",
        help="start an echo server and send it one request, in one process",
        description="Start an HTTP/2 echo server on a free 127.0.0.1 port and POST MESSAGE to "
        "it with 'get -v': a self-contained check that aioh2s works here.",
    )
    d.add_argument("message", nargs="?", default="hello, HTTP/2", metavar="MESSAGE")
    d.set_defaults(run=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line on *argv* (default ``sys.argv[1:]``); return the exit code."""
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (EXIT_OK if e.code is None else EXIT_USAGE)
    setup_logging()
    try:
        blocking = getattr(args, "run_blocking", None)
        if blocking is not None:
            # (serve --workers: aioh2s.serve runs its own event loop, the supervisor's)
            code = blocking(args)
            if code is not None:
                return int(code)
        return int(asyncio.run(args.run(args)))
    except CLIError as e:
        error(e.message)
        return e.code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
