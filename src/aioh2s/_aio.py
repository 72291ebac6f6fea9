"""asyncio helpers that behave the same on every supported Python.

Theory of operation: ``asyncio.wait_for`` before 3.12 can *swallow a cancellation* that
arrives as the awaited operation completes (CPython gh-86296): the caller gets the result
although ``task.cancel()`` returned True, so a cancelled ``connect()`` could return a live
connection nobody owns. :func:`wait_for` here awaits the operation directly, so a
cancellation is always delivered; a result that completed in that same instant is handed to
``orphan`` so it can be closed instead of leaked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["Deadline", "wait_for"]

_T = TypeVar("_T")


async def wait_for(
    aw: Awaitable[_T], timeout: float | None, orphan: Callable[[_T], None] | None = None
) -> _T:
    """``await aw`` for at most ``timeout`` seconds (``None``: no limit).

    Raises ``asyncio.TimeoutError`` on timeout and ``CancelledError`` whenever the caller
    was cancelled, even if ``aw`` finished at the same moment (its result then goes to
    ``orphan``).
    """
    fut = asyncio.ensure_future(aw)
    loop = asyncio.get_running_loop()
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        fut.cancel()

    timer = loop.call_later(timeout, expire) if timeout is not None else None
    try:
        return await fut
    except asyncio.CancelledError:
        if fut.done() and not fut.cancelled() and fut.exception() is None:
            if orphan is not None:
                orphan(fut.result())
            raise
        task = asyncio.current_task()
        cancelling = getattr(task, "cancelling", None)
        if expired and not (cancelling is not None and cancelling()):
            raise asyncio.TimeoutError() from None
        raise
    finally:
        if timer is not None:
            timer.cancel()


class Deadline:
    """``async with Deadline(seconds, make_error):`` cancels the block when time runs out.

    Like ``asyncio.timeout()`` (3.11+) on every supported Python, but raising
    ``make_error()`` instead of ``TimeoutError``. A cancellation from elsewhere that arrives
    in the same instant stays a cancellation on 3.11+, where ``Task.uncancel`` tells them
    apart.
    """

    def __init__(self, seconds: float | None, make_error: Callable[[], BaseException]) -> None:
        self._seconds = seconds
        self._make_error = make_error
        self._handle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[object] | None = None
        self.expired = False

    async def __aenter__(self) -> Deadline:
        if self._seconds is not None:
            self._task = asyncio.current_task()
            self._handle = asyncio.get_running_loop().call_later(self._seconds, self._expire)
        return self

    def _expire(self) -> None:
        self._handle = None
        if self._task is not None and not self._task.done():
            self.expired = True
            self._task.cancel()

    async def __aexit__(self, et: type[BaseException] | None, e: object, tb: object) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self.expired and et is asyncio.CancelledError:
            uncancel = getattr(self._task, "uncancel", None)
            if uncancel is None or uncancel() == 0:
                raise self._make_error() from None
