"""The simulated SIP Server/T-Server: routing points, route requests, the call ledger.

Theory of operation (reference section 7). Calls land on routing points (the
``routing-points`` option: DN -> strategy), either one at a time (``make_call``) or from a
built-in generator paced at a given rate. For each new call the T-Server sends a
``route_request`` push (EventRouteRequest) to every client registered on that DN; the first
accepted ``route`` command (RequestRouteCall) routes it and every other registered client
hears ``call_routed`` (EventRouteUsed); the router knows from the answer. A call not
routed within ``TServer/router-timeout`` seconds goes to ``TServer/default-dn`` if one
is set (counted ``default_routed``), else it is lost.

The ledger (``_ledger.CallLedger``) decides every outcome; this module is the thin trio
shell around it: one task expiring calls at their deadlines and one optional generator
task. Pushes are encoded once and left in each registered client's bounded out-buffer
(``Connection.send_frame_nowait``), which the connection's writer sends in big writes; a
client that stops reading (a SIGSTOPped ORS) has its further pushes dropped and counted,
so it never stalls the generator or the other clients.

The generator creates every call that is due at each tick (at least ``GENERATOR_TICK``
apart) rather than sleeping once per call, so high rates are offered evenly without a
timer wake-up per call.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVar

import attrs
import trio

from orsim._alarm import sleep_until
from orsim.config import (
    DEFAULT_DN,
    DEFAULT_REDIRECTION_LIMIT,
    ROUTER_TIMEOUT,
    ROUTING_POINTS,
    Application,
    Options,
)
from orsim.confserv import start_serving
from orsim.errors import ConfigError, ConnectionLost, RemoteProtocolError
from orsim.logs import get_logger
from orsim.tserver._journal import BadOp, GeneratorRun, LedgerJournal
from orsim.tserver._ledger import CallLedger, CallRecord, EpochTaken, RouteRefused
from orsim.tserver._messages import (
    CallCounts,
    CallRouted,
    CallState,
    ClaimEpoch,
    EpochClaim,
    Fence,
    Fenced,
    Follow,
    Generate,
    GeneratorInfo,
    Ledger,
    LedgerOps,
    LedgerReport,
    MadeCall,
    MakeCall,
    QueryCall,
    Register,
    Registered,
    ReplicaAck,
    Role,
    Route,
    Routed,
    RouteRequest,
    StopGenerator,
    Stopped,
    TServerClientInfo,
    TServerStatus,
)
from orsim.wire import (
    Connection,
    Done,
    HandlerTable,
    Network,
    Notice,
    Push,
    PushBatch,
    PushTable,
    Record,
    RequestRefused,
    Status,
    StatusReport,
    encode,
    frame_totals,
    on,
    open_connection,
    when,
)

R = TypeVar("R", bound=Record)

DEFAULT_ROUTER_TIMEOUT = ROUTER_TIMEOUT.default_value
#: Pushes waiting for one client. Beyond this the client is not reading (stopped or
#: hung); further pushes to it are dropped and counted rather than stalling everyone.
OUTBOX_SIZE = 4096
#: Largest generator rate accepted (calls/s): far above what one process can route.
MAX_RATE = 100_000.0
#: A generator that falls further behind than this (process stopped, machine busy) skips
#: the missed calls instead of bursting them all at once.
MAX_GENERATOR_LAG = 1.0
#: Largest page of records one ``ledger`` answer carries (frames are capped at 1 MiB).
MAX_RECORDS_PAGE = 2000
#: Shortest sleep of the generator between two batches of calls (s).
GENERATOR_TICK = 0.004
#: How long other pushes (``call_routed``) to a batching client wait for company (s).
#: Route requests go out at once, at the end of the generator tick that made them; the
#: news that a call was routed only ends watches (``call-watching-timeout``, at least
#: hundreds of ms), so it may wait a little to share a frame and a wake-up with the next
#: calls: at 16 Nodes each call's news reaches 31 processes. A little longer than
#: ``GENERATOR_TICK``, so that under a generator's load it rides with the next tick's
#: route requests: one wake-up per client per tick.
FANOUT_LINGER = 0.005
#: Most pushes one ``PushBatch`` frame carries (a frame is capped at 1 MiB).
PUSHES_PER_BATCH = 500
#: Wake-ups per second the fan-out may cost its batching clients together. Every flush
#: wakes every batching client (each ORS hears every call), and one wake-up of a trio
#: process costs ~100 µs of CPU on the reference machine: at 16 Nodes (32 clients) one
#: flush per 4 ms generator tick was 8,000 wake-ups a second, most of them in processes
#: with no part in the calls. The flushes are paced ``clients / FANOUT_WAKEUPS`` s
#: apart (16 ms at 32 clients) when that is longer than ``GENERATOR_TICK``, so at 4
#: Nodes or fewer nothing waits. A call then waits up to that long for its route
#: request, counted in its latency (``created_at`` is when it was made).
FANOUT_WAKEUPS = 2000.0
#: The longest the pace makes a route request wait (s), however many clients batch (a
#: simulated cluster of 100 Nodes has 200).
FANOUT_MAX_GAP = 0.05
#: How long the pushes of a lazy batching client wait (s): one that does not hold its
#: Node's current epoch here (a backup, or a primary not yet fenced). It only watches the
#: calls, acting on them once it holds the Node, and its fence (or claim) here flushes
#: them to it at once, ahead of the answer (``_hurry``): a takeover never waits for
#: them. So its news waits this long after the first of it, one wake-up where the pace
#: makes three at 16 Nodes (16 ms), and half of the fan-out's wake-ups there are
#: backups'. Well under the shortest ``call-watching-timeout`` the library and the fault
#: search use (300 ms), and no longer than a prompt client may wait (``FANOUT_MAX_GAP``).
FANOUT_LAZY_GAP = 0.05

# -- hot standby (a T-Server with a ``backup``: see ``_journal`` and ``_twin``) -----------

PRIMARY, BACKUP, STARTING = "primary", "backup", "starting"
#: Longest a primary waits for its backup to confirm an op before it drops the backup
#: and runs alone: a frozen or slow backup must not stall everyone's routing (no
#: hostage). The dropped backup follows again, from the first op, once it can.
REPLICA_ACK_TIMEOUT = 1.0
#: Most ops one ``ledger_ops`` push carries (a frame is capped at 1 MiB).
OPS_PER_PUSH = 500
#: How long a configured backup T-Server, started alone, waits for its primary to
#: answer before it takes the primary role itself.
BACKUP_START_WAIT = 5.0
#: How often a primary whose backup does not follow it asks its twin's role (a twin
#: that took over while this one was cut off or frozen makes it step down).
TWIN_PROBE = 1.0
#: ADDP on the link between the twins (s): a hung primary is replaced within it (2 s,
#: as orsim's peer links: short, yet safe on a busy machine).
TWIN_ADDP_TIMEOUT = 2.0


def routing_points_of(options: Options) -> dict[str, str]:
    """The ``routing-points`` section: DN -> strategy."""
    return ROUTING_POINTS.read_section(options)


def router_timeout_of(options: Options) -> float:
    """``TServer/router-timeout`` in seconds (default 10).

    Raises:
        ConfigError: the value is not a positive number.
    """
    return ROUTER_TIMEOUT.read(options)


def default_dn_of(options: Options) -> str:
    """``TServer/default-dn``: where a call not routed in time goes (empty: nowhere)."""
    return DEFAULT_DN.read(options)


#: What a client without the cluster's key may ask (they change nothing).
OPEN_METHODS = frozenset({"status", "ledger", "query_call"})


@attrs.define(eq=False)
class _Follower:
    """The backup T-Server following this primary: what it was sent and confirmed."""

    conn: Connection
    sent: int = 0
    acked: int = 0
    #: When ``acked`` last moved, or the backup was last caught up (trio time).
    progress_at: float = 0.0
    wake: trio.Event = attrs.Factory(trio.Event)
    acked_changed: trio.Event = attrs.Factory(trio.Event)


@attrs.define(eq=False)
class _Client:
    """A connection registered on some routing points."""

    conn: Connection
    app: str
    node_id: int | None
    dns: set[str] = attrs.Factory(set)
    dropped: int = 0
    #: Takes its pushes in batches (``Register.batches``); those waiting for the flush.
    batches: bool = False
    pending: list[Notice] = attrs.Factory(list)

    def post(self, frame: bytes, direct: bool = False) -> None:
        """Queue an encoded push (``direct``: written at once on an idle link); dropped
        (and counted) past ``OUTBOX_SIZE`` waiting."""
        try:
            if self.conn.send_frame_nowait(frame, limit=OUTBOX_SIZE, direct=direct):
                return
        except (ConnectionLost, RuntimeError):
            return  # closing: ``_on_disconnect`` forgets the client
        self.dropped += 1
        if self.dropped == 1 or self.dropped % 1000 == 0:
            get_logger(peer=self.app).warning("client_not_reading", dropped=self.dropped)

    def info(self) -> TServerClientInfo:
        return TServerClientInfo(self.app, self.node_id, tuple(sorted(self.dns)), self.dropped)


@attrs.define(eq=False)
class _Generator:
    rate: float
    duration: float | None
    dn: str | None
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    made: int = 0
    running: bool = True

    def info(self) -> GeneratorInfo:
        return GeneratorInfo(self.rate, self.duration, self.dn, self.made, self.running)


@attrs.define(eq=False)
class TServer:
    """One T-Server run: its options, ledger and registered clients.

    Create it from the Application, then run ``serve``; ``apply_options`` takes live
    option changes. With a ``partner`` (its ``backup``, or the primary it backs up) it is
    one of a hot-standby pair: see ``_twin``.
    """

    app: Application
    routing_points: dict[str, str]
    router_timeout: float
    ledger: CallLedger = attrs.Factory(CallLedger)
    #: The other T-Server of a redundant pair (None: a lone T-Server, always primary).
    partner: Application | None = None
    #: ``primary``, ``backup`` or ``starting`` (a twin deciding its role).
    mode: str = PRIMARY
    #: Takeovers the pair has seen: a twin that took over is ahead of one cut off.
    generation: int = 0
    #: Every ledger command goes through it (its ops are kept only with a partner).
    journal: LedgerJournal = attrs.field(init=False)
    _clients: dict[Connection, _Client] = attrs.Factory(dict)
    _generator: _Generator | None = None
    _nursery: trio.Nursery | None = None
    _offset: float = 0.0
    _run_id: str = ""
    _seq: itertools.count[int] = attrs.Factory(lambda: itertools.count(1))
    _wake: trio.Event = attrs.Factory(trio.Event)
    _expiry_at: float = math.inf
    _rotation: int = 0
    #: The backup following this primary (None: running alone).
    _follower: _Follower | None = None
    #: Route requests of new calls waiting for the backup to hold the call: (op, dn, push).
    _held: deque[tuple[int, str, RouteRequest]] = attrs.Factory(deque)
    #: Batching clients with pushes waiting (``_flush_pushes``), and the linger's alarm.
    _pending: list[_Client] = attrs.Factory(list)
    #: Lazy clients with pushes waiting (``_flush_lazily``), set off at ``_lazy_at``.
    _lazy: list[_Client] = attrs.Factory(list)
    _lazy_alarm: trio.Event = attrs.Factory(trio.Event)
    _lazy_at: float = 0.0
    _linger: trio.Event = attrs.Factory(trio.Event)
    #: When the linger flushes (set with ``_linger``), and when the last flush was.
    _linger_at: float = 0.0
    _flushed_at: float = -math.inf
    #: When the call generator wakes next (inf: not running), and whether it is making
    #: a tick's calls now (their pushes are flushed together at the end of the tick).
    _next_tick: float = math.inf
    _ticking: bool = False
    #: The primary this backup follows.
    _leader: Connection | None = None
    #: Set while this T-Server is primary.
    _primary: trio.Event = attrs.Factory(trio.Event)
    #: Set once a twin has first taken a role (``serve`` reports ready then).
    _decided: trio.Event = attrs.Factory(trio.Event)
    #: Every request the T-Server answers, with its handler.
    handlers: HandlerTable = attrs.field(init=False)
    #: The pushes it takes (journal ops from its primary, acks from its backup).
    pushes: PushTable = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.handlers = HandlerTable.of(
            self.app.name,
            [
                on(Register, self._register),
                on(Fence, self._fence),
                on(QueryCall, self._query_call),
                on(ClaimEpoch, self._claim_epoch),
                on(Route, self._route),
                on(MakeCall, self._make_call),
                on(Generate, self._generate_calls),
                on(StopGenerator, self._stop_generating),
                on(Ledger, self._ledger),
                on(Status, self._status),
                on(Follow, self._follow),
            ],
        )
        self.pushes = PushTable.of([when(LedgerOps, self._on_ops), when(ReplicaAck, self._on_ack)])
        self.journal = self._new_journal(self.ledger)
        if self.partner is not None:
            self.mode = STARTING
        else:
            self._primary.set()
            self._decided.set()

    def _new_journal(self, ledger: CallLedger) -> LedgerJournal:
        return LedgerJournal(ledger, keep=self.partner is not None, on_op=self._on_op)

    @classmethod
    def from_application(cls, app: Application, partner: Application | None = None) -> TServer:
        """A T-Server for ``app`` (with ``partner``, its twin of a redundant pair);
        ConfigError if its options are invalid."""
        server = cls(
            app,
            routing_points_of(app.options),
            router_timeout_of(app.options),
            partner=partner,
        )
        server.journal.set_default_dn(default_dn_of(app.options))
        if DEFAULT_REDIRECTION_LIMIT.text_in(app.options) is not None:
            get_logger(app=app.name).warning(
                "option_not_simulated",
                option=DEFAULT_REDIRECTION_LIMIT.name,
                note="a call sent to default-dn is not offered again",
            )
        return server

    # -- clock -------------------------------------------------------------------

    def now(self) -> float:
        """Wall-clock seconds, advancing with trio's clock (so MockClock drives it too)."""
        return trio.current_time() + self._offset

    # -- lifecycle ---------------------------------------------------------------

    async def serve(
        self,
        network: Network,
        *,
        host: str | None = None,
        port: int | None = None,
        run_id: str | None = None,
        wall_at_zero: float | None = None,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> NoReturn:
        """Listen (on the Application's address unless ``host``/``port`` say otherwise)
        and serve until cancelled; ``started`` reports the bound port.

        Call ids are ``{app}-{run_id}-{n}``; ``run_id`` defaults to the start time in ms
        (a simulation passes one derived from its seed). Ledger times are
        ``trio.current_time() + wall_at_zero``; ``wall_at_zero`` defaults to the offset
        that makes them wall-clock seconds (a simulation passes a fixed one)."""
        if wall_at_zero is None:
            wall_at_zero = time.time() - trio.current_time()
        self._offset = wall_at_zero
        self._run_id = str(int(time.time() * 1000)) if run_id is None else run_id
        log = get_logger(app=self.app.name)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._expire_calls)
            nursery.start_soon(self._flush_lingering)
            nursery.start_soon(self._flush_lazily)
            bound = await start_serving(
                nursery,
                network,
                self.app,
                self.handlers,
                host=host,
                port=port,
                on_disconnect=self._on_disconnect,
                on_push=self.pushes,
                open_methods=OPEN_METHODS,
            )
            log.info(
                "tserver_ready",
                port=bound,
                routing_points=list(self.routing_points),
                router_timeout=self.router_timeout,
                twin=None if self.partner is None else self.partner.name,
            )
            if self.partner is not None:
                nursery.start_soon(self._twin, network, self.partner)
                await self._decided.wait()  # ready: primary, or following its twin
            task_status.started(bound)
        raise AssertionError("start_serving returned")  # pragma: no cover

    def apply_options(self, options: Options) -> None:
        """Apply a live change of the Application's options (invalid values are ignored)."""
        log = get_logger(app=self.app.name)
        try:
            timeout = router_timeout_of(options)
        except ConfigError as exc:
            log.warning("option_rejected", error=str(exc))
        else:
            if timeout != self.router_timeout:
                log.info(
                    "option_applied",
                    section=ROUTER_TIMEOUT.section,
                    key=ROUTER_TIMEOUT.key,
                    value=timeout,
                )
                self.router_timeout = timeout
        default_dn = default_dn_of(options)
        if default_dn != self.ledger.default_dn:
            log.info(
                "option_applied", section=DEFAULT_DN.section, key=DEFAULT_DN.key, value=default_dn
            )
            if self.mode == PRIMARY:  # a backup takes its primary's (a journal op)
                self.journal.set_default_dn(default_dn)
        points = routing_points_of(options)
        if points != self.routing_points:
            log.info("option_applied", section=ROUTING_POINTS.section, value=points)
            self.routing_points = points

    # -- calls -------------------------------------------------------------------

    def _default_dn(self) -> str:
        if not self.routing_points:
            raise RequestRefused("no_routing_point", f"{self.app.name} has no routing points")
        return next(iter(self.routing_points))

    def _check_dn(self, dn: str) -> str:
        if dn not in self.routing_points:
            raise RequestRefused("unknown_dn", f"{dn!r} is not a routing point of {self.app.name}")
        return dn

    def _rotate_dn(self) -> str | None:
        """The routing points in turn (they may change while a generator runs)."""
        points = list(self.routing_points)
        if not points:
            return None
        self._rotation = (self._rotation + 1) % len(points)
        return points[self._rotation]

    def new_call(self, dn: str) -> CallRecord:
        """Create a call on routing point ``dn`` and send its route request."""
        now = self.now()
        call_id = f"{self.app.name}-{self._run_id}-{next(self._seq)}"
        record = self.journal.create(call_id, dn, now, now + self.router_timeout)
        if record.deadline - self._offset < self._expiry_at:
            self._wake.set()
        if self._follower is None:
            self._push_to(dn, _request_of(record))
        else:
            # Nobody hears of the call before the backup holds it: a call offered to
            # routers must survive this primary (the ledger stays whole).
            self._held.append((self.journal.seq, dn, _request_of(record)))
        return record

    def _push_to(self, dn: str, notice: Notice, but: str | None = None) -> None:
        """Send ``notice`` to every client registered on ``dn`` (encoded once), except the
        connections of application ``but``. A batching client's push waits for the next
        ``_flush_pushes``: the caller's, or the linger's within ``FANOUT_LINGER``; a lazy
        one's (``_prompt``, as its first waiting push finds it) for ``_flush_lazily``."""
        frame: bytes | None = None
        for client in self._clients.values():
            if dn in client.dns and client.app != but:
                if client.batches:
                    if not client.pending:
                        if self._prompt(client):
                            self._pending.append(client)
                        else:
                            self._wait_lazily(client)
                    client.pending.append(notice)
                    continue
                frame = frame or encode(Push(notice.TOPIC, notice.to_json()))
                client.post(frame)
        if self._pending and not self._ticking:
            now = trio.current_time()
            if self._next_tick <= now + FANOUT_LINGER:
                # Company is coming: the generator's next tick.
                self._linger_until(max(now + FANOUT_LINGER, self._flush_due()))
            else:
                self._flush_paced()  # none soon: waiting would only delay the news

    def _prompt(self, client: _Client) -> bool:
        """Whether ``client`` gets its pushes at the fan-out's pace: it holds its Node's
        current epoch here (it fenced, claimed or routed at it), or it is no Node's. The
        others are lazy (``FANOUT_LAZY_GAP``)."""
        node_id = client.node_id
        return node_id is None or self.ledger.holder_of(node_id) == client.app

    def _wait_lazily(self, client: _Client) -> None:
        """Leave ``client``'s pushes to the lazy flush, ``FANOUT_LAZY_GAP`` after the
        first lazy push that waits."""
        self._lazy.append(client)
        if not self._lazy_alarm.is_set():
            self._lazy_at = trio.current_time() + FANOUT_LAZY_GAP
            self._lazy_alarm.set()

    def _hurry(self, node_id: int, app: str) -> None:
        """``app`` now holds Node ``node_id``'s epoch: its lazy pushes go out now, ahead
        of the fence's (or claim's) answer, so that a new primary knows every call
        offered and routed so far before it acts. It is prompt from now on; the
        application it displaced turns lazy with its next push."""
        hurried = [c for c in self._lazy if c.node_id == node_id and c.app == app]
        if hurried:
            self._lazy = [c for c in self._lazy if c not in hurried]
            self._send_pending(hurried)

    def _flush_due(self) -> float:
        """When the batching clients may be sent their next frame (``FANOUT_WAKEUPS``)."""
        batching = sum(1 for c in self._clients.values() if c.batches)
        gap = min(batching / FANOUT_WAKEUPS, FANOUT_MAX_GAP)
        return self._flushed_at + gap if gap > GENERATOR_TICK else -math.inf

    def _flush_paced(self) -> None:
        """Flush the waiting pushes now, or when the pace allows (``FANOUT_WAKEUPS``)."""
        due = self._flush_due()
        if trio.current_time() >= due:
            self._flush_pushes()
        else:
            self._linger_until(due)

    def _linger_until(self, when: float) -> None:
        """Have the linger flush at ``when``, or later if it was to flush later anyway."""
        if self._linger.is_set():
            self._linger_at = max(self._linger_at, when)
        else:
            self._linger_at = when
            self._linger.set()

    def _flush_pushes(self) -> None:
        """Send each prompt batching client its waiting pushes (``_send_pending``)."""
        pending, self._pending = self._pending, []
        if pending:
            self._flushed_at = trio.current_time()
            self._send_pending(pending)

    def _send_pending(self, pending: list[_Client]) -> None:
        """Send each of ``pending`` its waiting pushes in one frame (one ``PushBatch``,
        or the push alone); clients waiting for the same pushes share one encoding."""
        pushes: dict[int, Push] = {}
        frames: dict[tuple[int, ...], list[bytes]] = {}
        for client in pending:
            notices, client.pending = client.pending, []
            key = tuple(map(id, notices))
            encoded = frames.get(key)
            if encoded is None:
                for notice in notices:
                    if id(notice) not in pushes:
                        pushes[id(notice)] = Push(notice.TOPIC, notice.to_json())
                encoded = frames[key] = _batch_frames([pushes[id(n)] for n in notices])
            for frame in encoded:
                client.post(frame, direct=True)  # a batch already: no writer task needed

    async def _flush_lingering(self) -> NoReturn:
        """Flush the pushes nobody flushed (``call_routed`` news, say) ``FANOUT_LINGER``
        after the first of them, and those waiting for the pace (``_flush_paced``)."""
        while True:
            await self._linger.wait()
            while trio.current_time() < self._linger_at:  # it may move later meanwhile
                await sleep_until(self._linger_at)
            self._linger = trio.Event()
            self._flush_pushes()

    async def _flush_lazily(self) -> NoReturn:
        """Flush the lazy clients' pushes at ``_lazy_at`` (``_wait_lazily``)."""
        while True:
            await self._lazy_alarm.wait()
            await sleep_until(self._lazy_at)
            self._lazy_alarm = trio.Event()
            lazy, self._lazy = self._lazy, []
            self._send_pending(lazy)

    async def _expire_calls(self) -> NoReturn:
        log = get_logger(app=self.app.name)
        while True:
            if self.mode != PRIMARY:  # a backup's calls expire by its primary's ops
                await self._primary.wait()
            self._wake = trio.Event()
            deadline = self.ledger.next_deadline()
            self._expiry_at = math.inf if deadline is None else deadline - self._offset
            with trio.move_on_at(self._expiry_at) as scope:
                await self._wake.wait()
            now = self.now()
            if scope.cancelled_caught and deadline is not None:
                # Float rounding must not leave the due call in place (a busy loop).
                now = max(now, deadline)
            if self.mode != PRIMARY:
                continue
            for record in self.journal.expire(now):
                if record.state == "lost":
                    log.info("call_lost", call_id=record.call_id, dn=record.dn)
                else:
                    log.info("call_default_routed", call_id=record.call_id, dn=record.dn,
                             target=record.target)  # fmt: skip
                    # The call left the routing point: its watchers stop (EventRouteUsed).
                    routed = CallRouted(record.call_id, self.app.name, None, None, record.target)
                    self._push_to(record.dn, routed)

    async def _generate(
        self, gen: _Generator, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        with gen.scope:
            task_status.started()
            start = trio.current_time()
            end = math.inf if gen.duration is None else start + gen.duration
            sent = 0
            try:
                while True:
                    at = start + sent / gen.rate
                    if at >= end:
                        break
                    self._next_tick = max(at, trio.current_time() + GENERATOR_TICK)
                    await sleep_until(self._next_tick)
                    now = trio.current_time()
                    behind = now - at
                    if behind > MAX_GENERATOR_LAG:
                        skipped = math.floor(behind * gen.rate)
                        sent += skipped
                        continue
                    # Every call due by now (the first one at least), in one batch.
                    self._ticking = True
                    while at <= now and at < end:
                        dn = gen.dn or self._rotate_dn()
                        if dn is not None and dn in self.routing_points:
                            self.new_call(dn)
                            gen.made += 1
                        sent += 1
                        at = start + sent / gen.rate
                    self._ticking = False
                    self._flush_paced()
            finally:
                self._next_tick, self._ticking = math.inf, False
        gen.running = False

    # -- connections -------------------------------------------------------------

    async def _on_disconnect(self, conn: Connection) -> None:
        follower = self._follower
        if follower is not None and follower.conn is conn:
            self._drop_follower("link closed")
        client = self._clients.pop(conn, None)
        if client is not None:
            get_logger(app=self.app.name).info(
                "client_gone", peer=client.app, node_id=client.node_id, reason=conn.close_reason
            )

    # -- requests ----------------------------------------------------------------

    def _check_primary(self) -> None:
        """Refuse a command to a T-Server that is not primary (its twin serves)."""
        if self.mode != PRIMARY:
            twin = "" if self.partner is None else f"; its twin is {self.partner.name}"
            raise RequestRefused("not_primary", f"{self.app.name} is {self.mode}{twin}")

    def _register(self, conn: Connection, request: Register) -> Registered:
        self._check_primary()
        app = conn.peer_app if request.app is None else request.app
        node_id = request.node_id
        dns = list(request.dns) or list(self.routing_points)
        for dn in dns:
            self._check_dn(dn)
        client = self._clients.get(conn)
        if client is None:
            if self._nursery is None or conn.closed.is_set():
                raise RequestRefused("closed", "connection is closing")
            client = _Client(conn, app, node_id)
            self._clients[conn] = client
        client.app, client.node_id = app, node_id
        client.batches = bool(request.batches)
        client.dns.update(dns)
        # Calls already waiting on these routing points are told to the new client too: a
        # router that (re)connects while a call waits (its link cut by a partition, or a
        # frozen process whose link was dropped) would otherwise never hear of it, and
        # nobody else may be left to route it (found by `orsim search`). So is a router
        # that comes over from a T-Server that died: its twin holds the same calls. A
        # call its backup does not hold yet is told once it does.
        now = self.now()
        held = {push.call_id for _, _, push in self._held}
        waiting = [r for r in self.ledger.waiting(dns, now) if r.call_id not in held]
        for record in waiting:
            told = RouteRequest(record.call_id, record.dn, record.created_at, record.deadline,
                                redelivered=True, waited=now - record.created_at)  # fmt: skip
            client.post(encode(Push(told.TOPIC, told.to_json())))
        get_logger(app=self.app.name).info(
            "client_registered", peer=app, node_id=node_id, dns=sorted(client.dns),
            waiting=len(waiting),
        )  # fmt: skip
        return Registered(tuple(sorted(client.dns)))

    def _fence(self, conn: Connection, request: Fence) -> Fenced | Awaitable[Fenced]:
        self._check_primary()
        node_id, epoch, app = request.node_id, request.epoch, request.app
        try:
            known = self.journal.fence(node_id, epoch, app)
        except EpochTaken as exc:
            get_logger(app=self.app.name).info(
                "fence_refused",
                node_id=node_id,
                peer=app,
                epoch=epoch,
                known=exc.known,
                holder=exc.holder,
            )
            raise RequestRefused("stale_epoch", str(exc)) from exc
        get_logger(app=self.app.name).info("fenced", node_id=node_id, epoch=known, peer=app)
        if app is not None:
            self._hurry(node_id, app)
        return self._once_held(Fenced(known))

    def _query_call(self, conn: Connection, request: QueryCall) -> CallState:
        """Where a call stands (Genesys TQueryCall): a node recovering a session asks
        before routing it, in case it was routed while the node could not hear it."""
        record = self.ledger.get(request.call_id)
        return CallState("unknown" if record is None else record.state)

    def _claim_epoch(
        self, conn: Connection, request: ClaimEpoch
    ) -> EpochClaim | Awaitable[EpochClaim]:
        self._check_primary()
        app = conn.peer_app if request.app is None else request.app
        node_id, expected, new = request.node_id, request.expected, request.new
        won, known = self.journal.claim(node_id, expected, new, app)
        get_logger(app=self.app.name).info(
            "epoch_claim", node_id=node_id, peer=app, expected=expected, new=new, won=won
        )
        if won:
            self._hurry(node_id, app)
        return self._once_held(EpochClaim(won, known))

    def _route(self, conn: Connection, request: Route) -> Routed | Awaitable[Routed]:
        self._check_primary()
        call_id, target, node_id, epoch = (
            request.call_id, request.target, request.node_id, request.epoch,
        )  # fmt: skip
        app = conn.peer_app if request.app is None else request.app
        try:
            outcome = self.journal.route(
                call_id, app=app, node_id=node_id, epoch=epoch, now=self.now(), target=target
            )
        except RouteRefused as exc:
            get_logger(app=self.app.name).info(
                "route_refused",
                call_id=call_id,
                code=exc.code,
                peer=app,
                node_id=node_id,
                epoch=epoch,
            )
            refused = RequestRefused(exc.code, str(exc))
            if self._follower is None:
                raise refused from exc
            # The refusal is counted (a duplicate, a stale epoch): the backup counts it
            # before the router hears of it.
            return self._refuse_once_held(refused)
        answer = Routed(call_id, outcome.latency_ms)
        if outcome.resent:  # a resend: everyone heard of the call the first time
            return self._once_held(answer)
        routed = CallRouted(call_id, app, node_id, epoch, target)
        if self._follower is None:
            self._push_to(outcome.record.dn, routed, but=app)
            return answer
        return self._once_held(answer, lambda: self._push_to(outcome.record.dn, routed, but=app))

    def _make_call(self, conn: Connection, request: MakeCall) -> MadeCall:
        self._check_primary()
        dn = request.dn
        record = self.new_call(self._default_dn() if dn is None else self._check_dn(dn))
        self._flush_paced()
        return MadeCall(record.call_id, record.dn, record.created_at, record.deadline)

    async def _generate_calls(self, conn: Connection, request: Generate) -> Done:
        self._check_primary()
        rate, duration, dn = request.rate, request.duration, request.dn
        if not (0 < rate <= MAX_RATE):
            raise RequestRefused("bad_request", f"rate must be in (0, {MAX_RATE:g}] calls/s")
        if duration is not None and not (duration >= 0 and math.isfinite(duration)):
            raise RequestRefused("bad_request", "duration must be seconds >= 0")
        if dn is None:
            self._default_dn()
        else:
            self._check_dn(dn)
        await self._start_generator(rate, duration, dn)
        get_logger(app=self.app.name).info("generator_started", rate=rate, duration=duration, dn=dn)
        return Done()

    async def _start_generator(self, rate: float, duration: float | None, dn: str | None) -> None:
        self._stop_generator()
        assert self._nursery is not None
        gen = _Generator(rate, duration, dn)
        self._generator = gen
        self.journal.generator_started(GeneratorRun(rate, duration, dn, self.now()))
        await self._nursery.start(self._generate, gen)

    def _stop_generator(self) -> bool:
        gen = self._generator
        if gen is None or not gen.running:
            return False
        gen.scope.cancel()
        gen.running = False
        return True

    def _stop_generating(self, conn: Connection, request: StopGenerator) -> Stopped:
        self._check_primary()
        stopped = self._stop_generator()
        self.journal.generator_stopped()
        if stopped:
            get_logger(app=self.app.name).info("generator_stopped")
        return Stopped(stopped)

    def _ledger(self, conn: Connection, request: Ledger) -> LedgerReport:
        with_records = bool(request.records)
        offset = 0 if request.offset is None else request.offset
        limit = MAX_RECORDS_PAGE if request.limit is None else request.limit
        if offset < 0 or not (0 < limit <= MAX_RECORDS_PAGE):
            raise RequestRefused(
                "bad_request", f"need offset >= 0, 0 < limit <= {MAX_RECORDS_PAGE}"
            )
        counts = self.ledger.counts()
        if not with_records:
            return LedgerReport(counts)
        records = self.ledger.records()
        return LedgerReport(counts, tuple(records[offset : offset + limit]), len(records))

    # -- hot standby: the primary's side ---------------------------------------------

    def _follow(self, conn: Connection, request: Follow) -> Role:
        """The twin asks this T-Server's role; a primary also takes it as its backup."""
        role = Role(self.mode, self.generation)
        if not request.attach or self.mode != PRIMARY:
            return role
        if self.partner is None or conn.peer_app != self.partner.name:
            raise RequestRefused("bad_request", f"only {self.app.name}'s twin may follow it")
        if self._follower is not None:
            self._drop_follower("followed again")
        follower = _Follower(conn, progress_at=trio.current_time())
        self._follower = follower
        assert self._nursery is not None
        self._nursery.start_soon(self._feed, follower)
        self._nursery.start_soon(self._watch_acks, follower)
        get_logger(app=self.app.name).info(
            "backup_following", peer=conn.peer_app, ops=self.journal.seq
        )
        return role

    def _on_op(self) -> None:
        follower = self._follower
        if follower is not None:
            follower.wake.set()

    async def _feed(self, follower: _Follower) -> None:
        """Send the backup every op it has not had, in order, from the first."""
        try:
            while follower is self._follower:
                ops = self.journal.ops
                if follower.sent >= len(ops):
                    follower.wake = trio.Event()
                    await follower.wake.wait()
                    continue
                chunk = ops[follower.sent : follower.sent + OPS_PER_PUSH]
                first = follower.sent + 1
                follower.sent += len(chunk)
                await follower.conn.notify(LedgerOps(first, tuple(chunk)))
        except (ConnectionLost, RuntimeError) as exc:
            if follower is self._follower:
                self._drop_follower(f"send failed: {exc}")

    async def _watch_acks(self, follower: _Follower) -> None:
        """Drop a backup that confirms nothing for ``REPLICA_ACK_TIMEOUT``."""
        while follower is self._follower:
            now = trio.current_time()
            if follower.acked >= self.journal.seq:
                follower.progress_at = now
            elif now - follower.progress_at > REPLICA_ACK_TIMEOUT:
                self._drop_follower(f"no ack for {REPLICA_ACK_TIMEOUT:g}s")
                return
            await trio.sleep(REPLICA_ACK_TIMEOUT / 4)

    def _on_ack(self, conn: Connection, ack: ReplicaAck) -> None:
        follower = self._follower
        if follower is None or follower.conn is not conn or ack.seq <= follower.acked:
            return
        follower.acked = min(ack.seq, follower.sent)
        follower.progress_at = trio.current_time()
        follower.acked_changed.set()
        follower.acked_changed = trio.Event()
        self._release_held(follower.acked)

    def _release_held(self, upto: float) -> None:
        """Offer the held calls the backup now holds (all of them: ``math.inf``)."""
        held = self._held
        while held and held[0][0] <= upto:
            _, dn, push = held.popleft()
            self._push_to(dn, push)
        self._flush_pushes()

    def _drop_follower(self, why: str) -> None:
        """Run alone: the backup is gone, too slow or replaced; whatever it has not
        confirmed goes out now."""
        follower = self._follower
        if follower is None:
            return
        self._follower = None
        get_logger(app=self.app.name).warning(
            "backup_dropped", peer=follower.conn.peer_app, reason=why, acked=follower.acked,
            ops=self.journal.seq,
        )  # fmt: skip
        follower.wake.set()
        follower.acked_changed.set()
        self._release_held(math.inf)
        if self._nursery is not None:
            self._nursery.start_soon(follower.conn.aclose)

    def _once_held(self, answer: R, then: Callable[[], None] | None = None) -> R | Awaitable[R]:
        """``answer`` once the backup holds every op written so far (at once alone)."""
        follower = self._follower
        if follower is None:
            if then is not None:
                then()
            return answer
        return self._after_ack(follower, self.journal.seq, answer, then)

    async def _after_ack(
        self, follower: _Follower, seq: int, answer: R, then: Callable[[], None] | None
    ) -> R:
        while follower is self._follower and follower.acked < seq:
            await follower.acked_changed.wait()
        if then is not None:
            then()
        return answer

    async def _refuse_once_held(self, refused: RequestRefused) -> NoReturn:
        follower = self._follower
        if follower is not None:
            await self._after_ack(follower, self.journal.seq, Done(), None)
        raise refused

    # -- hot standby: the twins ------------------------------------------------------

    async def _twin(self, network: Network, partner: Application) -> NoReturn:
        """Decide this twin's role, then keep it: follow a primary twin (backup), or
        serve (primary) and step down for a twin that took over meanwhile.

        Start: a configured primary that finds no primary twin takes the primary role
        at once; a configured backup waits up to ``BACKUP_START_WAIT`` for its primary.
        A backup whose primary's link closes asks once more: a primary that answers is
        followed again (from the first op); one that does not (killed, hung) is
        replaced: the backup takes over with the whole ledger, its generation one up.
        """
        log = get_logger(app=self.app.name)
        wait_until = trio.current_time() + (BACKUP_START_WAIT if self.app.is_backup else 0.0)
        while True:
            conn = await self._dial_twin(network, partner)
            role: Role | None = None
            followed = False
            if conn is not None:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(conn.serve)
                    try:
                        role = await conn.call(Follow(attach=False), TWIN_ADDP_TIMEOUT)
                        if role.mode == PRIMARY and self.mode != PRIMARY:
                            followed = True
                            await self._follow_twin(conn, role)
                    except (ConnectionLost, RequestRefused, RemoteProtocolError,
                            trio.TooSlowError) as exc:  # fmt: skip
                        log.warning("twin_unanswered", twin=partner.name, error=str(exc))
                        role = None
                    finally:
                        nursery.cancel_scope.cancel()
                await conn.aclose()
            if followed:
                # The primary's link closed: ask it once more, at once; it is replaced
                # only if that finds no primary.
                wait_until = trio.current_time()
                continue
            if self.mode == PRIMARY:
                if role is not None and _twin_leads(role, self):
                    self._step_down(partner.name, role)
                    continue
                await trio.sleep(TWIN_PROBE)
                while self._follower is not None and self.mode == PRIMARY:
                    await trio.sleep(TWIN_PROBE)  # it follows us: no need to ask
                continue
            if not self.app.is_backup or trio.current_time() >= wait_until:
                self._take_over(partner.name, "twin not primary" if role else "twin unreachable")
                continue
            await trio.sleep(0.1)

    async def _dial_twin(self, network: Network, partner: Application) -> Connection | None:
        try:
            return await open_connection(
                network, partner.address, partner.port, app=self.app.name,
                app_type=self.app.type, addp_timeout=TWIN_ADDP_TIMEOUT,
                addp_remote_timeout=TWIN_ADDP_TIMEOUT, on_push=self.pushes,
                timeout=TWIN_ADDP_TIMEOUT,
            )  # fmt: skip
        except (OSError, ConnectionLost, trio.TooSlowError, RemoteProtocolError):
            return None

    async def _follow_twin(self, conn: Connection, role: Role) -> None:
        """Be ``conn``'s backup until the link closes: a fresh ledger fed its ops."""
        self.ledger = CallLedger()
        self.journal = self._new_journal(self.ledger)
        self._leader = conn
        self.mode = BACKUP
        self._decided.set()
        self.generation = role.generation
        get_logger(app=self.app.name).info("tserver_following", twin=conn.peer_app)
        try:
            answer = await conn.call(Follow(attach=True), TWIN_ADDP_TIMEOUT)
            if answer.mode == PRIMARY:
                await conn.closed.wait()
        finally:
            self._leader = None
        get_logger(app=self.app.name).warning(
            "twin_lost", twin=conn.peer_app, reason=conn.close_reason, ops=self.journal.seq
        )

    def _on_ops(self, conn: Connection, push: LedgerOps) -> None:
        """Apply the primary's ops, in order, and confirm them."""
        if conn is not self._leader:
            return
        if push.first != self.journal.seq + 1:
            raise RemoteProtocolError(f"ops from {push.first}, expected {self.journal.seq + 1}")
        try:
            for op in push.ops:
                self.journal.apply(op)
        except BadOp as exc:
            raise RemoteProtocolError(str(exc)) from exc
        with contextlib.suppress(ConnectionLost, RuntimeError):
            conn.notify_nowait(ReplicaAck(self.journal.seq))

    def _take_over(self, twin: str, why: str) -> None:
        """Become primary with the ledger as it stands; resume the generator."""
        self.mode = PRIMARY
        self._decided.set()
        self.generation += 1
        # Call ids go on past every one the ledger holds (this name may have made some
        # in an earlier life of the same run id).
        self._seq = itertools.count(len(self.ledger) + 1)
        self._primary.set()
        self._wake.set()
        get_logger(app=self.app.name).warning(
            "tserver_primary", twin=twin, reason=why, generation=self.generation,
            calls=len(self.ledger), in_flight=self.ledger.counts().in_flight,
        )  # fmt: skip
        run = self.journal.generator
        if run is not None and self._nursery is not None:
            left = run.remaining(self.now())
            if left is None or left > 0:
                self._nursery.start_soon(self._start_generator, run.rate, left, run.dn)

    def _step_down(self, twin: str, role: Role) -> None:
        """A twin leads (it took over while this one was cut off): drop every client,
        so they reconnect to it, and follow it."""
        get_logger(app=self.app.name).warning(
            "tserver_stepped_down", twin=twin, generation=self.generation,
            twin_generation=role.generation,
        )  # fmt: skip
        self.mode = STARTING
        self._primary = trio.Event()
        self._stop_generator()
        self._drop_follower("stepped down")
        clients, self._clients = list(self._clients), {}
        if self._nursery is not None:
            for conn in clients:
                self._nursery.start_soon(conn.aclose)

    def status(self) -> TServerStatus:
        """What ``status`` answers."""
        counts = self.ledger.counts()
        return TServerStatus(
            app=self.app.name,
            type=self.app.type,
            mode=self.mode,
            pid=os.getpid(),
            clients=tuple(c.info() for c in self._clients.values()),
            calls=CallCounts(
                created=counts.created,
                routed=counts.routed,
                lost=counts.lost,
                default_routed=counts.default_routed,
                duplicates=counts.duplicates,
                resent=counts.resent,
                stale=counts.stale,
                in_flight=counts.in_flight,
            ),
            routing_points=dict(self.routing_points),
            router_timeout=self.router_timeout,
            frames=frame_totals(),
            generator=None if self._generator is None else self._generator.info(),
        )

    def _status(self, conn: Connection, request: Status) -> StatusReport:
        return StatusReport(self.status().to_json())


def _twin_leads(role: Role, server: TServer) -> bool:
    """Whether a primary twin answering ``role`` leads ``server``, also primary: the one
    with more takeovers behind it, else the configured primary."""
    if role.mode != PRIMARY:
        return False
    if role.generation != server.generation:
        return role.generation > server.generation
    return server.app.is_backup


def _batch_frames(pushes: list[Push]) -> list[bytes]:
    """``pushes`` as frames: the push alone, or ``PushBatch`` frames of at most
    ``PUSHES_PER_BATCH``."""
    if len(pushes) == 1:
        return [encode(pushes[0])]
    return [
        encode(Push(PushBatch.TOPIC, PushBatch(tuple(pushes[i : i + PUSHES_PER_BATCH])).to_json()))
        for i in range(0, len(pushes), PUSHES_PER_BATCH)
    ]


def _request_of(record: CallRecord) -> RouteRequest:
    """The ``route_request`` push of a call."""
    return RouteRequest(record.call_id, record.dn, record.created_at, record.deadline)
