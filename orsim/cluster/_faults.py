"""Which links the fault proxy cuts or slows down (pure state, no I/O).

Faults are named by application pairs and are symmetric: a partition of A and B cuts the
links A→B and B→A alike, whichever side opened them.
"""

from __future__ import annotations

import attrs

Pair = frozenset[str]


def pair(a: str, b: str) -> Pair:
    """The unordered pair of two application names."""
    return frozenset((a, b))


@attrs.define
class FaultTable:
    """The partitions and delays currently in force."""

    _cuts: set[Pair] = attrs.Factory(set)
    _delays: dict[Pair, float] = attrs.Factory(dict)

    def partition(self, a: str, b: str) -> None:
        self._cuts.add(pair(a, b))

    def heal(self, a: str, b: str) -> None:
        """Restore normal forwarding between ``a`` and ``b`` (cut and delay both go)."""
        self._cuts.discard(pair(a, b))
        self._delays.pop(pair(a, b), None)

    def delay(self, a: str, b: str, ms: float) -> None:
        """Add ``ms`` to every chunk forwarded between ``a`` and ``b`` (0 removes it)."""
        if ms < 0:
            raise ValueError(f"delay must not be negative, got {ms}")
        if ms == 0:
            self._delays.pop(pair(a, b), None)
        else:
            self._delays[pair(a, b)] = float(ms)

    def is_cut(self, a: str, b: str) -> bool:
        return pair(a, b) in self._cuts

    def delay_ms(self, a: str, b: str) -> float:
        return self._delays.get(pair(a, b), 0.0)

    def snapshot(self) -> dict[str, list[dict[str, object]]]:
        """The faults as JSON for the proxy's ``status`` answer."""
        return {
            "partitions": [{"a": a, "b": b} for a, b in sorted(sorted(p) for p in self._cuts)],
            "delays": [
                {"a": sorted(p)[0], "b": sorted(p)[-1], "ms": ms}
                for p, ms in sorted(self._delays.items(), key=lambda item: sorted(item[0]))
            ],
        }
