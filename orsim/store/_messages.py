"""The store server's protocol: every request and answer as a typed message.

Requests mirror the ``SessionStore`` methods one to one. A fenced write refused for its
epoch is answered ``Stale`` (``{"stale": [node_id, epoch, current]}``) instead of its
usual answer, so fencing crosses the wire as data, not as an error string. The JSON of
each message is exactly what the server and its clients exchanged as dicts before.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Self

import attrs

from orsim.errors import RequestRefused
from orsim.store._session import Session, StaleEpoch, session_from_wire, session_to_wire
from orsim.wire import AppStatus, Call, Done, Json, Record, codec, json_object


def _session(data: dict[str, Json], key: str) -> Session:
    if key not in data:
        raise RequestRefused("bad_request", f"missing parameter {key!r}")
    try:
        return session_from_wire(data[key])
    except (KeyError, TypeError, ValueError) as exc:
        raise RequestRefused("bad_request", f"parameter {key!r}: {exc!r}") from None


def _sessions(data: dict[str, Json], key: str) -> tuple[Session, ...]:
    raw = data.get(key)
    if not isinstance(raw, list):
        raise RequestRefused("bad_request", f"{key} must be a list")
    try:
        return tuple(session_from_wire(s) for s in raw)
    except (KeyError, TypeError, ValueError) as exc:
        raise RequestRefused("bad_request", f"{key}: {exc!r}") from None


#: A session in its wire form (``session_to_wire``).
_SESSION = codec(_session, session_to_wire)
_SESSIONS = codec(_sessions, lambda sessions: [session_to_wire(s) for s in sessions])


@attrs.frozen
class Stale(Record):
    """The answer to a write refused for its epoch (``StaleEpoch`` on the wire)."""

    node_id: int
    epoch: int
    current: int

    @classmethod
    def of(cls, exc: StaleEpoch) -> Stale:
        return cls(exc.node_id, exc.epoch, exc.current)

    def to_json(self) -> Json:
        return {"stale": [self.node_id, self.epoch, self.current]}

    @classmethod
    def from_json(cls, data: Json) -> Self:
        stale = json_object(data).get("stale")
        if (
            not isinstance(stale, list)
            or len(stale) != 3
            or not all(isinstance(n, int) and not isinstance(n, bool) for n in stale)
        ):
            raise RequestRefused("bad_request", "stale must be [node_id, epoch, current]")
        return cls(*stale)

    @staticmethod
    def find(answer: Json) -> StaleEpoch | None:
        """The ``StaleEpoch`` an answer reports, if it is a ``Stale`` one."""
        stale = answer.get("stale") if isinstance(answer, dict) else None
        if isinstance(stale, list) and len(stale) == 3:
            return StaleEpoch(int(stale[0]), int(stale[1]), int(stale[2]))
        return None


@attrs.frozen
class Epoch(Record):
    epoch: int


@attrs.frozen
class CurrentEpoch(Call[Epoch], method="current_epoch"):
    """``current_epoch``: Node ``node_id``'s epoch in the store."""

    node_id: int


@attrs.frozen
class Won(Record):
    won: bool


@attrs.frozen
class ClaimEpoch(Call[Won], method="claim_epoch"):
    """``claim_epoch``: compare-and-set Node ``node_id``'s epoch from ``expected`` to ``new``."""

    node_id: int
    expected: int
    new: int


@attrs.frozen
class PutSession(Call[Done], method="put_session"):
    """``put_session``: write ``session`` (fenced by its epoch)."""

    session: Session = attrs.field(metadata=_SESSION)


@attrs.frozen
class Created(Record):
    created: bool


@attrs.frozen
class CreateSession(Call[Created], method="create_session"):
    """``create_session``: create ``session`` unless its call has one (fenced)."""

    session: Session = attrs.field(metadata=_SESSION)


@attrs.frozen
class Moved(Record):
    moved: bool


@attrs.frozen
class AdoptSession(Call[Moved], method="adopt_session"):
    """``adopt_session``: move ``session`` from Node ``from_node`` fenced at ``from_epoch``."""

    session: Session = attrs.field(metadata=_SESSION)
    from_node: int
    from_epoch: int


@attrs.frozen
class DeleteSession(Call[Done], method="delete_session"):
    """``delete_session``: forget ``call_id``'s session of Node ``node_id`` (fenced)."""

    node_id: int
    epoch: int
    call_id: str


@attrs.frozen
class SessionList(Record):
    sessions: tuple[Session, ...] = attrs.field(metadata=_SESSIONS)


@attrs.frozen
class Sessions(Call[SessionList], method="sessions"):
    """``sessions``: every session of Node ``node_id``."""

    node_id: int


@attrs.frozen
class Counted(Record):
    count: int


@attrs.frozen
class Count(Call[Counted], method="count"):
    """``count``: how many sessions Node ``node_id`` has."""

    node_id: int


@attrs.frozen(kw_only=True)
class StoreServerStatus(AppStatus):
    """The store server's ``status`` answer (field names are a contract)."""

    path: str
    clients: int
    requests: int
    #: The backend's ``StoreStatistics`` (empty: it keeps none).
    statistics: Mapping[str, Json]
