"""The ORS node at run time: peers, T-Server and URS links, sessions, and HA role.

Theory of operation
-------------------
Every ORS application of a cluster listens on its Application's port and dials every other
one (full mesh). Over each link it announces itself (``member`` push: app, Node ID, data
center, mode, epoch) at every heartbeat; ADDP closes a silent link, and a closed link is
seen at once, so the *membership view* always says which peers are reachable.

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
import time
from typing import Any

import attrs
import trio

from orsim.errors import ConnectionLost, RemoteError
from orsim.logs import get_logger
from orsim.node._assignment import assign
from orsim.node._membership import MemberInfo, PeerView
from orsim.node._settings import NodeSettings, PeerApp
from orsim.store import Session, SessionStore, StaleEpoch
from orsim.wire import (
    Connection,
    Network,
    Push,
    Request,
    RequestFailed,
    connect_with_retry,
    serve_app,
)

#: How many recently routed call ids a node remembers (to skip already-served calls).
_ROUTED_MEMORY = 100_000
#: Longest a graceful switchover waits for the primary's sessions to finish.
_SWITCHOVER_DRAIN = 3.0


@attrs.define(eq=False)
class _Watch:
    call_id: str
    dn: str
    deadline: float
    kind: str  # "backup" | "reserved"


@attrs.define(eq=False)
class OrsNode:
    """One ORS application (primary or backup half of a Node) at run time."""

    settings: NodeSettings
    network: Network
    store: SessionStore
    listen_port: int | None = None
    mode: str = "starting"
    epoch: int = 0
    mode_since: float = attrs.Factory(time.time)
    calls_routed: int = 0
    sessions_recovered: int = 0
    call_watching_timeout_ms: float = 0.0
    peers: PeerView = attrs.field(init=False)
    _active: dict[str, trio.CancelScope] = attrs.Factory(dict)
    _watches: dict[str, _Watch] = attrs.Factory(dict)
    _handled: dict[str, None] = attrs.Factory(dict)
    _tserver: Connection | None = None
    _urs: Connection | None = None
    _tserver_up: trio.Event = attrs.Factory(trio.Event)
    _urs_up: trio.Event = attrs.Factory(trio.Event)
    _membership_changed: trio.Event = attrs.Factory(trio.Event)
    _watch_changed: trio.Event = attrs.Factory(trio.Event)
    _outbound: dict[str, Connection] = attrs.Factory(dict)
    _inbound: dict[str, set[Connection]] = attrs.Factory(dict)
    _suspending: bool = False
    _takeover_lock: trio.Lock = attrs.Factory(trio.Lock)
    _nursery: trio.Nursery | None = None
    log: Any = None

    def __attrs_post_init__(self) -> None:
        s = self.settings
        self.peers = PeerView(
            nodes=dict(s.nodes) or {s.node_id: s.data_center},
            app_nodes={p.name: p.node_id for p in s.peers},
        )
        if not self.call_watching_timeout_ms:
            self.call_watching_timeout_ms = s.call_watching_timeout_ms
        self.log = get_logger(app=s.app, node_id=s.node_id)

    # -- lifecycle ---------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; ``started`` reports the bound port once the role is decided."""
        s = self.settings
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
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
                nursery.start_soon(self._dial_peer, peer)
            nursery.start_soon(self._tserver_link)
            nursery.start_soon(self._urs_link)
            await self._decide_initial_role()
            nursery.start_soon(self._heartbeat_loop)
            nursery.start_soon(self._watch_loop)
            nursery.start_soon(self._partner_monitor)
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
            "mode_since": self.mode_since,
            "epoch": self.epoch,
            "pid": os.getpid(),
            "sessions": len(self._active),
            "calls_routed": self.calls_routed,
            "sessions_recovered": self.sessions_recovered,
            "watching": len(self._watches),
            "call_watching_timeout_ms": self.call_watching_timeout_ms,
            "live_nodes": sorted(self.peers.live_nodes(s.node_id)),
            "tserver_connected": self._tserver is not None,
            "urs_connected": self._urs is not None,
        }

    def set_call_watching_timeout(self, ms: float) -> None:
        """Apply a new call-watching-timeout to calls that arrive from now on."""
        self.log.info(
            "option_applied",
            option="orchestration/call-watching-timeout",
            old=self.call_watching_timeout_ms,
            new=ms,
            note="a real ORS reads this option only at start-up",
        )
        self.call_watching_timeout_ms = ms

    # -- role --------------------------------------------------------------------

    def _set_mode(self, mode: str, reason: str) -> None:
        if mode != self.mode:
            self.log.info("mode_changed", old=self.mode, mode=mode, epoch=self.epoch, reason=reason)
            self.mode = mode
            self.mode_since = time.time()
            self._membership_changed.set()
            self._membership_changed = trio.Event()
            if self._nursery is not None:
                self._nursery.start_soon(self._announce)

    async def _decide_initial_role(self) -> None:
        """Start as configured unless the partner is already primary."""
        s = self.settings
        partner = s.partner_peer
        if partner is None:
            await self._take_over("no backup configured")
            return
        # Give the partner a few heartbeats to announce itself (a restarted primary must
        # not fence a backup that took over in the meantime).
        window = max(4 * s.heartbeat, 1.0) * (2 if s.configured_backup else 1)
        with trio.move_on_after(window):
            while self.peers.known_mode(partner.name) not in ("primary", "backup"):
                await self._wait_membership()
        partner_mode = self.peers.known_mode(partner.name)
        if partner_mode == "primary":
            self.epoch = await self.store.current_epoch(s.node_id)
            self._set_mode("backup", "partner is primary")
        elif s.configured_backup and self.peers.is_live(partner.name):
            self.epoch = await self.store.current_epoch(s.node_id)
            self._set_mode("backup", "configured backup")
        else:
            await self._take_over(
                "configured primary" if not s.configured_backup else "primary not found"
            )

    async def _take_over(self, reason: str) -> bool:
        """Claim the next epoch of the Node; on success become primary and recover sessions."""
        s = self.settings
        async with self._takeover_lock:
            if self.mode == "primary":
                return True
            current = await self.store.current_epoch(s.node_id)
            won = await self.store.claim_epoch(s.node_id, current, current + 1)
            if not won:
                self.epoch = await self.store.current_epoch(s.node_id)
                self.log.info("takeover_lost", epoch=self.epoch, reason=reason)
                if self.mode == "starting":
                    self._set_mode("backup", "epoch claimed by partner")
                return False
            self.epoch = current + 1
            self._set_mode("primary", reason)
        await self._fence_tserver()
        if self._nursery is not None:
            self._nursery.start_soon(self._recover_sessions)
        return True

    def _step_down(self, reason: str, epoch: int | None = None) -> None:
        if epoch is not None:
            self.epoch = max(self.epoch, epoch)
        if self.mode == "primary":
            self._set_mode("backup", reason)

    async def _fence_tserver(self) -> None:
        if self._tserver is None:
            return
        try:
            await self._tserver.request(
                "fence", {"node_id": self.settings.node_id, "epoch": self.epoch}, timeout=5
            )
        except (ConnectionLost, RemoteError, trio.TooSlowError) as exc:
            self.log.warning("fence_failed", error=str(exc))

    async def _recover_sessions(self) -> None:
        stored = await self.store.sessions(self.settings.node_id)
        recovered = 0
        for session in stored:
            if session.call_id in self._handled or session.call_id in self._active:
                continue
            recovered += 1
            self._start_call(session.call_id, session.dn, recovered=session)
        if recovered:
            self.sessions_recovered += recovered
            self.log.info("sessions_recovered", count=recovered, epoch=self.epoch)

    async def _partner_monitor(self) -> None:
        """Take over when the partner is lost while this application is backup."""
        partner = self.settings.partner_peer
        if partner is None:
            return
        while True:
            while self.mode != "backup" or self.peers.is_live(partner.name):
                await self._wait_membership()
            await self._take_over(f"primary {partner.name} lost")
            await self._wait_membership()

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

    async def _announce(self) -> None:
        info = self._member_info()
        for conn in list(self._outbound.values()):
            try:
                await conn.push("member", info)
            except ConnectionLost:
                pass

    async def _dial_peer(self, peer: PeerApp) -> None:
        s = self.settings
        while True:
            conn = await connect_with_retry(
                self.network,
                [(peer.address, peer.port)],
                app=s.app,
                app_type=s.app_type,
                timeout=math.inf,
                what=f"peer {peer.name}",
                addp_timeout=peer.addp_timeout,
                addp_remote_timeout=peer.addp_timeout,
                handler=self._handle_request,
                on_push=self._on_push,
            )
            self._outbound[peer.name] = conn
            self.peers.link_up(peer.name)
            self._membership_event()
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(conn.serve)
                    await conn.push("member", self._member_info())
                    await conn.closed.wait()
                    nursery.cancel_scope.cancel()
            except ConnectionLost:
                pass
            finally:
                await conn.aclose()
                self._outbound.pop(peer.name, None)
                self.peers.link_down(peer.name)
                self._membership_event()
                self.log.info("peer_link_closed", peer=peer.name, reason=conn.close_reason)
            await trio.sleep(0.05)

    async def _on_inbound(self, conn: Connection) -> None:
        if conn.peer_app in self.peers.app_nodes:
            self._inbound.setdefault(conn.peer_app, set()).add(conn)
            self.peers.link_up(conn.peer_app)
            self._membership_event()

    async def _on_inbound_closed(self, conn: Connection) -> None:
        links = self._inbound.get(conn.peer_app)
        if links is not None and conn in links:
            links.discard(conn)
            self.peers.link_down(conn.peer_app)
            self._membership_event()

    async def _heartbeat_loop(self) -> None:
        s = self.settings
        while True:
            await trio.sleep(s.heartbeat)
            await self._announce()
            if self.mode == "primary":
                stored = await self.store.current_epoch(s.node_id)
                if stored > self.epoch:
                    self._step_down("a higher epoch is in the store", stored)

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
            if (
                info.node_id == self.settings.node_id
                and info.mode == "primary"
                and info.epoch > self.epoch
            ):
                self._step_down(f"{info.app} is primary at epoch {info.epoch}", info.epoch)
            if changed:
                self._membership_event()
        elif push.topic == "session":
            self._mark_handled(str(data["call_id"]))
        elif push.topic == "handover":
            if self.mode == "backup" and self._nursery is not None:
                self._nursery.start_soon(self._take_over, f"handover from {conn.peer_app}")
        elif push.topic == "route_request":
            self._on_route_request(data)
        elif push.topic == "call_routed":
            self._mark_handled(str(data["call_id"]))

    async def _broadcast(self, topic: str, data: dict[str, Any]) -> None:
        for conn in list(self._outbound.values()):
            try:
                await conn.push(topic, data)
            except ConnectionLost:
                pass

    # -- requests on our own port -------------------------------------------------

    async def _handle_request(self, conn: Connection, request: Request) -> Any:
        if request.method == "status":
            return self.status()
        if request.method == "switchover":
            return await self._switchover()
        raise RequestFailed("unknown_method", f"{self.settings.app} has no method {request.method!r}")

    async def _switchover(self) -> dict[str, Any]:
        partner = self.settings.partner_peer
        if partner is None:
            raise RequestFailed("no_backup", f"{self.settings.app} has no backup to switch to")
        if self.mode == "backup":
            conn = self._outbound.get(partner.name)
            if conn is None:
                raise RequestFailed("no_primary", f"primary {partner.name} is not reachable")
            result: dict[str, Any] = await conn.request("switchover", {}, timeout=30)
            return result
        if self.mode != "primary":
            raise RequestFailed("not_ready", f"{self.settings.app} is {self.mode}")
        if not self.peers.is_live(partner.name):
            raise RequestFailed("no_backup", f"backup {partner.name} is not reachable")
        self._suspending = True
        self.log.info("switchover_started", sessions=len(self._active))
        try:
            with trio.move_on_after(_SWITCHOVER_DRAIN):
                while self._active:
                    await trio.sleep(0.01)
            conn = self._outbound.get(partner.name)
            if conn is None:
                raise RequestFailed("no_backup", f"backup {partner.name} is not reachable")
            self._step_down("graceful switchover")
            await conn.push("handover", {"epoch": self.epoch})
            with trio.move_on_after(10):
                while self.peers.known_mode(partner.name) != "primary":
                    await self._wait_membership()
        finally:
            self._suspending = False
        return {"new_primary": partner.name}

    # -- T-Server and URS ---------------------------------------------------------

    async def _tserver_link(self) -> None:
        s = self.settings
        t = s.tserver
        while True:
            conn = await connect_with_retry(
                self.network,
                [(t.address, t.port)],
                app=s.app,
                app_type=s.app_type,
                timeout=math.inf,
                what=f"T-Server {t.name}",
                addp_timeout=t.addp_timeout,
                addp_remote_timeout=t.addp_remote_timeout,
                on_push=self._on_push,
            )
            async with trio.open_nursery() as nursery:
                nursery.start_soon(conn.serve)
                try:
                    await conn.request(
                        "register",
                        {"app": s.app, "node_id": s.node_id, "dns": list(s.routing_points)},
                        timeout=10,
                    )
                    self._tserver = conn
                    self._tserver_up.set()
                    if self.mode == "primary":
                        await self._fence_tserver()
                    self.log.info("tserver_connected", tserver=t.name)
                    await conn.closed.wait()
                except (ConnectionLost, RemoteError, trio.TooSlowError) as exc:
                    self.log.warning("tserver_register_failed", error=str(exc))
                finally:
                    self._tserver = None
                    self._tserver_up = trio.Event()
                    nursery.cancel_scope.cancel()
            await conn.aclose()
            self.log.warning("tserver_lost", reason=conn.close_reason)
            await trio.sleep(0.05)

    async def _urs_link(self) -> None:
        s = self.settings
        u = s.urs
        while True:
            conn = await connect_with_retry(
                self.network,
                [(u.address, u.port)],
                app=s.app,
                app_type=s.app_type,
                timeout=math.inf,
                what=f"URS {u.name}",
                addp_timeout=u.addp_timeout,
                addp_remote_timeout=u.addp_remote_timeout,
            )
            async with trio.open_nursery() as nursery:
                nursery.start_soon(conn.serve)
                try:
                    await conn.request("register", {"app": s.app, "node_id": s.node_id}, timeout=10)
                    self._urs = conn
                    self._urs_up.set()
                    await conn.closed.wait()
                except (ConnectionLost, RemoteError, trio.TooSlowError) as exc:
                    self.log.warning("urs_register_failed", error=str(exc))
                finally:
                    self._urs = None
                    self._urs_up = trio.Event()
                    nursery.cancel_scope.cancel()
            await conn.aclose()
            await trio.sleep(0.05)

    # -- calls -------------------------------------------------------------------

    def _mark_handled(self, call_id: str) -> None:
        self._handled[call_id] = None
        if len(self._handled) > _ROUTED_MEMORY:
            del self._handled[next(iter(self._handled))]
        self._watches.pop(call_id, None)

    def _on_route_request(self, data: dict[str, Any]) -> None:
        call_id = str(data["call_id"])
        dn = str(data.get("dn", ""))
        if call_id in self._handled or call_id in self._active:
            return
        s = self.settings
        live = self.peers.live_nodes(s.node_id)
        assigned, reserved = assign(call_id, live)
        now = trio.current_time()
        cwt = self.call_watching_timeout_ms / 1000.0
        if assigned == s.node_id:
            if self.mode == "primary" and not self._suspending:
                self._start_call(call_id, dn)
            else:
                self._watch(_Watch(call_id, dn, now + cwt, "backup"))
        elif reserved == s.node_id and self.mode == "primary":
            self._watch(_Watch(call_id, dn, now + 2 * cwt, "reserved"))

    def _watch(self, watch: _Watch) -> None:
        self._watches[watch.call_id] = watch
        self._watch_changed.set()

    async def _watch_loop(self) -> None:
        while True:
            deadline = min((w.deadline for w in self._watches.values()), default=math.inf)
            self._watch_changed = trio.Event()
            with trio.move_on_at(deadline):
                await self._watch_changed.wait()
            now = trio.current_time()
            due = [w for w in self._watches.values() if w.deadline <= now]
            for watch in due:
                del self._watches[watch.call_id]
                if watch.call_id in self._handled or watch.call_id in self._active:
                    continue
                if self.mode == "primary" and not self._suspending:
                    self.log.info("watched_call_created", call_id=watch.call_id, kind=watch.kind)
                    self._start_call(watch.call_id, watch.dn)

    def _start_call(self, call_id: str, dn: str, recovered: Session | None = None) -> None:
        assert self._nursery is not None
        scope = trio.CancelScope()
        self._active[call_id] = scope
        self._nursery.start_soon(self._serve_call, call_id, dn, recovered, scope)

    async def _serve_call(
        self, call_id: str, dn: str, recovered: Session | None, scope: trio.CancelScope
    ) -> None:
        s = self.settings
        log = self.log.bind(call_id=call_id, epoch=self.epoch)
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
                await self.store.put_session(session)
                await self._broadcast("session", {"call_id": call_id, "node_id": s.node_id})
                target = session.target or await self._select_target(call_id, dn)
                outcome = await self._route(call_id, target, epoch)
                if outcome == "stale_epoch":
                    self._step_down("T-Server refused a stale epoch", None)
                    return
                if outcome == "routed":
                    self.calls_routed += 1
                self._mark_handled(call_id)
                await self.store.delete_session(s.node_id, epoch, call_id)
            except StaleEpoch:
                log.info("stale_epoch_in_store")
                self._step_down("store refused a stale epoch")
            finally:
                self._active.pop(call_id, None)

    async def _select_target(self, call_id: str, dn: str) -> str:
        while True:
            await self._urs_up.wait()
            urs = self._urs
            if urs is None:
                continue
            try:
                result = await urs.request("select_target", {"call_id": call_id, "dn": dn}, timeout=10)
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
