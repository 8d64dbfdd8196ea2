"""The applied schedule of a run (``schedule.json``) and ``orsim scenario replay RUN_DIR --sim``.

Every scenario run, real or ``--sim``, writes ``RUN_DIR/schedule.json``: the scenario
(name, source path and text, topology path), the seed, each step that acts on the
cluster (fault, repair, load, option change) with its targets and its offset in seconds
from the start of the steps, and the verdicts. A replay runs the recorded scenario text
in simulation, seeded by the recorded seed, holding each recorded step back until its
recorded offset; waits still run as written, and a step the simulation reaches later
than recorded is reported with its drift. It then compares every verdict with the
recorded one: exit 0 if all agree, 1 if any differs.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import attrs

from orsim.errors import ConfigError
from orsim.scenario._load import parse_scenario, step_label
from orsim.scenario._model import (
    Delay,
    Isolate,
    Load,
    Partition,
    Restart,
    Scenario,
    SendSignal,
    SetOption,
    Start,
    Step,
    StopLoad,
    Switchover,
)
from orsim.scenario._timeline import Verdict

if TYPE_CHECKING:
    from orsim.scenario._runner import Output, ScenarioResult

T = TypeVar("T")

SCHEDULE_FILE = "schedule.json"
FORMAT = 1
#: Lateness below this is clock rounding, not drift (offsets are kept to the microsecond).
DRIFT_SHOWN = 0.001


@attrs.frozen
class AppliedStep:
    """A step that acted on the cluster, as applied: ``offset`` is when it began."""

    number: int
    verb: str
    targets: tuple[str, ...]
    detail: str
    offset: float
    #: In a replay: the offset this step had in the recording.
    recorded: float | None = None

    @property
    def label(self) -> str:
        return step_label(self.number, self.verb)

    @property
    def late(self) -> float:
        """How much later than recorded a replay reached this step (0 if not later)."""
        return 0.0 if self.recorded is None else max(self.offset - self.recorded, 0.0)


def is_scheduled(step: Step) -> bool:
    """Steps recorded in the schedule (and paced in a replay)."""
    return step.is_intervention or step.verb == "load"


def applied_step(step: Step, offset: float, recorded: float | None = None) -> AppliedStep:
    targets, detail = _describe(step)
    return AppliedStep(step.number, step.verb, targets, detail, round(offset, 6), recorded)


def _describe(step: Step) -> tuple[tuple[str, ...], str]:
    action = step.action
    if isinstance(action, SendSignal):
        return (action.app,), f"SIG{action.signal}"
    if isinstance(action, Restart):
        return (action.app,), f"SIG{action.signal}, then start"
    if isinstance(action, Start):
        return action.apps or (), ""  # ``start: all`` is resolved when it runs
    if isinstance(action, Partition):
        return (action.a, action.b), ""
    if isinstance(action, Isolate):
        return (action.host,), "every other host"
    if isinstance(action, Delay):
        return (action.a, action.b), f"{action.ms:g} ms"
    if isinstance(action, Switchover):
        return (str(action.node),), ""
    if isinstance(action, SetOption):
        return (action.object,), f"{action.section}/{action.key} = {action.value!r}"
    if isinstance(action, Load):
        duration = f" for {action.duration:g}s" if action.duration else ""
        return (), f"{action.rate:g} calls/s{duration}"
    if isinstance(action, StopLoad):
        return (), "stop"
    return (), ""


# --- schedule.json -----------------------------------------------------------------------


def read_source(scenario: Scenario) -> str | None:
    """The scenario file's text, kept in the schedule so a replay runs what ran."""
    try:
        return Path(scenario.source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def write_schedule(result: ScenarioResult, *, sim: bool, text: str | None) -> Path:
    """Write ``schedule.json`` into the result's run directory."""
    scenario = result.scenario
    doc = {
        "format": FORMAT,
        "scenario": scenario.name,
        "source": os.path.abspath(scenario.source),
        "topology": os.path.abspath(scenario.topology_path),
        "seed": result.seed,
        "sim": sim,
        "passed": result.passed,
        "steps": [
            {"number": s.number, "verb": s.verb, "targets": list(s.targets), "detail": s.detail,
             "offset": s.offset, **({"recorded": s.recorded} if s.recorded is not None else {})}
            for s in result.schedule
        ],
        "verdicts": [
            {"label": v.label, "passed": v.passed, "detail": v.detail, "step": v.step}
            for v in result.verdicts
        ],
        "text": text,
    }  # fmt: skip
    path = Path(result.run_dir) / SCHEDULE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return path


@attrs.frozen
class Recording:
    """A ``schedule.json`` read back."""

    path: Path
    name: str
    source: str
    seed: int
    sim: bool
    steps: tuple[AppliedStep, ...]
    verdicts: tuple[Verdict, ...]
    text: str | None

    def scenario(self) -> Scenario:
        """The recorded scenario, checked against the recorded steps."""
        text = self.text
        try:
            if text is None:
                text = Path(self.source).read_text(encoding="utf-8")
            scenario = parse_scenario(text, self.source)
        except (OSError, UnicodeDecodeError, ConfigError) as exc:
            raise ConfigError(f"{self.path}: the recorded scenario does not load: {exc}") from None
        verbs = {step.number: step.verb for step in scenario.steps}
        for applied in self.steps:
            if verbs.get(applied.number) != applied.verb:
                raise ConfigError(f"{self.path}: {applied.label} is not in the recorded scenario")
        return scenario


def read_schedule(run_dir: Path) -> Recording:
    """Read ``run_dir/schedule.json``.

    Raises:
        ConfigError: it is missing or broken (one line naming the file and the field).
    """
    path = run_dir / SCHEDULE_FILE
    if not path.is_file():
        raise ConfigError(f"{run_dir}: no {SCHEDULE_FILE} (not the run directory of a scenario)")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{path}: not readable JSON: {exc}") from None
    top = _Fields(path, doc, "")
    steps = tuple(
        AppliedStep(
            number=f.get("number", int),
            verb=f.get("verb", str),
            targets=tuple(f.get("targets", list)),
            detail=f.text("detail"),
            offset=f.number("offset"),
        )
        for f in top.items("steps")
    )
    if any(b.offset < a.offset for a, b in itertools.pairwise(steps)):
        raise ConfigError(f"{path}: field 'steps': offsets go backwards")
    verdicts = tuple(
        Verdict(f.get("label", str), f.get("passed", bool), f.text("detail"))
        for f in top.items("verdicts")
    )
    text = top.fields().get("text")
    return Recording(
        path=path,
        name=top.get("scenario", str),
        source=top.get("source", str),
        seed=top.get("seed", int),
        sim=bool(top.fields().get("sim", False)),
        steps=steps,
        verdicts=verdicts,
        text=text if isinstance(text, str) else None,
    )


@attrs.frozen
class _Fields:
    """Typed access to one JSON object, each failure naming the file and the field."""

    path: Path
    raw: object
    where: str

    def fields(self) -> Mapping[str, object]:
        if not isinstance(self.raw, dict):
            raise ConfigError(f"{self.path}: field '{self.where or '.'}': not an object")
        return self.raw

    def get(self, key: str, kind: type[T]) -> T:
        value = self.fields().get(key)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise ConfigError(
                f"{self.path}: field '{self.where}{key}': missing or not a {kind.__name__}"
            )
        return value

    def number(self, key: str) -> float:
        value = self.fields().get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{self.path}: field '{self.where}{key}': missing or not a number")
        return float(value)

    def text(self, key: str, default: str = "") -> str:
        """``key``'s value as text, whatever it is (``default`` when absent)."""
        return str(self.fields().get(key, default))

    def items(self, key: str) -> list[_Fields]:
        return [
            _Fields(self.path, item, f"{self.where}{key}[{i}].")
            for i, item in enumerate(self.get(key, list))
        ]


# --- replay ------------------------------------------------------------------------------


def compare(
    recorded: Sequence[Verdict], replayed: Sequence[Verdict]
) -> list[tuple[str, str | None]]:
    """(label, None if the verdicts agree, else how they differ), recorded order first."""
    theirs = {v.label: v for v in recorded}
    ours = {v.label: v for v in replayed}
    labels = list(theirs) + [label for label in ours if label not in theirs]
    rows: list[tuple[str, str | None]] = []
    for label in labels:
        was, now = theirs.get(label), ours.get(label)
        if was is not None and now is not None and was.passed == now.passed:
            rows.append((label, None))
        else:
            rows.append((label, f"recorded: {_state(was)}, replay: {_state(now)}"))
    return rows


def _state(verdict: Verdict | None) -> str:
    if verdict is None:
        return "not there"
    return "passed" if verdict.passed else f"failed: {verdict.detail}"


def drift_lines(recording: Recording, schedule: Sequence[AppliedStep]) -> list[str]:
    """How the replay kept the recorded schedule: a summary, then each step that was not."""
    reached = {s.number: s for s in schedule}
    late = [s for s in schedule if s.late >= DRIFT_SHOWN]
    missed = [s for s in recording.steps if s.number not in reached]
    extra = [s for s in schedule if s.recorded is None]
    kept = len(recording.steps) - len(late) - len(missed)
    lines = [f"-- schedule: {kept} of {len(recording.steps)} recorded steps at their offsets"]
    lines += [
        f"  late     {s.label} by {s.late:.3f}s (at {s.offset:.3f}s, recorded {s.recorded:.3f}s)"
        for s in late
    ]
    lines += [f"  missed   {s.label} (recorded at {s.offset:.3f}s)" for s in missed]
    lines += [f"  extra    {s.label} at {s.offset:.3f}s (not in the recording)" for s in extra]
    return lines


def replay(
    run_dir: Path,
    *,
    seed: int | None = None,
    run_root: Path | None = None,
    report: Path | None = None,
    out: Output = print,
) -> int:
    """``orsim scenario replay RUN_DIR --sim``: 0 if every verdict matches the recording.

    The replay's own run directory is ``RUN_DIR/replay`` (``run_root/NAME-replay``).

    Raises:
        ConfigError: ``schedule.json`` is missing or broken, or its scenario no longer loads.
    """
    from orsim.scenario._report import write_report
    from orsim.scenario._session import fresh_run_dir
    from orsim.scenario._sim import run_scenario_sim, sim_logs

    recording = read_schedule(run_dir)
    scenario = recording.scenario()
    used = recording.seed if seed is None else seed
    if run_root is None:
        where = fresh_run_dir(run_dir, "replay", set())
    else:
        where = fresh_run_dir(run_root, f"{scenario.name}-replay", set())
    kind = "simulated" if recording.sim else "real"
    out(f"== replay of {run_dir}: the {kind} run of {recording.name}, seed {recording.seed}")
    pace = {s.number: s.offset for s in recording.steps}
    wall = time.perf_counter()
    with sim_logs(where / "logs" / "sim.jsonl"):
        result, trace = run_scenario_sim(scenario, run_dir=where, seed=used, out=out, pace=pace)
    wall = time.perf_counter() - wall
    (where / "trace.jsonl").write_text(trace.text())
    out(f"-- simulated {result.timeline.duration:.1f}s in {wall:.2f}s of wall time")
    out(f"trace sha256 {trace.digest()}")
    for line in drift_lines(recording, result.schedule):
        out(line)
    rows = compare(recording.verdicts, result.verdicts)
    out(f"-- verdicts against the recording ({kind} run, seed {recording.seed}):")
    for label, difference in rows:
        out(f"  same     {label}" if difference is None else f"  DIFFERS  {label}: {difference}")
    if report is not None:
        write_report([result], report)
        out(f"HTML report written to {report}")
    differ = [label for label, difference in rows if difference is not None]
    tail = f" (differs: {', '.join(differ)})" if differ else ""
    out(f"{len(rows) - len(differ)} same, {len(differ)} differ{tail}")
    return 0 if not differ else 1
