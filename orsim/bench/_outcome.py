"""What each failover run came to, and what a group of runs did (pure).

A failover run is **ok** only if it finished (no exception), lost no call, duplicated no
call, took over (the backup became primary *and* routed a call) and took over within its
kind's bound:

==========  ==============================================================
KILL        gap < 50 ms
STOP        gap < 2 x addp-timeout + a heartbeat (ADDP as Genesys times it: a
            poll after T of silence, lost when T more pass unanswered)
switchover  no gap bound; it must take over, and lose and duplicate nothing
==========  ==============================================================

Every other run is a failure. A group of runs (one fault kind and addp-timeout) is
summarised by its medians over the runs that finished *and* its worst: the slowest gap,
lost and duplicated calls summed over every run, and the counts of failed runs by cause.
The bench's table and the soak's tally are both made from :func:`summarize`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import attrs

from orsim.bench._stats import Row, is_number, median, median_rows

#: The issue's targets on the reference 2-core machine.
KILL_TARGET_MS = 50.0
#: A hang is seen between T and 2T after the primary's last frame; its takeover may come
#: up to a peer heartbeat (``orchestration/peer-heartbeat``, 250 ms) after that.
STOP_MARGIN_MS = 250.0
#: One failover run as measured (or a failed run's ``{"fault", "addp_s", "error"}``).
Run = Mapping[str, object]
#: What a failover group is keyed by.
KIND_KEYS = ("fault", "addp_s")


def gap_bound_ms(fault: str, addp_s: float) -> float | None:
    """The longest takeover gap a run of this kind may take (None: no gap bound)."""
    if fault == "KILL":
        return KILL_TARGET_MS
    if fault == "STOP":
        return 2 * addp_s * 1000.0 + STOP_MARGIN_MS
    return None


def bound_text(fault: str, addp_s: float) -> str:
    """The kind's bound as the table shows it, e.g. ``gap < 1100 ms, 0 lost/dup``."""
    bound = gap_bound_ms(fault, addp_s)
    calls = "0 lost/dup"
    return calls if bound is None else f"gap < {bound:g} ms, {calls}"


def kind_label(fault: str, addp_s: float) -> str:
    """``SIGKILL, addp 1 s``; a switchover is not an ADDP matter: ``switchover``."""
    if fault in ("KILL", "STOP"):
        return f"SIG{fault}, addp {addp_s:g} s"
    return str(fault)


@attrs.frozen
class Outcome:
    """One run's verdict. ``lost``/``duplicates`` are None when the run did not say."""

    error: str | None = None
    lost: int | None = 0
    duplicates: int | None = 0
    took_over: bool = True
    gap_ms: float | None = None
    #: The gap less the time the new primary waited for a call of its Node to be offered
    #: (``first_call_split``), and the longest a caller waited meanwhile.
    takeover_ms: float | None = None
    longest_wait_ms: float | None = None
    bound_ms: float | None = None

    @property
    def over_bound(self) -> bool:
        return self.took_over and _over(self.gap_ms, self.bound_ms)

    @property
    def ok(self) -> bool:
        return not self.problems()

    def problems(self) -> list[str]:
        """Why the run failed, worst first; empty for an ok run."""
        if self.error is not None:
            return [f"error: {self.error}"]
        out = []
        if self.lost != 0:
            out.append(f"lost {_count(self.lost)}")
        if self.duplicates != 0:
            out.append(f"dup {_count(self.duplicates)}")
        if not self.took_over:
            out.append("no takeover")
        elif self.over_bound:
            out.append(f"gap {self.gap_ms:.0f} ms >= {self.bound_ms:g} ms")
        return out


def _over(gap: float | None, bound: float | None) -> bool:
    return gap is not None and bound is not None and gap >= bound


def _count(value: int | None) -> str:
    return "?" if value is None else str(value)


def _int_or_none(value: object) -> int | None:
    return int(value) if is_number(value) else None


def _float_or_none(value: object) -> float | None:
    return float(value) if is_number(value) else None


def outcome(run: Run) -> Outcome:
    """The verdict on one run row of :func:`orsim.bench._failover.measure_failover` (or
    a failed run's ``{"fault", "addp_s", "error"}``)."""
    bound = gap_bound_ms(str(run.get("fault")), _float_or_none(run.get("addp_s")) or 0.0)
    error = run.get("error")
    if error is not None:
        return Outcome(error=str(error), lost=None, duplicates=None, took_over=False,
                       bound_ms=bound)  # fmt: skip
    gap = _float_or_none(run.get("gap_ms"))
    return Outcome(
        lost=_int_or_none(run.get("lost")),
        duplicates=_int_or_none(run.get("duplicates")),
        took_over=gap is not None and is_number(run.get("backup_primary_ms")),
        gap_ms=gap,
        takeover_ms=_float_or_none(run.get("takeover_ms")),
        longest_wait_ms=_float_or_none(run.get("longest_wait_ms")),
        bound_ms=bound,
    )


@attrs.define
class Tally:
    """Counts of outcomes over some runs (one kind, or all of a soak)."""

    runs: int = 0
    ok: int = 0
    errors: int = 0
    runs_lost: int = 0
    runs_dup: int = 0
    no_takeover: int = 0
    over_bound: int = 0
    lost_total: int = 0
    duplicates_total: int = 0
    gaps: list[float] = attrs.Factory(list)
    takeovers: list[float] = attrs.Factory(list)
    waits: list[float] = attrs.Factory(list)
    run_s: list[float] = attrs.Factory(list)

    def add(self, result: Outcome, run_s: float | None = None) -> None:
        self.runs += 1
        self.ok += result.ok
        if result.error is not None:
            self.errors += 1
        else:
            self.runs_lost += result.lost != 0
            self.runs_dup += result.duplicates != 0
            self.no_takeover += not result.took_over
            self.over_bound += result.over_bound
            self.lost_total += result.lost or 0
            self.duplicates_total += result.duplicates or 0
            if result.took_over and result.gap_ms is not None:
                self.gaps.append(result.gap_ms)
                if result.takeover_ms is not None:
                    self.takeovers.append(result.takeover_ms)
            if result.longest_wait_ms is not None:
                self.waits.append(result.longest_wait_ms)
        if run_s is not None:
            self.run_s.append(run_s)

    @property
    def failed(self) -> int:
        return self.runs - self.ok

    def fields(self) -> Row:
        """The tally as a JSON-ready row: counts, the gaps' median and max, run time."""
        return {
            "runs": self.runs,
            "ok": self.ok,
            "failed": self.failed,
            "errors": self.errors,
            "runs_lost": self.runs_lost,
            "runs_dup": self.runs_dup,
            "no_takeover": self.no_takeover,
            "over_bound": self.over_bound,
            "lost_total": self.lost_total,
            "duplicates_total": self.duplicates_total,
            "gap_ms_median": median(self.gaps),
            "gap_ms_max": max(self.gaps, default=None),
            "takeover_ms_median": median(self.takeovers),
            "takeover_ms_max": max(self.takeovers, default=None),
            "longest_wait_ms_max": max(self.waits, default=None),
            "run_s_median": median(self.run_s),
            "run_s_max": max(self.run_s, default=None),
        }


def tally(runs: Iterable[Run]) -> Tally:
    """The outcomes of ``runs``, counted."""
    counts = Tally()
    for run in runs:
        counts.add(outcome(run), _float_or_none(run.get("run_s")))
    return counts


def group_runs(
    runs: Iterable[Run],
) -> dict[tuple[object, ...], list[Run]]:
    """Runs by ``(fault, addp_s)``, in first-seen order; failed runs keep their group."""
    groups: dict[tuple[object, ...], list[Run]] = {}
    for run in runs:
        groups.setdefault(tuple(run.get(k) for k in KIND_KEYS), []).append(run)
    return groups


def summarize(runs: Sequence[Run]) -> list[Row]:
    """One row per ``(fault, addp_s)``: the medians of the runs that finished (as
    :func:`median_rows` takes them) with the group's :class:`Tally` over *every* run,
    failed ones included (``runs`` counts them all), and its gap bound (``bound_ms``).

    A group whose every run failed still gets its row: nothing is dropped."""
    rows: list[Row] = []
    for key, members in group_runs(runs).items():
        finished = [m for m in members if "error" not in m]
        row: Row = dict(zip(KIND_KEYS, key, strict=True))
        if finished:
            row.update(median_rows(finished, KIND_KEYS)[0])
        fault, addp = key
        row["bound_ms"] = gap_bound_ms(str(fault), _float_or_none(addp) or 0.0)
        row.update(tally(members).fields())
        rows.append(row)
    return rows


def first_failure(runs: Sequence[Run]) -> int | None:
    """The 1-based position of the first failed run (None if every run was ok)."""
    for position, run in enumerate(runs, start=1):
        if not outcome(run).ok:
            return position
    return None


def longest_ok_streak(runs: Sequence[Run]) -> int:
    """The most consecutive ok runs (the issue's bar: 200 in a row)."""
    best = current = 0
    for run in runs:
        current = current + 1 if outcome(run).ok else 0
        best = max(best, current)
    return best
