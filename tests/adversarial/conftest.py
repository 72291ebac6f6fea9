"""Fixtures for the attack tests: a `serve` factory for instrumented aioh2s servers.

The helper modules (`rawpeer`, `dosharness`) live next to this file; this directory has no
``__init__.py``, so it is put on ``sys.path`` here to make them importable whatever pytest's
import mode.  The memory figures each attack test measured are printed at the end of the run.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import dosharness  # noqa: E402


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[dosharness.ServerUnderTest]]]:
    """Factory: ``srv = await serve(**config)`` starts aioh2s with an instrumented App."""
    started: list[dosharness.ServerUnderTest] = []

    async def _serve(**config: Any) -> dosharness.ServerUnderTest:
        srv = await dosharness.start_test_server(**config)
        started.append(srv)
        return srv

    yield _serve
    for srv in reversed(started):
        await srv.close()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the memory figures measured by the attack tests."""
    if not dosharness.FIGURES:
        return
    tr = terminalreporter
    tr.section("aioh2s attack tests: server memory (tracemalloc peak growth during the attack)")
    for name, what, peak, bound in dosharness.FIGURES:
        verdict = "ok" if peak <= bound else "OVER"
        tr.write_line(
            f"{name:<44} {what:<34} {peak / 1024:>9.0f} KiB  bound {bound / 1024:>6.0f} KiB"
            f"  {verdict}"
        )
