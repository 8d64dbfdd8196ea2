"""Create, watch or ignore a new call; when watched calls fall due (orsim.node._watch)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from orsim.node._assignment import NodeInfo, assign
from orsim.node._role import Role
from orsim.node._watch import Decision, Verdict, Watcher, WatchKind, decide

CLUSTER = {1: "East", 2: "East", 3: "West"}
TIMEOUT_MS = 300.0


def call_for(
    assigned: int, reserved: int | None, cluster: dict[int, str] = CLUSTER, start: int = 0
) -> str:
    """A call ID whose assignment over ``cluster`` is (assigned, reserved)."""
    for i in range(start, 10_000):
        call = f"call-{i}"
        a = assign(call, cluster)
        if (a.assigned, a.reserved) == (assigned, reserved):
            return call
    raise AssertionError("no such call")


CALL = call_for(assigned=1, reserved=2)


def watcher(node_id: int, role: Role) -> Watcher:
    w = Watcher(node_id=node_id, timeout_ms=TIMEOUT_MS)
    w.set_role(role, now=0.0)
    return w


def test_primary_of_assigned_node_creates() -> None:
    """The primary of the Assigned Node creates the session at once."""
    d = decide(CALL, 10.0, CLUSTER, node_id=1, role=Role.PRIMARY, timeout_ms=TIMEOUT_MS)
    assert d == Decision(Verdict.CREATE, assign(CALL, CLUSTER))


def test_other_half_of_assigned_node_watches() -> None:
    """Backup, claiming, suspending or starting: the Assigned Node's other half watches."""
    for role in (Role.BACKUP, Role.CLAIMING, Role.SUSPENDING, Role.STARTING):
        d = decide(CALL, 10.0, CLUSTER, 1, role, TIMEOUT_MS)
        assert (d.verdict, d.kind, d.deadline) == (Verdict.WATCH, WatchKind.ASSIGNED, 10.3)


def test_both_halves_of_the_reserved_node_watch_and_strangers_ignore() -> None:
    """The Reserved Node may change hands during the watch (found by `orsim search`: a
    switchover of the Reserved Node as the Assigned Node died lost the call), so both its
    halves watch; whichever is primary at the deadline creates."""
    for role in (Role.PRIMARY, Role.BACKUP, Role.SUSPENDING):
        d = decide(CALL, 10.0, CLUSTER, 2, role, TIMEOUT_MS)
        assert (d.verdict, d.kind) == (Verdict.WATCH, WatchKind.RESERVED)
    assert decide(CALL, 10.0, CLUSTER, 2, Role.STOPPED, TIMEOUT_MS).verdict is Verdict.IGNORE
    assert decide(CALL, 10.0, CLUSTER, 3, Role.PRIMARY, TIMEOUT_MS).verdict is Verdict.IGNORE
    assert decide(CALL, 10.0, CLUSTER, 1, Role.STOPPED, TIMEOUT_MS).verdict is Verdict.IGNORE


@given(
    st.dictionaries(st.integers(1, 50), st.sampled_from("AB"), min_size=1, max_size=6),
    st.text(max_size=10),
)
def test_exactly_one_creator_when_everyone_is_primary(cluster: dict[int, str], call: str) -> None:
    """With every Node's primary up, exactly one creates and at most one watches."""
    verdicts = [decide(call, 0.0, cluster, n, Role.PRIMARY, TIMEOUT_MS).verdict for n in cluster]
    assert verdicts.count(Verdict.CREATE) == 1
    assert verdicts.count(Verdict.WATCH) == (1 if len(cluster) > 1 else 0)


@given(
    st.dictionaries(st.integers(1, 50), st.sampled_from("AB"), min_size=1, max_size=12),
    st.text(max_size=10),
    st.sampled_from(list(Role)),
)
def test_decisions_without_the_full_assignment_are_the_same(
    cluster: dict[int, str], call: str, role: Role
) -> None:
    """A Node outweighed in its own data center ignores the call without the full
    assignment: the verdict, kind and deadline are those the assignment gives."""
    for node_id in cluster:
        d = decide(call, 0.0, cluster, node_id, role, TIMEOUT_MS)
        a = assign(call, cluster)
        if d.assignment is None:
            assert d == Decision(Verdict.IGNORE, None)
            assert node_id not in (a.assigned, a.reserved)
        else:
            assert d.assignment == a
        # The same call decided from a list of Nodes takes the full assignment.
        listed = decide(call, 0.0, list(_nodes(cluster)), node_id, role, TIMEOUT_MS)
        assert (listed.verdict, listed.kind, listed.deadline) == (d.verdict, d.kind, d.deadline)
        assert listed.reserved == a.reserved


def _nodes(cluster: dict[int, str]) -> list[NodeInfo]:
    return [NodeInfo(n, dc) for n, dc in cluster.items()]


def test_session_or_route_cancels_the_watch() -> None:
    """A session created anywhere, or the call routed, ends the watch."""
    w = watcher(2, Role.PRIMARY)
    assert w.on_route_request(CALL, 0.0, CLUSTER).verdict is Verdict.WATCH
    assert w.on_session_created(CALL)
    assert not w.on_call_routed(CALL)
    assert w.due(100.0) == []
    w.on_route_request(CALL, 0.0, CLUSTER)
    assert w.on_call_routed(CALL)
    assert w.watches == {}


def test_reserved_primary_creates_at_the_deadline() -> None:
    """If the Assigned Node did nothing in time, the Reserved Node's primary creates."""
    w = watcher(2, Role.PRIMARY)
    w.on_route_request(CALL, 5.0, CLUSTER)
    assert w.next_deadline() == 5.3
    assert w.due(5.29) == []
    assert w.due(5.3) == [CALL]
    assert w.due(9.0) == []  # handed out once


def test_reserved_that_lost_primary_keeps_the_watch_until_it_is_primary_again() -> None:
    """Not primary at the deadline, it creates nothing then, but keeps the watch: if it
    becomes primary again before the call is created, routed or expired, it creates it
    (a lone Reserved application fenced during a hang, found by the stateful test)."""
    w = watcher(2, Role.PRIMARY)
    w.on_route_request(CALL, 0.0, CLUSTER, expires=10.0)
    w.set_role(Role.BACKUP, now=0.1)
    assert w.due(1.0) == []
    assert w.next_deadline() == 10.0
    assert w.set_role(Role.PRIMARY, now=2.0) == [CALL]
    assert w.watches == {}


def test_backup_creates_watched_calls_on_becoming_primary() -> None:
    """A backup that takes over before the deadline creates its Node's watched calls."""
    w = watcher(1, Role.BACKUP)
    calls = [CALL, call_for(assigned=1, reserved=2, start=int(CALL.split("-")[1]) + 1)]
    for i, call in enumerate(calls):
        w.on_route_request(call, i / 100, CLUSTER)
    assert set(w.watches) == set(calls)
    assert w.set_role(Role.CLAIMING, now=0.1) == []
    created = w.set_role(Role.PRIMARY, now=0.2)
    assert sorted(created) == sorted(calls)
    assert w.watches == {}


def test_backup_creates_its_nodes_call_on_a_late_takeover_too() -> None:
    """Past the deadline the Reserved Node acts, but it may not have been able to (its
    primary frozen too: found by `orsim search`), so a late takeover creates the call as
    well and the store's claim lets only one of them have it."""
    w = watcher(1, Role.BACKUP)
    w.on_route_request(CALL, 0.0, CLUSTER)
    assert w.due(0.3) == []
    assert w.next_deadline() is None
    assert w.set_role(Role.PRIMARY, now=0.4) == [CALL]


def test_a_late_takeover_leaves_a_routed_call_alone() -> None:
    """The T-Server's ``call_routed`` ends the watch, before or after the deadline."""
    w = watcher(1, Role.BACKUP)
    w.on_route_request(CALL, 0.0, CLUSTER)
    assert w.on_call_routed(CALL)
    assert w.set_role(Role.PRIMARY, now=0.5) == []


def test_lone_node_backup_keeps_watching_until_it_is_primary() -> None:
    """With no Reserved Node the backup is the last hope: it waits past the deadline."""
    lone = {1: "East"}
    w = watcher(1, Role.BACKUP)
    w.on_route_request("c1", 0.0, lone, expires=10.0)
    assert w.due(5.0) == []
    assert w.next_deadline() == 10.0
    assert w.set_role(Role.PRIMARY, now=6.0) == ["c1"]


def test_expired_calls_are_dropped() -> None:
    """A call past its T-Server deadline is lost anyway: the watch ends."""
    lone = {1: "East"}
    w = watcher(1, Role.BACKUP)
    w.on_route_request("c1", 0.0, lone, expires=10.0)
    assert w.set_role(Role.PRIMARY, now=10.0) == []
    assert w.watches == {}


def test_timeout_change_applies_to_new_watches_only() -> None:
    """Changing call-watching-timeout keeps running watches' deadlines."""
    w = watcher(2, Role.PRIMARY)
    w.on_route_request(CALL, 0.0, CLUSTER)
    w.timeout_ms = 1000.0
    second = call_for(1, 2, {1: "E", 2: "E", 4: "W"}, start=int(CALL.split("-")[1]) + 1)
    w.on_route_request(second, 0.0, {1: "E", 2: "E", 4: "W"})
    assert w.watches[CALL].deadline == 0.3
    assert w.watches[second].deadline == 1.0


def test_repeated_event_keeps_the_first_watch() -> None:
    """A second routing-point event for a watched call does not restart the clock."""
    w = watcher(2, Role.PRIMARY)
    w.on_route_request(CALL, 0.0, CLUSTER)
    d = w.on_route_request(CALL, 7.0, CLUSTER)
    assert (d.verdict, d.deadline) == (Verdict.WATCH, 0.3)


def test_assignment_is_fixed_when_the_call_arrives() -> None:
    """If the Assigned Node leaves, a running watch still fires; new calls are reassigned."""
    w = watcher(2, Role.PRIMARY)
    w.on_route_request(CALL, 0.0, CLUSTER)
    without_1 = {2: "East", 3: "West"}
    # The Assigned Node 1 left: the Reserved Node still creates at the deadline.
    assert w.due(0.3) == [CALL]
    # The same call ID arriving now (a new call) is computed over the new membership.
    assert w.on_route_request(CALL, 1.0, without_1).assignment == assign(CALL, without_1)


def test_suspending_primary_that_resumes_creates_its_watched_calls() -> None:
    """A failed switchover: calls watched while suspending are created on resuming."""
    w = watcher(1, Role.PRIMARY)
    w.set_role(Role.SUSPENDING, now=0.0)
    assert w.on_route_request(CALL, 0.0, CLUSTER).verdict is Verdict.WATCH
    assert w.set_role(Role.PRIMARY, now=0.1) == [CALL]
