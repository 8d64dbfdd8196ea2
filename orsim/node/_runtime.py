"""The ORS node at run time: a trio executor of ``NodeCore``'s commands.

Every decision is ``NodeCore``'s (``_core.py``); this module only does I/O and keeps
time. It keeps the links: every ORS application of a cluster listens on its
Application's port; the two halves of a Node dial each other, and between Nodes the
application with the smaller name dials (full mesh, one link per pair); ADDP closes a
silent link and a closed link is seen at once. It turns what arrives (T-Server and peer
pushes, link changes, answers) into the core's events, carries out the core's commands
(store writes through the ``StoreGuard``, URS and T-Server requests, pushes), feeds each
outcome back, and calls ``core.tick`` whenever ``core.next_deadline()`` comes.

A call's steps (write its session, ask the URS, route) run one after the other in one
task per call, so a call costs one task, as it did before the core existed.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar, TypeVarTuple

import attrs
import trio
from structlog.typing import FilteringBoundLogger

from orsim._alarm import Alarm
from orsim.config import CALL_WATCHING_TIMEOUT, LOG_VERBOSE
from orsim.errors import ConnectionLost, RemoteProtocolError, RequestRefused
from orsim.logs import get_logger, set_log_level
from orsim.node._core import (
    CALL_COMMANDS,
    Adopted,
    AdoptOrphans,
    Announce,
    CallQueried,
    CallsRouted,
    ClaimEpochCmd,
    ClaimLate,
    Command,
    DeleteSession,
    EpochClaimed,
    EpochRead,
    Exit,
    FenceAnswered,
    FenceTServer,
    HandoverReceived,
    HandoverSendFailed,
    InEvent,
    LateClaimed,
    LoadOrphans,
    LoadSessions,
    MemberAnnounced,
    ModeChanged,
    NodeCore,
    Note,
    NotifySession,
    OrphansLoaded,
    PeerLinkDown,
    PeerLinkUp,
    PushHandover,
    QueryCall,
    ReadEpoch,
    RouteAnswered,
    RoutesRequested,
    SelectTarget,
    SendRoute,
    SessionAnnounced,
    SessionsLoaded,
    SessionWritten,
    StopAsked,
    StoreBack,
    SwitchoverAsked,
    SwitchoverDone,
    SwitchoverGaveUp,
    TargetSelected,
    WriteOutcome,
    WriteSession,
    call_of,
)
from orsim.node._messages import (
    Handover,
    Member,
    NodeStatus,
    SessionCreated,
    SwitchedOver,
    Switchover,
)
from orsim.node._mutations import mutated
from orsim.node._role import Role
from orsim.node._settings import Endpoint, NodeSettings, PeerApp
from orsim.node._store_guard import StoreGuard
from orsim.store import Session, SessionStore, StaleEpoch, StoreUnavailable
from orsim.tserver import CallRouted as CallRoutedPush
from orsim.tserver import ClaimEpoch, Fence, Route, RoutedCalls, RouteRequest, RouteRequests
from orsim.tserver import QueryCall as TServerQueryCall
from orsim.tserver import Register as TServerRegister
from orsim.urs import Register as UrsRegister
from orsim.urs import SelectTarget as UrsSelectTarget
from orsim.wire import (
    Call,
    Connection,
    HandlerTable,
    Network,
    Push,
    PushHandler,
    PushTable,
    RequestHandler,
    Status,
    StatusReport,
    connect_with_retry,
    encode,
    frame_totals,
    on,
    open_connection,
    serve_app,
    when,
    when_many,
)

Ts = TypeVarTuple("Ts")
A = TypeVar("A")

#: Longest a switchover request waits for the roles to swap (s).
_SWITCHOVER_TIMEOUT = 20.0
#: Frames waiting for one peer beyond which further pushes to it are dropped (the peer
#: is not reading; ADDP will close the link). Session pushes only shorten watches (the
#: store's claim keeps creation exactly-once) and announcements are repeated.
_PEER_BACKLOG = 10_000
#: How long start-up waits for the store to give the Node's epoch before starting
#: without it (a store that is away is then an outage like any other).
_STARTUP_STORE_WAIT = 5.0
#: Pause before a claim is tried again when neither the store nor the T-Server answered.
_CLAIM_RETRY = 0.2
#: Roles of an application whose start-up has not decided its role yet.
_UNDECIDED = (Role.STARTING, Role.CLAIMING)
#: How long a call's request (URS target, T-Server route or query) waits before it is
#: asked again on the same link: a partition drops the bytes of a link that stays up, so
#: an answer may never come. Asking again is safe: the URS answers any request, and the
#: T-Server answers an identical route resent as the original. Each wait doubles the last,
#: so a server slower than this (a URS thinking for seconds) is still heard.
_ASK_AGAIN = 2.0
#: Outcomes of a creation that count as creating the session (``_test_freeze``).
_CREATED = (WriteOutcome.OWNED, WriteOutcome.UNPERSISTED)


@attrs.define(eq=False)
class OrsNode:
    """One ORS application (primary or backup half of a Node) at run time."""

    settings: NodeSettings
    network: Network
    store: SessionStore
    listen_port: int | None = None
    mode_since: float = 0.0
    #: The application's decisions (created by ``run`` with the store's epoch).
    core: NodeCore = attrs.field(init=False)
    #: Every store operation goes through it: a deadline each, degraded mode meanwhile.
    guard: StoreGuard = attrs.field(init=False)
    #: Test-only (``ORSIM_TEST_FREEZE=APP:N``): SIGSTOP this process once its Nth session
    #: is in the store and not yet routed, so a test makes "the primary freezes in the
    #: middle of a call's store work" happen at a known moment rather than by luck.
    freeze_after_sessions: int | None = None
    _tserver: Connection | None = None
    _urs: Connection | None = None
    _tserver_up: trio.Event = attrs.Factory(trio.Event)
    _urs_up: trio.Event = attrs.Factory(trio.Event)
    _outbound: dict[str, Connection] = attrs.Factory(dict)
    #: Links each peer dialled to us, in the order they came (a dict, not a set: which
    #: one carries our pushes must not depend on object addresses).
    _inbound: dict[str, dict[Connection, None]] = attrs.Factory(dict)
    _nursery: trio.Nursery | None = None
    #: Set (and replaced) after every change the core made: ``run`` waits on it.
    _changed: trio.Event = attrs.Factory(trio.Event)
    _deciding: bool = True  # start-up has not decided the role yet (``_check_decided``)
    #: Wakes the clock task for earlier work (made when the task starts).
    _alarm: Alarm | None = None
    #: When the clock task wakes next by itself (it needs waking only for earlier work).
    _wake_at: float = math.inf
    _switchovers: list[tuple[trio.Event, list[str]]] = attrs.Factory(list)
    #: The requests this application answers on its own port, with their handlers.
    handlers: HandlerTable = attrs.field(init=False)
    #: The pushes it takes (from the T-Server and from peers), with their handlers.
    pushes: PushTable = attrs.field(init=False)
    #: Wall-clock seconds (sessions' ``created_at``, ``mode_since``); a simulation gives
    #: a virtual one.
    wall: Callable[[], float] = time.time
    #: Told of every role change, after it is logged (a simulation's trace listens).
    on_mode_change: Callable[[ModeChanged], None] | None = None
    #: The level this process logs at (``log/verbose``, applied live).
    log_level: str = "info"
    #: Set when a graceful stop is over: the process should exit now (status 0).
    exited: trio.Event = attrs.Factory(trio.Event)
    log: FilteringBoundLogger = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        s = self.settings
        self.core = NodeCore(s)
        self.mode_since = self.mode_since or self.wall()
        self.guard = StoreGuard(self.store, app=s.app, on_recovered=self._store_recovered)
        self.log = get_logger(app=s.app, node_id=s.node_id)
        self.handlers = HandlerTable.of(
            s.app, [on(Status, self._status), on(Switchover, self._switchover)]
        )
        self.pushes = PushTable.of(
            [
                when_many(RouteRequest, RouteRequests.from_bodies, self._on_route_requests),
                when_many(CallRoutedPush, RoutedCalls.from_bodies, self._on_calls_routed),
                when(SessionCreated, self._on_session),
                when(Member, self._on_member),
                when(Handover, self._on_handover),
            ]
        )

    # -- what tests and status read ------------------------------------------------

    @property
    def mode(self) -> str:
        return self.core.mode

    @property
    def epoch(self) -> int:
        return self.core.current_epoch

    @property
    def call_watching_timeout_ms(self) -> float:
        return self.core.watcher.timeout_ms

    def status(self) -> NodeStatus:
        """What ``status`` answers."""
        s, core = self.settings, self.core
        return NodeStatus(
            app=s.app,
            type=s.app_type,
            node_id=s.node_id,
            cluster=s.cluster,
            data_center=s.data_center,
            mode=core.status_mode,
            # The mode's start, also while its change is under way (see ``_role_handle``).
            mode_since=max(self.mode_since, core.mode_since or 0.0),
            role=core.role.role.value,
            epoch=core.current_epoch,
            pid=os.getpid(),
            sessions=core.sessions,
            calls_routed=core.calls_routed,
            sessions_recovered=core.sessions_recovered,
            sessions_adopted=core.sessions_adopted,
            watching=len(core.watcher.watches),
            call_watching_timeout_ms=core.watcher.timeout_ms,
            live_nodes=tuple(sorted(core.live_nodes())),
            tserver_connected=self._tserver is not None,
            urs_connected=self._urs is not None,
            store_health=self.guard.counts(),
            frames=frame_totals(),
        )

    def stop_gracefully(self) -> None:
        """SIGTERM: a primary suspends, drains, hands over, then ``exited`` is set; anything
        else (or a second call) sets it at once."""
        self.feed(StopAsked())

    def set_log_level(self, level: str) -> None:
        """``log/verbose`` changed live: log at ``level`` from now on."""
        set_log_level(level)
        self.log_level = level
        self.log = get_logger(app=self.settings.app, node_id=self.settings.node_id)
        self.guard.rebind_log()
        self.log.info("option_applied", option=LOG_VERBOSE.name, level=level)

    def set_call_watching_timeout(self, ms: float) -> None:
        """Apply a new call-watching-timeout to calls that arrive from now on."""
        self.log.info(
            "option_applied",
            option=CALL_WATCHING_TIMEOUT.name,
            old=self.core.watcher.timeout_ms,
            new=ms,
            note="a real ORS reads this option only at start-up",
        )
        self.core.set_call_watching_timeout(ms)
        self._rewake()

    # -- lifecycle ---------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; ``started`` reports the bound port once the role is decided."""
        s = self.settings
        epoch = await self.guard.initial_epoch(s.node_id, _STARTUP_STORE_WAIT)
        if epoch is None:
            self.log.warning("store_unavailable_at_start", waited_s=_STARTUP_STORE_WAIT)
        self.core = NodeCore(
            s,
            epoch=epoch or 0,
            started=trio.current_time(),
            wall=self.wall(),
            store_deadline=self.guard.deadline,
        )
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self.guard.run)
            port = self.listen_port if self.listen_port is not None else s.port
            bound: int = await nursery.start(
                lambda task_status: serve_app(
                    self.network,
                    s.address,
                    port,
                    app=s.app,
                    app_type=s.app_type,
                    handler=self.handlers.handle,
                    on_push=self.pushes,
                    on_connect=self._on_inbound,
                    on_disconnect=self._on_inbound_closed,
                    task_status=task_status,
                )
            )
            for peer in s.peers:
                if self._dials(peer):
                    nursery.start_soon(self._dial_peer, peer)
            nursery.start_soon(self._tserver_link)
            nursery.start_soon(self._urs_link)
            nursery.start_soon(self._clock)
            self._do(self.core.start(trio.current_time()))
            while self._deciding:
                await self._changed.wait()
            task_status.started(bound)

    # -- the core ----------------------------------------------------------------

    def feed(self, event: InEvent) -> None:
        """Hand the core one event and carry out what it says."""
        self.core.wall = self.wall()
        self._do(self.core.handle(event, trio.current_time()))

    def _do(self, commands: Iterable[Command]) -> None:
        for command in commands:
            if isinstance(command, CALL_COMMANDS):
                self._start_soon(self._call_task, command)
            else:
                self._execute(command)
        if self._deciding:
            self._check_decided()
        self._rewake()

    def _check_decided(self) -> None:
        """Let ``run`` report the start once the role is decided and its status says so:
        a start-up claim's fence confirmed, or waiting for a T-Server link there is not
        (until a heal, perhaps: ``run`` must not wait for it)."""
        core = self.core
        if core.role.role in _UNDECIDED:
            return
        if core.awaiting_fence and self._tserver is not None:
            return  # its fence is on its way: a status asked now would say backup
        self._deciding = False
        self._changed.set()
        self._changed = trio.Event()

    def _rewake(self) -> None:
        # The hint, not next_deadline(): that scans every watch, and this runs per event.
        if self.core.take_deadline_hint() < self._wake_at and self._alarm is not None:
            self._wake_at = -math.inf  # woken: no need to wake it again
            self._alarm.wake()

    async def _clock(self) -> None:
        """Call ``core.tick`` whenever its next deadline comes."""
        self._alarm = Alarm()
        while True:
            self._wake_at = self.core.next_deadline()
            await self._alarm.wait_until(self._wake_at)
            self._wake_at = -math.inf  # busy: nothing needs to wake it meanwhile
            now = trio.current_time()
            if now >= self.core.next_deadline():
                self.core.wall = self.wall()
                self._do(self.core.tick(now))

    def _start_soon(self, fn: Callable[[*Ts], Awaitable[None]], *args: *Ts) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(fn, *args)

    def _execute(self, command: Command) -> None:
        """Carry out one command that is not a call's step."""
        match command:
            case NotifySession(call_id=call_id, apps=apps, pending=slow, claimed=claimed):
                created = SessionCreated(call_id, self.settings.node_id, slow, claimed)
                self._send_to(apps, encode(Push(created.TOPIC, created.to_json())))
            case Announce(apps=apps, info=info):
                member = Member(info)
                self._send_to(apps, encode(Push(member.TOPIC, member.to_json())))
            case DeleteSession(node_id=node_id, epoch=epoch, call_id=call_id):
                self._start_soon(self._delete, node_id, epoch, call_id)
            case ClaimLate(session=session):
                self._start_soon(self._claim_late, session)
            case ClaimEpochCmd():
                self._start_soon(self._claim, command)
            case FenceTServer(epoch=epoch):
                self._start_soon(self._fence, epoch)
            case LoadSessions(epoch=epoch):
                self._start_soon(self._load_sessions, epoch)
            case ReadEpoch():
                self._start_soon(self._read_epoch)
            case LoadOrphans(node_id=node_id):
                self._start_soon(self._load_orphans, node_id)
            case AdoptOrphans():
                self._start_soon(self._adopt_orphans, command)
            case PushHandover(epoch=epoch):
                self._start_soon(self._push_handover, epoch)
            case SwitchoverDone(reason=reason):
                pending, self._switchovers = self._switchovers, []
                for done, outcome in pending:
                    outcome.append(reason or "")
                    done.set()
            case ModeChanged(old=old, new=new, epoch=epoch, reason=reason):
                self.log.info("mode_changed", old=old.mode, mode=new.mode, role=new.value,
                              epoch=epoch, reason=reason)  # fmt: skip
                if old.mode != new.mode:
                    at = self.core.mode_since
                    self.mode_since = at if at is not None and at > self.mode_since else self.wall()
                self._changed.set()
                self._changed = trio.Event()
                if self.on_mode_change is not None:
                    self.on_mode_change(command)
            case Note(event=event, fields=fields):
                self.log.info(event, **dict(fields))
            case Exit(reason=reason):
                self.log.info("stopping", reason=reason, sessions=self.core.sessions)
                self.exited.set()
            case _:
                raise AssertionError(f"not an executor command: {command!r}")

    def _send_to(self, apps: Iterable[str], frame: bytes) -> None:
        for app in apps:
            conn = self._link_to(app)
            if conn is None:
                continue
            try:
                conn.send_frame_nowait(frame, limit=_PEER_BACKLOG)
            except (ConnectionLost, RuntimeError):
                pass

    # -- a call's steps ------------------------------------------------------------

    async def _call_task(self, command: Command | None) -> None:
        """Carry out one call's steps one after the other, feeding each outcome back."""
        while command is not None:
            call_id = call_of(command)
            result = await self._call_step(command)
            self.core.wall = self.wall()
            # The call's next step stays in this task, and so does its last, forgetting
            # its session; the rest is carried out as usual.
            command = delete = None
            rest: list[Command] = []
            for c in self.core.handle(result, trio.current_time()):
                if command is None and isinstance(c, CALL_COMMANDS) and call_of(c) == call_id:
                    command = c
                elif delete is None and isinstance(c, DeleteSession) and c.call_id == call_id:
                    delete = c
                else:
                    rest.append(c)
            self._do(rest)
            if delete is not None:
                await self._delete(delete.node_id, delete.epoch, delete.call_id)

    async def _call_step(self, command: Command) -> InEvent:
        match command:
            case WriteSession(session=session, create=create, wait_for_store=wait):
                if wait > 0:
                    await self.guard.wait_answering(wait)
                outcome = await self._write(session, create, counted=not wait)
                if create and not wait and outcome in _CREATED:
                    self._test_freeze()
                return SessionWritten(session.call_id, outcome)
            case QueryCall(call_id=call_id):
                return CallQueried(call_id, await self._query_call(call_id))
            case SelectTarget(call_id=call_id, dn=dn):
                return TargetSelected(call_id, await self._select_target(call_id, dn))
            case SendRoute(call_id=call_id, target=target, epoch=epoch):
                return RouteAnswered(call_id, await self._route(call_id, target, epoch))
        raise AssertionError(f"not a call step: {command!r}")

    async def _write(self, session: Session, create: bool, counted: bool = True) -> WriteOutcome:
        """Write the session. While the store is away the call goes on unpersisted (ORS
        8.1.2 and later keep routing through a store outage)."""
        try:
            if not create:
                await self.guard.put_session(session)
                return WriteOutcome.OWNED
            if await self.guard.create_session(session):
                return WriteOutcome.OWNED
            return WriteOutcome.ELSEWHERE
        except StaleEpoch:
            return WriteOutcome.STALE
        except StoreUnavailable:
            if counted:  # a second try (``WriteSession.wait_for_store``) was, at its first
                self.guard.unpersisted += 1
            return WriteOutcome.UNPERSISTED

    def _test_freeze(self) -> None:
        if self.freeze_after_sessions is None:
            return
        self.freeze_after_sessions -= 1
        if self.freeze_after_sessions == 0:
            self.log.warning("test_freeze", reason="ORSIM_TEST_FREEZE")
            os.kill(os.getpid(), signal.SIGSTOP)

    async def _ask(
        self,
        link: Callable[[], Connection | None],
        up: Callable[[], trio.Event],
        request: Call[A],
        again: tuple[type[Exception], ...] = (),
    ) -> A:
        """``request``'s answer over ``link()`` (waited for while it is down), asked again,
        each time waiting twice as long, until one comes: the server answers any request,
        and an identical route resent as the original. ``again``: answers that also
        call for asking again.

        Raises:
            RequestRefused: refused.
            RemoteProtocolError: the answer is malformed (unless in ``again``).
        """
        wait = _ASK_AGAIN
        retried: tuple[type[Exception], ...] = (ConnectionLost, trio.TooSlowError, *again)
        while True:
            conn = link()
            if conn is None:  # waited for only when down: a set Event is a scheduler round
                await up().wait()
                continue
            try:
                return await conn.call(request, wait)
            except retried:
                wait *= 2
                await trio.lowlevel.checkpoint()  # the link task must see the loss first

    async def _select_target(self, call_id: str, dn: str) -> str:
        answer = await self._ask(
            lambda: self._urs, lambda: self._urs_up, UrsSelectTarget(call_id, dn),
            again=(RemoteProtocolError,),
        )  # fmt: skip
        return answer.target

    async def _query_call(self, call_id: str) -> str:
        try:
            answer = await self._ask(
                lambda: self._tserver, lambda: self._tserver_up, TServerQueryCall(call_id)
            )
        except (RequestRefused, RemoteProtocolError):
            return "unknown"
        return answer.state

    async def _route(self, call_id: str, target: str, epoch: int) -> str:
        s = self.settings
        route = Route(call_id, target, s.app, s.node_id, epoch)
        try:
            await self._ask(lambda: self._tserver, lambda: self._tserver_up, route)
        except RequestRefused as exc:
            return exc.code
        except RemoteProtocolError:
            pass  # accepted (not refused); its answer says nothing we use
        return "routed"

    async def _claim_late(self, session: Session) -> None:
        outcome = await self._write(session, create=True, counted=False)
        self.feed(LateClaimed(session.call_id, outcome))

    async def _delete(self, node_id: int, epoch: int, call_id: str) -> None:
        try:
            await self.guard.delete_session(node_id, epoch, call_id)
        except StaleEpoch:
            pass  # fenced since the route: the next epoch check steps this one down

    # -- role and store ------------------------------------------------------------

    async def _claim(self, command: ClaimEpochCmd) -> None:
        """Raise the Node's epoch: in the store, or at the T-Server while the store is away.

        Both are compare-and-set, and the T-Server records which application holds each
        epoch (``fence`` by another application at the same epoch is refused), so of two
        contenders exactly one acts, whichever arbiter each of them reached.
        """
        node_id, new = self.settings.node_id, command.new
        try:
            won = await self.guard.claim_epoch(node_id, command.expected, new)
        except StoreUnavailable:
            won = None
        if won is not None:
            if won:
                self.feed(EpochClaimed(new, True, new))
                return
            try:
                current = await self.guard.current_epoch(node_id)
            except StoreUnavailable:
                current = new  # somebody holds at least ``new``
            self.feed(EpochClaimed(new, False, current))
            return
        tserver = self._tserver
        if tserver is not None:
            try:
                claim = ClaimEpoch(node_id, command.expected, new, self.settings.app)
                answer = await tserver.call(claim, 5)
                self.log.info("epoch_claimed_at_tserver", won=answer.won, epoch=answer.epoch)
                self.feed(EpochClaimed(new, answer.won, answer.epoch))
                return
            except (ConnectionLost, RequestRefused, RemoteProtocolError, trio.TooSlowError) as exc:
                self.log.warning("claim_failed", error=str(exc))
        await trio.sleep(_CLAIM_RETRY)  # no arbiter answered: nothing won, try again later
        self.feed(EpochClaimed(new, False, command.expected))

    async def _fence(self, epoch: int, conn: Connection | None = None) -> None:
        """Have the T-Server record this application as ``epoch``'s holder, then feed
        ``FenceAnswered``: over ``conn`` once (a link just made), or else over the
        T-Server link, waiting for it and asking again until the T-Server answers.

        The T-Server is the one arbiter both kinds of claim meet at: a claim won in the
        store is not acted on until the T-Server confirmed it. Before, a takeover with
        no T-Server link skipped its fence, and a partner that later claimed at the
        T-Server (its store away) won the same epoch: both primary at epoch 2 (found by
        `orsim search`, seed 179).
        """
        refused = False
        fence = Fence(self.settings.node_id, epoch, self.settings.app)
        try:
            if conn is None:
                await self._ask(lambda: self._tserver, lambda: self._tserver_up, fence)
            else:
                await conn.call(fence, 5)
        except RequestRefused as exc:
            self.log.warning("fence_refused", error=str(exc), epoch=epoch)
            refused = exc.code == "stale_epoch"
        except RemoteProtocolError as exc:
            self.log.warning("fence_failed", error=str(exc))  # answered: not refused
        except (ConnectionLost, trio.TooSlowError) as exc:
            # Only over a link just made: no answer, so nothing to feed; the next link
            # fences again, and a takeover's own fence still waits for its answer.
            self.log.warning("fence_failed", error=str(exc))
            return
        self.feed(FenceAnswered(epoch, refused))

    async def _load_sessions(self, epoch: int) -> None:
        try:
            sessions: tuple[Session, ...] | None = tuple(
                await self.guard.sessions(self.settings.node_id)
            )
        except StoreUnavailable:
            sessions = None
        self.feed(SessionsLoaded(sessions, epoch))

    async def _read_epoch(self) -> None:
        try:
            epoch = await self.guard.current_epoch(self.settings.node_id)
        except StoreUnavailable:
            return
        self.feed(EpochRead(epoch))

    async def _store_recovered(self) -> None:
        """The store answers again: bring its epoch up to ours, then tell the core."""
        node_id = self.settings.node_id
        try:
            stored = await self.guard.current_epoch(node_id)
            # Claimed at the T-Server during the outage: the store must learn it too, so
            # that the old primary's late writes are refused there as well.
            if (
                self.core.role.role.holds_node
                and stored < self.epoch
                and not await self.guard.claim_epoch(node_id, stored, self.epoch)
            ):
                stored = await self.guard.current_epoch(node_id)
        except StoreUnavailable:
            return  # away again; the next recovery retries
        self.feed(StoreBack(stored))

    async def _load_orphans(self, dead: int) -> None:
        try:
            sessions = tuple(await self.guard.sessions(dead))
        except StoreUnavailable:
            sessions = ()
        self.feed(OrphansLoaded(dead, sessions))

    async def _adopt_orphans(self, command: AdoptOrphans) -> None:
        """Fence the dead Node (store, then T-Server: if one of its applications was only
        frozen, its late commands are refused), then move each session to this Node.

        Nothing moves unless the T-Server confirmed the fence: a "dead" Node may be alive
        and routing (this application's view was late: it was frozen, say), and its routes
        under the old epoch must be refused before this Node routes the same calls. With
        no T-Server link the round is not begun; a fence that fails ends it (the next
        round tries again). Before, the fence was skipped when the link was down, and
        both Nodes routed 4 calls (found by `orsim search`, seed 67).

        Each session moves at the epoch the round began under (``command.epoch``), not at
        one this application learned meanwhile: once its Node has a newer holder, the
        store refuses the rest (they stay with the dead Node for the next round), so
        every session moved is in the store before that holder's claim, and its recovery
        finds it.
        """
        dead, s = command.node_id, self.settings
        moved: list[Session] = []
        try:
            if self._tserver is not None or mutated("adoption-skips-fence"):
                current = await self.guard.current_epoch(dead)
                if await self.guard.claim_epoch(dead, current, current + 1):
                    fenced = current + 1
                    if await self._fence_adopted(dead, fenced):
                        for orphan in command.sessions:
                            mine = attrs.evolve(orphan, node_id=s.node_id, epoch=command.epoch)
                            if await self.guard.adopt_session(mine, dead, fenced):
                                moved.append(mine)
        except (StaleEpoch, StoreUnavailable):
            # Fenced again by another adopter, this Node taken over meanwhile, or the
            # store went away: what did not move waits for the next round.
            pass
        self.feed(Adopted(dead, tuple(moved)))

    async def _fence_adopted(self, dead: int, epoch: int) -> bool:
        """Fence ``dead`` at ``epoch`` at the T-Server; whether it confirmed."""
        if mutated("adoption-skips-fence"):
            return True
        tserver = self._tserver
        try:
            if tserver is None:
                raise ConnectionLost("no T-Server link")
            await tserver.call(Fence(dead, epoch), 5)
        except (ConnectionLost, RequestRefused, RemoteProtocolError, trio.TooSlowError) as exc:
            self.log.warning("fence_failed", node_id=dead, error=str(exc), adopted=0)
            return False
        return True

    async def _push_handover(self, epoch: int) -> None:
        partner = self.settings.partner
        conn = self._link_to(partner) if partner else None
        try:
            if conn is None:
                raise ConnectionLost("no link to the partner")
            await conn.notify(Handover(epoch))
        except ConnectionLost:
            self.feed(HandoverSendFailed())

    # -- requests on our own port -------------------------------------------------

    def _status(self, conn: Connection, request: Status) -> StatusReport:
        return StatusReport(self.status().to_json())

    async def _switchover(self, conn: Connection, request: Switchover) -> SwitchedOver:
        return SwitchedOver(await self.switchover())

    async def switchover(self) -> str | None:
        """Graceful hand-over of the Node to the other application; no call is lost.

        Asked of the primary: it suspends (creates no new session; its backup watches the
        new calls), lets its running sessions finish, then hands over. Asked of the
        backup: it claims the Node at once. Answers once the roles have swapped.
        """
        done = trio.Event()
        outcome: list[str] = []
        self._switchovers.append((done, outcome))
        self.feed(SwitchoverAsked())
        with trio.move_on_after(_SWITCHOVER_TIMEOUT):
            await done.wait()
        if not done.is_set():
            self._switchovers.remove((done, outcome))
            self.feed(SwitchoverGaveUp())
            raise RequestRefused("timeout", "the switchover did not complete in time")
        if outcome and outcome[0]:
            code = "no_backup" if self.settings.partner is None else "switchover_failed"
            raise RequestRefused(code, outcome[0])
        partner = self.settings.partner
        primary = self.settings.app if self.mode == "primary" else partner
        return primary

    # -- pushes ----------------------------------------------------------------------

    # Each push was checked at the edge (``PushTable``): a malformed one cost its sender
    # its connection (one warning), never this process.

    def _on_route_requests(self, conn: Connection, pushes: RouteRequests) -> None:
        # Their expiries in this process's clock: what was left of the T-Server's timeout.
        now = trio.current_time()
        expires = tuple(None if left is None else now + max(0.0, left) for left in pushes.left)
        self.feed(RoutesRequested(pushes.call_ids, pushes.dns, expires, pushes.redelivered))

    def _on_calls_routed(self, conn: Connection, pushes: RoutedCalls) -> None:
        self.feed(CallsRouted(pushes.call_ids))

    def _on_session(self, conn: Connection, push: SessionCreated) -> None:
        self.feed(SessionAnnounced(push.call_id, push.pending, push.claimed, push.node_id))

    def _on_member(self, conn: Connection, push: Member) -> None:
        if push.info.app != conn.peer_app:
            raise RemoteProtocolError(f"{conn.peer_app} announced itself as {push.info.app!r}")
        self.feed(MemberAnnounced(push.info))

    def _on_handover(self, conn: Connection, push: Handover) -> None:
        if conn.peer_app == self.settings.partner:  # only the partner may hand the Node over
            self.feed(HandoverReceived())

    # -- peers -------------------------------------------------------------------

    def _dials(self, peer: PeerApp) -> bool:
        """Whether this application opens the link to ``peer``.

        The two halves of a Node dial each other, so each sees its partner come back at
        once after a restart (its start-up probe depends on it). Between Nodes only the
        application with the smaller name dials: one link per pair halves the mesh,
        which at 16 Nodes is what start-up spends its CPU on.
        """
        return peer.name == self.settings.partner or self.settings.app < peer.name

    def _link_to(self, app: str) -> Connection | None:
        """The open link to peer ``app`` (the one we dialled, else one it dialled)."""
        conn = self._outbound.get(app)
        if conn is None:
            conn = next(iter(self._inbound.get(app, ())), None)
        return conn

    async def _dial_peer(self, peer: PeerApp) -> None:
        async def up(conn: Connection) -> None:
            self._outbound[peer.name] = conn
            self.feed(PeerLinkUp(peer.name))
            await conn.notify(Member(self.core.member_info()))

        def down() -> None:
            self._outbound.pop(peer.name, None)
            self.feed(PeerLinkDown(peer.name))

        endpoint = Endpoint(
            peer.name, peer.address, peer.port, peer.addp_timeout, peer.addp_timeout
        )
        await self._server_link(
            endpoint, "peer", up, down, on_push=self.pushes, handler=self.handlers.handle
        )

    async def _on_inbound(self, conn: Connection) -> None:
        if conn.peer_app in self.core.peers.app_nodes:
            self._inbound.setdefault(conn.peer_app, {})[conn] = None
            self.feed(PeerLinkUp(conn.peer_app))
            if conn.peer_app != self.settings.partner:
                # We do not dial this peer: its only link is this one, so say who we are
                # (once it serves, so the frame goes out with its first write).
                self._start_soon(self._greet_when_serving, conn)

    async def _greet_when_serving(self, conn: Connection) -> None:
        try:
            await conn.notify(Member(self.core.member_info()))
        except ConnectionLost:
            pass

    async def _on_inbound_closed(self, conn: Connection) -> None:
        links = self._inbound.get(conn.peer_app)
        if links is not None and conn in links:
            del links[conn]
            self.feed(PeerLinkDown(conn.peer_app))

    # -- T-Server and URS ---------------------------------------------------------

    async def _tserver_link(self) -> None:
        s = self.settings

        async def up(conn: Connection) -> None:
            register = TServerRegister(s.app, s.node_id, tuple(s.routing_points), batches=True)
            await conn.call(register, _register_timeout(s.tserver))
            self._tserver = conn
            self._tserver_up.set()
            if self.core.role.role.holds_node:
                await self._fence(self.epoch, conn)

        def down() -> None:
            self._tserver = None
            if self._tserver_up.is_set():  # an unset one may have waiters: keep it
                self._tserver_up = trio.Event()
            if self._deciding:
                self._check_decided()

        await self._server_link(s.tserver, "T-Server", up, down, on_push=self.pushes)

    async def _urs_link(self) -> None:
        s = self.settings

        async def up(conn: Connection) -> None:
            await conn.call(UrsRegister(s.app, s.node_id), _register_timeout(s.urs))
            self._urs = conn
            self._urs_up.set()

        def down() -> None:
            self._urs = None
            # Replacing an unset Event would strand the calls waiting on it (found by
            # `orsim search`: a registration that failed after a reconnect lost a call).
            if self._urs_up.is_set():
                self._urs_up = trio.Event()

        await self._server_link(s.urs, "URS", up, down)

    async def _server_link(
        self,
        server: Endpoint,
        kind: str,
        up: Callable[[Connection], Awaitable[None]],
        down: Callable[[], None],
        on_push: PushHandler | None = None,
        handler: RequestHandler | None = None,
    ) -> None:
        """Keep one connection to ``server``: connect, register (``up``), reconnect when lost.

        A server with a backup (a redundant T-Server or URS) is tried together with it:
        once the link is lost, the next attempts wait the connection's
        ``reconnect-timeout``, then try the lost server again and, if it does not take
        the link (unreachable, or a backup that says so), its twin at once; only when
        both failed is the next round ``reconnect-timeout`` away (reference section 8:
        "the application makes alternate attempts to restore the failed communication
        session and to establish a session with the redundant process"). One attempt
        per ``reconnect-timeout`` stranded a primary whose link to a healthy T-Server
        was dropped (it froze) for two timeouts, longer than a call may wait (found by
        `orsim search`, seed 61: 2 calls lost). A lone server is retried at once.
        """
        s = self.settings
        pair, turn, failed = server.pair(), 0, 0
        while True:
            target = pair[turn % len(pair)]
            if len(pair) == 1:
                conn = await connect_with_retry(
                    self.network, [(target.address, target.port)], app=s.app,
                    app_type=s.app_type, timeout=math.inf, what=f"{kind} {target.name}",
                    addp_timeout=server.addp_timeout,
                    addp_remote_timeout=server.addp_remote_timeout,
                    addp_trace=server.addp_trace, on_push=on_push, handler=handler,
                )  # fmt: skip
            else:
                try:  # one attempt, as long as a handshake may take
                    conn = await open_connection(
                        self.network, target.address, target.port, app=s.app,
                        app_type=s.app_type, addp_timeout=server.addp_timeout,
                        addp_remote_timeout=server.addp_remote_timeout,
                        addp_trace=server.addp_trace, on_push=on_push, handler=handler,
                        timeout=_register_timeout(target),
                    )  # fmt: skip
                except (OSError, ConnectionLost, trio.TooSlowError, RemoteProtocolError) as exc:
                    self.log.warning("server_unreachable", server=target.name, error=str(exc))
                    turn, failed = turn + 1, failed + 1
                    await _after_failed_attempt(server, failed)
                    continue
            registered = False
            async with trio.open_nursery() as nursery:
                nursery.start_soon(conn.serve)
                try:
                    await up(conn)
                    registered = True
                    self.log.info("server_connected", server=target.name, kind=kind)
                    await conn.closed.wait()
                except (
                    ConnectionLost, RequestRefused, RemoteProtocolError, trio.TooSlowError,
                ) as exc:  # fmt: skip
                    self.log.warning("server_register_failed", server=target.name, error=str(exc))
                finally:
                    down()
                    nursery.cancel_scope.cancel()
            await conn.aclose()
            self.log.warning("server_lost", server=target.name, reason=conn.close_reason)
            if len(pair) == 1:
                await trio.sleep(0.05)
            elif registered:  # a lost link: a new round, the lost server first
                failed = 0
                await trio.sleep(server.reconnect_timeout)
            else:  # it did not take the link: its twin next
                turn, failed = turn + 1, failed + 1
                await _after_failed_attempt(server, failed)


async def _after_failed_attempt(server: Endpoint, failed: int) -> None:
    """Between attempts at a redundant pair: the twin at once, but a new round, once
    both servers of the pair failed in a row, only after ``reconnect-timeout``."""
    if failed % len(server.pair()) == 0:
        await trio.sleep(server.reconnect_timeout)
    else:
        await trio.lowlevel.checkpoint()


def _register_timeout(server: Endpoint) -> float:
    """How long a registration may go unanswered before the link is dropped and made
    again: a partition drops it like any request (found by `orsim search`: a 10 s wait
    left a restarted primary without a URS, and its calls were lost)."""
    return max(_ASK_AGAIN, 2 * server.addp_timeout)
