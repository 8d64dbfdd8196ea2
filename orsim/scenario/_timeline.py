"""What happened during a run: events, status samples and the verdicts (pure values).

Times are wall-clock seconds (``time.time()`` in real runs) so they compare with the
T-Server ledger's ``created_at``/``routed_at``; ``t0`` is when the steps began, and every
printed time is relative to it.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from typing import TYPE_CHECKING, Literal

import attrs

from orsim.cluster import mode_changed_at

if TYPE_CHECKING:
    from orsim.cluster import CallsSummary, ClusterStatus

EventKind = Literal["info", "step", "fault", "repair", "role", "verdict", "error"]


@attrs.frozen
class Event:
    t: float
    kind: EventKind
    text: str
    step: int | None = None
    app: str | None = None


@attrs.frozen
class AppState:
    """One application as one status sample saw it."""

    app: str
    mode: str
    epoch: int | None = None
    node_id: int | None = None
    sessions_recovered: int | None = None
    #: When the application says it entered ``mode`` (its own wall clock), if it says.
    mode_since: float | None = None
    #: An ORS application's role (``claiming``, or ``primary`` with its fence pending,
    #: while its mode still says ``backup``), if it says.
    role: str | None = None


@attrs.frozen
class Sample:
    t: float
    apps: tuple[AppState, ...]
    calls: CallsSummary | None = attrs.field(default=None, eq=False)

    def mode(self, app: str) -> str | None:
        state = self.state(app)
        return None if state is None else state.mode

    def state(self, app: str) -> AppState | None:
        for state in self.apps:
            if state.app == app:
                return state
        return None


def sample_from_status(t: float, status: ClusterStatus) -> Sample:
    """A ``Sample`` from a ``ClusterHandle.status()`` answer."""
    apps = tuple(
        AppState(
            app=row["app"],
            mode=row["mode"] or "down",
            epoch=row["epoch"],
            node_id=row["node_id"],
            sessions_recovered=row["sessions_recovered"],
            mode_since=row.get("mode_since"),
            role=row.get("role"),
        )
        for row in status["apps"]
    )
    return Sample(t, apps, status["calls"])


def changed_at(before: Sample, after: Sample, state: AppState) -> float:
    """When ``state``'s application changed mode between two samples: its own
    ``mode_since`` where it falls between them (the same wall clock as the samples'), so a
    takeover reads as it happened, not up to a sample interval (0.25 s) later; else when
    the later sample saw it."""
    return mode_changed_at(state.mode_since, before.t, after.t)


def _detail(state: AppState, role: bool = True) -> str:
    """`` (epoch N)``, with the role (``role``) where it is not what the mode says."""
    parts = [] if state.epoch is None else [f"epoch {state.epoch}"]
    if role and state.role is not None and state.role != state.mode:
        parts.append(f"role {state.role}")
    return f" ({'; '.join(parts)})" if parts else ""


def claim_changes(before: Sample | None, after: Sample) -> list[tuple[str, str, AppState]]:
    """(app, old role, new state) for every application whose mode stayed the same and
    whose role changed, both known (a claim of the Node began, went on, or ended)."""
    if before is None:
        return []
    changes = []
    for state in after.apps:
        old = before.state(state.app)
        if (
            old is not None
            and old.mode == state.mode
            and old.role is not None
            and state.role is not None
            and old.role != state.role
        ):
            changes.append((state.app, old.role, state))
    return changes


def role_changes(before: Sample | None, after: Sample) -> list[tuple[str, str | None, AppState]]:
    """(app, old mode or None, new state) for every application whose mode changed."""
    changes = []
    for state in after.apps:
        old = None if before is None else before.mode(state.app)
        if old != state.mode:
            changes.append((state.app, old, state))
    return changes


@attrs.frozen
class Verdict:
    """The outcome of one expectation (or of a step that could not be carried out)."""

    label: str
    passed: bool
    detail: str
    step: int | None = None
    #: When it was decided (wall clock); 0 for verdicts built outside a run.
    t: float = 0.0


@attrs.define
class Timeline:
    """Everything a run records, in order. Mutable while the run goes, read after."""

    t0: float
    events: list[Event] = attrs.Factory(list)
    samples: list[Sample] = attrs.Factory(list)
    #: step number -> (wall time the fault took effect, the app it hit before acting)
    fault_times: dict[int, float] = attrs.Factory(dict)
    #: step number -> when the faulted application was given back (continue/start/heal)
    repair_times: dict[int, float] = attrs.Factory(dict)
    end: float | None = None

    def add(self, event: Event) -> Event:
        """Record ``event`` in time order (a role change can date from before events
        recorded since the sample before the one that showed it)."""
        events = self.events
        if events and event.t < events[-1].t:
            bisect.insort_right(events, event, key=_event_time)
        else:
            events.append(event)
        return event

    def add_sample(self, sample: Sample) -> list[Event]:
        """Record a sample; returns the role-change events it revealed."""
        before = self.samples[-1] if self.samples else None
        self.samples.append(sample)
        events = []
        for app, old, state in role_changes(before, sample):
            if old is None or before is None:
                continue  # the first sighting is the starting state, not a change
            text = f"{app}: {old} -> {state.mode}{_detail(state)}"
            events.append(self.add(Event(changed_at(before, sample, state), "role", text, app=app)))
        for app, old_role, state in claim_changes(before, sample):
            # The mode did not change, but the claim of the Node began or ended: a
            # takeover that stalls (the store or the T-Server slow to answer) shows here.
            text = f"{app}: {state.mode}, role {old_role} -> {state.role}"
            text += _detail(state, role=False)
            events.append(self.add(Event(sample.t, "role", text, app=app)))
        return sorted(events, key=_event_time)  # printed in the order they happened

    def rel(self, t: float) -> float:
        return t - self.t0

    @property
    def duration(self) -> float:
        last = self.end
        if last is None:
            times = [e.t for e in self.events] + [s.t for s in self.samples]
            last = max(times, default=self.t0)
        return max(last - self.t0, 0.0)


def _event_time(event: Event) -> float:
    return event.t


def format_event(event: Event, t0: float) -> str:
    """One timeline line: ``[  5.11s] step 3  FAULT kill ORS_1``."""
    rel = event.t - t0
    where = f"step {event.step:<3}" if event.step is not None else " " * 8
    marker = {"fault": "FAULT ", "repair": "REPAIR ", "error": "ERROR ", "role": "role "}.get(
        event.kind, ""
    )
    return f"[{rel:7.2f}s] {where} {marker}{event.text}"


def format_timeline(events: Iterable[Event], t0: float) -> str:
    return "\n".join(format_event(e, t0) for e in events)


def format_verdict(verdict: Verdict) -> str:
    mark = "PASS" if verdict.passed else "FAIL"
    return f"  {mark}  {verdict.label}: {verdict.detail}"
