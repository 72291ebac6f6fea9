"""tests/conftest.py's guard fails a test on hidden trouble, and only then.

An inner pytest run (in a subprocess, with this suite's conftest.py and pyproject.toml) holds
one test per kind of trouble and a few that must still pass; each outcome is checked by name.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

INNER = r'''
import asyncio
import gc
import logging
import socket

import pytest


def test_clean():
    logging.getLogger("aioh2s").info("info is fine")


def test_logs_a_warning():
    logging.getLogger("aioh2s").warning("closing connection from x: peer misbehaved")


@pytest.mark.expect_log("aioh2s", logging.WARNING, "peer misbehaved")
def test_declared_warning_passes():
    logging.getLogger("aioh2s").warning("closing connection from x: peer misbehaved")
    logging.getLogger("aioh2s.compat").warning("child loggers match too: peer misbehaved")


@pytest.mark.expect_log("aioh2s", "WARNING", "something else")
def test_declared_substring_must_match():
    logging.getLogger("aioh2s").warning("closing connection from x: peer misbehaved")


@pytest.mark.expect_log("aioh2s", logging.WARNING, "handler failed")
def test_declared_level_must_match():
    logging.getLogger("aioh2s").error("handler failed on stream 1")


@pytest.mark.parametrize(
    "n", [pytest.param(1, marks=pytest.mark.expect_log("x", logging.ERROR, "one")), 2]
)
def test_param_marks(n):
    logging.getLogger("x").error("one" if n == 1 else "two")


def test_runtime_expectation(log_guard):
    log_guard.expect("aioh2s", logging.ERROR, "internal")
    logging.getLogger("aioh2s").error("aioh2s: internal error, on purpose")
    assert len(log_guard.records) == 1


def test_leaks_a_socket():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    del s


def test_leaks_a_socket_in_a_cycle():
    cycle = [socket.socket()]
    cycle.append(cycle)
    del cycle  # only the guard's gc.collect() at teardown finalizes it


def test_leaks_an_event_loop():
    cycle = [asyncio.new_event_loop()]
    cycle.append(cycle)


PEERS = []  # kept open past the test: a peer that closes would make the transport close too


async def test_leaks_a_transport():
    # A bare listening socket: asyncio's Server.wait_closed() would wait for the leak (3.12+).
    lsock = socket.socket()
    PEERS.append(lsock)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen()
    loop = asyncio.get_running_loop()
    connecting = loop.create_connection(asyncio.Protocol, *lsock.getsockname())
    transport, _ = await asyncio.wait_for(connecting, 5)
    cycle = [transport]
    cycle.append(cycle)
    del transport, cycle  # the loop still watches it; freed once the loop is closed


def test_task_destroyed_pending_at_teardown():
    loop = asyncio.new_event_loop()

    async def start():
        async def forever():
            await loop.create_future()  # nobody else holds this future

        asyncio.ensure_future(forever())
        await asyncio.sleep(0)

    loop.run_until_complete(start())
    loop.close()  # the task is still pending; gc finds it at teardown


async def test_task_destroyed_pending_while_running():
    async def forever():
        await asyncio.get_running_loop().create_future()

    asyncio.ensure_future(forever())
    await asyncio.sleep(0)
    gc.collect()


async def test_future_exception_never_retrieved():
    asyncio.get_running_loop().create_future().set_exception(RuntimeError("lost"))


async def test_cancelled_pending_task_is_fine():
    task = asyncio.ensure_future(asyncio.sleep(30))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
'''

BAD = [
    "test_logs_a_warning",
    "test_declared_substring_must_match",
    "test_declared_level_must_match",
    "test_param_marks[2]",
    "test_leaks_a_socket",
    "test_leaks_a_socket_in_a_cycle",
    "test_leaks_an_event_loop",
    "test_leaks_a_transport",
    "test_task_destroyed_pending_at_teardown",
    "test_task_destroyed_pending_while_running",
    "test_future_exception_never_retrieved",
]
GOOD = [
    "test_clean",
    "test_declared_warning_passes",
    "test_param_marks[1]",
    "test_runtime_expectation",
    "test_cancelled_pending_task_is_fine",
]


@pytest.mark.timeout(120)
def test_guard_fails_exactly_the_tests_with_hidden_trouble(pytester: pytest.Pytester) -> None:
    pytester.makeconftest((HERE / "conftest.py").read_text())
    # The real [tool.pytest.ini_options] (filterwarnings, asyncio_mode, markers, ...).
    pytester.makepyprojecttoml((HERE.parent / "pyproject.toml").read_text())
    pytester.makepyfile(test_inner=INNER)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-rA", "-o", "timeout=20", "test_inner.py", timeout=100
    )
    out = result.stdout.str()
    status: dict[str, set[str]] = {}
    for line in out.splitlines():
        word, _, rest = line.partition(" ")
        if word in ("PASSED", "FAILED", "ERROR") and rest.startswith("test_inner.py::"):
            name = rest.split("::", 1)[1].split(" ", 1)[0]
            status.setdefault(name, set()).add(word)
    for name in GOOD:
        assert status.get(name) == {"PASSED"}, (name, status.get(name), out)
    for name in BAD:
        assert status.get(name, set()) & {"FAILED", "ERROR"}, (name, status.get(name), out)
    assert len(status) == len(GOOD) + len(BAD), (sorted(status), out)
    # The reasons are spelled out.
    for text in (
        "closing connection from x: peer misbehaved",
        "Task was destroyed but it is pending",
        "Future exception was never retrieved",
        "ResourceWarning",
        "unclosed event loop",
        "unclosed transport",
    ):
        assert text in out, (text, out)
