"""The ORS node at run time: peers, T-Server and URS links, sessions, and HA role.

Theory of operation
-------------------
Every ORS application of a cluster listens on its Application's port; the two halves of
a Node dial each other, and between Nodes the application with the smaller name dials
(full mesh, one link per pair). Over each link it announces itself (``member`` push:
app, Node ID, data center, mode, epoch) when it connects and whenever its mode changes,
to its partner at every heartbeat and to the others every few; ADDP closes a silent
link, and a closed link is seen at once, so the *membership view* always says which
peers are reachable.

Both applications of every Node register with the T-Server on the routing points, so each
gets every ``route_request``. For each call every application computes the Assigned and
Reserved Node over the live Nodes (``assign``): the primary of the Assigned Node creates
the session at once; its backup watches for ``call-watching-timeout`` and creates the
session only if it has become primary by then; the primary of the Reserved Node watches
for twice that (so the Assigned Node's backup always gets its turn first) and creates the
session if nobody did. "Somebody did" is learned from the T-Server's ``call_routed``
pushes and from the peers' ``session`` pushes.

A session is written to the shared store (with the Node's epoch) before the URS is asked
for a target and the T-Server for the route; it is deleted once the call is routed. When
a backup loses its primary (or is handed over to), it raises the Node's epoch in the store
by compare-and-set, tells the T-Server the new epoch (``fence``), becomes primary and
carries on every session of its Node found in the store. The store and the T-Server refuse
anything carrying an older epoch; a primary that meets a refusal, or hears of a higher
epoch for its Node, steps down to backup at once. So two applications of one Node can
never both act as primary on the calls.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from orsim.errors import ConnectionLost, RemoteError
from orsim.logs import get_logger
from orsim.node._assignment import assign
from orsim.node._membership import MemberInfo, PeerView
from orsim.node._role import (
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
    Role,
    RoleMachine,
    StepDown,
    SwitchoverFailed,
    SwitchoverRequested,
    SwitchoverTimedOut,
)
from orsim.node._settings import Endpoint, NodeSettings, PeerApp
from orsim.node._store_guard import StoreGuard
from orsim.node._watch import Verdict, Watcher
from orsim.store import Session, SessionStore, StaleEpoch, StoreUnavailable
from orsim.wire import (
    Connection,
    Network,
    Push,
    PushHandler,
    Request,
    RequestFailed,
    RequestHandler,
    connect_with_retry,
    encode,
    frame_counts,
    serve_app,
)

#: Heartbeats between two announcements to the applications of other Nodes. The partner
#: hears every heartbeat (its role depends on it); the others' view of this application
#: changes only with its mode, which is announced at once, and ADDP keeps idle links
#: checked, so they only need a refresh. A full mesh of 32 applications at every
#: heartbeat was 4,000 frames/s of idle chatter through the proxy.
OTHER_NODES_EVERY = 8
#: How many recently routed call ids a node remembers (to skip already-served calls).
_ROUTED_MEMORY = 100_000
#: Longest a graceful switchover waits for the primary's sessions to finish.
_SWITCHOVER_DRAIN = 3.0
#: How long both applications of a Node must be unreachable before live Nodes adopt
#: its stored sessions (seconds; at least the call-watching-timeout).
_ORPHAN_GRACE = 2.0
#: Longest a switchover request waits for the roles to swap.
_SWITCHOVER_TIMEOUT = 20.0
#: Session pushes waiting for one peer beyond which further ones are dropped (the peer
#: is not reading; ADDP will close the link). They only shorten watches; the store's
#: claim keeps creation exactly-once without them.
_PEER_BACKLOG = 10_000
#: How long start-up waits for the store to give the Node's epoch before starting
#: without it (a store that is away is then an outage like any other).
_STARTUP_STORE_WAIT = 5.0
#: Pause before a claim is tried again when neither the store nor the T-Server answered.
_CLAIM_RETRY = 0.2


@attrs.define(eq=False)
class OrsNode:
    """One ORS application (primary or backup half of a Node) at run time."""

    settings: NodeSettings
    network: Network
    store: SessionStore
    listen_port: int | None = None
    mode_since: float = attrs.Factory(time.time)
    calls_routed: int = 0
    sessions_recovered: int = 0
    sessions_adopted: int = 0
    peers: PeerView = attrs.field(init=False)
    role: RoleMachine = attrs.field(init=False)
    watcher: Watcher = attrs.field(init=False)
    #: Every store operation goes through it: a deadline each, degraded mode meanwhile.
    guard: StoreGuard = attrs.field(init=False)
    #: The Node's sessions must be recovered once the store is back.
    _recovery_pending: bool = False
    #: Test-only (``ORSIM_TEST_FREEZE=APP:N``): SIGSTOP this process once its Nth session
    #: is in the store and not yet routed, so a test makes "the primary freezes in the
    #: middle of a call's store work" happen at a known moment rather than by luck.
    freeze_after_sessions: int | None = None
    #: Sessions being written to the store: call id -> when the write began.
    _persisting: dict[str, float] = attrs.Factory(dict)
    _dns: dict[str, str] = attrs.Factory(dict)
    _unowned: dict[str, tuple[str, float, float]] = attrs.Factory(dict)
    _active: dict[str, trio.CancelScope] = attrs.Factory(dict)
    _handled: dict[str, None] = attrs.Factory(dict)
    #: Reserved Node of the calls being created, as assigned when their event arrived.
    _reserved: dict[str, int | None] = attrs.Factory(dict)
    _tserver: Connection | None = None
    _urs: Connection | None = None
    _tserver_up: trio.Event = attrs.Factory(trio.Event)
    _urs_up: trio.Event = attrs.Factory(trio.Event)
    _membership_changed: trio.Event = attrs.Factory(trio.Event)
    _watch_changed: trio.Event = attrs.Factory(trio.Event)
    #: When the watch loop wakes next by itself (it needs waking only for earlier news).
    _watch_at: float = math.inf
    _outbound: dict[str, Connection] = attrs.Factory(dict)
    _inbound: dict[str, set[Connection]] = attrs.Factory(dict)
    _events: trio.MemorySendChannel[Event] = attrs.field(init=False)
    _event_queue: trio.MemoryReceiveChannel[Event] = attrs.field(init=False)
    _switchovers: list[tuple[trio.Event, list[str]]] = attrs.Factory(list)
    _nursery: trio.Nursery | None = None
    log: Any = None

    def __attrs_post_init__(self) -> None:
        s = self.settings
        self.peers = PeerView(
            nodes=dict(s.nodes) or {s.node_id: s.data_center},
            app_nodes={p.name: p.node_id for p in s.peers},
        )
        self.role = RoleMachine(configured_primary=not s.configured_backup, epoch=0)
        self.watcher = Watcher(s.node_id, s.call_watching_timeout_ms)
        self.guard = StoreGuard(self.store, app=s.app, on_recovered=self._store_recovered)
        self._events, self._event_queue = trio.open_memory_channel[Event](10_000)
        self.log = get_logger(app=s.app, node_id=s.node_id)

    @property
    def mode(self) -> str:
        return self.role.role.mode

    @property
    def epoch(self) -> int:
        return self.role.epoch

    @property
    def call_watching_timeout_ms(self) -> float:
        return self.watcher.timeout_ms

    # -- lifecycle ---------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; ``started`` reports the bound port once the role is decided."""
        s = self.settings
        epoch = await self.guard.initial_epoch(s.node_id, _STARTUP_STORE_WAIT)
        if epoch is None:
            self.log.warning("store_unavailable_at_start", waited_s=_STARTUP_STORE_WAIT)
        self.role = RoleMachine(configured_primary=not s.configured_backup, epoch=epoch or 0)
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
                    handler=self._handle_request,
                    on_push=self._on_push,
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
            nursery.start_soon(self._role_driver)
            nursery.start_soon(self._startup_probe)
            while self.role.role in (Role.STARTING, Role.CLAIMING):
                await self._wait_membership()
            nursery.start_soon(self._heartbeat_loop)
            nursery.start_soon(self._orphan_loop)
            nursery.start_soon(self._watch_loop)
            nursery.start_soon(self._slow_store_loop)
            task_status.started(bound)

    def status(self) -> dict[str, Any]:
        s = self.settings
        return {
            "app": s.app,
            "type": s.app_type,
            "node_id": s.node_id,
            "cluster": s.cluster,
            "data_center": s.data_center,
            "mode": self.mode,
            "role": self.role.role.value,
            "mode_since": self.mode_since,
            "epoch": self.epoch,
            "pid": os.getpid(),
            "sessions": len(self._active),
            "calls_routed": self.calls_routed,
            "sessions_recovered": self.sessions_recovered,
            "sessions_adopted": self.sessions_adopted,
            "watching": len(self.watcher.watches),
            "call_watching_timeout_ms": self.call_watching_timeout_ms,
            "live_nodes": sorted(self.peers.live_nodes(s.node_id)),
            "tserver_connected": self._tserver is not None,
            "urs_connected": self._urs is not None,
            **self.guard.counts(),
            **frame_counts(),
        }

    def set_call_watching_timeout(self, ms: float) -> None:
        """Apply a new call-watching-timeout to calls that arrive from now on."""
        self.log.info(
            "option_applied",
            option="orchestration/call-watching-timeout",
            old=self.watcher.timeout_ms,
            new=ms,
            note="a real ORS reads this option only at start-up",
        )
        self.watcher.timeout_ms = ms

    # -- role --------------------------------------------------------------------

    def post(self, event: Event) -> None:
        """Hand a role event to the role driver (never blocks)."""
        try:
            self._events.send_nowait(event)
        except trio.WouldBlock:
            self.log.warning("role_event_dropped", event=repr(event))

    async def _startup_probe(self) -> None:
        """Give the partner a few heartbeats to announce itself, then start without it.

        A restarted primary must not fence a backup that took over meanwhile, and the
        configured backup waits longer so that, started together, the primary leads.
        """
        s = self.settings
        if s.partner_peer is None:
            self.post(PartnerLost())
            return
        window = max(4 * s.heartbeat, 1.0) * (2 if s.configured_backup else 1)
        await trio.sleep(window)
        if self.role.role is Role.STARTING:
            self.post(PartnerLost())

    async def _role_driver(self) -> None:
        """Feed role events to the machine one at a time and carry out its actions."""
        async for event in self._event_queue:
            before = self.role.role
            actions = list(self.role.handle(event))
            while actions:
                action = actions.pop(0)
                if isinstance(action, ClaimEpoch):
                    actions.extend(self.role.handle(await self._claim(action)))
                elif isinstance(action, Fence):
                    await self._fence_tserver()
                elif isinstance(action, RecoverSessions):
                    await self._recover_sessions()
                elif isinstance(action, StepDown):
                    self.log.info("stepped_down", epoch=self.epoch)
                elif isinstance(action, HandOver):
                    self._start_soon(self._hand_over)
                elif isinstance(action, SwitchoverFailed):
                    self._finish_switchovers(action.reason)
            if self.role.role is not before:
                self._role_changed(before, event)

    def _role_changed(self, before: Role, event: Event) -> None:
        now = self.role.role
        self.log.info(
            "mode_changed",
            old=before.mode,
            mode=now.mode,
            role=now.value,
            epoch=self.epoch,
            reason=type(event).__name__,
        )
        if before.mode != now.mode:
            self.mode_since = time.time()
        for call_id in self.watcher.set_role(now, trio.current_time()):
            self._start_call(call_id, self._dns.get(call_id, ""))
        took_over = now is Role.PRIMARY and not before.holds_node
        handed_over = before is Role.SUSPENDING and now is Role.BACKUP
        if took_over or handed_over:
            self._finish_switchovers(None)
        self._membership_event()
        self._start_soon(self._announce)

    def _start_soon(self, fn: Any, *args: Any) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(fn, *args)

    async def _claim(self, action: ClaimEpoch) -> Event:
        """Raise the Node's epoch: in the store, or at the T-Server while the store is away.

        Both are compare-and-set, and the T-Server records which application holds each
        epoch (``fence`` by another application at the same epoch is refused), so of two
        contenders exactly one acts, whichever arbiter each of them reached.
        """
        node_id = self.settings.node_id
        try:
            won = await self.guard.claim_epoch(node_id, action.expected, action.new)
        except StoreUnavailable:
            won = None
        if won is not None:
            if won:
                return ClaimWon(action.new)
            try:
                return ClaimLost(await self.guard.current_epoch(node_id))
            except StoreUnavailable:
                return ClaimLost(action.new)  # somebody holds at least ``new``
        tserver = self._tserver
        if tserver is not None:
            try:
                answer = await tserver.request(
                    "claim_epoch",
                    {
                        "node_id": node_id,
                        "expected": action.expected,
                        "new": action.new,
                        "app": self.settings.app,
                    },
                    timeout=5,
                )
                assert isinstance(answer, dict)
                self.log.info("epoch_claimed_at_tserver", won=answer["won"], epoch=answer["epoch"])
                if answer["won"]:
                    return ClaimWon(action.new)
                return ClaimLost(int(answer["epoch"]))
            except (ConnectionLost, RemoteError, trio.TooSlowError) as exc:
                self.log.warning("claim_failed", error=str(exc))
        await trio.sleep(_CLAIM_RETRY)  # no arbiter answered: nothing won, try again later
        return ClaimLost(action.expected)

    async def _fence_tserver(self) -> None:
        if self._tserver is None:
            return
        epoch = self.epoch
        try:
            await self._tserver.request(
                "fence",
                {"node_id": self.settings.node_id, "epoch": epoch, "app": self.settings.app},
                timeout=5,
            )
        except RemoteError as exc:
            self.log.warning("fence_refused", error=str(exc), epoch=epoch)
            if exc.code == "stale_epoch" and self.role.role.holds_node and self.epoch == epoch:
                self.post(Fenced(epoch))  # another application holds this epoch
        except (ConnectionLost, trio.TooSlowError) as exc:
            self.log.warning("fence_failed", error=str(exc))

    async def _store_recovered(self) -> None:
        """The store answers again: bring its epoch up to ours, then recover sessions."""
        node_id = self.settings.node_id
        try:
            stored = await self.guard.current_epoch(node_id)
            # Claimed at the T-Server during the outage: the store must learn it too, so
            # that the old primary's late writes are refused there as well.
            if (
                self.role.role.holds_node
                and stored < self.epoch
                and not await self.guard.claim_epoch(node_id, stored, self.epoch)
            ):
                stored = await self.guard.current_epoch(node_id)
            if stored > self.epoch:
                self.post(EpochObserved(stored))
                return
            if self._recovery_pending and self.role.role.holds_node:
                await self._recover_sessions()
        except StoreUnavailable:
            pass  # away again; the next recovery retries

    async def _recover_sessions(self) -> None:
        try:
            stored = await self.guard.sessions(self.settings.node_id)
        except StoreUnavailable:
            self._recovery_pending = True
            self.log.warning("sessions_recovery_deferred", reason="store unavailable")
            return
        self._recovery_pending = False
        recovered = 0
        for session in stored:
            self.watcher.on_session_created(session.call_id)
            if session.call_id in self._handled or session.call_id in self._active:
                continue
            recovered += 1
            self._start_call(session.call_id, session.dn, recovered=session)
        if recovered:
            self.sessions_recovered += recovered
            self.log.info("sessions_recovered", count=recovered, epoch=self.epoch)

    def _partner_news(self) -> None:
        """Turn the partner's link state and announcements into role events."""
        partner = self.settings.partner
        if partner is None:
            return
        if not self.peers.is_live(partner):
            self.post(PartnerLost())
            return
        info = self.peers.info.get(partner)
        if info is not None:
            self.post(PartnerSeen(primary=info.mode == "primary", epoch=info.epoch))

    async def _wait_membership(self) -> None:
        await self._membership_changed.wait()

    def _membership_event(self) -> None:
        self._membership_changed.set()
        self._membership_changed = trio.Event()

    # -- peers -------------------------------------------------------------------

    def _member_info(self) -> dict[str, Any]:
        s = self.settings
        return {
            "app": s.app,
            "node_id": s.node_id,
            "data_center": s.data_center,
            "mode": self.mode,
            "epoch": self.epoch,
        }

    async def _announce(self, everyone: bool = True) -> None:
        """Push this application's ``member`` info to its peers (or only its partner)."""
        info = self._member_info()
        partner = self.settings.partner
        names = [partner] if not everyone and partner else list(self.peers.app_nodes)
        for name in names:
            conn = self._link_to(name)
            if conn is None:
                continue
            try:
                await conn.push("member", info)
            except ConnectionLost:
                pass

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

    async def _greet(self, conn: Connection) -> None:
        try:
            await conn.push("member", self._member_info())
        except ConnectionLost:
            pass

    async def _dial_peer(self, peer: PeerApp) -> None:
        async def up(conn: Connection) -> None:
            self._outbound[peer.name] = conn
            self._peer_link_changed(peer.name, up=True)
            await conn.push("member", self._member_info())

        def down() -> None:
            self._outbound.pop(peer.name, None)
            self._peer_link_changed(peer.name, up=False)

        endpoint = Endpoint(
            peer.name, peer.address, peer.port, peer.addp_timeout, peer.addp_timeout
        )
        await self._server_link(
            endpoint, "peer", up, down, on_push=self._on_push, handler=self._handle_request
        )

    def _peer_link_changed(self, app: str, *, up: bool) -> None:
        if up:
            self.peers.link_up(app)
        else:
            self.peers.link_down(app)
        self._membership_event()
        if app == self.settings.partner:
            self._partner_news()

    async def _on_inbound(self, conn: Connection) -> None:
        if conn.peer_app in self.peers.app_nodes:
            self._inbound.setdefault(conn.peer_app, set()).add(conn)
            self._peer_link_changed(conn.peer_app, up=True)
            if conn.peer_app != self.settings.partner:
                # We do not dial this peer: its only link is this one, so say who we are.
                self._start_soon(self._greet, conn)

    async def _on_inbound_closed(self, conn: Connection) -> None:
        links = self._inbound.get(conn.peer_app)
        if links is not None and conn in links:
            links.discard(conn)
            self._peer_link_changed(conn.peer_app, up=False)

    async def _heartbeat_loop(self) -> None:
        s = self.settings
        beat = 0
        while True:
            await trio.sleep(s.heartbeat)
            beat += 1
            await self._announce(everyone=beat % OTHER_NODES_EVERY == 0)
            if self.role.role.holds_node:
                try:
                    stored = await self.guard.current_epoch(s.node_id)
                except StoreUnavailable:
                    continue
                if stored > self.epoch:
                    self.post(EpochObserved(stored))

    async def _orphan_loop(self) -> None:
        """Carry on the stored sessions of Nodes whose both applications are gone.

        A Node counts as dead once none of its applications has been reachable for
        ``_ORPHAN_GRACE`` (and at least the call-watching-timeout). Each live primary then
        adopts the dead Node's sessions assigned to its own Node over the live Nodes: it
        fences the dead Node (raises its epoch in the store and at the T-Server, so if
        one of its applications was only frozen, its late commands are refused), and
        moves each session to itself in one atomic store step before routing the call.
        """
        s = self.settings
        gone_since: dict[int, float] = {}
        while True:
            await trio.sleep(max(s.heartbeat * 4, 0.5))
            now = trio.current_time()
            live = self.peers.live_nodes(s.node_id)
            for node_id in self.peers.nodes:
                if node_id in live:
                    gone_since.pop(node_id, None)
                else:
                    gone_since.setdefault(node_id, now)
            if not self.role.role.creates_sessions:
                continue
            grace = max(_ORPHAN_GRACE, self.call_watching_timeout_ms / 1000.0)
            for node_id, since in list(gone_since.items()):
                if now - since >= grace:
                    try:
                        await self._adopt_orphans(node_id, live)
                    except StoreUnavailable:
                        break  # adoption needs the store; the next round tries again
            self._take_unowned_calls(now, live)

    def _take_unowned_calls(self, now: float, live: dict[int, str]) -> None:
        """Create calls nobody created whose Assigned and Reserved Nodes have both gone.

        Assignment is fixed when a call arrives; when membership later changes so that the
        call now falls to this Node, and still no session exists after the
        call-watching-timeout, this primary creates it (the store's claim keeps creation
        exactly-once if another Node does the same).
        """
        cwt = self.call_watching_timeout_ms / 1000.0
        for call_id, (dn, arrived, expires) in list(self._unowned.items()):
            if expires <= now or call_id in self._handled:
                del self._unowned[call_id]
            elif (
                now - arrived >= 2 * cwt and assign(call_id, live).assigned == self.settings.node_id
            ):
                del self._unowned[call_id]
                if call_id not in self._active:
                    self.log.info("unowned_call_created", call_id=call_id)
                    self._start_call(call_id, dn)

    async def _adopt_orphans(self, dead: int, live: dict[int, str]) -> None:
        s = self.settings
        orphans = [
            o
            for o in await self.guard.sessions(dead)
            if o.call_id not in self._handled
            and o.call_id not in self._active
            and assign(o.call_id, live).assigned == s.node_id
        ]
        if not orphans:
            return
        current = await self.guard.current_epoch(dead)
        if not await self.guard.claim_epoch(dead, current, current + 1):
            return  # another Node is fencing it too; look again next round
        fenced = current + 1
        if self._tserver is not None:
            try:
                await self._tserver.request("fence", {"node_id": dead, "epoch": fenced}, timeout=5)
            except (ConnectionLost, RemoteError, trio.TooSlowError) as exc:
                self.log.warning("fence_failed", node_id=dead, error=str(exc))
        adopted = 0
        for orphan in orphans:
            mine = attrs.evolve(orphan, node_id=s.node_id, epoch=self.epoch)
            try:
                moved = await self.guard.adopt_session(mine, dead, fenced)
            except StaleEpoch:
                return  # fenced again by another adopter, or we lost our own Node
            if moved:
                adopted += 1
                self._start_call(orphan.call_id, orphan.dn, recovered=mine)
        if adopted:
            self.sessions_adopted += adopted
            self.log.info("sessions_adopted", count=adopted, from_node=dead, epoch=self.epoch)

    async def _on_push(self, conn: Connection, push: Push) -> None:
        data = push.data
        if push.topic == "member":
            info = MemberInfo(
                app=str(data["app"]),
                node_id=int(data["node_id"]),
                data_center=str(data["data_center"]),
                mode=str(data["mode"]),
                epoch=int(data["epoch"]),
            )
            changed = self.peers.info.get(info.app) != info
            self.peers.announce(info)
            if info.app == self.settings.partner:
                self._partner_news()  # every heartbeat: the role machine may have doubted it
            if changed:
                self._membership_event()
        elif push.topic == "session":
            # Someone created the session: stop watching, but keep the call recoverable
            # (its creator may die before routing it; the store then still has it).
            self.watcher.on_session_created(str(data["call_id"]))
            self._unowned.pop(str(data["call_id"]), None)
        elif push.topic == "handover":
            if conn.peer_app == self.settings.partner:
                self.post(SwitchoverRequested())
        elif push.topic == "route_request":
            self._on_route_request(data)
        elif push.topic == "call_routed":
            self._mark_handled(str(data["call_id"]))

    def _push_session(self, call_id: str) -> None:
        """Tell the peers that watch this call that its session exists.

        Only the partner (which watches every call of the Node) and the Reserved Node's
        primary watch a call; the others stop remembering it on ``call_routed``. When the
        Reserved Node's primary is not known yet, both its applications hear it.
        """
        s = self.settings
        if call_id in self._reserved:
            reserved = self._reserved.pop(call_id)
        else:
            reserved = assign(call_id, self.peers.live_nodes(s.node_id)).reserved
        targets = [app for app, node_id in self.peers.app_nodes.items() if node_id == reserved]
        primaries = [a for a in targets if (i := self.peers.info.get(a)) and i.mode == "primary"]
        if primaries:
            targets = primaries
        if s.partner is not None:
            targets.append(s.partner)
        frame: bytes | None = None
        for app in targets:
            conn = self._link_to(app)
            if conn is None:
                continue
            frame = frame or encode(Push("session", {"call_id": call_id, "node_id": s.node_id}))
            try:
                conn.send_frame_nowait(frame, limit=_PEER_BACKLOG)
            except (ConnectionLost, RuntimeError):
                pass

    # -- requests on our own port -------------------------------------------------

    async def _handle_request(self, conn: Connection, request: Request) -> Any:
        if request.method == "status":
            return self.status()
        if request.method == "switchover":
            return await self._switchover()
        raise RequestFailed(
            "unknown_method", f"{self.settings.app} has no method {request.method!r}"
        )

    async def _switchover(self) -> dict[str, Any]:
        """Graceful hand-over of the Node to the other application; no call is lost.

        Asked of the primary: it suspends (creates no new session; its backup watches the
        new calls), lets its running sessions finish, then hands over. Asked of the
        backup: it claims the Node at once. Answers once the roles have swapped.
        """
        partner = self.settings.partner
        if partner is None:
            raise RequestFailed("no_backup", f"{self.settings.app} has no partner to switch to")
        done = trio.Event()
        outcome: list[str] = []
        self._switchovers.append((done, outcome))
        self.post(SwitchoverRequested())
        with trio.move_on_after(_SWITCHOVER_TIMEOUT):
            await done.wait()
        if not done.is_set():
            self.post(SwitchoverTimedOut())
            raise RequestFailed("timeout", "the switchover did not complete in time")
        if outcome and outcome[0]:
            raise RequestFailed("switchover_failed", outcome[0])
        primary = self.settings.app if self.mode == "primary" else partner
        return {"new_primary": primary}

    def _finish_switchovers(self, reason: str | None) -> None:
        pending, self._switchovers = self._switchovers, []
        for done, outcome in pending:
            outcome.append(reason or "")
            done.set()

    async def _hand_over(self) -> None:
        """Suspending primary: drain running sessions, then ask the partner to take over."""
        self.log.info("switchover_started", sessions=len(self._active))
        with trio.move_on_after(_SWITCHOVER_DRAIN):
            while self._active:
                await trio.sleep(0.01)
        partner = self.settings.partner
        conn = self._link_to(partner) if partner else None
        if conn is None:
            self.post(SwitchoverTimedOut())
            return
        try:
            await conn.push("handover", {"epoch": self.epoch})
        except ConnectionLost:
            self.post(SwitchoverTimedOut())
            return
        with trio.move_on_after(_SWITCHOVER_TIMEOUT / 2):
            while self.role.role is Role.SUSPENDING:
                await self._wait_membership()
        if self.role.role is Role.SUSPENDING:
            self.post(SwitchoverTimedOut())

    # -- T-Server and URS ---------------------------------------------------------

    async def _tserver_link(self) -> None:
        s = self.settings

        async def up(conn: Connection) -> None:
            await conn.request(
                "register",
                {"app": s.app, "node_id": s.node_id, "dns": list(s.routing_points)},
                timeout=10,
            )
            self._tserver = conn
            self._tserver_up.set()
            if self.role.role.holds_node:
                await self._fence_tserver()

        def down() -> None:
            self._tserver = None
            self._tserver_up = trio.Event()

        await self._server_link(s.tserver, "T-Server", up, down, on_push=self._on_push)

    async def _urs_link(self) -> None:
        s = self.settings

        async def up(conn: Connection) -> None:
            await conn.request("register", {"app": s.app, "node_id": s.node_id}, timeout=10)
            self._urs = conn
            self._urs_up.set()

        def down() -> None:
            self._urs = None
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
        """Keep one connection to ``server``: connect, register (``up``), reconnect when lost."""
        s = self.settings
        while True:
            conn = await connect_with_retry(
                self.network,
                [(server.address, server.port)],
                app=s.app,
                app_type=s.app_type,
                timeout=math.inf,
                what=f"{kind} {server.name}",
                addp_timeout=server.addp_timeout,
                addp_remote_timeout=server.addp_remote_timeout,
                on_push=on_push,
                handler=handler,
            )
            async with trio.open_nursery() as nursery:
                nursery.start_soon(conn.serve)
                try:
                    await up(conn)
                    self.log.info("server_connected", server=server.name, kind=kind)
                    await conn.closed.wait()
                except (ConnectionLost, RemoteError, trio.TooSlowError) as exc:
                    self.log.warning("server_register_failed", server=server.name, error=str(exc))
                finally:
                    down()
                    nursery.cancel_scope.cancel()
            await conn.aclose()
            self.log.warning("server_lost", server=server.name, reason=conn.close_reason)
            await trio.sleep(0.05)

    # -- calls -------------------------------------------------------------------

    def _mark_handled(self, call_id: str) -> None:
        """The call is routed (or over): never create or recover it again."""
        self._handled[call_id] = None
        if len(self._handled) > _ROUTED_MEMORY:
            del self._handled[next(iter(self._handled))]
        self.watcher.on_session_created(call_id)
        self._dns.pop(call_id, None)
        self._unowned.pop(call_id, None)

    def _on_route_request(self, data: dict[str, Any]) -> None:
        call_id = str(data["call_id"])
        if call_id in self._handled or call_id in self._active:
            return
        dn = str(data.get("dn", ""))
        now = trio.current_time()
        deadline = data.get("deadline")
        created = data.get("created_at")
        expires = None
        if isinstance(deadline, int | float) and isinstance(created, int | float):
            expires = now + max(0.0, float(deadline) - float(created))
        decision = self.watcher.on_route_request(
            call_id, now, self.peers.live_nodes(self.settings.node_id), expires=expires
        )
        if decision.verdict is Verdict.CREATE:
            self._reserved[call_id] = decision.assignment.reserved
            self._start_call(call_id, dn)
        elif decision.verdict is Verdict.WATCH:
            self._dns[call_id] = dn
            wake = decision.deadline if decision.deadline is not None else now
            if min(wake, math.inf if expires is None else expires) < self._watch_at:
                self._watch_changed.set()
        else:
            # Not ours now; remembered until someone creates its session, in case both
            # its Assigned and its Reserved Node die before anyone does.
            self._unowned[call_id] = (dn, now, expires if expires is not None else math.inf)

    async def _watch_loop(self) -> None:
        while True:
            deadline = self.watcher.next_deadline()
            self._watch_changed = trio.Event()
            self._watch_at = math.inf if deadline is None else deadline
            with trio.move_on_at(self._watch_at):
                await self._watch_changed.wait()
            self._watch_at = -math.inf  # busy: any news wakes it again
            for call_id in self.watcher.due(trio.current_time()):
                if call_id in self._handled or call_id in self._active:
                    continue
                self.log.info("watched_call_created", call_id=call_id)
                self._start_call(call_id, self._dns.pop(call_id, ""))

    def _start_call(self, call_id: str, dn: str, recovered: Session | None = None) -> None:
        assert self._nursery is not None
        scope = trio.CancelScope()
        self._active[call_id] = scope
        self._nursery.start_soon(self._serve_call, call_id, dn, recovered, scope)

    async def _serve_call(
        self, call_id: str, dn: str, recovered: Session | None, scope: trio.CancelScope
    ) -> None:
        s = self.settings
        epoch = self.epoch
        with scope:
            try:
                session = Session(
                    call_id=call_id,
                    node_id=s.node_id,
                    epoch=epoch,
                    dn=dn,
                    state="created",
                    target=recovered.target if recovered else "",
                    created_at=recovered.created_at if recovered else time.time(),
                    data={"app": s.app},
                )
                self._persisting[call_id] = trio.current_time()
                try:
                    owned = await self._persist(session, recovered is not None)
                finally:
                    told = self._persisting.pop(call_id, None) is None
                if not owned:
                    # Another Node owns the call (a Reserved Node and the Assigned Node
                    # met at the deadline): the store makes creation exactly-once.
                    self.log.info("session_owned_elsewhere", call_id=call_id, epoch=epoch)
                    self.watcher.on_session_created(call_id)
                    return
                if not told:
                    self._push_session(call_id)
                if self.freeze_after_sessions is not None:
                    self._test_freeze()
                if call_id in self._handled:
                    # Routed by another Node while the store kept this one waiting.
                    await self.guard.delete_session(s.node_id, epoch, call_id)
                    return
                target = session.target or await self._select_target(call_id, dn)
                outcome = await self._route(call_id, target, epoch)
                if outcome == "stale_epoch":
                    self.post(Fenced(epoch))
                    return
                if outcome == "routed":
                    self.calls_routed += 1
                self._mark_handled(call_id)
                await self.guard.delete_session(s.node_id, epoch, call_id)
            except StaleEpoch:
                self.log.info("stale_epoch_in_store", call_id=call_id, epoch=epoch)
                self.post(Fenced(epoch))
            finally:
                self._active.pop(call_id, None)
                self._reserved.pop(call_id, None)

    def _test_freeze(self) -> None:
        assert self.freeze_after_sessions is not None
        self.freeze_after_sessions -= 1
        if self.freeze_after_sessions == 0:
            self.log.warning("test_freeze", reason="ORSIM_TEST_FREEZE")
            os.kill(os.getpid(), signal.SIGSTOP)

    async def _slow_store_loop(self) -> None:
        """Tell the watchers of a call whose session write is slow that it is taken.

        The ``session`` push normally follows the store's answer (so a primary that dies
        before writing leaves the call to its backup's watch). A store that stalls
        would hold the push back past the watchers' timeouts and make the Reserved Node
        create the call too; so after half the call-watching-timeout the push goes out
        anyway: the call is this Node's, written or not.
        """
        while True:
            patience = self.call_watching_timeout_ms / 2000.0
            await trio.sleep(max(patience / 2, 0.01))
            now = trio.current_time()
            for call_id, since in list(self._persisting.items()):
                if now - since >= patience:
                    del self._persisting[call_id]
                    self._push_session(call_id)

    async def _persist(self, session: Session, recovered: bool) -> bool:
        """Write the session; False if another Node owns the call.

        While the store is away the call goes on unpersisted (ORS 8.1.2 and later keep
        routing through a store outage): the peers' ``session`` pushes and the watching
        rules keep others from creating it, and the T-Server refuses a second route.
        """
        try:
            if recovered:
                await self.guard.put_session(session)
                return True
            return await self.guard.create_session(session)
        except StoreUnavailable:
            self.guard.unpersisted += 1
            return True

    async def _select_target(self, call_id: str, dn: str) -> str:
        while True:
            await self._urs_up.wait()
            urs = self._urs
            if urs is None:
                continue
            try:
                result = await urs.request(
                    "select_target", {"call_id": call_id, "dn": dn}, timeout=10
                )
                return str(result["target"])
            except (ConnectionLost, trio.TooSlowError):
                continue

    async def _route(self, call_id: str, target: str, epoch: int) -> str:
        s = self.settings
        while True:
            await self._tserver_up.wait()
            tserver = self._tserver
            if tserver is None:
                continue
            try:
                await tserver.request(
                    "route",
                    {
                        "call_id": call_id,
                        "target": target,
                        "app": s.app,
                        "node_id": s.node_id,
                        "epoch": epoch,
                    },
                    timeout=10,
                )
                return "routed"
            except RemoteError as exc:
                if exc.code != "stale_epoch":
                    self.log.info("route_refused", call_id=call_id, code=exc.code)
                return exc.code
            except (ConnectionLost, trio.TooSlowError):
                continue
