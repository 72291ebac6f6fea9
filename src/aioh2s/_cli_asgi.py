"""``aioh2s serve --asgi MODULE:APP``: the ASGI application's part of the ``serve`` command.

Theory of operation: ``serve`` (:mod:`aioh2s._cli_serve`) runs as for any handler; this
module gives it the handler, an :class:`aioh2s.asgi.ASGIAdapter` around the application
MODULE:APP names (imported with the current directory on the path, as ``python -m`` and
uvicorn find it), and turns the failures of loading it or of its lifespan into the
command's exit codes: 2 for a spec that is not ``module:attribute`` (or options that do
not go with ``--asgi``), 1 for an application that cannot be imported or whose lifespan
startup or shutdown failed. ``serve`` runs the startup before it listens and the shutdown
after the server closed (the lifespan spec's order); a SIGINT or SIGTERM during the startup
cancels it (exit code 1, as for a failed one). :mod:`aioh2s.asgi` is imported only
when ``--asgi`` is given.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from aioh2s._cli_common import EXIT_ERROR, EXIT_USAGE, CLIError

if TYPE_CHECKING:
    from aioh2s.asgi import ASGIAdapter

__all__ = ["adapter", "check_options", "startup_until", "step", "wsproto_installed"]


def check_options(args: argparse.Namespace) -> None:
    """Refuse options that do not go with ``--asgi`` (:class:`CLIError`, exit code 2)."""
    if args.echo or args.ws_echo or args.dir != ".":
        raise CLIError(EXIT_USAGE, "--asgi serves the application alone: no DIR, --echo or"
                       " --ws-echo with it")
    from aioh2s.asgi import split_app_spec

    try:
        split_app_spec(args.asgi)
    except ValueError as e:
        raise CLIError(EXIT_USAGE, str(e)) from e


def importable_from_cwd() -> None:
    """Put the current directory on ``sys.path``, as ``python -m`` and uvicorn do for MODULE.

    Spawned workers start with the supervisor's ``sys.path``, so this serves them too.
    """
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


def adapter(args: argparse.Namespace) -> ASGIAdapter:
    """The handler for ``--asgi MODULE:APP``; :class:`CLIError` if it cannot be made."""
    from aioh2s.asgi import ASGIAdapter, load_app

    check_options(args)
    importable_from_cwd()
    try:
        return ASGIAdapter(load_app(args.asgi))
    except ValueError as e:
        raise CLIError(EXIT_USAGE, str(e)) from e
    except Exception as e:
        raise CLIError(EXIT_ERROR, f"cannot load the ASGI application {args.asgi}: {e!r}") from e


async def step(lifespan: Coroutine[Any, Any, None]) -> None:
    """The lifespan's startup or shutdown; its failure is exit code 1 (and logged already)."""
    from aioh2s.asgi import LifespanFailure

    try:
        await lifespan
    except LifespanFailure as e:
        raise CLIError(EXIT_ERROR, str(e)) from e


async def startup_until(asgi: ASGIAdapter, stop: asyncio.Event) -> None:
    """The lifespan startup, cancelled (a :class:`LifespanFailure`) once ``stop`` is set."""
    from aioh2s.asgi import _startup_until

    await _startup_until(asgi, stop)


def wsproto_installed() -> bool:
    """Whether WebSockets can be served (the ``wsproto`` extra is installed)."""
    try:
        import wsproto  # noqa: F401
    except ImportError:
        return False
    return True
