"""Helpers shared by orsim's process-level tests."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio
import trio.testing
import yaml

if TYPE_CHECKING:
    from orsim.node._core import NodeCore
    from orsim.node._settings import NodeSettings

from orsim.cluster import AppRow
from orsim.tserver import LedgerReport

ROOT = Path(__file__).resolve().parent.parent
ORSIM = str(ROOT / ".venv" / "bin" / "orsim")
TOPOLOGIES = ROOT / "scenarios" / "topologies"


async def wait_until(predicate: Callable[[], bool], timeout: float, poll: float = 0.05) -> None:
    """Wait until ``predicate()`` holds, asking every ``poll`` seconds (virtual time in
    the simulation's tests); ``trio.TooSlowError`` after ``timeout`` seconds."""
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(poll)


def free_ports(count: int) -> list[int]:
    """Ports free right now on loopback (held open together so they differ)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for sock in socks:
            sock.close()


def topology_copy(source: Path, target: Path, edit: Any = None, store: str | None = None) -> Path:
    """Copy a topology with every application on a free port; ``edit(doc)`` may change it."""
    doc = yaml.safe_load(source.read_text())
    apps = doc["applications"]
    for app, port in zip(apps.values(), free_ports(len(apps)), strict=True):
        app["port"] = port
    if store is not None:
        for txn in doc.get("transactions", {}).values():
            txn.setdefault("annex", {}).setdefault("persistence", {})["store"] = store
    if edit is not None:
        edit(doc)
    target.write_text(yaml.safe_dump(doc, sort_keys=False))
    return target


async def settle(cluster: Any, created: int, timeout: float = 60) -> LedgerReport:
    """The ledger once at least ``created`` calls exist and none is still in flight."""
    with trio.fail_after(timeout):
        while True:
            ledger: LedgerReport = await cluster.ledger()
            if ledger.counts.created >= created and ledger.counts.in_flight == 0:
                return ledger
            await trio.sleep(0.2)


def node_id(row: AppRow) -> int:
    """An ORS application's Node id (every ORS row of a status has one)."""
    assert row["node_id"] is not None, row
    return row["node_id"]


def pid(row: AppRow) -> int:
    """A running application's pid."""
    assert row["pid"] is not None, row
    return row["pid"]


async def serve_memory_app(net: Any, nursery: trio.Nursery, handler: Any, app: str = "S") -> int:
    """Serve ``app`` on the memory network ``net`` with ``handler``; its port."""
    from orsim.wire import serve_app

    async def server(task_status: trio.TaskStatus[int]) -> None:
        await serve_app(
            net.for_app(app), "h", 0, app=app, app_type="Test", handler=handler,
            task_status=task_status,
        )  # fmt: skip

    port: int = await nursery.start(server)
    return port


async def serve_memory_links(
    nursery: trio.Nursery, net: Any, app: str, handler: Any = None, on_push: Any = None
) -> tuple[int, list[Any]]:
    """Serve ``app`` on the memory network ``net``; its port and the server side of every
    link made to it (``Connection``s, as they come)."""
    from orsim.wire import serve_app

    conns: list[Any] = []

    async def on_connect(conn: Any) -> None:
        conns.append(conn)

    async def server(task_status: trio.TaskStatus[int]) -> None:
        await serve_app(
            net.for_app(app), "h", 0, app=app, app_type="Test", handler=handler,
            on_push=on_push, on_connect=on_connect, task_status=task_status,
        )  # fmt: skip

    port: int = await nursery.start(server)
    return port, conns


async def memory_link(
    nursery: trio.Nursery, net: Any, addp: float = 0.0
) -> tuple[Any, list[Any], int]:
    """B's served connection to a server A on the memory network ``net`` (B's ADDP
    ``addp``, asking A for the same), once both sides serve: (B's ``Connection``, the
    server sides of A's links, A's port)."""
    from orsim.wire import open_connection

    port, served = await serve_memory_links(nursery, net, "A")
    conn = await open_connection(
        net.for_app("B"), "h", port, app="B", app_type="Test",
        addp_timeout=addp, addp_remote_timeout=addp,
    )  # fmt: skip
    nursery.start_soon(conn.serve)
    await trio.testing.wait_all_tasks_blocked()
    assert served
    return conn, served, port


def core_settings(partner: bool) -> NodeSettings:
    """Settings of ORS application "A", primary of Node 1, with its backup "B" or alone."""
    from orsim.node._settings import Endpoint, NodeSettings, PeerApp

    server = Endpoint("X", "127.0.0.1", 1)
    peers = (PeerApp("B", 1, "DC", "127.0.0.1", 2, is_backup=True),) if partner else ()
    return NodeSettings(
        app="A", node_id=1, configured_backup=False, partner="B" if partner else None,
        cluster="C", data_center="DC", address="127.0.0.1", port=1, peers=peers,
        nodes={1: "DC"}, tserver=server, urs=server, call_watching_timeout_ms=300,
    )  # fmt: skip


def primary_core(partner: bool) -> NodeCore:
    """A ``NodeCore`` of "A" that has become its Node's primary at epoch 1."""
    from orsim.node._core import MemberAnnounced, NodeCore, PeerLinkUp
    from orsim.node._membership import MemberInfo

    core = NodeCore(core_settings(partner))
    out = core.start(0.0)
    if partner:
        core.handle(PeerLinkUp("B"), 0.0)
        out = core.handle(MemberAnnounced(MemberInfo("B", 1, "DC", "backup", 0)), 0.0)
    assert out, "a configured primary claims at start"
    return claimed_primary(core)


def claimed_primary(core: NodeCore) -> NodeCore:
    """``core``, which asked to claim epoch 1, told that it won, fenced and recovered
    nothing: primary of its Node (asserted)."""
    from orsim.node._core import EpochClaimed, FenceAnswered, SessionsLoaded

    core.handle(EpochClaimed(1, True, 1), 0.0)
    core.handle(FenceAnswered(1), 0.0)
    core.handle(SessionsLoaded((), 1), 0.0)
    assert core.mode == "primary"
    return core


def stepped_down_core() -> NodeCore:
    """``primary_core(partner=True)`` that read from the store that its backup "B" took
    the Node over at epoch 2 (a freeze, a switchover) and stepped down to backup."""
    from orsim.node._core import EpochRead

    core = primary_core(partner=True)
    core.handle(EpochRead(2), 10.0)
    assert core.mode == "backup" and core.current_epoch == 2
    return core


def session_writes(commands: object) -> list[Any]:
    """The ``WriteSession`` commands among a core's ``commands``."""
    from orsim.node._core import WriteSession

    assert isinstance(commands, list)
    return [c for c in commands if isinstance(c, WriteSession)]
