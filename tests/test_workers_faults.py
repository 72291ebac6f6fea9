"""``aioh2s.serve`` when things go wrong: signals to the whole group, deaths during a
rollout, a port taken on restart, startup hooks that fail, and what serve() refuses.

Every test runs a real supervisor (tests/workers_harness.py) with real workers serving
tests/workers_app.py on 127.0.0.1, and reads its log; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import aioh2s
from workers_harness import Supervisor, _start, get, stopped_at_exit

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="SO_REUSEPORT load balancing is Linux's")


@pytest.fixture
async def supervisors() -> AsyncIterator[list[Supervisor]]:
    async with stopped_at_exit() as started:
        yield started


async def _slow(port: int, seconds: float) -> tuple[aioh2s.Client, asyncio.Future[bytes]]:
    """A request answered after ``seconds``, under way (headers in): its client and body."""
    client = await aioh2s.connect("127.0.0.1", port)
    stream = await client.request({":path": f"/slow?{seconds}"}, end_stream=True)
    await asyncio.wait_for(stream.response_headers(), 5)
    return client, asyncio.ensure_future(stream.reader.read())


async def test_sigterm_to_the_whole_process_group_keeps_the_grace(
    supervisors: list[Supervisor],
) -> None:
    # systemd's default KillMode=control-group: SIGTERM to every process, then the
    # supervisor's own SIGTERM to each worker. Two SIGTERMs must not mean "hurry". (The
    # workers lead groups of their own: the group's SIGTERM reaches only the supervisor,
    # and the workers get theirs from the loop below, as from systemd's cgroup.)
    sup = await _start(supervisors, workers=2, grace=5, new_session=True)
    client, body = await _slow(sup.port, 1.0)
    try:
        sup.signal_group(signal.SIGTERM)
        # Two signals sent that close together may reach a process as one: one more each,
        # later, so that every worker surely gets two.
        await asyncio.sleep(0.2)
        for pid in sup.pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        assert int(await asyncio.wait_for(body, 5)) in sup.pids  # served, not reset
        assert await sup.wait(10) == 0
    finally:
        await asyncio.wait_for(client.close(), 5)
    assert "without grace" not in sup.log() and "killing" not in sup.log()


@pytest.mark.once
async def test_a_second_sigterm_to_the_supervisor_cuts_the_grace(
    supervisors: list[Supervisor],
) -> None:
    sup = await _start(supervisors, workers=1, grace=30)
    client, body = await _slow(sup.port, 20)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        sup.signal(signal.SIGTERM)
        await sup.line(r"SIGTERM: stopping 1 worker")
        sup.signal(signal.SIGTERM)
        await sup.line(r"SIGTERM again: the workers stop without grace")
        with pytest.raises(aioh2s.StreamReset):
            await asyncio.wait_for(body, 5)
        assert await sup.wait(10) == 0
        assert loop.time() - started < 8
    finally:
        await asyncio.wait_for(client.close(), 5)


async def test_sigterm_during_a_rollout_leaves_the_draining_worker_its_grace(
    supervisors: list[Supervisor],
) -> None:
    sup = await _start(supervisors, workers=1, grace=5)
    (old,) = sup.pids
    client, body = await _slow(sup.port, 1.5)
    try:
        mark = len(sup.lines)
        sup.signal(signal.SIGHUP)
        await sup.line(rf"it replaces worker {old}, which is stopping gracefully", after=mark)
        sup.signal(signal.SIGTERM)  # the old worker is draining: it must not be hurried
        assert int(await asyncio.wait_for(body, 5)) == old
        assert await sup.wait(10) == 0
    finally:
        await asyncio.wait_for(client.close(), 5)
    assert "killing" not in sup.log()


async def test_an_old_worker_dying_while_its_replacement_starts_leaves_one_worker(
    supervisors: list[Supervisor], tmp_path: Path,
) -> None:
    slow = tmp_path / "import"
    sup = await _start(supervisors, workers=1, env={"WORKERS_APP_IMPORT": str(slow)})
    (old,) = sup.pids
    slow.write_text("slow 1.5")  # the replacement takes 1.5 s to load the handler
    mark = len(sup.lines)
    sup.signal(signal.SIGHUP)
    await sup.line(r"workers_app: imported in \d+ \(slow 1.5\)", after=mark)
    os.kill(old, signal.SIGKILL)
    m = await sup.line(rf"worker {old} \(slot 0\) was killed by signal 9 \(SIGKILL\) while "
                       r"its replacement worker (\d+) \(slot 0\) starts", after=mark)
    new = int(m.group(1))
    await sup.line(r"rolling restart done", after=mark)
    await asyncio.sleep(0.3)  # (a restart timer, had one been armed, fires at 0.1 s)
    assert sup.workers() == {new}
    assert int(await get(sup.port)) == new
    assert "restarting it in" not in sup.log()


@pytest.mark.once
async def test_a_replaced_worker_that_does_not_exit_is_killed_after_its_grace(
    supervisors: list[Supervisor], tmp_path: Path,
) -> None:
    hang = tmp_path / "shutdown"
    hang.write_text("slow 60")
    sup = await _start(supervisors, workers=1, grace=0.5, handler="'workers_app:app'",
                       env={"WORKERS_APP_SHUTDOWN": str(hang)})
    (old,) = sup.pids
    sup.signal(signal.SIGHUP)
    await sup.line(rf"it replaces worker {old}, which is stopping gracefully")
    await sup.line(rf"WARNING aioh2s: worker {old} \(slot 0\) still running 5.5 s after "
                   r"SIGTERM: killing it", timeout=10)
    await sup.line(rf"worker {old} \(slot 0\) stopped \(it was killed by signal 9")
    hang.unlink()


async def test_a_killed_lone_worker_keeps_the_port_and_refuses_no_connection(
    supervisors: list[Supervisor],
) -> None:
    # The slot's socket stays open through the restart's backoff: connections queue in it
    # for the replacement (closing it refused them, and freed the port for anyone).
    sup = await _start(supervisors, workers=1)
    (victim,) = sup.pids
    results: list[int | BaseException] = []
    stop = asyncio.Event()

    async def one_connection_per_request() -> None:
        while not stop.is_set():
            try:
                results.append(int(await get(sup.port)))
            except Exception as e:
                results.append(e)

    loops = [asyncio.ensure_future(one_connection_per_request()) for _ in range(3)]
    try:
        await asyncio.sleep(0.3)
        mark = len(sup.lines)
        os.kill(victim, signal.SIGKILL)
        await sup.line(rf"worker {victim} \(slot 0\) was killed .*; restarting it in 0\.1 s",
                       after=mark)
        with pytest.raises(OSError) as taken:
            socket.create_server(("127.0.0.1", sup.port)).close()  # the port is still held
        assert taken.value.errno == errno.EADDRINUSE
        m = await sup.line(r"worker (\d+) \(slot 0\) is accepting connections", after=mark)
        new = int(m.group(1))
        await asyncio.sleep(0.3)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*loops), 15)
    failures = [r for r in results if isinstance(r, BaseException)]
    refused = [f for f in failures if isinstance(f, OSError)
               and f.errno in (errno.ECONNREFUSED, errno.ECONNRESET)]
    assert not refused, failures
    assert len(failures) <= len(loops), failures  # at most the requests the victim had taken
    assert set(results[-3:]) == {new}
    assert results.count(victim) > 3 and results.count(new) > 3


async def test_sighup_to_the_group_while_workers_start_kills_none(
    supervisors: list[Supervisor],
) -> None:
    sup = await Supervisor.start(workers=2, new_session=True)
    supervisors.append(sup)
    for _ in range(5000):  # its handlers are in once it spawns workers: hang up from then on
        if sup.workers():
            break
        await asyncio.sleep(0.002)
    serving = asyncio.ensure_future(sup.serving())
    try:
        for _ in range(1500):  # a hangup every 10 ms until all serve (15 s at most)
            if serving.done():
                break
            sup.signal_group(signal.SIGHUP)
            await asyncio.sleep(0.01)
        await serving
    finally:
        if not serving.done():
            serving.cancel()
    await sup.line(r"rolling restart done")  # (the supervisor took the hangups as SIGHUPs)
    assert "killed by signal" not in sup.log()
    assert int(await get(sup.port)) in sup.workers()
    sup.signal(signal.SIGTERM)
    assert await sup.wait(10) == 0


async def test_lifespan_startup_and_shutdown_run_in_every_worker(
    supervisors: list[Supervisor],
) -> None:
    sup = await _start(supervisors, workers=2, handler="'workers_app:app'")
    for pid in sup.pids:
        await sup.line(rf"workers_app: startup in {pid} \(plain\)")
    assert int(await get(sup.port)) in sup.pids
    sup.signal(signal.SIGTERM)
    assert await sup.wait(10) == 0
    for pid in sup.pids:
        await sup.line(rf"workers_app: shutdown in {pid}")
    # shutdown() after the server closed: after the worker stopped accepting connections
    assert sup.log().index("shutdown in") > sup.log().index("SIGTERM: stopping")


@pytest.mark.once
async def test_a_failing_startup_stops_serve_at_first_start(
    supervisors: list[Supervisor], tmp_path: Path,
) -> None:
    startup = tmp_path / "startup"
    startup.write_text("fail")
    sup = await Supervisor.start(workers=1, handler="'workers_app:app'",
                                 env={"WORKERS_APP_STARTUP": str(startup)})
    supervisors.append(sup)
    assert await sup.wait(15) == 1
    log = sup.log()
    assert "the handler's startup() failed; exiting (code 3)" in log
    assert "RuntimeError: the test asked this startup to fail" in log
    assert "exited with code 3 while the workers were starting" in log
    assert "1 of 1 worker(s) ended before accepting connections" in log


@pytest.mark.once
async def test_a_failing_startup_stops_a_rollout_and_backs_off_a_restart(
    supervisors: list[Supervisor], tmp_path: Path,
) -> None:
    startup = tmp_path / "startup"
    sup = await _start(supervisors, workers=2, handler="'workers_app:app'",
                       env={"WORKERS_APP_STARTUP": str(startup)})
    startup.write_text("fail")
    mark = len(sup.lines)
    sup.signal(signal.SIGHUP)
    await sup.line(r"rolling restart stopped: the new worker \d+ \(slot \d\) exited with code 3 "
                   r"before it accepted connections; the other workers go on serving", after=mark)
    assert sup.workers() == sup.pids
    assert {int(await get(sup.port)) for _ in range(20)} <= sup.pids
    # A crash now: the restart fails its startup too, and is retried with growing delays.
    victim = min(sup.pids)
    mark = len(sup.lines)
    os.kill(victim, signal.SIGKILL)
    delays = []
    for _ in range(3):
        m = await sup.line(r"worker \d+ \(slot \d\) (?:was killed by signal 9 \(SIGKILL\)|"
                           r"exited with code 3); restarting it in (\d+\.\d) s", after=mark)
        delays.append(float(m.group(1)))
        mark = sup.lines.index(m.string) + 1
    assert delays == [0.1, 0.2, 0.4]
    startup.unlink()  # the application is fixed: the next restart serves
    await sup.line(r"is accepting connections", after=mark, timeout=10)
    sup.signal(signal.SIGTERM)
    assert await sup.wait(10) == 0


@pytest.mark.once
async def test_port_0_is_reported_to_ready(supervisors: list[Supervisor]) -> None:
    sup = await _start(supervisors, workers=1,
                       extra=", ready=lambda host, port: print('READY', host, port, "
                             "file=sys.stderr, flush=True)")
    m = await sup.line(r"READY 127\.0\.0\.1 (\d+)")
    assert int(m.group(1)) == sup.port != 0
    assert int(await get(sup.port)) in sup.pids


@pytest.mark.once
@pytest.mark.skipif(not socket.has_dualstack_ipv6(), reason="no IPv6 here")
async def test_host_none_serves_ipv4_and_ipv6(supervisors: list[Supervisor]) -> None:
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError:
        pytest.skip("no ::1 here")
    sup = await _start(supervisors, workers=2, host=None)
    assert "(IPv4 and IPv6)" in sup.log()
    assert int(await get(sup.port)) in sup.pids  # 127.0.0.1
    assert int(await get(sup.port, host="::1")) in sup.pids


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"workers": 10**6}, ValueError, "workers must be a whole number from 1 to 256"),
    ({"workers": True}, ValueError, "workers must be a whole number"),
    ({"port": -1}, ValueError, "port must be a whole number from 0 to 65535"),
    ({"port": "80"}, ValueError, "port must be"),
    ({"host": 127}, TypeError, "host must be a string or None"),
    ({"backlog": 0}, ValueError, "backlog must be"),
    ({"ready": 3}, TypeError, "ready must be a callable"),
    ({"ssl": object()}, TypeError, "ssl must be a callable"),
    ({"ssl": lambda: None}, TypeError, "cannot reach the workers"),
    ({"start_timeout": 0}, ValueError, "start_timeout must be a finite number of seconds"),
    ({"start_timeout": float("inf")}, ValueError, "start_timeout must be"),
    ({"start_timeout": "5"}, ValueError, "start_timeout must be"),
])
def test_serve_validates_before_it_starts_anything(kwargs: dict[str, Any], error: type,
                                                   match: str) -> None:
    with pytest.raises(error, match=match):
        aioh2s.serve("workers_app:handler", **kwargs)


@pytest.mark.once
@pytest.mark.parametrize("tls", [False, True], ids=["h2c", "tls"])
async def test_rollouts_fail_no_request_of_clients_without_retry(
    supervisors: list[Supervisor], cert_files: Any, tls: bool,
) -> None:
    # Clients that open a connection per request and never retry, hammering the port
    # through rolling restarts, a few thousand requests: not one may fail.
    connect: dict[str, Any] = {}
    extra = ""
    if tls:
        extra = (f", ssl=functools.partial(aioh2s.server_ssl_context, {cert_files.cert!r}, "
                 f"{cert_files.key!r})")
        connect = {"ssl": aioh2s.client_ssl_context(cert_files.ca),
                   "server_hostname": "localhost"}
    sup = await _start(supervisors, workers=2, grace=3, extra=extra)
    failures: list[BaseException] = []
    served: list[int] = []
    stop = asyncio.Event()

    async def client() -> None:
        while not stop.is_set():
            try:
                served.append(int(await get(sup.port, **connect)))
            except Exception as e:  # every failure counts
                failures.append(e)

    clients = [asyncio.ensure_future(client()) for _ in range(8)]
    pids = [set(sup.pids)]
    target = 1000 if tls else 3000  # (TLS handshakes cost this one client process more)
    try:
        for _ in range(10):  # rolling restarts until the target is reached
            if len(served) >= target:
                break
            await asyncio.sleep(0.3)
            mark = len(sup.lines)
            sup.signal(signal.SIGHUP)
            done = await sup.line(r"rolling restart done \(pids ([\d, ]+)\)", after=mark)
            pids.append({int(p) for p in done.group(1).split(", ")})
        await asyncio.sleep(0.3)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*clients), 15)
    assert not failures, (len(failures), len(served), failures[:5])
    assert len(served) >= target, len(served)
    assert set(served) == set().union(*pids)  # every generation served some
    print(f"{len(served)} requests, {len(set(served))} workers, 0 failures")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


async def test_a_worker_with_a_process_pool_stops_at_once_and_leaves_nothing(
    supervisors: list[Supervisor],
) -> None:
    # multiprocessing's exit in the worker would join the pool's process before the pool's
    # exit hook stops it: the worker hung until killed at grace + 5 s (3.10 to 3.12).
    sup = await _start(supervisors, workers=1, grace=3)
    worker, child = map(int, (await get(sup.port, "/pool")).split())
    assert worker in sup.pids and _alive(child)
    assert os.getpgid(worker) == worker == os.getpgid(child)  # a group of its own
    loop = asyncio.get_running_loop()
    started = loop.time()
    sup.signal(signal.SIGTERM)
    assert await sup.wait(10) == 0
    assert loop.time() - started < 2.5  # (the grace is 3 s: no request was under way)
    assert "killing" not in sup.log() and not _alive(child)


async def test_a_killed_worker_leaves_no_pool_process_behind(
    supervisors: list[Supervisor],
) -> None:
    sup = await _start(supervisors, workers=1)
    worker, child = map(int, (await get(sup.port, "/pool")).split())
    mark = len(sup.lines)
    os.kill(worker, signal.SIGKILL)
    await sup.line(rf"WARNING aioh2s: worker {worker} \(slot 0\) was killed by signal 9 "
                   r"\(SIGKILL\) and left \d+ process\(es\) in its process group: killed them",
                   after=mark)
    for _ in range(200):
        if not _alive(child):
            break
        await asyncio.sleep(0.01)
    assert not _alive(child)
    await sup.line(r"worker \d+ \(slot 0\) is accepting connections", after=mark)
    sup.signal(signal.SIGTERM)
    assert await sup.wait(10) == 0


async def test_a_killed_worker_with_a_forked_child_is_seen_dead_and_restarted(
    supervisors: list[Supervisor],
) -> None:
    # The forked child holds the worker's end of its multiprocessing sentinel open: the
    # supervisor watched only the sentinel and never saw the worker die (no restart).
    sup = await _start(supervisors, workers=1)
    worker, child = map(int, (await get(sup.port, "/forked")).split())
    assert worker in sup.pids and _alive(child)
    mark = len(sup.lines)
    os.kill(worker, signal.SIGKILL)
    await sup.line(rf"WARNING aioh2s: worker {worker} \(slot 0\) was killed by signal 9 "
                   r"\(SIGKILL\) and left \d+ process\(es\) in its process group: killed them",
                   after=mark)
    for _ in range(200):
        if not _alive(child):
            break
        await asyncio.sleep(0.01)
    assert not _alive(child)
    await sup.line(r"worker \d+ \(slot 0\) is accepting connections", after=mark)
    assert int(await get(sup.port, "/")) != worker
    sup.signal(signal.SIGTERM)
    assert await sup.wait(10) == 0


async def test_start_timeout_bounds_a_slow_import(supervisors: list[Supervisor],
                                                  tmp_path: Path) -> None:
    slow = tmp_path / "import"
    slow.write_text("slow 4")
    sup = await Supervisor.start(workers=1, extra=", start_timeout=0.5",
                                 env={"WORKERS_APP_IMPORT": str(slow)})
    supervisors.append(sup)
    assert await sup.wait(15) == 1
    log = sup.log()
    assert re.search(r"ERROR aioh2s: worker \d+ \(slot 0\) is not accepting connections 0\.5 s "
                     r"after it started \(the start_timeout\); killing it", log), log
    assert "1 of 1 worker(s) ended before accepting connections" in log


def test_serve_refuses_a_port_that_another_serve_listens_on() -> None:
    # Another serve()'s sockets: SO_REUSEPORT, which ours would silently have joined.
    other = socket.create_server(("127.0.0.1", 0), reuse_port=True)
    try:
        port = other.getsockname()[1]
        with pytest.raises(OSError, match="is in use by another process") as e:
            aioh2s.serve("workers_app:handler", "127.0.0.1", port, workers=2)
        assert e.value.errno == errno.EADDRINUSE
        assert f"http://127.0.0.1:{port}" in str(e.value)
    finally:
        other.close()


async def test_a_ready_callback_that_raises_is_logged_and_stops_the_workers_gracefully(
    supervisors: list[Supervisor],
) -> None:
    sup = await Supervisor.start(workers=2, extra=", ready=lambda host, port: 1 / 0")
    supervisors.append(sup)
    assert await sup.wait(15) == 1  # serve() raised it
    log = sup.log()
    assert "ERROR aioh2s: the ready callback raised; stopping the workers gracefully" in log
    assert log.count("ZeroDivisionError") >= 2  # logged, then raised from serve()
    assert len(re.findall(r"worker \d+ \(slot \d\) stopped \(it exited with code 0\)", log)) == 2
    assert "killed by signal" not in log


@pytest.mark.once
async def test_rolling_restart_done_waits_for_a_slot_restarting_meanwhile(
    supervisors: list[Supervisor], tmp_path: Path,
) -> None:
    slow = tmp_path / "import"
    slow.write_text("slow 1")  # every import takes 1 s...
    sup = await _start(supervisors, workers=2, env={"WORKERS_APP_IMPORT": str(slow)})
    mark = len(sup.lines)
    sup.signal(signal.SIGHUP)
    m = await sup.line(r"worker (\d+) \(slot (\d)\) is accepting connections; it replaces",
                       after=mark)
    first, slot = int(m.group(1)), m.group(2)
    await sup.line(rf"workers_app: imported in (?!{first}\b)\d+ \(slow 1\)", after=mark)
    slow.write_text("slow 3")  # ...and the restart of the first one, once the second is in
    os.kill(first, signal.SIGKILL)
    back = await sup.line(rf"worker \d+ \(slot {slot}\) is accepting connections$",
                          after=mark)
    done = await sup.line(r"rolling restart done", after=mark)
    assert sup.lines.index(back.string, mark) < sup.lines.index(done.string, mark)
