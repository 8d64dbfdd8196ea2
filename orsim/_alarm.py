"""A task's wait for a wake-up call or a deadline, whichever comes first: ``Alarm``.

With trio, such a wait is an Event waited on in a cancel scope with a deadline, and a
deadline that comes is a cancellation: an exception raised into the task and caught,
with the cancel scope's bookkeeping, several times the cost of the wake-up itself. The
periodic waits of the servers (a generator's pacing, a node's next decision, the memory
links' timers, a scenario's status samples) wake mostly by their deadlines, and a
simulation makes thousands of them a second.

A clock that keeps such deadlines itself (``timer_clock``: the simulation's ``SimClock``
has ``add_timer``) wakes the task directly when its time comes, with no cancel scope and
no exception; under any other clock (real processes, trio's MockClock) an ``Alarm`` is
the Event and cancel scope it replaces. Either way the task wakes at the same virtual
time, and cancelling the task ends the wait as usual.
"""

from __future__ import annotations

import math
from typing import Protocol

import trio


class TimerClock(Protocol):
    """A clock that wakes alarms itself (see ``orsim.sim.SimClock``)."""

    def current_time(self) -> float:
        """The clock's time now (as ``trio.current_time``)."""
        ...

    def add_timer(self, deadline: float, alarm: Alarm, token: int) -> None:
        """Call ``alarm.ring(token)`` from the run loop once ``deadline`` has come."""
        ...


def timer_clock() -> TimerClock | None:
    """This run's clock if it keeps alarms' deadlines itself, else None."""
    clock = trio.lowlevel.current_clock()
    return clock if hasattr(clock, "add_timer") else None


class Alarm:
    """One task at a time waits (``wait_until``) until ``wake`` or a deadline.

    A ``wake`` while nobody waits is kept: the next wait returns at once (as a set
    Event's would)."""

    __slots__ = ("_clock", "_event", "_pending", "_task", "_token")

    def __init__(self) -> None:
        self._clock = timer_clock()
        self._task: trio.lowlevel.Task | None = None
        #: Which of the clock's timers for this alarm still counts (older ones are stale).
        self._token = 0
        self._pending = False
        self._event: trio.Event | None = None if self._clock is not None else trio.Event()

    async def wait_until(self, deadline: float) -> None:
        """Wait until woken or until ``deadline`` (trio time), whichever comes first."""
        if self._clock is None:
            assert self._event is not None
            with trio.move_on_at(deadline):
                await self._event.wait()
            self._event = trio.Event()
            return
        if self._pending or deadline <= self._clock.current_time():
            self._pending = False
            await trio.lowlevel.checkpoint()
            return
        if self._task is not None:
            raise trio.BusyResourceError("another task is already waiting on this alarm")
        self._token += 1
        if deadline < math.inf:
            self._clock.add_timer(deadline, self, self._token)
        self._task = trio.lowlevel.current_task()

        def abort(_: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
            self._task = None
            self._token += 1  # its timer no longer counts
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def wake(self) -> None:
        """End the current wait now (or the next one at once, if nobody waits)."""
        if self._clock is None:
            assert self._event is not None
            self._event.set()
            return
        task = self._task
        if task is None:
            self._pending = True
            return
        self._task = None
        self._token += 1
        trio.lowlevel.reschedule(task)

    def ring(self, token: int) -> None:
        """The clock's call at a timer's deadline: wake the waiter it was set for."""
        if token == self._token and self._task is not None:
            task, self._task = self._task, None
            self._token += 1
            trio.lowlevel.reschedule(task)

    def alive(self, token: int) -> bool:
        """Whether the timer set with ``token`` still counts."""
        return token == self._token and self._task is not None


async def sleep_until(deadline: float) -> None:
    """``trio.sleep_until`` without a cancellation at the deadline under a timer clock."""
    if timer_clock() is None:
        await trio.sleep_until(deadline)
    else:
        await Alarm().wait_until(deadline)
