"""``python -m orsim.bench --soak N`` (``make soak``): N failover runs, each ok or failed.

The plan's failover kinds take turns (SIGKILL and SIGSTOP of ``ORS_1`` at addp-timeout 1 s
and 3 s, and a graceful switchover; with ``--quick`` addp 1 s only), at the bench's 200
calls/s, each run in a fresh cluster of its own: nothing is reused from one run to the
next, so no run can hide behind another's state. Every run is judged by
:mod:`orsim.bench._outcome` (no lost or duplicated call, a takeover, within the kind's
bound; a run that raises is a failure too). The tally per kind is printed to stdout and
the whole record, every raw run included, written as ``<date>-<time>-soak.json``.

Time per run: the bench's fixed 2 s warm-up becomes "until ``ORS_1`` has routed 100
calls" (about 1 s at its share of the load, and never a fault on a primary that is not
routing yet). The load after the takeover stays the bench's 1 s, twice the topology's
call-watching-timeout: shorter, and a late duplicate from a watch could go unseen.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import trio

from orsim.bench._failover import NODES, RATE, measure_failover
from orsim.bench._outcome import (
    bound_text,
    first_failure,
    gap_bound_ms,
    group_runs,
    kind_label,
    longest_ok_streak,
    outcome,
    tally,
)
from orsim.bench._progress import Bar, progress_bar, say
from orsim.bench._report import finite, git_commit, render_grid, write_results
from orsim.bench._stats import Row
from orsim.runtime import EXIT_INTERRUPTED

#: The soak's warm-up: the fault falls once ``ORS_1`` has routed this many calls.
SOAK_WARMUP_CALLS = 100
#: A run that takes longer is stopped and counted as failed (a hung run must not hang
#: the soak); a run that never takes over takes about 45 s.
RUN_TIMEOUT_S = 180.0
#: The issue's bar: this many failover runs in a row, every one ok.
DEFAULT_SOAK_RUNS = 200
EXIT_FAILED = 1

SOAK_HEADER = ("kind", "bound", "runs", "ok", "lost>0", "dup>0", "no takeover",
               "over bound", "errors", "gap median", "gap max", "takeover median",
               "takeover max", "caller wait max", "run time")  # fmt: skip


def schedule(kinds: Sequence[tuple[str, float]], runs: int) -> list[tuple[str, float]]:
    """``runs`` failover kinds, taking turns in ``kinds``' order."""
    if not kinds:
        raise ValueError("no failover kinds to soak")
    return [kinds[i % len(kinds)] for i in range(runs)]


def judged(position: int, run: Mapping[str, object]) -> Row:
    """``run`` numbered, with its verdict (``ok``) and what went wrong (``problems``)."""
    result = outcome(run)
    return {"run": position, **run, "ok": result.ok, "problems": result.problems()}


async def measure_once(fault: str, addp: float) -> Row:
    """One soak run; an exception (or a run past ``RUN_TIMEOUT_S``) becomes its error."""
    started = time.monotonic()
    try:
        with trio.fail_after(RUN_TIMEOUT_S):
            return await measure_failover(fault, addp, warmup_s=0.0,
                                          warmup_calls=SOAK_WARMUP_CALLS)  # fmt: skip
    except Exception as exc:  # one failed run is counted, and the soak goes on
        return {"fault": fault, "addp_s": addp, "error": f"{type(exc).__name__}: {exc}",
                "run_s": time.monotonic() - started}  # fmt: skip


async def soak(kinds: Sequence[tuple[str, float]], runs: int, out: list[Row], bar: Bar) -> None:
    """Make ``runs`` failover runs, appending each judged run to ``out`` as it ends (so
    an interrupted soak keeps what it did)."""
    failed = 0
    for position, (fault, addp) in enumerate(schedule(kinds, runs), start=1):
        row = judged(position, await measure_once(fault, addp))
        out.append(row)
        if not row["ok"]:
            failed += 1
            bar.say(f"run {position}/{runs}, {kind_label(fault, addp)}: FAILED: "
                    f"{', '.join(row['problems'])}")  # fmt: skip
        gap = row.get("gap_ms")
        last = f"{gap:.0f} ms" if isinstance(gap, int | float) else "no gap"
        bar.advance(f"soak: {failed} failed; last {kind_label(fault, addp)} {last}")


def soak_tally(runs: Sequence[Mapping[str, object]]) -> tuple[list[Row], Row]:
    """One row per kind (``fault``, ``addp_s``, ``bound_ms`` and the :class:`Tally`),
    and the total over every run."""
    rows = []
    for (fault, addp), members in group_runs(runs).items():
        bound = gap_bound_ms(str(fault), addp if isinstance(addp, int | float) else 0.0)
        rows.append({"fault": fault, "addp_s": addp, "bound_ms": bound,
                     **tally(members).fields()})  # fmt: skip
    return rows, tally(runs).fields()


def soak_document(
    runs: Sequence[Mapping[str, object]],
    *,
    planned: int,
    kinds: Sequence[tuple[str, float]],
    now: datetime,
    wall_s: float,
    cores: int | None,
    python: str,
    commit: str | None,
    interrupted: bool = False,
) -> dict[str, Any]:
    """The JSON record of a soak: machine, options, every raw run, the tally, verdict."""
    kinds_rows, total = soak_tally(runs)
    failure = first_failure(runs)
    return dict(finite({
        "kind": "soak",
        "date": now.isoformat(timespec="seconds"),
        "cores": cores,
        "python": python,
        "platform": platform.platform(),
        "commit": commit,
        "options": {"runs": planned, "rate": RATE, "nodes": NODES,
                    "warmup_calls": SOAK_WARMUP_CALLS,
                    "kinds": [[f, a] for f, a in kinds]},
        "wall_s": wall_s,
        "interrupted": interrupted,
        "verdict": {
            "ok": failure is None and not interrupted and len(runs) == planned,
            "runs": len(runs),
            "failed": total["failed"],
            "first_failure": failure,
            "longest_ok_streak": longest_ok_streak(runs),
        },
        "tally": kinds_rows,
        "total": total,
        "runs": [dict(r) for r in runs],
    }))  # fmt: skip


def _ms(value: object) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def _s(value: object) -> str:
    return "-" if value is None else f"{value:.1f} s"


#: The failover times of the tally, as its columns show them.
_TIMES = ("gap_ms_median", "gap_ms_max", "takeover_ms_median", "takeover_ms_max",
          "longest_wait_ms_max")  # fmt: skip


def _cells(kind: str, bound: str, t: Mapping[str, Any]) -> tuple[str, ...]:
    counts = ("runs", "ok", "runs_lost", "runs_dup", "no_takeover", "over_bound", "errors")
    return (kind, bound, *(str(t[c]) for c in counts), *(_ms(t.get(c)) for c in _TIMES),
            _s(t["run_s_median"]))  # fmt: skip


def render_soak(document: Mapping[str, Any]) -> str:
    """The tally table, how long a run takes, and the verdict, as plain text."""
    lines = [
        _cells(kind_label(r["fault"], r["addp_s"]), bound_text(r["fault"], r["addp_s"]), r)
        for r in document["tally"]
    ]
    # The kinds' times differ too much to summarise together.
    total = dict(document["total"], **dict.fromkeys(_TIMES))
    lines.append(_cells("all kinds", "", total))
    verdict = document["verdict"]
    options = document["options"]
    done, planned = verdict["runs"], options["runs"]
    run_s = document["total"]["run_s_median"]
    text = [
        f"failover soak: {done} of {planned} runs, {options['rate']:g} calls/s, "
        f"{options['nodes']} Nodes, at {document['commit'] or 'no commit'}",
        render_grid(SOAK_HEADER, lines),
        f"one run takes {_s(run_s)} (median; longest {_s(document['total']['run_s_max'])}):"
        f" cluster start, warm-up to {options['warmup_calls']} calls routed by ORS_1, fault,"
        f" takeover, 1 s of load, drain, shutdown; {done} runs took {document['wall_s']:.0f} s",
    ]
    if verdict["ok"]:
        text.append(f"PASS: {done} of {planned} runs ok in a row")
    else:
        why = [f"{verdict['failed']} of {done} runs failed"]
        if verdict["first_failure"] is not None:
            why.append(f"the first was run {verdict['first_failure']}")
        if document.get("interrupted") or done < planned:
            why.append(f"interrupted after {done} of {planned}")
        why.append(f"longest ok streak {verdict['longest_ok_streak']}")
        text.append("FAIL: " + "; ".join(why))
    return "\n".join(text)


def exit_code(document: Mapping[str, Any]) -> int:
    if document.get("interrupted"):
        return EXIT_INTERRUPTED
    return 0 if document["verdict"]["ok"] else EXIT_FAILED


def main(runs: int, kinds: Sequence[tuple[str, float]], out: Path) -> int:
    """Run the soak, print its tally, write its JSON to ``out``; 0 only if every run
    was ok (1 if one failed, 130 if interrupted)."""
    labels = "; ".join(kind_label(f, a) for f, a in kinds)
    say(f"orsim soak: {runs} failover runs ({labels} in turn), {RATE:g} calls/s; "
        f"{os.cpu_count()} cores")  # fmt: skip
    rows: list[Row] = []
    interrupted = False
    started = time.monotonic()
    try:
        with progress_bar(runs, "soak") as bar:
            trio.run(partial(soak, kinds, runs, rows, bar))
    except KeyboardInterrupt:
        interrupted = True
    now = datetime.now().astimezone()
    document = soak_document(
        rows,
        planned=runs,
        kinds=kinds,
        now=now,
        wall_s=time.monotonic() - started,
        cores=os.cpu_count(),
        python=sys.version.split()[0],
        commit=git_commit(),
        interrupted=interrupted,
    )
    path = write_results(document, out, now, "-soak")
    print(render_soak(document))
    say(f"results written to {path}")
    return exit_code(document)
