"""Launch time: ``orsim cluster up --detach`` until all ready, against a floor.

The floor is the time to start as many bare ``python -c "import orsim"`` processes at
once as the launcher starts, so the ratio shows what the launcher adds to the
unavoidable interpreter start-ups.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import trio

from orsim.bench._progress import say
from orsim.bench._topology import launched_process_count, write_topology
from orsim.errors import ClusterError


def orsim_command() -> list[str]:
    """The ``orsim`` console script next to this interpreter (the venv's), else on PATH."""
    beside = Path(sys.executable).with_name("orsim")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("orsim")
    return [found] if found else [sys.executable, "-m", "orsim.cli"]


async def _orsim(*args: str, timeout: float) -> subprocess.CompletedProcess[bytes]:
    with trio.move_on_after(timeout):
        return await trio.run_process(
            [*orsim_command(), *args], capture_stdout=True, capture_stderr=True, check=False
        )
    raise ClusterError(f"orsim {' '.join(args[:2])} did not finish within {timeout:g}s")


def _tail(result: subprocess.CompletedProcess[bytes]) -> str:
    """The CLI's own last message (not a process log line it quotes), and the exit code."""
    text = (result.stderr or b"").decode(errors="replace").splitlines()
    said = [line.strip() for line in text if line.strip() and not line.lstrip().startswith("{")]
    return f"{said[-1] if said else 'no message'} (exit {result.returncode})"


@contextlib.asynccontextmanager
async def launched(config: Path, run_dir: Path, timeout: float = 180) -> AsyncIterator[float]:
    """Run ``orsim cluster up CONFIG --detach --ports auto``; yield its wall time in s.

    The cluster is taken down again (``orsim cluster down``) on exit.
    """
    start = time.perf_counter()
    try:
        result = await _orsim(
            "cluster", "up", str(config), "--run-dir", str(run_dir), "--detach",
            "--ports", "auto", timeout=timeout,
        )  # fmt: skip
        took = time.perf_counter() - start
        if result.returncode != 0:
            raise ClusterError(f"orsim cluster up failed: {_tail(result)}")
        yield took
    finally:
        with trio.CancelScope(shield=True):
            try:
                down = await _orsim("cluster", "down", "--run-dir", str(run_dir), timeout=120)
            except ClusterError as exc:
                say(f"  warning: {exc}")
            else:
                if down.returncode != 0:
                    say(f"  warning: orsim cluster down failed: {_tail(down)}")


def _start_bare(count: int) -> float:
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", "import orsim"]) for _ in range(count)]
    for proc in procs:
        proc.wait()
    return time.perf_counter() - start


async def floor_seconds(processes: int) -> float:
    """Seconds to start ``processes`` bare ``import orsim`` interpreters at once."""
    return await trio.to_thread.run_sync(_start_bare, processes)


async def measure_launch(nodes: int) -> dict[str, object]:
    """One launch run: ``{"nodes", "processes", "launch_s", "floor_s"}``."""
    processes = launched_process_count(nodes)
    with tempfile.TemporaryDirectory(prefix="orsim-bench-") as tmp:
        config = write_topology(Path(tmp), nodes)
        async with launched(config, Path(tmp) / "run") as took:
            pass
    floor = await floor_seconds(processes)
    return {"nodes": nodes, "processes": processes, "launch_s": took, "floor_s": floor}
