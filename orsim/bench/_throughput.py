"""Throughput: calls per second routed end to end, over a sweep of offered rates.

Each step offers a rate for a few seconds; routed/s is the rate at which the step's
calls were routed (their ``routed_at`` span, T-Server clock), latency the ledger
records' ``routed_at - created_at`` of the step's calls. Frames per call come from the
call-path processes' ``status`` ``frames_sent`` counters (None while they do not report
them). CPU per call is each cluster process's user+system time over the step (from
``/proc/PID/stat``; the step's own ledger and status requests included) divided by the
calls it routed: where the time goes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypedDict

import trio

from orsim.bench._cluster import frames_sent, ledger_records, wait_drained
from orsim.bench._memory import MemoryProbe
from orsim.bench._progress import say
from orsim.bench._stats import percentile, ratio
from orsim.cluster import ClusterHandle
from orsim.tserver import CallRecord

#: The latency target the sustained rate must meet.
P99_LIMIT_MS = 20.0
#: The offered rate whose step's CPU per call the summary keeps (the throughput target).
CPU_AT_OFFERED = 1500.0
#: A step keeps up when it routes at least this share of the offered rate...
KEEPS_UP = 0.95
#: ...and the sweep stops after a step routing less than this share (saturated).
SATURATED = 0.8


class StepRow(TypedDict):
    """One offered rate of a throughput sweep."""

    offered: float
    seconds: float
    calls: int
    routed: int
    calls_per_s: float
    lost: int
    p50_ms: float | None
    p99_ms: float | None
    frames_per_call: float | None
    #: Microseconds of CPU per routed call, by application (``cpu_seconds``).
    cpu_us_per_call: dict[str, float]


def cpu_seconds(pid: int, proc: Path = Path("/proc")) -> float | None:
    """User + system CPU seconds a process has used so far; None if it is gone."""
    try:
        text = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # after the command, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_per_call(
    before: Mapping[str, float | None], after: Mapping[str, float | None], calls: int
) -> dict[str, float]:
    """µs of CPU per call by application, biggest first (apps read both times only)."""
    if calls <= 0:
        return {}
    used = {
        app: (end - start) / calls * 1e6
        for app, start in before.items()
        if start is not None and (end := after.get(app)) is not None
    }
    return dict(sorted(used.items(), key=lambda item: -item[1]))


def step_latencies(records: Sequence[CallRecord]) -> tuple[list[float], int]:
    """Latencies (ms) of the routed records, and how many records were lost."""
    latencies = [
        (routed_at - r.created_at) * 1000.0
        for r in records
        if (routed_at := r.routed_at) is not None
    ]
    lost = sum(1 for r in records if r.state == "lost")
    return latencies, lost


def routed_rate(records: Sequence[CallRecord]) -> float | None:
    """Calls routed per second over the span in which ``records`` were routed.

    The bench's own requests around a step (ledger, status) are outside this span, so a
    cluster that keeps up with an offered rate measures as that rate, not a little below.
    """
    times = [t for r in records if (t := r.routed_at) is not None]
    if len(times) < 2:
        return None
    span = max(times) - min(times)
    return (len(times) - 1) / span if span > 0 else None


def summarize_sweep(
    steps: Sequence[StepRow],
    p99_limit_ms: float = P99_LIMIT_MS,
    cpu_at: float = CPU_AT_OFFERED,
    cpu_group: Callable[[dict[str, float]], dict[str, float]] | None = None,
) -> dict[str, object]:
    """Saturation (the step routing the most calls/s) and the highest offered rate that
    keeps up with p99 below ``p99_limit_ms`` and loses no call, from a sweep's step
    rows; and the CPU per call of the step offered ``cpu_at`` (``cpu_us_per_call``, and
    ``cpu_us.APP`` by application, or by what ``cpu_group`` sums them into), if the
    sweep has one."""
    saturation = max(steps, key=lambda s: s["calls_per_s"], default=None)
    sustained = [
        s
        for s in steps
        if s["p99_ms"] is not None
        and s["p99_ms"] < p99_limit_ms
        and s["lost"] == 0
        and s["calls_per_s"] >= KEEPS_UP * s["offered"]
    ]
    best = max(sustained, key=lambda s: s["offered"], default=None)
    return {
        "calls_per_s": saturation["calls_per_s"] if saturation else None,
        "p50_ms": saturation["p50_ms"] if saturation else None,
        "p99_ms": saturation["p99_ms"] if saturation else None,
        "frames_per_call": saturation["frames_per_call"] if saturation else None,
        # A sweep none of whose steps met the target sustained 0 calls/s (not "unknown"),
        # so a run that missed it pulls the median down.
        "sustained_offered": best["offered"] if best else (0 if steps else None),
        "sustained_calls_per_s": best["calls_per_s"] if best else (0.0 if steps else None),
        "sustained_p50_ms": best["p50_ms"] if best else None,
        "sustained_p99_ms": best["p99_ms"] if best else None,
        # Every call lost in any step (a lost call is a bug, not noise).
        "lost": sum(s["lost"] for s in steps) if steps else None,
        **_cpu_fields(steps, cpu_at, cpu_group),
    }


def _cpu_fields(
    steps: Sequence[StepRow],
    offered: float,
    group: Callable[[dict[str, float]], dict[str, float]] | None,
) -> dict[str, object]:
    step = next((s for s in steps if s["offered"] == offered), None)
    if step is None or not step.get("cpu_us_per_call"):
        return {}
    cpu = step["cpu_us_per_call"]
    shares = cpu if group is None else group(cpu)
    return {"cpu_us_per_call": sum(cpu.values()), **{f"cpu_us.{a}": v for a, v in shares.items()}}


def frames_ratio(
    frames_per_call: float | None, calls_per_s: float | None, raw_frames_per_s: float | None
) -> float | None:
    """Share of the raw loopback frame rate the cluster's call path uses at saturation."""
    if frames_per_call is None or calls_per_s is None:
        return None
    return ratio(frames_per_call * calls_per_s, raw_frames_per_s)


async def run_step(
    handle: ClusterHandle, rate: float, seconds: float, probe: MemoryProbe | None = None
) -> StepRow:
    """Offer ``rate`` calls/s for ``seconds``; one step row."""
    pids = handle.pids()
    before = await handle.ledger()
    frames_before = await frames_sent(handle)
    cpu_before = {app: cpu_seconds(pid) for app, pid in pids.items()}
    start = time.perf_counter()
    # A saturation sweep offers more than a cluster takes, on purpose.
    await handle.load(rate, duration=seconds, overload=True)
    await trio.sleep(seconds / 2)
    if probe is not None:
        probe.sample("load")
    await trio.sleep(seconds / 2)
    after = await handle.ledger()
    frames_after = await frames_sent(handle)
    elapsed = time.perf_counter() - start
    if probe is not None:
        probe.sample("load")
    await handle.stop_load()
    await wait_drained(handle)
    cpu_after = {app: cpu_seconds(pid) for app, pid in pids.items()}
    records = await ledger_records(handle, before.counts.created)
    latencies, lost = step_latencies(records)
    routed = after.counts.routed - before.counts.routed
    frames = None if frames_before is None or frames_after is None else frames_after - frames_before
    return {
        "offered": rate,
        "seconds": elapsed,
        "calls": len(records),
        "routed": routed,
        "calls_per_s": routed_rate(records) or routed / elapsed,
        "lost": lost,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "frames_per_call": ratio(frames, routed),
        "cpu_us_per_call": cpu_per_call(cpu_before, cpu_after, routed),
    }


async def sweep(
    handle: ClusterHandle,
    rates: Sequence[float],
    seconds: float,
    probe: MemoryProbe | None = None,
) -> list[StepRow]:
    """Step through ``rates`` (ascending) until the cluster saturates."""
    steps = []
    for rate in sorted(rates):
        step = await run_step(handle, rate, seconds, probe)
        cpu = step["cpu_us_per_call"]
        say(
            f"  offered {rate:g}/s: routed {step['calls_per_s']:.0f}/s, "
            f"p50 {_ms(step['p50_ms'])}, p99 {_ms(step['p99_ms'])}, lost {step['lost']}; "
            f"CPU {sum(cpu.values()):.0f} µs/call"
        )
        steps.append(step)
        if step["calls_per_s"] < SATURATED * rate:
            break
    return steps


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"
