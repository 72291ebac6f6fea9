"""A/B two source trees of aioh2s: CPU per request, server and client, small and bulk.

Usage::

    git worktree add /some/dir/old <commit>      # the baseline tree
    python benchmarks/ab.py --old /some/dir/old/src --new src --rounds 5

Each round runs every scenario once per tree, old and new alternating (the order flips every
round), so slow drifts of a shared machine hit both sides alike. Servers
(``benchmarks/aioh2s_server.py``) are pinned to CPU 0 and loaded by ``h2load`` on CPU 1; the
figure is the server's CPU time (``/proc/<pid>/task/*/schedstat``) per request across the
h2load run. Clients (``benchmarks/aioh2s_client.py``) run on CPU 0 against ``nghttpd`` on CPU 1
and report their own ``process_time()``. Lower is better. The report gives, per scenario, the
minimum of each side and new/old of the minima and of the medians.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))

SERVER = [
    ("server GET 5 B -m 10", ["-n", "20000", "-c", "4", "-m", "10"], "/5", 20000),
    ("server GET 5 B -m 100", ["-n", "20000", "-c", "4", "-m", "100"], "/5", 20000),
    ("server GET 1 MiB", ["-n", "500", "-c", "4", "-m", "10"], "/1m", 500),
    ("server POST 1 MiB", ["-n", "500", "-c", "4", "-m", "10", "-d", "{upload}"], "/up", 500),
]
CLIENT = [
    ("client 5000 GET, 1 at a time", ["-n", "5000", "-c", "1", "--path", "/5"], 5000),
    ("client 5000 GET, 50 at a time", ["-n", "5000", "-c", "50", "--path", "/5"], 5000),
    ("client 100 MiB download", ["-n", "1", "-c", "1", "--path", "/100m"], 100),
]


def _cpu_ns(pid: int) -> int:
    total = 0
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            with open(path) as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError):
            pass
    return total


def _env(src: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([os.path.abspath(src), HERE])
    return env


def run_server(src: str, args: list[str], path: str, n: int, upload: str) -> float:
    proc = subprocess.Popen(
        ["taskset", "-c", "0", sys.executable, os.path.join(HERE, "aioh2s_server.py"),
         "--lifetime", "120"],
        stdout=subprocess.PIPE, text=True, env=_env(src),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.search(r"LISTENING (\d+)", line)
        if m is None:
            raise RuntimeError(f"server did not start: {line!r}")
        port = m[1]
        before = _cpu_ns(proc.pid)
        load = [a.replace("{upload}", upload) for a in args]
        out = subprocess.run(
            ["taskset", "-c", "1", "h2load", *load, f"http://127.0.0.1:{port}{path}"],
            capture_output=True, text=True, timeout=120,
        ).stdout
        used = _cpu_ns(proc.pid) - before
        done = re.search(r"(\d+) succeeded", out)
        if done is None or int(done[1]) != n:
            raise RuntimeError(f"h2load did not complete: {out[-500:]}")
        return used / 1e3 / n  # us per request
    finally:
        proc.kill()
        proc.wait()


def run_client(src: str, args: list[str], n: int, port: int) -> float:
    out = subprocess.run(
        ["taskset", "-c", "0", sys.executable, os.path.join(HERE, "aioh2s_client.py"),
         "--port", str(port), *args],
        capture_output=True, text=True, env=_env(src), timeout=300,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["cpu_seconds"] * 1e6 / n  # us per request (per MiB for the download)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--old", required=True, help="the baseline tree's src/ directory")
    p.add_argument("--new", required=True, help="the candidate tree's src/ directory")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--only", default="", help="run scenarios whose name contains this")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        upload = os.path.join(tmp, "upload")
        with open(upload, "wb") as f:
            f.write(os.urandom(1 << 20))
        docroot = os.path.join(tmp, "www")
        os.mkdir(docroot)
        with open(os.path.join(docroot, "5"), "wb") as f:
            f.write(b"hello")
        with open(os.path.join(docroot, "100m"), "wb") as f:
            f.write(os.urandom(100 << 20))
        port = 18000 + os.getpid() % 1000
        nghttpd = subprocess.Popen(
            ["taskset", "-c", "1", "nghttpd", "--no-tls", "-w", "20", "-W", "24", "-d",
             docroot, str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)
        results: dict[str, dict[str, list[float]]] = {}
        try:
            for r in range(a.rounds):
                sides = [("old", a.old), ("new", a.new)]
                if r % 2:
                    sides.reverse()
                for name, args, path, n in SERVER:
                    if a.only not in name:
                        continue
                    for side, src in sides:
                        v = run_server(src, args, path, n, upload)
                        results.setdefault(name, {}).setdefault(side, []).append(v)
                for name, args, n in CLIENT:
                    if a.only not in name:
                        continue
                    for side, src in sides:
                        v = run_client(src, args, n, port)
                        results.setdefault(name, {}).setdefault(side, []).append(v)
                print(f"round {r + 1}/{a.rounds} done", file=sys.stderr, flush=True)
        finally:
            nghttpd.kill()
            nghttpd.wait()
    print("| scenario | old min | new min | new/old (min) | new/old (median) |")
    print("|---|---|---|---|---|")
    for name, sides in results.items():
        old, new = sides["old"], sides["new"]
        unit = "us/MiB" if "MiB download" in name else "us/req"
        print(f"| {name} | {min(old):.1f} {unit} | {min(new):.1f} {unit} | "
              f"{min(new) / min(old):.2f} | "
              f"{statistics.median(new) / statistics.median(old):.2f} |")


if __name__ == "__main__":
    main()
