"""Scenario-driven failover tests: the format, the runner, expectations and reports.

The format (YAML; JSON Schema in ``orsim/scenario/schema.json``)::

    name: primary-crash-under-load        # [A-Za-z0-9_.-]
    description: what question it answers
    topology: topologies/two-nodes.yaml   # a configuration database, relative to this file
    seed: 1                               # optional; --seed overrides; drives random sleeps
    sample-interval: 0.25                 # optional: status sampling period (s)
    settle-timeout: 12                    # optional: end-of-run wait for in-flight calls (s)
    steps:                                # each step is a mapping with exactly one action
      - start: all | APP | [APP, ...]     # start applications that are down (the cluster
                                          # itself is brought up before step 1)
      - wait: {app: A, mode: primary, timeout: 10}   # or {ready: all}, or
              # {ledger: created|routed|lost|duplicates|in_flight, at_least|at_most: N}
      - load: {rate: 30, duration: 10} | stop
      - kill: APP | {app: APP, signal: KILL|TERM|STOP|CONT}
      - stop: APP / continue: APP         # SIGSTOP / SIGCONT
      - restart: APP | {app: APP, signal: TERM}      # signal, wait until down, start
      - partition: [A, B] / heal: [A, B]
      - delay: {between: [A, B], ms: 300}            # ms 0 removes the delay
      - switchover: NODE                  # a Node's primary app name (or any app, or its id)
      - set-option: {object: O, section: S, key: K, value: V}
      - sleep: 2 | {between: [0.5, 1.5]}  # seeded random pause
      - expect: {app: A, mode: primary, within: 5}   # checked where it stands
      - expect: {calls_lost: 0} / {calls_duplicated: 0} / {split_brain: never}
      - expect: {failover_gap_ms: 3000 | {below: 3000, node: ORS_1, fault_step: 4}}
      - expect: {call_wait_ms: 1500}    # every call routed, none waited 1.5 s or more
      - expect: {sessions_recovered: 1 | {at_least: 1, node: ORS_1, fault_step: 4}}

``confserv`` names the Configuration Server process. Every expectation but ``mode`` is
judged over the whole run once the last step is done, load stopped and in-flight calls
settled; the exact rules are in ``orsim.scenario._expect``. A step that cannot be carried
out (a wait that times out, a verb the launcher refuses) fails the run and skips the rest.

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
from orsim.scenario._model import CONFSERV_APP as CONFSERV_APP
from orsim.scenario._model import Scenario as Scenario
from orsim.scenario._model import Step as Step
from orsim.scenario._report import report_html as report_html
from orsim.scenario._report import write_report as write_report
from orsim.scenario._runner import ClusterFactory as ClusterFactory
from orsim.scenario._runner import ClusterLike as ClusterLike
from orsim.scenario._runner import ScenarioResult as ScenarioResult
from orsim.scenario._runner import run_scenario as run_scenario
from orsim.scenario._session import load_all as load_all
from orsim.scenario._session import run_files as run_files
from orsim.scenario._sim import run_scenario_sim as run_scenario_sim
from orsim.scenario._sim import sim_logs as sim_logs
from orsim.scenario._timeline import AppState as AppState
from orsim.scenario._timeline import Event as Event
from orsim.scenario._timeline import Sample as Sample
from orsim.scenario._timeline import Timeline as Timeline
from orsim.scenario._timeline import Verdict as Verdict

__all__ = [
    "CONFSERV_APP",
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
    "load_all",
    "load_scenario",
    "parse_scenario",
    "report_html",
    "run_files",
    "run_scenario",
    "run_scenario_sim",
    "scenario_schema",
    "sim_logs",
    "write_junit",
    "write_report",
]
