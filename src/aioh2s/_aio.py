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

__all__ = ["deadline", "wait_for"]

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


async def deadline(
    aw: Awaitable[_T], seconds: float, make_error: Callable[[], BaseException]
) -> _T:
    """``await aw`` for at most ``seconds``, then cancel it and raise ``make_error()``.

    ``aw`` runs as a child task awaited through ``shield``, so the two cancellations never
    mix, on every Python: a cancellation of the caller finds the child still running (it is
    cancelled and awaited, then the caller's ``CancelledError`` goes on), while the deadline
    cancels only the child. Had both happened in the same instant, the caller's wins.
    """
    fut = asyncio.ensure_future(aw)
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        fut.cancel()

    timer = asyncio.get_running_loop().call_later(seconds, expire)
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        if not fut.done():  # the caller was cancelled: take the child with it
            fut.cancel()
            try:
                await fut
            except BaseException:  # noqa: BLE001 - its outcome is moot: we were cancelled
                pass
            raise
        if expired and fut.cancelled():
            raise make_error() from None
        raise
    finally:
        timer.cancel()
