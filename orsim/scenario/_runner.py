"""Running a scenario against a cluster: steps in order, status sampled throughout.

The runner drives anything with the launcher's async verbs (``ClusterLike``: the real
``orsim.cluster.ClusterHandle`` or a fake in tests). While the steps run, a sampler task
asks for the cluster status every ``sample-interval`` and records role changes; after
the last step the load is stopped, in-flight calls are given ``settle-timeout`` to end
as routed or lost, the ledger (with its records) is read, and the run-wide expectations
are judged. The cluster is always torn down, whatever happened.

Each step that acts on the cluster is recorded with its offset from the start of the
steps, and the run directory gets ``schedule.json`` (``orsim.scenario._replay``). Given
``pace`` (a replay), such a step first waits until its recorded offset.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import attrs
import trio

from orsim._alarm import sleep_until
from orsim.cluster import app_mode, app_row
from orsim.errors import OrsimError
from orsim.scenario import _model as model
from orsim.scenario._expect import evaluate, expectation_label, mode_verdict
from orsim.scenario._load import step_label
from orsim.scenario._replay import (
    AppliedStep,
    applied_step,
    is_scheduled,
    read_source,
    write_schedule,
)
from orsim.scenario._timeline import (
    Event,
    EventKind,
    Timeline,
    Verdict,
    format_event,
    format_verdict,
    sample_from_status,
)

if TYPE_CHECKING:
    from orsim.cluster import ClusterStatus
    from orsim.tserver import LedgerReport

#: How long teardown may take before the runner gives up on it (shielded from cancel).
DOWN_TIMEOUT = 30.0
#: How long a restarted application gets to go down before it is started again.
RESTART_DOWN_TIMEOUT = 15.0
#: Poll interval of waits and mode expectations.
POLL_INTERVAL = 0.1
#: A replayed step this close to its recorded offset is on time: offsets are kept to the
#: microsecond, and the simulated wall clock is a large float.
PACE_SLACK = 1e-5


class ClusterLike(Protocol):
    """The verbs of ``orsim.cluster.ClusterHandle`` the runner uses (CONTRACTS.md).

    The runner reads only ``status`` and ``ledger``; what the other verbs return is the
    implementation's (``object``: any result will do)."""

    async def status(self) -> ClusterStatus: ...
    async def kill(self, app: str, signal: str = "KILL") -> object: ...
    async def start(self, app: str) -> object: ...
    async def switchover(self, node: str) -> object: ...
    async def partition(self, a: str, b: str, heal: bool = False) -> object: ...
    async def isolate(self, host: str, heal: bool = False) -> object: ...
    async def delay(self, a: str, b: str, ms: float) -> object: ...
    async def load(self, rate: float, duration: float | None = None) -> object: ...
    async def stop_load(self) -> object: ...
    async def ledger(self, records: bool = False) -> LedgerReport: ...
    async def set_option(self, object: str, section: str, key: str, value: str) -> object: ...
    async def down(self) -> object: ...


ClusterFactory = Callable[[Path, Path], Awaitable[ClusterLike]]
Clock = Callable[[], float]
Output = Callable[[str], None]


async def launch_cluster(config: Path, run_dir: Path) -> ClusterLike:
    """The real thing: ``ClusterHandle.up(config, run_dir, ports="auto")``."""
    from orsim.cluster import ClusterHandle

    return await ClusterHandle.up(config, run_dir, ports="auto")


@attrs.frozen
class ScenarioResult:
    scenario: model.Scenario = attrs.field(eq=False)
    verdicts: tuple[Verdict, ...]
    timeline: Timeline = attrs.field(eq=False)
    ledger: LedgerReport | None = attrs.field(eq=False)
    run_dir: str
    seed: int
    #: the steps that acted on the cluster, in order, with their offsets
    schedule: tuple[AppliedStep, ...] = attrs.field(default=(), eq=False)

    @property
    def passed(self) -> bool:
        return all(v.passed for v in self.verdicts)

    @property
    def counts(self) -> tuple[int, int]:
        """(passed, failed)."""
        good = sum(1 for v in self.verdicts if v.passed)
        return good, len(self.verdicts) - good


class _StepFailed(Exception):
    """A step could not be carried out; the rest of the timeline is skipped."""


@attrs.define(eq=False)
class _Run:
    scenario: model.Scenario
    cluster: ClusterLike
    timeline: Timeline
    out: Output
    clock: Clock
    rng: random.Random
    verdicts: dict[int, Verdict] = attrs.Factory(dict)
    failures: list[Verdict] = attrs.Factory(list)
    #: fault step numbers not yet given back, by the application they hit
    open_faults: dict[str, list[int]] = attrs.Factory(dict)
    #: a replay's recorded offsets, by step number
    pace: Mapping[int, float] = attrs.Factory(dict)
    applied: list[AppliedStep] = attrs.Factory(list)

    def emit(
        self, kind: EventKind, text: str, step: int | None = None, app: str | None = None
    ) -> float:
        event = self.timeline.add(Event(self.clock(), kind, text, step, app))
        self.out(format_event(event, self.timeline.t0))
        return event.t

    async def sample(self) -> ClusterStatus | None:
        try:
            status = await self.cluster.status()
        except (OrsimError, OSError):
            return None
        for event in self.timeline.add_sample(sample_from_status(self.clock(), status)):
            self.out(format_event(event, self.timeline.t0))
        return status

    async def sampler(self) -> None:
        interval = self.scenario.sample_interval
        while True:
            deadline = trio.current_time() + interval
            await self.sample()
            await sleep_until(deadline)

    # --- steps ---------------------------------------------------------------------------

    async def run_steps(self) -> None:
        for step in self.scenario.steps:
            if is_scheduled(step):
                await self.keep_time(step)
            try:
                await self.run_step(step)
            except _StepFailed as exc:
                label = step_label(step.number, step.verb)
                self.emit(
                    "error", f"{label} failed: {exc}; the remaining steps are skipped", step.number
                )
                self.failures.append(
                    Verdict(
                        label, False, f"could not be carried out: {exc}", step.number, self.clock()
                    )
                )
                return

    async def keep_time(self, step: model.Step) -> None:
        """Record a scheduled step as it begins; in a replay, hold it until its offset."""
        recorded = self.pace.get(step.number)
        if recorded is not None:
            ahead = recorded - self.timeline.rel(self.clock())
            if ahead > PACE_SLACK:
                await trio.sleep(ahead)
            elif ahead < -PACE_SLACK:
                self.emit(
                    "info",
                    f"replay: {step_label(step.number, step.verb)} is {-ahead:.3f}s later "
                    f"than recorded ({recorded:.3f}s)",
                    step.number,
                )
        self.applied.append(applied_step(step, self.timeline.rel(self.clock()), recorded))

    async def run_step(self, step: model.Step) -> None:
        action = step.action
        n = step.number
        try:
            if isinstance(action, model.Expect):
                if isinstance(action.expectation, model.ModeWithin):
                    await self.expect_mode(step, action.expectation)
                else:
                    self.emit(
                        "step",
                        f"expect {expectation_label(step).split(': ', 1)[1]} (judged at the end)",
                        n,
                    )
            elif isinstance(action, model.Start):
                await self.start(step, action)
            elif isinstance(action, model.Wait):
                await self.wait(step, action)
            elif isinstance(action, model.Load):
                duration = f" for {action.duration:g}s" if action.duration else ""
                self.emit("step", f"load {action.rate:g} calls/s{duration}", n)
                await self.cluster.load(action.rate, action.duration)
            elif isinstance(action, model.StopLoad):
                self.emit("step", "load stop", n)
                await self.cluster.stop_load()
            elif isinstance(action, model.SendSignal):
                await self.signal(step, action)
            elif isinstance(action, model.Restart):
                await self.restart(step, action)
            elif isinstance(action, model.Partition):
                await self.partition(step, action)
            elif isinstance(action, model.Isolate):
                await self.isolate(step, action)
            elif isinstance(action, model.Delay):
                await self.cluster.delay(action.a, action.b, action.ms)
                self.fault(step, f"delay {action.a} <-> {action.b} by {action.ms:g} ms", action.a)
            elif isinstance(action, model.Switchover):
                await self.cluster.switchover(str(action.node))
                self.fault(step, f"switchover of Node {action.node}", None)
            elif isinstance(action, model.SetOption):
                self.emit(
                    "repair",
                    f"set-option {action.object} {action.section}/{action.key} = {action.value!r}",
                    n,
                )
                await self.cluster.set_option(
                    action.object, action.section, action.key, action.value
                )
            elif isinstance(action, model.Sleep):
                seconds = (
                    action.low
                    if action.low == action.high
                    else self.rng.uniform(action.low, action.high)
                )
                self.emit("step", f"sleep {seconds:.2f}s", n)
                await trio.sleep(seconds)
        except (OrsimError, OSError) as exc:
            raise _StepFailed(str(exc) or type(exc).__name__) from exc

    def fault(self, step: model.Step, text: str, app: str | None) -> None:
        t = self.emit("fault", text, step.number, app)
        self.timeline.fault_times[step.number] = t
        if app is not None:
            self.open_faults.setdefault(app, []).append(step.number)

    def repaired(self, app: str, t: float, verbs: tuple[str, ...]) -> None:
        """Mark the open faults of ``verbs`` on ``app`` as given back at ``t``."""
        still = []
        for number in self.open_faults.get(app, []):
            if self.scenario.steps[number - 1].verb in verbs:
                self.timeline.repair_times.setdefault(number, t)
            else:
                still.append(number)
        self.open_faults[app] = still

    async def signal(self, step: model.Step, action: model.SendSignal) -> None:
        await self.cluster.kill(action.app, action.signal)
        if action.signal == "CONT":
            t = self.emit("repair", f"continue {action.app} (SIGCONT)", step.number, action.app)
            self.repaired(action.app, t, ("stop", "kill"))
        else:
            self.fault(step, f"{step.verb} {action.app} (SIG{action.signal})", action.app)

    async def restart(self, step: model.Step, action: model.Restart) -> None:
        await self.cluster.kill(action.app, action.signal)
        self.fault(step, f"restart {action.app}: SIG{action.signal}", action.app)
        went_down = await self.poll(
            lambda status: app_mode(status, action.app) == "down", RESTART_DOWN_TIMEOUT
        )
        if not went_down:
            raise _StepFailed(f"{action.app} did not go down within {RESTART_DOWN_TIMEOUT:g}s")
        await self.cluster.start(action.app)
        t = self.emit("repair", f"restart {action.app}: started again", step.number, action.app)
        self.timeline.repair_times.setdefault(step.number, t)

    async def start(self, step: model.Step, action: model.Start) -> None:
        apps = action.apps
        if apps is None:
            status = await self.cluster.status()
            apps = tuple(row["app"] for row in status["apps"] if row["mode"] == "down")
        if self.applied and self.applied[-1].number == step.number:
            self.applied[-1] = attrs.evolve(self.applied[-1], targets=apps)
        for app in apps:
            await self.cluster.start(app)
            t = self.emit("repair", f"start {app}", step.number, app)
            self.repaired(app, t, ("kill", "stop", "stop-gracefully", "restart"))
        if not apps:
            self.emit("step", "start: every application is already running", step.number)

    async def partition(self, step: model.Step, action: model.Partition) -> None:
        await self.cluster.partition(action.a, action.b, heal=action.heal)
        if action.heal:
            t = self.emit("repair", f"heal {action.a} <-> {action.b}", step.number, action.a)
            for app in (action.a, action.b):
                self.repaired(app, t, ("partition", "delay"))
        else:
            self.fault(step, f"partition {action.a} <-> {action.b}", action.a)

    async def isolate(self, step: model.Step, action: model.Isolate) -> None:
        await self.cluster.isolate(action.host, heal=action.heal)
        if action.heal:
            t = self.emit("repair", f"heal host {action.host}", step.number, action.host)
            self.repaired(action.host, t, ("isolate",))
        else:
            self.fault(step, f"isolate host {action.host} from every other host", action.host)

    async def poll(self, predicate: Callable[[ClusterStatus], bool], timeout: float) -> bool:
        """Ask for the status until ``predicate`` holds; False if ``timeout`` passed first."""
        with trio.move_on_after(timeout):
            while True:
                try:
                    status = await self.cluster.status()
                except (OrsimError, OSError):
                    status = None
                if status is not None and predicate(status):
                    return True
                await trio.sleep(POLL_INTERVAL)
        return False

    async def wait(self, step: model.Step, action: model.Wait) -> None:
        cond = action.condition
        predicate: Callable[[ClusterStatus], bool]
        if isinstance(cond, model.WaitMode):
            text = f"{cond.app} is {cond.mode}"
            predicate = lambda s: app_mode(s, cond.app) == cond.mode  # noqa: E731
        elif isinstance(cond, model.WaitReady):
            text = "every application ready"
            predicate = _all_ready
        else:
            text = _count_text(cond)
            predicate = lambda s: _count_holds(s, cond)  # noqa: E731
        self.emit("step", f"wait until {text} (timeout {action.timeout:g}s)", step.number)
        start = trio.current_time()
        if not await self.poll(predicate, action.timeout):
            raise _StepFailed(f"timed out after {action.timeout:g}s waiting until {text}")
        self.emit("step", f"... {text} after {trio.current_time() - start:.2f}s", step.number)

    async def expect_mode(self, step: model.Step, exp: model.ModeWithin) -> None:
        start, start_wall = trio.current_time(), self.clock()
        last: list[str | None] = [None]
        since: list[float | None] = [None]

        def reached(status: ClusterStatus) -> bool:
            row = app_row(status, exp.app)
            last[0], since[0] = (row["mode"], row.get("mode_since")) if row else (None, None)
            return last[0] == exp.mode

        ok = await self.poll(reached, exp.within)
        took = None
        if ok:
            took = trio.current_time() - start  # when a poll saw it: an upper bound
            # Its own clock says when it got there (the poll comes up to an interval later).
            if since[0] is not None and since[0] <= self.clock():
                took = min(took, max(0.0, since[0] - start_wall))
        verdict = mode_verdict(step, exp, took, last[0], self.clock())
        self.verdicts[step.number] = verdict
        self.emit("verdict", format_verdict(verdict).strip(), step.number, exp.app)

    async def settle(self) -> None:
        """Stop the load and give in-flight calls time to end as routed or lost."""
        try:
            await self.cluster.stop_load()
        except (OrsimError, OSError):
            pass
        timeout = self.scenario.settle_timeout
        with trio.move_on_after(timeout):
            while True:
                try:
                    in_flight = (await self.cluster.ledger()).counts.in_flight
                except (OrsimError, OSError):
                    in_flight = 0
                if not in_flight:
                    return
                await trio.sleep(POLL_INTERVAL * 2)
        self.emit("info", f"calls still in flight after {timeout:g}s of settling")


def _all_ready(status: ClusterStatus) -> bool:
    """Every application is primary or backup, and every Node has its primary (two
    backups are not a ready Node: nobody creates its calls)."""
    rows = status["apps"]
    if not rows or not all(row["mode"] in ("primary", "backup") for row in rows):
        return False
    nodes = {row["node_id"] for row in rows if row["node_id"] is not None}
    led = {row["node_id"] for row in rows if row["mode"] == "primary"}
    return nodes <= led


def _count_text(cond: model.WaitCount) -> str:
    if cond.at_least is not None:
        return f"ledger {cond.count} >= {cond.at_least}"
    return f"ledger {cond.count} <= {cond.at_most}"


def _count_holds(status: ClusterStatus, cond: model.WaitCount) -> bool:
    value = status["calls"].get(cond.count)
    if not isinstance(value, int):
        return False
    if cond.at_least is not None:
        return value >= cond.at_least
    return cond.at_most is not None and value <= cond.at_most


async def run_scenario(
    scenario: model.Scenario,
    *,
    run_dir: Path,
    factory: ClusterFactory = launch_cluster,
    seed: int | None = None,
    out: Output = print,
    clock: Clock = time.time,
    pace: Mapping[int, float] | None = None,
    sim: bool = False,
) -> ScenarioResult:
    """Run one scenario on a fresh cluster in ``run_dir``; never raises for a failed run.

    Writes ``run_dir/schedule.json`` (the seed, the applied schedule, the verdicts).

    Args:
        seed: overrides the scenario's own ``seed``; with neither, one is drawn and shown.
        clock: the wall clock the T-Server stamps its ledger with (tests pass a fake).
        pace: a replay's recorded offsets (s from the first step) by step number.
        sim: the cluster is simulated (recorded in ``schedule.json``).
    """
    text = read_source(scenario)
    result = await _run_scenario(scenario, run_dir, factory, seed, out, clock, pace or {})
    try:
        write_schedule(result, sim=sim, text=text)
    except OSError as exc:
        out(f"warning: the schedule could not be written to {run_dir}: {exc}")
    return result


async def _run_scenario(
    scenario: model.Scenario,
    run_dir: Path,
    factory: ClusterFactory,
    seed: int | None,
    out: Output,
    clock: Clock,
    pace: Mapping[int, float],
) -> ScenarioResult:
    if seed is None:
        seed = scenario.seed if scenario.seed is not None else random.randrange(2**31)
    out(f"== scenario {scenario.name} ({scenario.source}), seed {seed}")
    timeline = Timeline(t0=clock())
    started = trio.current_time()
    try:
        cluster = await factory(Path(scenario.topology_path), run_dir)
    except (OrsimError, OSError) as exc:
        verdict = Verdict("cluster up", False, f"the cluster did not come up: {exc}", None, clock())
        out(format_verdict(verdict))
        timeline.end = clock()
        return _finish(scenario, (verdict,), timeline, None, run_dir, seed, out, ())
    timeline.t0 = clock()
    run = _Run(scenario, cluster, timeline, out, clock, random.Random(seed), pace=pace)
    ledger: LedgerReport | None = None
    try:
        run.emit("info", f"cluster up in {trio.current_time() - started:.1f}s (run dir {run_dir})")
        await run.sample()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run.sampler)
            await run.run_steps()
            run.emit("info", "steps done; stopping the load and settling in-flight calls")
            await run.settle()
            nursery.cancel_scope.cancel()
        await run.sample()
        try:
            ledger = await cluster.ledger(records=True)
        except (OrsimError, OSError) as exc:
            run.emit("error", f"the T-Server ledger could not be read: {exc}")
        timeline.end = clock()
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(DOWN_TIMEOUT):
            try:
                await cluster.down()
            except (OrsimError, OSError) as exc:
                out(f"warning: cluster down failed: {exc}")
    verdicts = _judge(run, ledger)
    return _finish(scenario, verdicts, timeline, ledger, run_dir, seed, out, tuple(run.applied))


def _judge(run: _Run, ledger: LedgerReport | None) -> tuple[Verdict, ...]:
    verdicts: list[Verdict] = list(run.failures)
    for step in run.scenario.expectations:
        assert isinstance(step.action, model.Expect)
        if isinstance(step.action.expectation, model.ModeWithin):
            verdict = run.verdicts.get(step.number) or Verdict(
                expectation_label(step), False, "not reached (an earlier step failed)", step.number
            )
        else:
            verdict = evaluate(run.scenario, step, run.timeline, ledger)
        verdicts.append(verdict)
    return tuple(verdicts)


def _finish(
    scenario: model.Scenario,
    verdicts: tuple[Verdict, ...],
    timeline: Timeline,
    ledger: LedgerReport | None,
    run_dir: Path,
    seed: int,
    out: Output,
    schedule: tuple[AppliedStep, ...],
) -> ScenarioResult:
    result = ScenarioResult(scenario, verdicts, timeline, ledger, str(run_dir), seed, schedule)
    out(f"-- verdicts of {scenario.name}:")
    for verdict in verdicts:
        out(format_verdict(verdict))
    good, bad = result.counts
    out(f"-- {scenario.name}: {good} passed, {bad} failed")
    return result
