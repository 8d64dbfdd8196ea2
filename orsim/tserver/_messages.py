"""The T-Server protocol: every request, answer and push as a typed message.

The JSON of each is exactly what the T-Server and its clients exchanged as dicts before
(so real-process clusters and recorded traces are unchanged). The messages on every
call's path (the ``route_request`` and ``call_routed`` pushes, ``route`` and its answer)
are read and written by hand, without the generic per-field loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Self

import attrs

from orsim.errors import RequestRefused
from orsim.tserver._ledger import CallOutcomes, CallRecord, DoublePrimary, LedgerCounts
from orsim.wire import (
    FLATTEN,
    OMIT_NONE,
    AppStatus,
    Call,
    Done,
    FrameTotals,
    Json,
    Notice,
    Push,
    Record,
    int_or_none,
    json_object,
    nonempty_text,
    number_or_none,
    param,
)

# -- pushes ------------------------------------------------------------------------------


@attrs.frozen
class RouteRequest(Notice, topic="route_request"):
    """``route_request`` push (EventRouteRequest): a call waits on routing point ``dn``
    until ``deadline`` (T-Server clock, as ``created_at``).

    A redelivery (the call already waited ``waited`` seconds when this client
    registered) says so. Read leniently, as the node always has: only ``call_id`` must
    be there (a non-empty string); times that are not numbers are unknown (None).
    """

    call_id: str
    dn: str = ""
    created_at: float | None = None
    deadline: float | None = None
    redelivered: bool = False
    waited: float = 0.0

    def to_json(self) -> Json:
        data: dict[str, Json] = {
            "call_id": self.call_id,
            "dn": self.dn,
            "created_at": self.created_at,
            "deadline": self.deadline,
        }
        if self.redelivered:
            data["redelivered"] = True
            data["waited"] = self.waited
        return data

    @classmethod
    def from_json(cls, data: Json) -> Self:
        data = json_object(data)
        waited = number_or_none(data.get("waited"))
        return cls(
            nonempty_text(data, "call_id"),
            str(data.get("dn", "")),
            number_or_none(data.get("created_at")),
            number_or_none(data.get("deadline")),
            data.get("redelivered") is True,
            0.0 if waited is None else waited,
        )

    @classmethod
    def from_push(cls, push: Push) -> RouteRequest:
        """Raises RequestRefused (``bad_request``) on a malformed push."""
        return cls.from_json(push.data)

    @property
    def left(self) -> float | None:
        """Seconds the call had left to be routed when it was pushed (None: unknown)."""
        return _time_left(self.created_at, self.deadline, self.waited)


def _time_left(created_at: float | None, deadline: float | None, waited: float) -> float | None:
    """What was left of a call's router timeout when it was pushed: its deadline less
    its age and, for a redelivery, its wait (None: its times are unknown)."""
    if deadline is None or created_at is None:
        return None
    return deadline - created_at - waited


@attrs.frozen
class RouteRequests:
    """Consecutive ``route_request`` pushes of one batch, read together, column by column
    (``when_many``): an ORS hears every call of the cluster and is part of few, so it
    reads them without a ``RouteRequest`` each. Read as leniently, and refused for the
    very same faults, as ``RouteRequest.from_json``."""

    call_ids: tuple[str, ...]
    dns: tuple[str, ...]
    #: ``RouteRequest.left`` of each.
    left: tuple[float | None, ...]
    redelivered: tuple[bool, ...]

    @classmethod
    def from_bodies(cls, bodies: list[dict[str, Json]]) -> RouteRequests:
        """The pushes whose data are ``bodies``, in order.

        Raises:
            RequestRefused: ``bad_request``: one of them has no non-empty ``call_id``.
        """
        call_ids, dns, left, redelivered = [], [], [], []
        for data in bodies:
            waited = number_or_none(data.get("waited"))
            call_ids.append(nonempty_text(data, "call_id"))
            dns.append(str(data.get("dn", "")))
            left.append(
                _time_left(
                    number_or_none(data.get("created_at")),
                    number_or_none(data.get("deadline")),
                    0.0 if waited is None else waited,
                )
            )
            redelivered.append(data.get("redelivered") is True)
        return cls(tuple(call_ids), tuple(dns), tuple(left), tuple(redelivered))


@attrs.frozen
class CallRouted(Notice, topic="call_routed"):
    """``call_routed`` push (EventRouteUsed): ``call_id`` was routed by ``app`` of Node
    ``node_id`` at ``epoch`` (both None: sent to the default DN by the T-Server)."""

    call_id: str
    app: str = ""
    node_id: int | None = None
    epoch: int | None = None
    target: str | None = None

    def to_json(self) -> Json:
        return {
            "call_id": self.call_id,
            "app": self.app,
            "node_id": self.node_id,
            "epoch": self.epoch,
            "target": self.target,
        }

    @classmethod
    def from_json(cls, data: Json) -> Self:
        data = json_object(data)
        node_id, epoch, target = data.get("node_id"), data.get("epoch"), data.get("target")
        return cls(
            nonempty_text(data, "call_id"),
            str(data.get("app", "")),
            int_or_none(node_id),
            int_or_none(epoch),
            target if isinstance(target, str) else None,
        )

    @classmethod
    def from_push(cls, push: Push) -> CallRouted:
        """Raises RequestRefused (``bad_request``) on a malformed push."""
        return cls.from_json(push.data)


# -- requests ----------------------------------------------------------------------------


@attrs.frozen
class RoutedCalls:
    """Consecutive ``call_routed`` pushes of one batch, read together (``when_many``):
    the calls' IDs, all an ORS takes from them. Refused for the very faults that
    ``CallRouted.from_json`` refuses."""

    call_ids: tuple[str, ...]

    @classmethod
    def from_bodies(cls, bodies: list[dict[str, Json]]) -> RoutedCalls:
        """The pushes whose data are ``bodies``, in order.

        Raises:
            RequestRefused: ``bad_request``: one of them has no non-empty ``call_id``.
        """
        return cls(tuple(nonempty_text(data, "call_id") for data in bodies))


@attrs.frozen
class Registered(Record):
    """Every routing point the connection is registered on."""

    dns: tuple[str, ...]


@attrs.frozen
class Register(Call[Registered], method="register"):
    """``register``: receive route requests for ``dns`` (empty: every routing point).

    ``batches``: the client takes its pushes in ``PushBatch`` frames (an ORS does); a
    client that does not say so gets one frame per push, as before.
    """

    app: str | None = None
    node_id: int | None = None
    dns: tuple[str, ...] = ()
    batches: bool | None = attrs.field(default=None, metadata=OMIT_NONE)


@attrs.frozen
class Fenced(Record):
    """The epoch the T-Server now knows for the Node."""

    epoch: int


@attrs.frozen
class Fence(Call[Fenced], method="fence"):
    """``fence``: refuse commands of Node ``node_id`` below ``epoch`` from now on."""

    node_id: int
    epoch: int
    app: str | None = attrs.field(default=None, metadata=OMIT_NONE)


@attrs.frozen
class CallState(Record):
    """Where a call stands (``unknown``, ``waiting``, ``routed``, ``lost``, ...)."""

    state: str


@attrs.frozen
class QueryCall(Call[CallState], method="query_call"):
    """``query_call`` (TQueryCall): where ``call_id`` stands."""

    call_id: str


@attrs.frozen
class EpochClaim(Record):
    """Whether the claim won, and the epoch now known."""

    won: bool
    epoch: int


@attrs.frozen
class ClaimEpoch(Call[EpochClaim], method="claim_epoch"):
    """``claim_epoch``: compare-and-set Node ``node_id``'s epoch from ``expected`` to ``new``."""

    node_id: int
    expected: int
    new: int
    app: str | None = None


@attrs.frozen
class Routed(Record):
    """The answer to an accepted ``route``."""

    call_id: str
    latency_ms: float
    routed: bool = True

    def to_json(self) -> Json:
        return {"routed": self.routed, "call_id": self.call_id, "latency_ms": self.latency_ms}

    @classmethod
    def from_json(cls, data: Json) -> Self:
        if type(data) is dict and len(data) == 3:  # the answer as the T-Server writes it
            routed, call_id, latency = (
                data.get("routed"),
                data.get("call_id"),
                data.get("latency_ms"),
            )
            if type(routed) is bool and type(call_id) is str and type(latency) is float:
                return cls(call_id, latency, routed)
        data = json_object(data)
        return cls(
            param(data, "call_id", str),
            param(data, "latency_ms", float),
            param(data, "routed", bool, True),
        )


@attrs.frozen
class Route(Call[Routed], method="route"):
    """``route`` (RequestRouteCall): send ``call_id`` to ``target`` as ``app`` (default:
    the connection's peer) of Node ``node_id`` at ``epoch``."""

    call_id: str
    target: str | None
    app: str | None
    node_id: int
    epoch: int

    def to_json(self) -> Json:
        return {
            "call_id": self.call_id,
            "target": self.target,
            "app": self.app,
            "node_id": self.node_id,
            "epoch": self.epoch,
        }

    @classmethod
    def from_json(cls, data: Json) -> Self:
        if type(data) is dict and len(data) == 5:  # the request as a node writes it
            call_id, target, app = data.get("call_id"), data.get("target"), data.get("app")
            node_id, epoch = data.get("node_id"), data.get("epoch")
            if (
                type(call_id) is str
                and type(target) is str
                and type(app) is str
                and type(node_id) is int
                and type(epoch) is int
            ):
                return cls(call_id, target, app, node_id, epoch)
        data = json_object(data)  # anything else: checked field by field, as ``param`` does
        return cls(
            param(data, "call_id", str),
            param(data, "target", str, None),
            param(data, "app", str, None),
            param(data, "node_id", int),
            param(data, "epoch", int),
        )


@attrs.frozen
class MadeCall(Record):
    """The call ``make_call`` created."""

    call_id: str
    dn: str
    created_at: float
    deadline: float


@attrs.frozen
class MakeCall(Call[MadeCall], method="make_call"):
    """``make_call``: create one call on ``dn`` (default: the first routing point)."""

    dn: str | None = attrs.field(default=None, metadata=OMIT_NONE)


@attrs.frozen
class Generate(Call[Done], method="generate"):
    """``generate``: create calls at ``rate`` per second for ``duration`` s (None: until
    stopped) on ``dn`` (None: every routing point in turn)."""

    rate: float
    duration: float | None = None
    dn: str | None = None


@attrs.frozen
class Stopped(Record):
    """Whether a generator was running."""

    stopped: bool = False


@attrs.frozen
class StopGenerator(Call[Stopped], method="stop_generator"):
    """``stop_generator``."""


@attrs.frozen
class LedgerReport(Record):
    """The ledger's counts, with a page of its records (from ``offset``) and how many it
    holds in all when they were asked for.

    A simulation adds what only it can know exactly (None from a T-Server): every double
    primary in its trace, and the calls whose session was created twice."""

    counts: LedgerCounts
    records: tuple[CallRecord, ...] | None = None
    records_total: int | None = None
    double_primaries: tuple[DoublePrimary, ...] | None = None
    sessions_created_twice: tuple[str, ...] | None = None

    def to_json(self) -> Json:
        data = self.counts.to_wire()
        if self.records is not None:
            data["records"] = [r.to_wire() for r in self.records]
            data["records_total"] = self.records_total
        if self.double_primaries is not None:
            data["double_primaries"] = [d.to_wire() for d in self.double_primaries]
        if self.sessions_created_twice is not None:
            data["sessions_created_twice"] = list(self.sessions_created_twice)
        return data

    @classmethod
    def from_json(cls, data: Json) -> Self:
        data = json_object(data)
        try:
            counts = LedgerCounts.from_wire(data)
            raw = data.get("records")
            if raw is None:
                return cls(counts)
            if not isinstance(raw, list):
                raise TypeError("records must be a list")
            records = tuple(CallRecord.from_wire(json_object(r)) for r in raw)
            return cls(counts, records, param(data, "records_total", int))
        except (KeyError, TypeError, ValueError) as exc:
            raise RequestRefused("bad_request", f"malformed ledger: {exc!r}") from None


@attrs.frozen
class Ledger(Call[LedgerReport], method="ledger"):
    """``ledger``: the counts, and with ``records`` a page of records from ``offset``."""

    records: bool | None = attrs.field(default=None, metadata=OMIT_NONE)
    offset: int | None = attrs.field(default=None, metadata=OMIT_NONE)
    limit: int | None = attrs.field(default=None, metadata=OMIT_NONE)


# -- hot standby (a T-Server and its backup) ----------------------------------------------


@attrs.frozen
class Role(Record):
    """A T-Server's role (``primary``, ``backup`` or ``starting``) and generation (how
    many takeovers its pair has seen)."""

    mode: str
    generation: int


@attrs.frozen
class Follow(Call[Role], method="follow"):
    """``follow``: the T-Server's twin asks to keep its ledger (a primary answers and
    sends its journal from the first op); ``attach`` False only asks the role."""

    attach: bool = True


@attrs.frozen
class LedgerOps(Notice, topic="ledger_ops"):
    """``ledger_ops`` push, primary to backup: journal ops ``first``, ``first + 1``, ...
    (see ``_journal``)."""

    first: int
    ops: tuple[Json, ...]

    def to_json(self) -> Json:
        return {"first": self.first, "ops": list(self.ops)}

    @classmethod
    def from_json(cls, data: Json) -> Self:
        data = json_object(data)
        ops = data.get("ops")
        if not isinstance(ops, list):
            raise RequestRefused("bad_request", "ops must be a list")
        return cls(param(data, "first", int), tuple(ops))


@attrs.frozen
class ReplicaAck(Notice, topic="replica_ack"):
    """``replica_ack`` push, backup to primary: every op up to ``seq`` is applied."""

    seq: int


# -- status ------------------------------------------------------------------------------


@attrs.frozen
class TServerClientInfo(Record):
    """A connection registered on some routing points (``dropped``: pushes it missed for
    not reading)."""

    app: str
    node_id: int | None
    dns: tuple[str, ...]
    dropped: int


@attrs.frozen(kw_only=True)
class CallCounts(CallOutcomes, Record):
    """The call outcomes a status shows (the ledger's ``LedgerCounts`` has them all)."""


@attrs.frozen
class GeneratorInfo(Record):
    """The built-in call generator: its rate, how long it runs and how many it made."""

    rate: float
    duration: float | None
    dn: str | None
    made: int
    running: bool


@attrs.frozen(kw_only=True)
class TServerStatus(AppStatus):
    """The T-Server's ``status`` answer (field names are a contract: SPEC.md section 4).

    ``mode`` is ``primary``, ``backup`` or ``starting`` (a T-Server with a twin)."""

    clients: tuple[TServerClientInfo, ...]
    calls: CallCounts
    routing_points: Mapping[str, str]
    router_timeout: float
    frames: FrameTotals = attrs.field(metadata=FLATTEN)
    generator: GeneratorInfo | None
