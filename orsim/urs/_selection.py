"""How the simulated URS picks a routing target (pure: no I/O, no clock).

Two strategies, named by the ``urs/strategy`` option:

- ``round-robin``: targets in turn, whatever their load;
- ``least-busy``: a target with the fewest calls in hand (chosen and not yet released);
  ties go to the first such target after the last one chosen, so an idle pool is still
  used evenly.

Both count the calls each target holds (``choose`` takes one, ``release`` gives it back),
so the URS can report its load whatever the strategy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import attrs

from orsim.config import DEFAULT_URS_TARGETS, URS_STRATEGIES, URS_STRATEGY, URS_TARGETS
from orsim.errors import ConfigError

STRATEGIES = URS_STRATEGIES
ROUND_ROBIN, LEAST_BUSY = STRATEGIES
DEFAULT_TARGETS = DEFAULT_URS_TARGETS


def parse_targets(value: str | None) -> tuple[str, ...]:
    """The ``urs/targets`` option (a comma list) as target names; the default when empty.

    Raises:
        ConfigError: the list names a target twice.
    """
    return URS_TARGETS.value(value)


@attrs.define(eq=False)
class Selector:
    """Chooses targets and tracks how many calls each one holds."""

    targets: tuple[str, ...]
    strategy: str = ROUND_ROBIN
    _busy: dict[str, int] = attrs.Factory(dict)
    _next: int = 0

    def __attrs_post_init__(self) -> None:
        if not self.targets:
            raise ConfigError("a URS needs at least one target")
        if self.strategy not in STRATEGIES:
            raise ConfigError(
                f"option {URS_STRATEGY.name} is {self.strategy!r}; expected one of "
                + ", ".join(STRATEGIES)
            )
        self._busy = {t: self._busy.get(t, 0) for t in self.targets}

    def choose(self) -> str:
        """Pick a target and count one more call on it."""
        n = len(self.targets)
        if self.strategy == LEAST_BUSY:
            fewest = min(self._busy.values())
            index = next(
                i
                for i in ((self._next + k) % n for k in range(n))
                if self._busy[self.targets[i]] == fewest
            )
        else:
            index = self._next % n
        target = self.targets[index]
        self._next = (index + 1) % n
        self._busy[target] += 1
        return target

    def release(self, target: str) -> bool:
        """A call left ``target``; False if it is not a target or held no call."""
        if self._busy.get(target, 0) <= 0:
            return False
        self._busy[target] -= 1
        return True

    def busy(self) -> Mapping[str, int]:
        """Calls held per target."""
        return dict(self._busy)

    def reconfigured(self, targets: Sequence[str], strategy: str) -> Selector:
        """A selector for new options that keeps the load of targets still present."""
        return Selector(
            tuple(targets),
            strategy,
            busy={t: n for t, n in self._busy.items() if t in targets},
        )


def make_selector(targets: Iterable[str], strategy: str) -> Selector:
    """A selector for ``strategy`` over ``targets``; ConfigError if either is invalid."""
    return Selector(tuple(targets), strategy.strip().lower())
