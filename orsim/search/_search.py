"""The search: hypothesis draws schedules, each runs in the simulation, the first
violation is shrunk to the smallest schedule that still fails the same way, and that
schedule is written as an ordinary scenario file.

Shrinking is hypothesis's: ``hypothesis.find`` returns the minimal example for which the
condition holds, and here the condition is "this schedule violates one of the invariants
the first violation broke" (so shrinking cannot wander off to a different bug).
"""

from __future__ import annotations

import collections
import json
import multiprocessing
import os
import queue
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import attrs
from hypothesis import HealthCheck, Phase, find, settings
from hypothesis.errors import NoSuchExample

from orsim.logs import quiet_logs
from orsim.node import set_mutation
from orsim.search._check import Outcome, run_schedule, scenario_text
from orsim.search._schedule import Schedule, check_fault_kinds, schedules
from orsim.search._topology import SearchTopology, read_topology

if TYPE_CHECKING:
    from multiprocessing.queues import Queue
    from multiprocessing.sharedctypes import SynchronizedArray
    from multiprocessing.synchronize import Event

#: Seconds between two progress lines (or rewrites of the progress bar).
PROGRESS_EVERY = 0.5


@attrs.frozen
class Found:
    """A violation, shrunk: the minimal schedule, its outcome, and the file written."""

    schedule: Schedule
    outcome: Outcome
    path: Path
    #: whether the written file, run as ``orsim scenario run --sim`` runs it, failed the
    #: same way (it must: the check is the same code on the same text)
    replayed: bool
    shrink_runs: int

    @property
    def reason(self) -> str:
        return self.outcome.violations[0].line()


@attrs.define
class Tally:
    """What a search ran (merged across jobs)."""

    schedules: int = 0
    violations: int = 0
    #: runs cut short by a step refused by design (a switchover without its backup)
    refused: int = 0
    virtual_s: float = 0.0
    kinds: collections.Counter[str] = attrs.Factory(collections.Counter)

    def add(self, schedule: Schedule, outcome: Outcome) -> None:
        self.schedules += 1
        self.violations += bool(outcome.violations)
        self.refused += outcome.refused
        self.virtual_s += outcome.virtual_s
        self.kinds.update(schedule.fault_kinds)

    def merge(self, other: Tally) -> None:
        self.schedules += other.schedules
        self.violations += other.violations
        self.refused += other.refused
        self.virtual_s += other.virtual_s
        self.kinds.update(other.kinds)


@attrs.frozen
class SearchResult:
    topology: str
    seed: int
    budget: int
    tally: Tally
    wall_s: float
    found: Found | None
    mutation: str | None
    max_shrink_runs: int | None = None

    def summary(self) -> dict[str, object]:
        """The JSON summary (``--out DIR/summary.json``)."""
        found = self.found
        return {
            "topology": self.topology,
            "seed": self.seed,
            "budget": self.budget,
            "mutation": self.mutation,
            "max_shrink_runs": self.max_shrink_runs,
            "schedules": self.tally.schedules,
            "violations": self.tally.violations,
            "refused": self.tally.refused,
            "fault_kinds": dict(sorted(self.tally.kinds.items())),
            "virtual_s": round(self.tally.virtual_s, 1),
            "wall_s": round(self.wall_s, 2),
            "schedules_per_s": round(self.tally.schedules / self.wall_s, 2)
            if self.wall_s
            else None,
            "found": None
            if found is None
            else {
                "path": str(found.path),
                "reason": found.reason,
                "steps": len(found.schedule.steps),
                "seed": found.schedule.seed,
                "trace_sha256": found.outcome.trace_hash,
                "replayed": found.replayed,
                "shrink_runs": found.shrink_runs,
            },
        }


class _Stopped(Exception):
    """Another job found a violation first."""


@attrs.define
class _Job:
    """One hypothesis search (a process of its own when ``--jobs`` > 1)."""

    topology: SearchTopology
    budget: int
    seed: int
    max_steps: int
    faults: frozenset[str] | None = None
    tally: Tally = attrs.Factory(Tally)
    #: most runs the shrinking may take (None: as long as hypothesis goes on)
    max_shrink_runs: int | None = None
    first: frozenset[str] | None = None
    #: the smallest violating schedule so far (what a capped shrinking returns)
    smallest: Schedule | None = None
    shrink_runs: int = 0
    on_run: Callable[[Tally, bool], None] | None = None
    should_stop: Callable[[], bool] = lambda: False

    def condition(self, schedule: Schedule) -> bool:
        if self.first is None and self.should_stop():
            raise _Stopped
        if self.first is not None and self.shrink_runs == self.max_shrink_runs:
            # Every simpler candidate is refused unrun, so the shrinking ends at once;
            # the smallest so far is what hypothesis holds, and replays at the end.
            return schedule == self.smallest
        outcome = run_schedule(schedule, self.topology)
        if self.first is not None:
            self.shrink_runs += 1
            if self.on_run is not None:
                self.on_run(self.tally, True)
            fails_alike = bool(outcome.kinds & self.first)
            if fails_alike:
                # hypothesis tries only schedules simpler than its best so far
                self.smallest = schedule
            return fails_alike
        self.tally.add(schedule, outcome)
        if self.on_run is not None:
            self.on_run(self.tally, False)
        if outcome.violations:
            self.first, self.smallest = outcome.kinds, schedule
            return True
        return False

    def run(self) -> Schedule | None:
        """The minimal violating schedule, or None if the budget ran clean."""
        options = settings(
            max_examples=self.budget,
            database=None,
            deadline=None,
            phases=[Phase.generate, Phase.shrink],
            suppress_health_check=list(HealthCheck),
        )
        try:
            with quiet_logs():
                return find(
                    schedules(self.topology, max_steps=self.max_steps, faults=self.faults),
                    self.condition,
                    settings=options,
                    random=random.Random(self.seed),
                )
        except (NoSuchExample, _Stopped):
            return self.smallest  # None unless the shrinking was cut short


def search(
    topology_path: str | os.PathLike[str],
    *,
    budget: int = 200,
    seed: int = 0,
    max_steps: int = 8,
    out_dir: Path = Path(".orsim/search"),
    jobs: int = 1,
    mutation: str | None = None,
    progress: TextIO | None = None,
    faults: frozenset[str] | None = None,
    max_shrink_runs: int | None = None,
) -> SearchResult:
    """Search ``budget`` schedules on a topology; on a violation, shrink it (in at most
    ``max_shrink_runs`` runs, if given) and write the smallest schedule found as a
    scenario under ``out_dir``.

    Raises:
        ConfigError: the topology is broken.
        ValueError: ``mutation`` is not a known mutation, or ``faults`` names an unknown
            kind of fault.
    """
    topology = read_topology(topology_path)
    check_fault_kinds(faults)
    set_mutation(mutation)  # raises ValueError for an unknown one
    bar = _Progress(progress, budget)
    started = time.perf_counter()
    try:
        if jobs <= 1:
            job = _Job(topology, budget, seed, max_steps, faults,
                       max_shrink_runs=max_shrink_runs, on_run=bar.update)  # fmt: skip
            minimal = job.run()
            tally, shrink_runs = job.tally, job.shrink_runs
        else:
            minimal, tally, shrink_runs = _parallel(
                topology, budget, seed, max_steps, jobs, bar, faults, max_shrink_runs
            )
        found = None
        if minimal is not None:
            bar.note("writing the shrunk schedule")
            found = _write(minimal, topology, out_dir, seed, mutation, shrink_runs)
    finally:
        set_mutation(None)
    wall = time.perf_counter() - started
    bar.done(tally)
    result = SearchResult(
        str(topology_path), seed, budget, tally, wall, found, mutation, max_shrink_runs
    )
    return result


def _write(
    schedule: Schedule,
    topology: SearchTopology,
    out_dir: Path,
    search_seed: int,
    mutation: str | None,
    shrink_runs: int,
) -> Found:
    """Write the minimal schedule as a scenario and run that file as ``--sim`` would."""
    from orsim.scenario import load_scenario, run_scenario_sim
    from orsim.search._check import violations

    out_dir.mkdir(parents=True, exist_ok=True)
    with quiet_logs():
        outcome = run_schedule(schedule, topology)
    kind = outcome.violations[0].kind if outcome.violations else "none"
    stem = f"found-{topology.path.stem}-{kind}-{search_seed}"
    path = out_dir / f"{stem}.yaml"
    ref = os.path.relpath(topology.path, out_dir.resolve())
    mutated = (
        f" under the test-only mutation {mutation} (ORSIM_MUTATION={mutation})" if mutation else ""
    )
    reason = outcome.violations[0].line() if outcome.violations else "no violation on re-run"
    description = (
        f"Found by `orsim search` (search seed {search_seed}){mutated}, shrunk to"
        f" {len(schedule.steps)} chosen step(s) after the first second of load. It fails"
        f" with: {reason}. Simulation seed {schedule.seed}; trace sha256"
        f" {outcome.trace_hash}."
    )
    document = schedule.document(topology, ref, stem, description)
    path.write_text(scenario_text(document))
    # The file itself, read back as `orsim scenario run --sim` reads it.
    import tempfile

    scenario = load_scenario(path)
    with quiet_logs(), tempfile.TemporaryDirectory() as tmp:
        result, _trace = run_scenario_sim(scenario, run_dir=Path(tmp), seed=schedule.seed,
                                          out=lambda _l: None)  # fmt: skip
    again = {v.kind for v in violations(result)}
    replayed = bool(again & outcome.kinds)
    return Found(schedule, outcome, path, replayed, shrink_runs)


#: What a search process sends back: (its index, its minimal schedule or None, its tally,
#: the runs its shrinking took).
_JobResult = tuple[int, Schedule | None, Tally, int]


def _parallel(
    topology: SearchTopology,
    budget: int,
    seed: int,
    max_steps: int,
    jobs: int,
    bar: _Progress,
    faults: frozenset[str] | None,
    max_shrink_runs: int | None,
) -> tuple[Schedule | None, Tally, int]:
    """``jobs`` processes, seeds ``seed``, ``seed + 1``, ...; the first violation wins:
    (its minimal schedule, every job's tally, the runs its shrinking took)."""
    context = multiprocessing.get_context("fork")
    counts = context.Array("i", jobs)
    stop = context.Event()
    results: Queue[_JobResult] = context.Queue()
    shares = [budget // jobs + (1 if i < budget % jobs else 0) for i in range(jobs)]
    workers = [
        context.Process(
            target=_job_main,
            args=(
                topology.path,
                share,
                seed + i,
                max_steps,
                faults,
                max_shrink_runs,
                i,
                counts,
                stop,
                results,
            ),
            daemon=True,
        )
        for i, share in enumerate(shares)
    ]
    for worker in workers:
        worker.start()
    got: list[_JobResult] = []
    while len(got) < jobs:
        try:
            got.append(results.get(timeout=PROGRESS_EVERY))
        except queue.Empty:
            if not any(w.is_alive() for w in workers) and results.empty():
                raise RuntimeError("a search process died without a result") from None
        bar.update_count(sum(counts[:]))
    for worker in workers:
        worker.join()
    tally = Tally()
    minimal: Schedule | None = None
    shrunk_in = 0
    for _index, found, job_tally, shrink_runs in sorted(got, key=lambda g: g[0]):
        tally.merge(job_tally)
        if found is not None and minimal is None:
            minimal, shrunk_in = found, shrink_runs
    return minimal, tally, shrunk_in


def _job_main(
    path: Path,
    budget: int,
    seed: int,
    max_steps: int,
    faults: frozenset[str] | None,
    max_shrink_runs: int | None,
    index: int,
    counts: SynchronizedArray[int],
    stop: Event,
    results: Queue[_JobResult],
) -> None:
    topology = read_topology(path)

    def on_run(tally: Tally, _shrinking: bool) -> None:
        counts[index] = tally.schedules

    job = _Job(topology, budget, seed, max_steps, faults, max_shrink_runs=max_shrink_runs,
               on_run=on_run, should_stop=stop.is_set)  # fmt: skip
    minimal = job.run()
    if minimal is not None:
        stop.set()
    results.put((index, minimal, job.tally, job.shrink_runs))


@attrs.define
class _Progress:
    """A progress bar on a terminal, a line every few seconds otherwise (stderr)."""

    stream: TextIO | None
    budget: int
    started: float = attrs.Factory(time.perf_counter)
    last: float = 0.0
    violations: int = 0

    def update(self, tally: Tally, shrinking: bool) -> None:
        self.violations = tally.violations
        if shrinking:
            self.note(f"shrinking: {tally.violations} violation(s) found")
        else:
            self.update_count(tally.schedules)

    def update_count(self, count: int) -> None:
        now = time.perf_counter()
        if self.stream is None or (now - self.last < PROGRESS_EVERY and count < self.budget):
            return
        self.last = now
        rate = count / (now - self.started) if now > self.started else 0.0
        width = 30
        filled = int(width * count / self.budget) if self.budget else width
        line = (
            f"[{'#' * filled}{'.' * (width - filled)}] {count}/{self.budget} schedules,"
            f" {self.violations} violation(s), {rate:.1f} schedules/s"
        )
        self._show(line)

    def note(self, text: str) -> None:
        now = time.perf_counter()
        if self.stream is None or now - self.last < PROGRESS_EVERY:
            return
        self.last = now
        self._show(text)

    def _show(self, line: str) -> None:
        assert self.stream is not None
        if self.stream.isatty():
            self.stream.write(f"\r\x1b[2K{line}")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def done(self, tally: Tally) -> None:
        if self.stream is None:
            return
        if self.stream.isatty():
            self.stream.write("\n")
        self.stream.flush()


def write_summary(results: list[SearchResult], path: Path) -> None:
    """``summary.json``: one entry per topology, and the totals."""
    entries = [r.summary() for r in results]
    kinds: collections.Counter[str] = collections.Counter()
    for r in results:
        kinds.update(r.tally.kinds)
    total = {
        "schedules": sum(r.tally.schedules for r in results),
        "violations": sum(r.tally.violations for r in results),
        "wall_s": round(sum(r.wall_s for r in results), 2),
        "fault_kinds": dict(sorted(kinds.items())),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"searches": entries, "total": total}, indent=2) + "\n")
