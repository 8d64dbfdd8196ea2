"""Seeded runs: one trio run in virtual time, with trio's scheduler seeded.

trio shuffles each batch of runnable tasks with its own ``random.Random``; sorting the
batch first and seeding that ``Random`` (and using a clock that only moves by jumps, as
``MockClock(rate=0, autojump_threshold=0)`` does: ``SimClock``) makes a run that does
no real I/O and starts no thread repeat exactly. The clock starts at 0 (no random
offset, unlike trio's system clock).
"""

from __future__ import annotations

import gc
import itertools
import math
import random
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from heapq import heappop, heappush
from typing import Any, TypeVar, TypeVarTuple

import trio

from orsim._alarm import Alarm

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


def seed_scheduler(seed: int) -> None:
    """Make trio's scheduling order a function of ``seed``.

    Each pass of trio's run loop takes the tasks that became runnable as one batch.
    Their order in it depends on id()-ordered sets inside trio (the tasks a cancel
    scope wakes, deadline ties), so it varies from process to process. trio's own
    deterministic mode (what Hypothesis switches on) sorts each batch by task creation
    order before shuffling it with its ``random.Random``; this switches it on and seeds
    that ``Random``.
    """
    from trio._core import _run

    _run._ALLOW_DETERMINISTIC_SCHEDULING = True  # type: ignore[misc]
    if type(_run._r) is random.Random:
        _run._r = _BatchRandom()
    _run._r.seed(seed)


class _BatchRandom(random.Random):
    """trio's scheduler ``Random``, with nothing to do for a batch of one task (most
    batches of a simulation): the same orders, the same random numbers drawn."""

    def shuffle(self, x: Any) -> None:
        if len(x) > 1:
            super().shuffle(x)


class SimClock(trio.abc.Clock):
    """Virtual time, as ``MockClock(rate=0, autojump_threshold=0)`` keeps it, for less.

    Time moves only by jumps: when no task can run, straight to the next deadline.
    MockClock's autojump spends a pass of the run loop of its own on each jump (and a
    statistics snapshot), and reads the real clock whenever the time is asked; a
    simulation jumps at every timer. This clock jumps when the run loop asks how long
    it may sleep (it asks only when no task can run), answers "not at all", and keeps
    the virtual time as a number. Same order of events, same times.

    As with MockClock, no jump while a task waits in ``wait_all_tasks_blocked`` (it is
    woken first), and none to infinity: a run whose every task waits forever sleeps,
    so Ctrl-C still works.

    It also keeps the deadlines of ``orsim._alarm.Alarm`` waits (``add_timer``): it jumps
    to the first one as to a cancel scope's, and wakes its task without a cancellation.
    """

    def __init__(self) -> None:
        self._now = 0.0
        #: ``orsim._alarm.Alarm`` deadlines: (deadline, order, alarm, token).
        self._timers: list[tuple[float, int, Alarm, int]] = []
        self._order = itertools.count()

    def start_clock(self) -> None:
        # Called by trio.run as its loop starts: the run's instruments (none, as a
        # rule) asked of at every task step through a UserDict, for a plain dict.
        _use_dict_instruments()
        _poll_io_seldom()

    def current_time(self) -> float:
        return self._now

    def add_timer(self, deadline: float, alarm: Alarm, token: int) -> None:
        """Ring ``alarm`` (``alarm.ring(token)``) once ``deadline`` has come: the clock
        jumps to it as to a cancel scope's deadline, and wakes the waiting task without
        a cancellation (see ``orsim._alarm``). Ties ring in the order they were set."""
        heappush(self._timers, (deadline, next(self._order), alarm, token))

    def deadline_to_sleep_time(self, deadline: float) -> float:
        if _idle_waiters():
            return _FOREVER
        timers = self._timers
        while timers and not timers[0][2].alive(timers[0][3]):
            heappop(timers)  # a wait that ended otherwise
        if timers and timers[0][0] <= deadline:
            # An alarm comes first (or with the deadline, which then expires too).
            if timers[0][0] > self._now:
                self._now = timers[0][0]
            while timers and timers[0][0] <= self._now:
                _, _, alarm, token = heappop(timers)
                alarm.ring(token)
            return 0.0
        if deadline == math.inf:
            return _FOREVER
        if deadline > self._now:
            self._now = deadline
        return 0.0

    def jump(self, seconds: float) -> None:
        """Move the virtual time forward by ``seconds`` (as ``MockClock.jump``)."""
        if seconds < 0:
            raise ValueError("time can't go backwards")
        self._now += seconds


#: What MockClock answers when it may not jump: sleep (the run loop caps it at a day).
_FOREVER = 999_999_999.0


def _use_dict_instruments() -> None:
    """Give the current run a plain-dict copy of its instruments.

    trio keeps a run's instruments by hook in a ``UserDict`` and asks whether a hook has
    any (``"before_task_step" in instruments``) four times per task step: a Python-level
    ``__contains__`` each time, 2% of a simulation's time. The same mapping as a ``dict``
    subclass (trio's own methods, ``data`` being the dict itself) answers in C. Left as
    it is if trio's internals are not as expected.
    """
    from trio._core import _instrumentation, _run

    runner = getattr(_run.GLOBAL_RUN_CONTEXT, "runner", None)
    current = getattr(runner, "instruments", None)
    if type(current) is _instrumentation.Instruments:
        runner.instruments = _DictInstruments(current.data)  # type: ignore[union-attr]


def _poll_io_seldom() -> None:
    """Let the current run ask the OS for I/O events only now and then while tasks run.

    trio polls epoll once per pass of its run loop, with a zero timeout while any task
    is runnable: a system call per pass, 8% of a simulation's time, for nothing, since a
    simulation does no I/O. Its only file descriptor is trio's own wake-up one, which
    brings Ctrl-C and other threads' callbacks: those are still seen, a few dozen passes
    (well under a millisecond) later, and every wait that may block still polls. Left
    as it is if trio's internals are not as expected.
    """
    from trio._core import _run

    runner = getattr(_run.GLOBAL_RUN_CONTEXT, "runner", None)
    real = getattr(runner, "io_manager", None)
    if real is not None and hasattr(real, "get_events"):
        runner.io_manager = _SeldomPolled(real)  # type: ignore[union-attr]


class _SeldomPolled:
    """An I/O manager that skips most zero-timeout polls (``_poll_io_seldom``)."""

    #: Zero-timeout polls skipped between two made.
    SKIP = 63

    def __init__(self, real: Any) -> None:
        self._real = real
        self._skipped = 0

    def get_events(self, timeout: float) -> Any:
        if timeout <= 0 and self._skipped < self.SKIP:
            self._skipped += 1
            return ()
        self._skipped = 0
        return self._real.get_events(timeout)

    def process_events(self, events: Any) -> None:
        if events:
            self._real.process_events(events)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def _dict_instruments_type() -> type:
    from trio._core._instrumentation import Instruments

    class DictInstruments(dict):  # type: ignore[type-arg]
        __slots__ = ()
        data = property(lambda self: self)
        add_instrument = Instruments.add_instrument
        remove_instrument = Instruments.remove_instrument
        call = Instruments.call

    return DictInstruments


_DictInstruments = _dict_instruments_type()


def _idle_waiters() -> bool:
    """Whether a task waits in ``wait_all_tasks_blocked`` (trio keeps no public count)."""
    from trio._core import _run

    return bool(_run.GLOBAL_RUN_CONTEXT.runner.waiting_for_idle)


def sim_clock() -> SimClock:
    """Virtual time that jumps to the next deadline at once when every task waits."""
    return SimClock()


@contextmanager
def no_automatic_gc() -> Iterator[None]:
    """The cyclic garbage collector off while the block runs (as it was, after).

    A simulated cluster is one process holding every application's tasks, links and
    buffers: a million long-lived objects at 100 Nodes, most of them made while the
    mesh of links forms. Each automatic collection walks the objects made since the
    last one, and the oldest generation's walks them all: with the default thresholds a
    fifth of a 100-Node run went into it, and raised thresholds still cost a tenth,
    for nothing, as almost nothing the simulation drops is cyclic: everything goes by
    reference counting (about 6,000 cyclic objects after a 60 s 2-Node run, 1,300
    after a 100-Node one), and what is left is collected as usual once the block ends.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def run_seeded(async_fn: Callable[[*Ts], Awaitable[T]], *args: *Ts, seed: int) -> T:
    """``trio.run(async_fn, *args)`` in virtual time with the scheduler seeded by ``seed``
    (and without automatic garbage collection meanwhile: ``no_automatic_gc``)."""
    seed_scheduler(seed)
    with no_automatic_gc():
        return trio.run(async_fn, *args, clock=sim_clock())
