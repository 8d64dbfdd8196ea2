"""The call ledger: routed exactly once or lost, duplicates and stale epochs refused."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from orsim.tserver import (
    CallLedger,
    CallLost,
    DuplicateRoute,
    RouteRefused,
    StaleEpoch,
    UnknownCall,
)
from orsim.tserver._ledger import DuplicateCallId, EpochTaken, percentile


def test_route_once_then_duplicate() -> None:
    """A call routes once; a second route is refused and counted as a duplicate."""
    ledger = CallLedger()
    ledger.create("c1", "5000", now=100.0, deadline=110.0)
    outcome = ledger.route("c1", app="ORS_1", node_id=7, epoch=1, now=100.25, target="A")
    assert outcome.latency_ms == pytest.approx(250.0)
    with pytest.raises(DuplicateRoute) as info:
        ledger.route("c1", app="ORS_2", node_id=8, epoch=1, now=100.5)
    assert info.value.code == "duplicate"
    counts = ledger.counts()
    assert (counts.created, counts.routed, counts.duplicates, counts.in_flight) == (1, 1, 1, 0)
    assert counts.by_app == {"ORS_1": 1}
    assert counts.by_node == {7: 1}
    record = ledger.get("c1")
    assert record is not None
    assert (record.state, record.app, record.node_id, record.epoch) == ("routed", "ORS_1", 7, 1)


def test_records_share_one_copy_of_each_name() -> None:
    """Each route arrives with its own decoded strings; the records keep one of each."""
    ledger = CallLedger()
    for n in range(3):
        ledger.create(f"c{n}", "5000", now=100.0, deadline=110.0)
        # Built at run time, as a decoder builds them: equal, never the same object.
        app, target = "".join(["ORS_", "1"]), "".join(["Agent_", "2"])
        ledger.route(f"c{n}", app=app, node_id=7, epoch=1, now=100.1, target=target)
    records = [ledger.get(f"c{n}") for n in range(3)]
    assert all(r is not None and r.app == "ORS_1" and r.target == "Agent_2" for r in records)
    assert len({id(r.app) for r in records if r}) == 1
    assert len({id(r.target) for r in records if r}) == 1


def test_identical_resend_is_the_original_success() -> None:
    """A node resending its accepted route (after a lost link) gets the first outcome back,
    counted as ``resent``; any other second route stays a duplicate."""
    ledger = CallLedger()
    ledger.create("c1", "5000", now=100.0, deadline=110.0)
    first = ledger.route("c1", app="ORS_1", node_id=7, epoch=1, now=100.25, target="A")
    again = ledger.route("c1", app="ORS_1", node_id=7, epoch=1, now=100.75, target="A")
    assert (first.resent, again.resent) == (False, True)
    assert again.record == first.record
    assert again.latency_ms == pytest.approx(250.0)
    others = [  # app, node_id, epoch, target
        ("ORS_1_B", 7, 1, "A"),  # the partner
        ("ORS_1", 7, 2, "A"),  # a later epoch
        ("ORS_1", 7, 1, "B"),  # another target
        ("ORS_1", 8, 1, "A"),  # another Node
    ]
    for app, node_id, epoch, target in others:
        with pytest.raises(DuplicateRoute):
            ledger.route("c1", now=101.0, app=app, node_id=node_id, epoch=epoch, target=target)
    counts = ledger.counts()
    assert (counts.routed, counts.resent, counts.duplicates) == (1, 1, 4)
    assert counts.by_app == {"ORS_1": 1}
    assert counts.latency_p50_ms == pytest.approx(250.0)  # the resend adds no latency sample
    ledger.fence(7, 5)
    with pytest.raises(StaleEpoch):  # a fenced-off primary learns it is fenced
        ledger.route("c1", app="ORS_1", node_id=7, epoch=1, now=101.0, target="A")


def test_stale_epoch_after_fence_and_after_newer_route() -> None:
    """Fencing, or a route at a higher epoch, makes lower epochs of that Node stale."""
    ledger = CallLedger()
    for i in range(4):
        ledger.create(f"c{i}", "5000", now=0.0, deadline=10.0)
    assert ledger.fence(7, 3) == 3
    assert ledger.fence(7, 2) == 3  # never goes down
    with pytest.raises(StaleEpoch):
        ledger.route("c0", app="ORS_1", node_id=7, epoch=2, now=1.0)
    ledger.route("c1", app="ORS_1_B", node_id=7, epoch=4, now=1.0)
    with pytest.raises(StaleEpoch):
        ledger.route("c2", app="ORS_1", node_id=7, epoch=3, now=1.0)
    ledger.route("c3", app="ORS_2", node_id=9, epoch=0, now=1.0)  # other Nodes unaffected
    counts = ledger.counts()
    assert (counts.stale, counts.routed, counts.in_flight) == (2, 2, 2)


def test_unknown_and_lost() -> None:
    """Unknown calls are refused; a call past its deadline is lost, by expiry or late route."""
    ledger = CallLedger()
    with pytest.raises(UnknownCall):
        ledger.route("nope", app="A", node_id=1, epoch=0, now=0.0)
    ledger.create("a", "5000", now=0.0, deadline=1.0)
    ledger.create("b", "5000", now=0.5, deadline=1.5)
    assert ledger.next_deadline() == 1.0
    assert [r.call_id for r in ledger.expire(1.0)] == ["a"]
    assert ledger.next_deadline() == 1.5
    with pytest.raises(CallLost):
        ledger.route("a", app="A", node_id=1, epoch=0, now=1.1)
    with pytest.raises(CallLost):
        ledger.route("b", app="A", node_id=1, epoch=0, now=1.5)  # at the deadline: too late
    assert ledger.next_deadline() is None
    assert ledger.expire(99.0) == []
    counts = ledger.counts()
    assert (counts.lost, counts.unknown, counts.late, counts.in_flight) == (2, 1, 2, 0)


def test_create_twice_is_a_bug() -> None:
    """Creating an existing call id is refused (ids are unique per run)."""
    ledger = CallLedger()
    ledger.create("a", "5000", now=0.0, deadline=1.0)
    with pytest.raises(DuplicateCallId):
        ledger.create("a", "5000", now=0.0, deadline=1.0)


def test_percentiles() -> None:
    """Nearest-rank percentiles over routed latencies."""
    assert percentile([], 50) is None
    assert percentile(range(1, 101), 50) == 50
    assert percentile(range(1, 101), 99) == 99
    assert percentile([5.0], 99) == 5.0
    ledger = CallLedger()
    for i in range(100):
        ledger.create(f"c{i}", "5000", now=0.0, deadline=10.0)
        ledger.route(f"c{i}", app="A", node_id=1, epoch=0, now=(i + 1) / 1000)
    counts = ledger.counts()
    assert counts.latency_p50_ms == pytest.approx(50.0)
    assert counts.latency_p99_ms == pytest.approx(99.0)
    assert counts.to_wire()["by_node"] == {"1": 100}


NODES = st.sampled_from([1, 2, 3])
EPOCHS = st.integers(0, 4)


class LedgerMachine(RuleBasedStateMachine):
    """Any sequence of create/route/fence/expire keeps the ledger's promises."""

    def __init__(self) -> None:
        super().__init__()
        self.ledger = CallLedger()
        self.now = 0.0
        self.calls: list[str] = []
        self.deadlines: dict[str, float] = {}
        self.routed: dict[str, int] = {}  # call -> successful routes seen
        self.lost: set[str] = set()
        self.epochs: dict[int, int] = {}
        #: node -> the application holding its known epoch, where one is known
        self.holders: dict[int, str] = {}
        self.duplicates = 0
        self.resent = 0
        self.stale = 0
        #: call -> (app, node, epoch, target) of the route that routed it
        self.routes: dict[str, tuple[str, int, int, str]] = {}

    @rule(dt=st.floats(0, 3), timeout=st.floats(0.1, 5))
    def create(self, dt: float, timeout: float) -> None:
        self.now += dt
        call_id = f"c{len(self.calls)}"
        self.ledger.create(call_id, "5000", now=self.now, deadline=self.now + timeout)
        self.calls.append(call_id)
        self.deadlines[call_id] = self.now + timeout

    @precondition(lambda self: bool(self.calls))
    @rule(
        data=st.data(),
        node=NODES,
        epoch=EPOCHS,
        dt=st.floats(0, 2),
        app=st.sampled_from(["A", "B"]),
        agent=st.sampled_from(["Agent_1", "Agent_2"]),
    )
    def route(
        self, data: st.DataObject, node: int, epoch: int, dt: float, app: str, agent: str
    ) -> None:
        self.now += dt
        call_id = data.draw(st.sampled_from([*self.calls, "ghost"]))
        known = self.epochs.get(node, 0)
        sent = (f"ORS_{node}{app}", node, epoch, agent)
        try:
            outcome = self.ledger.route(
                call_id, app=sent[0], node_id=node, epoch=epoch, now=self.now, target=agent
            )
        except StaleEpoch:
            held_by_other = self.holders.get(node, sent[0]) != sent[0]
            assert epoch < known or (
                epoch == known and held_by_other and not self.routed.get(call_id)
            )
            self.stale += 1
        except DuplicateRoute:
            assert epoch >= known
            assert self.routed.get(call_id)
            assert self.routes[call_id] != sent, "an identical resend counted as duplicate"
            self.duplicates += 1
        except CallLost:
            assert self.now >= self.deadlines[call_id]
            self.lost.add(call_id)
        except UnknownCall:
            assert call_id == "ghost"
        except RouteRefused as exc:  # pragma: no cover
            raise AssertionError(f"unexpected refusal {exc!r}") from exc
        else:
            assert epoch >= known
            if outcome.resent:
                assert self.routes[call_id] == sent
                self.resent += 1
                return
            assert self.now < self.deadlines[call_id]
            assert call_id not in self.lost
            self.routed[call_id] = self.routed.get(call_id, 0) + 1
            self.routes[call_id] = sent
            assert epoch > known or self.holders.get(node, sent[0]) == sent[0]
            self.epochs[node] = epoch
            self.holders[node] = sent[0]

    @precondition(lambda self: bool(self.routes))
    @rule(data=st.data(), dt=st.floats(0, 2))
    def resend(self, data: st.DataObject, dt: float) -> None:
        """The router resends its accepted route: the original success unless fenced since."""
        self.now += dt
        call_id = data.draw(st.sampled_from(sorted(self.routes)))
        app, node, epoch, target = self.routes[call_id]
        try:
            outcome = self.ledger.route(
                call_id, app=app, node_id=node, epoch=epoch, now=self.now, target=target
            )
        except StaleEpoch:
            assert epoch < self.epochs.get(node, 0)
            self.stale += 1
        else:
            assert outcome.resent
            assert outcome.record.routed_at is not None and outcome.record.routed_at <= self.now
            self.resent += 1

    @rule(node=NODES, epoch=EPOCHS)
    def fence(self, node: int, epoch: int) -> None:
        if epoch > self.epochs.get(node, 0):
            self.holders.pop(node, None)
        self.epochs[node] = max(self.epochs.get(node, 0), epoch)
        assert self.ledger.fence(node, epoch) == self.epochs[node]

    @rule(node=NODES, epoch=EPOCHS, app=st.sampled_from(["A", "B"]))
    def fence_as(self, node: int, epoch: int, app: str) -> None:
        """A fence naming its application holds the epoch, or is refused."""
        known, name = self.epochs.get(node, 0), f"ORS_{node}{app}"
        try:
            assert self.ledger.fence(node, epoch, name) == max(known, epoch)
        except EpochTaken:
            assert epoch < known or self.holders.get(node, name) != name
        else:
            assert epoch > known or self.holders.get(node, name) == name
            self.epochs[node], self.holders[node] = max(known, epoch), name

    @rule(node=NODES, expected=EPOCHS, app=st.sampled_from(["A", "B"]))
    def claim(self, node: int, expected: int, app: str) -> None:
        """Compare-and-set here: won only while nothing above ``expected`` is known."""
        known, name = self.epochs.get(node, 0), f"ORS_{node}{app}"
        won, now_known = self.ledger.claim(node, expected, expected + 1, name)
        retry = known == expected + 1 and self.holders.get(node) == name
        assert won == (known <= expected or retry)
        if won:
            self.epochs[node], self.holders[node] = expected + 1, name
        assert now_known == self.epochs.get(node, 0)

    @rule(dt=st.floats(0, 3))
    def expire(self, dt: float) -> None:
        self.now += dt
        for record in self.ledger.expire(self.now):
            assert record.deadline <= self.now
            assert record.call_id not in self.routed
            assert record.call_id not in self.lost
            self.lost.add(record.call_id)

    @invariant()
    def each_call_routed_at_most_once(self) -> None:
        assert all(n == 1 for n in self.routed.values())
        assert not (set(self.routed) & self.lost)

    @invariant()
    def counts_add_up(self) -> None:
        counts = self.ledger.counts()
        assert counts.created == len(self.calls)
        assert counts.routed == len(self.routed)
        assert counts.lost == len(self.lost)
        assert counts.created == counts.routed + counts.lost + counts.in_flight
        assert counts.duplicates == self.duplicates
        assert counts.resent == self.resent
        assert counts.stale == self.stale
        assert sum(counts.by_app.values()) == counts.routed
        states = [r.state for r in self.ledger.records()]
        assert states.count("in_flight") == counts.in_flight

    @invariant()
    def next_deadline_is_earliest_in_flight(self) -> None:
        pending = [r.deadline for r in self.ledger.records() if r.state == "in_flight"]
        assert self.ledger.next_deadline() == (min(pending) if pending else None)


TestLedgerMachine = LedgerMachine.TestCase
TestLedgerMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


def test_default_dn_takes_the_calls_router_timeout_would_lose() -> None:
    """ors-domain.md section 7: a call not routed within router-timeout goes to
    TServer/default-dn (counted default_routed, not lost); a route after that is refused.
    An empty default-dn keeps the call lost."""
    ledger = CallLedger(default_dn="9999")
    ledger.create("a", "5000", now=0.0, deadline=1.0)
    ledger.create("b", "5000", now=0.0, deadline=1.0)
    ledger.route("b", app="A", node_id=1, epoch=0, now=0.5)
    [sent] = ledger.expire(1.0)
    assert (sent.call_id, sent.state, sent.target) == ("a", "default_routed", "9999")
    with pytest.raises(CallLost, match="default-dn 9999"):
        ledger.route("a", app="A", node_id=1, epoch=0, now=1.5)
    counts = ledger.counts()
    assert (counts.routed, counts.lost, counts.default_routed, counts.in_flight) == (1, 0, 1, 0)
    assert counts.to_wire()["default_routed"] == 1
    plain = CallLedger()
    plain.create("a", "5000", now=0.0, deadline=1.0)
    assert [r.state for r in plain.expire(1.0)] == ["lost"]
    assert plain.counts().lost == 1
