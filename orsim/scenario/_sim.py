"""``orsim scenario run --sim``: each scenario on a simulated cluster in seeded virtual time.

Each scenario gets a trio run of its own under ``MockClock(rate=0, autojump_threshold=0)``
with trio's scheduler seeded by the scenario's seed (``--seed`` overrides it), so two runs
of the same seed and code are the same run. The runner, expectations, timeline, JUnit and
report are the real-process ones; the runner's clock is the simulated wall clock
(``orsim.sim.sim_wall``), which is also the T-Server's.

The trace of a scenario (its sha256 is printed as ``trace sha256 <hex>``) is, in order:
the simulated cluster's events (applications started and ready, signals and other
faults, load, option changes, every ORS mode change with its epoch and reason), each at
its virtual time; then the runner's timeline events (steps, faults, repairs, role
changes seen by sampling, verdicts; not the informational lines, which name the run
directory), at virtual time since the steps began; then every ledger record (call id,
routing point, state, routing app, node id, epoch, virtual created/routed/deadline
times, latency to the microsecond) in ledger order; then the verdicts. No wall-clock
value, pid or path is in it.
``trace.jsonl`` in the scenario's run directory holds the trace, one entry a line, and
``logs/sim.jsonl`` every application's log lines (with ``app`` and virtual time ``vt``).
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
import trio
from structlog.typing import EventDict, WrappedLogger

from orsim.scenario._model import Scenario
from orsim.scenario._runner import ClusterLike, Output, ScenarioResult, run_scenario
from orsim.scenario._session import DEFAULT_RUN_ROOT, load_all, with_run_dirs, write_outputs

if TYPE_CHECKING:
    # The simulation itself is imported on first use: a real-process run never needs it.
    from orsim.sim import Trace

#: Ledger record fields that are times (simulated wall clock): traced as virtual times.
_TIME_FIELDS = ("created_at", "deadline", "routed_at")


def scenario_seed(scenario: Scenario, seed: int | None) -> int:
    """``--seed``, else the scenario's ``seed``, else one drawn at random (and shown)."""
    if seed is not None:
        return seed
    if scenario.seed is not None:
        return scenario.seed
    return random.randrange(2**31)


def _virtual_time(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    try:
        event["vt"] = round(trio.current_time(), 6)
    except RuntimeError:
        pass
    return event


@contextmanager
def sim_logs(path: Path, level: int = logging.INFO) -> Iterator[None]:
    """Every application's log lines (JSON, with ``app`` and the virtual time ``vt``) go to
    ``path`` while the block runs; structlog's configuration is restored after."""
    previous = structlog.get_config()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as stream:
        structlog.configure(
            processors=[
                structlog.contextvars.merge_contextvars,
                structlog.processors.add_log_level,
                _virtual_time,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(sort_keys=False),
            ],
            wrapper_class=structlog.make_filtering_bound_logger(level),
            logger_factory=structlog.WriteLoggerFactory(file=stream),
            cache_logger_on_first_use=False,
        )
        try:
            yield
        finally:
            structlog.configure(**previous)


def run_scenario_sim(
    scenario: Scenario,
    *,
    run_dir: Path,
    seed: int,
    out: Output = print,
    pace: Mapping[int, float] | None = None,
) -> tuple[ScenarioResult, Trace]:
    """Run one scenario in its own seeded trio run; (result, its ``Trace``).

    ``pace``: a replay's recorded step offsets (see ``run_scenario``).
    """
    from orsim.sim import SimClusterHandle, Trace, run_seeded, sim_wall

    handles: list[SimClusterHandle] = []

    async def main() -> ScenarioResult:
        async with trio.open_nursery() as nursery:

            async def factory(config: Path, where: Path) -> ClusterLike:
                handle = await SimClusterHandle.up(config, where, nursery=nursery, seed=seed)
                handles.append(handle)
                return handle

            result = await run_scenario(
                scenario, run_dir=run_dir, factory=factory, seed=seed, out=out, clock=sim_wall,
                pace=pace, sim=True,
            )  # fmt: skip
            nursery.cancel_scope.cancel()
        return result

    result = run_seeded(main, seed=seed)
    trace = handles[0].trace if handles else Trace()
    full = Trace(list(trace.entries))
    full.extend(scenario_entries(result))
    return result, full


def scenario_entries(result: ScenarioResult) -> list[dict[str, object]]:
    """The runner's part of the trace: timeline events, ledger records, verdicts."""
    from orsim.sim import SIM_EPOCH, TIME_DIGITS, vtime

    timeline = result.timeline
    entries: list[dict[str, object]] = []
    for event in timeline.events:
        if event.kind == "info":
            continue
        entries.append(
            {"t": vtime(event.t - timeline.t0), "kind": f"timeline.{event.kind}",
             "step": event.step, "app": event.app, "text": event.text}
        )  # fmt: skip
    records = (result.ledger.records or ()) if result.ledger else ()
    for record in records:
        entry: dict[str, object] = {"kind": "call", **record.to_wire()}
        for name in _TIME_FIELDS:
            value = entry.get(name)
            if isinstance(value, int | float):
                entry[name] = vtime(value - SIM_EPOCH)
        latency = entry.get("latency_ms")
        if isinstance(latency, int | float):
            entry["latency_ms"] = round(latency, TIME_DIGITS - 3)
        entries.append(entry)
    for verdict in result.verdicts:
        entries.append(
            {"kind": "verdict", "label": verdict.label, "passed": verdict.passed,
             "detail": verdict.detail, "step": verdict.step}
        )  # fmt: skip
    return entries


def run_files_sim(
    paths: Sequence[str | os.PathLike[str]],
    *,
    run_root: Path = DEFAULT_RUN_ROOT,
    junit: Path | None = None,
    report: Path | None = None,
    seed: int | None = None,
    out: Output = print,
) -> int:
    """``orsim scenario run --sim``: 0 if every expectation held, 1 otherwise.

    Not async: every scenario is a trio run of its own (seeded, virtual time).

    Raises:
        ConfigError: a scenario file is broken (nothing was run).
    """
    results: list[ScenarioResult] = []
    for scenario, run_dir in with_run_dirs(load_all(paths), run_root):
        used = scenario_seed(scenario, seed)
        wall = time.perf_counter()
        with sim_logs(run_dir / "logs" / "sim.jsonl"):
            result, trace = run_scenario_sim(scenario, run_dir=run_dir, seed=used, out=out)
        wall = time.perf_counter() - wall
        (run_dir / "trace.jsonl").write_text(trace.text())
        results.append(result)
        virtual = result.timeline.duration
        out(f"-- simulated {virtual:.1f}s in {wall:.2f}s of wall time")
        out(f"trace sha256 {trace.digest()}")
        out("")
    return write_outputs(results, junit, report, out)
