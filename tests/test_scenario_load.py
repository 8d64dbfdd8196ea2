"""Scenario files: the schema, the semantic checks and their error messages."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orsim.cli import main
from orsim.config import ConfigDatabase, load_database
from orsim.errors import ConfigError
from orsim.scenario import check_document, load_scenario, parse_scenario, scenario_schema
from orsim.scenario._model import (
    FAULT_VERBS,
    CallWait,
    FailoverGap,
    Isolate,
    Load,
    ModeWithin,
    Partition,
    Restart,
    SendSignal,
    SetOption,
    Sleep,
    Start,
    Wait,
    WaitCount,
)

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = ROOT / "scenarios"
TOPOLOGY = LIBRARY / "topologies" / "two-nodes.yaml"
SOURCE = str(LIBRARY / "probe.yaml")

VALID: dict[str, Any] = {
    "name": "probe",
    "description": "a valid scenario the tests break in many ways",
    "topology": "topologies/two-nodes.yaml",
    "seed": 3,
    "steps": [
        {"start": "all"},
        {"wait": {"ready": "all", "timeout": 5}},
        {"load": {"rate": 20, "duration": 5}},
        {"kill": "ORS_1"},
        {"expect": {"app": "ORS_1_B", "mode": "primary", "within": 3}},
        {"restart": {"app": "confserv", "signal": "KILL"}},
        {"partition": ["ORS_2", "ORS_2_B"]},
        {"heal": ["ORS_2", "ORS_2_B"]},
        {"delay": {"between": ["ORS_2", "SIP_Server"], "ms": 100}},
        {"stop": "ORS_2"},
        {"continue": "ORS_2"},
        {"switchover": "ORS_2"},
        {"set-option": {"object": "ORS_Cluster_1", "section": "orchestration",
                        "key": "call-watching-timeout", "value": 700}},
        {"sleep": {"between": [0.1, 0.2]}},
        {"wait": {"ledger": "in_flight", "at_most": 0}},
        {"load": "stop"},
        {"expect": {"calls_lost": 0}},
        {"expect": {"calls_duplicated": 0}},
        {"expect": {"failover_gap_ms": {"below": 3000, "node": "ORS_1", "fault_step": 4}}},
        {"expect": {"sessions_recovered": 1}},
        {"expect": {"split_brain": "never"}},
        {"expect": {"call_wait_ms": 1500}},
    ],
}  # fmt: skip

_TOPOLOGY_CACHE: list[ConfigDatabase] = []


def cached_topology(path: str) -> ConfigDatabase:
    """The two-node topology, loaded once (hypothesis runs the validator many times)."""
    if Path(path).resolve() != TOPOLOGY:
        return load_database(path)
    if not _TOPOLOGY_CACHE:
        _TOPOLOGY_CACHE.append(load_database(TOPOLOGY))
    return _TOPOLOGY_CACHE[0]


def check(doc: object) -> Any:
    return check_document(doc, SOURCE, load_topology=cached_topology)


def broken(path: list[Any], value: Any) -> ConfigError:
    """The error for VALID with the item at ``path`` replaced by ``value``."""
    doc = copy.deepcopy(VALID)
    target: Any = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ConfigError) as info:
        check(doc)
    return info.value


def test_the_valid_scenario_converts_every_step() -> None:
    """Every kind of step and expectation of the format is accepted and typed."""
    scenario = check(VALID)
    actions = [s.action for s in scenario.steps]
    assert actions[0] == Start(None)
    assert actions[2] == Load(20.0, 5.0)
    assert actions[3] == SendSignal("ORS_1", "KILL")
    assert actions[4].expectation == ModeWithin("ORS_1_B", "primary", 3.0)
    assert actions[5] == Restart("confserv", "KILL")
    assert actions[6] == Partition("ORS_2", "ORS_2_B")
    assert actions[7] == Partition("ORS_2", "ORS_2_B", heal=True)
    assert actions[9] == SendSignal("ORS_2", "STOP")
    assert actions[12] == SetOption(
        "ORS_Cluster_1", "orchestration", "call-watching-timeout", "700"
    )
    assert actions[13] == Sleep(0.1, 0.2)
    assert actions[14] == Wait(WaitCount("in_flight", None, 0), 30.0)
    assert actions[18].expectation == FailoverGap(3000.0, "ORS_1", 4)
    assert actions[21].expectation == CallWait(1500.0)
    assert len(scenario.expectations) == 7
    assert scenario.seed == 3


def test_stop_gracefully_is_a_sigterm_fault() -> None:
    """``stop-gracefully: APP`` sends SIGTERM (the graceful shutdown) and counts as a fault
    that a later ``start`` repairs."""
    doc = copy.deepcopy(VALID)
    doc["steps"][9] = {"stop-gracefully": "ORS_2"}
    scenario = check(doc)
    step = scenario.steps[9]
    assert step.action == SendSignal("ORS_2", "TERM")
    assert step.verb in FAULT_VERBS
    assert "stop-gracefully" in scenario_schema()["$defs"]["step"]["properties"]


@pytest.mark.parametrize("path", sorted(LIBRARY.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_library_scenario_is_valid(path: Path) -> None:
    """The shipped scenarios load, each with at least one expectation."""
    scenario = load_scenario(path)
    assert scenario.expectations
    assert scenario.name == path.stem


def test_the_library_has_at_least_ten_scenarios_and_the_headline() -> None:
    """Ten or more failover questions ship, the headline among them."""
    assert len(list(LIBRARY.glob("*.yaml"))) >= 10
    assert (LIBRARY / "primary-crash-under-load.yaml").exists()


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (["steps", 3, "kill"], {"app": "ORS_1", "signal": "KIL"},
         "step 4 (kill), field 'kill.signal': 'KIL' is not one of"),
        (["steps", 3, "kill"], "ORS_9",
         "step 4 (kill), field 'kill': 'ORS_9' is not an application of the topology"),
        (["steps", 2, "load"], {"rate": -1},
         "step 3 (load), field 'load.rate': -1 is less than or equal to the minimum of 0"),
        (["steps", 2], {"lode": {"rate": 1}}, "step 3: field 'lode': unknown action"),
        (["steps", 2], {"load": "stop", "kill": "ORS_1"}, "step 3: a step has exactly one action"),
        (["steps", 2], "kill ORS_1", "step 3: a step is a mapping with one action"),
        (["steps", 6, "partition"], ["ORS_2"], "step 7 (partition), field 'partition'"),
        (["steps", 6, "partition"], ["ORS_2", "ORS_2"],
         "step 7 (partition), field 'partition': names 'ORS_2' twice"),
        (["steps", 11, "switchover"], "URS",
         "step 12 (switchover), field 'switchover': 'URS' is not a Node"),
        (["steps", 12, "set-option", "object"], "Nope",
         "step 13 (set-option), field 'set-option.object': 'Nope' is not an object of"),
        (["steps", 13, "sleep"], {"between": [2, 1]},
         "step 14 (sleep), field 'sleep.between': the low bound 2.0 is above"),
        (["steps", 1, "wait"], {"ready": "all", "ledger": "lost", "at_most": 1},
         "step 2 (wait), field 'wait': give exactly one condition"),
        (["steps", 14, "wait"], {"ledger": "lost"},
         "step 15 (wait), field 'wait.ledger': give exactly one of at_least and at_most"),
        (["steps", 16, "expect"], {"calls_lost": 0, "calls_duplicated": 0},
         "step 17 (expect), field 'expect': give exactly one expectation"),
        (["steps", 16, "expect"], {"calls_lost": "none"},
         "step 17 (expect), field 'expect.calls_lost': 'none' is not of type 'integer'"),
        (["steps", 4, "expect"], {"app": "ORS_1_B"},
         "step 5 (expect), field 'expect': 'mode' is a dependency of 'app'"),
        (["steps", 18, "expect", "failover_gap_ms", "fault_step"], 3,
         "step 19 (expect), field 'expect.failover_gap_ms.fault_step': step 3 is not a fault"),
        (["steps", 21, "expect"], {"call_wait_ms": 0},
         "step 22 (expect), field 'expect.call_wait_ms': 0 is less than or equal to the minimum"),
        (["topology"], "topologies/missing.yaml", "field 'topology': "),
        (["name"], "has spaces", "field 'name': 'has spaces' does not match"),
        (["steps"], [], "field 'steps': [] should be non-empty"),
        (["colour"], "red", "field 'colour': unknown field"),
    ],
)  # fmt: skip
def test_errors_name_the_file_the_step_and_the_field(
    path: list[Any], value: Any, expected: str
) -> None:
    """Each broken field is reported with the file, the step number and the field."""
    error = broken(path, value)
    assert str(error).startswith(SOURCE) or str(error).startswith(f"{SOURCE}: 2 problems")
    assert any(expected in p for p in error.problems), error.problems


def test_a_missing_required_field_is_named() -> None:
    """A scenario without a topology says which field is missing."""
    doc = {k: v for k, v in VALID.items() if k != "topology"}
    with pytest.raises(ConfigError, match="field 'topology': required field is missing"):
        check(doc)


def test_every_problem_is_listed() -> None:
    """Several broken steps give one problem each, the first in the message."""
    doc = copy.deepcopy(VALID)
    doc["steps"][3] = {"kill": "ORS_9"}
    doc["steps"][10] = {"continue": "ORS_8"}
    with pytest.raises(ConfigError) as info:
        check(doc)
    assert len(info.value.problems) == 2
    assert "step 4 (kill)" in info.value.problems[0]
    assert "step 11 (continue)" in info.value.problems[1]


def test_invalid_yaml_names_the_line() -> None:
    """Broken YAML is a ConfigError naming the file and the line."""
    with pytest.raises(ConfigError, match=r"probe.yaml:\d+: not valid YAML"):
        parse_scenario("name: x\nsteps:\n  - [unclosed\n", SOURCE, load_topology=cached_topology)


def test_the_schema_ships_with_the_package() -> None:
    """The JSON Schema is package data and names every action."""
    schema = scenario_schema()
    assert set(schema["$defs"]["step"]["properties"]) >= {
        "start", "wait", "load", "kill", "stop", "continue", "restart", "partition", "heal",
        "delay", "switchover", "set-option", "sleep", "expect",
    }  # fmt: skip


def test_cli_refuses_a_broken_file_with_exit_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`orsim scenario run` refuses a broken file before starting anything (exit 3)."""
    doc = copy.deepcopy(VALID)
    doc["topology"] = str(TOPOLOGY)
    doc["steps"][3] = {"kill": {"app": "ORS_1", "signal": "HUP"}}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["scenario", "run", str(path), "--run-dir", str(tmp_path / "runs")]) == 3
    err = capsys.readouterr().err
    assert f"{path}: step 4 (kill), field 'kill.signal'" in err
    assert not (tmp_path / "runs").exists()


def test_cli_check_accepts_the_library(capsys: pytest.CaptureFixture[str]) -> None:
    """`orsim scenario check` validates without running."""
    files = [str(p) for p in sorted(LIBRARY.glob("*.yaml"))]
    assert main(["scenario", "check", *files]) == 0
    assert capsys.readouterr().out.count(": ok (") == len(files)


# --- hypothesis: mutations never crash the validator ---------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 10**6) | st.floats(allow_nan=True)
    | st.text(max_size=12) | st.sampled_from(["ORS_1", "all", "stop", "KILL", "primary"]),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=10) | st.sampled_from(["app", "rate", "mode"]),
                      children, max_size=3),
    max_leaves=8,
)  # fmt: skip


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found.extend(_paths(item, (*prefix, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.extend(_paths(item, (*prefix, index)))
    return found


@st.composite
def mutated(draw: st.DrawFn) -> Any:
    doc: Any = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["replace", "delete", "insert"]))
        if not path:
            doc = draw(json_values) if action == "replace" else doc
            continue
        parent: Any = doc
        for key in path[:-1]:
            parent = parent[key]
        key = path[-1]
        if action == "replace":
            parent[key] = draw(json_values)
        elif action == "delete":
            del parent[key]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=8))] = draw(json_values)
        else:
            parent.insert(key, draw(json_values))
    return doc


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutations_raise_only_config_errors(doc: Any) -> None:
    """Random mutations of a valid scenario are accepted or refused with a ConfigError."""
    try:
        check(doc)
    except ConfigError as exc:
        error = exc
    else:
        return
    assert str(error).startswith(SOURCE)
    assert error.problems


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_raises_only_config_errors(text: str) -> None:
    """Any text at all is parsed or refused with a ConfigError, never a crash."""
    try:
        parse_scenario(text, SOURCE, load_topology=cached_topology)
    except ConfigError:
        pass


def _demo_scenario(*steps: dict[str, Any]) -> dict[str, Any]:
    return {"name": "hosts", "topology": "topologies/demo.yaml", "steps": list(steps)}


def test_host_faults_convert_and_unknown_hosts_are_named() -> None:
    """``partition``/``heal`` take hosts as well as applications; ``isolate: HOST`` is a
    fault and ``heal: HOST`` its repair; a name that is neither an application nor a host
    with applications is refused, listing both."""
    scenario = check_document(
        _demo_scenario(
            {"partition": ["east", "west"]},
            {"heal": ["east", "ORS_2"]},
            {"isolate": "west"},
            {"heal": "west"},
        ),
        SOURCE,
    )
    actions = [s.action for s in scenario.steps]
    assert actions == [
        Partition("east", "west"),
        Partition("east", "ORS_2", heal=True),
        Isolate("west"),
        Isolate("west", heal=True),
    ]
    assert "isolate" in FAULT_VERBS and scenario.steps[2].is_fault
    assert scenario.host_apps("west") == ("ORS_2", "ORS_2_B")
    with pytest.raises(ConfigError) as caught:
        check_document(_demo_scenario({"partition": ["east", "north"]}, {"isolate": "ORS_1"}),
                       SOURCE)  # fmt: skip
    first, second = caught.value.problems
    assert "step 1 (partition), field 'partition': 'north' is neither" in first
    assert "hosts: east, local, west" in first
    assert "step 2 (isolate), field 'isolate': 'ORS_1' is not a host" in second


def test_isolate_needs_another_host() -> None:
    """Isolating the only host of a topology is refused: nothing to cut it from."""
    with pytest.raises(ConfigError, match="nothing to cut it from"):
        check_document({**VALID, "steps": [{"isolate": "local"}]}, SOURCE)
