"""URS target selection: round-robin fairness and least-busy never picks a busier target."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orsim.errors import ConfigError
from orsim.urs import make_selector
from orsim.urs._selection import DEFAULT_TARGETS, parse_targets

TARGETS = st.lists(st.text("abcdefgh", min_size=1, max_size=4), min_size=1, max_size=8, unique=True)


@given(targets=TARGETS, k=st.integers(1, 20))
def test_round_robin_is_fair(targets: list[str], k: int) -> None:
    """Over k·n requests each of n targets is chosen exactly k times."""
    selector = make_selector(targets, "round-robin")
    chosen = [selector.choose() for _ in range(k * len(targets))]
    assert all(chosen.count(t) == k for t in targets)


@given(
    targets=TARGETS,
    ops=st.lists(st.one_of(st.just("choose"), st.integers(0, 7)), max_size=60),
)
def test_least_busy_never_picks_a_busier_target(targets: list[str], ops: list[object]) -> None:
    """Each choice holds the fewest calls of all targets at that moment."""
    selector = make_selector(targets, "least-busy")
    for op in ops:
        if op == "choose":
            before = selector.busy()
            target = selector.choose()
            assert before[target] == min(before.values())
            assert selector.busy()[target] == before[target] + 1
        else:
            assert isinstance(op, int)
            selector.release(targets[op % len(targets)])
        assert all(n >= 0 for n in selector.busy().values())


@given(targets=TARGETS, k=st.integers(1, 10))
def test_least_busy_without_releases_spreads_evenly(targets: list[str], k: int) -> None:
    """With no calls released, least-busy uses every target equally."""
    selector = make_selector(targets, "least-busy")
    chosen = [selector.choose() for _ in range(k * len(targets))]
    assert all(chosen.count(t) == k for t in targets)


def test_options_are_validated() -> None:
    """Unknown strategies, empty and repeated targets are configuration errors."""
    with pytest.raises(ConfigError, match="urs/strategy"):
        make_selector(["a"], "random")
    with pytest.raises(ConfigError):
        make_selector([], "round-robin")
    with pytest.raises(ConfigError, match="twice"):
        parse_targets("a, b, a")
    assert parse_targets(None) == DEFAULT_TARGETS
    assert parse_targets(" x ,y,, ") == ("x", "y")


def test_reconfigure_keeps_load() -> None:
    """A live change of targets keeps the load of targets still present."""
    selector = make_selector(["a", "b"], "least-busy")
    selector.choose()
    selector.choose()
    selector.choose()
    new = selector.reconfigured(["b", "c"], "least-busy")
    assert new.busy() == {"b": selector.busy()["b"], "c": 0}
    assert new.choose() == "c"
    assert not new.release("a")
