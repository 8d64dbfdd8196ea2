"""Seeded runs: one trio run under a MockClock, with trio's scheduler seeded.

trio shuffles each batch of runnable tasks with its own ``random.Random``; seeding it
(and using a ``MockClock`` that only moves by jumps: ``rate=0``, ``autojump_threshold=0``)
makes a run that does no real I/O repeat exactly. The MockClock starts at 0 (no random
offset, unlike trio's system clock).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio
import trio.testing

T = TypeVar("T")


def seed_scheduler(seed: int) -> None:
    """Seed trio's scheduling order (the random batch shuffle of its run loop)."""
    from trio._core import _run

    _run._r.seed(seed)


def sim_clock() -> trio.testing.MockClock:
    """Virtual time that jumps to the next deadline at once when every task waits."""
    return trio.testing.MockClock(rate=0.0, autojump_threshold=0.0)


def run_seeded(async_fn: Callable[..., Awaitable[T]], *args: Any, seed: int) -> T:
    """``trio.run(async_fn, *args)`` in virtual time with the scheduler seeded by ``seed``."""
    seed_scheduler(seed)
    return trio.run(async_fn, *args, clock=sim_clock())
