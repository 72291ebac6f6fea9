"""Does memory come back after legitimate load? Two identical soaks against one server.

Starts ``aioh2s_server.py`` (pinned to CPU 0, optionally with ``--tracemalloc``) and runs the
same soak twice: 200,000 GETs over 4 connections (``h2load -n 200000 -c 4 -m 10``), then
20,000 short connections of one request each (``h2load -n 1000 -c 1000`` twenty times). After
each phase it records the server's RSS and, with tracemalloc, its traced Python heap and the
allocation sites that grew (``GET /_memdiff``).

How to read it: if the second soak adds (almost) nothing to RSS and the traced heap is flat
from soak 1 to soak 2, what the first soak left behind is not a leak but memory the allocator
keeps (pymalloc arenas, glibc heap not trimmed); a leak grows with every soak.

    python benchmarks/soak.py                  # RSS only (tracemalloc slows the server)
    python benchmarks/soak.py --tracemalloc    # plus the traced heap and its top growth
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _h2load(port: int, *args: str) -> None:
    out = subprocess.run(
        ["taskset", "-c", "1", "h2load", *args, f"http://127.0.0.1:{port}/5"],
        capture_output=True, text=True, timeout=600,
    ).stdout
    m = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded", out)
    if m is None or m[1] != m[3]:
        raise RuntimeError(f"h2load failed: {out[-400:]}")


def _memdiff(port: int) -> dict[str, object]:
    out = subprocess.run(
        ["nghttp", f"http://127.0.0.1:{port}/_memdiff"], capture_output=True, timeout=60,
    ).stdout
    return dict(json.loads(out))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tracemalloc", action="store_true")
    p.add_argument("--requests", type=int, default=200_000)
    p.add_argument("--connections", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=2)
    a = p.parse_args()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([SRC, HERE]))
    cmd = ["taskset", "-c", "0", sys.executable, os.path.join(HERE, "aioh2s_server.py"),
           "--lifetime", "3600"]
    if a.tracemalloc:
        cmd.append("--tracemalloc")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    rows: list[tuple[str, int, object, object]] = []
    try:
        assert proc.stdout is not None
        m = re.search(r"LISTENING (\d+)", proc.stdout.readline())
        assert m is not None, "server did not start"
        port = int(m[1])
        _h2load(port, "-n", "100", "-c", "1")  # warm up: imports, caches
        diff = _memdiff(port) if a.tracemalloc else {}
        rows.append(("start", _rss(proc.pid), diff.get("traced"), None))
        for r in range(1, a.rounds + 1):
            t0 = time.monotonic()
            _h2load(port, "-n", str(a.requests), "-c", "4", "-m", "10")
            time.sleep(1)
            diff = _memdiff(port) if a.tracemalloc else {}
            rows.append((f"soak {r}: {a.requests} GETs", _rss(proc.pid), diff.get("traced"),
                         diff.get("top")))
            for _ in range(a.connections // 1000):
                _h2load(port, "-n", "1000", "-c", "1000")
            time.sleep(1)
            diff = _memdiff(port) if a.tracemalloc else {}
            rows.append((f"soak {r}: {a.connections} short connections", _rss(proc.pid),
                         diff.get("traced"), diff.get("top")))
            print(f"soak {r} took {time.monotonic() - t0:.0f} s", file=sys.stderr)
    finally:
        proc.kill()
        proc.wait()
    base = rows[0][1]
    print("| after | RSS | RSS growth | traced heap |")
    print("|---|---|---|---|")
    for name, rss, traced, _top in rows:
        t = f"{int(traced) / 1e6:.1f} MB" if isinstance(traced, int) else "-"
        print(f"| {name} | {rss / 1e6:.1f} MB | {(rss - base) / 1e6:+.1f} MB | {t} |")
    for name, _, _t, top in rows:
        if top:
            print(f"\ntop growth after {name}:")
            for line in top[:8]:  # type: ignore[attr-defined]
                print("   ", line)


if __name__ == "__main__":
    main()
