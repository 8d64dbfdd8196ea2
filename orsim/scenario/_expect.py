"""Expectation checks over a recorded run (pure: a timeline and a ledger in, a verdict out).

The exact rules, as the scenario format documents them:

``calls_lost: N``
    The T-Server ledger at the end of the run (after load stopped and in-flight calls
    settled) counts at most N calls ``lost``.
``calls_duplicated: N``
    The ledger counts at most N refused second routes (``duplicates``).
``failover_gap_ms: B`` (or ``{below: B, node, fault_step}``)
    From the fault (by default the latest fault step before the expectation, else the
    last of the scenario) to the first call routed by the faulted Node — any of its
    applications — in the ledger records. A route by the faulted application itself
    counts only once it was given back (continued or started again), so a command already
    in flight when it was killed does not pass for service; for a switchover, the old
    primary's routes do not count. With no such call, the time the Node's other
    application was first sampled ``primary`` after the fault is used. Must be below B ms.
``call_wait_ms: B``
    Every call in the ledger was routed, each less than B ms after it was offered
    (``created_at`` to ``routed_at``, whichever application routed it): what a caller
    waited, faults included. A call lost, sent to the default DN or still in flight fails
    it: that caller was not routed at all.
``sessions_recovered: N`` (or ``{at_least: N, node, fault_step}``)
    The Node's applications report (status ``sessions_recovered``) at least N sessions
    recovered from the store after the fault. When no status carries that field, the
    ledger stands in: calls created before the fault and routed after it by an
    application of the Node other than the faulted one.
``split_brain: never``
    (1) the ledger counts no duplicate route (``stale`` refusals are allowed: they are
    fencing working); (2) no status sample shows two applications of one Node ``primary``
    with the same epoch; (3) no two consecutive samples both show two applications of one
    Node ``primary`` (a double primary may be glimpsed for at most one sampling interval,
    while the old primary has not yet noticed it was superseded). In a simulation (``--sim``)
    the ledger also carries the exact history: (4) no two applications of one Node were ever
    primary at the same epoch, at any moment; (5) no call's session was created twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from orsim.scenario._load import fault_app, fault_node, step_label
from orsim.scenario._model import (
    CallsDuplicated,
    CallsLost,
    CallWait,
    Expect,
    FailoverGap,
    ModeWithin,
    RunWide,
    Scenario,
    SessionsRecovered,
    Step,
)
from orsim.scenario._timeline import Sample, Timeline, Verdict

if TYPE_CHECKING:
    from orsim.tserver import CallRecord, LedgerCounts, LedgerReport


def expectation_label(step: Step) -> str:
    """A short, stable name for an expectation (JUnit testcase name, report row)."""
    assert isinstance(step.action, Expect)
    exp = step.action.expectation
    head = f"step {step.number}"
    if isinstance(exp, ModeWithin):
        return f"{head}: {exp.app} {exp.mode} within {exp.within:g}s"
    if isinstance(exp, CallsLost):
        return f"{head}: calls_lost <= {exp.at_most}"
    if isinstance(exp, CallsDuplicated):
        return f"{head}: calls_duplicated <= {exp.at_most}"
    if isinstance(exp, FailoverGap):
        return f"{head}: failover_gap_ms < {exp.below_ms:g}"
    if isinstance(exp, CallWait):
        return f"{head}: call_wait_ms < {exp.below_ms:g}"
    if isinstance(exp, SessionsRecovered):
        return f"{head}: sessions_recovered >= {exp.at_least}"
    return f"{head}: split_brain never"


def mode_verdict(
    step: Step, exp: ModeWithin, took: float | None, last: str | None, t: float
) -> Verdict:
    """The verdict of a mode expectation the runner watched (``took`` None: not reached)."""
    label = expectation_label(step)
    if took is not None:
        after = f"{took * 1000:.0f} ms" if took < 1 else f"{took:.2f}s"
        return Verdict(label, True, f"{exp.app} was {exp.mode} after {after}", step.number, t)
    seen = last if last is not None else "not seen"
    detail = f"{exp.app} was still {seen} after {exp.within:g}s (expected {exp.mode})"
    return Verdict(label, False, detail, step.number, t)


def evaluate(
    scenario: Scenario, step: Step, timeline: Timeline, ledger: LedgerReport | None
) -> Verdict:
    """The verdict of a run-wide expectation, from the whole run."""
    assert isinstance(step.action, Expect)
    exp = step.action.expectation
    assert not isinstance(exp, ModeWithin), "mode expectations are watched by the runner"
    label = expectation_label(step)
    t = timeline.end if timeline.end is not None else timeline.t0
    if ledger is None and not isinstance(exp, FailoverGap | SessionsRecovered):
        return Verdict(label, False, "the T-Server ledger could not be read", step.number, t)
    passed, detail = _check(scenario, step, exp, timeline, ledger)
    return Verdict(label, passed, detail, step.number, t)


def _check(
    scenario: Scenario,
    step: Step,
    exp: RunWide,
    timeline: Timeline,
    ledger: LedgerReport | None,
) -> tuple[bool, str]:
    """``ledger`` is None only for the expectations that do without it."""
    if isinstance(exp, FailoverGap | SessionsRecovered):
        context = _fault_context(scenario, step, exp, timeline)
        if isinstance(context, str):
            return False, context
        records = (ledger.records or ()) if ledger is not None else ()
        if isinstance(exp, FailoverGap):
            return check_failover_gap(exp, context, timeline, records)
        return check_sessions_recovered(exp, context, timeline, records)
    assert ledger is not None
    counts = ledger.counts
    if isinstance(exp, CallsLost):
        return counts.lost <= exp.at_most, f"{counts.lost} lost{_of_created(counts)}"
    if isinstance(exp, CallsDuplicated):
        dups = counts.duplicates
        return dups <= exp.at_most, f"{dups} duplicate route(s) refused{_of_created(counts)}"
    if isinstance(exp, CallWait):
        return check_call_wait(exp, timeline, ledger.records or ())
    return check_split_brain(scenario, timeline.samples, ledger, timeline.t0)


def check_call_wait(
    exp: CallWait, timeline: Timeline, records: Sequence[CallRecord]
) -> tuple[bool, str]:
    routed = [r for r in records if r.state == "routed" and r.latency_ms is not None]
    unrouted = len(records) - len(routed)
    if not routed:
        return False, f"no call routed ({unrouted} offered)" if unrouted else "no call offered"
    longest = max(routed, key=lambda r: r.latency_ms or 0.0)
    wait_ms, routed_at = longest.latency_ms or 0.0, longest.routed_at or 0.0
    detail = (
        f"longest wait {wait_ms:.0f} ms of {len(routed)} calls routed (offered at"
        f" +{timeline.rel(longest.created_at):.2f}s, routed by {longest.app} at"
        f" +{timeline.rel(routed_at):.2f}s)"
    )
    if unrouted:
        return False, f"{unrouted} call(s) not routed (lost, default-routed or in flight); {detail}"
    return wait_ms < exp.below_ms, detail


def _of_created(counts: LedgerCounts) -> str:
    created, routed, in_flight = counts.created, counts.routed, counts.in_flight
    tail = f", {in_flight} still in flight" if in_flight else ""
    return f" of {created} calls created ({routed} routed{tail})"


def measured_fault(scenario: Scenario, step: Step, fault_step: int | None) -> Step | None:
    """The fault an expectation measures from (see the module docstring)."""
    faults = [s for s in scenario.steps if s.is_fault]
    if fault_step is not None:
        return next((s for s in faults if s.number == fault_step), None)
    before = [s for s in faults if s.number < step.number]
    if before:
        return before[-1]
    return faults[-1] if faults else None


#: What a failover expectation measures from: (fault step, fault time, Node, faulted app,
#: the Node's apps).
FaultContext = tuple[Step, float, str, str | None, tuple[str, ...]]


def _fault_context(
    scenario: Scenario,
    step: Step,
    exp: FailoverGap | SessionsRecovered,
    timeline: Timeline,
) -> FaultContext | str:
    """The fault ``exp`` measures from, or why it cannot be measured."""
    fault = measured_fault(scenario, step, exp.fault_step)
    if fault is None:
        return "no fault step to measure from"
    fault_t = timeline.fault_times.get(fault.number)
    if fault_t is None:
        return f"the fault of {step_label(fault.number, fault.verb)} was never carried out"
    node = scenario.resolve_node(exp.node) if exp.node is not None else fault_node(scenario, fault)
    if node is None:
        return f"the fault of {step_label(fault.number, fault.verb)} hits no Node"
    apps = scenario.node_apps(node)
    hit = fault_app(fault)
    if fault.verb == "switchover":
        hit = _primary_before(timeline.samples, apps, fault_t)
    return fault, fault_t, node, hit if hit in apps else None, apps


def _primary_before(samples: Sequence[Sample], apps: Sequence[str], t: float) -> str | None:
    for sample in reversed(samples):
        if sample.t <= t:
            for app in apps:
                if sample.mode(app) == "primary":
                    return app
            return None
    return None


def check_failover_gap(
    exp: FailoverGap, context: FaultContext, timeline: Timeline, records: Sequence[CallRecord]
) -> tuple[bool, str]:
    fault, fault_t, node, hit, apps = context
    if fault.verb == "switchover":
        given_back = float("inf")  # the old primary hands over; its routes are not service
    elif fault.verb in ("partition", "delay"):
        given_back = fault_t  # the application still runs: its routes count at once
    else:
        given_back = timeline.repair_times.get(fault.number, float("inf"))

    def counts(record: CallRecord) -> bool:
        routed_at = record.routed_at
        if record.state != "routed" or routed_at is None:
            return False
        if record.app not in apps or routed_at <= fault_t:
            return False
        return not (record.app == hit and routed_at < given_back)

    routes = [(r.routed_at, r.app) for r in records if counts(r)]
    fault_at = f"+{timeline.rel(fault_t):.2f}s"
    where = f"Node {node}, fault at {step_label(fault.number, fault.verb)} {fault_at}"
    if routes:
        first_at, first_app = min(routes, key=lambda r: r[0] or 0.0)
        assert first_at is not None
        gap_ms = (first_at - fault_t) * 1000.0
        how = f"first call routed by {first_app} at +{timeline.rel(first_at):.2f}s"
    else:
        others = [a for a in apps if a != hit]
        became = next(
            (
                s
                for s in timeline.samples
                if s.t > fault_t and any(s.mode(a) == "primary" for a in others)
            ),
            None,
        )
        if became is None:
            return False, f"the Node never served again ({where}; no call routed, no takeover seen)"
        gap_ms = (became.t - fault_t) * 1000.0
        how = (
            f"no call routed; {'/'.join(others)} sampled primary at +{timeline.rel(became.t):.2f}s"
        )
    passed = gap_ms < exp.below_ms
    return passed, f"{gap_ms:.0f} ms ({how}; {where})"


def check_sessions_recovered(
    exp: SessionsRecovered, context: FaultContext, timeline: Timeline, records: Sequence[CallRecord]
) -> tuple[bool, str]:
    _fault, fault_t, node, hit, apps = context
    reported = _reported_recoveries(timeline.samples, apps, fault_t)
    if reported is not None:
        source = "reported by the Node's status"
        count = reported
    else:
        count = sum(
            1
            for r in records
            if r.routed_at is not None
            and r.created_at <= fault_t < r.routed_at
            and r.app in apps
            and r.app != hit
        )
        source = "calls created before the fault and routed after it by the Node (ledger)"
    return count >= exp.at_least, f"{count} session(s) recovered by Node {node}, {source}"


def _reported_recoveries(
    samples: Sequence[Sample], apps: Sequence[str], fault_t: float
) -> int | None:
    """Sessions the Node's apps report recovered after ``fault_t`` (None: never reported).

    Counters restart at 0 when a process restarts, so a drop counts the new value whole.
    """
    total, seen = 0, False
    for app in apps:
        previous: int | None = None
        for sample in samples:
            state = sample.state(app)
            value = None if state is None else state.sessions_recovered
            if value is None:
                continue
            seen = True
            if sample.t <= fault_t:
                previous = value
                continue
            base = previous if previous is not None else 0
            total += value - base if value >= base else value
            previous = value
    return total if seen else None


def check_split_brain(
    scenario: Scenario, samples: Sequence[Sample], ledger: LedgerReport, t0: float
) -> tuple[bool, str]:
    dups = ledger.counts.duplicates
    stale = ledger.counts.stale
    if dups:
        return False, f"{dups} call(s) routed twice (duplicates refused by the T-Server)"
    for found in ledger.double_primaries or ():
        names = " and ".join(found.apps)
        return False, (
            f"{names} both primary with epoch {found.epoch}"
            f" at virtual time {found.t:.3f}s (Node {found.node}, exact history)"
        )
    twice = ledger.sessions_created_twice or ()
    if twice:
        return False, f"{len(twice)} session(s) created twice (first: call {twice[0]})"
    previous: set[str] = set()
    for sample in samples:
        doubled: set[str] = set()
        for node in scenario.nodes:
            primaries = [
                s
                for a in scenario.node_apps(node)
                if (s := sample.state(a)) and s.mode == "primary"
            ]
            if len(primaries) < 2:
                continue
            doubled.add(node)
            epochs = {p.epoch for p in primaries}
            if len(epochs) == 1 and None not in epochs:
                names = " and ".join(p.app for p in primaries)
                return False, (
                    f"{names} both primary with epoch {epochs.pop()} at +{sample.t - t0:.2f}s"
                )
        both = doubled & previous
        if both:
            node = sorted(both)[0]
            return False, (
                f"two primaries of Node {node} in consecutive samples (at +{sample.t - t0:.2f}s)"
            )
        previous = doubled
    return True, (
        f"no duplicate route, no double primary across {len(samples)} samples"
        f" ({stale} stale command(s) refused by fencing)"
    )
