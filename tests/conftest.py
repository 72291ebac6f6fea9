"""Suite-wide guard against hidden trouble, and the TLS fixtures shared by several test files.

The guard (the autouse fixture ``log_guard``) makes a test fail, at teardown, when while it ran

- any logger emitted a record at WARNING or above that the test did not declare. This covers
  aioh2s's own warnings ("internal error in the connection reader task", "handler failed",
  "closing connection from ...") and everything asyncio reports through its loop exception
  handler on the ``asyncio`` logger: "Task was destroyed but it is pending!", "Future exception
  was never retrieved", "Exception in callback ...", "socket.send() raised exception.", "Fatal
  error on SSL transport", ...;
- an object was finalized with a ResourceWarning (unclosed socket, transport or event loop).
  pyproject.toml turns ``ResourceWarning`` and pytest's ``PytestUnraisableExceptionWarning``
  (how pytest reports a warning raised in ``__del__``) into errors; the guard's
  ``gc.collect()`` at teardown makes objects in reference cycles finalize inside the test that
  leaked them, after pytest-asyncio has closed the test's event loop.

A test declares a record it expects (it may occur any number of times, or not at all) with

    @pytest.mark.expect_log("aioh2s", logging.WARNING, "closing connection")

(logger name, which also matches its children; the record's exact level, as a number or a
name; a substring of the formatted message). The marker may be given several times, on a
test, a class, a module (``pytestmark``) or a ``pytest.param``. A test that only knows at run
time what it expects calls ``log_guard.expect(logger, level, substring)``; ``log_guard.records``
lists every WARNING+ record seen so far, for tests that want to assert one was logged.

tests/test_conftest_guard.py shows each of these checks failing a test that deserves it.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "once: a test whose subject does not change with the Python version or the h2 version "
        "(the CLI and README through subprocesses, mypy, 10,000-request runs against external "
        "servers); CI runs it on the newest Python only (noxfile.py)",
    )
    config.addinivalue_line(
        "markers",
        "expect_log(logger, level, substring=''): a log record at WARNING or above that this "
        "test is allowed to produce (see tests/conftest.py)",
    )


def _level(level: int | str) -> int:
    if isinstance(level, int):
        return level
    value = logging.getLevelName(level.upper())
    if not isinstance(value, int):
        raise ValueError(f"unknown log level {level!r}")
    return value


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # a record whose args do not fit its format string
        return f"{record.msg!r} % {record.args!r}"


@dataclass(frozen=True)
class ExpectedLog:
    logger: str
    level: int
    substring: str = ""

    def matches(self, record: logging.LogRecord) -> bool:
        named = record.name == self.logger or record.name.startswith(self.logger + ".")
        return named and record.levelno == self.level and self.substring in _message(record)


def _expected(logger: str, level: int | str, substring: str = "") -> ExpectedLog:
    return ExpectedLog(logger, _level(level), substring)


class _Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class LogGuard:
    """What ``log_guard`` yields: declare more expected records, or look at those seen."""

    def __init__(self, expected: list[ExpectedLog], recorder: _Recorder) -> None:
        self.expected = expected
        self._recorder = recorder

    def expect(self, logger: str, level: int | str, substring: str = "") -> None:
        self.expected.append(_expected(logger, level, substring))

    @property
    def records(self) -> list[logging.LogRecord]:
        return list(self._recorder.records)

    def unexpected(self) -> list[logging.LogRecord]:
        return [r for r in self._recorder.records if not any(e.matches(r) for e in self.expected)]


def _describe(record: logging.LogRecord) -> str:
    text = f"{record.name} {record.levelname}: {_message(record)}"
    if record.exc_info and record.exc_info[1] is not None:
        exc = record.exc_info[1]
        text += f"\n    exception: {type(exc).__name__}: {exc}"
    return text


@pytest.fixture(autouse=True)
def log_guard(request: pytest.FixtureRequest) -> Iterator[LogGuard]:
    """Fail the test on unexpected WARNING+ records (asyncio's included) and on leaks."""
    expected = [_expected(*m.args, **m.kwargs) for m in request.node.iter_markers("expect_log")]
    recorder = _Recorder()
    root = logging.getLogger()
    root.addHandler(recorder)
    guard = LogGuard(expected, recorder)
    try:
        # Autouse fixtures are set up before pytest-asyncio's event loop runner, so this
        # teardown runs after the test's loop was closed: tasks and transports the test leaked
        # are finalized by the collection below, while the recorder still listens.
        yield guard
        gc.collect()
    finally:
        root.removeHandler(recorder)
    bad = guard.unexpected()
    if bad:
        lines = "\n".join("  " + _describe(r) for r in bad)
        pytest.fail(
            f"{len(bad)} unexpected log record(s) at WARNING or above:\n{lines}\n"
            "If the test provokes this on purpose, declare it with "
            "@pytest.mark.expect_log(logger, level, substring); otherwise it is a bug.",
            pytrace=False,
        )


# -- TLS: one CA and one certificate for localhost / 127.0.0.1 for the whole run ---------------


@dataclass(frozen=True)
class CertFiles:
    cert: str
    key: str
    ca: str

    def __iter__(self) -> Iterator[str]:  # cert, key, ca = cert_files
        return iter((self.cert, self.key, self.ca))


@pytest.fixture(scope="session")
def ca() -> Any:
    trustme = pytest.importorskip("trustme")
    return trustme.CA()


@pytest.fixture(scope="session")
def cert_files(ca: Any, tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    """PEM files: the leaf chain for localhost and 127.0.0.1, its key, and the CA."""
    d: Path = tmp_path_factory.mktemp("certs")
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    cert, key, ca_path = d / "cert.pem", d / "key.pem", d / "ca.pem"
    cert.write_bytes(b"".join(p.bytes() for p in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_path))
    return CertFiles(str(cert), str(key), str(ca_path))


@pytest.fixture(params=["h2c", "tls"])
def wire(request: pytest.FixtureRequest) -> Any:
    """Run the test over cleartext (h2c) and over TLS with ALPN h2: a ``helpers.Wire``."""
    from helpers import Wire  # here, not at the top: tests/test_conftest_guard.py copies this file

    if request.param == "tls":
        return Wire("tls", request.getfixturevalue("cert_files"))
    return Wire("h2c")
