"""Memory of the ORS processes: peak RSS (``VmHWM``) and PSS, from /proc.

PSS (proportional set size) splits each shared page among the processes mapping it, so
it stays fair when processes are forked from a preloaded fork server, where RSS would
count the shared interpreter in every process.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import attrs

from orsim.bench._stats import median

PROC = Path("/proc")


@attrs.frozen
class ProcMemory:
    """One reading of one process, in kB (None: not available)."""

    hwm_kb: int | None
    pss_kb: int | None


def _kb_field(text: str, name: str) -> int | None:
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key == name:
            return int(rest.split()[0])
    return None


def parse_memory(status_text: str, smaps_rollup_text: str) -> ProcMemory:
    """A reading from the text of ``/proc/PID/status`` and ``/proc/PID/smaps_rollup``."""
    return ProcMemory(_kb_field(status_text, "VmHWM"), _kb_field(smaps_rollup_text, "Pss"))


def read_memory(pid: int, proc: Path = PROC) -> ProcMemory | None:
    """The process's reading now; None if it is gone or unreadable."""
    try:
        status = (proc / str(pid) / "status").read_text()
    except OSError:
        return None
    try:
        rollup = (proc / str(pid) / "smaps_rollup").read_text()
    except OSError:
        rollup = ""
    return parse_memory(status, rollup)


@attrs.define
class MemoryProbe:
    """Samples a set of processes per phase, keeping each one's largest reading."""

    pids: Mapping[str, int]
    phases: dict[str, dict[str, ProcMemory]] = attrs.Factory(dict)

    def sample(self, phase: str) -> None:
        seen = self.phases.setdefault(phase, {})
        for app, pid in self.pids.items():
            reading = read_memory(pid)
            if reading is not None:
                seen[app] = _larger(seen.get(app), reading)

    def rows(self) -> list[dict[str, object]]:
        """One summary row per phase (see :func:`summarize`)."""
        return [summarize(phase, readings.values()) for phase, readings in self.phases.items()]


def _larger(a: ProcMemory | None, b: ProcMemory) -> ProcMemory:
    if a is None:
        return b
    return ProcMemory(_max(a.hwm_kb, b.hwm_kb), _max(a.pss_kb, b.pss_kb))


def _max(a: int | None, b: int | None) -> int | None:
    present = [v for v in (a, b) if v is not None]
    return max(present) if present else None


def summarize(phase: str, readings: Iterable[ProcMemory]) -> dict[str, object]:
    """Median and max over processes of peak RSS and PSS, in MB."""
    readings = list(readings)
    hwm = [r.hwm_kb / 1024 for r in readings if r.hwm_kb is not None]
    pss = [r.pss_kb / 1024 for r in readings if r.pss_kb is not None]
    return {
        "phase": phase,
        "processes": len(readings),
        "peak_rss_mb_median": median(hwm),
        "peak_rss_mb_max": max(hwm, default=None),
        "pss_mb_median": median(pss),
        "pss_mb_max": max(pss, default=None),
    }
