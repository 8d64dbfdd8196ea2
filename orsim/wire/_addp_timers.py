"""The ADDP deadlines of many memory links, kept by one task per trio run.

Over TCP each connection watches its own ADDP deadlines in a task of its own
(``Connection._keepalive``): a trio deadline, then a poll. A simulation's links are
memory streams, thousands of them in a big cluster (every ORS application linked to
every other), and a trio deadline that expires is a cancellation: an exception raised
into the task and caught, then a scheduler round, most often only to find that traffic
came meanwhile and the next deadline moved. Here one task keeps every memory link's
next deadline in a heap, wakes once per distinct deadline, and makes each due link's
check (``Connection._addp_step``: poll the peer, or give it up) as a plain call. The
decisions and their virtual times are the same; only the task that makes them differs.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from heapq import heappop, heappush

import trio

from orsim.logs import get_logger

#: A link's check at ``now``: its next deadline, or None once it needs no more checks.
DueCheck = Callable[[float], float | None]


class AddpTimers:
    """A heap of (deadline, check) and the task that calls each check when it is due."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, DueCheck]] = []
        #: Ties are taken in the order they were added: the run stays deterministic.
        self._order = itertools.count()
        self._wake: trio.Event | None = None
        #: When the task wakes by itself next (inf: only when woken).
        self._until = math.inf

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, deadline: float, check: DueCheck) -> None:
        """Call ``check(now)`` once ``deadline`` has come (and again at what it returns)."""
        heappush(self._heap, (deadline, next(self._order), check))
        if deadline < self._until and self._wake is not None:
            self._wake.set()

    def run_due(self, now: float) -> None:
        """Make every check that is due at ``now``."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, check = heappop(heap)
            try:
                after = check(now)
            except Exception:  # a bug in one link's check must not stop every link's
                get_logger().exception("addp_check_failed")
                continue
            if after is not None:
                heappush(heap, (after, next(self._order), check))

    async def run(self) -> None:
        """Forever: the due checks, then sleep until the next deadline (or an earlier
        one is added)."""
        while True:
            self.run_due(trio.current_time())
            self._until = self._heap[0][0] if self._heap else math.inf
            self._wake = wake = trio.Event()
            with trio.move_on_at(self._until):
                await wake.wait()
            self._wake = None
            self._until = -math.inf  # running: an add needs no wake


_TIMERS: trio.lowlevel.RunVar[AddpTimers] = trio.lowlevel.RunVar("orsim_addp_timers")


def addp_timers() -> AddpTimers:
    """This trio run's ``AddpTimers`` (its task is started, as a system task, on first
    use; trio cancels it when the run's main task ends)."""
    try:
        return _TIMERS.get()
    except LookupError:
        timers = AddpTimers()
        _TIMERS.set(timers)
        trio.lowlevel.spawn_system_task(timers.run, name="orsim-addp-timers")
        return timers
