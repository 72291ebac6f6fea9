"""Several worker processes on one port: :func:`serve`, their supervisor.

Theory of operation
-------------------
``serve(handler, host, port, workers=N)`` blocks, like :func:`asyncio.run`, running a
supervisor that holds N *slots* (:mod:`aioh2s._slot`). Each slot has a listening socket that
the supervisor binds with SO_REUSEPORT, so Linux spreads new connections over the N sockets
(by a hash of the client's address and port), and one worker process serving it: its own
event loop, its own :func:`aioh2s.start_server` on that socket (:mod:`aioh2s._worker`).

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
script itself works when ``serve()`` runs under ``if __name__ == "__main__":``). A worker is
spawned with SIGHUP, SIGINT, SIGTERM and SIGQUIT blocked (``pthread_sigmask`` around the
spawn: the mask survives fork and exec), so that a signal to the whole process group cannot
kill it before its handlers are in place; it unblocks them then.

The supervisor's rules, each in one method of :class:`_Supervisor` (the slot's state moves
are the table in :mod:`aioh2s._slot`):

- a worker that exits without being asked (crash, SIGKILL, OOM killer, a failed
  ``startup()``) is logged with its exit code or signal, and its slot is started again
  after a backoff that doubles with each failure in a row, from 0.1 s up to 10 s (a worker
  that ran 30 s is no failure in a row). The dead worker's socket stays open meanwhile:
  new connections wait in its queue for the replacement, and are neither refused nor reset
  (with ``workers=1`` the port would be closed, free for another process). Only for a
  backoff of 1 s or more, while another slot's socket is serving, is it closed, so that its
  share of new connections goes to the other workers rather than waiting for the restart.
  A restart that cannot bind the socket again, or cannot spawn (out of descriptors, say),
  is logged and retried on the same backoff (``_exited``, ``_restart``);
- SIGTERM or SIGINT: every socket is closed in the supervisor, every worker not stopping
  already gets SIGTERM and closes gracefully (GOAWAY, ``grace``, stop); a worker draining
  after a rolling restart is left to finish with the grace it has. The supervisor returns
  once all exited, or after ``grace`` + 5 s, when it kills those left (``_stop_all``). A
  second SIGTERM or SIGINT *to the supervisor* cuts the workers' grace to 0: it sends them
  SIGQUIT (a worker treats any number of SIGTERMs as one, since systemd's default
  ``KillMode=control-group`` sends one to every process of the group, on top of the
  supervisor's);
- SIGHUP: a rolling restart. For each slot in turn a new worker starts on the slot's socket;
  once it reports (over its pipe) that it is accepting, the old one is stopped gracefully.
  Nothing is refused meanwhile: the socket and its queue stay, the old worker's open
  connections get GOAWAY and finish (an old worker still running ``grace`` + 5 s later is
  killed). If a new worker dies or is not ready within ``start_timeout`` the rollout stops
  and the old workers keep serving. A SIGHUP during a rollout extends it to every worker
  started before the last SIGHUP; it is done once every slot serves, a slot whose worker
  died meanwhile and restarts included (``_rollout``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import importlib.util
import logging
import math
import multiprocessing
import pickle
import signal
import socket
import ssl as _ssl
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import _worker
from ._slot import Proc, Slot, SlotState, describe_exit
from ._worker import BLOCKED, HandlerSpec, WorkerSpec, check_handler
from .config import Config, ConfigOptions

if sys.version_info >= (3, 11):
    from typing import Unpack
elif TYPE_CHECKING:  # only type checkers need it on 3.10 (see aioh2s.config)
    from typing_extensions import Unpack

__all__ = ["MAX_WORKERS", "HandlerSpec", "serve"]

log = logging.getLogger("aioh2s.workers")

RESTART_FIRST = 0.1  # seconds before the first restart of a slot...
RESTART_CAP = 10.0  # ...doubling with each failure in a row, up to this
RESTART_FORGET = 30.0  # a worker that served this long resets its slot's failure count
#: Config.first_request_wait for the workers, unless given: what a rollout needs for clients
#: that open a connection per request and never retry.
WORKER_FIRST_REQUEST_WAIT = 1.0
SOCKET_KEPT = 1.0  # a dead worker's socket stays open for a backoff shorter than this
KILL_MARGIN = 5.0  # beyond the grace period, before a stopping worker is killed
#: The most workers :func:`serve` starts: each is a whole interpreter, and more than a few
#: per core only adds memory and context switches.
MAX_WORKERS = 256

_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP) if hasattr(signal, "SIGHUP") else ()


class _Supervisor:
    def __init__(self, handler: HandlerSpec, host: str | None, port: int, workers: int,
                 config: Config, backlog: int, use_uvloop: bool,
                 ssl: Callable[[], _ssl.SSLContext] | None,
                 ready: Callable[[str, int], object] | None, start_timeout: float) -> None:
        self.handler = handler
        self.start_timeout = start_timeout
        self.config = config
        self.backlog = backlog
        self.use_uvloop = use_uvloop
        self.ssl = ssl
        self.on_ready = ready
        self.slots = [Slot(i) for i in range(workers)]
        self.generation = 0  # bumped by each SIGHUP
        self.serving = False  # startup is over: restart what dies
        self._serving = asyncio.Event()  # (the same, for a rollout asked for during startup)
        self.shutting_down = False
        self.hurried = False
        self._ctx = multiprocessing.get_context("spawn")
        self._rollout_task: asyncio.Task[None] | None = None
        self._shutdown_task: asyncio.Task[None] | None = None
        self._done = asyncio.Event()  # set when a signal's shutdown is over
        self.dualstack = False
        if not host:
            # Every interface, as asyncio's start_server(host=None) does: one IPv6 socket
            # that takes IPv4 too (IPV6_V6ONLY off), where the system has IPv6.
            self.dualstack = socket.has_ipv6 and socket.has_dualstack_ipv6()
            self.family = socket.AF_INET6 if self.dualstack else socket.AF_INET
            self.address: Any = ("::" if self.dualstack else "0.0.0.0", port)
        else:
            family, _, _, _, address = socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )[0]
            self.family = family
            self.address = address

    # -- sockets and processes -------------------------------------------------------------------

    def _check_port_free(self) -> None:
        """OSError EADDRINUSE if a fixed port is taken, by another ``serve()`` too.

        SO_REUSEPORT lets any socket of the same user with that option join the group: a
        second, independent ``serve()`` on the port would start and silently take a share of
        the connections. A socket without it cannot bind a port another socket listens on
        (SO_REUSEADDR, as asyncio sets it, only lets it past connections in TIME_WAIT).
        """
        if self.address[1] == 0:
            return
        probe = socket.socket(self.family, socket.SOCK_STREAM)
        try:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self.family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, not self.dualstack)
            try:
                probe.bind(self.address)
            except OSError as e:
                if e.errno != errno.EADDRINUSE:
                    raise
                raise OSError(errno.EADDRINUSE, f"{self._url()} is in use by another process "
                              "(another aioh2s.serve(), say): address already in use") from None
        finally:
            probe.close()

    def _listen(self) -> socket.socket:
        sock = socket.create_server(self.address, family=self.family, backlog=self.backlog,
                                    reuse_port=True, dualstack_ipv6=self.dualstack)
        # Port 0: the first socket picks the port, and every later one joins its group.
        self.address = sock.getsockname()
        return sock

    def _spawn(self, slot: Slot) -> Proc:
        """Start a worker for ``slot`` (binding its socket first if need be); OSError if not."""
        if slot.sock is None:
            slot.sock = self._listen()
        mine, theirs = self._ctx.Pipe(duplex=True)
        spec = WorkerSpec(self.handler, slot.sock, self.config, self.backlog, self.use_uvloop,
                          self.ssl)
        process = self._ctx.Process(target=_worker.run, args=(spec, theirs),
                                    name=f"aioh2s-worker-{slot.index}")
        # Blocked in the child from its first instruction on (module docstring); ours are
        # only delayed: the loop's signal handlers run once we unblock.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, BLOCKED)
        try:
            process.start()
        except BaseException:
            mine.close()
            raise
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            theirs.close()
        proc = Proc(process, mine, slot, self.generation, self._exited, self.start_timeout)
        proc.ready.add_done_callback(lambda f: self._ready(proc))
        return proc

    def _ready(self, proc: Proc) -> None:
        """A worker reported that it accepts connections (or ended before that)."""
        if not proc.ready.result():
            return
        slot = proc.slot
        if slot.current is proc and slot.state is SlotState.STARTING:
            slot.move("ready")
            log.info("aioh2s: %r is accepting connections", proc)
        elif slot.incoming is proc and slot.state is SlotState.REPLACING:
            old = slot.current
            assert old is not None and slot.draining is None  # (_replace waited for it)
            slot.current, slot.incoming = proc, None
            slot.move("took_over")
            slot.draining = old
            log.info("aioh2s: %r is accepting connections; it replaces worker %d, which is "
                     "stopping gracefully", proc, old.pid)
            old.stop()
            # Its grace, then KILL_MARGIN for the rest (shutdown() hooks, say): then it goes.
            proc.loop.call_later(self.config.grace + KILL_MARGIN, self._overdue, old)

    def _overdue(self, proc: Proc) -> None:
        if not proc.exited.done():
            log.warning("aioh2s: %r still running %g s after SIGTERM: killing it", proc,
                        self.config.grace + KILL_MARGIN)
            proc.kill()

    def _exited(self, proc: Proc) -> None:
        """A worker process ended: was it asked to? Restart its slot if not."""
        slot = proc.slot
        why = describe_exit(proc.exited.result())
        if slot.draining is proc:
            slot.draining = None
            log.info("aioh2s: %r stopped (it %s)", proc, why)
        elif slot.incoming is proc:
            slot.incoming = None
            if slot.state is SlotState.REPLACING:
                slot.move("incoming_died")  # the rollout reports it
            else:
                log.info("aioh2s: %r stopped (it %s)", proc, why)
        elif slot.current is proc:
            if slot.state is SlotState.STOPPED:
                slot.current = None
                log.info("aioh2s: %r stopped (it %s)", proc, why)
            elif slot.state is SlotState.REPLACING:
                # Its replacement is starting: that one is the slot's worker now, and no
                # restart is due (another one would be a worker too many).
                slot.current, slot.incoming = slot.incoming, None
                slot.move("died")
                log.warning("aioh2s: %r %s while its replacement %r starts, which takes the "
                            "slot over", proc, why, slot.current)
            else:
                slot.current = None
                slot.move("died")
                if self.serving:
                    self._schedule_restart(slot, proc, why)
                else:
                    log.error("aioh2s: %r %s while the workers were starting", proc, why)
        else:
            log.info("aioh2s: %r stopped (it %s)", proc, why)

    def _backoff(self, slot: Slot) -> float:
        delay: float = min(RESTART_CAP, RESTART_FIRST * 2.0**slot.failures)
        slot.failures += 1
        return delay

    def _schedule_restart(self, slot: Slot, proc: Proc, why: str) -> None:
        if proc.loop.time() - proc.started >= RESTART_FORGET:
            slot.failures = 0
        delay = self._backoff(slot)
        if delay >= SOCKET_KEPT and any(
            s is not slot and s.sock is not None
            and s.state in (SlotState.SERVING, SlotState.REPLACING) for s in self.slots
        ):
            # A long wait, and others serve: its share of new connections goes to them
            # (the connections queued in it are reset).
            slot.close_socket()
        # Otherwise its socket stays: connections wait in its queue for the replacement,
        # rather than being refused (or, the port free, taken by another process).
        log.warning("aioh2s: %r %s; restarting it in %.1f s", proc, why, delay)
        slot.restart = proc.loop.call_later(delay, self._restart, slot)

    def _restart(self, slot: Slot) -> None:
        slot.restart = None
        if self.shutting_down or slot.state is not SlotState.BACKOFF:
            return
        try:
            proc = self._spawn(slot)
        except OSError as e:
            slot.close_socket()
            delay = self._backoff(slot)
            log.error("aioh2s: cannot restart the worker of slot %d: %s (listening on %s); "
                      "trying again in %.1f s", slot.index, e, self._url(), delay)
            slot.restart = asyncio.get_running_loop().call_later(delay, self._restart, slot)
            return
        slot.current = proc
        slot.move("start")

    # -- startup, rollout, shutdown ----------------------------------------------------------------

    async def run(self) -> None:
        """Start the workers, then supervise them until a signal has stopped them all."""
        loop = asyncio.get_running_loop()
        for signum in _SIGNALS:
            loop.add_signal_handler(signum, self._on_signal, signum)
        try:
            self._check_port_free()
            _start_resource_tracker()
            for slot in self.slots:
                slot.current = self._spawn(slot)
                slot.move("start")
                if slot.index == 0:
                    log.info("aioh2s: starting %d worker(s) on %s", len(self.slots), self._url())
            await asyncio.wait([s.current.ready for s in self.slots if s.current is not None])
            if not self.shutting_down:
                failed = [s for s in self.slots if s.state is not SlotState.SERVING]
                if failed:
                    await self._stop_all()
                    raise RuntimeError(
                        f"aioh2s.serve: {len(failed)} of {len(self.slots)} worker(s) ended before "
                        "accepting connections (their errors are above); nothing is served"
                    )
                self.serving = True
                self._serving.set()
                self._log_serving()
                if self.on_ready is not None:
                    host, port = self.address[:2]
                    try:
                        self.on_ready(host, port)
                    except Exception:
                        log.exception("aioh2s: the ready callback raised; stopping the "
                                      "workers gracefully")
                        await self._stop_all()
                        raise
            await self._done.wait()
        finally:
            for signum in _SIGNALS:
                loop.remove_signal_handler(signum)
            for slot in self.slots:
                for proc in slot.procs():  # only after an error of ours: leave no orphans
                    proc.kill()
                slot.close_socket()
                slot.cancel_restart()
            if self._rollout_task is not None:
                self._rollout_task.cancel()

    def _url(self) -> str:
        host, port = self.address[:2]
        shown = f"[{host}]" if ":" in host else host
        return f"{'https' if self.ssl is not None else 'http'}://{shown}:{port}"

    def _log_serving(self) -> None:
        pids = ", ".join(str(s.current.pid) for s in self.slots if s.current is not None)
        both = " (IPv4 and IPv6)" if self.dualstack else ""
        log.info("aioh2s: serving %s%s with %d worker(s) (pids %s)", self._url(), both,
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
                for slot in self.slots:
                    for proc in slot.procs():
                        proc.hurry()
            return
        count = sum(len(s.procs()) for s in self.slots)
        log.info("aioh2s: %s: stopping %d worker(s) gracefully (grace %g s)", name, count,
                 self.config.grace)
        self._shutdown_task = asyncio.ensure_future(self._shutdown())

    async def _shutdown(self) -> None:
        try:
            await self._stop_all()
            log.info("aioh2s: all workers stopped")
        finally:
            self._done.set()

    async def _stop_all(self) -> None:
        """Close every socket, stop every worker (once), wait (bounded), kill what is left."""
        self.shutting_down = True
        if self._rollout_task is not None:
            self._rollout_task.cancel()
        procs: list[Proc] = []
        for slot in self.slots:
            # Ours first: once each worker closed its own copy, the port is closed.
            slot.close_socket()
            slot.cancel_restart()
            slot.move("stop")
            procs += slot.procs()
            # A draining worker is stopping already: it keeps its grace (Proc.stop is
            # idempotent, and a second SIGTERM would change nothing in it anyway).
            for proc in slot.procs():
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
            await self._serving.wait()  # a SIGHUP during startup: once every worker serves
            while not self.shutting_down:
                stale = [s for s in self.slots if s.current is not None
                         and s.current.generation < self.generation]
                if not stale:
                    # Done once every slot serves: one may be restarting (its worker died
                    # during the rollout), and "done" would tell an operator it is not.
                    starting = [s for s in self.slots if s.state is not SlotState.SERVING]
                    if not starting:
                        break
                    ready = [asyncio.shield(s.current.ready) for s in starting
                             if s.current is not None]
                    if ready:
                        await asyncio.wait(ready, return_when=asyncio.FIRST_COMPLETED)
                    else:
                        await asyncio.sleep(RESTART_FIRST)  # (in its backoff: no worker yet)
                    continue
                slot = next((s for s in stale if s.state is SlotState.SERVING), None)
                if slot is None:
                    # Still starting (the first start, or a restart begun before the SIGHUP):
                    # replace it once it serves, or not at all if it dies.
                    await asyncio.wait([asyncio.shield(s.current.ready) for s in stale
                                        if s.current is not None],
                                       return_when=asyncio.FIRST_COMPLETED)
                    continue
                if not await self._replace(slot):
                    return
            log.info("aioh2s: rolling restart done (pids %s)", ", ".join(
                str(s.current.pid) for s in self.slots if s.current is not None))
        finally:
            self._rollout_task = None

    async def _replace(self, slot: Slot) -> bool:
        """Start a worker on the slot's socket; it takes over once it accepts (``_ready``)."""
        previous = slot.draining
        if previous is not None:
            # One draining worker per slot: the one an earlier rollout replaced goes first
            # (within its grace; _overdue kills it if it outlives that by KILL_MARGIN).
            await asyncio.shield(previous.exited)
            return True  # (the rollout looks at the slot again)
        try:
            new = self._spawn(slot)
        except OSError as e:
            log.error("aioh2s: rolling restart stopped: cannot start a new worker for slot %d: "
                      "%s; the workers go on serving", slot.index, e)
            return False
        slot.incoming = new
        slot.move("replace")
        if not await asyncio.shield(new.ready):
            log.error("aioh2s: rolling restart stopped: the new %r %s before it accepted "
                      "connections; the other workers go on serving", new,
                      describe_exit(new.exited.result() if new.exited.done() else None))
            return False
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


def _check_picklable(obj: object, what: str) -> None:
    try:
        pickle.dumps(obj)
    except (pickle.PicklingError, TypeError, AttributeError) as e:
        raise TypeError(
            f"aioh2s.serve: {what} {obj!r} cannot reach the workers, which import it by name "
            f"(they are spawned, not forked): give a top-level function or a "
            f"functools.partial of one ({e})"
        ) from None


def serve(
    handler: HandlerSpec,
    host: str | None = "127.0.0.1",
    port: int = 8000,
    *,
    workers: int = 1,
    ssl: Callable[[], _ssl.SSLContext] | None = None,
    ready: Callable[[str, int], object] | None = None,
    config: Config | None = None,
    backlog: int = 1024,
    use_uvloop: bool = False,
    start_timeout: float = 60.0,
    **options: Unpack[ConfigOptions],
) -> None:
    """Serve ``handler`` on ``host:port`` from ``workers`` processes; block until stopped.

    ``handler`` is ``"package.module:attr"`` or a top-level callable: the workers are
    spawned processes that import it (put ``serve()`` under ``if __name__ == "__main__":``
    when the handler is in the script itself), also with ``workers=1``. Each worker runs its
    own event loop (uvloop with ``use_uvloop=True``, extra ``aioh2s[uvloop]``) and its own
    :func:`start_server` with ``config``/``options`` (Config fields; ``grace`` also bounds
    the shutdown; ``first_request_wait``, unless given, is 1 s, so that a rollout serves the
    first request of a connection a worker accepted as it was told to stop). The workers
    share the port through SO_REUSEPORT, which needs Linux for ``workers > 1``; ``workers``
    is at most :data:`MAX_WORKERS`. ``host`` is one address (a name is resolved to its
    first); ``None`` or ``""`` is every interface, IPv4 and IPv6
    where the system has IPv6. ``port=0`` picks a free port: ``ready(host, port)`` is called
    (in this process) with the bound address once every worker accepts connections, and
    the INFO line "serving http://HOST:PORT with N worker(s)" names it too; if it raises,
    the exception is logged, the workers are stopped gracefully and ``serve()`` raises it.

    ``ssl`` serves TLS: a picklable callable that each worker calls to build its
    ``SSLContext`` (one cannot be pickled), such as
    ``functools.partial(aioh2s.server_ssl_context, "cert.pem", "key.pem")``.

    ``start_timeout`` (seconds, default 60) bounds each worker's start, from its spawn to
    accepting connections (the import of the handler and ``startup()`` included), at the
    first start, for a restart and in a rolling restart alike: a worker not accepting by
    then is killed (logged at ERROR) and counts as one that failed to start.

    Lifespan: if the handler object has ``async startup()`` and ``async shutdown()``
    methods, each worker awaits ``startup()`` before it accepts connections and
    ``shutdown()`` after its server closed. A ``startup()`` that raises ends that worker
    (exit code 3, logged with its traceback): at the first start ``serve()`` raises
    RuntimeError, a restart is retried with the backoff, a rolling restart stops.

    Signals: SIGTERM or SIGINT stop every worker gracefully (GOAWAY, ``grace``, then what is
    left is reset), and ``serve()`` returns once they all exited, killing any still running
    ``grace`` + 5 s later; a second SIGTERM or SIGINT to this process cuts the grace to 0.
    SIGHUP replaces the workers one by one, each only once its replacement accepts
    connections, so no request fails. A worker that dies is logged (exit code or signal)
    and restarted after a backoff (0.1 s doubling to 10 s). Logs go to the
    ``aioh2s.workers`` logger: INFO for each start and stop, WARNING for a death. Raises
    RuntimeError when the workers cannot start (their tracebacks are on stderr), OSError
    when the address cannot be bound (EADDRINUSE when another process, another ``serve()``
    too, listens on that port), ValueError/TypeError for arguments it cannot use,
    before anything starts.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or not (
        1 <= workers <= MAX_WORKERS
    ):
        raise ValueError(f"aioh2s.serve: workers must be a whole number from 1 to "
                         f"{MAX_WORKERS}, not {workers!r}")
    if host is not None and not isinstance(host, str):
        raise TypeError(f"aioh2s.serve: host must be a string or None, not {host!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"aioh2s.serve: port must be a whole number from 0 to 65535, "
                         f"not {port!r}")
    if isinstance(backlog, bool) or not isinstance(backlog, int) or backlog < 1:
        raise ValueError(f"aioh2s.serve: backlog must be a whole number >= 1, not {backlog!r}")
    if (isinstance(start_timeout, bool) or not isinstance(start_timeout, (int, float))
            or not 0 < start_timeout < math.inf):
        raise ValueError(f"aioh2s.serve: start_timeout must be a finite number of seconds "
                         f"> 0, not {start_timeout!r}")
    if ready is not None and not callable(ready):
        raise TypeError(f"aioh2s.serve: ready must be a callable, not {ready!r}")
    if ssl is not None:
        if not callable(ssl):
            raise TypeError("aioh2s.serve: ssl must be a callable that builds an SSLContext "
                            "in each worker (an SSLContext cannot be pickled), not "
                            f"{type(ssl).__name__}")
        _check_picklable(ssl, "ssl")
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
    if cfg.first_request_wait is None:
        # A rollout closes a server under load: a connection it accepted an instant ago is
        # most likely sending its first request (Config.first_request_wait).
        cfg = dataclasses.replace(cfg, first_request_wait=WORKER_FIRST_REQUEST_WAIT)
    supervisor = _Supervisor(handler, host, port, workers, cfg, backlog, use_uvloop, ssl, ready,
                             float(start_timeout))
    asyncio.run(supervisor.run())
