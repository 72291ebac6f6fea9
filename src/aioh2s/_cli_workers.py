"""``aioh2s serve --workers N``: the ``serve`` command's handlers, from N worker processes.

Theory of operation: :func:`run` does what ``serve`` does in one process (:mod:`aioh2s._cli_serve`
checks the options and the certificate, makes a self-signed one if asked) and then hands
over to :func:`aioh2s.serve`, which blocks until SIGTERM or SIGINT. The handler must reach
spawned workers, which import what they run: it travels as a :class:`WorkerHandler`, a
picklable record of the options (DIR, ``--echo``, ``--ws-echo``, ``-q``), which builds the
real handler in each worker, in its ``startup()`` (the lifespan hook :func:`aioh2s.serve`
calls before the worker accepts connections). TLS travels the same way: each worker loads
the certificate and key from their paths (``functools.partial(server_ssl_context, cert,
key)``). The listening URL is printed on stdout once every worker accepts connections (the
``ready`` callback), as the one-process server prints it once it listens. The grace period
is 10 s, the bound the one-process server puts on its shutdown. Open WebSockets
(``--ws-echo``) get that grace and are then reset, where the one-process server first closes
them with 1001: a worker's ``shutdown()`` runs only once its server has closed.
"""

from __future__ import annotations

import argparse
import functools
import logging
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import aioh2s
from aioh2s import _cli_asgi
from aioh2s._cli_common import EXIT_CONNECT, EXIT_ERROR, EXIT_OK, EXIT_USAGE, CLIError
from aioh2s._cli_serve import build_handler, check_args, listening_url, tls_files
from aioh2s.tls import server_ssl_context

if TYPE_CHECKING:
    from aioh2s.asgi import ASGIAdapter

__all__ = ["WorkerHandler", "run"]

GRACE = 10.0  # seconds: as the one-process server's bound on its shutdown


class WorkerHandler:
    """The ``serve`` handler as it travels to a worker: options, built there by ``startup``."""

    def __init__(self, root: str, echo: bool, ws_echo: bool, access_log: bool,
                 asgi: str | None = None) -> None:
        self.root = root
        self.echo = echo
        self.ws_echo = ws_echo
        self.access_log = access_log
        self.asgi = asgi
        self._handler: aioh2s.Handler | None = None
        self._adapter: ASGIAdapter | None = None

    def __getstate__(self) -> dict[str, object]:
        return {"root": self.root, "echo": self.echo, "ws_echo": self.ws_echo,
                "access_log": self.access_log, "asgi": self.asgi}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    async def startup(self) -> None:
        """In the worker: its logging as the command's, and the handler the options ask for."""
        from aioh2s.cli import setup_logging

        setup_logging(info=self.access_log)
        if self.asgi is not None:
            # ``--asgi``: the application is imported here, in each worker (the supervisor
            # never imports it), and its lifespan startup runs before the worker accepts.
            from aioh2s.asgi import ASGIAdapter, load_app

            self._adapter = ASGIAdapter(load_app(self.asgi))
            await self._adapter.startup()
            self._handler = self._adapter
            return
        self._handler, _ = build_handler(
            Path(self.root), self.echo, self.ws_echo, self.access_log)

    async def shutdown(self) -> None:
        """In the worker, once its server closed: the ASGI application's lifespan shutdown."""
        if self._adapter is not None:
            await self._adapter.shutdown()

    async def __call__(self, reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        """Serve one request with the handler built by ``startup``."""
        assert self._handler is not None, "startup() not awaited"
        await self._handler(reader, writer)


def run(args: argparse.Namespace) -> int | None:
    """``serve --workers N``: block in :func:`aioh2s.serve`; None without ``--workers``."""
    if args.workers is None:
        if args.start_timeout is not None:
            raise CLIError(EXIT_USAGE, "--start-timeout is for --workers")
        return None
    root = check_args(args)
    tmpdir = tempfile.mkdtemp(prefix="aioh2s-") if args.self_signed else None
    try:
        cert, key = tls_files(args, tmpdir)
        tls = functools.partial(server_ssl_context, cert, key) if cert else None
        if not args.quiet:
            logging.getLogger("aioh2s").setLevel(logging.INFO)
        def ready(host: str, port: int) -> None:
            print(listening_url(tls is not None, host, port), flush=True)

        extended_connect = args.ws_echo
        if args.asgi:
            _cli_asgi.check_options(args)
            _cli_asgi.importable_from_cwd()
            extended_connect = _cli_asgi.wsproto_installed()
        handler = WorkerHandler(str(root), args.echo, args.ws_echo, not args.quiet, args.asgi)
        try:
            aioh2s.serve(handler, args.host, args.port, workers=args.workers, ssl=tls,
                         ready=ready, grace=GRACE, enable_connect_protocol=extended_connect,
                         start_timeout=60.0 if args.start_timeout is None
                         else args.start_timeout)
        except (ValueError, TypeError) as e:
            raise CLIError(EXIT_USAGE, str(e)) from e
        except OSError as e:
            raise CLIError(
                EXIT_CONNECT, f"cannot listen on {args.host}:{args.port}: {e.strerror or e}"
            ) from e
        except RuntimeError as e:
            # A worker's startup() failed (logged by the worker): for --asgi that is the
            # application's import or lifespan startup, exit code 1 as in one process.
            raise CLIError(EXIT_ERROR if args.asgi else EXIT_CONNECT, str(e)) from e
        return EXIT_OK
    finally:
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)
        sys.stdout.flush()
