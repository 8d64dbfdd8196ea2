"""The stored session record, the fencing error and their (pure) serialisation."""

from __future__ import annotations

import json

import attrs

from orsim.errors import OrsimError


def _copy_data(value: dict[str, str]) -> dict[str, str]:
    # A private copy, so a caller mutating its dict cannot change a "frozen" Session.
    return {str(k): str(v) for k, v in value.items()}


@attrs.frozen(kw_only=True)
class Session:
    """One ORS session as kept in the shared store, under its Node and the writer's epoch.

    ``created_at`` is wall-clock seconds (``time.time()``): it crosses processes.
    """

    call_id: str
    node_id: int
    epoch: int
    dn: str
    state: str
    target: str = ""
    created_at: float = 0.0
    data: dict[str, str] = attrs.field(factory=dict, converter=_copy_data, hash=False)


class StaleEpoch(OrsimError):
    """The store refused a write carrying an epoch older than the Node's current one.

    The writer is no longer the Node's primary (another application claimed a higher
    epoch) and must stop acting for the Node.
    """

    def __init__(self, node_id: int, epoch: int, current: int) -> None:
        super().__init__(f"node {node_id}: epoch {epoch} is stale (store holds {current})")
        self.node_id = node_id
        self.epoch = epoch
        self.current = current


class StoreError(OrsimError):
    """The store backend failed (unreachable Redis, a database locked past its timeout)."""


class StoreUnavailable(StoreError):
    """The store did not answer within its deadline, or its link is down.

    Nothing is known of the operation's outcome: a write may or may not have happened.
    A node treats the store as degraded and carries on without it (SPEC section 3).
    """


def session_to_json(session: Session) -> str:
    """Encode a session as one compact JSON text (the Redis hash value)."""
    return json.dumps(session_to_wire(session), separators=(",", ":"))


def session_to_wire(session: Session) -> dict[str, object]:
    """A session as a JSON-ready dict (the store server's wire form)."""
    return attrs.asdict(session)


def session_from_json(text: str | bytes) -> Session:
    """Decode what :func:`session_to_json` wrote."""
    return session_from_wire(json.loads(text))


def session_from_wire(raw: object) -> Session:
    """Decode what :func:`session_to_wire` gave.

    Raises:
        KeyError, TypeError, ValueError: ``raw`` is not a session.
    """
    if not isinstance(raw, dict):
        raise TypeError(f"a session must be an object, not {type(raw).__name__}")
    if not isinstance(raw["data"], dict):
        raise TypeError("session data must be an object")
    return Session(
        call_id=str(raw["call_id"]),
        node_id=int(raw["node_id"]),
        epoch=int(raw["epoch"]),
        dn=str(raw["dn"]),
        state=str(raw["state"]),
        target=str(raw["target"]),
        created_at=float(raw["created_at"]),
        data=dict(raw["data"]),
    )


def check_claim(expected: int, new: int) -> None:
    """Refuse a claim that would not raise the epoch (a caller bug, not a lost race)."""
    if new <= expected:
        raise ValueError(f"claim_epoch: new epoch {new} must be greater than {expected}")
