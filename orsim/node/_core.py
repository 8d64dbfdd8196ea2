"""The ORS node's decisions as one sans-IO object: events in, commands out.

Theory of operation
-------------------
``NodeCore`` is everything an ORS application *decides*, with no sockets, no clock and
no trio: h11's ``Connection`` is the model. Its driver (the trio runtime in
``_runtime.py``, the seeded simulation, or a hypothesis model) feeds it what happened,
``core.handle(event, now)``, and carries out the commands it returns, in order, feeding
each command's outcome back as another event. Time only enters as ``now``: the driver
calls ``core.tick(now)`` whenever ``core.next_deadline()`` has passed.

It owns the application's role in its Node (``RoleMachine``), the calls it watches
(``Watcher``), its view of its peers (``PeerView``), and one ``CallState`` per call it
knows of, from the routing-point event to the end of its session:

=============  ===========================================================  =============
phase          what is under way                                            next event
=============  ===========================================================  =============
``WRITING``    the session is being written (``WriteSession``)              SessionWritten
``SELECTING``  the URS is asked for a target (``SelectTarget``)             TargetSelected
``ROUTING``    the T-Server is asked to route (``SendRoute``)               RouteAnswered
=============  ===========================================================  =============

Calls that are only known (watched by the ``Watcher``, or *unowned*: not this Node's,
remembered in case their Assigned and Reserved Nodes both vanish) have no phase. A call
routed by anyone is *handled* and never created again (a bounded memory).

The cluster rules it applies are the runtime's of before, now in one place:

- a routing-point event: the ``Watcher`` decides to create, watch or ignore it;
- creating a call: write its session (the store's claim makes creation exactly-once),
  tell its watchers (``NotifySession``: the partner and the Reserved Node's primary),
  ask the URS, route, forget the session (``DeleteSession``); a refusal as stale fences
  this application (``Fenced``); a store that is away lets the call go on unpersisted;
- the role: the partner's link and announcements become role events; the role
  machine's actions become commands (``ClaimEpoch``, ``FenceTServer``, ``LoadSessions``);
- time: heartbeats (``Announce`` to the partner every beat, to everyone every
  ``OTHER_NODES_EVERY``; ``ReadEpoch`` while holding the Node), the start-up probe, the
  watch deadlines, the slow-store notice, the orphan round (adoption of a dead Node's
  sessions, creation of unowned calls), the switchover drain.
"""

from __future__ import annotations

import enum
import itertools
import math
from collections.abc import Iterable, Sequence
from typing import Final, TypeVar

import attrs

from orsim.node._assignment import assign, home_rivals, outweighed_by
from orsim.node._membership import MemberInfo, PeerView
from orsim.node._mutations import mutated
from orsim.node._role import (
    Action,
    ClaimEpoch,
    ClaimLost,
    ClaimWon,
    EpochObserved,
    Fence,
    Fenced,
    HandedOver,
    HandOver,
    PartnerAbsent,
    PartnerLost,
    PartnerSeen,
    RecoverSessions,
    Role,
    RoleMachine,
    StepDown,
    SwitchoverFailed,
    SwitchoverRequested,
    SwitchoverTimedOut,
)
from orsim.node._role import Event as RoleEvent
from orsim.node._settings import NodeSettings
from orsim.node._watch import Verdict, Watcher, WatchKind
from orsim.store import Session

__all__ = [
    "OTHER_NODES_EVERY",
    "AdoptOrphans",
    "Adopted",
    "Announce",
    "CallQueried",
    "CallRouted",
    "CallState",
    "CallsRouted",
    "ClaimEpochCmd",
    "Command",
    "DeleteSession",
    "EpochClaimed",
    "EpochRead",
    "Exit",
    "FenceAnswered",
    "FenceTServer",
    "HandoverReceived",
    "HandoverSendFailed",
    "LoadOrphans",
    "LoadSessions",
    "MemberAnnounced",
    "ModeChanged",
    "NodeCore",
    "Note",
    "NotifySession",
    "OrphansLoaded",
    "PeerLinkDown",
    "PeerLinkUp",
    "Phase",
    "PushHandover",
    "QueryCall",
    "ReadEpoch",
    "RouteAnswered",
    "RouteRequested",
    "RoutesRequested",
    "SelectTarget",
    "SendRoute",
    "SessionAnnounced",
    "SessionWritten",
    "SessionsLoaded",
    "StopAsked",
    "StoreBack",
    "SwitchoverAsked",
    "SwitchoverDone",
    "SwitchoverGaveUp",
    "TargetSelected",
    "WriteOutcome",
    "WriteSession",
    "call_of",
]

#: Heartbeats between two announcements to the applications of other Nodes, at most. The
#: partner hears every heartbeat (its role depends on it); the others' view of this
#: application changes only with its mode, which is announced at once, and ADDP keeps
#: idle links checked, so they only need a refresh.
OTHER_NODES_EVERY = 8
#: The announcements to other Nodes come within this share of the shortest ADDP timeout
#: of the links to them (``announce_every``).
ADDP_SHARE = 0.875


def announce_every(settings: NodeSettings) -> int:
    """Heartbeats between two announcements to the applications of other Nodes.

    ``OTHER_NODES_EVERY``, or fewer, so that a link to another Node never goes silent
    for its ADDP timeout: 7 beats of 0.25 s with the default 2 s. Every 2 s exactly, the
    announcement raced each link's ADDP poll, and most links polled both ways as well
    (at 16 Nodes, 30 % of an idle ORS's frames); an announcement is one frame, a poll
    two.
    """
    timeouts = [
        p.addp_timeout for p in settings.peers if p.name != settings.partner and p.addp_timeout > 0
    ]
    if not timeouts or settings.heartbeat <= 0:
        return OTHER_NODES_EVERY
    beats = int(ADDP_SHARE * min(timeouts) / settings.heartbeat)
    return max(1, min(OTHER_NODES_EVERY, beats))


#: How many recently routed call ids a node remembers (to skip already-served calls).
ROUTED_MEMORY = 100_000
#: ``session`` news kept for route requests still to come (``NodeCore._early_news``).
EARLY_NEWS_MEMORY = 10_000

V = TypeVar("V")
#: Longest a graceful switchover waits for the primary's sessions to finish (s).
SWITCHOVER_DRAIN = 3.0
#: Longest a suspending primary waits for its partner to take over after the handover (s).
HANDOVER_WAIT = 10.0
#: Longest a graceful stop waits for the sessions of a primary without a backup (s).
STOP_DRAIN = 10.0
#: The modes of an application that holds its Node.
_HOLDING_MODES = frozenset({"primary", "suspending"})
#: How long a Node must have nobody acting for it (both applications unreachable, or
#: every reachable one ``headless``) before live Nodes adopt its stored sessions (s; at
#: least the call-watching-timeout).
ORPHAN_GRACE = 2.0


# ----------------------------------------------------------------------- events in


@attrs.frozen
class RouteRequested:
    """The T-Server's ``route_request`` for a new call; ``expires``: when it is lost
    anyway (in the driver's clock), if known."""

    call_id: str
    dn: str = ""
    expires: float | None = None
    #: told again to an application that (re)registered while the call waited: someone
    #: else may be carrying it on already
    redelivered: bool = False


@attrs.frozen
class RoutesRequested:
    """The T-Server's ``route_request`` for several calls, in the order they came, a
    column per field: the same as a ``RouteRequested`` for each in turn
    (``requests``), but a call this application has no part in costs only its check.

    Every ORS hears every call (32 applications at 16 Nodes) and has a part in few: the
    T-Server's batches come as one event each, not an object per call.
    """

    call_ids: tuple[str, ...]
    dns: tuple[str, ...]
    expires: tuple[float | None, ...]
    redelivered: tuple[bool, ...]

    @classmethod
    def of(cls, requests: Iterable[RouteRequested]) -> RoutesRequested:
        """The batch of ``requests``, in their order."""
        rows = [(r.call_id, r.dn, r.expires, r.redelivered) for r in requests]
        if not rows:
            return cls((), (), (), ())
        call_ids, dns, expires, redelivered = zip(*rows, strict=True)
        return cls(call_ids, dns, expires, redelivered)

    def requests(self) -> list[RouteRequested]:
        """The batch as one ``RouteRequested`` per call, in order."""
        columns = zip(self.call_ids, self.dns, self.expires, self.redelivered, strict=True)
        return [RouteRequested(*row) for row in columns]


@attrs.frozen
class CallRouted:
    """The T-Server's ``call_routed``: someone routed the call."""

    call_id: str


@attrs.frozen
class CallsRouted:
    """The T-Server's ``call_routed`` for several calls: a ``CallRouted`` each, in order."""

    call_ids: tuple[str, ...]


@attrs.frozen
class SessionAnnounced:
    """A peer's ``session`` push: it created the call's session (``pending``: it is
    creating it, and its store is slow to answer; ``claimed``: the store took its
    creation; ``node_id``: its Node, if it said)."""

    call_id: str
    pending: bool = False
    claimed: bool = False
    node_id: int | None = None


@attrs.frozen
class PeerLinkUp:
    app: str


@attrs.frozen
class PeerLinkDown:
    app: str


@attrs.frozen
class MemberAnnounced:
    """A peer's ``member`` push."""

    info: MemberInfo


class WriteOutcome(enum.Enum):
    OWNED = "owned"  # written: the call is this Node's
    ELSEWHERE = "elsewhere"  # another Node owns the call
    #: The store is away (or did not answer in time: it may hold the write all the same,
    #: or another Node's session for the call): the call goes on unwritten.
    UNPERSISTED = "unpersisted"
    STALE = "stale"  # refused: this application's epoch is stale


@attrs.frozen
class SessionWritten:
    """Outcome of ``WriteSession``."""

    call_id: str
    outcome: WriteOutcome


@attrs.frozen
class CallQueried:
    """Outcome of ``QueryCall``: the call's state at the T-Server (``in_flight``,
    ``routed``, ``lost`` or ``unknown``)."""

    call_id: str
    state: str


@attrs.frozen
class TargetSelected:
    call_id: str
    target: str


@attrs.frozen
class RouteAnswered:
    """Outcome of ``SendRoute``: ``routed``, or the T-Server's refusal code."""

    call_id: str
    outcome: str


@attrs.frozen
class SessionsLoaded:
    """Outcome of ``LoadSessions(epoch)``; None when the store did not answer."""

    sessions: tuple[Session, ...] | None
    #: The epoch the sessions were read for (``LoadSessions.epoch``).
    epoch: int


@attrs.frozen
class EpochClaimed:
    """Outcome of ``ClaimEpochCmd(_, new)``: won, or lost with the arbiter's current epoch."""

    new: int
    won: bool
    current: int


@attrs.frozen
class EpochRead:
    """Outcome of ``ReadEpoch``: the Node's epoch in the store."""

    epoch: int


@attrs.frozen
class FenceAnswered:
    """Outcome of ``FenceTServer(epoch)``; ``refused``: another application holds it (an
    unreachable T-Server is not a refusal: it learns the epoch when it is back)."""

    epoch: int
    refused: bool = False


@attrs.frozen
class OrphansLoaded:
    """Outcome of ``LoadOrphans``: the stored sessions of a dead Node."""

    node_id: int
    sessions: tuple[Session, ...]


@attrs.frozen
class Adopted:
    """Outcome of ``AdoptOrphans``: the sessions now this Node's (moved in the store)."""

    node_id: int
    sessions: tuple[Session, ...]


@attrs.frozen
class SwitchoverAsked:
    """A ``switchover`` request (from the launcher or a user)."""


@attrs.frozen
class SwitchoverGaveUp:
    """The requester stopped waiting for the switchover."""


@attrs.frozen
class HandoverReceived:
    """The partner's ``handover`` push: it asks this application to take over."""


@attrs.frozen
class HandoverSendFailed:
    """``PushHandover`` could not reach the partner."""


@attrs.frozen
class StopAsked:
    """SIGTERM (``orsim cluster stop``): stop gracefully; asked again: stop at once."""


@attrs.frozen
class StoreBack:
    """The store answers again after an outage; ``epoch``: the Node's epoch there."""

    epoch: int


@attrs.frozen
class LateClaimed:
    """The store's answer to a ``ClaimLate``."""

    call_id: str
    outcome: WriteOutcome


InEvent = (
    RouteRequested
    | RoutesRequested
    | CallRouted
    | CallsRouted
    | SessionAnnounced
    | PeerLinkUp
    | PeerLinkDown
    | MemberAnnounced
    | SessionWritten
    | TargetSelected
    | CallQueried
    | RouteAnswered
    | SessionsLoaded
    | EpochClaimed
    | EpochRead
    | FenceAnswered
    | OrphansLoaded
    | Adopted
    | SwitchoverAsked
    | SwitchoverGaveUp
    | HandoverReceived
    | HandoverSendFailed
    | StopAsked
    | StoreBack
    | LateClaimed
)


# ---------------------------------------------------------------------- commands out


@attrs.frozen
class WriteSession:
    """Write the session (create: claim the call; else replace), feed ``SessionWritten``."""

    session: Session
    create: bool
    #: Before writing to a store known to be away, wait for it to answer again, until
    #: this long (s) after its outage began (the second try of a creation that the store
    #: did not take: ``RECLAIMING``).
    wait_for_store: float = 0.0


@attrs.frozen
class QueryCall:
    """Ask the T-Server where a recovered call stands (TQueryCall), feed ``CallQueried``."""

    call_id: str


@attrs.frozen
class SelectTarget:
    """Ask the URS for a target (retry until it answers), feed ``TargetSelected``."""

    call_id: str
    dn: str


@attrs.frozen
class SendRoute:
    """Ask the T-Server to route (retry across link loss), feed ``RouteAnswered``."""

    call_id: str
    target: str
    epoch: int


@attrs.frozen
class ClaimLate:
    """Create the session of a call that went on without the store, now that the store
    answers again (feed ``LateClaimed``); not a step of the call, which goes on meanwhile,
    unless it waits for this answer (``Phase.AWAITING_STORE``)."""

    session: Session


@attrs.frozen
class DeleteSession:
    """Forget the session (kept for later if the store is away); nothing to feed."""

    node_id: int
    epoch: int
    call_id: str


@attrs.frozen
class NotifySession:
    """Send a ``session`` push for the call to these peer applications (no waiting);
    ``pending``: its write is under way but slow (``session {pending: true}``);
    ``claimed``: the store took the creation (``session {claimed: true}``)."""

    call_id: str
    apps: tuple[str, ...]
    pending: bool = False
    claimed: bool = False


@attrs.frozen
class Announce:
    """Send this application's ``member`` info to these peer applications."""

    apps: tuple[str, ...]
    info: MemberInfo


@attrs.frozen
class ClaimEpochCmd:
    """Raise the Node's epoch (store, else T-Server), feed ``EpochClaimed``."""

    expected: int
    new: int


@attrs.frozen
class FenceTServer:
    """Tell the T-Server this application holds ``epoch``; feed ``FenceAnswered``."""

    epoch: int


@attrs.frozen
class LoadSessions:
    """Read the Node's stored sessions for the takeover at ``epoch``, feed
    ``SessionsLoaded(sessions, epoch)``: an answer for an earlier epoch is told apart."""

    epoch: int


@attrs.frozen
class ReadEpoch:
    """Read the Node's epoch in the store, feed ``EpochRead`` (nothing if away)."""


@attrs.frozen
class LoadOrphans:
    """Read a dead Node's stored sessions, feed ``OrphansLoaded`` (nothing if away)."""

    node_id: int


@attrs.frozen
class AdoptOrphans:
    """Fence the dead Node (store and T-Server), move each session to this Node, feed
    ``Adopted`` with those moved (nothing moved if another adopter fenced it first)."""

    node_id: int
    sessions: tuple[Session, ...]
    #: The epoch this application holds its Node at as the round begins: each session
    #: is moved at it, never at one learned meanwhile, so the store refuses the move once
    #: the Node has a newer holder (whose recovery, read after its claim, finds every
    #: session moved before it).
    epoch: int


@attrs.frozen
class PushHandover:
    """Send the partner the ``handover`` push; feed ``HandoverSendFailed`` on failure."""

    epoch: int


@attrs.frozen
class SwitchoverDone:
    """Answer every pending ``switchover`` request: ``reason`` None means done."""

    reason: str | None


@attrs.frozen
class Exit:
    """The graceful stop is over (or was asked twice): the process exits now, status 0."""

    reason: str


@attrs.frozen
class ModeChanged:
    """The role changed (for logs and ``mode_since``)."""

    old: Role
    new: Role
    epoch: int
    reason: str


@attrs.frozen
class Note:
    """Something worth a log line."""

    event: str
    fields: tuple[tuple[str, object], ...] = ()


Command = (
    WriteSession
    | QueryCall
    | SelectTarget
    | SendRoute
    | DeleteSession
    | ClaimLate
    | NotifySession
    | Announce
    | ClaimEpochCmd
    | FenceTServer
    | LoadSessions
    | ReadEpoch
    | LoadOrphans
    | AdoptOrphans
    | PushHandover
    | SwitchoverDone
    | Exit
    | ModeChanged
    | Note
)

#: Commands that belong to one call and carry it on (a driver may run them in the
#: call's own task, one after the other).
CALL_COMMANDS = (QueryCall, WriteSession, SelectTarget, SendRoute)


# ---------------------------------------------------------------------- calls


#: How long (s) after a store outage begins a creation it kept from the store waits
#: for the store to answer again before its second try: a few of the guard's probes
#: (0.2 s apart). Past that the store counts as away, and calls go on unwritten at once.
RECLAIM_WAIT: Final = 0.5


class Phase(enum.Enum):
    CHECKING = "checking"
    WRITING = "writing"
    #: Creating again, once the store answers, after a write it did not answer.
    RECLAIMING = "reclaiming"
    #: A redelivered call the store did not answer twice: claimed once the store
    #: answers again (``ClaimLate``), and routed if the store says it is this Node's.
    AWAITING_STORE = "awaiting-store"
    SELECTING = "selecting"
    ROUTING = "routing"


#: A call in these phases has not sent its route: it may still be left to another Node.
_UNSENT: Final = frozenset({Phase.CHECKING, Phase.SELECTING, Phase.AWAITING_STORE})


@attrs.define
class CallState:
    """One call this application is creating (or carrying on from the store)."""

    call_id: str
    dn: str
    epoch: int
    phase: Phase
    target: str = ""
    created_at: float = 0.0
    recovered: bool = False
    #: The Reserved Node assigned when the call's event arrived (None: compute later).
    reserved: int | None = None
    #: When the session write began, while the watchers have not been told yet.
    writing_since: float | None = None
    #: Known from a redelivered route request (see ``RouteRequested.redelivered``).
    redelivered: bool = False
    #: Its session was written at the second try (``RECLAIMING``): deleted if it turns
    #: out routed already.
    written: bool = False
    #: The store took its creation (``WriteOutcome.OWNED``): its watchers are told so.
    claimed: bool = False


@attrs.define
class _Unowned:
    dn: str
    arrived: float
    expires: float
    #: Live Nodes under which the call is known not to be this Node's (None: unknown).
    #: While they stay the same, so does that: the orphan round need not weigh it again.
    elsewhere_under: dict[int, str] | None = None


class _Reading(enum.Enum):
    """A read that has not answered yet (``NodeCore._early_load``)."""

    READING = "reading"


_READING = _Reading.READING


# ---------------------------------------------------------------------- the core


@attrs.define(eq=False)
class NodeCore:
    """One ORS application's decisions. Feed it events; carry out what it returns."""

    settings: NodeSettings
    #: The Node's epoch as read from the store at start-up.
    epoch: int = 0
    #: The driver's clock at start-up.
    started: float = 0.0
    #: Wall-clock seconds now, for sessions' ``created_at`` (the driver sets it).
    wall: float = 0.0
    #: ``wall`` when the role machine last changed ``mode`` (None: not since start-up).
    mode_since: float | None = None
    #: Longest a store operation may take before the driver gives up on it (s).
    store_deadline: float = 1.0
    peers: PeerView = attrs.field(init=False)
    role: RoleMachine = attrs.field(init=False)
    watcher: Watcher = attrs.field(init=False)
    calls: dict[str, CallState] = attrs.Factory(dict)
    calls_routed: int = 0
    sessions_recovered: int = 0
    sessions_adopted: int = 0
    _handled: dict[str, None] = attrs.Factory(dict)
    _watched_dns: dict[str, str] = attrs.Factory(dict)
    _unowned: dict[str, _Unowned] = attrs.Factory(dict)
    #: Calls of this Node that the partner announced (``session``) and nobody has routed
    #: yet: call id -> (dn, expiry). Its session may never have reached the store (a
    #: slow store, then a crash): a takeover creates those not recovered from it.
    _announced: dict[str, tuple[str, float]] = attrs.Factory(dict)
    #: Sessions of recovered calls waiting for the T-Server's word (``QueryCall``).
    _recovered_sessions: dict[str, Session] = attrs.Factory(dict)
    #: ``session`` news of calls whose route request has not arrived yet (the peer's
    #: link was quicker than the T-Server's): call id -> the news, taken with the request.
    _early_news: dict[str, SessionAnnounced] = attrs.Factory(dict)
    #: The live Nodes the last route request was decided under (``_Unowned``).
    _arrival_live: dict[int, str] = attrs.Factory(dict)
    _beat: int = 0
    _next_beat: float = 0.0
    #: Heartbeats between two announcements to other Nodes (``announce_every``).
    _announce_every: int = attrs.field(init=False)
    _next_orphan_round: float = 0.0
    _gone_since: dict[int, float] = attrs.Factory(dict)
    #: Dead Nodes whose orphan round is under way: node id -> the calls its
    #: ``AdoptOrphans`` is moving to this Node (none while their sessions are loaded).
    _adopting: dict[int, frozenset[str]] = attrs.Factory(dict)
    _probe_until: float | None = None
    #: Until then (after stepping down for a newer holder, its partner), the partner's
    #: link going down is not yet the partner's loss: see ``_role_changed``.
    _stepped_down_until: float | None = None
    #: Since when the partner has been live through a link made after that step-down
    #: (None: no such link, or the partner was lost since).
    _relinked_at: float | None = None
    #: ``headless`` as last announced to every peer (a starting application is, and
    #: says so as each link is made).
    _told_headless: bool = True
    _recovery_pending: bool = False
    #: Taking the Node over while the store could not give the sessions back: when the
    #: partner's announced calls are created anyway (``_take_announced``).
    _announced_until: float | None = None
    #: Calls this application was to create while its takeover's recovery waited for
    #: the store, or while its adoption round moved them (their dn, Reserved Node,
    #: redelivered, expiry): created once the recovery (``_take_announced``) or the
    #: adoption (``_adopted``) answers, unless it gave them back.
    _held_creations: dict[str, tuple[str, int | None, bool, float]] = attrs.Factory(dict)
    _switchovers: int = 0
    #: The role machine's actions still to carry out, one at a time (claim, then fence,
    #: then recovery); role events that arrive meanwhile wait in ``_deferred``, and the
    #: role change takes effect (watches promoted, announcement) once the chain is done.
    _chain: list[Action] = attrs.Factory(list)
    _chain_step: tuple[str, int] | None = None
    _chain_before: Role | None = None
    _chain_reason: str = ""
    #: A takeover's sessions, read while the T-Server confirms its fence: the epoch they
    #: are read for, and what the store gave (``_READING`` until it has).
    _early_load: tuple[int, tuple[Session, ...] | _Reading | None] | None = None
    _deferred: list[RoleEvent] = attrs.Factory(list)
    _drain_until: float | None = None
    #: A graceful stop is under way (mode ``suspending``), since when.
    _stopping: float | None = None
    #: The earliest deadline made since the driver last asked (``take_deadline_hint``):
    #: lets it wake its clock early without the full scan of ``next_deadline`` per event.
    _hint: float = math.inf
    #: The smallest call-watching-timeout this application has had (ms): see
    #: ``_slow_store_patience``.
    _cwt_floor: float = math.inf
    #: A primary stopping alone (no partner to hand over to) drains until then.
    _stop_until: float | None = None
    _handover_until: float | None = None
    #: The highest epoch the partner has claimed above this application's, already put
    #: to the arbiters (``_check_claim``) since the last role change; 0: none.
    _claim_checked: int = 0
    #: The partner claimed a newer epoch while this application held the Node: its news
    #: waits for the arbiters' word (a step-down), then counts (``_role_changed``).
    _claim_deferred: bool = False

    def __attrs_post_init__(self) -> None:
        s = self.settings
        self.peers = PeerView(
            nodes=dict(s.nodes) or {s.node_id: s.data_center},
            app_nodes={p.name: p.node_id for p in s.peers},
        )
        self.role = RoleMachine(configured_primary=not s.configured_backup, epoch=self.epoch)
        self.watcher = Watcher(s.node_id, s.call_watching_timeout_ms)
        self._cwt_floor = s.call_watching_timeout_ms
        self._next_beat = self.started + s.heartbeat
        self._announce_every = announce_every(s)
        self._next_orphan_round = self.started + self._orphan_period

    # -- what the driver reads -----------------------------------------------------

    @property
    def mode(self) -> str:
        """``suspending`` for a primary that is stopping, or that has handed its Node
        over and waits to hear of its partner's takeover: it acts for the Node no more.
        A switchover's primary reported ``primary`` until then, beside its partner,
        primary already, as long as the news took to come back (found by `orsim
        search`, seed 103: two primaries of a Node in consecutive samples under a
        250 ms delay between the two). A draining primary is still ``primary``."""
        role = self.role.role
        if role.holds_node and (self._stopping is not None or self._handover_until is not None):
            return "suspending"
        return role.mode

    @property
    def awaiting_fence(self) -> bool:
        """Whether a takeover waits for the T-Server to confirm its fence. Until then it
        does not act for the Node, and another application may hold the same epoch there
        (won at the T-Server while the store was away for it)."""
        step = self._chain_step
        return self._taking_over and step is not None and step[0] == "fence"

    def _recovering(self, now: float) -> bool:
        """Whether the Node's stored sessions may still come back to this application: a
        takeover under way, or its recovery deferred and still waited for (until
        ``_announced_until``, ``RECLAIM_WAIT`` after it was deferred)."""
        until = self._announced_until
        return self._taking_over or (self._recovery_pending and until is not None and now < until)

    @property
    def _taking_over(self) -> bool:
        """Whether a takeover's claim is won and its fence or recovery still under way:
        primary for its role machine, not yet for its watcher, and the Node's stored
        sessions not known here yet."""
        before = self._chain_before
        return before is not None and not before.holds_node and self.role.role is Role.PRIMARY

    @property
    def status_mode(self) -> str:
        """``mode`` as ``status`` reports it: ``backup`` while ``awaiting_fence``.
        Reported ``primary``, the two showed primary at one epoch for as long as this one
        had no T-Server link."""
        return Role.CLAIMING.mode if self.awaiting_fence else self.mode

    @property
    def current_epoch(self) -> int:
        return self.role.epoch

    @property
    def sessions(self) -> int:
        """Calls being created or carried on now."""
        return len(self.calls)

    @property
    def switchover_pending(self) -> bool:
        return self._switchovers > 0

    def member_info(self) -> MemberInfo:
        s = self.settings
        return MemberInfo(
            s.app, s.node_id, s.data_center, self.mode, self.current_epoch, self._headless()
        )

    def _headless(self) -> bool:
        """Whether nobody acts for this Node as far as this application sees: it does not
        hold it, and its partner is not live and holding it (``MemberInfo.headless``)."""
        if self.role.role.holds_node:
            return False
        partner = self.settings.partner
        if partner is None or not self.peers.is_live(partner):
            return True
        info = self.peers.info.get(partner)
        return info is None or info.mode not in _HOLDING_MODES

    def live_nodes(self) -> dict[int, str]:
        return self.peers.live_nodes(self.settings.node_id)

    @property
    def _orphan_period(self) -> float:
        return max(self.settings.heartbeat * 4, 0.5)

    def set_call_watching_timeout(self, ms: float) -> None:
        """A new call-watching-timeout for calls that arrive from now on."""
        self.watcher.timeout_ms = ms
        self._cwt_floor = min(self._cwt_floor, ms)
        self._hint = -math.inf  # the slow-store patience moved: look again

    # -- starting ------------------------------------------------------------------

    def start(self, now: float) -> list[Command]:
        """The application is up and linked: begin (the start-up probe, or no partner)."""
        self.started = now
        self._next_beat = now + self.settings.heartbeat
        self._next_orphan_round = now + self._orphan_period
        partner = self.settings.partner_peer
        if partner is None:
            return self._role_event(PartnerLost(), now)
        self._probe_until = self._deadline(now + self._probe_window)
        return []

    @property
    def _probe_window(self) -> float:
        """How long to wait for the partner's word before acting without it."""
        return probe_window(self.settings.heartbeat, self.settings.configured_backup)

    # -- events --------------------------------------------------------------------

    def handle(self, event: InEvent, now: float) -> list[Command]:
        """Take one event; return the commands to carry out, in order."""
        match event:
            case RouteRequested():
                return self._route_requested(event, now)
            case RoutesRequested():
                return self._routes_requested(event, now)
            case CallRouted(call_id=call_id):
                self._mark_handled(call_id)
                return []
            case CallsRouted(call_ids=call_ids):
                for call_id in call_ids:
                    self._mark_handled(call_id)
                return []
            case SessionAnnounced(call_id=call_id) if self._is_early(call_id):
                # Heard before the T-Server's route request (another link, another pace):
                # kept for it, or the watch it starts would run out on a created call.
                _remember(self._early_news, call_id, event, EARLY_NEWS_MEMORY)
                return []
            case SessionAnnounced(call_id=call_id, pending=True):
                # Its creator's store is slow: keep watching, for long enough that the
                # creator either writes the session (its push ends the watch), or gives
                # up on the store and goes on without it (likewise), before the watch
                # fires; if the creator dies or is fenced meanwhile, the watch still fires.
                self.watcher.extend(
                    call_id, now + self.store_deadline + self.watcher.timeout_ms / 1000
                )
                return []
            case SessionAnnounced(call_id=call_id, claimed=True) if self._leaves_to_claim(event):
                del self.calls[call_id]
                # (``by_node``: ``node_id`` is this application's own in its log lines.)
                return [Note("call_left_to_store_claim", (("call_id", call_id),
                                                          ("by_node", event.node_id)))]  # fmt: skip
            case SessionAnnounced(call_id=call_id):
                # Someone created the session: stop watching, but keep the call
                # recoverable (its creator may die before routing it).
                watch = self.watcher.watches.get(call_id)
                if watch is not None and watch.kind is WatchKind.ASSIGNED:
                    self._remember_announced(call_id, watch.expires)
                elif watch is not None and call_id not in self._unowned:
                    # The Reserved Node stops watching, but remembers the call as not
                    # its own: should its whole Assigned Node vanish before routing it,
                    # the unowned rule makes the call this Node's.
                    expires = math.inf if watch.expires is None else watch.expires
                    self._unowned[call_id] = _Unowned(
                        self._watched_dns.pop(call_id, ""), now, expires
                    )
                self.watcher.on_session_created(call_id)
                return []
            case PeerLinkUp(app=app):
                self.peers.link_up(app)
                if (
                    self._stepped_down_until is not None
                    and app == self.settings.partner
                    and self._relinked_at is None
                ):
                    self._relinked_at = now
                return self._partner_news(app, now)
            case PeerLinkDown(app=app):
                self.peers.link_down(app)
                self._note_gone(app, now)
                return self._partner_news(app, now)
            case MemberAnnounced(info=info):
                self.peers.announce(info)
                return self._partner_news(info.app, now)
            case SessionWritten():
                return self._written(event, now)
            case CallQueried():
                return self._queried(event, now)
            case TargetSelected(call_id=call_id, target=target):
                call = self.calls.get(call_id)
                if call is None:
                    return []
                if call_id in self._handled:
                    # Routed by another Node while URS chose (both went on without the
                    # store): the T-Server said so, and a route now is refused.
                    del self.calls[call_id]
                    return [
                        Note("call_routed_elsewhere", (("call_id", call_id),)),
                        DeleteSession(self.settings.node_id, call.epoch, call_id),
                    ]
                call.target, call.phase = target, Phase.ROUTING
                return [SendRoute(call_id, target, call.epoch)]
            case RouteAnswered():
                return self._route_answered(event, now)
            case SessionsLoaded(sessions=sessions, epoch=epoch):
                if self._early_load == (epoch, _READING):
                    self._early_load = (epoch, sessions)  # for the fence's answer
                    return []
                if epoch != self.current_epoch:
                    return []  # read for an earlier takeover: this one reads its own
                loaded = self._sessions_loaded(sessions, now)
                if self._chain_step == ("recover", epoch):
                    loaded += self._chain_next([], now)
                return loaded
            case EpochClaimed(new=new, won=won, current=current):
                if self._chain_step != ("claim", new):
                    return []  # not the answer the role machine waits for
                result: RoleEvent = ClaimWon(new) if won else ClaimLost(current)
                return self._chain_next(self._role_handle(result), now)
            case EpochRead(epoch=epoch):
                role = self.role.role
                if epoch > self.current_epoch and (role.holds_node or role is Role.BACKUP):
                    # Above ours: a holder is fenced by it; a backup takes it (claims
                    # start from the store's epoch, not from what a peer said).
                    return self._role_event(EpochObserved(epoch), now)
                return []
            case FenceAnswered(epoch=epoch, refused=refused):
                out: list[Command] = []
                if self._chain_step == ("fence", epoch) and not refused:
                    out += self._chain_next([], now)
                if refused and self.role.role.holds_node and self.current_epoch == epoch:
                    # Mid-takeover, this ends it (``_fenced_mid_takeover``).
                    out += self._role_event(Fenced(epoch), now)
                return out
            case OrphansLoaded(node_id=node_id, sessions=sessions):
                return self._orphans_loaded(node_id, sessions)
            case Adopted(node_id=node_id, sessions=sessions):
                return self._adopted(node_id, sessions, now)
            case SwitchoverAsked():
                if self.settings.partner is None:
                    return [SwitchoverDone(f"{self.settings.app} has no partner to switch to")]
                self._switchovers += 1
                return self._role_event(SwitchoverRequested(), now)
            case SwitchoverGaveUp():
                self._switchovers = 0
                self._drain_until = self._handover_until = None
                return self._role_event(SwitchoverTimedOut(), now)
            case HandoverReceived():
                return self._role_event(HandedOver(), now)
            case HandoverSendFailed():
                self._handover_until = None
                return self._role_event(SwitchoverTimedOut(), now)
            case StoreBack(epoch=epoch):
                return self._store_back(epoch, now)
            case LateClaimed():
                return self._late_claimed(event)
            case StopAsked():
                return self._stop(now)
        raise TypeError(f"NodeCore cannot handle {event!r}")

    # -- time ------------------------------------------------------------------------

    def take_deadline_hint(self) -> float:
        """A lower bound of every deadline made since the last call (then reset): a driver
        whose clock is set for later must wake it now if this is earlier. Cheap, unlike
        ``next_deadline``, which a driver calls once per wake-up."""
        hint, self._hint = self._hint, math.inf
        return hint

    def _deadline(self, when: float) -> float:
        self._hint = min(self._hint, when)
        return when

    def next_deadline(self) -> float:
        """When ``tick`` has something to do next (``math.inf``: only events will)."""
        times = [self._next_beat, self._next_orphan_round]
        watch = self.watcher.next_deadline()
        if watch is not None:
            times.append(watch)
        if self._probe_until is not None:
            times.append(self._probe_until)
        if self._drain_until is not None:
            times.append(self._drain_until)
        if self._handover_until is not None:
            times.append(self._handover_until)
        if self._stop_until is not None:
            times.append(self._stop_until)
        if self._announced_until is not None:
            times.append(self._announced_until)
        patience = self._slow_store_patience
        times.extend(
            c.writing_since + patience for c in self.calls.values() if c.writing_since is not None
        )
        return min(times, default=math.inf)

    def tick(self, now: float) -> list[Command]:
        """Do what is due at ``now``."""
        out: list[Command] = []
        if self._probe_until is not None and now >= self._probe_until:
            self._probe_until = None
            if self.role.role is Role.STARTING:
                out += self._role_event(PartnerLost(), now)
            elif self.role.role is Role.BACKUP and self.settings.partner is None:
                out += self._role_event(PartnerAbsent(), now)
            elif self._stepped_down_until is not None:
                self._stepped_down_until = None
                partner = self.settings.partner
                if self.role.role is Role.BACKUP and partner and not self.peers.is_live(partner):
                    # Unreachable at the probe's end: lost, whatever the machine last
                    # heard. Lost if it has the partner up: seen again within the window
                    # (its heartbeats, or a restarted partner that came and went again),
                    # the link-downs since kept from it for now; else absent, which is
                    # taken even after an earlier loss. Told "absent" either way, a
                    # backup whose restarted partner died again within the window never
                    # claimed (found by `orsim search`, seed 127: no primary for 7 s).
                    lost = PartnerLost() if self.role.partner_up else PartnerAbsent()
                    out += self._role_event(lost, now)
        if now >= self._next_beat:
            out += self._heartbeat(now)
        for call_id in self.watcher.due(now):
            if call_id in self._handled or call_id in self.calls:
                continue
            out.append(Note("watched_call_created", (("call_id", call_id),)))
            out += self._start_call(call_id, self._watched_dns.pop(call_id, ""), now)
        patience = self._slow_store_patience
        for call in self.calls.values():
            # The very sum next_deadline() gives: ``now - since >= patience`` can be False
            # at that instant in floating point, and the driver would wake for it forever.
            if call.writing_since is not None and now >= call.writing_since + patience:
                call.writing_since = None
                out.append(self._notify(call, pending=True))
        if now >= self._next_orphan_round:
            self._next_orphan_round = now + self._orphan_period
            out += self._orphan_round(now)
        if self._drain_until is not None and (not self.calls or now >= self._drain_until):
            out += self._send_handover(now)
        if self._handover_until is not None and now >= self._handover_until:
            self._handover_until = None
            if self.role.role is Role.SUSPENDING:
                out += self._role_event(SwitchoverTimedOut(), now)
        if self._stop_until is not None and (not self.calls or now >= self._stop_until):
            self._stop_until = None
            out.append(Exit("sessions drained" if not self.calls else "drain timed out"))
        if self._announced_until is not None and now >= self._announced_until:
            out += self._take_announced(now, waited=True)
        return out

    # -- graceful stop -------------------------------------------------------------

    def _stop(self, now: float) -> list[Command]:
        """SIGTERM (ors-domain.md section 4): a primary goes ``suspending``: it creates no
        new session (its backup watches, the Reserved Node creates them), lets its running
        sessions finish, hands the Node to its backup if it has one, then exits; anything
        else exits at once, and so does a second stop."""
        if self._stopping is not None:
            return [Exit("stopped again")]
        self._stopping = now
        role = self.role.role
        if not role.holds_node:
            return [Exit(f"{role.mode}: nothing to hand over")]
        out: list[Command] = [Note("stop_requested", (("sessions", len(self.calls)),))]
        partner = self.settings.partner
        if role is Role.PRIMARY and partner is not None and self.peers.is_live(partner):
            out += self._role_event(SwitchoverRequested(), now)  # drain, then hand over
            if self.role.role is Role.SUSPENDING:
                out.append(self._announce())
                return out
        return out + self._stop_alone(now)

    def _stop_alone(self, now: float) -> list[Command]:
        """No partner to hand over to: create nothing more, drain, exit."""
        self.watcher.set_role(Role.SUSPENDING, now)
        self._stop_until = self._deadline(now + STOP_DRAIN)
        out: list[Command] = [self._announce()]
        if not self.calls:
            self._stop_until = None
            out.append(Exit("no sessions to drain"))
        return out

    @property
    def _slow_store_patience(self) -> float:
        """How long a session write may take before its watchers are told it is under
        way: half the call-watching-timeout, the smallest this application has had, as
        peers that watch the call may still count with an older, shorter one (found by
        `orsim search`: after a raise to 1000 ms the notice reached a watcher that counted
        500 ms just as it gave up, and both created the call)."""
        return self._cwt_floor / 2000.0

    def _heartbeat(self, now: float) -> list[Command]:
        s = self.settings
        self._beat += 1
        self._next_beat = now + s.heartbeat
        everyone = self._beat % self._announce_every == 0
        out: list[Command] = [self._announce(everyone)]
        if self.role.role.holds_node:
            out.append(ReadEpoch())
        return out

    def _announce(self, everyone: bool = True) -> Announce:
        partner = self.settings.partner
        info = self.member_info()
        # A change of ``headless`` is news for every Node (their orphan rounds weigh it).
        if not everyone and partner and info.headless == self._told_headless:
            apps: tuple[str, ...] = (partner,)
        else:
            apps = tuple(self.peers.app_nodes)
            self._told_headless = info.headless
        return Announce(apps, info)

    # -- calls -----------------------------------------------------------------------

    def _route_requested(self, event: RouteRequested, now: float) -> list[Command]:
        call_id = event.call_id
        if call_id in self._handled or call_id in self.calls:
            return []
        live = self._arrival_nodes()
        decision = self.watcher.on_route_request(call_id, now, live, expires=event.expires)
        assignment = decision.assignment
        elsewhere = (
            live if assignment is None or assignment.assigned != self.settings.node_id else None
        )
        if decision.verdict is Verdict.CREATE:
            reserved = decision.reserved
            if self._recovery_pending and self.role.role.holds_node:
                if self._announced_until is None:
                    self._announced_until = self._deadline(now + RECLAIM_WAIT)
                return self._hold_creation(
                    call_id, event.dn, reserved, event.redelivered, event.expires, "recovery"
                )
            return self._start_call(
                call_id,
                event.dn,
                now,
                reserved=reserved,
                redelivered=event.redelivered,
                expires=event.expires,
            )
        if decision.verdict is not Verdict.WATCH:
            # Not this application's call now: remembered until someone creates its
            # session, in case both its Assigned and its Reserved Node die first.
            self._remember_unowned(call_id, event.dn, event.expires, now, elsewhere)
            return self._early_news_of(call_id, now)
        self._watched_dns[call_id] = event.dn
        if decision.deadline is not None:
            self._deadline(decision.deadline)
        if event.expires is not None:
            self._deadline(event.expires)
        if decision.kind is WatchKind.RESERVED and not self.role.role.creates_sessions:
            # The Reserved Node's backup: its watch ends quietly unless it is primary
            # at the deadline; the unowned rule still covers the call after that.
            self._remember_unowned(call_id, event.dn, event.expires, now, elsewhere)
        return self._early_news_of(call_id, now)

    def _routes_requested(self, event: RoutesRequested, now: float) -> list[Command]:
        """``_route_requested`` for each call in turn, the same decisions in the same
        order; a call whose Node is outweighed at home (``decide``'s first check) skips
        the rest of it (the live Nodes, the watcher, the decision)."""
        out: list[Command] = []
        handled, calls, watches = self._handled, self.calls, self.watcher.watches
        node_id = self.settings.node_id
        live: dict[int, str] | None = None
        rivals: tuple[int, ...] = ()
        rows = zip(event.call_ids, event.dns, event.expires, event.redelivered, strict=True)
        for call_id, dn, expires, redelivered in rows:
            if call_id in handled or call_id in calls:
                continue
            if live is None:  # as late as one by one; a route request changes no membership
                live = self._arrival_nodes()
                rivals = home_rivals(live, node_id)
            if call_id not in watches and outweighed_by(call_id, node_id, rivals):
                self._remember_unowned(call_id, dn, expires, now, live)
                out += self._early_news_of(call_id, now)
                continue
            out += self._route_requested(RouteRequested(call_id, dn, expires, redelivered), now)
        return out

    def _arrival_nodes(self) -> dict[int, str]:
        """The live Nodes a route request is decided under: one dict per membership,
        shared by the calls that arrive under it (``_Unowned.elsewhere_under``)."""
        live = self.live_nodes()
        if live == self._arrival_live:
            return self._arrival_live
        self._arrival_live = live
        return live

    def _remember_unowned(
        self,
        call_id: str,
        dn: str,
        expires: float | None,
        now: float,
        elsewhere: dict[int, str] | None,
    ) -> None:
        """Keep the call for the unowned rule (``_take_unowned_calls``) until it expires."""
        until = expires if expires is not None else math.inf
        self._unowned[call_id] = _Unowned(dn, now, until, elsewhere)

    def _early_news_of(self, call_id: str, now: float) -> list[Command]:
        """Take the ``session`` news that came before this call's route request
        (``_is_early``), now that the request is watched or remembered."""
        early = self._early_news.pop(call_id, None) if self._early_news else None
        return [] if early is None else self.handle(early, now)

    def _hold_creation(
        self,
        call_id: str,
        dn: str,
        reserved: int | None,
        redelivered: bool,
        expires: float | None,
        why: str,
    ) -> list[Command]:
        """Hold a call to create until what may carry it on answers (``why``):

        - ``recovery``: the Node's sessions are not recovered yet (the store did not
          answer the takeover's load); the old primary may have written its session, and
          the recovery carries it on with its creation. Created at once, it was created
          a second time, in the same Node (found by `orsim search`, seed 191: a backup
          restarted, took over and froze; thawed, its recovery was deferred by the store
          deadline the freeze ran out, and the T-Server handed it the old primary's
          waiting call again). It waits as the partner's announced calls do,
          ``RECLAIM_WAIT`` at most (the caller sets that wait).
        - ``adoption``: this application's adoption round is moving its session from a
          dead Node (``_start_call``); ``Adopted`` releases it.

        Its watchers are told it is pending, as for a slow session write, so that none
        creates it meanwhile (with the store away, nothing else would stop it: 5 calls
        routed twice in `tests/test_store_guard.py`)."""
        until = expires if expires is not None else math.inf
        self._held_creations[call_id] = (dn, reserved, redelivered, until)
        return [
            Note(f"creation_held_for_{why}", (("call_id", call_id),)),
            self._notify_watchers(call_id, reserved, pending=True),
        ]

    def _under_adoption(self, call_id: str) -> bool:
        """Whether an ``AdoptOrphans`` of this application, not answered yet, moves the
        call (few rounds at once: one per dead Node)."""
        return any(call_id in calls for calls in self._adopting.values())

    def _is_early(self, call_id: str) -> bool:
        """Whether a ``session`` push for ``call_id`` comes before its route request: the
        call is not watched, created, remembered or over here."""
        return not (
            call_id in self.watcher.watches
            or call_id in self.calls
            or call_id in self._handled
            or call_id in self._unowned
            or call_id in self._announced
            or call_id in self._held_creations
        )

    def _start_call(
        self,
        call_id: str,
        dn: str,
        now: float,
        recovered: Session | None = None,
        reserved: int | None = None,
        redelivered: bool = False,
        expires: float | None = None,
    ) -> list[Command]:
        if recovered is None and self._adopting and self._under_adoption(call_id):
            # Its adoption may have moved the claim to this Node already: the store would
            # take the creation and overwrite the adopted session (found by `orsim
            # search`, seed 197: a lone Node, handed calls it was adopting again, created
            # 13 of them a second time). The adoption's answer decides.
            return self._hold_creation(call_id, dn, reserved, redelivered, expires, "adoption")
        epoch = self.current_epoch
        session = self._created_session(
            call_id,
            dn,
            epoch,
            target=recovered.target if recovered else "",
            created_at=recovered.created_at if recovered else self.wall,
        )
        self.calls[call_id] = call = CallState(
            call_id,
            dn,
            epoch,
            Phase.WRITING,
            target=session.target,
            created_at=session.created_at,
            recovered=recovered is not None,
            reserved=reserved,
            writing_since=now,
            redelivered=redelivered,
        )
        self._deadline(now + self._slow_store_patience)
        if recovered is not None:
            # Carried on from the store: its first owner may have routed it while this
            # application could not hear the T-Server's ``call_routed``; ask first.
            call.phase, call.writing_since = Phase.CHECKING, None
            self._recovered_sessions[call_id] = session
            return [QueryCall(call_id)]
        return [WriteSession(session, create=True)]

    def _created_session(
        self, call_id: str, dn: str, epoch: int, target: str, created_at: float
    ) -> Session:
        """The session this application writes on creating ``call_id``."""
        s = self.settings
        return Session(
            call_id=call_id,
            node_id=s.node_id,
            epoch=epoch,
            dn=dn,
            state="created",
            target=target,
            created_at=created_at,
            data={"app": s.app},
        )

    def _queried(self, event: CallQueried, now: float) -> list[Command]:
        call = self.calls.get(event.call_id)
        session = self._recovered_sessions.pop(event.call_id, None)
        if call is not None and session is None and call.phase is Phase.CHECKING:
            return self._checked_before_routing(call, event.state)
        if call is None or session is None:
            return []
        if event.state in ("routed", "lost"):
            del self.calls[call.call_id]
            self._mark_handled(call.call_id)
            return [
                Note("recovered_call_already_over", (("call_id", call.call_id),
                                                     ("state", event.state))),
                DeleteSession(self.settings.node_id, call.epoch, call.call_id),
            ]  # fmt: skip
        call.phase, call.writing_since = Phase.WRITING, now
        self._deadline(now + self._slow_store_patience)
        return [WriteSession(session, create=False)]

    def _holds_newer(self, call: CallState) -> bool:
        """This application holds its Node at a newer epoch than the call's."""
        return self.role.role.holds_node and call.epoch < self.current_epoch

    def _checked_before_routing(self, call: CallState, state: str) -> list[Command]:
        """The T-Server's answer for a call this application goes on with without the
        store's word (created unpersisted, or taken back under a newer epoch): go on
        unless someone else already routed it (or it is over)."""
        if state in ("routed", "lost") or call.call_id in self._handled:
            del self.calls[call.call_id]
            self._mark_handled(call.call_id)
            out: list[Command] = [
                Note("unpersisted_call_taken", (("call_id", call.call_id), ("state", state)))
            ]
            if call.written:
                out.append(DeleteSession(self.settings.node_id, call.epoch, call.call_id))
            return out
        if call.target:
            call.phase = Phase.ROUTING
            return [SendRoute(call.call_id, call.target, call.epoch)]
        call.phase = Phase.SELECTING
        return [SelectTarget(call.call_id, call.dn)]

    def _written(self, event: SessionWritten, now: float) -> list[Command]:
        call = self.calls.get(event.call_id)
        if call is None:
            return []
        outcome = event.outcome
        if outcome is WriteOutcome.STALE and self._holds_newer(call):
            del self.calls[call.call_id]  # this application holds the Node again: anew
            return self._start_call(call.call_id, call.dn, now)
        if outcome is WriteOutcome.STALE:
            # Fenced before its session was written: the call is still this Node's, and
            # nobody may know of it (its watchers were told it is taken). Kept like a
            # partner's announced call: created if this application takes the Node back.
            del self.calls[call.call_id]
            self._announced[call.call_id] = (call.dn, math.inf)
            return [
                Note("stale_epoch_in_store", (("call_id", call.call_id), ("epoch", call.epoch))),
                *self._role_event(Fenced(call.epoch), now),
            ]
        if outcome is WriteOutcome.ELSEWHERE and not mutated("reserved-ignores-claim"):
            # Another Node owns the call (a Reserved Node and the Assigned Node met at
            # the deadline): the store makes creation exactly-once.
            del self.calls[call.call_id]
            self.watcher.on_session_created(call.call_id)
            return [Note("session_owned_elsewhere", (("call_id", call.call_id),))]
        reclaimed = call.phase is Phase.RECLAIMING
        call.writing_since = None
        call.claimed = outcome is WriteOutcome.OWNED
        away = outcome is WriteOutcome.UNPERSISTED
        # A redelivered call kept from the store may be left at the second miss (below):
        # its watchers are told it is under way, not created, so that their watch runs
        # on. Told it was created, they stopped watching, and a call left then was
        # nobody's (lost: a lone Node thawed into a store outage, ``scenarios/
        # lone-node-thawed-into-a-store-outage.yaml``).
        tentative = away and call.redelivered
        out: list[Command] = [] if reclaimed else [self._notify(call, pending=tentative)]
        # A redelivered call is tried again too: its write may have landed (the store
        # took it, its answer did not come), and a call left on the first miss stayed
        # claimed in the store by this Node, which no longer carried it, while every
        # other Node deferred to that claim: lost (found by the stateful HA test). Only a
        # second miss leaves it (below).
        if away and not (reclaimed or call.recovered):
            # Without the store's word another Node may create the call too: a Reserved
            # Node whose watch ran out while this application was stalled (a scenario
            # `orsim search` had found, once ADDP was timed as Genesys does). A store
            # that has just gone away is given a moment to answer again
            # (``WriteSession.wait_for_store``): then it says whether the call is this
            # Node's, and the T-Server whether someone created, routed and forgot it
            # before. Its watchers are told now, as for any creation, so that none
            # creates it meanwhile.
            call.phase = Phase.RECLAIMING
            session = self._created_session(
                call.call_id, call.dn, call.epoch, call.target, call.created_at
            )
            out.append(WriteSession(session, create=True, wait_for_store=RECLAIM_WAIT))
            return out
        if outcome is WriteOutcome.OWNED and reclaimed:
            call.phase, call.written = Phase.CHECKING, True
            # Its watchers were told it was under way or created unclaimed (above): it
            # is this Node's now, and a Node that created it meanwhile leaves it.
            out.append(self._notify(call))
            out.append(QueryCall(call.call_id))
            return out
        if outcome is WriteOutcome.UNPERSISTED and call.redelivered:
            # Told again on (re)registering, so another Node may be carrying it on, and
            # with the store away nothing can say which (found by `orsim search`: a lone
            # Node back from a freeze routed a call its adopter was routing). Nor is it
            # left: a first write that landed keeps the store's claim here, and every
            # other Node defers to it (lost: found by the stateful HA test). The store,
            # back, says whose it is (``_late_claimed``).
            call.phase = Phase.AWAITING_STORE
            return [Note("redelivered_call_awaits_store", (("call_id", call.call_id),))]
        if outcome is WriteOutcome.UNPERSISTED and (reclaimed or not call.recovered):
            # No store claim made this creation exactly-once: another Node may have
            # created the call meanwhile (its watch ran out while this application was
            # stalled: found by `orsim search`). The T-Server says whether it is routed.
            call.phase = Phase.CHECKING
            out.append(QueryCall(call.call_id))
            return out
        if call.call_id in self._handled:
            # Routed by another Node while the store kept this one waiting.
            del self.calls[call.call_id]
            out.append(DeleteSession(self.settings.node_id, call.epoch, call.call_id))
            return out
        if call.target:
            call.phase = Phase.ROUTING
            out.append(SendRoute(call.call_id, call.target, call.epoch))
        else:
            call.phase = Phase.SELECTING
            out.append(SelectTarget(call.call_id, call.dn))
        return out

    def _notify(self, call: CallState, pending: bool = False) -> NotifySession:
        if call.redelivered and call.claimed:
            # Handed again on (re)registering: any Node may have gone on with it
            # meanwhile, under another view of who is live (the Node that thought this
            # one gone took it as its own), so each is told the store's claim is here.
            return NotifySession(call.call_id, tuple(self.peers.app_nodes), claimed=True)
        return self._notify_watchers(call.call_id, call.reserved, pending, call.claimed)

    def _leaves_to_claim(self, news: SessionAnnounced) -> bool:
        """Whether another Node's creation, which the store took, ends this application's
        creation of the call: it went on without the store's word (an outage) and has
        not sent its route yet. Both went on, and the T-Server refused the second route
        (6 calls routed twice: a lone Node thawed into a store outage, whose calls its
        Reserved Node had created meanwhile, ``scenarios/
        lone-node-thawed-as-the-store-returns.yaml``)."""
        call = self.calls.get(news.call_id)
        return (
            call is not None
            and not call.claimed
            and call.phase in _UNSENT
            and news.node_id is not None
            and news.node_id != self.settings.node_id
        )

    def _notify_watchers(
        self, call_id: str, reserved: int | None, pending: bool = False, claimed: bool = False
    ) -> NotifySession:
        """The ``session`` push goes to the peers that watch this call: the partner
        (which watches every call of the Node) and both applications of the Reserved Node
        (either may be primary by the deadline: found by `orsim search`); the others
        forget the call on ``call_routed``."""
        s = self.settings
        if reserved is None:
            reserved = assign(call_id, self.live_nodes()).reserved
        targets = [app for app, node_id in self.peers.app_nodes.items() if node_id == reserved]
        if s.partner is not None and s.partner not in targets:
            # (A Reserved Node creating a call it watched is its own Reserved Node: its
            # partner was told twice.)
            targets.append(s.partner)
        return NotifySession(call_id, tuple(targets), pending, claimed)

    def _route_answered(self, event: RouteAnswered, now: float) -> list[Command]:
        call = self.calls.pop(event.call_id, None)
        if call is None:
            return []
        out: list[Command] = []
        if event.outcome == "stale_epoch" and self._holds_newer(call):
            # Refused for the epoch it was created under, but this application holds the
            # Node again, at a newer epoch (frozen, superseded, back: found by `orsim
            # search`). The call may be carried on elsewhere meanwhile: adopted by
            # another Node that found this one dead (the refusal's fence was the
            # adopter's, and the Node claimed a newer epoch after it: found by `orsim
            # search`, seed 101, 6 calls routed twice), or routed by the application
            # that held the Node (whose call_routed this one missed). So it is claimed
            # again under the new epoch first, the store saying whose it is, then the
            # T-Server whether it is routed (``_written``, as a reclaim).
            call.epoch, call.phase = self.current_epoch, Phase.RECLAIMING
            self.calls[call.call_id] = call
            session = self._created_session(
                call.call_id, call.dn, call.epoch, call.target, call.created_at
            )
            return [WriteSession(session, create=True)]
        if event.outcome == "stale_epoch":
            # Kept like a partner's announced call: created if this application takes
            # the Node back (its session may never have reached the store).
            self._announced[call.call_id] = (call.dn, math.inf)
            out += self._role_event(Fenced(call.epoch), now)
        else:
            if event.outcome == "routed":
                self.calls_routed += 1
            else:
                out.append(Note("route_refused", (("call_id", call.call_id),
                                                   ("code", event.outcome))))  # fmt: skip
            self._mark_handled(call.call_id)
            out.append(DeleteSession(self.settings.node_id, call.epoch, call.call_id))
        if self._drain_until is not None and not self.calls:
            out += self._send_handover(now)
        return out

    def _mark_handled(self, call_id: str) -> None:
        """The call is routed (or over): never create or recover it again."""
        _remember(self._handled, call_id, None, ROUTED_MEMORY)
        self.watcher.on_session_created(call_id)
        self._watched_dns.pop(call_id, None)
        self._unowned.pop(call_id, None)
        self._announced.pop(call_id, None)

    def _remember_announced(self, call_id: str, expires: float | None) -> None:
        dn = self._watched_dns.get(call_id, "")
        _remember(self._announced, call_id, (dn, math.inf if expires is None else expires),
                  ROUTED_MEMORY)  # fmt: skip

    def _take_announced(self, now: float, waited: bool = False) -> list[Command]:
        """On taking the Node over: create the partner's announced calls that neither the
        store gave back nor anyone routed (their session write never landed).

        With the recovery deferred (the store did not answer), that cannot be told yet:
        they wait for the recovery, for ``RECLAIM_WAIT`` at most (then they are created
        as before, unwritten if the store is still away). Created at once, a call whose
        session the old primary had written was created again by this one, in the same
        Node, when the store answered a moment later (found by `orsim search`, seed 71:
        6 sessions created twice after a backup thawed into a takeover).
        """
        if self._recovery_pending and not waited:
            self._announced_until = self._deadline(now + RECLAIM_WAIT)
            return []
        self._announced_until = None
        held, self._held_creations = self._held_creations, {}
        if not self.role.role.creates_sessions:
            # Stepped down meanwhile: the announced calls are kept for the next takeover;
            # the held ones are the new primary's, which heard the same route requests.
            return []
        out: list[Command] = []
        announced, self._announced = self._announced, {}
        for call_id, (dn, expires) in announced.items():
            if self._still_to_create(call_id, expires, now):
                out.append(Note("announced_call_created", (("call_id", call_id),)))
                out += self._start_call(call_id, dn, now)
        for call_id, (dn, reserved, redelivered, expires) in held.items():
            if self._under_adoption(call_id):
                self._held_creations[call_id] = (dn, reserved, redelivered, expires)
            elif self._still_to_create(call_id, expires, now):
                out += self._start_call(
                    call_id, dn, now, reserved=reserved, redelivered=redelivered
                )
        return out

    def _still_to_create(self, call_id: str, expires: float, now: float) -> bool:
        """A call kept for after the recovery: not expired, routed, nor under way here."""
        return expires > now and call_id not in self._handled and call_id not in self.calls

    def _sessions_loaded(self, sessions: Sequence[Session] | None, now: float) -> list[Command]:
        if sessions is None:
            self._recovery_pending = True
            return [Note("sessions_recovery_deferred", (("reason", "store unavailable"),))]
        self._recovery_pending = False
        if not self.role.role.holds_node:
            return []
        out: list[Command] = []
        recovered = 0
        for session in sessions:
            self.watcher.on_session_created(session.call_id)
            if session.call_id in self._handled:
                # Routed, but its delete was refused (its writer was fenced meanwhile):
                # the Node's epoch is this application's now, so the delete goes through.
                out.append(DeleteSession(self.settings.node_id, self.current_epoch,
                                         session.call_id))  # fmt: skip
                continue
            parked = self.calls.get(session.call_id)
            if parked is not None and parked.phase is Phase.AWAITING_STORE:
                del self.calls[session.call_id]  # the store's word: this Node's
            elif parked is not None:
                continue
            recovered += 1
            out += self._start_call(session.call_id, session.dn, now, recovered=session)
        if recovered:
            self.sessions_recovered += recovered
            out.append(Note("sessions_recovered", (("count", recovered),
                                                   ("epoch", self.current_epoch))))  # fmt: skip
        if self._announced_until is not None:
            out += self._take_announced(now, waited=True)  # the recovered ones are skipped
        return out

    def _store_back(self, stored: int, now: float) -> list[Command]:
        if stored > self.current_epoch:
            # Someone holds the Node at a newer epoch: a call that waits for the store's
            # word is left (or, the role change still under way, claimed and refused as
            # stale), and any other late claim is refused as stale too.
            return self._role_event(EpochObserved(stored), now) + self._claims_late()
        out = self._claims_late()
        if self._recovery_pending and self.role.role.holds_node and not self._taking_over:
            # (Mid-takeover, the takeover's own read is under way.)
            out.append(LoadSessions(self.current_epoch))
        return out

    def _claims_late(self) -> list[Command]:
        """The calls that went on without the store's word and have not sent their route:
        the store, back, says whether another Node's creation came first. Two Nodes
        each thought the call their own while the store was away (one had not heard of
        the other), and both routed it: the T-Server refused the second route
        (``scenarios/lone-node-thawed-unlinked-as-the-store-returns.yaml``)."""
        out: list[Command] = []
        for c in list(self.calls.values()):
            if c.claimed or c.phase not in _UNSENT:
                continue
            if c.phase is Phase.AWAITING_STORE:
                if not self.role.role.holds_node:
                    out.append(self._leave_awaiting(c))
                    continue
                c.epoch = self.current_epoch  # the Node taken (back) meanwhile
            if c.epoch == self.current_epoch:
                session = self._created_session(c.call_id, c.dn, c.epoch, c.target, c.created_at)
                out.append(ClaimLate(session))
        return out

    def _late_claimed(self, event: LateClaimed) -> list[Command]:
        call = self.calls.get(event.call_id)
        if call is None:
            if event.outcome is WriteOutcome.OWNED:  # over meanwhile: its session goes
                return [DeleteSession(self.settings.node_id, self.current_epoch, event.call_id)]
            return []
        if event.outcome is WriteOutcome.OWNED:
            call.claimed = call.written = True
            out: list[Command] = [self._notify(call)]  # one that went on without it leaves it
            if call.phase is Phase.AWAITING_STORE:
                # This Node's: the T-Server says whether someone routed it meanwhile.
                call.phase = Phase.CHECKING
                out.append(QueryCall(call.call_id))
            return out
        if event.outcome is WriteOutcome.ELSEWHERE and call.phase in _UNSENT:
            del self.calls[call.call_id]
            return [Note("call_left_to_store_claim", (("call_id", call.call_id),))]
        if event.outcome is WriteOutcome.STALE and call.phase is Phase.AWAITING_STORE:
            return [self._leave_awaiting(call)]  # fenced meanwhile
        return []

    def _leave_awaiting(self, call: CallState) -> Note:
        """Leave a call that waits for the store's word to the Node's new holder, which
        recovers it from the store if its first write landed; if not, the watch of its
        Reserved Node runs on."""
        del self.calls[call.call_id]
        return Note("redelivered_call_left", (("call_id", call.call_id),))

    # -- orphans and unowned calls ------------------------------------------------------

    def _orphan_round(self, now: float) -> list[Command]:
        """Carry on the stored sessions of Nodes that nobody acts for.

        A Node counts as dead once, for ``ORPHAN_GRACE`` (and at least the
        call-watching-timeout), none of its applications has been reachable, or every
        reachable one has said it is ``headless`` (neither it nor its partner holds the
        Node). Each live primary then adopts the dead Node's sessions assigned to its own
        Node over the Nodes that act.
        """
        live = self.live_nodes()
        headless = self.peers.headless_nodes(self.settings.node_id)
        for node_id in self.peers.nodes:
            if node_id in live and node_id not in headless:
                self._gone_since.pop(node_id, None)
            else:
                # Unreachable, or reachable with nobody acting for it: a backup that
                # cannot take over (cut from the T-Server, its fence never confirmed)
                # held its dead primary's sessions until their callers were lost (found by
                # `orsim search`, seed 411; scenarios/search-headless-node-adopted.yaml).
                self._gone_since.setdefault(node_id, now)
        if not self.role.role.creates_sessions or self._recovering(now):
            # The Node's sessions are not recovered yet: a call created now may be one the
            # old primary wrote, and the recovery would find it under way (found by
            # `orsim search`, seed 241: a thawed backup's unowned rule created a call
            # its restarted partner had created, one session created twice). The first
            # round after the recovery (or its wait) does it.
            return []
        out: list[Command] = []
        grace = self._orphan_grace
        for node_id, since in self._gone_since.items():
            # The very sum ``_orphan_round_at`` made due: ``now - since >= grace`` can
            # be False at that instant in floating point.
            if now >= since + grace and node_id not in self._adopting:
                self._adopting[node_id] = frozenset()
                out.append(LoadOrphans(node_id))
            elif now < since + grace:  # the next round comes when its grace is over
                self._orphan_round_at(since + grace)
        out += self._take_unowned_calls(now, live)
        return out

    def _note_gone(self, app: str, now: float) -> None:
        """``app``'s last link went down: if its Node has no reachable application left,
        it has been gone since now, and its orphan round is due a grace later.

        The orphan round (every ``_orphan_period``) found a Node gone only at its next
        pass, up to a period after its last link went down, and counted the grace from
        there: a Node away for 2.65 s was not adopted before its restarted backup came
        back, still starting, and a call it held missed its router-timeout (found by
        `orsim search`, seed 109: both applications of a Node frozen, the backup then
        killed and started again).
        """
        node_id = self.peers.app_nodes.get(app)
        if node_id is None or node_id in self._gone_since or node_id in self.live_nodes():
            return
        self._gone_since[node_id] = now
        self._orphan_round_at(now + self._orphan_grace)

    @property
    def _orphan_grace(self) -> float:
        """How long a Node must be unreachable to count as dead: ``ORPHAN_GRACE``, and
        at least the call-watching-timeout."""
        return max(ORPHAN_GRACE, self.watcher.timeout_ms / 1000.0)

    def _orphan_round_at(self, when: float) -> None:
        """Bring the next orphan round forward to ``when`` (it is never put off)."""
        self._next_orphan_round = min(self._next_orphan_round, self._deadline(when))

    def _take_unowned_calls(self, now: float, live: dict[int, str]) -> list[Command]:
        """Create calls nobody created whose Assigned and Reserved Nodes have both gone.

        Assignment is fixed when a call arrives; when membership later changes so that
        the call now falls to this Node, and still no session exists after twice the
        call-watching-timeout, this primary creates it (the store's claim keeps creation
        exactly-once if another Node does the same).
        """
        cwt = self.watcher.timeout_ms / 1000.0
        out: list[Command] = []
        for call_id, unowned in list(self._unowned.items()):
            if unowned.expires <= now or call_id in self._handled:
                del self._unowned[call_id]
            elif (
                now - unowned.arrived >= 2 * cwt
                # Not this Node's under the same live Nodes: no need to weigh it again
                # (under overload, every round weighed every waiting call: a fifth of a
                # primary's CPU at 16 Nodes).
                and unowned.elsewhere_under != live
                and assign(call_id, live).assigned == self.settings.node_id
            ):
                del self._unowned[call_id]
                if call_id not in self.calls:
                    out.append(Note("unowned_call_created", (("call_id", call_id),)))
                    out += self._start_call(call_id, unowned.dn, now)
        return out

    def _orphans_loaded(self, dead: int, sessions: Sequence[Session]) -> list[Command]:
        # Over the Nodes that act: a headless one is live, yet nobody there would carry
        # a session on.
        live = {n: dc for n, dc in self.live_nodes().items() if n not in self._gone_since}
        mine = tuple(
            o
            for o in sessions
            if o.call_id not in self._handled
            and o.call_id not in self.calls
            and assign(o.call_id, live).assigned == self.settings.node_id
        )
        if not mine or not self.role.role.creates_sessions:
            self._adopting.pop(dead, None)
            return []
        self._adopting[dead] = frozenset(o.call_id for o in mine)
        return [AdoptOrphans(dead, mine, self.current_epoch)]

    def _adopted(self, dead: int, sessions: Sequence[Session], now: float) -> list[Command]:
        """Carry on the sessions the round moved; then create the calls held for it
        (``_hold_creation``) that it did not move (fenced first by another adopter, say).

        Only as the Node's holder at the epoch they were moved at (``AdoptOrphans.epoch``).
        An application that stepped down meanwhile (a newer epoch read, a fence refused)
        carried them on as a backup, at the new holder's epoch (found while fixing another
        bug: 13 sessions). It leaves them to the Node's holder: the store took each move
        only while the Node was at that epoch, before the holder's claim, and its
        recovery, read after the claim, finds them."""
        moving = self._adopting.pop(dead, frozenset())
        out: list[Command] = []
        left = 0
        for orphan in sessions:
            if orphan.call_id in self._handled:
                # Routed by its first owner while the adoption was under way: the moved
                # session is this Node's now, and only this Node can forget it.
                out.append(DeleteSession(orphan.node_id, orphan.epoch, orphan.call_id))
                continue
            if orphan.call_id in self.calls:
                continue
            if not (self.role.role.holds_node and orphan.epoch == self.current_epoch):
                left += 1
                continue
            out += self._start_call(orphan.call_id, orphan.dn, now, recovered=orphan)
        if sessions:
            self.sessions_adopted += len(sessions)
            out.append(Note("sessions_adopted", (("count", len(sessions)), ("from_node", dead))))
        if left:
            out.append(Note("adopted_sessions_left_to_the_holder",
                            (("count", left), ("epoch", self.current_epoch))))  # fmt: skip
        held = [c for c in self._held_creations if c in moving]  # in arrival order
        for call_id in held:
            dn, reserved, redelivered, expires = self._held_creations.pop(call_id)
            if self.role.role.creates_sessions and self._still_to_create(call_id, expires, now):
                out += self._start_call(
                    call_id, dn, now, reserved=reserved, redelivered=redelivered, expires=expires
                )
        return out

    # -- role ----------------------------------------------------------------------------

    def _partner_news(self, app: str, now: float) -> list[Command]:
        """Turn the partner's link state and announcements into role events."""
        if app != self.settings.partner:
            return []
        if not self.peers.is_live(app):
            if self._stepped_down_until is not None and now < self._stepped_down_until:
                relinked, self._relinked_at = self._relinked_at, None
                if relinked is None or now - relinked < self.settings.heartbeat:
                    return []  # the probe's end decides (``tick``)
                # The partner was live through a link made after the step-down, for a
                # heartbeat at least (it spoke on it), and is gone: lost, not a thawed
                # process's stale links, nor a connection it made and gave up while this
                # one was frozen (accepted from the backlog at the thaw, then closed).
                # Waiting for the probe's end left the Node without a primary for up to
                # the whole window (scenarios/thawed-primary-takes-over-at-once.yaml).
                self._stepped_down_until = self._probe_until = None
            return self._role_event(PartnerLost(), now)
        info = self.peers.info.get(app)
        if info is None:
            return []
        if self.role.role.holds_node and info.epoch > self.current_epoch:
            self._claim_deferred = True
            return self._check_claim(info.epoch, fence=True)
        checked, seen = self._seen_unheld(info)
        return checked + self._role_event(seen, now)

    def _seen_unheld(self, info: MemberInfo) -> tuple[list[Command], PartnerSeen]:
        """The partner's news as an application not holding the Node takes it: its mode at
        once, an epoch above this one's only once the store bears it out (``EpochRead``;
        a backup that took a spoofed epoch claimed from one the store never had, and
        every takeover it tried failed)."""
        checked = []
        if info.epoch > self.current_epoch:
            checked = self._check_claim(info.epoch, fence=False)
        seen = PartnerSeen(info.mode == "primary", min(info.epoch, self.current_epoch))
        return checked, seen

    def _check_claim(self, claimed: int, fence: bool) -> list[Command]:
        """The partner says the Node is at ``claimed``, above this application's epoch:
        believed only as the arbiters bear it out, never on its word (a spoofed ``member``
        push made primaries step down for good).

        The store's epoch is read (``EpochRead``: a higher one is taken, and steps a
        holder down); a holder also asks the T-Server to confirm its fence
        (``FenceAnswered``: refused, someone fenced it at a newer epoch, steps down). A
        real takeover leaves both behind it (the partner claims, then fences); a claim
        neither bears out changes nothing."""
        if claimed <= self._claim_checked:
            return []  # already being checked
        self._claim_checked = claimed
        out: list[Command] = [
            Note("epoch_claim_checked", (("claimed", claimed), ("epoch", self.current_epoch))),
            ReadEpoch(),
        ]
        if fence:
            out.append(FenceTServer(self.current_epoch))
        return out

    def _role_handle(self, event: RoleEvent) -> list[Action]:
        """The role machine's actions for ``event``; notes when ``mode`` changes. (The
        role changes before its actions are done: a status asked meanwhile shows the new
        mode, and must show when it began, not when the last one did.)"""
        mode = self.mode
        actions = list(self.role.handle(event))
        if self.mode != mode:
            self.mode_since = self.wall
        return actions

    def _role_event(self, event: RoleEvent, now: float) -> list[Command]:
        """Feed the role machine (or queue the event while its actions are under way)."""
        if self._chain_before is not None:
            if self._fenced_mid_takeover(event):
                # The claim was won, and the fence waits for a T-Server this application
                # may not reach (a silent link: until ADDP or a heal ends it), while the
                # store says someone holds the Node at a newer epoch. The takeover is
                # over: it steps down now, from the primary its status has shown since
                # the claim, and the fence's late answer changes nothing (found by
                # `orsim search`, seed 107: a backup cut from the T-Server and its
                # partner claimed, its restarted partner claimed after it, and both
                # showed primary until the heal, 0.6 s).
                self._chain.clear()
                self._chain_step, self._chain_before = None, Role.PRIMARY
                self._early_load = None
                self._chain_reason = type(event).__name__
                return self._chain_next(self._role_handle(event), now)
            self._deferred.append(event)
            return []
        self._chain_before = self.role.role
        self._chain_reason = type(event).__name__
        return self._chain_next(self._role_handle(event), now)

    def _fenced_mid_takeover(self, event: RoleEvent) -> bool:
        """A newer epoch, read while this application's takeover waits for its fence, or
        the fence refused: another application holds the epoch this one won (one claim
        won in the store, the other at the T-Server)."""
        step = self._chain_step
        if step is None or step[0] != "fence" or self.role.role is not Role.PRIMARY:
            return False
        if isinstance(event, Fenced):
            return event.epoch == step[1] == self.current_epoch
        return isinstance(event, EpochObserved) and event.epoch > self.current_epoch

    def _chain_next(self, actions: Iterable[Action], now: float) -> list[Command]:
        """Carry on the role machine's actions: the quick ones at once, the next one that
        waits for an answer as a command; when none is left, the role change."""
        self._chain.extend(actions)
        self._chain_step = None
        out: list[Command] = []
        while self._chain:
            action = self._chain.pop(0)
            if isinstance(action, ClaimEpoch):
                if action.new == action.expected:  # only under a mutation (test-only)
                    self._chain.extend(self._role_handle(ClaimWon(action.new)))
                    continue
                self._chain_step = ("claim", action.new)
                out.append(ClaimEpochCmd(action.expected, action.new))
                return out
            if isinstance(action, Fence):
                self._chain_step = ("fence", action.epoch)
                out.append(FenceTServer(action.epoch))
                after = self._chain[0] if self._chain else None
                if isinstance(after, RecoverSessions) and after.epoch == action.epoch:
                    # The claim is won: the store refuses the old holder's writes from now
                    # on, so the Node's sessions are read while the T-Server confirms the
                    # fence, a round trip less before the first call. They are carried on
                    # only once it has; a refused fence ends the takeover.
                    self._early_load = (action.epoch, _READING)
                    out.append(LoadSessions(action.epoch))
                return out
            if isinstance(action, RecoverSessions):
                early, self._early_load = self._early_load, None
                self._chain_step = ("recover", action.epoch)
                if early is None or early[0] != action.epoch:
                    out.append(LoadSessions(action.epoch))
                    return out
                if early[1] is _READING:
                    return out  # its answer carries the takeover on (``SessionsLoaded``)
                out += self._sessions_loaded(early[1], now)
                self._chain_step = None
                continue
            if isinstance(action, StepDown):
                out.append(Note("stepped_down", (("epoch", self.current_epoch),)))
            elif isinstance(action, HandOver):
                out.append(Note("switchover_started", (("sessions", len(self.calls)),)))
                self._drain_until = self._deadline(now + SWITCHOVER_DRAIN)
            elif isinstance(action, SwitchoverFailed):
                out += self._finish_switchovers(action.reason)
        before, self._chain_before = self._chain_before, None
        if before is not None and self.role.role is not before:
            out += self._role_changed(before, self.role.role, self._chain_reason, now)
        if self._drain_until is not None and not self.calls:
            out += self._send_handover(now)
        while self._deferred and self._chain_before is None:
            out += self._role_event(self._deferred.pop(0), now)
        return out

    def _role_changed(self, before: Role, now_role: Role, reason: str, now: float) -> list[Command]:
        self._deadline(now)  # watches may count from now on (or no more): look again
        out: list[Command] = [ModeChanged(before, now_role, self.current_epoch, reason)]
        self._claim_checked = 0
        partner = self.settings.partner
        if self._claim_deferred and not now_role.holds_node:
            # Stepped down: what the partner said while this application held the Node
            # counts now, as a backup takes it (after this change: ``_deferred``).
            self._claim_deferred = False
            info = self.peers.info.get(partner) if partner is not None else None
            if info is not None and partner is not None and self.peers.is_live(partner):
                checked, seen = self._seen_unheld(info)
                out += checked
                self._deferred.append(seen)
        took_over = now_role is Role.PRIMARY and not before.holds_node
        for call_id in self.watcher.set_role(now_role, now):
            dn = self._watched_dns.pop(call_id, "")
            if took_over and self._recovery_pending:
                # The old primary may have written its session: wait for the recovery
                # with the announced calls (a backup started after the news of it did
                # not hear it: found by `orsim search`, seed 73).
                self._announced[call_id] = (dn, math.inf)
            else:
                out += self._start_call(call_id, dn, now)
        if took_over:
            out += self._take_announced(now)

        handed_over = before is Role.SUSPENDING and now_role is Role.BACKUP
        if took_over or handed_over:
            out += self._finish_switchovers(None)
        if now_role is not Role.SUSPENDING:
            self._drain_until = self._handover_until = None
        if self._stopping is not None:
            if now_role is Role.BACKUP or not now_role.holds_node:
                out += [self._announce(), Exit("handed over to the backup")]
                return out
            if now_role is Role.PRIMARY and self._stop_until is None:
                out += self._stop_alone(now)  # the hand-over failed: finish alone
        if now_role is Role.BACKUP and self.settings.partner is None:
            # A Node of one application, fenced by a Node that adopted its sessions while
            # it was away: nobody else serves this Node, so it claims it back shortly.
            self._probe_until = self._deadline(now + self._probe_window)
        elif now_role is Role.BACKUP and before.holds_node:
            # Stepped down for a newer holder: the partner. Woken from a freeze, this
            # application finds every old link closed by peers that gave it up; its
            # partner's among them says nothing of the partner, which reconnects within
            # the probe. Only a partner still unreachable then is lost (found by `make
            # test`: a thawed primary stepped down, saw its old link to the new primary
            # close, and took the Node back from it at once).
            self._stepped_down_until = self._deadline(now + self._probe_window)
            self._probe_until = self._stepped_down_until
            self._relinked_at = None
        out.append(self._announce())
        return out

    def _send_handover(self, now: float) -> list[Command]:
        self._drain_until = None
        if self.role.role is not Role.SUSPENDING:
            return []
        partner = self.settings.partner
        if partner is None or not self.peers.is_live(partner):
            return self._role_event(SwitchoverTimedOut(), now)
        self._handover_until = self._deadline(now + HANDOVER_WAIT)
        return [PushHandover(self.current_epoch)]

    def _finish_switchovers(self, reason: str | None) -> list[Command]:
        if not self._switchovers:
            return []
        self._switchovers = 0
        return [SwitchoverDone(reason)]


def probe_window(heartbeat: float, configured_backup: bool) -> float:
    """How long an application waits for its partner's word (at start-up, and after
    stepping down) before acting without it: a configured backup twice as long, so that
    of two partners started together the configured primary decides first."""
    return max(4 * heartbeat, 1.0) * (2 if configured_backup else 1)


def _remember(memory: dict[str, V], call_id: str, value: V, most: int) -> None:
    """Keep ``value`` for ``call_id``; past ``most``, forget the oldest down to 7/8 of it.

    An eighth at once, not one: a dict finds its oldest key by scanning past every slot
    deleted before it, so forgetting one per call cost each call ~30 µs at 100,000
    routed calls; an eighth at a time costs about what the insertions do. (An
    ``OrderedDict`` forgets one in O(1) but takes 2.4 times the memory: +5 MB a node.)
    """
    memory[call_id] = value
    if len(memory) > most:
        for old in list(itertools.islice(memory, len(memory) - most + most // 8)):
            del memory[old]


def call_of(command: Command) -> str | None:
    """The call a call step (``CALL_COMMANDS``) carries on, else None."""
    if isinstance(command, WriteSession):
        return command.session.call_id
    if isinstance(command, QueryCall | SelectTarget | SendRoute):
        return command.call_id
    return None
