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

import itertools
import math
import os
import time
from functools import partial
from typing import NoReturn

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
from orsim.errors import ConfigError, ConnectionLost
from orsim.logs import get_logger
from orsim.tserver._ledger import CallLedger, CallRecord, EpochTaken, RouteRefused
from orsim.tserver._messages import (
    CallCounts,
    CallRouted,
    CallState,
    ClaimEpoch,
    EpochClaim,
    Fence,
    Fenced,
    Generate,
    GeneratorInfo,
    Ledger,
    LedgerReport,
    MadeCall,
    MakeCall,
    QueryCall,
    Register,
    Registered,
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
    RequestRefused,
    Status,
    StatusReport,
    encode,
    frame_totals,
    on,
    serve_app,
)

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
class _Client:
    """A connection registered on some routing points."""

    conn: Connection
    app: str
    node_id: int | None
    dns: set[str] = attrs.Factory(set)
    dropped: int = 0

    def post(self, frame: bytes) -> None:
        """Queue an encoded push; dropped (and counted) past ``OUTBOX_SIZE`` waiting."""
        try:
            if self.conn.send_frame_nowait(frame, limit=OUTBOX_SIZE):
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
    option changes.
    """

    app: Application
    routing_points: dict[str, str]
    router_timeout: float
    ledger: CallLedger = attrs.Factory(CallLedger)
    _clients: dict[Connection, _Client] = attrs.Factory(dict)
    _generator: _Generator | None = None
    _nursery: trio.Nursery | None = None
    _offset: float = 0.0
    _run_id: str = ""
    _seq: itertools.count[int] = attrs.Factory(lambda: itertools.count(1))
    _wake: trio.Event = attrs.Factory(trio.Event)
    _expiry_at: float = math.inf
    _rotation: int = 0
    #: Every request the T-Server answers, with its handler.
    handlers: HandlerTable = attrs.field(init=False)

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
            ],
        )

    @classmethod
    def from_application(cls, app: Application) -> TServer:
        """A T-Server for ``app``; ConfigError if its options are invalid."""
        server = cls(
            app,
            routing_points_of(app.options),
            router_timeout_of(app.options),
        )
        server.ledger.default_dn = default_dn_of(app.options)
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
            bound: int = await nursery.start(
                partial(
                    serve_app,
                    network,
                    self.app.address if host is None else host,
                    self.app.port if port is None else port,
                    app=self.app.name,
                    app_type=self.app.type,
                    handler=self.handlers.handle,
                    inline_handler=self.handlers,
                    on_disconnect=self._on_disconnect,
                    open_methods=OPEN_METHODS,
                )
            )
            log.info(
                "tserver_ready",
                port=bound,
                routing_points=list(self.routing_points),
                router_timeout=self.router_timeout,
            )
            task_status.started(bound)
        raise AssertionError("serve_app returned")  # pragma: no cover

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
            self.ledger.default_dn = default_dn
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
        record = self.ledger.create(call_id, dn, now, now + self.router_timeout)
        if record.deadline - self._offset < self._expiry_at:
            self._wake.set()
        self._push_to(dn, _request_of(record))
        return record

    def _push_to(self, dn: str, notice: Notice, but: str | None = None) -> None:
        """Send ``notice`` to every client registered on ``dn`` (encoded once), except the
        connections of application ``but``."""
        frame: bytes | None = None
        for client in self._clients.values():
            if dn in client.dns and client.app != but:
                frame = frame or encode(Push(notice.TOPIC, notice.to_json()))
                client.post(frame)

    async def _expire_calls(self) -> NoReturn:
        log = get_logger(app=self.app.name)
        while True:
            self._wake = trio.Event()
            deadline = self.ledger.next_deadline()
            self._expiry_at = math.inf if deadline is None else deadline - self._offset
            with trio.move_on_at(self._expiry_at) as scope:
                await self._wake.wait()
            now = self.now()
            if scope.cancelled_caught and deadline is not None:
                # Float rounding must not leave the due call in place (a busy loop).
                now = max(now, deadline)
            for record in self.ledger.expire(now):
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
            while True:
                at = start + sent / gen.rate
                if at >= end:
                    break
                await sleep_until(max(at, trio.current_time() + GENERATOR_TICK))
                now = trio.current_time()
                behind = now - at
                if behind > MAX_GENERATOR_LAG:
                    skipped = math.floor(behind * gen.rate)
                    sent += skipped
                    continue
                # Every call due by now (the first one at least), in one batch.
                while at <= now and at < end:
                    dn = gen.dn or self._rotate_dn()
                    if dn is not None and dn in self.routing_points:
                        self.new_call(dn)
                        gen.made += 1
                    sent += 1
                    at = start + sent / gen.rate
        gen.running = False

    # -- connections -------------------------------------------------------------

    async def _on_disconnect(self, conn: Connection) -> None:
        client = self._clients.pop(conn, None)
        if client is not None:
            get_logger(app=self.app.name).info(
                "client_gone", peer=client.app, node_id=client.node_id, reason=conn.close_reason
            )

    # -- requests ----------------------------------------------------------------

    def _register(self, conn: Connection, request: Register) -> Registered:
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
        client.dns.update(dns)
        # Calls already waiting on these routing points are told to the new client too: a
        # router that (re)connects while a call waits (its link cut by a partition, or a
        # frozen process whose link was dropped) would otherwise never hear of it, and
        # nobody else may be left to route it (found by `orsim search`).
        now = self.now()
        waiting = self.ledger.waiting(dns, now)
        for record in waiting:
            told = RouteRequest(record.call_id, record.dn, record.created_at, record.deadline,
                                redelivered=True, waited=now - record.created_at)  # fmt: skip
            client.post(encode(Push(told.TOPIC, told.to_json())))
        get_logger(app=self.app.name).info(
            "client_registered", peer=app, node_id=node_id, dns=sorted(client.dns),
            waiting=len(waiting),
        )  # fmt: skip
        return Registered(tuple(sorted(client.dns)))

    def _fence(self, conn: Connection, request: Fence) -> Fenced:
        node_id, epoch, app = request.node_id, request.epoch, request.app
        try:
            known = self.ledger.fence(node_id, epoch, app)
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
        return Fenced(known)

    def _query_call(self, conn: Connection, request: QueryCall) -> CallState:
        """Where a call stands (Genesys TQueryCall): a node recovering a session asks
        before routing it, in case it was routed while the node could not hear it."""
        record = self.ledger.get(request.call_id)
        return CallState("unknown" if record is None else record.state)

    def _claim_epoch(self, conn: Connection, request: ClaimEpoch) -> EpochClaim:
        app = conn.peer_app if request.app is None else request.app
        node_id, expected, new = request.node_id, request.expected, request.new
        won, known = self.ledger.claim(node_id, expected, new, app)
        get_logger(app=self.app.name).info(
            "epoch_claim", node_id=node_id, peer=app, expected=expected, new=new, won=won
        )
        return EpochClaim(won, known)

    def _route(self, conn: Connection, request: Route) -> Routed:
        call_id, target, node_id, epoch = (
            request.call_id, request.target, request.node_id, request.epoch,
        )  # fmt: skip
        app = conn.peer_app if request.app is None else request.app
        try:
            outcome = self.ledger.route(
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
            raise RequestRefused(exc.code, str(exc)) from exc
        if not outcome.resent:  # a resend: everyone heard of the call the first time
            routed = CallRouted(call_id, app, node_id, epoch, target)
            self._push_to(outcome.record.dn, routed, but=app)
        return Routed(call_id, outcome.latency_ms)

    def _make_call(self, conn: Connection, request: MakeCall) -> MadeCall:
        dn = request.dn
        record = self.new_call(self._default_dn() if dn is None else self._check_dn(dn))
        return MadeCall(record.call_id, record.dn, record.created_at, record.deadline)

    async def _generate_calls(self, conn: Connection, request: Generate) -> Done:
        rate, duration, dn = request.rate, request.duration, request.dn
        if not (0 < rate <= MAX_RATE):
            raise RequestRefused("bad_request", f"rate must be in (0, {MAX_RATE:g}] calls/s")
        if duration is not None and not (duration >= 0 and math.isfinite(duration)):
            raise RequestRefused("bad_request", "duration must be seconds >= 0")
        if dn is None:
            self._default_dn()
        else:
            self._check_dn(dn)
        self._stop_generator()
        assert self._nursery is not None
        gen = _Generator(rate, duration, dn)
        self._generator = gen
        await self._nursery.start(self._generate, gen)
        get_logger(app=self.app.name).info("generator_started", rate=rate, duration=duration, dn=dn)
        return Done()

    def _stop_generator(self) -> bool:
        gen = self._generator
        if gen is None or not gen.running:
            return False
        gen.scope.cancel()
        gen.running = False
        return True

    def _stop_generating(self, conn: Connection, request: StopGenerator) -> Stopped:
        stopped = self._stop_generator()
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

    def status(self) -> TServerStatus:
        """What ``status`` answers."""
        counts = self.ledger.counts()
        return TServerStatus(
            app=self.app.name,
            type=self.app.type,
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


def _request_of(record: CallRecord) -> RouteRequest:
    """The ``route_request`` push of a call."""
    return RouteRequest(record.call_id, record.dn, record.created_at, record.deadline)


async def serve_tserver(
    network: Network,
    app: Application,
    *,
    host: str | None = None,
    port: int | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve ``app`` as a T-Server until cancelled; ``started`` reports the bound port.

    Raises:
        ConfigError: the Application's options are invalid.
        UnreachableError: the port cannot be bound.
    """
    await TServer.from_application(app).serve(
        network, host=host, port=port, task_status=task_status
    )
