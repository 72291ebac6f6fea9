"""Serving at scale, side by side in one run: ASGI on aioh2s vs hypercorn vs granian, and workers.

Usage::

    python benchmarks/scale.py             # 5 repetitions, ~9 minutes on 2 cores
    python benchmarks/scale.py --quick     # 1 short repetition, a smoke check (~1 minute)
    nox -s bench_scale                     # installs hypercorn + granian in a bench-only venv

Two parts, each with its repetitions interleaved over every server (rep 1 of all, then rep 2,
...) with all servers up, so background load on a shared machine hits every row alike, and
ratios taken per repetition (medians of the per-repetition ratios, as in run.py):

* ``asgi``: the app of ``asgi_app.py`` served by aioh2s through ``aioh2s.asgi.ASGIAdapter``
  (``aioh2s_asgi_server.py``), hypercorn (``--worker-class asyncio``, h2c), granian
  (``--interface asgi --http 2``, asyncio loop), plus the native aioh2s handler
  (``aioh2s_server.py``) as the adapter's own ceiling.  h2load runs for ``--duration``
  seconds per cell: GET 5 B at ``-c 10 -m 10`` and ``-c 10 -m 100``, GET 1 MiB and POST
  1 MiB (``-d``) at ``-c 4 -m 10``.  Each server is pinned to CPU 0, h2load to CPU 1.
* ``workers``: the native handler by ``start_server`` in one process, and under
  ``aioh2s.serve(..., workers=N)`` with 1 and 2 workers pinned to CPU 0 (two workers then
  share a core: what is left is their cost), and 2 workers on both CPUs (sharing CPU 1 with
  h2load).  h2load sends ``-n`` GETs of 5 B over 16 connections (SO_REUSEPORT hashes each
  connection to a worker by its client port: with 16, all on one worker has odds of 2^-15),
  and the figure is **CPU per request**: on-CPU time of every process of the server
  (supervisor, workers, multiprocessing's helper), from ``/proc/<pid>/task/*/schedstat``,
  over the requests served.  While each run goes on, the established connections of each
  worker are counted (every 50 ms, from ``/proc/net/tcp`` and its file descriptors), and a
  run in which a worker got none is an error.  The CPU time of the processes that held no
  connection (the supervisor, multiprocessing's helper) is shown on its own.

A server that is missing (``aioh2s.asgi`` not in the tree, hypercorn or granian not
installed) shows "n/a".  An explicit ``PYTHONPATH`` comes before this tree's ``src/``, so
another tree's aioh2s can be measured with this harness.  Results:
``benchmarks/results/scale-<stamp>.{md,json}`` and ``scale-latest.{md,json}``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import functools
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from run import (
    LOAD_CPU,
    SERVER_CPU,
    Budget,
    Cell,
    _process_cpu,
    _process_tree,
    cpu_cost,
    cpu_model,
    fmt,
    free_port,
    kill,
    pinned,
    read_line,
    wait_port,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
MiB = 1 << 20

ASGI = "aioh2s-ASGI"
NATIVE = "aioh2s native handler"

# name, h2load args (no -n/-D), path, unit
ASGI_SCENARIOS: list[tuple[str, list[str], str, str]] = [
    ("GET 5 B -m 10", ["-c", "10", "-m", "10"], "/", "req/s"),
    ("GET 5 B -m 100", ["-c", "10", "-m", "100"], "/", "req/s"),
    ("GET 1 MiB", ["-c", "4", "-m", "10"], "/1m", "MB/s"),
    ("POST 1 MiB", ["-c", "4", "-m", "10", "-d", "{upload}"], "/post", "MB/s"),
]
# name, h2load args (with -n), path
WORKER_SCENARIOS: list[tuple[str, list[str], str]] = [
    ("GET 5 B -m 10", ["-c", "16", "-m", "10"], "/5"),
    ("GET 5 B -m 100", ["-c", "16", "-m", "100"], "/5"),
]
BASELINE = "start_server, 1 process"

# What every server advertises (as in run.py): 1 MiB stream window, 16 MiB connection
# window, 1000 concurrent streams.  hypercorn has no window settings; its defaults would
# GOAWAY after 1000 requests per connection and allow 100 streams.
HYPERCORN_TOML = "keep_alive_max_requests = 100000000\nh2_max_concurrent_streams = 1000\n"


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    parts = [str(HERE)]
    if env.get("PYTHONPATH"):
        parts.append(env["PYTHONPATH"])  # before src/: measure another tree's aioh2s
    parts.append(str(ROOT / "src"))
    env["PYTHONPATH"] = os.pathsep.join(parts)
    env.pop("PYTHONASYNCIODEBUG", None)
    return env


# --------------------------------------------------------------------------- servers


@dataclass
class Peer:
    """A server to start: its command for a port, and what it needs to exist."""

    name: str
    command: Callable[[Path, int], list[str]]  # (temp dir, port) -> argv
    prints_port: bool = False
    needs: str | None = None  # a module the server's Python must import
    pin: bool = True  # pinned to SERVER_CPU (else it may run on every CPU)


def _py(script: str, *extra: str) -> Callable[[Path, int], list[str]]:
    return lambda tmp, port: [sys.executable, str(HERE / script), "--port", str(port), *extra]


ASGI_PEERS = [
    Peer(ASGI, _py("aioh2s_asgi_server.py"), prints_port=True, needs="aioh2s.asgi"),
    Peer(
        "hypercorn",
        lambda tmp, port: [
            sys.executable, "-m", "hypercorn", "--worker-class", "asyncio",
            "--config", str(tmp / "hypercorn.toml"), "--bind", f"127.0.0.1:{port}",
            "asgi_app:app",
        ],
        needs="hypercorn",
    ),
    Peer(
        "granian",
        lambda tmp, port: [
            sys.executable, "-m", "granian", "--interface", "asgi", "--http", "2",
            "--loop", "asyncio", "--workers", "1", "--host", "127.0.0.1", "--port", str(port),
            "--no-access-log", "--log-level", "warning",
            "--http2-max-concurrent-streams", "1000",
            "--http2-initial-stream-window-size", str(MiB),
            "--http2-initial-connection-window-size", str(16 * MiB),
            "asgi_app:app",
        ],
        needs="granian",
    ),
    Peer(NATIVE, _py("aioh2s_server.py"), prints_port=True),
]  # fmt: skip

WORKER_PEERS = [
    Peer(BASELINE, _py("aioh2s_server.py"), prints_port=True),
    Peer("serve, workers=1", _py("aioh2s_server.py", "--workers", "1")),
    Peer("serve, workers=2", _py("aioh2s_server.py", "--workers", "2")),
    Peer("serve, workers=2, on both CPUs", _py("aioh2s_server.py", "--workers", "2"), pin=False),
]


def importable(module: str) -> bool:
    """Whether the servers' Python (with their PYTHONPATH) imports ``module``."""
    out = subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        capture_output=True, env=child_env(), cwd=HERE, timeout=60, check=False,
    )  # fmt: skip
    return out.returncode == 0


@dataclass
class Running:
    port: int
    pid: int


@contextlib.contextmanager
def started(peer: Peer, tmp: Path, verbose: bool) -> Iterator[Running]:
    """Start a server in its own session; yield its port and pid; always kill it."""
    port = 0 if peer.prints_port else free_port()
    cmd = peer.command(tmp, port)
    if peer.pin:
        cmd = pinned(SERVER_CPU, cmd)
    errf = tempfile.TemporaryFile("w+")  # a file, not a pipe: a chatty server never blocks
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE if peer.prints_port else subprocess.DEVNULL,
        stderr=errf, text=True, env=child_env(), cwd=HERE, start_new_session=True,
    )  # fmt: skip
    try:
        if peer.prints_port:
            line = read_line(proc, 30)
            if not line.startswith("LISTENING "):
                raise RuntimeError(f"{peer.name}: no LISTENING line ({line!r})")
            port = int(line.split()[1])
        if not wait_port(port, 30):
            raise RuntimeError(f"{peer.name}: port {port} not open")
        yield Running(port, proc.pid)
        if proc.poll() is not None:
            raise RuntimeError(f"{peer.name} exited with {proc.returncode}")
    finally:
        kill(proc)
        errf.seek(0)
        err = errf.read().strip()
        errf.close()
        if err and verbose:
            print(f"  [{peer.name} stderr] {err[-800:]}", file=sys.stderr)


def cpu_by_pid(root: int) -> dict[int, float]:
    """On-CPU seconds so far of ``root`` and each of its descendants."""
    out = {}
    for pid in _process_tree(root):
        with contextlib.suppress(OSError):  # exited since the scan
            out[pid] = _process_cpu(pid)
    return out


def connections_by_pid(pids: list[int], port: int) -> dict[int, int]:
    """Established TCP connections on local ``port`` held by each of ``pids``."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            next(f)
            for line in f:
                cols = line.split()
                # local address "HEX_IP:HEX_PORT", state 01 = ESTABLISHED, inode column 9
                if cols[3] == "01" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(cols[9])
    out: dict[int, int] = {}
    for pid in pids:
        n = 0
        with contextlib.suppress(OSError):
            for fd in os.scandir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    link = os.readlink(fd.path)
                    if link.startswith("socket:[") and link[8:-1] in inodes:
                        n += 1
        if n:
            out[pid] = n
    return out


# --------------------------------------------------------------------------- h2load

_FINISHED = re.compile(r"finished in ([\d.]+)(us|ms|s),")
_REQUESTS = re.compile(
    r"requests: \d+ total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed"
)
_STATUS = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")


@dataclass
class H2loadResult:
    seconds: float
    started: int
    done: int
    succeeded: int
    failed: int
    not_2xx: int


def parse_h2load(stdout: str) -> H2loadResult:
    """The numbers of an h2load report; RuntimeError if it has none."""
    m, r, s = _FINISHED.search(stdout), _REQUESTS.search(stdout), _STATUS.search(stdout)
    if not m or not r or not s:
        raise RuntimeError(f"h2load output not understood: {stdout[-500:]}")
    secs = float(m.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[m.group(2)]
    started, done, ok, failed = (int(g) for g in r.groups())
    # Status codes are counted as responses start: with -D, also for requests the end of
    # the duration cut off (not "done"), so only the other classes are checked.
    return H2loadResult(secs, started, done, ok, failed, sum(int(g) for g in s.groups()[1:]))


def h2load(
    args: list[str], url: str, timeout: float, watch: Callable[[], dict[int, int]] | None = None
) -> tuple[H2loadResult, dict[int, int]]:
    """Run h2load on the load CPU; also the largest of ``watch()``'s counts while it ran.

    ``watch`` is called every 50 ms (connections per process): h2load closes a connection
    once its share of ``-n`` is done, so a single late look could miss some.
    """
    # -N: a server that stalls fails in 10 s instead of eating the suite's budget.
    cmd = pinned(LOAD_CPU, ["h2load", "-N", "10s", *args, url])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: dict[int, int] = {}
    try:
        deadline = time.monotonic() + timeout
        while watch is not None and proc.poll() is None and time.monotonic() < deadline:
            now = watch()
            if sum(now.values()) > sum(seen.values()):
                seen = now
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(0.05)
        out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    res = parse_h2load(out)
    if res.failed or res.succeeded != res.done or res.not_2xx or not res.done:
        raise RuntimeError(
            f"{res.done} done, {res.succeeded} succeeded, {res.not_2xx} not 2xx,"
            f" {res.failed} failed {err.strip()[-200:]}"
        )
    return res, seen


# --------------------------------------------------------------------------- the two parts


def bench_asgi(
    tmp: Path, reps: int, duration: float, budget: Budget, verbose: bool
) -> dict[str, dict[str, Cell]]:
    upload = tmp / "upload.bin"
    table: dict[str, dict[str, Cell]] = {}
    running: dict[str, Running] = {}
    with contextlib.ExitStack() as stack:
        for peer in ASGI_PEERS:
            row = table[peer.name] = {n: Cell() for n, *_ in ASGI_SCENARIOS}
            try:
                if peer.needs and not importable(peer.needs):
                    raise RuntimeError(f"{peer.needs} not importable")
                srv = running[peer.name] = stack.enter_context(started(peer, tmp, verbose))
                # Warm-up: imports, first connections, allocator.
                h2load(["-n", "500", "-c", "4", "-m", "10"], url(srv.port, "/"), 30)
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                running.pop(peer.name, None)
                for cell in row.values():
                    cell.error = str(e)[:200]
                print(f"server {peer.name}: {e}", flush=True)
        for rep in range(reps):
            for name, raw_args, path, unit in ASGI_SCENARIOS:
                args = ["-D", f"{duration:g}", *(a.format(upload=upload) for a in raw_args)]
                for sname, srv in running.items():
                    cell = table[sname][name]
                    if cell.error:
                        continue
                    if budget.left() < duration + 20:
                        cell.error = "skipped: suite budget"
                        continue
                    try:
                        cpu0 = sum(cpu_by_pid(srv.pid).values())
                        res, _ = h2load(args, url(srv.port, path), duration + 30)
                        cpu1 = sum(cpu_by_pid(srv.pid).values())
                    except (RuntimeError, subprocess.TimeoutExpired) as e:
                        cell.error = str(e)[:200]
                        continue
                    # The end of -D cuts off up to c*m requests that were sent and partly
                    # served (h2 parses a batch of requests as it arrives): for the CPU
                    # figure each counts as half a request, whatever the server's speed.
                    work = res.done if unit == "req/s" else res.done * MiB / 1e6
                    charged = (res.done + res.started) / 2
                    cpu = (cpu1 - cpu0) * res.done / charged
                    line = cell.add(work, res.seconds, cpu, unit)
                    print(f"  [{rep + 1}/{reps}] {sname} / {name}: {line}", flush=True)
    return table


@dataclass
class WorkerCell(Cell):
    # Per run: established connections and CPU seconds per process that served any...
    spread: list[dict[str, list[float]]] = field(default_factory=list)
    # ...and the CPU seconds of the others (the supervisor, multiprocessing's helper).
    overhead: list[float] = field(default_factory=list)


def bench_workers(
    tmp: Path, reps: int, requests: int, budget: Budget, verbose: bool
) -> dict[str, dict[str, WorkerCell]]:
    table: dict[str, dict[str, WorkerCell]] = {}
    running: dict[str, Running] = {}
    with contextlib.ExitStack() as stack:
        for peer in WORKER_PEERS:
            row = table[peer.name] = {n: WorkerCell() for n, *_ in WORKER_SCENARIOS}
            try:
                srv = running[peer.name] = stack.enter_context(started(peer, tmp, verbose))
                h2load(["-n", "2000", "-c", "16", "-m", "10"], url(srv.port, "/5"), 30)
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                running.pop(peer.name, None)
                for cell in row.values():
                    cell.error = str(e)[:200]
                print(f"server {peer.name}: {e}", flush=True)
        for rep in range(reps):
            for name, raw_args, path in WORKER_SCENARIOS:
                args = ["-n", str(requests), *raw_args]
                for sname, srv in running.items():
                    cell = table[sname][name]
                    if cell.error:
                        continue
                    if budget.left() < 30:
                        cell.error = "skipped: suite budget"
                        continue
                    try:
                        cpu0 = cpu_by_pid(srv.pid)
                        # The tree once, not every 50 ms: the scan of /proc is not free, and
                        # the harness may share a CPU with the server.
                        watch = functools.partial(connections_by_pid, list(cpu0), srv.port)
                        res, conns = h2load(args, url(srv.port, path), 60, watch)
                        cpu1 = cpu_by_pid(srv.pid)
                    except (RuntimeError, subprocess.TimeoutExpired) as e:
                        cell.error = str(e)[:200]
                        continue
                    line = cell.add(res.done, res.seconds, sum(cpu1.values()) - sum(cpu0.values()),
                                    "req/s")  # fmt: skip
                    spread = {
                        str(pid): [n, cpu1.get(pid, 0.0) - cpu0.get(pid, 0.0)]
                        for pid, n in sorted(conns.items())
                    }
                    cell.spread.append(spread)
                    cell.overhead.append(
                        sum(t - cpu0.get(pid, 0.0) for pid, t in cpu1.items() if pid not in conns)
                    )
                    want = 2 if "workers=2" in sname else 1
                    per = "+".join(str(v[0]) for v in spread.values())
                    line += f", connections per process {per}"
                    print(f"  [{rep + 1}/{reps}] {sname} / {name}: {line}", flush=True)
                    if len(spread) != want:
                        cell.error = f"{len(spread)} processes had connections, not {want}"
    return table


def url(port: int, path: str) -> str:
    return f"http://127.0.0.1:{port}{path}"


# --------------------------------------------------------------------------- report


def paired(a: Cell, b: Cell) -> tuple[float, float] | None:
    """(median of per-repetition ratios a/b, best over best), or None."""
    ratio, best = a.ratio_to(b), a.best_ratio_to(b)
    return None if ratio is None or best is None else (ratio, best)


def render_asgi(table: dict[str, dict[str, Cell]]) -> list[str]:
    cols = [(n, u) for n, _a, _p, u in ASGI_SCENARIOS]
    lines = ["| ASGI app, driven by h2load | " + " | ".join(f"{c} ({u})" for c, u in cols) + " |"]
    lines.append("|---" * (len(cols) + 1) + "|")
    for name, row in table.items():
        cells = []
        for c, u in cols:
            cell = row[c]
            if cell.median is None:
                cells.append(f"n/a ({cell.error})" if cell.error else "-")
                continue
            s = fmt(cell.median)
            if cell.cpu_median:
                s += f" (CPU {cpu_cost(cell.cpu_median, u)})"
            cells.append(s + (f" [{cell.error}]" if cell.error else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for other in ("hypercorn", "granian", NATIVE):
        cells = []
        for c, _u in cols:
            a, b = table[ASGI][c], table[other][c] if other in table else Cell()
            r, per_cpu = paired(a, b), cpu_ratio(b, a)
            s = f"**{r[0]:.2f}x** (best {r[1]:.2f}x" if r else "n/a"
            if r and per_cpu is not None:
                s += f"; per CPU-second {per_cpu:.2f}x"
            cells.append(s + ")" if r else s)
        lines.append(f"| {ASGI} / {other} | " + " | ".join(cells) + " |")
    return lines


def cpu_ratio(cell: Cell, base: Cell) -> float | None:
    """Median of per-repetition ratios of CPU per request (or MB), cell over base.

    Equally: base's work per CPU-second over cell's.
    """
    if not cell.cpu_values or len(cell.cpu_values) != len(base.cpu_values):
        return None
    return statistics.median(b / v for v, b in zip(cell.cpu_values, base.cpu_values, strict=True))


def render_workers(table: dict[str, dict[str, WorkerCell]], requests: int) -> list[str]:
    cols = [n for n, *_ in WORKER_SCENARIOS]
    lines = [
        f"| native handler, h2load -n {requests} -c 16 | "
        + " | ".join(f"{c}: req/s | {c}: CPU per request (vs 1 process)" for c in cols)
        + " | connections per worker (first run) | supervisor's CPU per run |"
    ]
    lines.append("|---" * (2 * len(cols) + 3) + "|")
    for name, row in table.items():
        cells = []
        for c in cols:
            cell, base = row[c], table[BASELINE][c]
            if cell.median is None:
                cells += [f"n/a ({cell.error})" if cell.error else "-", ""]
                continue
            cells.append(fmt(cell.median) + (f" [{cell.error}]" if cell.error else ""))
            cost = cpu_cost(cell.cpu_median, "req/s") if cell.cpu_median else "-"
            r = cpu_ratio(cell, base)
            cells.append(cost + (f" (**{r:.2f}x**)" if r is not None and name != BASELINE else ""))
        first = next((c.spread[0] for c in row.values() if c.spread), {})
        share = " + ".join(f"{int(v[0])} ({v[1]:.1f} s CPU)" for v in first.values())
        over = [t for c in row.values() for t in c.overhead]
        sup = f"{statistics.median(over) * 1e3:.1f} ms" if over and name != BASELINE else "-"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {share or '-'} | {sup} |")
    return lines


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for mod in ("h2", "hypercorn", "granian"):
        with contextlib.suppress(PackageNotFoundError):
            out[mod] = version(mod)
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        out["aioh2s"] = subprocess.run(
            [sys.executable, "-c", "import aioh2s; print(aioh2s.__file__)"],
            capture_output=True, text=True, env=child_env(), cwd=HERE, timeout=30, check=False,
        ).stdout.strip()  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--reps", type=int, default=5, help="repetitions (median)")
    p.add_argument("--quick", action="store_true", help="1 repetition, 2 s cells, 5000 requests")
    p.add_argument("--duration", type=float, default=3.0, help="seconds per ASGI cell")
    p.add_argument("--requests", type=int, default=20000, help="requests per workers cell")
    p.add_argument("--budget", type=float, default=570, help="suite deadline, seconds")
    p.add_argument("--skip", action="append", default=[], choices=["asgi", "workers"])
    p.add_argument("--verbose", action="store_true", help="show server stderr")
    args = p.parse_args(argv)
    if args.quick:
        args.reps, args.duration, args.requests = 1, 2.0, 5000
    if not shutil.which("h2load"):
        print("h2load not found (Debian: apt-get install nghttp2-client)", file=sys.stderr)
        return 2
    budget = Budget(args.budget)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="aioh2s-scale-") as tmp:
        tmpd = Path(tmp)
        (tmpd / "upload.bin").write_bytes(os.urandom(MiB))
        (tmpd / "hypercorn.toml").write_text(HYPERCORN_TOML)
        asgi = {} if "asgi" in args.skip else bench_asgi(
            tmpd, args.reps, args.duration, budget, args.verbose
        )
        workers = {} if "workers" in args.skip else bench_workers(
            tmpd, args.reps, args.requests, budget, args.verbose
        )
    elapsed = time.monotonic() - t0
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    env = {"cpu": cpu_model(), "cores": os.cpu_count(), **versions()}
    md = [
        f"## aioh2s at scale: ASGI and workers ({stamp})",
        "",
        f"{env['cpu']}, {env['cores']} cores; Python {env['python']}, h2 {env.get('h2')}, "
        f"hypercorn {env.get('hypercorn')}, granian {env.get('granian')}; "
        f"{'median of ' + str(args.reps) if args.reps > 1 else '1 repetition'}; "
        f"took {elapsed:.0f} s. Ratios in bold: median of the per-repetition ratios (each pair "
        "ran back to back); best: best run over the other's best run.",
        "",
    ]
    if asgi:
        md += [f"ASGI: h2load -D {args.duration:g} per cell; server on CPU 0, h2load on CPU 1.", ""]
        md += render_asgi(asgi) + [""]
    if workers:
        md += [
            "Workers: CPU per request is the on-CPU time of all the server's processes over the"
            " requests; the ratio is to the one-process server in the same repetition.",
            "",
        ]
        md += render_workers(workers, args.requests) + [""]
    text = "\n".join(md)

    def cells(table: dict[str, dict[str, Any]]) -> dict[str, Any]:
        return {
            n: {c: vars(cell) | {"median": cell.median, "cpu_median": cell.cpu_median}
                for c, cell in row.items()}
            for n, row in table.items()
        }  # fmt: skip

    data = {
        "stamp": stamp, "reps": args.reps, "duration_s": args.duration,
        "requests": args.requests, "elapsed_s": elapsed, "env": env,
        "asgi": cells(asgi), "workers": cells(workers),
    }  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    for name in (f"scale-{stamp}", "scale-latest"):
        (RESULTS / f"{name}.md").write_text(text + "\n")
        (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    print()
    print(text)
    print(f"written: {RESULTS / f'scale-{stamp}.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
