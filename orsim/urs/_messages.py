"""The URS protocol: every request and answer as a typed message (see ``orsim.wire``).

The JSON of each is exactly what the URS and its clients exchanged as dicts before.
``select_target`` is on every call's path: its request and answer are read and written
by hand, without the generic per-field loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Self

import attrs

from orsim.wire import FLATTEN, AppStatus, Call, Done, FrameTotals, Json, Record, param


@attrs.frozen
class Register(Call[Done], method="register"):
    """``register``: an ORS application (``app``, default: the connection's peer) says
    who it is."""

    app: str | None = None
    node_id: int | None = None


@attrs.frozen
class Target(Record):
    """Where to route the call."""

    target: str

    def to_json(self) -> Json:
        return {"target": self.target}

    @classmethod
    def from_json(cls, data: Json) -> Self:
        if type(data) is dict:
            target = data.get("target")
            return cls(target if type(target) is str else param(data, "target", str))
        return super().from_json(data)


@attrs.frozen
class SelectTarget(Call[Target], method="select_target"):
    """``select_target``: where to route ``call_id``, waiting on routing point ``dn``."""

    call_id: str | None = None
    dn: str | None = None

    def to_json(self) -> Json:
        return {"call_id": self.call_id, "dn": self.dn}

    @classmethod
    def from_json(cls, data: Json) -> Self:
        if type(data) is dict:
            call_id, dn = data.get("call_id"), data.get("dn")
            if type(call_id) is str and type(dn) is str:  # as a node asks
                return cls(call_id, dn)
            return cls(param(data, "call_id", str, None), param(data, "dn", str, None))
        return super().from_json(data)


@attrs.frozen
class Released(Record):
    """Whether the target held a call (least-busy counts it one fewer)."""

    released: bool


@attrs.frozen
class ReleaseTarget(Call[Released], method="release_target"):
    """``release_target``: the call sent to ``target`` is over."""

    target: str


@attrs.frozen
class UrsClientInfo(Record):
    """An ORS application registered with the URS."""

    app: str
    node_id: int | None


@attrs.frozen(kw_only=True)
class UrsStatus(AppStatus):
    """The URS's ``status`` answer (field names are a contract: SPEC.md section 4)."""

    clients: tuple[UrsClientInfo, ...]
    requests: int
    strategy: str
    targets: tuple[str, ...]
    think_time_ms: float
    busy: Mapping[str, int]
    frames: FrameTotals = attrs.field(metadata=FLATTEN)
