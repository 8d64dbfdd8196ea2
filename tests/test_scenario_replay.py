"""``schedule.json`` and ``orsim scenario replay RUN_DIR --sim``.

One real-process run (slow: a few seconds) is recorded and replayed in simulation; the
other tests record ``--sim`` runs, which take well under a second each.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
import yaml

from orsim.cli import main
from orsim.scenario import run_files
from orsim.scenario._replay import replay
from orsim.scenario._sim import run_files_sim
from orsim.testing import FakeCluster

ROOT = Path(__file__).resolve().parent.parent
TOPOLOGY = ROOT / "scenarios" / "topologies" / "two-nodes.yaml"
TRACE_LINE = re.compile(r"^trace sha256 [0-9a-f]{64}$")
LABELS = [
    "step 5: ORS_1_B primary within 10s",
    "step 8: calls_lost <= 0",
    "step 9: calls_duplicated <= 0",
    "step 10: split_brain never",
]
TINY = f"""\
name: tiny-crash
topology: {TOPOLOGY}
seed: 7
steps:
  - wait: {{ready: all, timeout: 30}}
  - load: {{rate: 20}}
  - wait: {{ledger: routed, at_least: 10, timeout: 30}}
  - kill: ORS_1
  - expect: {{app: ORS_1_B, mode: primary, within: 10}}
  - sleep: 1
  - load: stop
  - expect: {{calls_lost: 0}}
  - expect: {{calls_duplicated: 0}}
  - expect: {{split_brain: never}}
"""


def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orsim", "scenario", *args],
        capture_output=True, text=True, timeout=240, check=False, cwd=ROOT,
    )  # fmt: skip


def schedule(run_dir: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((run_dir / "schedule.json").read_text())
    return doc


def sim_recording(tmp_path: Path) -> tuple[Path, str]:
    """A ``--sim`` run of the tiny scenario: (its run directory, its trace line)."""
    lines: list[str] = []
    code = run_files_sim([tiny(tmp_path)], run_root=tmp_path / "runs", out=lines.append)
    assert code == 0, "\n".join(lines)
    trace = next(line for line in lines if TRACE_LINE.match(line))
    return tmp_path / "runs" / "tiny-crash", trace


def rewrite(run_dir: Path, change: Any) -> None:
    doc = schedule(run_dir)
    change(doc)
    (run_dir / "schedule.json").write_text(json.dumps(doc))


@pytest.mark.slow
def test_a_real_run_records_its_schedule_and_replays_alike(tmp_path: Path) -> None:
    """The real run writes seed, applied schedule and verdicts; the replay agrees (exit 0)."""
    report = tmp_path / "out.html"
    proc = cli("run", str(tiny(tmp_path)), "--run-dir", str(tmp_path / "runs"),
               "--report", str(report))  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    run_dir = tmp_path / "runs" / "tiny-crash"
    doc = schedule(run_dir)
    assert (doc["scenario"], doc["seed"], doc["sim"]) == ("tiny-crash", 7, False)
    assert doc["source"] == str(tmp_path / "tiny.yaml")
    assert doc["topology"] == str(TOPOLOGY)
    steps = [(s["number"], s["verb"], s["targets"], s["detail"]) for s in doc["steps"]]
    assert steps == [
        (2, "load", [], "20 calls/s"),
        (4, "kill", ["ORS_1"], "SIGKILL"),
        (7, "load", [], "stop"),
    ]
    offsets = [s["offset"] for s in doc["steps"]]
    assert 0 <= offsets[0] < offsets[1] < offsets[2]
    assert offsets[2] - offsets[1] >= 1.0  # the sleep between the kill and the load stop
    assert [(v["label"], v["passed"]) for v in doc["verdicts"]] == [(x, True) for x in LABELS]
    page = report.read_text()
    assert "<caption>applied schedule, seed 7</caption>" in page
    assert f"<td>kill</td><td>ORS_1</td><td>SIGKILL</td><td>+{offsets[1]:.3f}s</td>" in page

    proc = cli("replay", str(run_dir), "--sim")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    out = proc.stdout.splitlines()
    assert out[0] == f"== replay of {run_dir}: the real run of tiny-crash, seed 7"
    assert sum(1 for line in out if TRACE_LINE.match(line)) == 1
    assert [line for line in out if line.startswith("  same ")] == [
        f"  same     {label}" for label in LABELS
    ]
    assert out[-1] == "4 same, 0 differ"
    # Each step the simulation reached early was held back to its recorded offset.
    replayed = schedule(run_dir / "replay")
    assert replayed["sim"] is True
    for step, recorded in zip(replayed["steps"], doc["steps"], strict=True):
        assert step["recorded"] == recorded["offset"]
        assert step["offset"] >= recorded["offset"]


def test_a_sim_run_replays_to_the_same_trace(tmp_path: Path) -> None:
    """Replaying a ``--sim`` recording meets every offset exactly: the same run, same hash."""
    run_dir, trace = sim_recording(tmp_path)
    assert schedule(run_dir)["sim"] is True
    lines: list[str] = []
    assert replay(run_dir, out=lines.append) == 0, "\n".join(lines)
    assert trace in lines
    assert "-- schedule: 3 of 3 recorded steps at their offsets" in lines
    assert lines[-1] == "4 same, 0 differ"


def test_a_differing_verdict_fails_the_replay_and_is_named(tmp_path: Path) -> None:
    run_dir, _ = sim_recording(tmp_path)

    def flip(doc: dict[str, Any]) -> None:
        doc["verdicts"][2].update(passed=False, detail="2 duplicate route(s)")

    rewrite(run_dir, flip)
    lines: list[str] = []
    assert replay(run_dir, out=lines.append) == 1
    differs = [line for line in lines if line.startswith("  DIFFERS ")]
    assert len(differs) == 1
    assert differs[0].startswith(
        f"  DIFFERS  {LABELS[2]}: recorded: failed: 2 duplicate route(s), replay: passed"
    )
    assert lines[-1] == f"3 same, 1 differ (differs: {LABELS[2]})"


def test_steps_are_held_to_their_recorded_offsets_and_lateness_is_reported(
    tmp_path: Path,
) -> None:
    """A kill recorded later than the simulation gets there waits for its offset; the load
    stop after it then comes late, and the replay says by how much."""
    run_dir, _ = sim_recording(tmp_path)
    load_stop = schedule(run_dir)["steps"][2]["offset"]
    rewrite(run_dir, lambda doc: doc["steps"][1].update(offset=load_stop - 0.5))
    lines: list[str] = []
    assert replay(run_dir, seed=7, out=lines.append) == 0, "\n".join(lines)
    kill, stop = schedule(run_dir / "replay")["steps"][1:]
    assert kill["offset"] == pytest.approx(load_stop - 0.5, abs=1e-6)
    # The kill came 0.5 s before the recorded load stop, and a 1 s sleep follows it.
    assert stop["offset"] >= kill["offset"] + 1.0 > load_stop
    assert "-- schedule: 2 of 3 recorded steps at their offsets" in lines
    late = [line for line in lines if line.startswith("  late ")]
    assert late == [
        f"  late     step 7 (load) by {stop['offset'] - load_stop:.3f}s "
        f"(at {stop['offset']:.3f}s, recorded {load_stop:.3f}s)"
    ]


async def test_every_verb_is_recorded_with_its_targets(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Faults, repairs, load and options are recorded (``start: all`` as resolved); waits,
    sleeps and expectations are not."""
    steps = [
        {"load": {"rate": 30, "duration": 5}},
        {"partition": ["ORS_2", "ORS_2_B"]},
        {"heal": ["ORS_2", "ORS_2_B"]},
        {"delay": {"between": ["ORS_2", "SIP_Server"], "ms": 50}},
        {"switchover": "ORS_2"},
        {"set-option": {"object": "URS", "section": "urs", "key": "think-time-ms", "value": 5}},
        {"restart": "ORS_2_B"},
        {"kill": "ORS_1_B"},
        {"sleep": 1},
        {"start": "all"},
        {"wait": {"app": "ORS_1_B", "mode": "backup", "timeout": 5}},
        {"expect": {"calls_lost": 0}},
    ]  # fmt: skip
    path = tmp_path / "verbs.yaml"
    path.write_text(yaml.safe_dump({"name": "verbs", "topology": str(TOPOLOGY), "steps": steps}))

    async def factory(config: Path, run_dir: Path) -> FakeCluster:
        return await FakeCluster.up(config, run_dir)

    lines: list[str] = []
    code = await run_files([path], run_root=tmp_path / "runs", factory=factory,
                           out=lines.append, clock=trio.current_time)  # fmt: skip
    assert code == 0, "\n".join(lines)
    recorded = [(s["number"], s["verb"], s["targets"], s["detail"])
                for s in schedule(tmp_path / "runs" / "verbs")["steps"]]  # fmt: skip
    assert recorded == [
        (1, "load", [], "30 calls/s for 5s"),
        (2, "partition", ["ORS_2", "ORS_2_B"], ""),
        (3, "heal", ["ORS_2", "ORS_2_B"], ""),
        (4, "delay", ["ORS_2", "SIP_Server"], "50 ms"),
        (5, "switchover", ["ORS_2"], ""),
        (6, "set-option", ["URS"], "urs/think-time-ms = '5'"),
        (7, "restart", ["ORS_2_B"], "SIGTERM, then start"),
        (8, "kill", ["ORS_1_B"], "SIGKILL"),
        (10, "start", ["ORS_1_B"], ""),
    ]


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        (None, "no schedule.json (not the run directory of a scenario)"),
        ('{"seed": 7', "schedule.json: not readable JSON: "),
        ('{"seed": 7}', "schedule.json: field 'steps': missing or not a list"),
        ("wrong verb", "schedule.json: step 4 (stop) is not in the recorded scenario"),
    ],
)
def test_a_missing_or_broken_schedule_is_one_line_and_exit_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], broken: str | None, message: str
) -> None:
    run_dir, _ = sim_recording(tmp_path)
    if broken is None:
        (run_dir / "schedule.json").unlink()
    elif broken == "wrong verb":
        rewrite(run_dir, lambda doc: doc["steps"][1].update(verb="stop"))
    else:
        (run_dir / "schedule.json").write_text(broken)
    capsys.readouterr()
    assert main(["scenario", "replay", str(run_dir), "--sim"]) == 3
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"orsim scenario replay: configuration error: {run_dir}")
    assert message in err[0]


def test_replay_without_sim_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["scenario", "replay", str(tmp_path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "orsim scenario replay: usage error: "
        "only a simulated replay exists: orsim scenario replay RUN_DIR --sim"
    ]
