"""A creation the store did not take, and session news that outruns the route request.

Both were found with ADDP as Genesys times it (a hang seen between T and 2T): a frozen
primary's session write outlived the store's deadline while the Reserved Node, its watch
run out, created and routed the call; woken, the primary went on without the store's
word and routed the call again (`scenarios/search-frozen-primary-takes-its-node-back.yaml`,
3 duplicates). And under a real store outage, a Reserved Node that heard the Assigned
Node's ``session`` push before the T-Server's route request watched a created call, and
created it too (`tests/test_store_outage.py`, 1 duplicate in 3 of 6 runs).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from helpers import core_settings

from orsim.node._assignment import assign
from orsim.node._core import (
    RECLAIM_WAIT,
    CallQueried,
    Command,
    DeleteSession,
    EpochClaimed,
    FenceAnswered,
    MemberAnnounced,
    NodeCore,
    Note,
    NotifySession,
    PeerLinkDown,
    PeerLinkUp,
    QueryCall,
    RouteRequested,
    SelectTarget,
    SendRoute,
    SessionAnnounced,
    SessionsLoaded,
    SessionWritten,
    WriteOutcome,
    WriteSession,
)
from orsim.node._membership import MemberInfo
from orsim.node._settings import Endpoint, NodeSettings, PeerApp
from orsim.store import Session

CWT_MS = 300


def _primary(other_node: bool = False) -> NodeCore:
    """Node 1's primary "A", alone or with a live Node 2 (primary "P2")."""
    server = Endpoint("X", "127.0.0.1", 1)
    peers = (PeerApp("P2", 2, "DC", "127.0.0.1", 3, is_backup=False),) if other_node else ()
    core = NodeCore(
        NodeSettings(
            app="A",
            node_id=1,
            configured_backup=False,
            partner=None,
            cluster="C",
            data_center="DC",
            address="127.0.0.1",
            port=1,
            peers=peers,
            nodes={1: "DC", 2: "DC"} if other_node else {1: "DC"},
            tserver=server,
            urs=server,
            call_watching_timeout_ms=CWT_MS,
        )
    )
    core.start(0.0)
    core.handle(EpochClaimed(1, True, 1), 0.0)
    core.handle(FenceAnswered(1), 0.0)
    core.handle(SessionsLoaded((), 1), 0.0)
    if other_node:
        core.handle(PeerLinkUp("P2"), 0.0)
        core.handle(MemberAnnounced(MemberInfo("P2", 2, "DC", "primary", 1)), 0.0)
    assert core.mode == "primary"
    return core


def _kinds(commands: list[Command]) -> list[type]:
    return [type(c) for c in commands]


def _unanswered_creation(core: NodeCore) -> list[Command]:
    """Route request c1, whose session write the store does not answer in time."""
    assert WriteSession in _kinds(core.handle(RouteRequested("c1", "5000"), 1.0))
    return core.handle(SessionWritten("c1", WriteOutcome.UNPERSISTED), 2.0)


def test_a_creation_the_store_did_not_answer_is_tried_again_before_routing() -> None:
    """Its watchers are told it is created (none creates it meanwhile), and the store is
    asked again, once it answers, before anything is routed."""
    out = _unanswered_creation(_primary())
    assert _kinds(out) == [NotifySession, WriteSession]
    again = out[1]
    assert isinstance(again, WriteSession)
    assert again.create and again.wait_for_store == RECLAIM_WAIT
    assert again.session.call_id == "c1" and again.session.node_id == 1


def test_the_second_try_yields_the_call_to_the_node_the_store_says_owns_it() -> None:
    """The store holds another Node's session for the call (a Reserved Node created it
    while this application was frozen): this one drops it, routing nothing."""
    core = _primary()
    _unanswered_creation(core)
    out = core.handle(SessionWritten("c1", WriteOutcome.ELSEWHERE), 2.3)
    assert not {SelectTarget, SendRoute, QueryCall} & set(_kinds(out))
    assert "c1" not in core.calls


def test_the_second_try_taken_asks_the_tserver_before_going_on() -> None:
    """The store takes it (the call is this Node's from now on), but someone may have
    created, routed and forgotten it before: the T-Server says, then the call goes on."""
    core = _primary()
    _unanswered_creation(core)
    notice, query = core.handle(SessionWritten("c1", WriteOutcome.OWNED), 2.3)
    assert isinstance(notice, NotifySession) and notice.claimed  # its watchers learn it
    assert isinstance(query, QueryCall)
    assert _kinds(core.handle(CallQueried("c1", "in_flight"), 2.4)) == [SelectTarget]
    core2 = _primary()
    _unanswered_creation(core2)
    core2.handle(SessionWritten("c1", WriteOutcome.OWNED), 2.3)
    # Routed already: dropped, and the session the second try wrote is deleted.
    assert _kinds(core2.handle(CallQueried("c1", "routed"), 2.4)) == [Note, DeleteSession]
    assert "c1" not in core2.calls


def test_a_store_still_away_at_the_second_try_lets_the_call_go_on_unwritten() -> None:
    """ORS 8.1.2 and later keep routing through a store outage: past the second try the
    call goes on unpersisted, checked with the T-Server first, and is not tried again."""
    core = _primary()
    _unanswered_creation(core)
    assert _kinds(core.handle(SessionWritten("c1", WriteOutcome.UNPERSISTED), 2.5)) == [QueryCall]
    assert _kinds(core.handle(CallQueried("c1", "in_flight"), 2.6)) == [SelectTarget]


def test_a_creation_refused_at_once_by_a_store_known_away_is_tried_again_too() -> None:
    """A store that has just gone away may be back at once (it went away only for this
    application, frozen meanwhile): the second try covers that case as well."""
    core = _primary()
    core.handle(RouteRequested("c1", "5000"), 1.0)
    out = core.handle(SessionWritten("c1", WriteOutcome.UNPERSISTED), 1.0)
    assert _kinds(out) == [NotifySession, WriteSession]


def _calls_assigned_to(node: int, reserved: int) -> Iterator[str]:
    """Call IDs whose Assigned Node is ``node`` and Reserved Node ``reserved``."""
    for n in itertools.count():
        call_id = f"call-{n}"
        if tuple(assign(call_id, {1: "DC", 2: "DC"})) == (node, reserved):
            yield call_id


def test_session_news_heard_before_the_route_request_still_ends_the_watch() -> None:
    """Genesys: the Reserved Node creates the session only if the Assigned Node did not.
    The Assigned Node's ``session`` push may reach it before the T-Server's route request
    (another link, another pace): the watch the request starts must not run out on it."""
    core = _primary(other_node=True)
    call_id, other = itertools.islice(_calls_assigned_to(2, reserved=1), 2)
    assert not core.handle(SessionAnnounced(call_id), 1.0)
    assert not core.handle(RouteRequested(call_id, "5000"), 1.01)
    assert not _created(core, call_id, (1.2, 1.5, 2.0, 5.0))
    # Without the news the same watch runs out, and the Reserved Node creates the call.
    core.handle(RouteRequested(other, "5000"), 6.0)
    assert _created(core, other, (6.2, 6.5, 7.0))


def _created(core: NodeCore, call_id: str, times: tuple[float, ...]) -> bool:
    """Whether ``core`` creates ``call_id`` at one of its ticks at ``times``."""
    return any(
        isinstance(c, WriteSession) and c.session.call_id == call_id
        for t in times
        for c in core.tick(t)
    )


def _backup_taking_over_with_the_store_away() -> tuple[NodeCore, list[Command]]:
    """Application A, backup of B that announced call c1, takes the Node over (B's link is gone)
    while the store does not answer its recovery; the commands of the takeover."""
    core = NodeCore(core_settings(partner=True))
    core.start(0.0)
    core.handle(PeerLinkUp("B"), 0.0)
    core.handle(MemberAnnounced(MemberInfo("B", 1, "DC", "primary", 1)), 0.0)
    assert core.mode == "backup"
    core.handle(RouteRequested("c1", "5000", 100.0), 0.1)
    core.handle(SessionAnnounced("c1"), 0.1)
    out = core.handle(PeerLinkDown("B"), 1.0)
    out += core.handle(EpochClaimed(1, True, 1), 1.0)
    out += core.handle(FenceAnswered(1), 1.0)
    out += core.handle(SessionsLoaded(None, 1), 1.0)
    assert core.mode == "primary"
    return core, out


def _creates(commands: list[Command], call_id: str) -> bool:
    return any(
        isinstance(c, WriteSession) and c.create and c.session.call_id == call_id for c in commands
    )


def test_a_takeover_without_the_stores_answer_waits_to_create_announced_calls() -> None:
    """The partner announced c1 (its session written): taking the Node over while the
    store cannot give the sessions back, the new primary does not create c1 at once; the
    store answering a moment later gives it back, and it is recovered, not created again
    (found by `orsim search`, seed 71: 6 sessions created twice in one Node)."""
    core, out = _backup_taking_over_with_the_store_away()
    assert not _creates(out, "c1")
    stored = Session(call_id="c1", node_id=1, epoch=0, dn="5000", state="created")
    out = core.handle(SessionsLoaded((stored,), 1), 1.2)
    assert not _creates(out, "c1")
    assert core.sessions_recovered == 1 and "c1" in core.calls


def test_announced_calls_are_created_once_the_store_stayed_away_too_long() -> None:
    """The store still away ``RECLAIM_WAIT`` after the takeover: the announced call is
    created then, as before (routed unwritten rather than lost)."""
    core, _ = _backup_taking_over_with_the_store_away()
    assert core.next_deadline() <= 1.0 + RECLAIM_WAIT
    assert not _creates(core.tick(1.0 + RECLAIM_WAIT / 2), "c1")
    assert _creates(core.tick(1.0 + RECLAIM_WAIT), "c1")


def test_a_takeover_without_the_stores_answer_waits_to_create_watched_calls() -> None:
    """The same for a call the backup only watched (started after its partner's news of
    the session, it never heard it): not created at the takeover, recovered when the
    store answers (found by `orsim search`, seed 73: 3 sessions created twice)."""
    core = NodeCore(core_settings(partner=True))
    core.start(0.0)
    core.handle(PeerLinkUp("B"), 0.0)
    core.handle(MemberAnnounced(MemberInfo("B", 1, "DC", "primary", 1)), 0.0)
    core.handle(RouteRequested("c2", "5000", 100.0), 0.1)  # watched, no session news
    out = core.handle(PeerLinkDown("B"), 1.0)
    out += core.handle(EpochClaimed(1, True, 1), 1.0)
    out += core.handle(FenceAnswered(1), 1.0)
    out += core.handle(SessionsLoaded(None, 1), 1.0)
    assert core.mode == "primary"
    assert not _creates(out, "c2")
    stored = Session(call_id="c2", node_id=1, epoch=0, dn="5000", state="created")
    out = core.handle(SessionsLoaded((stored,), 1), 1.2)
    assert not _creates(out, "c2")
    assert core.sessions_recovered == 1 and "c2" in core.calls
