"""Medians, percentiles and ratios over benchmark runs (pure)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeGuard

Row = dict[str, Any]


def is_number(value: object) -> TypeGuard[int | float]:
    """True for an int or a float, never for a bool (JSON rows hold both)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def median(values: Iterable[float | None]) -> float | None:
    """The median of the values that are not None (None if there are none)."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def percentile(values: Iterable[float], q: float) -> float | None:
    """The ``q``-th percentile (nearest rank) of ``values``; None if empty."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, None when either is missing or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def median_rows(rows: Sequence[Mapping[str, object]], keys: Sequence[str]) -> list[Row]:
    """Group ``rows`` by their ``keys`` values and take the median of every numeric field.

    Non-numeric fields other than the keys are dropped; a field that is None in some runs
    takes the median of the runs that have it. Groups keep their first-seen order, and
    each result row says how many runs it summarises (``runs``).
    """
    groups: dict[tuple[object, ...], list[Mapping[str, object]]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(k) for k in keys), []).append(row)
    result: list[Row] = []
    for key, members in groups.items():
        out: Row = dict(zip(keys, key, strict=True))
        fields = [f for f in _field_order(members) if f not in keys]
        for field in fields:
            present = [v for v in (m.get(field) for m in members) if v is not None]
            numbers = [v for v in present if is_number(v)]
            if len(numbers) == len(present):
                out[field] = median(numbers)
        out["runs"] = len(members)
        result.append(out)
    return result


def _field_order(rows: Sequence[Mapping[str, object]]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)
