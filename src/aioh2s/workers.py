"""Several worker processes on one port: :func:`serve`, their supervisor.

Theory of operation
-------------------
``serve(handler, host, port, workers=N)`` blocks, like :func:`asyncio.run`, running a
supervisor that holds N *slots*. Each slot has a listening socket that the supervisor binds
with SO_REUSEPORT, so Linux spreads new connections over the N sockets (by a hash of the
client's address and port), and one worker process serving it: its own event loop, its own
:func:`aioh2s.start_server` on that socket (:mod:`aioh2s._worker`).

Why the supervisor owns the sockets: Linux resets the connections waiting in a SO_REUSEPORT
socket's accept queue when the socket closes (only ``net.ipv4.tcp_migrate_req``, off by
default, moves them to another socket of the group). A worker that bound its own socket
would, however gracefully it stopped, fail the clients that connected in its last instant.
Here the supervisor keeps its copy open; a replacement serves the very same socket, and the
worker it replaces closes only its own copy, so the queue survives the handover. Workers
are *spawned* (a fresh interpreter), not forked, for the same reason: a forked child would
inherit every slot's socket (and the supervisor's event loop), and then no socket would
close when its worker does. Spawning also means the handler travels by name: a
``"module:attr"`` string, or a top-level callable (pickled by name; one defined in the
script itself works when ``serve()`` runs under ``if __name__ == "__main__":``).

The supervisor's rules, each in one method of :class:`_Supervisor`:

- a worker that exits without being asked (crash, SIGKILL, OOM killer) is logged with its
  exit code or signal, and its slot is started again after a backoff that doubles with each
  failure in a row, from 0.1 s up to 10 s (a worker that ran 30 s is no failure in a row).
  The dead worker's socket is closed meanwhile, so its share of new connections goes to the
  other workers rather than waiting for the restart (``_exited``, ``_restart``);
- SIGTERM or SIGINT: every socket is closed in the supervisor, every worker gets SIGTERM and
  closes gracefully (GOAWAY, ``grace``, stop); the supervisor returns once all exited, or
  after ``grace`` + 5 s, when it kills those left (``_shutdown``). A second signal cuts the
  workers' grace to 0;
- SIGHUP: a rolling restart. For each slot in turn a new worker starts on the slot's socket;
  once it reports (over its pipe) that it is accepting, the old one is stopped gracefully.
  Nothing is refused meanwhile: the socket and its queue stay, the old worker's open
  connections get GOAWAY and finish. If a new worker dies or is not ready within 30 s the
  rollout stops and the old workers keep serving. A SIGHUP during a rollout extends it to
  every worker started before the last SIGHUP (``_rollout``).
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import multiprocessing
import os
import signal
import socket
import sys
from collections.abc import Callable
from multiprocessing.connection import Connection as Pipe
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any

from . import _worker
from ._worker import READY, HandlerSpec, WorkerSpec, check_handler
from .config import Config, ConfigOptions

if sys.version_info >= (3, 11):
    from typing import Unpack
elif TYPE_CHECKING:  # only type checkers need it on 3.10 (see aioh2s.config)
    from typing_extensions import Unpack

__all__ = ["HandlerSpec", "serve"]

log = logging.getLogger("aioh2s.workers")

RESTART_FIRST = 0.1  # seconds before the first restart of a slot...
RESTART_CAP = 10.0  # ...doubling with each failure in a row, up to this
RESTART_FORGET = 30.0  # a worker that served this long resets its slot's failure count
READY_TIMEOUT = 30.0  # a new worker not accepting connections by then is killed
KILL_MARGIN = 5.0  # beyond the grace period, before a stopping worker is killed

_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP) if hasattr(signal, "SIGHUP") else ()


def describe_exit(code: int | None) -> str:
    """Why a process ended, from its multiprocessing ``exitcode``, for a log line."""
    if code is None:
        return "is still running"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "an unknown signal"
        return f"was killed by signal {-code} ({name})"
    return f"exited with code {code}"


class _Proc:
    """One worker process as the supervisor sees it: readiness, exit, who it replaces."""

    def __init__(self, process: BaseProcess, pipe: Pipe, slot: _Slot, generation: int,
                 on_exit: Callable[[_Proc], None]) -> None:
        self.loop = asyncio.get_running_loop()
        self.process = process
        self.pid = process.pid
        self.pipe = pipe
        self.slot = slot
        self.generation = generation
        self.stopping = False  # we asked it to stop: its exit is no crash
        self.started = self.loop.time()
        #: True once it accepts connections, False if it ended (or was killed) before.
        self.ready: asyncio.Future[bool] = self.loop.create_future()
        self.exited: asyncio.Future[int | None] = self.loop.create_future()
        self._on_exit = on_exit
        self.loop.add_reader(process.sentinel, self._ended)
        self.loop.add_reader(pipe.fileno(), self._message)
        self._ready_timer = self.loop.call_later(READY_TIMEOUT, self._not_ready)

    def __repr__(self) -> str:
        return f"worker {self.pid} (slot {self.slot.index})"

    def _message(self) -> None:
        try:
            message = self.pipe.recv_bytes()
        except (EOFError, OSError):
            self.loop.remove_reader(self.pipe.fileno())
            return
        if message == READY and not self.ready.done():
            self._ready_timer.cancel()
            self.ready.set_result(True)

    def _not_ready(self) -> None:
        log.error("aioh2s: %r is not accepting connections %.0f s after it started; killing it",
                  self, READY_TIMEOUT)
        self.kill()

    def _ended(self) -> None:
        self.loop.remove_reader(self.process.sentinel)
        if not self.pipe.closed:
            self.loop.remove_reader(self.pipe.fileno())
            self.pipe.close()
        self._ready_timer.cancel()
        self.process.join(5)  # it has exited: this reaps it
        if not self.ready.done():
            self.ready.set_result(False)
        self.exited.set_result(self.process.exitcode)
        self._on_exit(self)

    def signal(self, signum: int) -> None:
        if self.exited.done():
            return
        try:
            os.kill(self.process.pid or 0, signum)
        except ProcessLookupError:
            pass  # exited; _ended is on its way

    def stop(self) -> None:
        """Ask for a graceful close (again: with no grace left)."""
        self.stopping = True
        self.signal(signal.SIGTERM)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)


class _Slot:
    """One of the N places of the SO_REUSEPORT group: its socket, its worker."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.sock: socket.socket | None = None
        self.worker: _Proc | None = None  # the one serving it
        self.incoming: _Proc | None = None  # its replacement, while a rollout starts it
        self.failures = 0  # in a row, for the backoff
        self.restart: asyncio.TimerHandle | None = None

    def close_socket(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class _Supervisor:
    def __init__(self, handler: HandlerSpec, host: str | None, port: int, workers: int,
                 config: Config, backlog: int, use_uvloop: bool) -> None:
        self.handler = handler
        self.config = config
        self.backlog = backlog
        self.use_uvloop = use_uvloop
        self.slots = [_Slot(i) for i in range(workers)]
        self.procs: set[_Proc] = set()  # every live worker: serving, starting, draining
        self.generation = 0  # bumped by each SIGHUP
        self.serving = False  # startup is over: restart what dies
        self.shutting_down = False
        self.hurried = False
        self._ctx = multiprocessing.get_context("spawn")
        self._rollout_task: asyncio.Task[None] | None = None
        self._shutdown_task: asyncio.Task[None] | None = None
        self._done = asyncio.Event()  # set when a signal's shutdown is over
        family, _, _, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        self.family = family
        self.address: Any = address

    # -- sockets and processes -------------------------------------------------------------------

    def _listen(self) -> socket.socket:
        sock = socket.create_server(self.address, family=self.family, backlog=self.backlog,
                                    reuse_port=True)
        # Port 0: the first socket picks the port, and every later one joins its group.
        self.address = sock.getsockname()
        return sock

    def _spawn(self, slot: _Slot) -> _Proc:
        if slot.sock is None:
            slot.sock = self._listen()
        mine, theirs = self._ctx.Pipe(duplex=True)
        spec = WorkerSpec(self.handler, slot.sock, self.config, self.backlog, self.use_uvloop)
        process = self._ctx.Process(target=_worker.run, args=(spec, theirs),
                                    name=f"aioh2s-worker-{slot.index}")
        process.start()
        theirs.close()
        proc = _Proc(process, mine, slot, self.generation, self._exited)
        self.procs.add(proc)
        proc.ready.add_done_callback(lambda f: self._ready(proc))
        return proc

    def _ready(self, proc: _Proc) -> None:
        if proc.ready.result():
            log.info("aioh2s: %r is accepting connections", proc)

    def _exited(self, proc: _Proc) -> None:
        """A worker process ended: was it asked to? Restart its slot if not."""
        self.procs.discard(proc)
        slot = proc.slot
        why = describe_exit(proc.exited.result())
        if slot.incoming is proc:
            slot.incoming = None  # a rollout's new worker: the rollout reports it
        elif proc.stopping or self.shutting_down:
            log.info("aioh2s: %r stopped (it %s)", proc, why)
        elif slot.worker is proc:
            slot.worker = None
            if self.serving:
                self._schedule_restart(slot, proc, why)
            else:
                log.error("aioh2s: %r %s while the workers were starting", proc, why)

    def _schedule_restart(self, slot: _Slot, proc: _Proc, why: str) -> None:
        if proc.loop.time() - proc.started >= RESTART_FORGET:
            slot.failures = 0
        delay = min(RESTART_CAP, RESTART_FIRST * 2**slot.failures)
        slot.failures += 1
        if slot.incoming is None:
            # Its queue is reset now, and its share of new connections goes to the others.
            slot.close_socket()
        log.warning("aioh2s: %r %s; restarting it in %.1f s", proc, why, delay)
        slot.restart = proc.loop.call_later(delay, self._restart, slot)

    def _restart(self, slot: _Slot) -> None:
        slot.restart = None
        if self.shutting_down or slot.worker is not None:
            return  # (a rollout's replacement took the slot over meanwhile)
        slot.worker = self._spawn(slot)

    # -- startup, rollout, shutdown ----------------------------------------------------------------

    async def run(self) -> None:
        """Start the workers, then supervise them until a signal has stopped them all."""
        loop = asyncio.get_running_loop()
        for signum in _SIGNALS:
            loop.add_signal_handler(signum, self._on_signal, signum)
        try:
            _start_resource_tracker()
            for slot in self.slots:
                slot.worker = self._spawn(slot)
            await asyncio.wait([s.worker.ready for s in self.slots if s.worker is not None])
            if not self.shutting_down:
                failed = [s for s in self.slots if s.worker is None or not s.worker.ready.result()]
                if failed:
                    await self._stop_all()
                    raise RuntimeError(
                        f"aioh2s.serve: {len(failed)} of {len(self.slots)} worker(s) ended before "
                        "accepting connections (their errors are above); nothing is served"
                    )
                self.serving = True
                self._log_serving()
            await self._done.wait()
        finally:
            for signum in _SIGNALS:
                loop.remove_signal_handler(signum)
            for proc in list(self.procs):  # only after an error of ours: leave no orphans
                proc.kill()
            for slot in self.slots:
                slot.close_socket()
                if slot.restart is not None:
                    slot.restart.cancel()

    def _log_serving(self) -> None:
        host, port = self.address[:2]
        shown = f"[{host}]" if ":" in host else host
        pids = ", ".join(str(s.worker.pid) for s in self.slots if s.worker is not None)
        log.info("aioh2s: serving http://%s:%d with %d worker(s) (pids %s)", shown, port,
                 len(self.slots), pids)

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if signum == getattr(signal, "SIGHUP", None):
            if self.shutting_down:
                return
            self.generation += 1
            if self._rollout_task is None:
                log.info("aioh2s: %s: replacing the workers one by one", name)
                self._rollout_task = asyncio.ensure_future(self._rollout())
            else:
                log.info("aioh2s: %s: the rolling restart goes on to the workers started "
                         "before now", name)
            return
        if self.shutting_down:
            if not self.hurried:
                self.hurried = True
                log.info("aioh2s: %s again: the workers stop without grace", name)
                for proc in list(self.procs):
                    proc.stop()
            return
        log.info("aioh2s: %s: stopping %d worker(s) gracefully (grace %g s)", name,
                 len(self.procs), self.config.grace)
        self._shutdown_task = asyncio.ensure_future(self._shutdown())

    async def _shutdown(self) -> None:
        try:
            if self._rollout_task is not None:
                self._rollout_task.cancel()
            await self._stop_all()
            log.info("aioh2s: all workers stopped")
        finally:
            self._done.set()

    async def _stop_all(self) -> None:
        """Close every socket, SIGTERM every worker, wait (bounded), kill what is left."""
        self.shutting_down = True
        for slot in self.slots:
            # Ours first: once each worker closed its own copy, the port is closed.
            slot.close_socket()
            if slot.restart is not None:
                slot.restart.cancel()
                slot.restart = None
        procs = list(self.procs)
        for proc in procs:
            proc.stop()
        if not procs:
            return
        bound = self.config.grace + KILL_MARGIN
        await asyncio.wait([p.exited for p in procs], timeout=bound)
        left = [p for p in procs if not p.exited.done()]
        if left:
            log.warning("aioh2s: %s still running %g s after SIGTERM: killing %s",
                        ", ".join(map(repr, left)), bound, "it" if len(left) == 1 else "them")
            for proc in left:
                proc.kill()
            await asyncio.wait([p.exited for p in left], timeout=KILL_MARGIN)

    async def _rollout(self) -> None:
        """SIGHUP: replace each worker started before the last SIGHUP, one slot at a time."""
        try:
            while not self.shutting_down:
                stale = [s for s in self.slots if s.worker is not None
                         and s.worker.generation < self.generation]
                if not stale:
                    break
                if not await self._replace(stale[0]):
                    return
            log.info("aioh2s: rolling restart done (pids %s)", ", ".join(
                str(s.worker.pid) for s in self.slots if s.worker is not None))
        finally:
            self._rollout_task = None

    async def _replace(self, slot: _Slot) -> bool:
        """Start a worker on the slot's socket; once it accepts, stop the one it replaces."""
        old = slot.worker
        new = slot.incoming = self._spawn(slot)
        try:
            ok = await asyncio.shield(new.ready)
        except asyncio.CancelledError:
            slot.incoming = None  # shutting down: _stop_all stops it with the others
            raise
        if not ok:
            log.error("aioh2s: rolling restart stopped: the new %r %s before it accepted "
                      "connections; the other workers go on serving", new,
                      describe_exit(new.exited.result() if new.exited.done() else None))
            if slot.worker is None and slot.restart is None and not self.shutting_down:
                slot.restart = asyncio.get_running_loop().call_later(
                    RESTART_FIRST, self._restart, slot)  # the old one died meanwhile
            return False
        slot.incoming = None
        slot.worker = new
        if slot.restart is not None:  # the old one died meanwhile: no restart needed now
            slot.restart.cancel()
            slot.restart = None
        if old is not None and not old.exited.done():
            log.info("aioh2s: %r replaces worker %d; stopping that one gracefully", new, old.pid)
            old.stop()
        return True


def _start_resource_tracker() -> None:
    """Start multiprocessing's resource tracker now, deaf to SIGHUP.

    Spawning starts that helper process in our process group. It ignores SIGINT and SIGTERM,
    but a SIGHUP to the group (a terminal's hangup, ``kill -HUP -PGID``) would kill it, and
    the next spawn would warn on stderr that it "died unexpectedly". A process started with
    a signal blocked keeps it blocked.
    """
    from multiprocessing import resource_tracker

    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    try:
        resource_tracker.ensure_running()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def serve(
    handler: HandlerSpec,
    host: str | None = "127.0.0.1",
    port: int = 8000,
    *,
    workers: int = 1,
    config: Config | None = None,
    backlog: int = 1024,
    use_uvloop: bool = False,
    **options: Unpack[ConfigOptions],
) -> None:
    """Serve ``handler`` on ``host:port`` from ``workers`` processes; block until stopped.

    ``handler`` is ``"package.module:attr"`` or a top-level callable: the workers are
    spawned processes that import it (put ``serve()`` under ``if __name__ == "__main__":``
    when the handler is in the script itself). Each worker runs its own event loop (uvloop
    with ``use_uvloop=True``, extra ``aioh2s[uvloop]``) and its own :func:`start_server`
    with ``config``/``options`` (Config fields; ``grace`` also bounds the shutdown). The
    workers share the port through SO_REUSEPORT, which needs Linux for ``workers > 1``.
    ``host`` is one address (a name is resolved to its first); ``port=0`` picks a free
    port, named in the "serving" log line.

    Signals: SIGTERM or SIGINT stop every worker gracefully (GOAWAY, ``grace``, then what is
    left is reset), and ``serve()`` returns once they all exited, killing any still running
    ``grace`` + 5 s later. SIGHUP replaces the workers one by one, each only once its
    replacement accepts connections, so no request fails. A worker that dies is logged
    (exit code or signal) and restarted after a backoff (0.1 s doubling to 10 s). Logs go
    to the ``aioh2s.workers`` logger: INFO for each start and stop, WARNING for a death.
    Raises RuntimeError when the workers cannot start (their tracebacks are on stderr).
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"aioh2s.serve: workers must be a whole number >= 1, not {workers!r}")
    if not hasattr(signal, "SIGHUP"):
        raise RuntimeError(f"aioh2s.serve: needs POSIX processes and signals ({sys.platform} "
                           "has no SIGHUP); run aioh2s.start_server() in one process instead")
    if workers > 1 and not sys.platform.startswith("linux"):
        raise RuntimeError(
            f"aioh2s.serve(workers={workers}): sharing one port needs Linux's SO_REUSEPORT, "
            f"which spreads connections over the workers ({sys.platform}'s does not); "
            "run workers=1 per port"
        )
    if use_uvloop and importlib.util.find_spec("uvloop") is None:
        raise ImportError("aioh2s.serve(use_uvloop=True) needs uvloop: "
                          "pip install 'aioh2s[uvloop]'")
    check_handler(handler)
    cfg = Config.from_options(config, **options)
    asyncio.run(_Supervisor(handler, host, port, workers, cfg, backlog, use_uvloop).run())
