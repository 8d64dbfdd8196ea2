"""The fault proxy's control channel: its requests and answers, typed (as every service's).

A fault names two sides, each one application or a list of them (a host's): the proxy
cuts, heals or delays every link between an application of one side and one of the
other, all at once with no schedule point between, so a host partition falls as one
fault. The JSON is what the launcher has always sent: ``{"a": [...], "b": [...]}``, and
``"ms"`` for a delay.
"""

from __future__ import annotations

import attrs

from orsim.errors import RequestRefused
from orsim.wire import Call, Done, Json, Record, codec


def _side(data: dict[str, Json], key: str) -> tuple[str, ...]:
    """A side as a request names it: one application, or a list of them."""
    value = data.get(key)
    names = value if isinstance(value, list) else [value]
    if not names or not all(isinstance(name, str) and name for name in names):
        raise RequestRefused("bad_request", f"{key!r} must be an application name or a list")
    return tuple(str(name) for name in names)


def _delay_ms(data: dict[str, Json], key: str) -> float:
    ms = data.get(key)
    if isinstance(ms, bool) or not isinstance(ms, int | float) or ms < 0:
        raise RequestRefused("bad_request", "delay: 'ms' must be a number >= 0")
    return ms


_SIDE = codec(_side, list)


@attrs.frozen
class Sides(Record):
    """The two sides of a fault: every application of ``a`` against every one of ``b``."""

    a: tuple[str, ...] = attrs.field(metadata=_SIDE)
    b: tuple[str, ...] = attrs.field(metadata=_SIDE)

    def pairs(self) -> list[tuple[str, str]]:
        """The (a, b) application pairs (an application is no pair with itself)."""
        return [(x, y) for x in self.a for y in self.b if x != y]


@attrs.frozen
class Severed(Record):
    """How many open links a partition silenced."""

    links: int


@attrs.frozen
class Closed(Record):
    """How many silenced links a heal closed."""

    closed: int


@attrs.frozen
class Partition(Sides, Call[Severed], method="partition"):
    """``partition``: silence every link between the sides, black-hole new ones."""


@attrs.frozen
class Heal(Sides, Call[Closed], method="heal"):
    """``heal``: close the silenced links between the sides; forward new ones again."""


@attrs.frozen
class Delay(Sides, Call[Done], method="delay"):
    """``delay``: hold every chunk between the sides ``ms`` milliseconds (0: no delay)."""

    ms: float = attrs.field(metadata=codec(_delay_ms))


@attrs.frozen
class CheckKey(Call[Done], method="check_key"):
    """``check_key``: changes nothing, but is not open: answered only to a client with the
    cluster key (another host's ``up`` checks it has the cluster's before starting)."""
