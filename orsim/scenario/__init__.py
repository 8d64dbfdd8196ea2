"""Scenario-driven failover tests: the format, the runner, expectations and reports.

Public API:
    load_scenario(path) -> Scenario          # raises ConfigError naming file/step/field
    scenario_schema() -> dict                # the JSON Schema (orsim/scenario/schema.json)
    run_scenario(scenario, run_dir=..., factory=...) -> ScenarioResult
    run_files(paths, ...) -> exit code       # what `orsim scenario run` does
    junit_xml(results), report_html(results)
"""

from __future__ import annotations

from orsim.scenario._expect import evaluate as evaluate
from orsim.scenario._expect import expectation_label as expectation_label
from orsim.scenario._junit import junit_xml as junit_xml
from orsim.scenario._junit import write_junit as write_junit
from orsim.scenario._load import check_document as check_document
from orsim.scenario._load import load_scenario as load_scenario
from orsim.scenario._load import parse_scenario as parse_scenario
from orsim.scenario._load import scenario_schema as scenario_schema
from orsim.scenario._model import Scenario as Scenario
from orsim.scenario._model import Step as Step
from orsim.scenario._report import report_html as report_html
from orsim.scenario._report import write_report as write_report
from orsim.scenario._runner import ClusterFactory as ClusterFactory
from orsim.scenario._runner import ClusterLike as ClusterLike
from orsim.scenario._runner import ScenarioResult as ScenarioResult
from orsim.scenario._runner import run_scenario as run_scenario
from orsim.scenario._session import run_files as run_files
from orsim.scenario._timeline import AppState as AppState
from orsim.scenario._timeline import Event as Event
from orsim.scenario._timeline import Sample as Sample
from orsim.scenario._timeline import Timeline as Timeline
from orsim.scenario._timeline import Verdict as Verdict

__all__ = [
    "AppState",
    "ClusterFactory",
    "ClusterLike",
    "Event",
    "Sample",
    "Scenario",
    "ScenarioResult",
    "Step",
    "Timeline",
    "Verdict",
    "check_document",
    "evaluate",
    "expectation_label",
    "junit_xml",
    "load_scenario",
    "parse_scenario",
    "report_html",
    "run_files",
    "run_scenario",
    "scenario_schema",
    "write_junit",
    "write_report",
]
