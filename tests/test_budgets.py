"""The server-wide scheduling and reset pieces of ``aioh2s._budgets``, on their own."""

from __future__ import annotations

import asyncio

from aioh2s._budgets import RECENT_RESETS, Abuse, Line
from aioh2s.config import Config


async def test_a_line_serves_first_come_first_served_a_few_per_iteration() -> None:
    line = Line(3)
    order: list[int] = []

    async def waiter(i: int) -> None:
        await line.join()
        order.append(i)

    tasks = [asyncio.ensure_future(waiter(i)) for i in range(10)]
    await asyncio.sleep(0)  # every waiter joined, in order
    per_iteration = []
    for _ in range(8):
        before = len(order)
        await asyncio.sleep(0)
        per_iteration.append(len(order) - before)
    await asyncio.gather(*tasks)
    assert order == list(range(10))
    assert max(per_iteration) <= 3 and sum(per_iteration) == 10, per_iteration
    assert len(line) == 0


async def test_a_line_skips_waiters_cancelled_in_it() -> None:
    line = Line(1)
    futs = [line.join() for _ in range(4)]
    futs[0].cancel()
    futs[1].cancel()
    for _ in range(3):
        await asyncio.sleep(0)
    # The two cancelled places cost no iteration: the live ones went on one per iteration.
    assert futs[2].done() and not futs[2].cancelled()
    assert futs[3].done() and not futs[3].cancelled()


def test_a_rapid_resetter_resets_many_of_what_it_opened_lately() -> None:
    abuse = Abuse(Config())
    assert not abuse.rapid_resetter(100)
    for _ in range(RECENT_RESETS):
        abuse.tally(100, False)
        abuse.tally(100, True)
    assert abuse.rapid_resetter(100)
    assert abuse.rapid_resetter(101)  # the second before still counts...
    assert not abuse.rapid_resetter(102)  # ...two seconds on, no longer


def test_resets_spread_over_two_seconds_add_up() -> None:
    abuse = Abuse(Config())
    half = RECENT_RESETS // 2
    for second in (10, 11):
        for _ in range(half):
            abuse.tally(second, False)
            abuse.tally(second, True)
    assert abuse.rapid_resetter(11)
    abuse.tally(12, False)  # a new second: the first one drops out of the window
    assert not abuse.rapid_resetter(12)


def test_a_client_cancelling_a_fraction_of_many_requests_is_no_rapid_resetter() -> None:
    abuse = Abuse(Config())
    for i in range(10 * RECENT_RESETS):
        abuse.tally(5, False)
        if i % 4 == 0:
            abuse.tally(5, True)  # a quarter reset: more than RECENT_RESETS in all
    assert not abuse.rapid_resetter(5)
    few = Abuse(Config())
    for _ in range(RECENT_RESETS - 1):
        few.tally(5, False)
        few.tally(5, True)
    assert not few.rapid_resetter(5)  # every one reset, but too few to matter


def test_a_client_resetting_exactly_half_is_no_rapid_resetter() -> None:
    """Hedged requests (send two, cancel the slower) reset exactly half of what is opened."""
    abuse = Abuse(Config())
    for _ in range(2 * RECENT_RESETS):
        abuse.tally(7, False)
        abuse.tally(7, False)
        abuse.tally(7, True)
    assert not abuse.rapid_resetter(7)
    abuse.tally(7, True)  # one more than half
    assert abuse.rapid_resetter(7)
