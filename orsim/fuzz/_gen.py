"""Seeded generation of hostile-but-plausible JSON: mostly well-typed values from pools of
names the servers know (so inputs get past the first check and reach deep state), mixed
with wrong types, edge numbers, odd strings and junk structures."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

#: Strings that break naive code: empty, whitespace, control, non-ASCII, long, path-like.
ODD_STRINGS = (
    "", " ", "\x00", "\n", "é", "😀", "\ud800", "../../x", "/etc/passwd", "a" * 300,
    "%s%n", "null", "0", "-1", "1e309", "NaN", "True", "primary", "ORS_1\x00",
)  # fmt: skip
#: Numbers at the edges: sign, zero, 32/64-bit limits, beyond 64 bits, float edges.
ODD_NUMBERS = (
    0, 1, -1, 2, 7, 2**31 - 1, 2**31, -(2**31), 2**63 - 1, 2**63, 2**64, -(2**63) - 1,
    2**200, 0.0, -0.0, 0.5, -0.5, 1e-300, 1e300, 1.7976931348623157e308, 3.0,
)  # fmt: skip

#: A field's kind -> how to make a well-typed value of it (given the generator).
T = TypeVar("T")

Maker = Callable[["JsonGen"], object]


class JsonGen:
    """Random JSON values from one seed, and named pools of strings seen so far."""

    def __init__(self, seed: int, pools: Mapping[str, Sequence[str]]) -> None:
        self.rng = random.Random(seed)
        self.pools: dict[str, list[str]] = {k: list(v) for k, v in pools.items()}

    def pick(self, pool: str) -> str:
        """A name from ``pool`` (now and then an odd string instead)."""
        names = self.pools.get(pool) or ["x"]
        if self.rng.random() < 0.05:
            return self.rng.choice(ODD_STRINGS)
        return self.rng.choice(names)

    def remember(self, pool: str, value: object, keep: int = 256) -> None:
        """Add ``value`` (a string seen in an answer) to ``pool``, keeping the newest."""
        if isinstance(value, str):
            names = self.pools.setdefault(pool, [])
            names.append(value)
            if len(names) > keep:
                del names[: len(names) - keep]

    def integer(self) -> int:
        r = self.rng.random()
        if r < 0.6:
            return self.rng.randint(0, 8)
        if r < 0.8:
            return self.rng.randint(-(2**40), 2**40)
        return int(self.rng.choice([n for n in ODD_NUMBERS if isinstance(n, int)]))

    def number(self) -> float | int:
        r = self.rng.random()
        if r < 0.4:
            return round(self.rng.uniform(0, 20), 3)
        if r < 0.6:
            return self.integer()
        return self.rng.choice(ODD_NUMBERS)

    def string(self) -> str:
        r = self.rng.random()
        if r < 0.5:
            return self.rng.choice(ODD_STRINGS)
        length = self.rng.randint(0, 12)
        return "".join(self.rng.choice("abcXYZ019_-./ é") for _ in range(length))

    def any(self, depth: int = 0) -> object:
        """A JSON value of any type (shallow containers)."""
        r = self.rng.random()
        if r < 0.2:
            return self.string()
        if r < 0.4:
            return self.number()
        if r < 0.5:
            return self.rng.choice((True, False, None))
        if depth >= 2:
            return None
        if r < 0.75:
            return [self.any(depth + 1) for _ in range(self.rng.randint(0, 3))]
        return {self.string(): self.any(depth + 1) for _ in range(self.rng.randint(0, 3))}

    def fields(self, spec: Mapping[str, Maker]) -> dict[str, object]:
        """An object for ``spec`` (field -> maker): each field usually present and well
        typed, now and then missing, of a wrong type, or joined by an unknown field."""
        out: dict[str, object] = {}
        for name, make in spec.items():
            r = self.rng.random()
            if r < 0.08:
                continue
            out[name] = self.any() if r < 0.2 else make(self)
        if self.rng.random() < 0.05:
            out[self.string()] = self.any()
        return out

    def choice(self, items: Sequence[T]) -> T:
        return self.rng.choice(items)
