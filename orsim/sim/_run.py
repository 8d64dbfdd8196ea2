"""Seeded runs: one trio run under a MockClock, with trio's scheduler seeded.

trio shuffles each batch of runnable tasks with its own ``random.Random``; sorting the
batch first and seeding that ``Random`` (and using a ``MockClock`` that only moves by
jumps: ``rate=0``, ``autojump_threshold=0``) makes a run that does no real I/O and
starts no thread repeat exactly. The MockClock starts at 0 (no random
offset, unlike trio's system clock).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio
import trio.testing

T = TypeVar("T")


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
    _run._r.seed(seed)


def sim_clock() -> trio.testing.MockClock:
    """Virtual time that jumps to the next deadline at once when every task waits."""
    return trio.testing.MockClock(rate=0.0, autojump_threshold=0.0)


def run_seeded(async_fn: Callable[..., Awaitable[T]], *args: Any, seed: int) -> T:
    """``trio.run(async_fn, *args)`` in virtual time with the scheduler seeded by ``seed``."""
    seed_scheduler(seed)
    return trio.run(async_fn, *args, clock=sim_clock())
