"""What the benchmarks ask of a running cluster, through the launcher's public API."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import trio

from orsim.bench._topology import TSERVER_APP
from orsim.cluster import ClusterHandle
from orsim.config import TSERVER_TYPES
from orsim.errors import OrsimError
from orsim.tserver import CallRecord, Ledger, LedgerReport

#: The apps whose ``status`` counts frames (the call path): nodes, T-Server, URS.
CALL_PATH_TYPES = ("OrchestrationServer", "RoutingServer", *TSERVER_TYPES)


@contextlib.asynccontextmanager
async def cluster_up(config: Path, proxy: bool = True) -> AsyncIterator[ClusterHandle]:
    """A cluster of ``config`` on free ports in a temporary run dir, stopped on exit;
    without ``proxy`` its links are direct (``up --no-proxy``)."""
    with tempfile.TemporaryDirectory(prefix="orsim-bench-") as tmp:
        handle = await ClusterHandle.up(config, Path(tmp) / "run", ports="auto", proxy=proxy)
        try:
            yield handle
        finally:
            with trio.CancelScope(shield=True):
                await handle.down()


def ors_apps(handle: ClusterHandle) -> list[str]:
    return [e.app for e in handle.manifest.apps if e.type == "OrchestrationServer"]


def call_path_apps(handle: ClusterHandle) -> list[str]:
    return [e.app for e in handle.manifest.apps if e.type in CALL_PATH_TYPES]


async def ledger_records(handle: ClusterHandle, offset: int = 0) -> list[CallRecord]:
    """Every ledger record from ``offset`` on (the T-Server hands them out in pages)."""
    records: list[CallRecord] = []
    while True:
        page = await handle.call(TSERVER_APP, Ledger(True, offset + len(records)))
        chunk = page.records or ()
        records.extend(chunk)
        if not chunk or offset + len(records) >= (page.records_total or 0):
            return records


async def wait_drained(handle: ClusterHandle, timeout: float = 20.0) -> LedgerReport:
    """The ledger once no call is in flight (every call routed or lost)."""
    ledger = await handle.ledger()
    with trio.move_on_after(timeout):
        while ledger.counts.in_flight:
            await trio.sleep(0.1)
            ledger = await handle.ledger()
    return ledger


async def frames_sent(handle: ClusterHandle) -> int | None:
    """Frames sent so far by every call-path process; None if one does not count them."""
    total = 0
    for app in call_path_apps(handle):
        try:
            answer = await handle.request(app, "status", timeout=5.0)
        except OrsimError:
            return None
        sent = answer.get("frames_sent") if isinstance(answer, dict) else None
        if not isinstance(sent, int):
            return None
        total += sent
    return total
