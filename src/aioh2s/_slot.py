"""The supervisor's bookkeeping (:mod:`aioh2s.workers`): worker processes and slots.

Theory of operation
-------------------
A *slot* is one of the N places of the SO_REUSEPORT group: the listening socket the
supervisor binds for it, and the worker processes serving it. A slot owns at most one
*current* worker (serving, or starting to), at most one *incoming* worker (a rolling
restart's replacement, while it starts) and at most one *draining* worker (the one a
replacement took over from, finishing its requests). Its state says which of those exist,
and every change goes through :meth:`Slot.move`, which refuses one that ``SLOT_MOVES`` (the
table below, h11 style) does not list: a bug then raises instead of leaving a worker the
supervisor does not know about.

============  ==========================================  ===========================
state          current / incoming                          events that leave it
============  ==========================================  ===========================
STARTING      current starting, no incoming                ready, died, stop
SERVING       current accepting, no incoming                died, replace, stop
REPLACING     current accepting, incoming starting          took_over, incoming_died,
                                                             died, stop
BACKOFF       neither (restart timer armed)                 start, stop
STOPPED       neither (shutting down)                       —
============  ==========================================  ===========================

``died`` in REPLACING is the old worker dying while its replacement starts: the
replacement becomes the slot's current worker (STARTING) and no restart is scheduled,
so the slot never gets a second worker. The draining worker is outside the states: it only
ever exits, and a slot gets a new one only once the last has (the rolling restart waits).
:class:`Proc` is one worker process as the supervisor sees it: its readiness (one message on
its pipe, within ``serve(start_timeout=...)``), its exit (on Linux a pidfd, elsewhere the
process sentinel, watched by the event loop; then what it left in its process group is
killed), and whether it was asked to stop (then its exit is no crash). The sentinel alone
is not enough: children the worker *forked* (a fork-context ProcessPoolExecutor) inherit
its end of the sentinel pipe, which then stays open after the worker died.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import signal
import socket
from collections.abc import Callable
from multiprocessing.connection import Connection as Pipe
from multiprocessing.process import BaseProcess

from ._worker import READY

__all__ = ["SLOT_MOVES", "Proc", "Slot", "SlotState", "describe_exit"]

log = logging.getLogger("aioh2s.workers")


class SlotState(enum.Enum):
    """Which workers a slot has (see the module docstring's table)."""

    STARTING = "starting"
    SERVING = "serving"
    REPLACING = "replacing"
    BACKOFF = "waiting to restart"
    STOPPED = "stopped"


S = SlotState
#: state -> {event: next state}.
SLOT_MOVES: dict[SlotState, dict[str, SlotState]] = {
    S.STARTING: {"ready": S.SERVING, "died": S.BACKOFF, "stop": S.STOPPED},
    S.SERVING: {"died": S.BACKOFF, "replace": S.REPLACING, "stop": S.STOPPED},
    S.REPLACING: {"took_over": S.SERVING, "incoming_died": S.SERVING, "died": S.STARTING,
                  "stop": S.STOPPED},
    S.BACKOFF: {"start": S.STARTING, "stop": S.STOPPED},
    S.STOPPED: {"stop": S.STOPPED},
}
del S


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


def _group_size(pgid: int) -> int:
    """How many processes are in group ``pgid`` (Linux's /proc; 0 where unknown)."""
    count = 0
    try:
        entries = os.listdir("/proc")
    except OSError:
        return 0
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rpartition(b")")[2].split()
        except OSError:
            continue
        if len(fields) > 2 and fields[2] == str(pgid).encode():
            count += 1
    return count


def _pidfd(pid: int | None) -> int | None:
    """A pidfd for ``pid`` (readable once it exited), or None where there is none."""
    opener = getattr(os, "pidfd_open", None)  # Linux 5.3+, Python 3.9+
    if opener is None or pid is None:
        return None
    try:
        return int(opener(pid))
    except OSError:
        return None  # an older kernel, or seccomp: the sentinel it is


class Proc:
    """One worker process as the supervisor sees it: readiness, exit, who it replaces."""

    def __init__(self, process: BaseProcess, pipe: Pipe, slot: Slot, generation: int,
                 on_exit: Callable[[Proc], None], start_timeout: float) -> None:
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
        self._pidfd = _pidfd(process.pid)
        self._watched = process.sentinel if self._pidfd is None else self._pidfd
        self.loop.add_reader(self._watched, self._ended)
        self.loop.add_reader(pipe.fileno(), self._message)
        #: Killed if not accepting connections by then (``serve(start_timeout=...)``).
        self.start_timeout = start_timeout
        self._ready_timer = self.loop.call_later(start_timeout, self._not_ready)

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
        log.error("aioh2s: %r is not accepting connections %g s after it started (the "
                  "start_timeout); killing it", self, self.start_timeout)
        self.kill()

    def _ended(self) -> None:
        self.loop.remove_reader(self._watched)
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        if not self.pipe.closed:
            self.loop.remove_reader(self.pipe.fileno())
            self.pipe.close()
        self._ready_timer.cancel()
        # It has exited: exitcode reaps it (waitpid) without waiting on the sentinel, which
        # its forked children may hold open; join() then only forgets it.
        if self.process.exitcode is None:
            self.process.join(5)
        self._clear_group()
        self.process.join(0)
        if not self.ready.done():
            self.ready.set_result(False)
        self.exited.set_result(self.process.exitcode)
        self._on_exit(self)

    def _clear_group(self) -> None:
        """Kill what the worker left in its process group (pool processes, say).

        The worker leads a group of its own (:mod:`aioh2s._worker`), whose id is its pid; a
        group's id is not reused while the group has a member, so this hits only its
        leftovers. After a clean exit the ones left are only helpers on their way out
        (multiprocessing's resource tracker, say): not worth a warning.
        """
        if self.pid is None:
            return  # never started: killpg(0) would be the supervisor's own group
        pgid = self.pid
        try:
            os.killpg(pgid, 0)
        except OSError:
            return  # nothing left (or the worker never had its group)
        count = _group_size(pgid)
        try:
            os.killpg(pgid, signal.SIGKILL)
        except OSError:
            return
        code = self.process.exitcode
        log.log(logging.INFO if code == 0 else logging.WARNING,
                "aioh2s: %r %s and left %s process(es) in its process group: killed them",
                self, describe_exit(code), count if count else "some")

    def signal(self, signum: int) -> None:
        """Send ``signum`` unless the process is known to have exited."""
        if self.exited.done():
            return
        try:
            os.kill(self.process.pid or 0, signum)
        except ProcessLookupError:
            pass  # exited; _ended is on its way

    def stop(self) -> None:
        """Ask for a graceful close, once: a worker that is stopping keeps its grace."""
        if not self.stopping:
            self.stopping = True
            self.signal(signal.SIGTERM)

    def hurry(self) -> None:
        """Ask for the close to skip what is left of the grace (SIGQUIT to the worker)."""
        self.stopping = True
        self.signal(signal.SIGQUIT)

    def kill(self) -> None:
        """SIGKILL."""
        self.signal(signal.SIGKILL)


class Slot:
    """One of the N places of the SO_REUSEPORT group: its socket, its workers, its state."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.state = SlotState.BACKOFF  # (the supervisor starts it at once)
        self.sock: socket.socket | None = None
        self.current: Proc | None = None
        self.incoming: Proc | None = None
        self.draining: Proc | None = None
        self.failures = 0  # in a row, for the backoff
        self.restart: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return f"slot {self.index} ({self.state.value})"

    def move(self, event: str) -> SlotState:
        """Take the move ``SLOT_MOVES`` lists for ``event``; anything else is a bug."""
        new = SLOT_MOVES[self.state].get(event)
        if new is None:
            raise RuntimeError(f"aioh2s bug: {self!r} has no move for {event!r}")
        self.state = new
        return new

    def close_socket(self) -> None:
        """Close the supervisor's copy of the slot's listening socket."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def cancel_restart(self) -> None:
        """Disarm the restart timer."""
        if self.restart is not None:
            self.restart.cancel()
            self.restart = None

    def procs(self) -> list[Proc]:
        """Its live workers: current, incoming, draining."""
        return [p for p in (self.current, self.incoming, self.draining)
                if p is not None and not p.exited.done()]
