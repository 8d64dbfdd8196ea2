"""The event trace of a simulated run: a canonical, ordered record and its sha256.

Every entry is one JSON object (keys sorted, compact) with the virtual time ``t``
(``trio.current_time()``, rounded to the microsecond) and what happened. It never holds
a wall-clock value, a pid, a path or anything else that differs between two runs of the
same seed and code, so the digest of the lines is the run's fingerprint.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping

import attrs
import trio

#: Digits kept of a virtual time (s): microseconds, far below any modelled delay.
TIME_DIGITS = 6


def canonical(entry: Mapping[str, object]) -> str:
    """One entry as the line that is hashed."""
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), default=str)


def vtime(t: float) -> float:
    return round(t, TIME_DIGITS)


@attrs.define(eq=False)
class Trace:
    """Entries appended as the run goes (``record``) and at its end (``extend``)."""

    entries: list[dict[str, object]] = attrs.Factory(list)

    def record(self, kind: str, **fields: object) -> None:
        """Append ``kind`` with ``fields`` at the current virtual time."""
        self.entries.append({"t": vtime(trio.current_time()), "kind": kind, **fields})

    def extend(self, entries: Iterable[Mapping[str, object]]) -> None:
        self.entries.extend(dict(e) for e in entries)

    def lines(self) -> list[str]:
        return [canonical(e) for e in self.entries]

    def digest(self) -> str:
        """sha256 (hex) over the canonical lines, each ending in a newline."""
        h = hashlib.sha256()
        for line in self.lines():
            h.update(line.encode())
            h.update(b"\n")
        return h.hexdigest()

    def text(self) -> str:
        return "".join(line + "\n" for line in self.lines())
