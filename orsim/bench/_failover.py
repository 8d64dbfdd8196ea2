"""Failover gap of a 2-Node cluster under steady load.

A fault hits ``ORS_1`` (SIGKILL, SIGSTOP, or a graceful switchover); the gap runs from
the fault to the first call its backup ``ORS_1_B`` routes, read from the T-Server
ledger. Both ends are wall-clock ``time.time()`` on this machine: the fault time in this
process, ``routed_at`` in the T-Server process. The time the backup reports itself
primary comes from its own ``mode_since`` (wall clock in the backup).

Every run starts its own cluster and stops it again (nothing carries over from one run
to the next). Whether a run was ok is :mod:`orsim.bench._outcome`'s call.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import trio

from orsim.bench._cluster import cluster_up, ledger_records, wait_drained
from orsim.bench._topology import backup_name, primary_name, write_topology
from orsim.cluster import ClusterHandle
from orsim.errors import OrsimError
from orsim.tserver import CallRecord

#: Calls per second during the measurement: one every 5 ms, split over the Nodes.
RATE = 200.0
#: Steady load before the fault.
WARMUP_S = 2.0
#: Load kept up after the backup routed its first call: twice the topology's 500 ms
#: call-watching-timeout, so a watch that started before the takeover has fired (and
#: any duplicate it routes is in the ledger) before the load stops.
AFTER_S = 1.0
#: How long the backup has, after the fault, to become primary and route a call
#: (beyond the addp-timeout); a run that misses it never took over.
TAKEOVER_LIMIT_S = 15.0
#: How long the primary may take to route the warm-up's calls (see ``warmup_calls``).
WARMUP_LIMIT_S = 15.0
#: How long before the fault a call may have been offered and still count among the
#: callers the failover kept waiting (``longest_wait_ms``): a call's usual path is ~2 ms.
WAIT_BEFORE_S = 0.1
FAULTS = ("KILL", "STOP", "switchover")
NODES = 2


def first_routed_by(records: Sequence[CallRecord], app: str, after: float) -> CallRecord | None:
    """The call ``app`` routed first at or after ``after``."""
    routed = [
        r for r in records if r.app == app and r.routed_at is not None and r.routed_at >= after
    ]
    return min(routed, key=lambda r: r.routed_at or 0.0, default=None)


def gap_ms(fault_at: float, event_at: float | None) -> float | None:
    return None if event_at is None else (event_at - fault_at) * 1000.0


def first_call_split(
    first: CallRecord | None, fault_at: float, primary_at: float | None
) -> dict[str, float | None]:
    """What the gap to the new primary's ``first`` routed call is made of, in ms from the
    fault.

    ``idle_ms``: how long the new primary, ready, waited for a call of its Node to be
    offered (calls are assigned by the cluster, not the load, so at 200 calls/s over two
    Nodes the next one of them comes 0 to 20 ms after the takeover, and by chance
    longer); ``takeover_ms``: the gap less that wait, i.e. the fault to the moment the
    call was routed counted as if a call had been waiting all along."""
    if first is None or first.routed_at is None or primary_at is None:
        return {"first_offered_ms": None, "idle_ms": None, "takeover_ms": None}
    idle = max(0.0, first.created_at - max(primary_at, fault_at))
    return {
        "first_offered_ms": (first.created_at - fault_at) * 1000.0,
        "idle_ms": idle * 1000.0,
        "takeover_ms": (first.routed_at - fault_at - idle) * 1000.0,
    }


def longest_wait_ms(records: Sequence[CallRecord], since: float, until: float) -> float | None:
    """The longest a caller offered from ``since`` to ``until`` waited to be routed, by
    whichever application routed the call (a call never routed is lost, counted as such)."""
    waits = [
        wait
        for r in records
        if (wait := r.latency_ms) is not None and since <= r.created_at <= until
    ]
    return max(waits, default=None)


async def _mode(handle: ClusterHandle, app: str) -> tuple[str | None, float | None]:
    try:
        answer = await handle.request(app, "status", timeout=1.0)
    except OrsimError:
        return None, None
    if not isinstance(answer, dict):
        return None, None
    since = answer.get("mode_since")
    return answer.get("mode"), since if isinstance(since, int | float) else None


async def _wait_primary(handle: ClusterHandle, app: str, fault_at: float) -> float | None:
    """Wall time at which ``app`` became primary, None if not by the end of the
    enclosing cancel scope.

    Its own ``mode_since`` is exact; the time this poll saw the change (50 ms
    resolution) bounds it, and stands in when ``mode_since`` predates the fault.
    """
    while True:
        mode, since = await _mode(handle, app)
        if mode == "primary":
            seen = time.time()
            return since if since is not None and fault_at <= since <= seen else seen
        await trio.sleep(0.05)


async def _routed_by(handle: ClusterHandle, app: str) -> int:
    return (await handle.ledger()).counts.by_app.get(app, 0)


async def _wait_routed_by(handle: ClusterHandle, app: str, calls: int = 1) -> None:
    """Until ``app`` has routed ``calls`` calls (bounded by the enclosing cancel scope)."""
    while await _routed_by(handle, app) < calls:
        await trio.sleep(0.05)


async def _warm_up(handle: ClusterHandle, app: str, least_s: float, calls: int) -> None:
    """Steady load before the fault: ``least_s`` seconds, and until ``app`` has routed
    ``calls`` calls (so the fault always falls on a primary that is routing).

    Raises:
        TimeoutError: ``app`` had not routed ``calls`` calls after ``WARMUP_LIMIT_S``.
    """
    await trio.sleep(least_s)
    if calls <= 0:
        return
    with trio.move_on_after(WARMUP_LIMIT_S):
        await _wait_routed_by(handle, app, calls)
        return
    routed = await _routed_by(handle, app)
    raise TimeoutError(
        f"{app} routed {routed} of {calls} warm-up calls in {least_s + WARMUP_LIMIT_S:g} s"
    )


async def measure_failover(
    fault: str,
    addp_timeout: float,
    rate: float = RATE,
    *,
    warmup_s: float = WARMUP_S,
    warmup_calls: int = 0,
    after_s: float = AFTER_S,
) -> dict[str, object]:
    """One run: ``{"fault", "addp_s", "gap_ms", "backup_primary_ms", "lost", ...}``.

    ``run_s`` is the wall time of the whole run, start-up and shutdown included;
    ``warmup_s`` the load before the fault, at least ``warmup_s`` seconds and until the
    primary has routed ``warmup_calls`` calls.
    """
    primary, backup = primary_name(1), backup_name(1)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="orsim-bench-") as tmp:
        config = write_topology(Path(tmp), NODES, addp_timeout)
        async with cluster_up(config) as handle:
            up_s = time.monotonic() - started
            await handle.load(rate)
            load_at = time.monotonic()
            await _warm_up(handle, primary, warmup_s, warmup_calls)
            warmed_s = time.monotonic() - load_at
            fault_at = time.time()
            if fault == "switchover":
                await handle.switchover(primary)
            else:
                await handle.kill(primary, signal=fault)
            became_primary = None
            # One deadline for both: the backup is primary and has routed a call.
            with trio.move_on_after(addp_timeout + TAKEOVER_LIMIT_S):
                became_primary = await _wait_primary(handle, backup, fault_at)
                await _wait_routed_by(handle, backup)
            await trio.sleep(after_s)
            await handle.stop_load()
            ledger = await wait_drained(handle)
            records = await ledger_records(handle)
            if fault == "STOP":
                # A frozen process would only make `down` wait out its grace period.
                await handle.kill(primary, signal="KILL")
    first = first_routed_by(records, backup, fault_at)
    first_routed = first.routed_at if first is not None else None
    return {
        "fault": fault,
        "addp_s": addp_timeout,
        "gap_ms": gap_ms(fault_at, first_routed),
        "backup_primary_ms": gap_ms(fault_at, became_primary),
        **first_call_split(first, fault_at, became_primary),
        # The callers offered while the Node had no primary to route them.
        "longest_wait_ms": longest_wait_ms(
            records, fault_at - WAIT_BEFORE_S, first_routed or fault_at + after_s
        ),
        "calls": ledger.counts.created,
        "lost": ledger.counts.lost,
        "duplicates": ledger.counts.duplicates,
        "stale": ledger.counts.stale,
        "up_s": up_s,
        "warmup_s": warmed_s,
        "run_s": time.monotonic() - started,
    }
