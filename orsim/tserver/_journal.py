"""The ledger journal: how a hot-standby T-Server keeps its primary's ledger (sans-IO).

Theory of operation (reference section 8: a redundant T-Server; Genesys' hot standby
keeps the backup's call data synchronized from the primary). The call ledger
(``_ledger.CallLedger``) is a deterministic state machine: its state after a sequence of
commands (create, route, fence, claim, expire, a new ``default-dn``) depends only on
those commands and the times passed with them. So the primary does not ship its state:
it writes every command it applies, with its time, as one *op* in a journal, and the
backup applies the same ops in the same order to a ledger of its own. After op N the two
ledgers are equal, records, epochs, holders and every counter (duplicates, stale, late,
...) alike, which is what the scenario verdicts read.

A refused command is an op too: a refused route still counts (a duplicate, a stale
epoch, a late route that marks the call lost), and the backup must count it the same.
An ``expire`` that changed nothing is not written (it would only fill the journal).

The journal also carries the call generator's start and stop (the calls a generator
makes stand for calls the switch keeps offering): a backup that takes over resumes the
generator for what is left of its duration.

An op is a JSON list, its first item a one-letter kind:

    ["c", call_id, dn, now, deadline]                 create
    ["r", call_id, app, node_id, epoch, now, target]  route (accepted or refused)
    ["f", node_id, epoch, app | null]                 fence
    ["k", node_id, expected, new, app]                claim (compare-and-set)
    ["x", now]                                        expire
    ["d", default_dn]                                 TServer/default-dn changed
    ["g", rate, duration | null, dn | null, at]       generator started at ledger time at
    ["s"]                                             generator stopped

The journal of a T-Server with no partner keeps nothing (``keep=False``): its commands
go to the ledger alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs

from orsim.tserver._ledger import CallLedger, CallRecord, EpochTaken, RouteOutcome, RouteRefused
from orsim.wire import Json

#: One journal entry (see the module doc).
Op = list[Json]


class BadOp(ValueError):
    """An op that is not one this module writes (a peer's bug or garbage)."""


@attrs.frozen
class GeneratorRun:
    """A call generator as the journal knows it: started at ledger time ``at``."""

    rate: float
    duration: float | None
    dn: str | None
    at: float

    def remaining(self, now: float) -> float | None:
        """Seconds it has left at ledger time ``now`` (None: it runs until stopped)."""
        if self.duration is None:
            return None
        return max(0.0, self.at + self.duration - now)


@attrs.define(eq=False)
class LedgerJournal:
    """A ledger and the ops that made it; ``apply`` replays a peer's ops onto it."""

    ledger: CallLedger = attrs.Factory(CallLedger)
    #: False: keep no ops (a T-Server without a partner).
    keep: bool = True
    #: Called after each op is written (the primary wakes its backup's feed).
    on_op: Callable[[], None] | None = None
    ops: list[Op] = attrs.Factory(list)
    generator: GeneratorRun | None = None

    @property
    def seq(self) -> int:
        """How many ops the journal holds (the sequence number of the last one)."""
        return len(self.ops)

    def _log(self, op: Op) -> None:
        if self.keep:
            self.ops.append(op)
            if self.on_op is not None:
                self.on_op()

    # -- commands, written as ops ------------------------------------------------------

    def create(self, call_id: str, dn: str, now: float, deadline: float) -> CallRecord:
        record = self.ledger.create(call_id, dn, now, deadline)
        self._log(["c", call_id, dn, now, deadline])
        return record

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
        """``CallLedger.route``, written whether it is accepted or refused."""
        try:
            return self.ledger.route(
                call_id, app=app, node_id=node_id, epoch=epoch, now=now, target=target
            )
        finally:
            self._log(["r", call_id, app, node_id, epoch, now, target])

    def fence(self, node_id: int, epoch: int, app: str | None = None) -> int:
        known = self.ledger.fence(node_id, epoch, app)
        self._log(["f", node_id, epoch, app])
        return known

    def claim(self, node_id: int, expected: int, new: int, app: str) -> tuple[bool, int]:
        won, known = self.ledger.claim(node_id, expected, new, app)
        if won:
            self._log(["k", node_id, expected, new, app])
        return won, known

    def expire(self, now: float) -> list[CallRecord]:
        done = self.ledger.expire(now)
        if done:
            self._log(["x", now])
        return done

    def set_default_dn(self, dn: str) -> None:
        self.ledger.default_dn = dn
        self._log(["d", dn])

    def generator_started(self, run: GeneratorRun) -> None:
        self.generator = run
        self._log(["g", run.rate, run.duration, run.dn, run.at])

    def generator_stopped(self) -> None:
        self.generator = None
        self._log(["s"])

    # -- replay ------------------------------------------------------------------------

    def apply(self, op: Json) -> None:
        """Apply one op written by a peer's journal (and keep it in this one).

        Raises:
            BadOp: ``op`` is not a well-formed op.
        """
        if not isinstance(op, list) or not op or not isinstance(op[0], str):
            raise BadOp(f"not an op: {op!r}")
        try:
            self._apply(op[0], op[1:])
        except (TypeError, IndexError, ValueError) as exc:
            raise BadOp(f"malformed op {op!r}: {exc}") from exc

    def _apply(self, kind: str, a: Sequence[Json]) -> None:
        match kind:
            case "c":
                self.create(_text(a[0]), _text(a[1]), _num(a[2]), _num(a[3]))
            case "r":
                try:
                    self.route(
                        _text(a[0]), app=_text(a[1]), node_id=_int(a[2]), epoch=_int(a[3]),
                        now=_num(a[4]), target=_maybe_text(a[5]),
                    )  # fmt: skip
                except RouteRefused:
                    pass  # counted by the ledger, as on the primary
            case "f":
                try:
                    self.fence(_int(a[0]), _int(a[1]), _maybe_text(a[2]))
                except EpochTaken:
                    pass  # a refused fence changes nothing (the primary wrote none)
            case "k":
                self.claim(_int(a[0]), _int(a[1]), _int(a[2]), _text(a[3]))
            case "x":
                self.ledger.expire(_num(a[0]))
                self._log(["x", a[0]])
            case "d":
                self.set_default_dn(_text(a[0]))
            case "g":
                duration, dn = a[1], a[2]
                self.generator_started(
                    GeneratorRun(
                        _num(a[0]),
                        None if duration is None else _num(duration),
                        _maybe_text(dn),
                        _num(a[3]),
                    )
                )
            case "s":
                self.generator_stopped()
            case _:
                raise BadOp(f"unknown op kind {kind!r}")


def _text(value: Json) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text, not {value!r}")
    return value


def _maybe_text(value: Json) -> str | None:
    return None if value is None else _text(value)


def _int(value: Json) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected a whole number, not {value!r}")
    return value


def _num(value: Json) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number, not {value!r}")
    return float(value)
