"""Failover gap of a 2-Node cluster under steady load.

A fault hits ``ORS_1`` (SIGKILL, SIGSTOP, or a graceful switchover); the gap runs from
the fault to the first call its backup ``ORS_1_B`` routes, read from the T-Server
ledger. Both ends are wall-clock ``time.time()`` on this machine: the fault time in this
process, ``routed_at`` in the T-Server process. The time the backup reports itself
primary comes from its own ``mode_since`` (wall clock in the backup).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import trio

from orsim.bench._cluster import cluster_up, ledger_records, wait_drained
from orsim.bench._topology import backup_name, primary_name, write_topology
from orsim.cluster import ClusterHandle
from orsim.errors import OrsimError

#: Calls per second during the measurement: one every 5 ms, split over the Nodes.
RATE = 200.0
#: Steady load before the fault.
WARMUP_S = 2.0
#: Load kept up after the backup routed its first call.
AFTER_S = 1.0
FAULTS = ("KILL", "STOP", "switchover")
NODES = 2


def first_routed_by(records: Sequence[Mapping[str, Any]], app: str, after: float) -> float | None:
    """The earliest ``routed_at`` of a call ``app`` routed at or after ``after``."""
    times = [
        r["routed_at"]
        for r in records
        if r.get("app") == app and r.get("routed_at") is not None and r["routed_at"] >= after
    ]
    return min(times, default=None)


def gap_ms(fault_at: float, event_at: float | None) -> float | None:
    return None if event_at is None else (event_at - fault_at) * 1000.0


async def _mode(handle: ClusterHandle, app: str) -> tuple[str | None, float | None]:
    try:
        answer = await handle.request(app, "status", timeout=1.0)
    except OrsimError:
        return None, None
    if not isinstance(answer, dict):
        return None, None
    since = answer.get("mode_since")
    return answer.get("mode"), since if isinstance(since, int | float) else None


async def _wait_primary(
    handle: ClusterHandle, app: str, fault_at: float, timeout: float
) -> float | None:
    """Wall time at which ``app`` became primary, None on timeout.

    Its own ``mode_since`` is exact; the time this poll saw the change (50 ms
    resolution) bounds it, and stands in when ``mode_since`` predates the fault.
    """
    with trio.move_on_after(timeout):
        while True:
            mode, since = await _mode(handle, app)
            if mode == "primary":
                seen = time.time()
                return since if since is not None and fault_at <= since <= seen else seen
            await trio.sleep(0.05)
    return None


async def _wait_routed_by(handle: ClusterHandle, app: str, timeout: float) -> None:
    with trio.move_on_after(timeout):
        while not (await handle.ledger()).get("by_app", {}).get(app):
            await trio.sleep(0.05)


async def measure_failover(fault: str, addp_timeout: float, rate: float = RATE) -> dict[str, Any]:
    """One run: ``{"fault", "addp_s", "gap_ms", "backup_primary_ms", "lost", ...}``."""
    primary, backup = primary_name(1), backup_name(1)
    with tempfile.TemporaryDirectory(prefix="orsim-bench-") as tmp:
        config = write_topology(Path(tmp), NODES, addp_timeout)
        async with cluster_up(config) as handle:
            await handle.load(rate)
            await trio.sleep(WARMUP_S)  # steady load before the fault
            fault_at = time.time()
            if fault == "switchover":
                await handle.switchover(primary)
            else:
                await handle.kill(primary, signal=fault)
            limit = addp_timeout + 15.0
            became_primary = await _wait_primary(handle, backup, fault_at, limit)
            await _wait_routed_by(handle, backup, limit)
            await trio.sleep(AFTER_S)
            await handle.stop_load()
            ledger = await wait_drained(handle)
            records = await ledger_records(handle)
            if fault == "STOP":
                # A frozen process would only make `down` wait out its grace period.
                await handle.kill(primary, signal="KILL")
    return {
        "fault": fault,
        "addp_s": addp_timeout,
        "gap_ms": gap_ms(fault_at, first_routed_by(records, backup, fault_at)),
        "backup_primary_ms": gap_ms(fault_at, became_primary),
        "calls": ledger.get("created"),
        "lost": ledger.get("lost"),
        "duplicates": ledger.get("duplicates"),
        "stale": ledger.get("stale"),
    }
