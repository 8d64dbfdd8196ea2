"""SIGTERM/SIGINT to `orsim scenario run` bring the cluster down before it exits
(issue 20, finding 8)."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest
import trio
from helpers import ORSIM, TOPOLOGIES

from orsim.cluster._procs import pid_alive

pytestmark = pytest.mark.slow

SCENARIO = """\
name: held
topology: {topology}
steps:
  - wait: {{ready: all, timeout: 30}}
  - sleep: 600
"""


async def _read_until(stream: trio.abc.ReceiveStream, needle: bytes) -> bytes:
    seen = b""
    while needle not in seen:
        chunk = await stream.receive_some()
        if not chunk:
            raise AssertionError(f"output ended before {needle!r}: {seen.decode()}")
        seen += chunk
    return seen


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_signal_brings_the_cluster_down(signum: signal.Signals, tmp_path: Path) -> None:
    scenario = tmp_path / "held.yaml"
    scenario.write_text(SCENARIO.format(topology=TOPOLOGIES / "two-nodes.yaml"))
    runs = tmp_path / "runs"
    proc = await trio.lowlevel.open_process(
        [ORSIM, "scenario", "run", str(scenario), "--run-dir", str(runs)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        with trio.fail_after(60):
            await _read_until(proc.stdout, b"sleep 600")  # up, ready and sleeping
        pids = json.loads((runs / "held" / "manifest.json").read_text())["pids"]
        assert len(pids) >= 6 and all(map(pid_alive, pids.values())), pids
        proc.send_signal(signum)
        with trio.fail_after(30):
            code = await proc.wait()
            err = await proc.stderr.receive_some()
        assert code == 130, err
        assert b"the cluster was stopped" in err
        assert [app for app, pid in pids.items() if pid_alive(pid)] == []
    finally:
        with trio.move_on_after(30):
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                await proc.wait()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        # Whatever happened above, leave no cluster behind.
        await trio.run_process(
            [ORSIM, "cluster", "down", "--run-dir", str(runs / "held")],
            check=False, capture_stdout=True, capture_stderr=True,
        )  # fmt: skip
