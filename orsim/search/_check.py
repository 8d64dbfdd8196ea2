"""Run one schedule as a scenario in the seeded simulation and say what it violated."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path

import attrs
import yaml

from orsim.scenario import ScenarioResult, parse_scenario
from orsim.search._schedule import Schedule
from orsim.search._topology import SearchTopology

#: What a failed verdict is, by the start of its label's text after ``step N: ``.
_KINDS = (
    ("calls_lost", "lost"),
    ("calls_duplicated", "duplicated"),
    ("split_brain", "split-brain"),
)


@attrs.frozen
class Violation:
    """One broken invariant: ``kind`` (lost, duplicated, split-brain, liveness,
    step-failed) and the verdict's own words."""

    kind: str
    detail: str

    def line(self) -> str:
        return f"{self.kind}: {self.detail}"


@attrs.frozen
class Outcome:
    violations: tuple[Violation, ...]
    trace_hash: str
    virtual_s: float
    #: a chosen step was refused by design, so the run was cut short (see ``refused``)
    refused: bool = False

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(v.kind for v in self.violations)


def scenario_text(document: Mapping[str, object]) -> str:
    """A scenario document as a readable file: one step a line."""
    head = {k: v for k, v in document.items() if k != "steps"}
    lines = [yaml.safe_dump(head, sort_keys=False, width=88).rstrip(), "steps:"]
    steps = document["steps"]
    assert isinstance(steps, list)  # the document is built by the search, steps a list
    for step in steps:
        ((verb, value),) = step.items()
        flow = yaml.safe_dump(value, default_flow_style=True, width=200).strip()
        if flow.endswith("\n...") or flow.endswith("..."):
            flow = flow.rsplit("\n", 1)[0].strip()
        lines.append(f"  - {verb}: {flow}")
    return "\n".join(lines) + "\n"


def run_schedule(
    schedule: Schedule,
    topology: SearchTopology,
    *,
    work_dir: Path | None = None,
    name: str = "searched",
    description: str = "",
) -> Outcome:
    """Run ``schedule`` on ``topology`` in the simulation (its own seed); never raises for a
    failed run. The scenario is parsed from the very text ``write_scenario`` writes."""
    from orsim.scenario import run_scenario_sim

    source_dir = topology.path.parent
    document = schedule.document(topology, topology.path.name, name, description or name)
    scenario = parse_scenario(scenario_text(document), str(source_dir / f"{name}.yaml"))
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        result, trace = run_scenario_sim(
            scenario, run_dir=Path(tmp), seed=schedule.seed, out=_discard
        )
    return Outcome(violations(result), trace.digest(), result.timeline.duration, refused(result))


#: A step the cluster may refuse by design (its refusal is an answer, not a bug).
_REFUSABLE = ("(switchover)",)


def refused(result: ScenarioResult) -> bool:
    """True when a chosen step was refused by design (a switchover whose backup is not
    there to take over): the runner skipped the rest, so the run proves nothing."""
    return any(
        not v.passed and v.label.endswith(_REFUSABLE) and "could not be carried out" in v.detail
        for v in result.verdicts
    )


def violations(result: ScenarioResult) -> tuple[Violation, ...]:
    """The failed verdicts of a searched scenario, as violations (none for a run whose
    chosen step was refused: see ``refused``)."""
    if refused(result):
        return ()
    found: list[Violation] = []
    for verdict in result.verdicts:
        if verdict.passed:
            continue
        text = verdict.label.split(": ", 1)[-1]
        kind = next((k for prefix, k in _KINDS if text.startswith(prefix)), None)
        if kind is None:
            waited = "waiting until every application ready" in verdict.detail
            kind = "liveness" if waited else "step-failed"
        found.append(Violation(kind, f"{verdict.label}: {verdict.detail}"))
    return tuple(found)


def _discard(_line: str) -> None:
    pass
