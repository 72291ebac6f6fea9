"""Client pool benchmark: aioh2s.Session vs httpx (through aioh2s, and its own HTTP/2) vs niquests.

Usage::

    python benchmarks/client_pool.py            # 3 rounds, ~2-3 minutes on 2 cores
    python benchmarks/client_pool.py --quick    # smoke run, small counts, < 30 s
    python benchmarks/client_pool.py --server aioh2s [--uvloop]   # without Go

One origin, h2c (prior knowledge) on 127.0.0.1, a server that advertises
SETTINGS_MAX_CONCURRENT_STREAMS 100 and answers ``GET /bytes?n=5`` with 5 bytes. The server
is Go's ``golang.org/x/net/http2`` (``tests/interop/go_server.go``, built by
``tests/peers.py``; the neutral peer, and fast enough to never be the bottleneck: its CPU
share is reported) or, with ``--server aioh2s`` or when Go is missing, an aioh2s server in a
spawned child process. Server and client never share a CPU: the server is pinned to CPU 0
(Go with ``GOMAXPROCS=1``), every client to CPU 1.

Scenarios, each on a fresh client in a fresh event loop, timed after 20 warm-up requests
(which open the first connection): (a) 1,000 requests at once (10x the server's stream
limit), three such bursts one after another (a single one lasts ~0.3 s: too short to time
steadily; the first burst also opens the pool's other connections), (b) 5,000 GETs one at
a time, (c) 5,000 GETs by 50 workers (50 in flight).

Clients, each with its defaults except 60 s timeouts:

* ``aioh2s Session``: ``await session.fetch(url)`` (``max_connections`` 10);
* ``httpx + aioh2s``: ``httpx.AsyncClient(transport=aioh2s.httpx_transport.Transport())``;
* ``httpx h2``: ``httpx.AsyncClient(http1=False, http2=True)`` (the baseline of every ratio);
* ``niquests``: ``niquests.AsyncSession(disable_http1=True)``.

Every response is checked (status 200, 5 bytes, HTTP/2). Each client runs in its own
subprocess, once per round, all of a round's scenarios one after another: no library's
imports, threads, heap or garbage-collector state can slow another one down, and a round
runs every client back to back (in an order rotated every round) so that a shared machine's
drift hits all of them alike. Each cell reports the best round (min time) and the median,
and their ratios to httpx's own HTTP/2 (best over best, median over median).

Memory per idle pooled connection: a Session with ``max_connections`` K sends K requests at
once (``/slow?ms=...``) to a second server that allows 1 stream per connection, so it opens
K connections, which then sit idle; (heap after - heap before) / K, from ``tracemalloc`` in
one subprocess and from RSS in another (without tracemalloc). Kernel socket buffers are not
counted.

Results: ``benchmarks/results/client_pool-<UTC stamp>.{md,json}`` and
``client_pool-latest.{md,json}`` (git-ignored).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as _dt
import gc
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"

SERVER_CPU = 0
CLIENT_CPU = 1
WARMUP = 20
TIMEOUT = 60.0

# key, label
CLIENTS = [
    ("pool", "aioh2s Session"),
    ("transport", "httpx + aioh2s transport"),
    ("httpx", "httpx h2 (baseline)"),
    ("niquests", "niquests"),
]
BASELINE = "httpx"
SCENARIOS = ["burst", "sequential", "concurrent"]

# Targets of the issue: (client, scenario, minimum ratio to httpx h2).
TARGETS = [("pool", "concurrent", 3.0), ("transport", "concurrent", 1.5)]


# --------------------------------------------------------------------------- processes


def _pin(cpu: int) -> Callable[[], None] | None:
    cpus = os.sched_getaffinity(0)
    if len(cpus) < 2 or cpu not in cpus:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    parts = [str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])]
    env["PYTHONPATH"] = os.pathsep.join(parts)
    env.pop("PYTHONASYNCIODEBUG", None)
    return env


def cpu_seconds(pid: int) -> float:
    """On-CPU seconds of every thread of ``pid`` so far (``/proc/<pid>/task/*/schedstat``)."""
    ns = 0
    with contextlib.suppress(OSError):
        for task in os.scandir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, ValueError):
                ns += int(Path(task.path, "schedstat").read_text().split()[0])
    return ns / 1e9


@dataclass
class Server:
    name: str
    port: int
    pid: int
    stop: Callable[[], None]


def go_binary() -> tuple[Path | None, str]:
    """Go's server, built by tests/peers.py (cached per source hash), or why not."""
    paths = [str(ROOT / "tests"), str(ROOT / "src")]  # peers imports aioh2s: this tree's
    sys.path[:0] = paths
    try:
        import peers

        return peers.go_server_binary(), ""
    except BaseException as e:  # noqa: BLE001 - pytest's skip/fail outcomes are BaseException
        if isinstance(e, KeyboardInterrupt):
            raise
        return None, f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e) else ''}"
    finally:
        for path in paths:
            sys.path.remove(path)


@contextlib.contextmanager
def go_server(binary: Path, max_streams: int) -> Iterator[Server]:
    env = dict(os.environ, GOMAXPROCS="1")
    proc = subprocess.Popen(
        [str(binary), "-addr", "127.0.0.1:0", "-max-streams", str(max_streams)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        preexec_fn=_pin(SERVER_CPU),
    )

    def stop() -> None:
        if proc.poll() is None:
            assert proc.stdin is not None
            proc.stdin.close()  # the Go server exits when its stdin closes
            try:
                proc.wait(3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(3)

    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        if not line.startswith("LISTEN "):
            raise RuntimeError(f"Go server printed {line!r}")
        yield Server(
            f"Go x/net/http2 (max streams {max_streams})",
            int(line.rsplit(":", 1)[1]),
            proc.pid,
            stop,
        )
    finally:
        stop()


def _aioh2s_serve(max_streams: int, use_uvloop: bool, conn: Any) -> None:
    """The aioh2s server's child process (multiprocessing spawn)."""
    pin = _pin(SERVER_CPU)
    if pin is not None:
        pin()
    import aioh2s

    body = b"x" * 5

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        path = reader.headers[":path"]
        if path.startswith("/slow"):
            await asyncio.sleep(int(path.rpartition("=")[2]) / 1000)
        writer.send_headers({":status": "200", "content-length": "5"})
        writer.write(body)
        writer.write_eof()

    async def main() -> None:
        server = await aioh2s.start_server(
            handler, "127.0.0.1", 0, max_concurrent_streams=max_streams
        )
        conn.send(server.sockets[0].getsockname()[1])
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        loop.add_reader(conn.fileno(), lambda: done.done() or done.set_result(None))
        async with server:
            await done  # the parent closed its end of the pipe (or sent anything)

    if use_uvloop:
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


@contextlib.contextmanager
def aioh2s_server(max_streams: int, use_uvloop: bool) -> Iterator[Server]:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = child_env()["PYTHONPATH"]
    proc = ctx.Process(target=_aioh2s_serve, args=(max_streams, use_uvloop, child), daemon=True)
    proc.start()
    if old is None:
        os.environ.pop("PYTHONPATH")
    else:
        os.environ["PYTHONPATH"] = old
    child.close()

    def stop() -> None:
        with contextlib.suppress(OSError):
            parent.send(None)
        proc.join(3)
        if proc.is_alive():
            proc.kill()
            proc.join(3)

    try:
        if not parent.poll(30):
            raise RuntimeError("the aioh2s server did not start within 30 s")
        port = parent.recv()
        loop = "uvloop" if use_uvloop else "asyncio"
        assert proc.pid is not None
        yield Server(f"aioh2s {loop} (max streams {max_streams})", port, proc.pid, stop)
    finally:
        stop()


# --------------------------------------------------------------------------- clients


def _established(port: int) -> int:
    """TCP connections to ``port`` that are ESTABLISHED (this host's view, our side only)."""
    count = 0
    with contextlib.suppress(OSError), open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            remote, state = fields[2], fields[3]
            if state == "01" and int(remote.rpartition(":")[2], 16) == port:
                count += 1
    return count


async def _client(
    kind: str,
) -> tuple[Callable[[str], Awaitable[tuple[int, bytes, str]]], Callable[[], Awaitable[None]]]:
    """``get(url) -> (status, body, http version)`` and ``close()`` for one kind of client."""
    if kind == "pool":
        import aioh2s

        session = aioh2s.Session(timeout=TIMEOUT)

        async def get(url: str) -> tuple[int, bytes, str]:
            r = await session.fetch(url)
            return r.status, r.body, "HTTP/2"

        return get, session.close
    if kind in ("transport", "httpx"):
        import httpx

        if kind == "transport":
            from aioh2s.httpx_transport import Transport

            client = httpx.AsyncClient(transport=Transport(), timeout=TIMEOUT)
        else:
            client = httpx.AsyncClient(http1=False, http2=True, timeout=TIMEOUT)

        async def get(url: str) -> tuple[int, bytes, str]:
            r = await client.get(url)
            return r.status_code, r.content, r.http_version

        return get, client.aclose
    if kind == "niquests":
        import niquests

        s = niquests.AsyncSession(disable_http1=True)

        async def get(url: str) -> tuple[int, bytes, str]:
            r = await s.get(url, timeout=TIMEOUT)
            version = {20: "HTTP/2", 30: "HTTP/3", 11: "HTTP/1.1"}.get(r.http_version, "?")
            return r.status_code or 0, r.content or b"", version

        return get, s.close
    raise ValueError(kind)


async def _scenario(
    kind: str, scenario: str, url: str, port: int, n: int, burst: int, bursts: int, concurrency: int
) -> dict[str, Any]:
    get, close = await _client(kind)
    bad: list[str] = []

    async def one() -> None:
        status, body, version = await get(url)
        if status != 200 or len(body) != 5 or version != "HTTP/2":
            bad.append(f"{status} {len(body)} B {version}")

    try:
        for _ in range(WARMUP):
            await one()
        if bad:
            raise RuntimeError(f"{kind}: unexpected response: {bad[0]}")
        gc.collect()
        t0, c0 = time.perf_counter(), time.process_time()
        if scenario == "burst":
            count = burst * bursts
            for _ in range(bursts):
                await asyncio.gather(*(one() for _ in range(burst)))
        elif scenario == "sequential":
            count = n
            for _ in range(n):
                await one()
        else:
            count = n
            left = n

            async def worker() -> None:
                nonlocal left
                while left > 0:
                    left -= 1
                    await one()

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        conns = _established(port)
    finally:
        await close()
    if bad:
        raise RuntimeError(f"{kind}: {len(bad)} unexpected responses, e.g. {bad[0]}")
    return {"seconds": seconds, "cpu_seconds": cpu, "requests": count, "connections": conns}


def worker_main(args: argparse.Namespace) -> None:
    url = f"http://127.0.0.1:{args.port}/bytes?n=5"
    out = {}
    for scenario in args.scenario or SCENARIOS:
        out[scenario] = asyncio.run(
            _scenario(
                args.worker,
                scenario,
                url,
                args.port,
                args.n,
                args.burst,
                args.bursts,
                args.concurrency,
            )
        )
    print(json.dumps(out), flush=True)


# --------------------------------------------------------------------------- memory


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def _memory(port: int, k: int, traced: bool, hold_ms: int) -> dict[str, Any]:
    import tracemalloc

    import aioh2s

    url = f"http://127.0.0.1:{port}/slow?ms={hold_ms}"
    async with aioh2s.Session() as warm:  # import, caches, first connection code paths
        await asyncio.gather(*(warm.fetch(url) for _ in range(4)))
    await asyncio.sleep(0.1)
    gc.collect()
    before = tracemalloc.get_traced_memory()[0] if traced else _rss()
    session = aioh2s.Session(max_connections=k, timeout=TIMEOUT)
    rs = await asyncio.gather(*(session.fetch(url) for _ in range(k)))
    assert all(r.status == 200 for r in rs)
    del rs
    await asyncio.sleep(0.2)  # every stream closed; the connections are idle
    gc.collect()
    after = tracemalloc.get_traced_memory()[0] if traced else _rss()
    conns = len(session.connections())
    await session.close()
    return {
        "connections": conns,
        "bytes": after - before,
        "per_connection": (after - before) / max(1, conns),
    }


def memory_main(args: argparse.Namespace) -> None:
    if args.memory == "traced":
        import tracemalloc

        tracemalloc.start()
    print(
        json.dumps(
            asyncio.run(_memory(args.port, args.idle_conns, args.memory == "traced", args.hold_ms))
        ),
        flush=True,
    )


# --------------------------------------------------------------------------- driver


def run_child(argv: list[str], timeout: float) -> dict[str, Any]:
    res = subprocess.run(
        [sys.executable, __file__, *argv],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=timeout,
        preexec_fn=_pin(CLIENT_CPU),
        check=False,
    )
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise RuntimeError(f"exit {res.returncode}: {tail[0][:300]}")
    out: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


def fmt_rate(v: float) -> str:
    return f"{v:,.0f}"


def render(
    results: dict[str, dict[str, list[dict[str, Any]]]],
    errors: dict[str, str],
    labels: dict[str, str],
    heads: dict[str, str],
) -> tuple[list[str], dict[str, Any]]:
    """The markdown table and a summary {client: {scenario: {best, median, ratios}}}."""
    summary: dict[str, Any] = {}
    for kind, per in results.items():
        summary[kind] = {}
        for sc, runs in per.items():
            rates = [r["requests"] / r["seconds"] for r in runs]
            cpu = [r["cpu_seconds"] / r["requests"] for r in runs]
            summary[kind][sc] = {
                "best": max(rates),
                "median": statistics.median(rates),
                "rates": rates,
                "cpu_us_per_request": statistics.median(cpu) * 1e6,
                "connections": max(r["connections"] for r in runs),
            }
    base = summary.get(BASELINE, {})
    for per in summary.values():
        for sc, s in per.items():
            b = base.get(sc)
            s["ratio_best"] = s["best"] / b["best"] if b else None
            s["ratio_median"] = s["median"] / b["median"] if b else None
    lines = [
        "| client | " + " | ".join(heads[sc] for sc in SCENARIOS) + " |",
        "|---" * (len(SCENARIOS) + 1) + "|",
    ]
    for kind, label in labels.items():
        if kind in errors and kind not in summary:
            lines.append(f"| {label} | n/a ({errors[kind][:100]}) |" + " |" * (len(SCENARIOS) - 1))
            continue
        cells = []
        for sc in SCENARIOS:
            s = summary.get(kind, {}).get(sc)
            if s is None:
                cells.append("-")
                continue
            cell = f"{fmt_rate(s['best'])} / {fmt_rate(s['median'])}"
            if kind != BASELINE and s["ratio_best"] is not None:
                cell += f" (**{s['ratio_best']:.2f}x** / {s['ratio_median']:.2f}x)"
            cell += f"; {s['cpu_us_per_request']:.0f} us CPU, {s['connections']} conn"
            cells.append(cell)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines, summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="smoke run: 1 round, small counts")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("-n", type=int, default=5000, help="requests in (b) and (c)")
    p.add_argument("--burst", type=int, default=1000, help="requests at once in (a)")
    p.add_argument("--bursts", type=int, default=3, help="(a) is timed over this many bursts")
    p.add_argument("--concurrency", type=int, default=50, help="requests in flight in (c)")
    p.add_argument("--max-streams", type=int, default=100, help="the server's stream limit")
    p.add_argument("--idle-conns", type=int, default=200, help="K for the memory measurement")
    p.add_argument(
        "--hold-ms",
        type=int,
        default=1000,
        help="memory: how long the server holds each of the K requests",
    )
    p.add_argument("--server", choices=["auto", "go", "aioh2s"], default="auto")
    p.add_argument("--uvloop", action="store_true", help="the aioh2s server runs on uvloop")
    p.add_argument(
        "--clients",
        default=",".join(k for k, _ in CLIENTS),
        help="comma-separated subset of " + ",".join(k for k, _ in CLIENTS),
    )
    p.add_argument("--no-memory", action="store_true")
    # internal: one client's scenarios in a subprocess, or one memory pass
    p.add_argument("--worker", choices=[k for k, _ in CLIENTS], help=argparse.SUPPRESS)
    p.add_argument("--scenario", action="append", choices=SCENARIOS, help=argparse.SUPPRESS)
    p.add_argument("--memory", choices=["traced", "rss"], help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.n, args.burst, args.bursts = 1, 500, 300, 1
        args.idle_conns, args.hold_ms = min(args.idle_conns, 50), min(args.hold_ms, 300)
    if args.worker:
        worker_main(args)
        return 0
    if args.memory:
        memory_main(args)
        return 0

    kinds = [k.strip() for k in args.clients.split(",") if k.strip()]
    labels = {k: lbl for k, lbl in CLIENTS if k in kinds}
    t_start = time.monotonic()
    load0 = os.getloadavg()
    binary, why = (None, "not asked for") if args.server == "aioh2s" else go_binary()
    if binary is None and args.server == "go":
        print(f"Go server unavailable: {why}", file=sys.stderr)
        return 2

    def start(max_streams: int) -> contextlib.AbstractContextManager[Server]:
        if binary is not None:
            return go_server(binary, max_streams)
        return aioh2s_server(max_streams, args.uvloop)

    common = [
        "-n",
        str(args.n),
        "--burst",
        str(args.burst),
        "--bursts",
        str(args.bursts),
        "--concurrency",
        str(args.concurrency),
    ]
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    errors: dict[str, str] = {}
    server_busy: list[float] = []
    with start(args.max_streams) as srv:
        print(f"server: {srv.name} on 127.0.0.1:{srv.port}", flush=True)
        for rnd in range(args.rounds):
            order = kinds[rnd % len(kinds) :] + kinds[: rnd % len(kinds)]
            for kind in order:
                if kind in errors:
                    continue
                t0, s0 = time.monotonic(), cpu_seconds(srv.pid)
                try:
                    out = run_child(["--worker", kind, "--port", str(srv.port), *common], 300)
                except (RuntimeError, subprocess.TimeoutExpired, ValueError) as e:
                    errors[kind] = str(e)
                    print(f"round {rnd + 1} {kind}: FAILED {e}", flush=True)
                    continue
                busy = (cpu_seconds(srv.pid) - s0) / (time.monotonic() - t0)
                server_busy.append(busy)
                for sc, r in out.items():
                    results.setdefault(kind, {}).setdefault(sc, []).append(r)
                rates = ", ".join(
                    f"{sc} {r['requests'] / r['seconds']:,.0f}/s" for sc, r in out.items()
                )
                print(f"round {rnd + 1} {kind}: {rates} (server busy {busy:.0%})", flush=True)
        server_name = srv.name

    memory: dict[str, Any] = {}
    if not args.no_memory:
        with start(1) as msrv:
            for mode in ("traced", "rss"):
                try:
                    memory[mode] = run_child(
                        [
                            "--memory",
                            mode,
                            "--port",
                            str(msrv.port),
                            "--idle-conns",
                            str(args.idle_conns),
                            "--hold-ms",
                            str(args.hold_ms),
                        ],
                        120,
                    )
                except (RuntimeError, subprocess.TimeoutExpired, ValueError) as e:
                    memory[mode] = {"error": str(e)}
                print(f"memory {mode}: {memory[mode]}", flush=True)
    took = time.monotonic() - t_start
    load1 = os.getloadavg()

    heads = {
        "burst": f"(a) {args.burst:,} at once, {args.bursts}x (req/s)",
        "sequential": f"(b) {args.n:,} one at a time (req/s)",
        "concurrent": f"(c) {args.n:,}, {args.concurrency} at a time (req/s)",
    }
    table, summary = render(results, errors, labels, heads)
    verdicts = []
    for kind, sc, want in TARGETS:
        s = summary.get(kind, {}).get(sc)
        if s is None or s["ratio_best"] is None:
            verdicts.append(f"- {labels.get(kind, kind)} >= {want}x httpx h2 in {heads[sc]}: n/a")
            continue
        ok = s["ratio_best"] >= want and s["ratio_median"] >= want
        verdicts.append(
            f"- {labels[kind]} >= {want}x httpx h2 in {heads[sc].split(' (')[0]}: "
            f"best {s['ratio_best']:.2f}x, median {s['ratio_median']:.2f}x: "
            f"**{'met' if ok else 'MISSED'}**"
        )
    mem_line = "Memory per idle pooled connection (aioh2s Session): "
    parts = []
    for mode, label in (("traced", "tracemalloc"), ("rss", "RSS")):
        m = memory.get(mode)
        if m is None:
            continue
        if "error" in m:
            parts.append(f"{label} n/a ({m['error'][:80]})")
        else:
            parts.append(f"{m['per_connection']:,.0f} B ({label}, {m['connections']} idle conns)")
    mem_line += "; ".join(parts) if parts else "not measured"

    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    versions = _versions()
    cpu = _cpu_model()
    md = [
        f"## aioh2s client pool benchmark ({stamp})",
        "",
        f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}; "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
        + f". Server: {server_name}, pinned to CPU {SERVER_CPU}, busy at most "
        f"{max(server_busy, default=0):.0%} of it during a client's run; clients on CPU "
        f"{CLIENT_CPU}. {args.rounds} round(s); load average {load0[0]:.2f} before, "
        f"{load1[0]:.2f} after; took {took:.0f} s.",
        "",
        "Each cell: best / median requests per second over the rounds, (**best ratio** / "
        "median ratio) to httpx's own HTTP/2, the median client CPU time per request, and "
        "the connections open at the end of the timed section.",
        "",
        *table,
        "",
        *verdicts,
        "",
        mem_line,
    ]
    if errors:
        md += ["", "Errors: " + "; ".join(f"{k}: {v}" for k, v in errors.items())]
    text = "\n".join(md) + "\n"
    print("\n" + text)
    RESULTS.mkdir(exist_ok=True)
    data = {
        "stamp": stamp,
        "server": server_name,
        "rounds": args.rounds,
        "args": vars(args),
        "versions": versions,
        "cpu": cpu,
        "server_busy": server_busy,
        "results": results,
        "summary": summary,
        "memory": memory,
        "errors": errors,
        "seconds": took,
    }
    for name in (f"client_pool-{stamp}", "client_pool-latest"):
        (RESULTS / f"{name}.md").write_text(text)
        (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=1))
    print(f"written to {RESULTS / f'client_pool-{stamp}.md'}")
    return 1 if errors else 0


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for mod in ("h2", "httpx", "httpcore", "niquests", "urllib3-future", "jh2"):
        with contextlib.suppress(PackageNotFoundError):
            out[mod] = version(mod)
    return out


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


if __name__ == "__main__":
    sys.exit(main())
