"""NodeCore's bounded memories of calls: the oldest are forgotten first, an eighth of
them at once (a dict's oldest key is found by scanning past every slot deleted before
it: one at a time cost ~30 µs a call at 100,000 routed calls)."""

from __future__ import annotations

import pytest
from helpers import primary_core

from orsim.node import _core
from orsim.node._core import CallRouted, RouteRequested, WriteSession, _remember


def test_routed_calls_are_forgotten_oldest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_core, "ROUTED_MEMORY", 3)
    core = primary_core(partner=False)
    for n in range(1, 6):
        assert core.handle(CallRouted(f"c{n}"), 0.1) == []
    # c3..c5 are remembered: a late route request for one of them is ignored ...
    assert core.handle(RouteRequested("c5"), 0.2) == []
    # ... while c1 is forgotten: its route request is a new call again.
    out = core.handle(RouteRequested("c1"), 0.2)
    assert any(isinstance(c, WriteSession) and c.session.call_id == "c1" for c in out)


def test_remember_keeps_the_newest_in_order_and_updates_in_place() -> None:
    memory: dict[str, int] = {}
    for n in range(10):
        _remember(memory, f"c{n}", n, 4)
    assert list(memory.items()) == [("c6", 6), ("c7", 7), ("c8", 8), ("c9", 9)]
    _remember(memory, "c7", 70, 4)  # known: its value changes, its place does not
    assert list(memory) == ["c6", "c7", "c8", "c9"] and memory["c7"] == 70


def test_past_its_bound_a_memory_forgets_its_oldest_eighth() -> None:
    memory: dict[str, None] = {}
    for n in range(17):
        _remember(memory, f"c{n}", None, 16)
    # The 17th took it back to seven eighths of 16: the three oldest are forgotten.
    assert list(memory) == [f"c{n}" for n in range(3, 17)]
    for n in range(17, 10_000):
        _remember(memory, f"c{n}", None, 16)
        assert 14 <= len(memory) <= 16
    assert list(memory)[-1] == "c9999" and list(memory) == sorted(memory, key=lambda k: int(k[1:]))
