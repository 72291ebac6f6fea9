"""Behind load balancers: HAProxy and nghttpx in front of aioh2s workers, under load.

Each test runs ``aioh2s.serve("lb_app:handler", ..., workers=2)`` (tests/lbtools.py) and
puts a real proxy in front of it, speaking HTTP/2 to the workers, with the configuration
that README's Deployment section shows: examples/haproxy.cfg and examples/nghttpx.conf, read
from those files (and README is checked to show them as they are), so the docs cannot
drift. Load goes through the proxy over h2c (h2load, in bursts that each finish all their
requests) and HTTP/1.1 (httpx) at once, while:

- the supervisor replaces its workers one by one, twice (SIGHUP, each rollout waited
  for), behind HAProxy and behind nghttpx;
- one of two hosts (two supervisors, one HAProxy ``server`` line each) is stopped with
  SIGTERM, behind HAProxy.

What must hold: every request succeeded with a 200 (h2load's summary, httpx's responses
and the proxy's own log agree on the count); the rollouts happened (each response names its
worker's pid, and the pids move from one generation to the next); and the proxy handled the
old workers' GOAWAYs as intended: it received them, opened new connections, logged no 5xx,
aborted or retried request and no reset or refused stream, and let go of the old workers'
connections, which exited cleanly long before their grace period ran out. A stopped host's
requests in flight finish, and those sent to it before the health check took it out are
redispatched to the other host.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import require
from lbtools import (
    HTTPLOG,
    ROOT,
    H1Load,
    Load,
    Workers,
    h1_load_until,
    haproxy_command,
    haproxy_info,
    haproxy_stats,
    load_until,
    missing_from_log,
)
from peers import free_port

pytestmark = [
    pytest.mark.once,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers>1 needs Linux"),
]

EXAMPLES = ROOT / "examples"
GRACE = 10.0  # the workers' grace: an old worker that needs it kept a connection too long
STOP_WITHIN = 5.0  # seconds from "replaces worker X" to X's exit, at most
# Load: h2load over h2c with 10 streams per connection (bursts of about 0.5 s), and HTTP/1.1
# from httpx on 2 connections, at once.
H2_LOAD = ("-n", "1500", "-c", "6", "-m", "10", "--rps", "500")


@contextlib.asynccontextmanager
async def workers() -> AsyncIterator[Workers]:
    sup = await Workers.start(workers=2, grace=GRACE)
    try:
        yield sup
    finally:
        await sup.close()


async def _wait_accepting(port: int, proc: subprocess.Popen[bytes], name: str,
                          log: Path) -> bool:
    """Poll 127.0.0.1:port until it accepts; False if ``proc`` exited first."""
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            if proc.poll() is not None:
                return False
            if time.monotonic() > deadline:
                pytest.fail(f"{name} did not listen within 10 s:\n{log.read_text()}")
            await asyncio.sleep(0.05)


@contextlib.contextmanager
def _stopping(proc: subprocess.Popen[bytes], graceful: signal.Signals) -> Iterator[None]:
    """Stop the proxy at exit with its ``graceful`` signal, which lets it finish its logs
    (SIGTERM may cut the last lines: a request's line is written once its stream is freed,
    an instant after the client has the response); SIGKILL 10 s later."""
    try:
        yield
    finally:
        if proc.poll() is None:
            proc.send_signal(graceful)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def _rollouts_under_load(sup: Workers, url: str) -> tuple[Load, H1Load, list[set[int]]]:
    """h2c and HTTP/1.1 load through ``url`` across two rollouts: the loads, each generation."""
    h2load = require("h2load")
    generations = [set(sup.pids)]
    stop = asyncio.Event()
    loads: list[asyncio.Future[Load | H1Load]] = [
        asyncio.ensure_future(load_until(stop, h2load, url, *H2_LOAD)),
        asyncio.ensure_future(h1_load_until(stop, url)),
    ]
    try:
        await asyncio.sleep(1)
        for _ in range(2):
            generations.append(await sup.rollout())
            assert not any(t.done() for t in loads), "a load ended during the rollout"
            await asyncio.sleep(0.5)
        for pid in generations[0] | generations[1]:  # every old worker has exited...
            await sup.line(rf"worker {pid} \(slot \d\) stopped")
        await asyncio.sleep(0.5)  # ...and the last workers serve alone
    finally:
        stop.set()
        done = await asyncio.wait_for(asyncio.gather(*loads, return_exceptions=True), 60)
    h2, h1 = done
    for result in done:
        if isinstance(result, BaseException):
            raise result
    assert isinstance(h2, Load) and isinstance(h1, H1Load)
    return h2, h1, generations


def _check_h1_pids(h1: H1Load, generations: list[set[int]]) -> None:
    """The HTTP/1.1 client, on 2 connections to the proxy, saw each generation in turn."""
    pids = h1.pids
    assert set(pids) <= set().union(*generations), (set(pids), generations)
    assert set(pids[:20]) <= generations[0] and set(pids[-20:]) <= generations[2], pids
    assert set(pids) & generations[1], (set(pids), generations)


def _check_generations(generations: list[set[int]]) -> None:
    assert [len(g) for g in generations] == [2, 2, 2], generations
    assert len(set().union(*generations)) == 6, f"a worker survived a rollout: {generations}"


async def _check_old_workers_stopped_soon(sup: Workers, generations: list[set[int]]) -> None:
    """Each old worker exited 0 within STOP_WITHIN of being told: the proxy let go of it."""
    for pid in generations[0] | generations[1]:
        asked, _ = await sup.stamped_line(rf"replaces worker {pid}, which is stopping")
        gone, m = await sup.stamped_line(rf"worker {pid} \(slot \d\) stopped \(it (.*)\)")
        assert m.group(1) == "exited with code 0", sup.log()
        assert gone - asked < STOP_WITHIN, (pid, gone - asked, sup.log())
    # Nothing went wrong in the supervisor (its log lines) or a worker (whose records
    # reach stderr through logging's last resort: the message and any traceback).
    trouble = ("killing", "WARNING", "ERROR", "Traceback")
    assert not [t for t in trouble if t in sup.log()], sup.log()


def test_readme_shows_the_configurations_the_tests_run() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name, language in (("haproxy.cfg", "haproxy"), ("nghttpx.conf", "ini")):
        text = (EXAMPLES / name).read_text(encoding="utf-8")
        assert f"```{language}\n{text}```\n" in readme, f"README does not show examples/{name}"


# -- HAProxy --------------------------------------------------------------------------------


@dataclass
class HAProxy:
    """A running HAProxy: its process, front port, log file and stats socket."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    stats: Path

    def requests(self) -> tuple[list[re.Match[str]], list[str]]:
        """The log's request lines (parsed), and its other lines."""
        requests, other = [], []
        for line in self.log.read_text(errors="replace").splitlines():
            m = HTTPLOG.match(line)
            if m:
                requests.append(m)
            else:
                other.append(line)
        return requests, other


async def _start_haproxy(tmp_path: Path, config: Path, **backends: int) -> HAProxy:
    """HAProxy with ``config`` on a free port, ``backends`` ports as its variables."""
    haproxy = require("haproxy")
    stats, log = tmp_path / "stats.sock", tmp_path / "haproxy.log"
    for attempt in range(3):  # a free port may be taken before HAProxy binds it
        port = free_port()
        env = {**os.environ, "LISTEN": f"127.0.0.1:{port}", "STATS": str(stats),
               **{name: f"127.0.0.1:{p}" for name, p in backends.items()}}
        with log.open("wb") as out:
            proc = subprocess.Popen([haproxy, "-db", "-f", str(config)], env=env,
                                    stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT)
        if await _wait_accepting(port, proc, "haproxy", log):
            return HAProxy(proc, port, log, stats)
        assert attempt < 2, log.read_text()
    raise AssertionError("unreachable")


async def _haproxy_counters(hap: HAProxy) -> tuple[dict[tuple[str, str], dict[str, str]], int]:
    """The stats, and how many log lines HAProxy dropped, once the last requests ended."""
    await asyncio.sleep(0.2)  # (their streams are freed, and logged, an instant later)
    return haproxy_stats(hap.stats), int(haproxy_info(hap.stats)["DroppedLogs"])


def _diagnosis(hap: HAProxy, stats: dict[tuple[str, str], dict[str, str]], dropped: int,
               *loads: Load | H1Load) -> dict[str, object]:
    """What HAProxy saw, for the message of a failed check of the clients' counts."""
    requests, other = hap.requests()
    h2_counters = {f"{px}/{sv}": {k: v for k, v in row.items()
                                  if (k.startswith("h2_") or k in ("econ", "eresp", "wretr",
                                                                    "wredis", "hrsp_5xx"))
                                  and v not in ("", "0")}
                   for (px, sv), row in stats.items()}
    return {"missing from the log": missing_from_log(requests, *loads), "dropped": dropped,
            "not 200": [m.group(0) for m in requests if m.group("status") != "200"][:10],
            "other lines": other[:10], "counters": h2_counters}


def _check_logged(requests: list[re.Match[str]], other: list[str], dropped: int,
                  *loads: Load | H1Load) -> None:
    """One log line per request the clients made, less those HAProxy dropped.

    HAProxy drops a log line rather than wait when two of its threads write one to stderr
    at once (it counts them in ``show info``'s DroppedLogs): each such line is a request
    missing from the log, and nothing else may be missing (nor logged twice).
    """
    missing = missing_from_log(requests, *loads)
    assert all(n > 0 for n in missing.values()) and sum(missing.values()) == dropped, (
        missing, dropped, other)


async def test_haproxy_rolls_the_workers_under_h2load_and_fails_nothing(tmp_path: Path) -> None:
    async with workers() as sup:
        hap = await _start_haproxy(tmp_path, EXAMPLES / "haproxy.cfg", BACKEND=sup.port)
        with _stopping(hap.proc, signal.SIGUSR1):
            h2, h1, generations = await _rollouts_under_load(sup, f"http://127.0.0.1:{hap.port}/")
            stats, dropped = await _haproxy_counters(hap)
        h2.check("h2c through HAProxy", _diagnosis(hap, stats, dropped, h2, h1))
        h1.check("HTTP/1.1 through HAProxy", _diagnosis(hap, stats, dropped, h2, h1))
        _check_generations(generations)
        await _check_old_workers_stopped_soon(sup, generations)
    _check_h1_pids(h1, generations)

    # HAProxy's log: one line per request, each a 200 ended normally ("----"), none retried.
    requests, other = hap.requests()
    _check_logged(requests, other, dropped, h2, h1)
    bad = [m.group(0) for m in requests
           if (m.group("status"), m.group("term"), m.group("retries")) != ("200", "----", "0")]
    assert not bad, bad[:20]
    # What is not a request: HAProxy's own notices, none about the server's health.
    assert not [line for line in other if "aioh2s/app1" in line or "DOWN" in line], other
    # Which workers answered, in the order HAProxy logged them: the first ones, then the
    # second, then the last ones. (Not every worker of a generation need have served: the
    # kernel spreads connections, not requests, and HAProxy's few connections may all have
    # landed on one worker; max-reuse has it open new ones as it goes.)
    pids = [int(m.group("captured")) for m in requests]
    assert set(pids) <= set().union(*generations), (set(pids), generations)
    assert all(set(pids) & g for g in generations), (set(pids), generations)
    assert set(pids[:100]) <= generations[0] and set(pids[-100:]) <= generations[2]
    first_new = [min(i for i, p in enumerate(pids) if p in g) for g in generations[1:]]
    last_old = [max(i for i, p in enumerate(pids) if p in g) for g in generations[:2]]
    assert first_new[0] < first_new[1] and last_old[0] < last_old[1], (first_new, last_old)

    # The stats socket: the server healthy throughout (its checks all passed), GOAWAYs
    # received and new connections opened for them, no refused stream, no error, no retry.
    server, backend = stats["aioh2s", "app1"], stats["aioh2s", "BACKEND"]
    assert (server["status"], server["check_status"], server["chkfail"]) == ("UP", "L7OK", "0")
    for row in (server, backend):
        for counter in ("econ", "eresp", "wretr", "wredis", "hrsp_5xx", "srv_abrt"):
            assert row[counter] == "0", (counter, row)
    assert int(backend["h2_goaway_rcvd"]) >= 4, backend  # each old worker's connections
    assert backend["h2_rst_stream_rcvd"] == "0", backend  # no stream refused, none reset
    assert backend["h2_detected_conn_protocol_errors"] == "0", backend
    assert backend["h2_detected_strm_protocol_errors"] == "0", backend
    # Each connection gets two GOAWAYs (2^31-1, then the last stream's), and HAProxy opened
    # a new connection for each one it closed.
    goaway_connections = int(backend["h2_goaway_rcvd"]) // 2
    assert int(backend["h2_total_connections"]) > goaway_connections, backend


# -- nghttpx --------------------------------------------------------------------------------


def _nghttpx_conf(front: int, back: int) -> str:
    """examples/nghttpx.conf with its two ports replaced."""
    text = (EXAMPLES / "nghttpx.conf").read_text()
    assert text.count("127.0.0.1,8080;") == 1 and text.count("127.0.0.1,8000;") == 1, text
    return text.replace("127.0.0.1,8080;", f"127.0.0.1,{front};").replace(
        "127.0.0.1,8000;", f"127.0.0.1,{back};")


async def test_nghttpx_rolls_the_workers_under_h2load_and_fails_nothing(tmp_path: Path) -> None:
    nghttpx = require("nghttpx")
    async with workers() as sup:
        access, errors = tmp_path / "access.log", tmp_path / "error.log"
        for attempt in range(3):  # a free port may be taken before nghttpx binds it
            port = free_port()
            conf = tmp_path / "nghttpx.conf"
            conf.write_text(_nghttpx_conf(port, sup.port))
            with access.open("wb") as out, errors.open("wb") as err:
                proc = subprocess.Popen(
                    [nghttpx, f"--conf={conf}", "--no-ocsp", f"--pid-file={tmp_path}/pid"],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=err)
            if await _wait_accepting(port, proc, "nghttpx", errors):
                break
            assert attempt < 2, errors.read_text()
        with _stopping(proc, signal.SIGQUIT):  # nghttpx's graceful shutdown
            h2, h1, generations = await _rollouts_under_load(sup, f"http://127.0.0.1:{port}/")
            error_log = errors.read_text()  # (before nghttpx is stopped, which it logs)
        h2.check("h2c through nghttpx")
        h1.check("HTTP/1.1 through nghttpx")
        _check_generations(generations)
        await _check_old_workers_stopped_soon(sup, generations)
    _check_h1_pids(h1, generations)
    # The access log: one line per request, each a 200.
    lines = access.read_text().splitlines()
    assert not [line for line in lines if not line.startswith("200 GET /?h")], lines[:20]
    tags = collections.Counter(line.split()[2].partition("?")[2] for line in lines)
    assert tags == h2.tags + h1.tags, {t: (h2.tags + h1.tags)[t] - tags[t]
                                       for t in tags | h2.tags | h1.tags
                                       if tags[t] != (h2.tags + h1.tags)[t]}
    # The error log: nothing about the backend (no reset, no failed connection, no retry).
    noted = [line for line in error_log.splitlines()
             if " NOTICE " not in line and " INFO " not in line]
    assert not noted, noted


@pytest.mark.parametrize("maint_first", [False, True], ids=["sigterm", "maint-then-sigterm"])
async def test_haproxy_moves_to_another_host_when_one_is_stopped(
    tmp_path: Path, maint_first: bool,
) -> None:
    # Two hosts (two supervisors) behind HAProxy, one server line each; SIGTERM to one
    # under load. Its port closes at once: HAProxy's new connections to it are refused and
    # redispatched (retry-on conn-failure empty-response, option redispatch), its open ones
    # get GOAWAY and their requests finish, and its health check takes it out. Put in
    # maintenance first (on the stats socket), it gets no new request, and nothing is
    # retried.
    config = (EXAMPLES / "haproxy.cfg").read_text()
    line = next(x for x in config.splitlines() if x.strip().startswith("server app1 "))
    config = config.replace(line, line + "\n" + line.replace("app1", "app2").replace(
        "${BACKEND}", "${BACKEND2}"))
    (tmp_path / "haproxy.cfg").write_text(config)
    h2load = require("h2load")
    async with workers() as one, workers() as two:
        hap = await _start_haproxy(tmp_path, tmp_path / "haproxy.cfg", BACKEND=one.port,
                                   BACKEND2=two.port)
        with _stopping(hap.proc, signal.SIGUSR1):
            url = f"http://127.0.0.1:{hap.port}/"
            stop = asyncio.Event()
            loads: list[asyncio.Future[Load | H1Load]] = [
                asyncio.ensure_future(load_until(stop, h2load, url, *H2_LOAD)),
                asyncio.ensure_future(h1_load_until(stop, url)),
            ]
            try:
                await asyncio.sleep(1)
                if maint_first:
                    answer = haproxy_command(hap.stats, "set server aioh2s/app1 state maint")
                    assert answer.strip() == "", answer
                    await asyncio.sleep(0.5)  # (its requests in flight end)
                one.signal(signal.SIGTERM)
                await one.line(r"all workers stopped")
                assert await asyncio.wait_for(one.proc.wait(), 10) == 0
                # On until HAProxy's health check has seen it (inter 2s fall 2).
                deadline = time.monotonic() + 10
                while not haproxy_stats(hap.stats)["aioh2s", "app1"]["status"].startswith(
                        "MAINT" if maint_first else "DOWN"):
                    assert time.monotonic() < deadline, haproxy_stats(hap.stats)
                    await asyncio.sleep(0.1)
                await asyncio.sleep(0.5)
            finally:
                stop.set()
                h2, h1 = await asyncio.wait_for(asyncio.gather(*loads), 60)
            stats, dropped = await _haproxy_counters(hap)
    assert isinstance(h2, Load) and isinstance(h1, H1Load)
    h2.check("h2c through HAProxy", _diagnosis(hap, stats, dropped, h2, h1))
    h1.check("HTTP/1.1 through HAProxy", _diagnosis(hap, stats, dropped, h2, h1))
    requests, other = hap.requests()
    _check_logged(requests, other, dropped, h2, h1)
    bad = [m.group(0) for m in requests if (m.group("status"), m.group("term")) != ("200", "----")]
    assert not bad, bad[:20]
    servers = [m.group("server") for m in requests]
    assert set(servers[:100]) == {"app1", "app2"} and set(servers[-100:]) == {"app2"}
    app1, backend = stats["aioh2s", "app1"], stats["aioh2s", "BACKEND"]
    assert backend["hrsp_5xx"] == "0", backend
    redispatched = [m for m in requests if m.group("retries").startswith("+")]
    wredis = int(app1["wredis"])  # (a dropped log line may be one of them)
    assert len(redispatched) <= wredis <= len(redispatched) + dropped, (wredis, dropped)
    if maint_first:
        # In maintenance, app1 got no new request: nothing to retry.
        assert (wredis, app1["wretr"], app1["eresp"], app1["econ"]) == (0, "0", "0", "0"), app1
        return
    # The requests HAProxy sent to app1 while it was stopped but not yet DOWN were retried
    # on app2 (the log's retries field "+1": redispatched), and all succeeded. Now and then
    # a connection opened as app1's port closed ended before its answer (eresp): retried
    # too (retry-on empty-response), so no client saw it.
    assert redispatched and {m.group("server") for m in redispatched} == {"app2"}
    assert backend["eresp"] == app1["eresp"] and int(app1["eresp"]) <= wredis, app1
