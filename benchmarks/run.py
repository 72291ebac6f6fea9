"""aioh2s benchmark suite: aioh2s vs the raw-h2 ceiling vs hypercorn / httpx / nghttp2.

Usage::

    python benchmarks/run.py            # 5 repetitions, ~8 minutes on 2 cores
    python benchmarks/run.py --quick    # 1 repetition
    nox -s bench                        # installs hypercorn + httpx in a bench-only venv

What runs (all on 127.0.0.1, h2c prior knowledge):

* Servers, driven by ``h2load`` (server pinned with ``taskset -c 0``, load on CPU 1):
  GET 5 B ``-n 20000 -c 4 -m 10`` and ``-m 100``; GET 1 MiB ``-n 500 -c 4 -m 10``; POST
  1 MiB upload ``-n 500 -c 4 -m 10 -d FILE``.  Servers: aioh2s, the raw-h2 ceiling
  (stock h2, and with ``aioh2s._h2patch``), hypercorn, and nghttpd as the C reference.
* Clients against ``nghttpd`` (one connection): 5000 GETs one at a time, 5000 GETs 50 at
  a time, one 100 MiB download.  Clients: aioh2s, the raw-h2 ceiling (stock and
  patched), httpx (``http1=False, http2=True``).
* Memory (``memory.py``): bytes per idle open stream (10,000 on one connection) and per
  idle connection (1,000), for the aioh2s and raw servers.

Every child process has a timeout and is killed at the end; a suite deadline skips what
is left after ``--budget`` seconds.  Results: ``benchmarks/results/<stamp>.{md,json}`` and
``latest.{md,json}`` (the folder is git-ignored).  The headline is each number's ratio to
the stock raw-h2 ceiling measured in the same run.  Next to it: work per CPU-second of the
process under test (the server, or the client), also as a ratio to the ceiling; CPU time
leaves out waiting for a CPU held by other processes or for a slow peer.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import importlib.util
import json
import os
import platform
import re
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
MiB = 1 << 20

SERVER_CPU = "0"
LOAD_CPU = "1"

# name, h2load args, path, unit
SERVER_SCENARIOS: list[tuple[str, list[str], str, str]] = [
    ("GET 5 B -m 10", ["-n", "20000", "-c", "4", "-m", "10"], "/5", "req/s"),
    ("GET 5 B -m 100", ["-n", "20000", "-c", "4", "-m", "100"], "/5", "req/s"),
    ("GET 1 MiB", ["-n", "500", "-c", "4", "-m", "10"], "/1m", "MB/s"),
    ("POST 1 MiB", ["-n", "500", "-c", "4", "-m", "10", "-d", "{upload}"], "/up", "MB/s"),
]

# name, client args, unit
CLIENT_SCENARIOS: list[tuple[str, list[str], str]] = [
    ("5000 GET, 1 at a time", ["-n", "5000", "-c", "1", "--path", "/5"], "req/s"),
    ("5000 GET, 50 at a time", ["-n", "5000", "-c", "50", "--path", "/5"], "req/s"),
    ("100 MiB download", ["-n", "1", "-c", "1", "--path", "/100m"], "MB/s"),
]

CEILING = "raw h2 (ceiling)"


# --------------------------------------------------------------------------- processes


def has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    # The benchmarks import each other (raw_h2_server.BODY_1M) and, from a clean clone,
    # aioh2s from src/.
    parts = [str(HERE), str(ROOT / "src")]
    if env.get("PYTHONPATH"):
        parts.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(parts)
    env.pop("PYTHONASYNCIODEBUG", None)
    return env


def pinned(cpu: str, cmd: list[str]) -> list[str]:
    if shutil.which("taskset") and len(os.sched_getaffinity(0)) > 1:
        return ["taskset", "-c", cpu, *cmd]
    return cmd


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return True
        time.sleep(0.05)
    return False


def read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    ready = sel.select(timeout)
    sel.close()
    return proc.stdout.readline().strip() if ready else ""


def kill(proc: subprocess.Popen[Any]) -> None:
    """End a child we started (its own process group: taskset/timeout wrappers too)."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, 15)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        proc.wait(5)


# schedstat counts on-CPU ns per thread; stat's utime+stime come in clock ticks (10 ms),
# coarse next to a 1-3 s run.  One source for the whole suite, so deltas never mix them.
_SCHEDSTAT = os.path.exists("/proc/self/schedstat")


def _process_tree(pid: int) -> list[int]:
    """pid and its descendants: hypercorn serves from a worker process it spawns."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = Path(entry.path, "stat").read_text()
                # The command name (field 2) may hold spaces or ')': split after the last ')'.
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, ()))
    return tree


def _process_cpu(pid: int) -> float:
    if _SCHEDSTAT:
        ns = 0
        for task in os.scandir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):  # a thread that just ended
                ns += int(Path(task.path, "schedstat").read_text().split()[0])
        return ns / 1e9
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float | None:
    """CPU seconds used so far by pid and its descendants (all threads); None without /proc."""
    try:
        tree = _process_tree(pid)
    except OSError:
        return None
    total = 0.0
    for p in tree:
        with contextlib.suppress(OSError):  # exited since the scan
            total += _process_cpu(p)
    return total


@dataclass
class Running:
    """A started server: where to connect, and which process tree to charge CPU to."""

    port: int
    pid: int


@contextlib.contextmanager
def server(spec: ServerSpec, ctx: Context) -> Iterator[Running]:
    """Start a server pinned to the server CPU; yield its port and pid; always kill it.

    taskset execs the command, so proc.pid is the server itself.
    """
    port = 0 if spec.prints_port else free_port()
    cmd = pinned(SERVER_CPU, spec.command(ctx, port))
    # stderr to a file, not a pipe: a chatty server must not block on a full pipe.
    errf = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE if spec.prints_port else subprocess.DEVNULL,
        stderr=errf,
        text=True,
        env=child_env(),
        cwd=HERE,
        start_new_session=True,
    )
    try:
        if spec.prints_port:
            line = read_line(proc, 20)
            if not line.startswith("LISTENING "):
                raise RuntimeError(f"{spec.name}: no LISTENING line ({line!r})")
            port = int(line.split()[1])
        if not wait_port(port, 20):
            raise RuntimeError(f"{spec.name}: port {port} not open")
        yield Running(port, proc.pid)
        if proc.poll() is not None:
            raise RuntimeError(f"{spec.name} exited with {proc.returncode}")
    finally:
        kill(proc)
        errf.seek(0)
        err = errf.read()
        errf.close()
        if err.strip() and ctx.verbose:
            print(f"  [{spec.name} stderr] {err.strip()[-800:]}", file=sys.stderr)


# --------------------------------------------------------------------------- specs


@dataclass
class Context:
    docroot: Path
    upload: Path
    hypercorn_cfg: Path
    verbose: bool = False


@dataclass
class ServerSpec:
    name: str
    command: Callable[[Context, int], list[str]]
    prints_port: bool
    needs: str | None = None
    note: str = ""


def _py(script: str, *extra: str) -> Callable[[Context, int], list[str]]:
    def cmd(ctx: Context, port: int) -> list[str]:
        return [sys.executable, str(HERE / script), "--port", str(port), *extra]

    return cmd


SERVERS = [
    ServerSpec("aioh2s", _py("aioh2s_server.py"), True),
    ServerSpec(CEILING, _py("raw_h2_server.py"), True),
    ServerSpec("raw h2 + _h2patch", _py("raw_h2_server.py", "--h2patch"), True),
    ServerSpec(
        "hypercorn",
        lambda ctx, port: [
            sys.executable, "-m", "hypercorn", "--config", str(ctx.hypercorn_cfg),
            "--bind", f"127.0.0.1:{port}", "hypercorn_app:app",
        ],
        False,
        needs="hypercorn",
    ),
    ServerSpec(
        "nghttpd (C)",
        lambda ctx, port: [
            "nghttpd", "--no-tls", "-a", "127.0.0.1", "-w", "20", "-W", "24",
            "-d", str(ctx.docroot), str(port),
        ],
        False,
        needs="nghttpd",
    ),
]  # fmt: skip


@dataclass
class ClientSpec:
    name: str
    command: list[str]
    needs: str | None = None


CLIENTS = [
    ClientSpec("aioh2s", [sys.executable, str(HERE / "aioh2s_client.py")]),
    ClientSpec(CEILING, [sys.executable, str(HERE / "raw_h2_client.py")]),
    ClientSpec("raw h2 + _h2patch", [sys.executable, str(HERE / "raw_h2_client.py"), "--h2patch"]),
    ClientSpec("httpx", [sys.executable, str(HERE / "httpx_client.py")], needs="httpx"),
]


# --------------------------------------------------------------------------- measuring

_FINISHED = re.compile(r"finished in ([\d.]+)(us|ms|s),")
_REQUESTS = re.compile(
    r"requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed"
)


def run_h2load(args: list[str], url: str, timeout: float) -> tuple[float, int, int]:
    """Run h2load on the load CPU; return (seconds, succeeded, failed)."""
    # -N: a server that stalls fails in 10 s instead of eating the suite's budget.
    cmd = pinned(LOAD_CPU, ["h2load", "-N", "10s", *args, url])
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    m = _FINISHED.search(out.stdout)
    r = _REQUESTS.search(out.stdout)
    if not m or not r:
        raise RuntimeError(f"h2load output not understood: {out.stdout[-500:]} {out.stderr[-300:]}")
    secs = float(m.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[m.group(2)]
    return secs, int(r.group(2)), int(r.group(3))


def run_client(cmd: list[str], port: int, args: list[str], timeout: float) -> dict[str, Any]:
    full = pinned(LOAD_CPU, [*cmd, "--port", str(port), *args, "--timeout", str(timeout)])
    out = subprocess.run(
        full, capture_output=True, text=True, timeout=timeout + 10, env=child_env(), check=False
    )
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"client failed ({out.returncode}): {out.stderr.strip()[-500:]}")
    res: dict[str, Any] = json.loads(lines[-1])
    return res


@dataclass
class Cell:
    values: list[float] = field(default_factory=list)
    # Work per CPU-second of the process under test, in the unit of `values` (req, MB).
    cpu_values: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None

    @property
    def cpu_median(self) -> float | None:
        return statistics.median(self.cpu_values) if self.cpu_values else None

    def ratio_to(self, base: Cell) -> float | None:
        """Median of per-repetition ratios to ``base`` (the ceiling's run of the same rep).

        Repetitions are interleaved, so each pair ran seconds apart under the same background
        load; on a shared VM whose speed drifts by tens of percent over minutes this is
        steadier than a ratio of two medians.
        """
        if not self.values or not base.values:
            return None
        if len(self.values) == len(base.values):
            return statistics.median(v / b for v, b in zip(self.values, base.values, strict=True))
        return statistics.median(self.values) / statistics.median(base.values)

    def best_ratio_to(self, base: Cell) -> float | None:
        """Best run over the ceiling's best run (noise only ever slows a run down)."""
        if not self.values or not base.values:
            return None
        return max(self.values) / max(base.values)

    def add(self, work: float, seconds: float, cpu_seconds: float | None, unit: str) -> str:
        """Record one run; return it as a progress line."""
        self.values.append(work / seconds)
        line = f"{fmt(self.values[-1])} {unit}"
        # Under the 10 ms tick fallback a short run can read as 0 s: no CPU value then.
        if cpu_seconds:
            self.cpu_values.append(work / cpu_seconds)
            line += f", CPU {cpu_cost(self.cpu_values[-1], unit)}"
        return line


class Budget:
    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()


def bench_servers(
    ctx: Context, reps: int, budget: Budget, only: set[str] | None
) -> dict[str, dict[str, Cell]]:
    """All servers stay up (idle ones cost nothing); repetitions go round-robin over them.

    Interleaving spreads any background noise over every row, so the ratios (the headline)
    stay fair on a shared machine.
    """
    table: dict[str, dict[str, Cell]] = {}
    running: dict[str, Running] = {}
    with contextlib.ExitStack() as stack:
        for spec in SERVERS:
            if only and spec.name not in only:
                continue
            row = table.setdefault(spec.name, {n: Cell() for n, *_ in SERVER_SCENARIOS})
            missing = spec.needs and not (
                has_module(spec.needs) if spec.needs == "hypercorn" else shutil.which(spec.needs)
            )
            try:
                if missing:
                    raise RuntimeError(f"{spec.needs} not installed")
                srv = running[spec.name] = stack.enter_context(server(spec, ctx))
                # Warm-up: imports, first connections, allocator.
                run_h2load(["-n", "500", "-c", "4", "-m", "10"], url(srv.port, "/5"), 30)
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                for cell in row.values():
                    cell.error = str(e)[:200]
                print(f"server {spec.name}: {e}", flush=True)
        for rep in range(reps):
            for name, raw_args, path, unit in SERVER_SCENARIOS:
                args = [a.format(upload=ctx.upload) for a in raw_args]
                n = int(args[args.index("-n") + 1])
                for sname, srv in running.items():
                    cell = table[sname][name]
                    if cell.error:
                        continue
                    if budget.left() < 30:
                        cell.error = "skipped: suite budget"
                        continue
                    try:
                        cpu0 = tree_cpu_seconds(srv.pid)
                        secs, ok, failed = run_h2load(args, url(srv.port, path), 60)
                        cpu1 = tree_cpu_seconds(srv.pid)
                    except (RuntimeError, subprocess.TimeoutExpired) as e:
                        cell.error = str(e)[:200]
                        continue
                    if failed or ok != n:
                        cell.error = f"{failed} of {n} failed"
                        continue
                    cpu = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
                    line = cell.add(n if unit == "req/s" else n * MiB / 1e6, secs, cpu, unit)
                    print(f"  [{rep + 1}/{reps}] {sname} / {name}: {line}", flush=True)
    return table


def url(port: int, path: str) -> str:
    return f"http://127.0.0.1:{port}{path}"


def bench_clients(
    ctx: Context, reps: int, budget: Budget, only: set[str] | None
) -> dict[str, dict[str, Cell]]:
    """Each client against one nghttpd; repetitions round-robin over clients."""
    table: dict[str, dict[str, Cell]] = {}
    clients = [c for c in CLIENTS if not only or c.name in only]
    for spec in clients:
        row = table.setdefault(spec.name, {n: Cell() for n, *_ in CLIENT_SCENARIOS})
        if not shutil.which("nghttpd"):
            err = "nghttpd not installed"
        elif spec.needs and not has_module(spec.needs):
            err = f"{spec.needs} not installed"
        else:
            continue
        for cell in row.values():
            cell.error = err
    ng = next(s for s in SERVERS if s.name.startswith("nghttpd"))
    if not shutil.which("nghttpd"):
        return table
    with server(ng, ctx) as ngd:
        for rep in range(reps):
            for name, args, unit in CLIENT_SCENARIOS:
                for spec in clients:
                    cell = table[spec.name][name]
                    if cell.error:
                        continue
                    if budget.left() < 30:
                        cell.error = "skipped: suite budget"
                        continue
                    try:
                        res = run_client(spec.command, ngd.port, args, min(120, budget.left()))
                    except (RuntimeError, subprocess.TimeoutExpired) as e:
                        cell.error = str(e)[:200]
                        continue
                    if res["requests"] != int(args[1]) or set(res["statuses"]) != {"200"}:
                        cell.error = f"bad result {res}"[:200]
                        continue
                    work = res["requests"] if unit == "req/s" else res["bytes"] / 1e6
                    line = cell.add(work, res["seconds"], res.get("cpu_seconds"), unit)
                    print(f"  [{rep + 1}/{reps}] {spec.name} / {name}: {line}", flush=True)
    return table


def bench_memory(budget: Budget, streams: int, conns: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in ("aioh2s", "raw"):
        if budget.left() < 60:
            out[kind] = {"error": "skipped: suite budget"}
            continue
        print(f"memory: {kind}", flush=True)
        cmd = [
            sys.executable,
            str(HERE / "memory.py"),
            "--server",
            kind,
            "--streams",
            str(streams),
            "--connections",
            str(conns),
            "--top",
        ]
        try:
            res = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                env=child_env(),
                timeout=min(300, budget.left()),
                check=False,
            )
            lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
            if res.returncode or not lines:
                out[kind] = {"error": res.stderr.strip()[-300:]}
            else:
                out[kind] = json.loads(lines[-1])
        except subprocess.TimeoutExpired:
            out[kind] = {"error": "timeout"}
        print(f"  {json.dumps(summary_memory(out[kind]))}", flush=True)
    return out


def summary_memory(m: dict[str, Any]) -> dict[str, Any]:
    if "error" in m:
        return {"error": m["error"]}
    get = lambda k, w: (m.get(k, {}).get(w) or {}).get("bytes_each")  # noqa: E731
    return {
        "stream_traced": get("tracemalloc", "stream"),
        "stream_rss": get("rss", "stream"),
        "connection_traced": get("tracemalloc", "connection"),
        "connection_rss": get("rss", "connection"),
    }


# --------------------------------------------------------------------------- report


def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if v >= 100 else f"{v:,.1f}"


def cpu_cost(per_cpu_second: float, unit: str) -> str:
    """Work per CPU-second, shown as CPU time per request or per MB (easier to picture)."""
    if unit == "req/s":
        return f"{fmt(1e6 / per_cpu_second)} us/req"
    return f"{fmt(1e3 / per_cpu_second)} ms/MB"


def render_table(
    title: str, table: dict[str, dict[str, Cell]], cols: list[tuple[str, str]]
) -> list[str]:
    lines = [f"| {title} | " + " | ".join(f"{c} ({u})" for c, u in cols) + " |"]
    lines.append("|---" * (len(cols) + 1) + "|")
    ceiling = table.get(CEILING, {})
    for name, row in table.items():
        cells = []
        for c, u in cols:
            cell = row.get(c, Cell())
            base = ceiling.get(c, Cell())
            if cell.median is None:
                cells.append(f"n/a ({cell.error})" if cell.error else "-")
                continue
            notes = []
            if name == CEILING:
                if cell.cpu_median:
                    notes.append(f"CPU {cpu_cost(cell.cpu_median, u)}")
            else:
                ratio, best = cell.ratio_to(base), cell.best_ratio_to(base)
                if ratio is not None and best is not None:
                    notes.append(f"**{ratio:.2f}x**")
                    notes.append(f"best {best:.2f}x")
            s = fmt(cell.median) + (f" ({'; '.join(notes)})" if notes else "")
            if cell.error:
                s += f" [{cell.error}]"
            cells.append(s)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def render_memory(mem: dict[str, Any]) -> list[str]:
    lines = [
        "| server | per idle stream, tracemalloc | per idle stream, RSS | "
        "per idle connection, tracemalloc | per idle connection, RSS |",
        "|---|---|---|---|---|",
    ]
    for kind, m in mem.items():
        name = "aioh2s" if kind == "aioh2s" else CEILING
        s = summary_memory(m)
        if "error" in s:
            lines.append(f"| {name} | n/a ({s['error'][:80]}) | | | |")
            continue
        vals = [s["stream_traced"], s["stream_rss"], s["connection_traced"], s["connection_rss"]]
        lines.append(
            f"| {name} | " + " | ".join("-" if v is None else f"{v:,.0f} B" for v in vals) + " |"
        )
    return lines


def table_json(table: dict[str, dict[str, Cell]]) -> dict[str, Any]:
    return {
        name: {
            c: vars(cell) | {"median": cell.median, "cpu_median": cell.cpu_median}
            for c, cell in row.items()
        }
        for name, row in table.items()
    }


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for mod in ("h2", "hpack", "hyperframe", "hypercorn", "httpx"):
        try:
            from importlib.metadata import version

            out[mod] = version(mod)
        except Exception:  # noqa: BLE001 - not installed
            pass
    try:
        out["aioh2s"] = subprocess.run(
            [sys.executable, "-c", "import aioh2s; print(aioh2s.__version__)"],
            capture_output=True,
            text=True,
            env=child_env(),
            timeout=30,
            check=False,
        ).stdout.strip()
        out["h2load"] = subprocess.run(
            ["h2load", "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return out


def cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--reps", type=int, default=5, help="repetitions per scenario (median)")
    p.add_argument("--quick", action="store_true", help="1 repetition")
    p.add_argument("--budget", type=float, default=570, help="suite deadline, seconds")
    p.add_argument("--skip", action="append", default=[], choices=["servers", "clients", "memory"])
    p.add_argument("--only", action="append", help="run only these server/client names")
    p.add_argument("--streams", type=int, default=10_000)
    p.add_argument("--connections", type=int, default=1_000)
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    reps = 1 if args.quick else args.reps
    budget = Budget(args.budget)
    only = set(args.only) if args.only else None
    if not shutil.which("h2load"):
        print("h2load not found (Debian: apt-get install nghttp2-client)", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="aioh2s-bench-") as tmp:
        tmpd = Path(tmp)
        docroot = tmpd / "www"
        docroot.mkdir()
        (docroot / "5").write_bytes(b"hello")
        (docroot / "1m").write_bytes(b"x" * MiB)
        (docroot / "up").write_bytes(b"ok")
        with open(docroot / "100m", "wb") as f:
            chunk = b"x" * MiB
            for _ in range(100):
                f.write(chunk)
        upload = tmpd / "upload.bin"
        upload.write_bytes(os.urandom(MiB))
        cfg = tmpd / "hypercorn.toml"
        # hypercorn's defaults would GOAWAY after 1000 requests per connection and allow
        # 100 streams: give it the same room as the others.
        cfg.write_text("keep_alive_max_requests = 100000000\nh2_max_concurrent_streams = 1000\n")
        ctx = Context(docroot=docroot, upload=upload, hypercorn_cfg=cfg, verbose=args.verbose)

        servers = {} if "servers" in args.skip else bench_servers(ctx, reps, budget, only)
        clients = {} if "clients" in args.skip else bench_clients(ctx, reps, budget, only)
    memory = {} if "memory" in args.skip else bench_memory(budget, args.streams, args.connections)
    elapsed = time.monotonic() - t0

    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    env = {"cpu": cpu_model(), "cores": os.cpu_count(), **versions()}
    md = [
        f"## aioh2s benchmarks ({stamp})",
        "",
        f"{env['cpu']}, {env['cores']} cores; Python {env['python']}, h2 {env.get('h2')}; "
        f"{'median of ' + str(reps) if reps > 1 else '1 repetition'}; suite took {elapsed:.0f} s. "
        "Bold: median of the per-repetition ratios to the stock raw-h2 "
        "ceiling (each pair ran back to back); best: best run over the ceiling's best run. "
        "The ceiling row shows its CPU time per request or MB.",
        "",
    ]
    if servers:
        md += render_table(
            "server, driven by h2load", servers, [(n, u) for n, _a, _p, u in SERVER_SCENARIOS]
        )
        md.append("")
    if clients:
        md += render_table(
            "client, vs nghttpd, one connection", clients, [(n, u) for n, _a, u in CLIENT_SCENARIOS]
        )
        md.append("")
    if memory:
        md += render_memory(memory)
        md.append("")
    text = "\n".join(md)
    data = {
        "stamp": stamp,
        "reps": reps,
        "elapsed_s": elapsed,
        "env": env,
        "servers": table_json(servers),
        "clients": table_json(clients),
        "memory": memory,
    }
    RESULTS.mkdir(exist_ok=True)
    for name in (stamp, "latest"):
        (RESULTS / f"{name}.md").write_text(text + "\n")
        (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    print()
    print(text)
    print(f"written: {RESULTS / (stamp + '.md')}, {RESULTS / (stamp + '.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
