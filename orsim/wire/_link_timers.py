"""The deadlines of many memory links, kept by one task per trio run.

Over TCP each connection keeps its own deadlines: its ADDP checks in a task of its own
(``Connection._keepalive``), each request's timeout in a cancel scope. A simulation's
links are memory streams, thousands of them in a big cluster (every ORS application
linked to every other), and every request of every call has a timeout. A trio deadline
costs a cancel scope to set (two context managers, the run's deadline heap) and, when
it expires, a cancellation: an exception raised into the task and caught, then a
scheduler round, most often only to find that traffic came meanwhile.

Here one task keeps every memory link's deadlines in a heap, sleeps until the first (an
``Alarm``: under the simulation's clock, no cancellation either),
and makes each due check as a plain call: an ADDP check polls the peer or gives it up
and says when to look again; a request's check makes it fail with ``TooSlowError``.
A deadline that no longer matters (a closed link, an answered request) is dropped
unseen. The decisions and their virtual times are the same; only the task that makes
them differs.
"""

from __future__ import annotations

import itertools
import math
from heapq import heappop, heappush
from typing import Protocol

import trio

from orsim._alarm import Alarm
from orsim.logs import get_logger


class Timer(Protocol):
    """Something to check at a deadline."""

    def alive(self) -> bool:
        """False once the check no longer matters (dropped without being made)."""
        ...

    def due(self, now: float) -> float | None:
        """The check, at ``now``; its next deadline, or None when there is none."""
        ...


class LinkTimers:
    """A heap of (deadline, timer) and the task that makes each check when it is due."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        #: Ties are taken in the order they were added: the run stays deterministic.
        self._order = itertools.count()
        #: Wakes the task for an earlier deadline (made when it starts, in the run).
        self._alarm: Alarm | None = None
        #: Whether the task waits (an earlier deadline must wake it).
        self._waiting = False
        #: When the task wakes by itself next (inf: only when woken).
        self._until = math.inf

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, deadline: float, timer: Timer) -> None:
        """Check ``timer`` once ``deadline`` has come (and again when it says)."""
        heappush(self._heap, (deadline, next(self._order), timer))
        if deadline < self._until and self._waiting and self._alarm is not None:
            self._waiting = False
            self._alarm.wake()

    def run_due(self, now: float) -> None:
        """Make every check that is due at ``now``; drop the first ones that no longer
        matter (so the task does not wake for them)."""
        heap = self._heap
        while heap and (heap[0][0] <= now or not heap[0][2].alive()):
            deadline, _, timer = heappop(heap)
            if deadline > now or not timer.alive():
                continue
            try:
                after = timer.due(now)
            except Exception:  # a bug in one link's check must not stop every link's
                get_logger().exception("link_timer_failed")
                continue
            if after is not None:
                heappush(heap, (after, next(self._order), timer))

    async def run(self) -> None:
        """Forever: the due checks, then sleep until the next deadline (or an earlier
        one is added)."""
        alarm = self._alarm = Alarm()
        while True:
            self.run_due(trio.current_time())
            self._until = self._heap[0][0] if self._heap else math.inf
            self._waiting = True
            await alarm.wait_until(self._until)
            self._waiting = False
            self._until = -math.inf  # running: an add needs no wake


_TIMERS: trio.lowlevel.RunVar[LinkTimers] = trio.lowlevel.RunVar("orsim_link_timers")


def link_timers() -> LinkTimers:
    """This trio run's ``LinkTimers`` (its task is started, as a system task, on first
    use; trio cancels it when the run's main task ends)."""
    try:
        return _TIMERS.get()
    except LookupError:
        timers = LinkTimers()
        _TIMERS.set(timers)
        trio.lowlevel.spawn_system_task(timers.run, name="orsim-link-timers")
        return timers
