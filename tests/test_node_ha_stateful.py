"""A primary/backup pair under random faults, against a model store and T-Server.

Two ``RoleMachine``/``Watcher`` pairs (applications A, the configured primary, and B, its
backup, of Node 1) are driven the way the runtime drives them, through a model epoch
store (compare-and-set, sessions refused below the current epoch) and a model T-Server
(fences by epoch, routes each call once). A third application R is the primary of Node 2,
the Reserved Node of every call, and suffers no faults. Hypothesis interleaves calls,
crashes, hangs (silent, still believing it is primary), restarts, cuts between A and B,
cuts between an application and the T-Server, switchovers, heartbeats, ADDP detection,
late claim answers and time.

Messages are instantaneous; a hung application's T-Server pushes and session events are
queued and read when it resumes; everything else sent to it is lost.
"""

from __future__ import annotations

import os
from collections import Counter, deque
from typing import Literal

import attrs
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from orsim.node._assignment import assign
from orsim.node._role import (
    Action,
    ClaimEpoch,
    ClaimLost,
    ClaimWon,
    EpochObserved,
    Event,
    Fence,
    Fenced,
    HandOver,
    PartnerLost,
    PartnerSeen,
    RecoverSessions,
    RoleMachine,
    StepDown,
    SwitchoverFailed,
    SwitchoverRequested,
    SwitchoverTimedOut,
)
from orsim.node._watch import Verdict, Watcher

PAIR = ("A", "B")
TIMEOUT_MS = 300.0
DC = "DC"
# Calls whose Assigned Node is Node 1 (the pair) and whose Reserved Node is Node 2 (R).
CALL_IDS = [c for c in (f"c{i}" for i in range(2000)) if assign(c, {1: DC, 2: DC}).assigned == 1]

PushKind = Literal["route_request", "call_routed", "session_created"]


@attrs.define
class Push:
    kind: PushKind
    call_id: str


Message = Event | Push


@attrs.define(eq=False)
class ModelStore:
    """Epochs by Node (compare-and-set) and sessions by (Node, call)."""

    epochs: dict[int, int] = attrs.Factory(lambda: {1: 0, 2: 0})
    sessions: dict[tuple[int, str], int] = attrs.Factory(dict)

    def claim(self, node: int, expected: int, new: int) -> bool:
        if self.epochs[node] != expected:
            return False
        self.epochs[node] = new
        return True

    def put(self, node: int, call: str, epoch: int) -> bool:
        if epoch < self.epochs[node]:
            return False
        self.sessions[node, call] = epoch
        return True

    def delete(self, node: int, call: str, epoch: int) -> bool:
        if epoch < self.epochs[node]:
            return False
        self.sessions.pop((node, call), None)
        return True


@attrs.define(eq=False)
class ModelTServer:
    """Ground truth: routes each call once, refuses commands below a Node's fence."""

    fence: dict[int, int] = attrs.Factory(lambda: {1: 0, 2: 0})
    routed: dict[str, tuple[str, int]] = attrs.Factory(dict)
    accepted: Counter[str] = attrs.Factory(Counter)
    stale: int = 0
    duplicates: int = 0

    def route(self, call: str, app: str, node: int, epoch: int) -> str:
        if epoch < self.fence[node]:
            self.stale += 1
            return "stale"
        if call in self.routed:
            self.duplicates += 1
            return "duplicate"
        self.routed[call] = (app, epoch)
        self.accepted[call] += 1
        return "ok"


@attrs.define(eq=False)
class App:
    """One ORS application as its runtime would hold it."""

    name: str
    node: int
    configured_primary: bool
    machine: RoleMachine
    watcher: Watcher
    alive: bool = True
    hung: bool = False
    link_up: bool = False  # its view of the link to its partner
    sessions: set[str] = attrs.Factory(set)
    seen_routed: set[str] = attrs.Factory(set)
    inbox: list[Push] = attrs.Factory(list)
    claim_answer: ClaimWon | ClaimLost | None = None
    fence_due: int | None = None
    highest_epoch: int = 0

    @property
    def responsive(self) -> bool:
        return self.alive and not self.hung


class HaPair(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.store = ModelStore()
        self.ts = ModelTServer()
        self.apps: dict[str, App] = {}
        self.pair_cut = False
        self.ts_cut = {"A": False, "B": False, "R": False}
        self.queue: deque[tuple[str, Message]] = deque()
        self.calls: list[str] = []
        for name in ("R", "A", "B"):
            self._start(name)
        self.pump()
        for name in ("R", "A", "B"):
            self._answer_claim(name)

    # ------------------------------------------------------------------ plumbing

    def partner(self, name: str) -> App:
        return self.apps["B" if name == "A" else "A"]

    def pair_ok(self) -> bool:
        return not self.pair_cut and all(self.apps[n].responsive for n in PAIR)

    def ts_ok(self, name: str) -> bool:
        return self.apps[name].alive and not self.ts_cut[name]

    def live_view(self, name: str) -> dict[int, str]:
        if name == "R" and not any(self.apps[n].alive for n in PAIR):
            return {2: DC}  # Node 1 left the cluster: both halves are gone
        return {1: DC, 2: DC}

    def post(self, name: str, message: Message) -> None:
        self.queue.append((name, message))

    def pump(self) -> None:
        while self.queue:
            name, message = self.queue.popleft()
            app = self.apps[name]
            if not app.alive:
                continue
            if isinstance(message, Push):
                if app.hung:
                    app.inbox.append(message)
                else:
                    self._on_push(app, message)
            elif app.responsive:
                self._on_event(app, message)

    def _start(self, name: str) -> None:
        node = 2 if name == "R" else 1
        app = App(
            name,
            node,
            configured_primary=name != "B",
            machine=RoleMachine(configured_primary=name != "B", epoch=self.store.epochs[node]),
            watcher=Watcher(node_id=node, timeout_ms=TIMEOUT_MS),
        )
        self.apps[name] = app
        if name == "R":
            self.post(name, PartnerLost())  # a Node of one application
            return
        other = self.apps.get("B" if name == "A" else "A")
        if other is not None and other.responsive and not self.pair_cut:
            self.post(name, PartnerSeen(other.machine.role.mode == "primary", other.machine.epoch))
            self.post(other.name, PartnerSeen(False, app.machine.epoch))
            app.link_up = other.link_up = True
        else:
            self.post(name, PartnerLost())

    def _on_event(self, app: App, event: Event) -> None:
        for action in app.machine.handle(event):
            self._act(app, action)
        for call in app.watcher.set_role(app.machine.role, self.now):
            self._create(app, call)

    def _act(self, app: App, action: Action) -> None:
        match action:
            case ClaimEpoch(expected=expected, new=new):
                won = self.store.claim(app.node, expected, new)
                current = self.store.epochs[app.node]
                app.claim_answer = ClaimWon(new) if won else ClaimLost(current)
            case Fence(epoch=epoch):
                app.fence_due = epoch
                self._fence(app)
            case RecoverSessions(epoch=epoch):
                for node, call in sorted(self.store.sessions):
                    if node != app.node:
                        continue
                    if call in app.seen_routed:
                        self.store.delete(node, call, epoch)
                    elif self.store.put(node, call, epoch):
                        app.sessions.add(call)
                        app.watcher.on_session_created(call)
            case StepDown():
                app.sessions.clear()
            case HandOver():
                if self.pair_ok():
                    self.post(self.partner(app.name).name, SwitchoverRequested())
            case SwitchoverFailed():
                pass

    def _on_push(self, app: App, push: Push) -> None:
        call = push.call_id
        if push.kind == "route_request":
            if call in app.sessions or call in app.seen_routed:
                return
            decision = app.watcher.on_route_request(call, self.now, self.live_view(app.name))
            if decision.verdict is Verdict.CREATE:
                self._create(app, call)
        elif push.kind == "call_routed":
            app.seen_routed.add(call)
            app.watcher.on_call_routed(call)
            if call in app.sessions:  # routed by someone else: this session is over
                app.sessions.discard(call)
                if not self.store.delete(app.node, call, app.machine.epoch):
                    self.post(app.name, Fenced(app.machine.epoch))
        else:
            app.watcher.on_session_created(call)

    def _create(self, app: App, call: str) -> None:
        if call in app.sessions or call in app.seen_routed:
            return
        epoch = app.machine.epoch
        if not self.store.put(app.node, call, epoch):
            # Fenced: step down, then hand the call back to the watcher as a backup.
            self.post(app.name, Fenced(epoch))
            self.post(app.name, Push("route_request", call))
            return
        app.sessions.add(call)
        for other in self.apps.values():
            if other is app:
                continue
            if app.name in PAIR and other.name in PAIR and self.pair_cut:
                continue
            self.post(other.name, Push("session_created", call))

    def _fence(self, app: App) -> None:
        if app.fence_due is not None and self.ts_ok(app.name):
            self.ts.fence[app.node] = max(self.ts.fence[app.node], app.fence_due)
            app.fence_due = None

    def _route(self, app: App, call: str) -> None:
        self._fence(app)  # the runtime fences before its first route
        epoch = app.machine.epoch
        result = self.ts.route(call, app.name, app.node, epoch)
        if result == "stale":
            assert epoch < self.store.epochs[app.node], "refused an application holding the epoch"
            self.post(app.name, Fenced(epoch))
            self.pump()
            assert not (app.machine.role.holds_node and app.machine.epoch == epoch), (
                "a primary refused as stale kept acting"
            )
            return
        app.sessions.discard(call)
        if not self.store.delete(app.node, call, epoch):
            self.post(app.name, Fenced(epoch))
        if result == "ok":
            # The router knows from the answer (``_mark_handled``); the others hear it.
            app.seen_routed.add(call)
            app.watcher.on_call_routed(call)
            for name in self.apps:
                if name != app.name and self.ts_ok(name):
                    self.post(name, Push("call_routed", call))
        self.pump()

    def _answer_claim(self, name: str) -> None:
        app = self.apps[name]
        if app.responsive and app.claim_answer is not None:
            answer, app.claim_answer = app.claim_answer, None
            self.post(name, answer)
            self.pump()

    def _heartbeat(self) -> None:
        if not self.pair_ok():
            return
        a, b = (self.apps[n] for n in PAIR)
        seen_a = PartnerSeen(a.machine.role.mode == "primary", a.machine.epoch)
        seen_b = PartnerSeen(b.machine.role.mode == "primary", b.machine.epoch)
        a.link_up = b.link_up = True
        self.post("A", seen_b)
        self.post("B", seen_a)
        self.pump()

    def _detect(self, name: str) -> None:
        app, other = self.apps[name], self.partner(name)
        if app.responsive and app.link_up and (self.pair_cut or not other.responsive):
            app.link_up = False
            self.post(name, PartnerLost())
            self.pump()

    def _resume(self, name: str) -> None:
        app, other = self.apps[name], self.partner(name)
        app.hung = False
        if app.link_up and (self.pair_cut or not other.alive or not other.link_up):
            app.link_up = False
            self.post(name, PartnerLost())
        for push in app.inbox:
            self.post(name, push)
        app.inbox.clear()
        self.pump()

    def _tick(self, dt: float) -> None:
        self.now += dt
        for app in self.apps.values():
            if app.responsive:
                for call in app.watcher.due(self.now):
                    self._create(app, call)
        self.pump()

    # --------------------------------------------------------------------- rules

    @rule(count=st.integers(1, 3))
    def new_calls(self, count: int) -> None:
        for _ in range(count):
            if len(self.calls) >= len(CALL_IDS):
                return
            call = CALL_IDS[len(self.calls)]
            self.calls.append(call)
            for name in self.apps:
                if self.ts_ok(name):
                    self.post(name, Push("route_request", call))
            self.pump()

    @rule(name=st.sampled_from(PAIR))
    def crash(self, name: str) -> None:
        app, other = self.apps[name], self.partner(name)
        if not app.alive:
            return
        app.alive = app.hung = False
        if other.responsive and not self.pair_cut and other.link_up:
            other.link_up = False  # closed socket: seen at once
            self.post(other.name, PartnerLost())
        self.pump()

    @rule(name=st.sampled_from(PAIR))
    def restart(self, name: str) -> None:
        if not self.apps[name].alive:
            self._start(name)
            self.pump()

    @rule(name=st.sampled_from(PAIR))
    def hang(self, name: str) -> None:
        if self.apps[name].alive:
            self.apps[name].hung = True

    @rule(name=st.sampled_from(PAIR))
    def resume(self, name: str) -> None:
        if self.apps[name].alive and self.apps[name].hung:
            self._resume(name)

    @rule(cut=st.booleans())
    def cut_pair(self, cut: bool) -> None:
        self.pair_cut = cut

    @rule(name=st.sampled_from(PAIR), cut=st.booleans())
    def cut_tserver(self, name: str, cut: bool) -> None:
        self.ts_cut[name] = cut

    @rule()
    def heartbeat(self) -> None:
        self._heartbeat()

    @rule(name=st.sampled_from(PAIR))
    def addp_detects_silence(self, name: str) -> None:
        self._detect(name)

    @rule(name=st.sampled_from(PAIR))
    def read_store_epoch(self, name: str) -> None:
        if self.apps[name].responsive:
            self.post(name, EpochObserved(self.store.epochs[1]))
            self.pump()

    @rule(name=st.sampled_from(PAIR))
    def claim_answered(self, name: str) -> None:
        self._answer_claim(name)

    @rule(name=st.sampled_from(PAIR))
    def switchover(self, name: str) -> None:
        if self.apps[name].responsive:
            self.post(name, SwitchoverRequested())
            self.pump()

    @rule(name=st.sampled_from(PAIR))
    def switchover_times_out(self, name: str) -> None:
        if self.apps[name].responsive:
            self.post(name, SwitchoverTimedOut())
            self.pump()

    @rule(dt=st.sampled_from([0.05, 0.2, 0.5]))
    def time_passes(self, dt: float) -> None:
        self._tick(dt)

    @precondition(lambda self: any(self._routable(n) for n in self.apps))
    @rule(data=st.data())
    def route_one(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from([n for n in self.apps if self._routable(n)]))
        app = self.apps[name]
        self._route(app, data.draw(st.sampled_from(sorted(app.sessions))))

    def _routable(self, name: str) -> bool:
        app = self.apps[name]
        return (
            app.responsive
            and self.ts_ok(name)
            and app.machine.role.holds_node
            and bool(app.sessions)
        )

    # ---------------------------------------------------------------- invariants

    @invariant()
    def one_holder_of_the_current_epoch(self) -> None:
        holders = [
            n
            for n in PAIR
            if self.apps[n].alive
            and self.apps[n].machine.role.holds_node
            and self.apps[n].machine.epoch == self.store.epochs[1]
        ]
        assert len(holders) <= 1, holders

    @invariant()
    def known_epochs_never_go_back(self) -> None:
        for app in self.apps.values():
            assert app.machine.epoch >= app.highest_epoch, (app.name, app.machine.epoch)
            app.highest_epoch = app.machine.epoch
            assert app.machine.epoch <= self.store.epochs[app.node]

    @invariant()
    def tserver_fence_never_ahead_of_the_store(self) -> None:
        assert self.ts.fence[1] <= self.store.epochs[1]

    @invariant()
    def each_call_routed_at_most_once(self) -> None:
        assert all(n == 1 for n in self.ts.accepted.values())

    def teardown(self) -> None:
        """Faults stop: heal, resume, restart; then every call is routed exactly once."""
        self.pair_cut = False
        self.ts_cut = dict.fromkeys(self.ts_cut, False)
        for name in PAIR:
            if self.apps[name].hung:
                self._resume(name)
            if not self.apps[name].alive:
                self._start(name)
                self.pump()
        for _ in range(8):
            self._heartbeat()
            for name in PAIR:
                self._detect(name)
                self._answer_claim(name)
                if self.apps[name].machine.role.mode == "primary":
                    self.post(name, SwitchoverTimedOut())  # the runtime's switchover timer
                self.post(name, EpochObserved(self.store.epochs[1]))
                self.pump()
            self._tick(1.0)
            for app in self.apps.values():
                while self._routable(app.name):
                    self._route(app, min(app.sessions))
        holders = [n for n in PAIR if self.apps[n].machine.role.holds_node]
        assert len(holders) == 1, {n: self.apps[n].machine.role for n in PAIR}
        assert self.apps[holders[0]].machine.epoch == self.store.epochs[1]
        missing = [c for c in self.calls if c not in self.ts.routed]
        assert not missing, missing
        assert not self.store.sessions, self.store.sessions
        event(f"takeovers: {_bucket(self.store.epochs[1] - 1)}")
        event(f"calls: {_bucket(len(self.calls))}")
        event(f"stale refusals: {_bucket(self.ts.stale)}")
        event(f"duplicate refusals: {_bucket(self.ts.duplicates)}")
        event(f"routed by R: {_bucket(sum(a == 'R' for a, _ in self.ts.routed.values()))}")


def _bucket(n: int) -> str:
    return "0" if n == 0 else "1-2" if n <= 2 else "3+"


TestHaPair = HaPair.TestCase
TestHaPair.settings = settings(
    max_examples=int(os.environ.get("HA_EXAMPLES", "300")), stateful_step_count=40, deadline=None
)
