"""Expectation checks on hand-recorded timelines (pure: no cluster, no clock)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orsim.scenario import check_document, evaluate
from orsim.scenario._model import Scenario, Step
from orsim.scenario._report import mode_segments
from orsim.scenario._timeline import AppState, Event, Sample, Timeline, role_changes
from orsim.tserver import CallRecord, LedgerCounts, LedgerReport

ROOT = Path(__file__).resolve().parent.parent
SOURCE = str(ROOT / "scenarios" / "probe.yaml")
T0 = 1000.0


def scenario(*steps: dict[str, Any]) -> Scenario:
    doc = {"name": "probe", "topology": "topologies/two-nodes.yaml", "steps": list(steps)}
    return check_document(doc, SOURCE)


def sample(t: float, **modes: str | tuple[str, int]) -> Sample:
    states = []
    for app, mode in modes.items():
        if isinstance(mode, tuple):
            states.append(AppState(app, mode[0], epoch=mode[1]))
        else:
            states.append(AppState(app, mode))
    return Sample(T0 + t, tuple(states))


def record(app: str, created: float, routed: float | None, state: str = "routed") -> CallRecord:
    return CallRecord(
        call_id=f"c{created}",
        dn="5000",
        created_at=T0 + created,
        deadline=T0 + created + 10.0,
        routed_at=None if routed is None else T0 + routed,
        app=app if routed is not None else None,
        state=state,
    )


def ledger(records: list[CallRecord], **counts: int) -> LedgerReport:
    base = {
        "created": len(records),
        "routed": len(records),
        "lost": 0,
        "default_routed": 0,
        "duplicates": 0,
        "resent": 0,
        "stale": 0,
        "unknown": 0,
        "late": 0,
        "in_flight": 0,
    }
    base.update(counts)
    book = LedgerCounts(**base, by_app={}, by_node={}, latency_p50_ms=None, latency_p99_ms=None)
    return LedgerReport(book, tuple(records), len(records))


def expectation(sc: Scenario) -> Step:
    return sc.expectations[-1]


KILL = {"kill": "ORS_1"}


def test_failover_gap_is_measured_to_the_first_call_the_node_routes() -> None:
    """The gap runs from the fault to the first route by any app of the faulted Node."""
    sc = scenario(KILL, {"expect": {"failover_gap_ms": 1500}})
    tl = Timeline(t0=T0, fault_times={1: T0 + 2.0})
    recs = [
        record("ORS_1", 1.0, 1.1),
        record("ORS_1", 1.95, 2.05),  # in flight when killed: does not count as service
        record("ORS_2", 2.1, 2.2),  # another Node
        record("ORS_1_B", 2.5, 3.2),
    ]
    verdict = evaluate(sc, expectation(sc), tl, ledger(recs))
    assert verdict.passed
    assert verdict.detail.startswith("1200 ms (first call routed by ORS_1_B")


def test_failover_gap_fails_above_the_bound() -> None:
    """A gap over the bound fails, with the measured value in the verdict."""
    sc = scenario(KILL, {"expect": {"failover_gap_ms": 1000}})
    tl = Timeline(t0=T0, fault_times={1: T0 + 2.0})
    verdict = evaluate(sc, expectation(sc), tl, ledger([record("ORS_1_B", 2.5, 4.5)]))
    assert not verdict.passed
    assert verdict.detail.startswith("2500 ms")
    assert verdict.label == "step 2: failover_gap_ms < 1000"


def test_failover_gap_counts_the_faulted_app_once_given_back() -> None:
    """After SIGCONT the stopped primary's own routes are service again."""
    sc = scenario({"stop": "ORS_1"}, {"continue": "ORS_1"}, {"expect": {"failover_gap_ms": 9000}})
    tl = Timeline(t0=T0, fault_times={1: T0 + 1.0}, repair_times={1: T0 + 3.0})
    recs = [record("ORS_1", 0.9, 1.2), record("ORS_1", 2.9, 3.1)]
    verdict = evaluate(sc, expectation(sc), tl, ledger(recs))
    assert verdict.passed
    assert verdict.detail.startswith("2100 ms")


def test_failover_gap_falls_back_to_the_takeover_when_no_call_is_routed() -> None:
    """Without load, the time the other app was sampled primary is the gap."""
    sc = scenario(KILL, {"expect": {"failover_gap_ms": 2000}})
    tl = Timeline(t0=T0, fault_times={1: T0 + 1.0})
    tl.samples = [
        sample(0.5, ORS_1="primary", ORS_1_B="backup"),
        sample(1.5, ORS_1="down", ORS_1_B="backup"),
        sample(2.25, ORS_1="down", ORS_1_B="primary"),
    ]
    verdict = evaluate(sc, expectation(sc), tl, ledger([]))
    assert verdict.passed
    assert verdict.detail.startswith("1250 ms (no call routed; ORS_1_B sampled primary")


def test_failover_gap_fails_when_the_node_never_serves_again() -> None:
    """No route and no takeover: the verdict says the Node never served again."""
    sc = scenario(
        KILL, {"kill": "ORS_1_B"}, {"expect": {"failover_gap_ms": {"below": 2000, "fault_step": 1}}}
    )
    tl = Timeline(t0=T0, fault_times={1: T0 + 1.0, 2: T0 + 1.1})
    tl.samples = [sample(2, ORS_1="down", ORS_1_B="down")]
    verdict = evaluate(sc, expectation(sc), tl, ledger([]))
    assert not verdict.passed
    assert "never served again" in verdict.detail


def test_failover_gap_of_a_switchover_ignores_the_old_primary() -> None:
    """For a switchover the old primary's late routes are not the Node serving again."""
    sc = scenario({"switchover": "ORS_1"}, {"expect": {"failover_gap_ms": 5000}})
    tl = Timeline(t0=T0, fault_times={1: T0 + 1.0})
    tl.samples = [sample(0.5, ORS_1="primary", ORS_1_B="backup")]
    recs = [record("ORS_1", 0.9, 1.05), record("ORS_1_B", 1.2, 1.4)]
    verdict = evaluate(sc, expectation(sc), tl, ledger(recs))
    assert verdict.detail.startswith("400 ms (first call routed by ORS_1_B")


def test_calls_lost_and_duplicated_read_the_ledger() -> None:
    """calls_lost/calls_duplicated compare the ledger's counts with the bound."""
    sc = scenario(KILL, {"expect": {"calls_lost": 1}}, {"expect": {"calls_duplicated": 0}})
    tl = Timeline(t0=T0)
    lost, dup = sc.expectations
    book = ledger([], created=50, routed=47, lost=2, duplicates=1, in_flight=1)
    v_lost = evaluate(sc, lost, tl, book)
    assert not v_lost.passed
    assert v_lost.detail == "2 lost of 50 calls created (47 routed, 1 still in flight)"
    assert not evaluate(sc, dup, tl, book).passed
    assert evaluate(sc, dup, tl, ledger([])).passed
    assert not evaluate(sc, lost, tl, None).passed


def test_split_brain_allows_a_single_glimpse_with_different_epochs() -> None:
    """Two primaries with different epochs in one sample only is not split brain."""
    sc = scenario(KILL, {"expect": {"split_brain": "never"}})
    tl = Timeline(t0=T0)
    tl.samples = [
        sample(1, ORS_1=("primary", 1), ORS_1_B=("backup", 1)),
        sample(2, ORS_1=("primary", 1), ORS_1_B=("primary", 2)),
        sample(3, ORS_1=("backup", 2), ORS_1_B=("primary", 2)),
    ]
    verdict = evaluate(sc, expectation(sc), tl, ledger([], stale=3))
    assert verdict.passed, verdict.detail
    assert "3 stale command(s)" in verdict.detail


def test_split_brain_fails_on_two_primaries_in_consecutive_samples() -> None:
    """A double primary seen in two samples in a row is split brain."""
    sc = scenario(KILL, {"expect": {"split_brain": "never"}})
    tl = Timeline(t0=T0)
    tl.samples = [
        sample(1, ORS_1=("primary", 1), ORS_1_B=("primary", 2)),
        sample(2, ORS_1=("primary", 1), ORS_1_B=("primary", 2)),
    ]
    verdict = evaluate(sc, expectation(sc), tl, ledger([]))
    assert not verdict.passed
    assert verdict.detail == "two primaries of Node ORS_1 in consecutive samples (at +2.00s)"


def test_split_brain_fails_on_two_primaries_with_one_epoch() -> None:
    """Two primaries of one Node with the same epoch fail at once."""
    sc = scenario(KILL, {"expect": {"split_brain": "never"}})
    tl = Timeline(t0=T0)
    tl.samples = [sample(1, ORS_2=("primary", 4), ORS_2_B=("primary", 4))]
    verdict = evaluate(sc, expectation(sc), tl, ledger([]))
    assert not verdict.passed
    assert "ORS_2 and ORS_2_B both primary with epoch 4" in verdict.detail


def test_split_brain_fails_on_a_duplicate_route() -> None:
    """A call routed twice is split brain whatever the samples say."""
    sc = scenario(KILL, {"expect": {"split_brain": "never"}})
    verdict = evaluate(sc, expectation(sc), Timeline(t0=T0), ledger([], duplicates=2))
    assert not verdict.passed
    assert "2 call(s) routed twice" in verdict.detail


def test_sessions_recovered_from_status_counters() -> None:
    """Reported counters count after the fault, a restart's reset counting whole."""
    sc = scenario(KILL, {"expect": {"sessions_recovered": 5}})
    tl = Timeline(t0=T0, fault_times={1: T0 + 1.0})
    tl.samples = [
        Sample(T0 + 0.5, (AppState("ORS_1_B", "backup", sessions_recovered=2),)),
        Sample(T0 + 1.5, (AppState("ORS_1_B", "primary", sessions_recovered=6),)),
        Sample(T0 + 2.5, (AppState("ORS_1", "backup", sessions_recovered=1),)),
    ]
    verdict = evaluate(sc, expectation(sc), tl, ledger([]))
    assert verdict.passed
    assert verdict.detail.startswith("5 session(s) recovered by Node ORS_1, reported")


def test_sessions_recovered_falls_back_to_the_ledger() -> None:
    """Without status counters, calls created before and routed after the fault count."""
    sc = scenario(KILL, {"expect": {"sessions_recovered": 2}})
    tl = Timeline(t0=T0, fault_times={1: T0 + 1.0})
    recs = [
        record("ORS_1_B", 0.8, 1.4),
        record("ORS_1_B", 0.9, 1.6),
        record("ORS_1_B", 1.2, 1.7),  # created after the fault: a new call
        record("ORS_2", 0.9, 1.3),  # another Node
    ]
    verdict = evaluate(sc, expectation(sc), tl, ledger(recs))
    assert verdict.passed
    assert verdict.detail.startswith("2 session(s)")


def test_a_role_change_is_dated_by_the_applications_own_clock() -> None:
    """A takeover at +1.012 s sampled at +1.25 s reads +1.012 in the timeline, in order
    before a fault recorded at +1.1; a ``mode_since`` outside the two samples (another
    clock, or none) leaves the sample's time."""
    tl = Timeline(T0)
    tl.add_sample(sample(1.0, ORS_1="primary", ORS_1_B="backup", ORS_2="backup"))
    tl.add(Event(T0 + 1.1, "fault", "kill ORS_2"))
    after = Sample(
        T0 + 1.25,
        (
            AppState("ORS_1", "down"),
            AppState("ORS_1_B", "primary", epoch=2, mode_since=T0 + 1.012),
            AppState("ORS_2", "down", mode_since=T0 + 0.5),
        ),
    )
    events = tl.add_sample(after)
    assert [(round(e.t - T0, 3), e.text) for e in events] == [
        (1.012, "ORS_1_B: backup -> primary (epoch 2)"),
        (1.25, "ORS_1: primary -> down"),
        (1.25, "ORS_2: backup -> down"),
    ]
    assert [e.text for e in tl.events] == [
        "ORS_1_B: backup -> primary (epoch 2)",
        "kill ORS_2",
        "ORS_1: primary -> down",
        "ORS_2: backup -> down",
    ]


def test_role_changes_between_samples() -> None:
    """Every application whose mode changed is reported with its old mode."""
    before = sample(1, ORS_1="primary", ORS_1_B="backup")
    after = sample(2, ORS_1="down", ORS_1_B=("primary", 2))
    changes = role_changes(before, after)
    assert [(app, old, new.mode) for app, old, new in changes] == [
        ("ORS_1", "primary", "down"),
        ("ORS_1_B", "backup", "primary"),
    ]


def test_a_stalled_takeover_shows_its_role_while_its_mode_says_backup() -> None:
    """A backup's claim of the Node (role ``claiming``, then ``primary`` with the fence
    pending) shows in the timeline though its mode stays ``backup`` until the T-Server
    confirms; a role that says what the mode says adds nothing."""
    tl = Timeline(T0)
    tl.add_sample(Sample(T0 + 1.0, (AppState("ORS_1_B", "backup", epoch=1, role="backup"),)))
    steps = [
        (1.25, "backup", 1, "claiming"),
        (1.5, "backup", 2, "primary"),
        (1.75, "primary", 2, "primary"),
        (2.0, "down", None, None),
        (2.25, "backup", 3, "claiming"),
    ]
    texts = [
        e.text
        for t, mode, epoch, role in steps
        for e in tl.add_sample(Sample(T0 + t, (AppState("ORS_1_B", mode, epoch=epoch, role=role),)))
    ]
    assert texts == [
        "ORS_1_B: backup, role backup -> claiming (epoch 1)",
        "ORS_1_B: backup, role claiming -> primary (epoch 2)",
        "ORS_1_B: backup -> primary (epoch 2)",
        "ORS_1_B: primary -> down",
        "ORS_1_B: down -> backup (epoch 3; role claiming)",
    ]


def test_report_lanes_change_mode_when_the_application_did() -> None:
    """The report's lanes agree with the timeline: ORS_1_B's primary lane begins at
    +1.012 s, its own ``mode_since``, not at the sample of +1.25 s; ORS_1's change, with no
    ``mode_since``, at the sample."""
    tl = Timeline(T0)
    tl.add_sample(sample(1.0, ORS_1="primary", ORS_1_B="backup"))
    tl.add_sample(
        Sample(
            T0 + 1.25,
            (AppState("ORS_1", "down"), AppState("ORS_1_B", "primary", mode_since=T0 + 1.012)),
        )
    )
    tl.add_sample(sample(1.5, ORS_1="down", ORS_1_B="primary"))
    tl.end = T0 + 2.0
    lanes = mode_segments(tl)
    assert [(round(a, 3), round(b, 3), m) for a, b, m in lanes["ORS_1_B"]] == [
        (1.0, 1.012, "backup"),
        (1.012, 2.0, "primary"),
    ]
    assert [(round(a, 3), round(b, 3), m) for a, b, m in lanes["ORS_1"]] == [
        (1.0, 1.25, "primary"),
        (1.25, 2.0, "down"),
    ]


def _wait_step(below: float) -> tuple[Scenario, Step]:
    sc = scenario({"expect": {"call_wait_ms": below}})
    return sc, sc.steps[0]


def test_call_wait_passes_when_every_call_was_routed_in_time() -> None:
    sc, step = _wait_step(500)
    tl = Timeline(T0)
    recs = [record("ORS_1", 1.0, 1.002), record("ORS_2", 2.0, 2.43), record("ORS_1_B", 3.0, 3.1)]
    verdict = evaluate(sc, step, tl, ledger(recs))
    assert verdict.passed, verdict.detail
    assert verdict.label == "step 1: call_wait_ms < 500"
    assert verdict.detail == (
        "longest wait 430 ms of 3 calls routed (offered at +2.00s, routed by ORS_2 at +2.43s)"
    )


def test_call_wait_fails_on_a_slow_call_or_one_never_routed() -> None:
    sc, step = _wait_step(400)
    tl = Timeline(T0)
    slow = [record("ORS_1", 1.0, 1.002), record("ORS_2", 2.0, 2.43)]
    assert not evaluate(sc, step, tl, ledger(slow)).passed
    lost = [record("ORS_1", 1.0, 1.002), record("ORS_1", 2.0, None, state="lost")]
    verdict = evaluate(sc, step, tl, ledger(lost))
    assert not verdict.passed
    assert verdict.detail.startswith("1 call(s) not routed (lost, default-routed or in flight)")
    assert evaluate(sc, step, tl, ledger([])).detail == "no call offered"
