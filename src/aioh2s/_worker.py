"""One worker process of :func:`aioh2s.serve`: its own event loop and its own aioh2s server.

Theory of operation
-------------------
The supervisor (:mod:`aioh2s.workers`) starts each worker with multiprocessing's *spawn*
method and hands it a :class:`WorkerSpec` (the handler, the listening socket of its slot,
bound with SO_REUSEPORT and listening already, the :class:`~aioh2s.Config`, the TLS context
factory, the loop) and one end of a pipe. It starts the process with SIGHUP, SIGINT, SIGTERM
and SIGQUIT *blocked*: a blocked signal stays pending instead of running the default action
(death), and the mask survives fork and exec, so a signal sent to the whole process group
while this interpreter is still starting cannot kill it. The worker

1. ignores SIGINT and SIGHUP (only the supervisor decides what they mean), and leads a
   process group of its own (below); it installs its SIGTERM and
   SIGQUIT handlers, and only then unblocks the four (a pending SIGHUP is then discarded,
   a pending SIGTERM handled);
2. imports the handler (a ``"module:attr"`` string, or a top-level callable that pickle
   carried by name). If that object has ``async startup()`` and ``async shutdown()``
   methods (the lifespan hook an ASGI adapter uses) it awaits ``startup()`` first; one that
   raises ends the worker with exit code 3 and a log line saying so. Then it starts
   ``start_server(handler, sock=...)`` and writes ``b"ready"`` on the pipe: from then on it
   accepts connections, and a rolling restart may stop the worker it replaces;
3. on SIGTERM stops accepting, then closes the server gracefully: its copy of the listening
   socket first (the kernel goes on queueing the slot's connections for whoever else holds
   the socket: the supervisor, and the replacement), then GOAWAY, grace, stop
   (``Server.close``), then awaits ``shutdown()``. SIGTERM is idempotent: with systemd's
   default ``KillMode=control-group`` a worker gets it twice (from the kernel and from the
   supervisor), and a second one must not cut the grace of requests in flight. SIGQUIT,
   which only the supervisor sends (on a second SIGTERM or SIGINT to *it*), means hurry:
   the grace is cut to 0;
4. treats the pipe's end of file like SIGTERM: the supervisor is gone (killed with SIGKILL,
   say), and an orphaned worker would otherwise serve on unsupervised.

The worker leads a process group of its own (``setpgid`` first thing): the processes the
handler starts (a ProcessPoolExecutor's, multiprocessing's resource tracker) are in it, and
once the worker has exited, however it ended, the supervisor kills what is left of the group
(``Proc`` in :mod:`aioh2s._slot`). So a terminal's Ctrl-C or a ``kill -TERM -PGID`` reaches
only the supervisor, which forwards. Before it exits, the worker runs the interpreter's exit
work itself (:func:`run_exit_work`): multiprocessing would otherwise join the handler's pool
processes before the pool's exit hook stops them, and hang.

It exits 0 once the server is closed. An exception exits 1 with its traceback on stderr
(multiprocessing prints it); the supervisor logs the exit code.
"""

from __future__ import annotations

import asyncio
import atexit
import importlib
import logging
import os
import signal
import socket
import ssl
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from multiprocessing.connection import Connection as Pipe
from typing import Any

from .config import Config
from .server import Handler, Server, start_server

__all__ = ["BLOCKED", "EXIT_STARTUP", "HandlerSpec", "WorkerSpec", "check_handler",
           "lifespan_hooks", "load_handler", "run", "run_exit_work"]

log = logging.getLogger("aioh2s.workers")

#: What :func:`aioh2s.serve` takes as its handler: ``"package.module:attr"``, or a
#: top-level callable (spawned workers import it by its module and name, as pickle does).
HandlerSpec = str | Handler

#: Sent on the pipe once the server accepts connections.
READY = b"ready"

#: A worker's exit code when its handler's ``startup()`` raised.
EXIT_STARTUP = 3

#: Blocked around the spawn, unblocked by the worker once its handlers are in place.
BLOCKED = frozenset({signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGQUIT}
                    if hasattr(signal, "SIGHUP") else ())


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs, pickled to it by multiprocessing (the socket as a descriptor)."""

    handler: HandlerSpec
    sock: socket.socket
    config: Config
    backlog: int
    use_uvloop: bool
    #: Builds the worker's TLS context (None: h2c): a picklable callable, such as
    #: ``functools.partial(aioh2s.server_ssl_context, cert, key)``.
    ssl_factory: Callable[[], ssl.SSLContext] | None = None


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
        self.stop.set()  # idempotent: a second SIGTERM changes nothing (module docstring)

    def on_sigquit(self) -> None:
        self.hurry = True
        if self.server is not None:
            self.server.close(grace=0)
        self.stop.set()

    def on_orphaned(self) -> None:
        asyncio.get_running_loop().remove_reader(self.pipe.fileno())
        if not self.stop.is_set():
            log.warning("aioh2s: worker: the supervisor is gone; closing")
            self.stop.set()

    async def main(self) -> int:
        """Serve until told to stop; the process's exit code."""
        loop = asyncio.get_running_loop()

        def on_signal(signum: int, frame: object) -> None:
            # Not loop.add_signal_handler: asyncio.run() would put SIGTERM back to its default
            # as the loop closes, and a late one would kill a worker that is exiting cleanly.
            # This handler stays, and then does nothing.
            if not loop.is_closed():
                loop.call_soon_threadsafe(
                    self.on_sigquit if signum == signal.SIGQUIT else self.on_sigterm)

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGQUIT, on_signal)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, BLOCKED)  # (blocked since the spawn)
        # The supervisor never writes: the pipe becomes readable only at its end of file.
        loop.add_reader(self.pipe.fileno(), self.on_orphaned)
        spec = self.spec
        handler = load_handler(spec.handler)
        hooks = lifespan_hooks(handler)
        if hooks is not None:
            try:
                await hooks[0]()
            except Exception:
                log.exception("aioh2s: worker %d: the handler's startup() failed; exiting "
                              "(code %d)", os.getpid(), EXIT_STARTUP)
                return EXIT_STARTUP
        try:
            ssl_context = spec.ssl_factory() if spec.ssl_factory is not None else None
            self.server = server = await start_server(
                handler, sock=spec.sock, ssl=ssl_context, config=spec.config,
                backlog=spec.backlog,
            )
            if self.hurry:
                server.close(grace=0)
            if not self.stop.is_set():
                self.pipe.send_bytes(READY)
            await self.stop.wait()
            await stop_accepting(server)
            server.close(grace=0 if self.hurry else None)
            await server.wait_closed()
        finally:
            if hooks is not None:
                await hooks[1]()
        return 0


def lifespan_hooks(handler: object) -> tuple[Callable[[], Awaitable[Any]],
                                             Callable[[], Awaitable[Any]]] | None:
    """The handler's ``startup``/``shutdown`` methods, if it has both (the lifespan hook)."""
    startup = getattr(handler, "startup", None)
    shutdown = getattr(handler, "shutdown", None)
    if callable(startup) and callable(shutdown):
        return startup, shutdown
    return None


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


def _run_loop(main: Callable[[], Coroutine[Any, Any, int]], use_uvloop: bool) -> int:
    if not use_uvloop:
        return asyncio.run(main())
    import uvloop

    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main())
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return asyncio.run(main())


def run(spec: WorkerSpec, pipe: Pipe) -> None:
    """A worker's whole life (the target of its ``multiprocessing.Process``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        os.setpgid(0, 0)  # a group of its own, which the supervisor clears (module docstring)
    except OSError:
        pass  # (a session leader cannot: then it stays in the supervisor's)
    try:
        code = _run_loop(_Worker(spec, pipe).main, spec.use_uvloop)
    finally:
        # The interpreter's finalization puts a Python-level handler back to the default, so
        # a late SIGTERM (see main) would still kill a worker exiting cleanly. SIG_IGN stays.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGQUIT, signal.SIG_IGN)
        spec.sock.close()
        pipe.close()
        run_exit_work()
    if code:
        sys.exit(code)


def run_exit_work() -> None:
    """Run the interpreter's exit work now, before multiprocessing's exit joins our children.

    When a process target returns, multiprocessing joins the process's non-daemon children
    *before* the interpreter's exit work runs: the children of a ProcessPoolExecutor, which
    its exit hook (registered with threading) would have stopped, are then waited for
    forever. So that hook, the other threading exit hooks and ``atexit``'s run here (each
    runs once: the interpreter does not run them again).
    """
    shutdown = getattr(threading, "_shutdown", None)  # threading's exit hooks, then its joins
    if shutdown is not None:
        shutdown()
    atexit._run_exitfuncs()
