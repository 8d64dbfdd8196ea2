"""The call ledger: the T-Server's ground truth about every call (sans-IO, no clock).

Theory of operation. A call is created on a routing point with a deadline (creation time
plus ``TServer/router-timeout``). From then on it is ``in_flight`` until exactly one of:

- a route command arrives before the deadline from a Node whose epoch is current: the call
  is ``routed`` (by that app, Node and epoch, with its latency);
- the deadline passes first: the call is ``lost`` (``expire`` finds it, or a late route
  command does).

A real T-Server answers a request on a call that has left the routing point with an error
event (reference section 7); the ledger does the same with typed refusals, and counts the
refusals that matter to a failover test: a second route for a routed call (``duplicate``)
and a command from a fenced-off primary (``stale``). One second route is not a duplicate:
the *resend* of the accepted route itself (same app, Node, epoch and target), which a node
makes when its link broke before the answer came. It is answered as the original success
and counted apart (``resent``); the call was still routed once. Every Node has a known epoch, raised
by ``fence`` and by any accepted route carrying a higher epoch (a new primary routing is
proof of its takeover); commands below it are stale.

Times are plain floats passed in by the caller; the server uses wall-clock seconds so that
records compare across processes.
"""

from __future__ import annotations

import heapq
import math
from bisect import insort
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

import attrs

from orsim.errors import OrsimError

T = TypeVar("T")

IN_FLIGHT = "in_flight"
ROUTED = "routed"
LOST = "lost"
#: Not routed in time, and sent to ``TServer/default-dn`` by the T-Server itself.
DEFAULT_ROUTED = "default_routed"


class RouteRefused(OrsimError):
    """A route command the T-Server does not carry out; ``code`` is its wire error code."""

    code = "refused"

    def __init__(self, call_id: str, message: str) -> None:
        super().__init__(message)
        self.call_id = call_id


class UnknownCall(RouteRefused):
    """No call with this id was ever created."""

    code = "unknown_call"


class DuplicateRoute(RouteRefused):
    """The call was already routed; the second route is refused and counted."""

    code = "duplicate"


class StaleEpoch(RouteRefused):
    """The command's epoch is below the Node's known epoch (a fenced-off primary)."""

    code = "stale_epoch"


class CallLost(RouteRefused):
    """The call's deadline passed before it was routed."""

    code = "lost"


class DuplicateCallId(ValueError):
    """``create`` was given an id the ledger already holds (a caller bug)."""


@attrs.frozen
class DoublePrimary:
    """Two running applications of one Node primary at the same epoch: a simulation's
    finding, read from its exact trace (``t``: virtual time)."""

    t: float
    node: str | None
    apps: tuple[str, str]
    epoch: int

    def to_wire(self) -> dict[str, object]:
        return {"t": self.t, "node": self.node, "apps": list(self.apps), "epoch": self.epoch}


@attrs.frozen(kw_only=True)
class CallRecord:
    """One call as the ledger knows it."""

    call_id: str
    dn: str
    created_at: float
    deadline: float
    state: str = IN_FLIGHT
    routed_at: float | None = None
    app: str | None = None
    node_id: int | None = None
    epoch: int | None = None
    target: str | None = None

    @property
    def latency_ms(self) -> float | None:
        """Milliseconds from creation to routing (None unless routed)."""
        if self.routed_at is None:
            return None
        return (self.routed_at - self.created_at) * 1000.0

    def to_wire(self) -> dict[str, object]:
        # The fields by name, in declaration order (as attrs.asdict gives them, which
        # is several times slower, and a ledger dump converts every record).
        return {
            "call_id": self.call_id, "dn": self.dn, "created_at": self.created_at,
            "deadline": self.deadline, "state": self.state, "routed_at": self.routed_at,
            "app": self.app, "node_id": self.node_id, "epoch": self.epoch,
            "target": self.target, "latency_ms": self.latency_ms,
        }  # fmt: skip

    @classmethod
    def from_wire(cls, data: Mapping[str, object]) -> CallRecord:
        """Read what ``to_wire`` wrote.

        Raises:
            KeyError, TypeError, ValueError: ``data`` is not a call record.
        """
        return cls(
            call_id=_typed(data["call_id"], str),
            dn=_typed(data["dn"], str),
            created_at=_number(data["created_at"]),
            deadline=_number(data["deadline"]),
            state=_typed(data["state"], str),
            routed_at=_maybe(data.get("routed_at"), _number),
            app=_maybe(data.get("app"), lambda v: _typed(v, str)),
            node_id=_maybe(data.get("node_id"), lambda v: _typed(v, int)),
            epoch=_maybe(data.get("epoch"), lambda v: _typed(v, int)),
            target=_maybe(data.get("target"), lambda v: _typed(v, str)),
        )


@attrs.frozen(kw_only=True)
class CallOutcomes:
    """What became of the calls, counted: the counters a status shows (``CallCounts``)
    and the ledger's snapshot (``LedgerCounts``) both start with."""

    created: int
    routed: int
    lost: int
    #: Not routed within router-timeout and sent to ``default-dn`` (not lost).
    default_routed: int
    duplicates: int
    resent: int
    stale: int
    in_flight: int


@attrs.frozen(kw_only=True)
class LedgerCounts(CallOutcomes):
    """A snapshot of the ledger's counters."""

    unknown: int
    late: int
    by_app: dict[str, int]
    by_node: dict[int, int]
    latency_p50_ms: float | None
    latency_p99_ms: float | None

    def to_wire(self) -> dict[str, object]:
        # As attrs.asdict gives it (several times slower; a status sample asks for it).
        return {
            "created": self.created, "routed": self.routed, "lost": self.lost,
            "default_routed": self.default_routed, "duplicates": self.duplicates,
            "resent": self.resent, "stale": self.stale, "unknown": self.unknown,
            "late": self.late, "in_flight": self.in_flight, "by_app": dict(self.by_app),
            # JSON object keys are strings.
            "by_node": {str(k): v for k, v in self.by_node.items()},
            "latency_p50_ms": self.latency_p50_ms, "latency_p99_ms": self.latency_p99_ms,
        }  # fmt: skip

    @classmethod
    def from_wire(cls, data: Mapping[str, object]) -> LedgerCounts:
        """Read what ``to_wire`` wrote.

        Raises:
            KeyError, TypeError, ValueError: ``data`` is not a ledger's counts.
        """
        by_app, by_node = data["by_app"], data["by_node"]
        if not isinstance(by_app, dict) or not isinstance(by_node, dict):
            raise TypeError("by_app and by_node must be objects")
        counts = {name: _typed(data[name], int) for name in _COUNTED}
        return cls(
            **counts,
            by_app={str(k): _typed(v, int) for k, v in by_app.items()},
            by_node={int(k): _typed(v, int) for k, v in by_node.items()},
            latency_p50_ms=_maybe(data.get("latency_p50_ms"), _number),
            latency_p99_ms=_maybe(data.get("latency_p99_ms"), _number),
        )


_COUNTED = tuple(a.name for a in attrs.fields(LedgerCounts) if a.type in ("int", int))


def _typed(value: object, kind: type[T]) -> T:
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise TypeError(f"expected {kind.__name__}, not {value!r}")
    return value


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number, not {value!r}")
    return float(value)


def _maybe(value: object, read: Callable[[object], T]) -> T | None:
    return None if value is None else read(value)


def percentile(values: Iterable[float], q: float) -> float | None:
    """The nearest-rank ``q``-th percentile (0 < q <= 100) of ``values``; None if empty."""
    return _nearest_rank(sorted(values), q)


def _nearest_rank(ordered: list[float], q: float) -> float | None:
    """``percentile`` of values already in order."""
    if not ordered:
        return None
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


@attrs.define(eq=False)
class RouteOutcome:
    """A route the ledger accepted (``resent``: the same route accepted earlier, again)."""

    record: CallRecord
    resent: bool = False

    @property
    def latency_ms(self) -> float:
        latency = self.record.latency_ms
        assert latency is not None
        return latency


class EpochTaken(Exception):
    """A fence refused: the Node's epoch is past it, or held by another application."""

    def __init__(self, node_id: int, known: int, holder: str) -> None:
        super().__init__(f"node {node_id} is at epoch {known}, held by {holder}")
        self.node_id = node_id
        self.known = known
        self.holder = holder


@attrs.define(eq=False)
class CallLedger:
    """Every call of one T-Server run and what became of it."""

    _calls: dict[str, CallRecord] = attrs.Factory(dict)
    _epochs: dict[int, int] = attrs.Factory(dict)
    #: The application that holds each Node's known epoch, where one is known: another
    #: application of the Node at that same epoch is refused (two claimants can meet at
    #: one epoch when one claimed it in the store and the other here, store away).
    _holders: dict[int, str] = attrs.Factory(dict)
    # (deadline, call_id) of calls that were in flight when pushed; entries of calls that
    # have since been routed or lost are skipped lazily.
    _deadlines: list[tuple[float, str]] = attrs.Factory(list)
    #: The routed calls' latencies, in order.
    _latencies_ms: list[float] = attrs.Factory(list)
    _by_app: Counter[str] = attrs.Factory(Counter)
    #: One copy of each application and target name, shared by every record that names
    #: it (each route decodes its own: ~110 B a call of a ledger that keeps every call).
    _names: dict[str, str] = attrs.Factory(dict)
    _by_node: Counter[int] = attrs.Factory(Counter)
    _routed: int = 0
    _lost: int = 0
    _default_routed: int = 0
    #: ``TServer/default-dn``: where a call goes when its router-timeout passes; empty
    #: means no default routing, and such a call is lost (ors-domain.md section 7).
    default_dn: str = ""
    _duplicates: int = 0
    _resent: int = 0
    _stale: int = 0
    _unknown: int = 0
    _late: int = 0

    # -- commands ----------------------------------------------------------------

    def create(self, call_id: str, dn: str, now: float, deadline: float) -> CallRecord:
        """Record a new call waiting on routing point ``dn`` until ``deadline``."""
        if call_id in self._calls:
            raise DuplicateCallId(f"call {call_id!r} already exists")
        record = CallRecord(call_id=call_id, dn=dn, created_at=now, deadline=deadline)
        self._calls[call_id] = record
        heapq.heappush(self._deadlines, (deadline, call_id))
        return record

    def waiting(self, dns: Iterable[str], now: float) -> list[CallRecord]:
        """Calls in flight on any of ``dns`` whose deadline has not passed, oldest first."""
        wanted = set(dns)
        found = [
            record
            for _deadline, call_id in self._deadlines
            if (record := self._calls[call_id]).state == IN_FLIGHT
            and record.dn in wanted
            and record.deadline > now
        ]
        return sorted(found, key=lambda r: (r.created_at, r.call_id))

    def route(
        self,
        call_id: str,
        *,
        app: str,
        node_id: int,
        epoch: int,
        now: float,
        target: str | None = None,
    ) -> RouteOutcome:
        """Route ``call_id`` on behalf of ``app`` of Node ``node_id`` at ``epoch``.

        Raises:
            UnknownCall: no such call.
            StaleEpoch: ``epoch`` is below the Node's known epoch (counted).
            DuplicateRoute: the call is already routed (counted), and not by this very
                route: an identical resend (same app, Node, epoch, target) returns the
                original outcome with ``resent`` set, counted as ``resent``.
            CallLost: the deadline passed before this command (the call is now lost).
        """
        record = self._calls.get(call_id)
        if record is None:
            self._unknown += 1
            raise UnknownCall(call_id, f"no call {call_id!r}")
        known = self._epochs.get(node_id, 0)
        if epoch < known:
            self._stale += 1
            raise StaleEpoch(call_id, f"epoch {epoch} of node {node_id} is stale (current {known})")
        if record.state == ROUTED:
            if (record.app, record.node_id, record.epoch, record.target) == (
                app,
                node_id,
                epoch,
                target,
            ):
                self._resent += 1
                return RouteOutcome(record, resent=True)
            self._duplicates += 1
            raise DuplicateRoute(
                call_id,
                f"call {call_id!r} already routed by {record.app} "
                f"(node {record.node_id}, epoch {record.epoch})",
            )
        holder = self._holders.get(node_id, app)
        if epoch == known and holder != app:
            self._stale += 1
            raise StaleEpoch(call_id, f"epoch {epoch} of node {node_id} is held by {holder}")
        if record.state == IN_FLIGHT and now >= record.deadline:
            record = self._mark_lost(record)
        if record.state in (LOST, DEFAULT_ROUTED):
            self._late += 1
            where = "lost" if record.state == LOST else f"sent to default-dn {record.target}"
            raise CallLost(call_id, f"call {call_id!r} was {where} at its deadline")
        names = self._names
        app = names.setdefault(app, app)
        if target is not None:
            target = names.setdefault(target, target)
        self._epochs[node_id] = epoch
        self._holders[node_id] = app
        routed = attrs.evolve(
            record,
            state=ROUTED,
            routed_at=now,
            app=app,
            node_id=node_id,
            epoch=epoch,
            target=target,
        )
        self._calls[call_id] = routed
        self._routed += 1
        self._by_app[app] += 1
        self._by_node[node_id] += 1
        # Kept sorted: a status poll asks for the percentiles many times a second.
        insort(self._latencies_ms, (now - routed.created_at) * 1000.0)
        return RouteOutcome(routed)

    def fence(self, node_id: int, epoch: int, app: str | None = None) -> int:
        """Raise Node ``node_id``'s known epoch to at least ``epoch``; returns the known epoch.

        With ``app`` (the application that won ``epoch``), the fence also records it as
        the epoch's holder, and is refused when the Node is already past ``epoch`` or
        another application holds ``epoch`` (the caller lost the Node).

        Raises:
            EpochTaken: refused, with ``app`` only.
        """
        known = self._epochs.get(node_id, 0)
        if app is not None:
            holder = self._holders.get(node_id, app)
            if epoch < known or (epoch == known and holder != app):
                raise EpochTaken(node_id, known, holder)
            self._holders[node_id] = app
        elif epoch > known:
            self._holders.pop(node_id, None)
        self._epochs[node_id] = max(known, epoch)
        return self._epochs[node_id]

    def claim(self, node_id: int, expected: int, new: int, app: str) -> tuple[bool, int]:
        """Compare-and-set of the Node's epoch here, for a claim made while the session
        store is away: won when nothing above ``expected`` is known (a T-Server that
        knows less, after its own restart, accepts). Returns (won, known epoch); the
        retry of a claim that was won is won again.
        """
        known = self._epochs.get(node_id, 0)
        if known == new and self._holders.get(node_id) == app:
            return True, known
        if new <= expected or known > expected:
            return False, known
        self._epochs[node_id] = new
        self._holders[node_id] = app
        return True, new

    def expire(self, now: float) -> list[CallRecord]:
        """Mark every in-flight call whose deadline is at or before ``now`` lost; return them."""
        lost: list[CallRecord] = []
        while self._deadlines and self._deadlines[0][0] <= now:
            _, call_id = heapq.heappop(self._deadlines)
            record = self._calls[call_id]
            if record.state == IN_FLIGHT:
                lost.append(self._mark_lost(record))
        return lost

    # -- queries -----------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """The earliest deadline of a call still in flight, or None."""
        while self._deadlines:
            _, call_id = self._deadlines[0]
            if self._calls[call_id].state == IN_FLIGHT:
                return self._deadlines[0][0]
            heapq.heappop(self._deadlines)
        return None

    def epoch_of(self, node_id: int) -> int:
        """The Node's known epoch (0 if never seen)."""
        return self._epochs.get(node_id, 0)

    def holder_of(self, node_id: int) -> str | None:
        """The application that holds the Node's known epoch (None: none is known)."""
        return self._holders.get(node_id)

    def get(self, call_id: str) -> CallRecord | None:
        return self._calls.get(call_id)

    def records(self) -> list[CallRecord]:
        """Every call, in creation order."""
        return list(self._calls.values())

    def __len__(self) -> int:
        return len(self._calls)

    def counts(self) -> LedgerCounts:
        created = len(self._calls)
        latencies = self._latencies_ms
        return LedgerCounts(
            created=created,
            routed=self._routed,
            lost=self._lost,
            default_routed=self._default_routed,
            duplicates=self._duplicates,
            resent=self._resent,
            stale=self._stale,
            unknown=self._unknown,
            late=self._late,
            in_flight=created - self._routed - self._lost - self._default_routed,
            by_app=dict(self._by_app),
            by_node=dict(self._by_node),
            latency_p50_ms=_nearest_rank(latencies, 50),
            latency_p99_ms=_nearest_rank(latencies, 99),
        )

    def _mark_lost(self, record: CallRecord) -> CallRecord:
        """The deadline passed: the call goes to ``default_dn`` if one is set, else lost."""
        if self.default_dn:
            done = attrs.evolve(record, state=DEFAULT_ROUTED, target=self.default_dn)
            self._default_routed += 1
        else:
            done = attrs.evolve(record, state=LOST)
            self._lost += 1
        self._calls[record.call_id] = done
        return done
