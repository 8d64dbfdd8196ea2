"""The ORS node's own protocol: pushes between peers and the requests it answers.

Peers push ``member`` (who an application is, its mode and epoch), ``session`` (a session
was created: stop watching that call) and ``handover`` (the partner hands the Node over);
the launcher asks ``status`` and ``switchover``. The JSON of each is exactly what the
nodes exchanged as dicts before. Pushes are read as leniently as before: a missing or
ill-typed required field costs the sender its connection, optional ones are defaulted.
"""

from __future__ import annotations

from typing import Self

import attrs

from orsim.errors import RequestRefused
from orsim.node._membership import MemberInfo
from orsim.wire import (
    FLATTEN,
    Call,
    FrameTotals,
    Json,
    Notice,
    Record,
    int_or_none,
    json_object,
    nonempty_text,
    whole_number,
)

#: The modes a member may announce.
MODES = frozenset({"primary", "backup", "starting", "suspending"})


@attrs.frozen
class Member(Notice, topic="member"):
    """``member``: what a peer application announces about itself."""

    info: MemberInfo

    def to_json(self) -> Json:
        info = self.info
        data: dict[str, Json] = {
            "app": info.app, "node_id": info.node_id, "data_center": info.data_center,
            "mode": info.mode, "epoch": info.epoch,
        }  # fmt: skip
        if info.headless:
            data["headless"] = True  # said only when true: the usual announcement is as before
        return data

    @classmethod
    def from_json(cls, data: Json) -> Self:
        data = json_object(data, "push data")
        mode = nonempty_text(data, "mode")
        if mode not in MODES:
            raise RequestRefused("bad_request", f"mode {mode!r}")
        return cls(
            MemberInfo(
                app=nonempty_text(data, "app"),
                node_id=whole_number(data, "node_id"),
                data_center=str(data.get("data_center", "")),
                mode=mode,
                epoch=whole_number(data, "epoch"),
                headless=data.get("headless") is True,
            )
        )


@attrs.frozen
class SessionCreated(Notice, topic="session"):
    """``session``: Node ``node_id`` created the session of ``call_id`` (``pending``: its
    write is still under way, so a watcher waits a little longer; ``claimed``: the store
    took the creation, so a Node that created the call without the store's word leaves
    it)."""

    call_id: str
    node_id: int | None = None
    pending: bool = False
    claimed: bool = False

    def to_json(self) -> Json:
        data: dict[str, Json] = {"call_id": self.call_id, "node_id": self.node_id}
        if self.pending:
            data["pending"] = True
        if self.claimed:
            data["claimed"] = True
        return data

    @classmethod
    def from_json(cls, data: Json) -> Self:
        data = json_object(data, "push data")
        node_id = data.get("node_id")
        return cls(
            nonempty_text(data, "call_id"),
            int_or_none(node_id),
            data.get("pending") is True,
            data.get("claimed") is True,
        )


@attrs.frozen
class Handover(Notice, topic="handover"):
    """``handover``: the partner hands the Node over at ``epoch``."""

    epoch: int | None = None

    def to_json(self) -> Json:
        return {"epoch": self.epoch}

    @classmethod
    def from_json(cls, data: Json) -> Self:
        return cls(int_or_none(json_object(data, "push data").get("epoch")))


@attrs.frozen
class SwitchedOver(Record):
    """The application that is primary once the roles have swapped."""

    new_primary: str | None


@attrs.frozen
class Switchover(Call[SwitchedOver], method="switchover"):
    """``switchover``: hand the Node gracefully to the other application."""


@attrs.frozen(kw_only=True)
class StoreHealth(Record):
    """What a status shows of the session store, per application (``FLATTEN`` it in)."""

    store: str
    store_failures: int
    store_outages: int
    sessions_unpersisted: int
    store_deletes_pending: int


@attrs.frozen(kw_only=True)
class NodeStatus(Record):
    """An ORS application's ``status`` answer (field names are a contract: SPEC.md
    section 4, ``status --json``)."""

    app: str
    type: str
    node_id: int
    cluster: str | None
    data_center: str
    mode: str
    role: str
    mode_since: float
    epoch: int
    pid: int
    sessions: int
    calls_routed: int
    sessions_recovered: int
    sessions_adopted: int
    watching: int
    call_watching_timeout_ms: float
    live_nodes: tuple[int, ...]
    tserver_connected: bool
    urs_connected: bool
    store_health: StoreHealth = attrs.field(metadata=FLATTEN)
    frames: FrameTotals = attrs.field(metadata=FLATTEN)
