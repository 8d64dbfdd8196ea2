"""The bench's sim section at tiny sizes: it runs and counts calls (speed never asserted)."""

from __future__ import annotations

from pathlib import Path

from orsim.bench._report import medians, table_rows
from orsim.bench._sim import (
    TWO_NODES,
    library_ok,
    library_scenario,
    measure_cluster,
    measure_library,
)
from orsim.bench._suite import make_plan, parse_only
from orsim.scenario._model import Sleep
from orsim.scenario._session import load_all


def test_the_library_scenario_is_a_valid_scenario(tmp_path: Path) -> None:
    assert TWO_NODES.is_file()
    path = tmp_path / "library.yaml"
    path.write_text(library_scenario(60.0))
    (scenario,) = load_all([path])
    verbs = [step.verb for step in scenario.steps]
    assert verbs.count("kill") == 1 and verbs.count("start") == 1
    assert verbs.count("stop") == 1 and verbs.count("continue") == 1
    sleeps = sum(step.action.low for step in scenario.steps if isinstance(step.action, Sleep))
    assert 55 < sleeps < 60


def test_a_short_library_run_loses_nothing() -> None:
    row = measure_library(8.0)
    assert row["lost"] == 0 and row["duplicates"] == 0
    assert row["failed_expectations"] == []
    assert row["calls"] > 0 and row["routed"] == row["calls"]
    assert row["virtual_s"] > 7 and row["wall_s"] > 0 and row["peak_rss_mb"] > 0
    assert library_ok(row)


def test_a_tiny_cluster_settles_and_routes_every_call() -> None:
    row = measure_cluster(3, rate=20.0, load_s=2.0)
    assert row["apps"] == 6
    assert row["links"] == 2 * 3**2  # every pair once, a Node's two halves both ways
    assert 0 < row["settle_s"] <= row["mesh_s"]
    assert row["calls"] == 40 and row["routed"] == 40
    assert row["lost"] == 0 and row["duplicates"] == 0 and row["in_flight"] == 0


def test_a_lost_call_fails_the_library_row() -> None:
    good = {"kind": "library", "nodes": 2, "virtual_s": 60.0, "wall_s": 0.5, "speed": 120.0,
            "calls": 1800, "lost": 0, "duplicates": 0, "failed_expectations": []}  # fmt: skip
    bad = {**good, "speed": 130.0, "lost": 1, "failed_expectations": ["calls_lost <= 0"]}
    cluster = {"kind": "cluster", "nodes": 100, "apps": 200, "links": 20000, "settle_s": 20.0,
               "mesh_s": 25.0, "calls_per_s": 3.0, "routed": 200, "lost": 0, "duplicates": 0,
               "peak_rss_mb": 700.0, "offered_per_s": 50.0, "load_virtual_s": 4.0}  # fmt: skip
    rows = table_rows(medians({"sim": [good, good]}))
    assert [r.met for r in rows] == ["yes"]
    rows = table_rows(medians({"sim": [good, bad, {"kind": "library", "error": "boom"}, cluster]}))
    library = rows[0]
    assert library.met == "NO" and "lost 1" in library.worst and "2/3 runs failed" in library.worst
    assert [r.section for r in rows] == ["sim"] * 4
    assert "20000 links" in rows[1].measure and rows[2].met == "yes"
    assert "700 MB" in rows[3].median


def test_sim_is_a_section_and_quick_is_smaller() -> None:
    assert parse_only("sim") == ("sim",)
    full, quick = make_plan(), make_plan(quick=True)
    assert (full.sim_seconds, full.sim_nodes) == (60.0, 100)
    assert quick.sim_seconds < full.sim_seconds and quick.sim_nodes < full.sim_nodes
