"""The scenario runner, JUnit XML and the HTML report, against a fake cluster (no processes).

Everything runs in virtual time (``autojump_clock``); the fake stamps its ledger with the
same clock the runner uses, so failover gaps come out exact.
"""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
import yaml

from orsim.scenario import junit_xml, load_scenario, report_html, run_files, run_scenario
from orsim.testing import FakeCluster

ROOT = Path(__file__).resolve().parent.parent
TOPOLOGY = ROOT / "scenarios" / "topologies" / "two-nodes.yaml"
CHROMIUM = "/usr/bin/chromium"

HEADLINE = [
    {"wait": {"ready": "all", "timeout": 5}},
    {"load": {"rate": 30}},
    {"wait": {"ledger": "routed", "at_least": 30, "timeout": 10}},
    {"kill": "ORS_1"},
    {"expect": {"app": "ORS_1_B", "mode": "primary", "within": 3}},
    {"sleep": 2},
    {"load": "stop"},
    {"expect": {"calls_lost": 0}},
    {"expect": {"calls_duplicated": 0}},
    {"expect": {"failover_gap_ms": 1500}},
    {"expect": {"split_brain": "never"}},
]


def write_scenario(tmp_path: Path, name: str, steps: Sequence[object]) -> Path:
    """A scenario file of ``steps`` (YAML data, as a user writes them) on the two-Node topology."""
    path = tmp_path / f"{name}.yaml"
    doc = {"name": name, "topology": str(TOPOLOGY), "seed": 5, "steps": steps}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


class Recorder:
    """A factory of fake clusters that keeps them (for assertions) and the output lines."""

    def __init__(self, **knobs: Any) -> None:
        self.knobs = knobs
        self.clusters: list[FakeCluster] = []
        self.lines: list[str] = []

    async def __call__(self, config: Path, run_dir: Path) -> FakeCluster:
        cluster = await FakeCluster.up(config, run_dir, **self.knobs)
        self.clusters.append(cluster)
        return cluster

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def _printed_at(rec: Recorder, text: str) -> float:
    """The time (s) of the one timeline line holding ``text``: ``[  5.11s] ...``."""
    (line,) = [line for line in rec.lines if text in line]
    return float(line.split("]")[0].strip("[ s"))


async def run(tmp_path: Path, paths: list[Path], rec: Recorder, **options: Any) -> int:
    return await run_files(
        paths,
        run_root=tmp_path / "runs",
        factory=rec,
        out=rec.lines.append,
        clock=trio.current_time,
        **options,
    )


async def test_a_passing_scenario_prints_a_timeline_and_exits_0(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The headline against a healthy fake: every verdict passes, the cluster goes down."""
    rec = Recorder(failover_delay=0.8)
    code = await run(tmp_path, [write_scenario(tmp_path, "headline", HEADLINE)], rec)
    assert code == 0, rec.text
    text = rec.text
    assert "step 4   FAULT kill ORS_1 (SIGKILL)" in text
    assert "role ORS_1_B: backup -> primary (epoch 2)" in text
    # 0.8 s after the kill by the heir's own clock, not when a poll or a sample saw it.
    assert "PASS  step 5: ORS_1_B primary within 3s: ORS_1_B was primary after 800 ms" in text
    assert _printed_at(rec, "role ORS_1_B: backup") - _printed_at(rec, "FAULT kill") == (
        pytest.approx(0.8, abs=0.011)
    )
    assert "PASS  step 10: failover_gap_ms < 1500: 8" in text
    assert rec.lines[-1] == "5 passed, 0 failed"
    (cluster,) = rec.clusters
    assert cluster.is_down
    assert ("kill", "ORS_1", "KILL") in cluster.calls
    assert (tmp_path / "runs" / "headline").is_dir()


async def test_a_failing_scenario_fails_with_a_clear_verdict(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A takeover slower than the scenario allows fails, naming what was seen; exit 1."""
    rec = Recorder(failover_delay=6.0)
    code = await run(tmp_path, [write_scenario(tmp_path, "slow", HEADLINE)], rec)
    assert code == 1
    text = rec.text
    assert (
        "FAIL  step 5: ORS_1_B primary within 3s: ORS_1_B was still backup after 3s"
        " (expected primary)" in text
    )
    assert "FAIL  step 10: failover_gap_ms < 1500: 60" in text
    assert "-- slow: 3 passed, 2 failed" in text
    assert rec.lines[-1] == "3 passed, 2 failed (failed: slow)"
    assert rec.clusters[0].is_down


async def test_split_brain_is_caught(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """An old primary that wakes up still acting as primary fails split_brain: never."""
    steps = [
        {"load": {"rate": 20}},
        {"stop": "ORS_1"},
        {"expect": {"app": "ORS_1_B", "mode": "primary", "within": 3}},
        {"continue": "ORS_1"},
        {"sleep": 2},
        {"expect": {"split_brain": "never"}},
    ]
    rec = Recorder(split_brain=True)
    assert await run(tmp_path, [write_scenario(tmp_path, "brain", steps)], rec) == 1
    assert "FAIL  step 6: split_brain never: two primaries of Node ORS_1" in rec.text
    assert "REPAIR continue ORS_1 (SIGCONT)" in rec.text


async def test_duplicates_are_caught(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Duplicate routes in the ledger fail calls_duplicated."""
    steps = [
        {"load": {"rate": 20, "duration": 2}},
        {"sleep": 3},
        {"expect": {"calls_duplicated": 0}},
    ]
    rec = Recorder(duplicate_every=10)
    assert await run(tmp_path, [write_scenario(tmp_path, "dups", steps)], rec) == 1
    assert "FAIL  step 3: calls_duplicated <= 0: 4 duplicate route(s)" in rec.text


async def test_a_step_that_cannot_be_done_skips_the_rest(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A wait that times out fails the run, later mode checks are 'not reached', down runs."""
    steps = [
        {"wait": {"app": "ORS_1", "mode": "backup", "timeout": 2}},
        {"kill": "ORS_1"},
        {"expect": {"app": "ORS_1_B", "mode": "primary", "within": 3}},
        {"expect": {"calls_lost": 0}},
    ]
    rec = Recorder()
    assert await run(tmp_path, [write_scenario(tmp_path, "stuck", steps)], rec) == 1
    text = rec.text
    assert (
        "FAIL  step 1 (wait): could not be carried out: timed out after 2s waiting until ORS_1"
        in text
    )
    assert "FAIL  step 3: ORS_1_B primary within 3s: not reached" in text
    assert "PASS  step 4: calls_lost <= 0" in text
    cluster = rec.clusters[0]
    assert cluster.is_down
    assert not any(call[0] == "kill" for call in cluster.calls)


async def test_a_cluster_that_does_not_come_up_fails_the_scenario(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """An error from the launcher is a failed verdict, not a crash, and the next runs."""
    from orsim.errors import ClusterError

    async def broken(config: Path, run_dir: Path) -> FakeCluster:
        raise ClusterError("port 7001 is taken")

    lines: list[str] = []
    path = write_scenario(tmp_path, "nope", HEADLINE)
    code = await run_files([path], run_root=tmp_path / "r", factory=broken, out=lines.append)
    assert code == 1
    assert "  FAIL  cluster up: the cluster did not come up: port 7001 is taken" in lines


async def test_restart_start_and_partition_reach_the_cluster(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Every verb maps onto the cluster API in order, with the seeded random sleep."""
    steps = [
        {"restart": {"app": "confserv", "signal": "KILL"}},
        {"partition": ["ORS_2", "ORS_2_B"]},
        {"heal": ["ORS_2", "ORS_2_B"]},
        {"delay": {"between": ["ORS_2", "SIP_Server"], "ms": 50}},
        {"switchover": "ORS_2"},
        {"set-option": {"object": "ORS_Cluster_1", "section": "orchestration",
                        "key": "call-watching-timeout", "value": 900}},
        {"kill": "ORS_1_B"},
        {"sleep": {"between": [0.5, 1.0]}},
        {"start": "all"},
        {"expect": {"app": "ORS_2_B", "mode": "primary", "within": 1}},
        {"expect": {"app": "ORS_1_B", "mode": "backup", "within": 2}},
    ]  # fmt: skip
    rec = Recorder()
    assert await run(tmp_path, [write_scenario(tmp_path, "verbs", steps)], rec) == 0, rec.text
    calls = [c for c in rec.clusters[0].calls if c[0] not in ("up", "stop_load", "down")]
    assert calls == [
        ("kill", "confserv", "KILL"),
        ("start", "confserv"),
        ("partition", "ORS_2", "ORS_2_B"),
        ("heal", "ORS_2", "ORS_2_B"),
        ("delay", "ORS_2", "SIP_Server", 50.0),
        ("switchover", "ORS_2"),
        ("set_option", "ORS_Cluster_1", "orchestration", "call-watching-timeout", "900"),
        ("kill", "ORS_1_B", "KILL"),
        ("start", "ORS_1_B"),
    ]
    assert "seed 5" in rec.lines[0]


async def run_for_reports(tmp_path: Path) -> list[Any]:
    scenario_ok = load_scenario(write_scenario(tmp_path, "ok", HEADLINE))
    scenario_bad = load_scenario(write_scenario(tmp_path, "bad", HEADLINE))
    results = []
    for scenario, delay in ((scenario_ok, 0.5), (scenario_bad, 6.0)):
        results.append(
            await run_scenario(
                scenario,
                run_dir=tmp_path / scenario.name,
                factory=Recorder(failover_delay=delay),
                out=lambda line: None,
                clock=trio.current_time,
            )
        )
    return results


async def test_junit_has_one_testcase_per_expectation(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """JUnit XML parses, has a testcase per expectation, failures, and the timeline."""
    results = await run_for_reports(tmp_path)
    path = tmp_path / "out.xml"
    junit_xml(results).write(path, encoding="utf-8", xml_declaration=True)
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    assert root.get("tests") == "10" and root.get("failures") == "2"
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["ok", "bad"]
    for suite in suites:
        cases = suite.findall("testcase")
        assert len(cases) == 5
        assert all("FAULT kill ORS_1" in (c.findtext("system-out") or "") for c in cases)
    failed = [c.get("name") for c in suites[1].findall("testcase") if c.find("failure") is not None]
    assert failed == ["step 5: ORS_1_B primary within 3s", "step 10: failover_gap_ms < 1500"]


async def test_the_report_draws_lanes_rates_faults_and_verdicts(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The HTML page holds one lane per app, a rate line per Node and the fault markers."""
    page = report_html(await run_for_reports(tmp_path))
    assert page.count('<svg class="timeline"') == 2
    for app in ("ORS_1", "ORS_1_B", "ORS_2", "ORS_2_B", "SIP_Server", "URS", "confserv"):
        assert page.count(f'class="lane" data-app="{app}"') == 2
    assert page.count('class="rate" data-node="ORS_1"') == 2
    assert page.count('class="marker fault"') == 2
    assert "mode-primary" in page and "mode-down" in page
    assert "<title>orsim scenarios: 8 passed, 2 failed</title>" in page
    assert "http" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_the_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    """Chromium parses the page and its DOM has the SVG timeline lanes."""
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.skip("chromium is not installed (CI installs it)")
    binary = CHROMIUM if Path(CHROMIUM).exists() else str(shutil.which("chromium"))
    results = trio.run(
        run_for_reports, tmp_path, clock=trio.testing.MockClock(autojump_threshold=0)
    )
    page = tmp_path / "report.html"
    page.write_text(report_html(results), encoding="utf-8")
    profile = tmp_path / "chromium-profile"
    dom = subprocess.run(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=90, check=False,
    ).stdout  # fmt: skip
    assert "<svg" in dom
    assert dom.count('class="lane"') == 14  # 7 applications x 2 scenarios
    assert 'data-app="ORS_1_B"' in dom
    assert "<polyline" in dom
