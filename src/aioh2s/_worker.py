"""One worker process of :func:`aioh2s.serve`: its own event loop and its own aioh2s server.

Theory of operation
-------------------
The supervisor (:mod:`aioh2s.workers`) starts each worker with multiprocessing's *spawn*
method and hands it a :class:`WorkerSpec` (the handler, the listening socket of its slot,
bound with SO_REUSEPORT and listening already, the :class:`~aioh2s.Config`, the loop) and
one end of a pipe. The worker

1. ignores SIGINT and SIGHUP: a terminal's Ctrl-C or hangup reaches the whole process
   group, and only the supervisor decides what they mean (it then sends SIGTERM);
2. imports the handler (a ``"module:attr"`` string, or a top-level callable that pickle
   carried by name), starts ``start_server(handler, sock=...)`` and writes ``b"ready"`` on
   the pipe: from then on it accepts connections, and a rolling restart may stop the worker
   it replaces;
3. on SIGTERM stops accepting, then closes the server gracefully: its copy of the listening
   socket first (the kernel goes on queueing the slot's connections for whoever else holds
   the socket: the supervisor, and the replacement), then GOAWAY, grace, stop
   (``Server.close``). A second SIGTERM cuts the grace to 0;
4. treats the pipe's end of file like SIGTERM: the supervisor is gone (killed with SIGKILL,
   say), and an orphaned worker would otherwise serve on unsupervised.

It exits 0 once the server is closed. An exception exits 1 with its traceback on stderr
(multiprocessing prints it); the supervisor logs the exit code.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import signal
import socket
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from multiprocessing.connection import Connection as Pipe
from typing import Any

from .config import Config
from .server import Handler, Server, start_server

__all__ = ["HandlerSpec", "WorkerSpec", "check_handler", "load_handler", "run"]

log = logging.getLogger("aioh2s.workers")

#: What :func:`aioh2s.serve` takes as its handler: ``"package.module:attr"``, or a
#: top-level callable (spawned workers import it by its module and name, as pickle does).
HandlerSpec = str | Handler

#: Sent on the pipe once the server accepts connections.
READY = b"ready"


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs, pickled to it by multiprocessing (the socket as a descriptor)."""

    handler: HandlerSpec
    sock: socket.socket
    config: Config
    backlog: int
    use_uvloop: bool


def check_handler(handler: HandlerSpec) -> None:
    """Raise TypeError/ValueError now for a handler no spawned worker could load."""
    if isinstance(handler, str):
        module, sep, attr = handler.partition(":")
        if not sep or not module or not attr or not all(
            part.isidentifier() for part in (*module.split("."), *attr.split("."))
        ):
            raise ValueError(
                f"aioh2s.serve: handler {handler!r} is not a 'package.module:attribute' spec"
            )
        return
    if not callable(handler):
        raise TypeError(f"aioh2s.serve: handler must be a 'module:attr' string or a callable, "
                        f"not {type(handler).__name__}")
    import pickle

    try:
        pickle.dumps(handler)
    except (pickle.PicklingError, TypeError, AttributeError) as e:
        raise TypeError(
            f"aioh2s.serve: handler {handler!r} cannot reach the workers, which import it by "
            "name (they are spawned, not forked): give a top-level function, or a "
            f"'module:attr' string ({e})"
        ) from None


def load_handler(handler: HandlerSpec) -> Handler:
    """The callable a spec names (imported here, in the worker)."""
    if not isinstance(handler, str):
        return handler
    module_name, _, attr = handler.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AttributeError(
                f"aioh2s.serve: handler {handler!r}: {obj!r} has no attribute {part!r}"
            ) from None
    if not callable(obj):
        raise TypeError(f"aioh2s.serve: handler {handler!r} is {obj!r}, not a callable")
    return obj  # type: ignore[no-any-return]


class _Worker:
    """The running worker: its server, and whether (and how urgently) it should stop."""

    def __init__(self, spec: WorkerSpec, pipe: Pipe) -> None:
        self.spec = spec
        self.pipe = pipe
        self.server: Server | None = None
        self.stop = asyncio.Event()
        self.hurry = False

    def on_sigterm(self) -> None:
        if self.stop.is_set():
            self.hurry = True  # a second SIGTERM: no more grace
            if self.server is not None:
                self.server.close(grace=0)
        self.stop.set()

    def on_orphaned(self) -> None:
        asyncio.get_running_loop().remove_reader(self.pipe.fileno())
        if not self.stop.is_set():
            log.warning("aioh2s: worker: the supervisor is gone; closing")
            self.stop.set()

    async def main(self) -> None:
        loop = asyncio.get_running_loop()

        def on_signal(signum: int, frame: object) -> None:
            # Not loop.add_signal_handler: asyncio.run() would put SIGTERM back to its default
            # as the loop closes, and one more (a SIGTERM to the whole process group reaches
            # us twice: from there and from the supervisor) would kill a worker that is
            # exiting cleanly. This handler stays, and then does nothing.
            if not loop.is_closed():
                loop.call_soon_threadsafe(self.on_sigterm)

        signal.signal(signal.SIGTERM, on_signal)
        # The supervisor never writes: the pipe becomes readable only at its end of file.
        loop.add_reader(self.pipe.fileno(), self.on_orphaned)
        handler = load_handler(self.spec.handler)
        spec = self.spec
        self.server = server = await start_server(
            handler, sock=spec.sock, config=spec.config, backlog=spec.backlog
        )
        if not self.stop.is_set():
            self.pipe.send_bytes(READY)
        await self.stop.wait()
        await stop_accepting(server)
        server.close(grace=0 if self.hurry else None)
        await server.wait_closed()


async def stop_accepting(server: Server) -> None:
    """Take no more connections from the listening sockets, keeping those accepted already.

    asyncio accepts a batch in one callback and builds each transport in a task of its own,
    one loop iteration later; closing the server in between fails that task (an assertion in
    ``asyncio.Server._attach``) and silently drops a connection the kernel had handed us. So
    the accept callback goes first and those tasks run, then ``close()`` may close the socket.
    (uvloop builds the transport at once; its sockets are not the loop's readers: a no-op.)
    """
    loop = asyncio.get_running_loop()
    for sock in server.sockets:
        loop.remove_reader(sock.fileno())
    for _ in range(2):
        await asyncio.sleep(0)


def _run_loop(main: Callable[[], Coroutine[Any, Any, None]], use_uvloop: bool) -> None:
    if not use_uvloop:
        asyncio.run(main())
        return
    import uvloop

    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main())
    else:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        asyncio.run(main())


def run(spec: WorkerSpec, pipe: Pipe) -> None:
    """A worker's whole life (the target of its ``multiprocessing.Process``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        _run_loop(_Worker(spec, pipe).main, spec.use_uvloop)
    finally:
        # The interpreter's finalization puts a Python-level handler back to the default, so
        # a late SIGTERM (see main) would still kill a worker exiting cleanly. SIG_IGN stays.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        spec.sock.close()
        pipe.close()
