"""``orsim._alarm.Alarm``: a wait for a wake-up or a deadline, kept by the simulation's
clock without a cancellation, and the same waits under trio's MockClock."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing

from orsim._alarm import Alarm, sleep_until, timer_clock
from orsim.sim import SimClock


def run_with(clock_name: str, fn: Callable[[], Any]) -> Any:
    clock: trio.abc.Clock = (
        SimClock() if clock_name == "sim" else trio.testing.MockClock(autojump_threshold=0)
    )
    return trio.run(fn, clock=clock)


@pytest.mark.parametrize("clock_name", ["sim", "mock"])
def test_an_alarm_wakes_at_its_deadline_or_when_woken(clock_name: str) -> None:
    async def main() -> list[tuple[str, float]]:
        assert (timer_clock() is not None) == (clock_name == "sim")
        seen: list[tuple[str, float]] = []
        alarm = Alarm()
        await alarm.wait_until(trio.current_time() + 1.5)
        seen.append(("deadline", trio.current_time()))

        async def wake_later() -> None:
            await trio.sleep(0.25)
            alarm.wake()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wake_later)
            await alarm.wait_until(trio.current_time() + 10)
            seen.append(("woken", trio.current_time()))
        # The woken wait's deadline no longer counts: a later, shorter wait is its own.
        await alarm.wait_until(trio.current_time() + 0.5)
        seen.append(("deadline", trio.current_time()))
        alarm.wake()  # nobody waits: the next wait returns at once
        await alarm.wait_until(trio.current_time() + 10)
        seen.append(("pending", trio.current_time()))
        await sleep_until(trio.current_time() + 2)
        seen.append(("slept", trio.current_time()))
        with trio.move_on_after(0.5):
            await alarm.wait_until(trio.current_time() + 10)
        seen.append(("cancelled", trio.current_time()))
        await alarm.wait_until(trio.current_time() + 1)  # the cancelled wait's timer is gone
        seen.append(("deadline", trio.current_time()))
        return seen

    assert run_with(clock_name, main) == [
        ("deadline", pytest.approx(1.5)),
        ("woken", pytest.approx(1.75)),
        ("deadline", pytest.approx(2.25)),
        ("pending", pytest.approx(2.25)),
        ("slept", pytest.approx(4.25)),
        ("cancelled", pytest.approx(4.75)),
        ("deadline", pytest.approx(5.75)),
    ]


def test_many_alarms_ring_at_their_deadlines() -> None:
    async def main() -> list[tuple[int, float]]:
        rung: list[tuple[int, float]] = []

        async def sleeper(n: int, at: float) -> None:
            await sleep_until(at)
            rung.append((n, trio.current_time()))

        async with trio.open_nursery() as nursery:
            for n, at in enumerate([3.0, 1.0, 2.0, 1.0, 3.0]):
                nursery.start_soon(sleeper, n, at)
        return rung

    rung = run_with("sim", main)
    assert sorted(rung) == [(0, 3.0), (1, 1.0), (2, 2.0), (3, 1.0), (4, 3.0)]
    assert [t for _, t in rung] == [1.0, 1.0, 2.0, 3.0, 3.0]
