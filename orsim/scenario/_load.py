"""Reading a scenario file: YAML, then the JSON Schema, then checks against the topology.

Every problem names the file, the step (counted from 1) and the field, e.g.
``scenarios/x.yaml: step 4 (kill), field 'kill.signal': 'KIL' is not one of [...]``.
All problems are collected; the ``ConfigError`` raised carries them in ``problems``.
Nothing here starts a process: a broken scenario is refused before anything runs.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar, cast

import jsonschema
from jsonschema.exceptions import ValidationError

from orsim.cluster import store_app_names
from orsim.config import (
    ConfigDatabase,
    load_database,
    load_yaml,
    option_value_to_str,
    read_yaml_text,
)
from orsim.errors import ConfigError
from orsim.scenario._model import (
    CONFSERV_APP,
    Action,
    CallsDuplicated,
    CallsLost,
    CallWait,
    Delay,
    Expect,
    Expectation,
    FailoverGap,
    Isolate,
    Load,
    ModeWithin,
    Partition,
    Restart,
    Scenario,
    SendSignal,
    SessionsRecovered,
    SetOption,
    Signal,
    Sleep,
    SplitBrainNever,
    Start,
    Step,
    StopLoad,
    Switchover,
    Wait,
    WaitCondition,
    WaitCount,
    WaitMode,
    WaitReady,
)

DEFAULT_WAIT_TIMEOUT = 30.0
DEFAULT_WITHIN = 10.0
DEFAULT_SAMPLE_INTERVAL = 0.25
#: Long enough for a call stranded at a dead Node to reach the T-Server's default
#: router-timeout (10 s) and be counted as lost rather than in flight.
DEFAULT_SETTLE_TIMEOUT = 12.0
_MAX_MESSAGE = 240
#: The keys of an ``expect`` mapping that name an expectation (exactly one per step).
_EXPECTATION_KEYS = (
    "mode",
    "calls_lost",
    "calls_duplicated",
    "failover_gap_ms",
    "call_wait_ms",
    "sessions_recovered",
    "split_brain",
)

T = TypeVar("T")

TopologyLoader = Callable[[str], ConfigDatabase]


@cache
def scenario_schema() -> dict[str, Any]:
    """The JSON Schema of the scenario format (shipped as ``orsim/scenario/schema.json``)."""
    text = resources.files("orsim.scenario").joinpath("schema.json").read_text("utf-8")
    return cast(dict[str, Any], json.loads(text))


def load_scenario(
    path: str | os.PathLike[str], *, load_topology: TopologyLoader = load_database
) -> Scenario:
    """Read, validate and check a scenario file and the topology it names.

    Raises:
        ConfigError: the file is unreadable or broken; ``problems`` lists every problem.
    """
    source = os.fspath(path)
    return parse_scenario(read_yaml_text(source), source, load_topology=load_topology)


def parse_scenario(
    text: str, source: str, *, load_topology: TopologyLoader = load_database
) -> Scenario:
    """Validate scenario ``text`` read from ``source`` (topology paths are relative to it)."""
    # The database's reader: the same size, depth and alias limits, merge keys work.
    document = load_yaml(text, source)
    return check_document(document, source, load_topology=load_topology)


def check_document(
    document: object, source: str, *, load_topology: TopologyLoader = load_database
) -> Scenario:
    """Schema validation, then conversion and semantic checks of a parsed document."""
    problems = schema_problems(document, source)
    if problems:
        raise _error(source, problems)
    assert isinstance(document, dict)
    topology_path = str(Path(source).parent / document["topology"])
    try:
        topology = load_topology(topology_path)
    except ConfigError as exc:
        first = exc.problems[0] if exc.problems else str(exc)
        raise ConfigError(
            f"{source}: field 'topology': {document['topology']!r} cannot be used: {first}",
            [f"{source}: field 'topology': {p}" for p in exc.problems],
        ) from None
    problems = [
        f"{source}: {step_label(number, verb)}, field '{field}': {problem}"
        for number, raw in enumerate(document["steps"], start=1)
        for verb, value in raw.items()
        for field, problem in _shape_problems(verb, value)
    ]
    if problems:
        raise _error(source, problems)
    steps = tuple(
        _convert_step(number, raw) for number, raw in enumerate(document["steps"], start=1)
    )
    scenario = Scenario(
        source=source,
        name=document["name"],
        description=document.get("description", ""),
        topology_path=topology_path,
        topology=topology,
        seed=document.get("seed"),
        sample_interval=float(document.get("sample-interval", DEFAULT_SAMPLE_INTERVAL)),
        settle_timeout=float(document.get("settle-timeout", DEFAULT_SETTLE_TIMEOUT)),
        steps=steps,
    )
    problems = list(_SemanticChecker(scenario).problems())
    if problems:
        raise _error(source, problems)
    return scenario


def _error(source: str, problems: Sequence[str]) -> ConfigError:
    if len(problems) == 1:
        return ConfigError(problems[0], list(problems))
    return ConfigError(f"{source}: {len(problems)} problems; first: {problems[0]}", list(problems))


# --- schema ------------------------------------------------------------------------------


def schema_problems(document: object, source: str) -> list[str]:
    """Every schema violation of ``document``, each naming the step and the field."""
    if not isinstance(document, dict):
        return [
            f"{source}: a scenario is a mapping (name, topology, steps...), got {_kind(document)}"
        ]
    validator = jsonschema.Draft202012Validator(scenario_schema())
    try:
        errors = sorted(validator.iter_errors(document), key=lambda e: _path_key(e))
    except RecursionError:
        return [f"{source}: nested too deeply"]
    non_finite = _non_finite(document)
    problems = [_located(source, path, f"{value!r} is not a finite number")
                for path, value in non_finite.items()]  # fmt: skip
    for error in map(_most_specific, errors):
        if tuple(error.absolute_path) not in non_finite:  # said once is enough
            problems.append(_describe(source, document, error))
    return problems


def _non_finite(document: object) -> dict[tuple[str | int, ...], float]:
    """Every .inf/.nan, by path: the schema's bounds cannot catch NaN (every comparison
    with it is false), and no field means "forever"."""
    found: dict[tuple[str | int, ...], float] = {}

    def walk(value: object, path: tuple[str | int, ...]) -> None:
        if isinstance(value, float) and not math.isfinite(value):
            found[path] = value
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, (*path, key))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, (*path, index))

    walk(document, ())
    return found


def _path_key(error: ValidationError) -> tuple[str, ...]:
    return tuple(f"{p:08d}" if isinstance(p, int) else str(p) for p in error.absolute_path)


def _most_specific(error: ValidationError) -> ValidationError:
    """For ``anyOf`` failures, the alternative the value was meant for.

    That is the branch whose type matched (its error is not a ``type`` mismatch), and
    within it the error deepest in the value.
    """
    if not error.context:
        return error
    candidates = [e for e in error.context if e.validator != "type"] or list(error.context)
    deepest = max(candidates, key=lambda e: len(e.relative_path))
    return _most_specific(deepest)


def _describe(source: str, document: Mapping[str, object], error: ValidationError) -> str:
    path = list(error.absolute_path)
    message = _message(error)
    if len(path) == 2 and path[0] == "steps" and isinstance(path[1], int):
        raw = _valid(list, document["steps"])[path[1]]
        return f"{source}: step {path[1] + 1}: {_step_message(error, raw)}"
    if path:
        return _located(source, path, message)
    if error.validator == "additionalProperties":
        extra = sorted(map(str, set(document) - set(scenario_schema()["properties"])))
        known = ", ".join(scenario_schema()["properties"])
        return f"{source}: field '{extra[0] if extra else '?'}': unknown field (known: {known})"
    if error.validator == "required":
        missing = [k for k in scenario_schema()["required"] if k not in document]
        return f"{source}: field '{missing[0] if missing else '?'}': required field is missing"
    return f"{source}: {message}"


def _located(source: str, path: Sequence[str | int], message: str) -> str:
    """``message`` about the value at ``path``, naming its step and field."""
    if len(path) >= 3 and path[0] == "steps" and isinstance(path[1], int):
        rest = [str(p) for p in path[2:]]
        return f"{source}: {step_label(path[1] + 1, rest[0])}, field '{'.'.join(rest)}': {message}"
    if len(path) == 2 and path[0] == "steps" and isinstance(path[1], int):
        return f"{source}: step {path[1] + 1}: {message}"
    return f"{source}: field '{'.'.join(str(p) for p in path)}': {message}"


def step_label(number: int, verb: str | None) -> str:
    """``step 4 (kill)`` as every message and the timeline print it."""
    return f"step {number} ({verb})" if verb else f"step {number}"


def _step_message(error: ValidationError, raw: object) -> str:
    verbs = list(scenario_schema()["$defs"]["step"]["properties"])
    if error.validator == "type":
        return f"a step is a mapping with one action ({', '.join(verbs)}), got {_kind(raw)}"
    if error.validator == "additionalProperties" and isinstance(raw, dict):
        unknown = sorted(str(k) for k in raw if k not in verbs)
        return f"field '{unknown[0]}': unknown action (known: {', '.join(verbs)})"
    if error.validator in ("minProperties", "maxProperties") and isinstance(raw, dict):
        keys = ", ".join(sorted(map(str, raw))) or "none"
        return f"a step has exactly one action, got {len(raw)} ({keys})"
    return _message(error)


def _message(error: ValidationError) -> str:
    message = error.message
    return message if len(message) <= _MAX_MESSAGE else message[: _MAX_MESSAGE - 3] + "..."


def _kind(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"{type(value).__name__} {value!r}"[:80]


def _shape_problems(verb: str, value: object) -> Iterable[tuple[str, str]]:
    """Combinations of keys the schema leaves open: one condition per wait/expect."""
    if not isinstance(value, dict):
        return
    if verb == "wait":
        kinds = [k for k in ("app", "ready", "ledger") if k in value]
        if len(kinds) != 1:
            yield (
                "wait",
                (
                    "give exactly one condition: {app, mode}, {ready: all} or "
                    f"{{ledger, at_least|at_most}}; got {' and '.join(kinds) or 'none'}"
                ),
            )
        elif "ledger" in value and ("at_least" in value) == ("at_most" in value):
            yield "wait.ledger", "give exactly one of at_least and at_most"
        elif "ledger" not in value and ("at_least" in value or "at_most" in value):
            yield "wait", "at_least/at_most go with ledger"
    elif verb == "expect":
        kinds = [k for k in _EXPECTATION_KEYS if k in value]
        if len(kinds) != 1:
            yield (
                "expect",
                (
                    f"give exactly one expectation ({', '.join(_EXPECTATION_KEYS)}); "
                    f"got {' and '.join(kinds) or 'none'}"
                ),
            )


# --- conversion (the document is schema-valid here) ----------------------------------------


def _convert_step(number: int, raw: object) -> Step:
    ((verb, value),) = _fields(raw).items()
    return Step(number=number, verb=verb, action=_convert_action(verb, value))


def _convert_action(verb: str, value: object) -> Action:
    if verb == "start":
        if value == "all":
            return Start(None)
        return Start((value,) if isinstance(value, str) else _names(value))
    if verb == "wait":
        fields = _fields(value)
        return Wait(_wait_condition(fields), _number(fields.get("timeout", DEFAULT_WAIT_TIMEOUT)))
    if verb == "load":
        if value == "stop":
            return StopLoad()
        fields = _fields(value)
        duration = fields.get("duration")
        return Load(_number(fields["rate"]), None if duration is None else _number(duration))
    if verb == "kill":
        app, signal = _app_signal(value, "KILL")
        return SendSignal(app, signal)
    if verb == "stop":
        return SendSignal(_text(value), "STOP")
    if verb == "stop-gracefully":
        return SendSignal(_text(value), "TERM")  # a primary suspends, drains, hands over, exits
    if verb == "continue":
        return SendSignal(_text(value), "CONT")
    if verb == "restart":
        app, signal = _app_signal(value, "TERM")
        return Restart(app, signal)
    if verb == "isolate":
        return Isolate(_text(value))
    if verb == "heal" and isinstance(value, str):
        return Isolate(value, heal=True)
    if verb in ("partition", "heal"):
        a, b = _names(value)
        return Partition(a, b, heal=verb == "heal")
    if verb == "delay":
        fields = _fields(value)
        a, b = _names(fields["between"])
        return Delay(a, b, _number(fields["ms"]))
    if verb == "switchover":
        return Switchover(_node(value))
    if verb == "set-option":
        fields = _fields(value)
        return SetOption(
            _text(fields["object"]), _text(fields["section"]), _text(fields["key"]),
            option_value_to_str(fields["value"]),
        )  # fmt: skip
    if verb == "sleep":
        if isinstance(value, dict):
            low, high = (_number(v) for v in _valid(list, value["between"]))
            return Sleep(low, high)
        return Sleep(_number(value), _number(value))
    if verb == "expect":
        return Expect(_expectation(_fields(value)))
    raise AssertionError(f"schema admitted unknown verb {verb!r}")


def _app_signal(value: object, default: Signal) -> tuple[str, Signal]:
    if isinstance(value, str):
        return value, default
    fields = _fields(value)
    return _text(fields["app"]), _SIGNALS[_text(fields.get("signal", default))]


def _wait_condition(value: Mapping[str, object]) -> WaitCondition:
    # Which kind is checked (exactly one) by the semantic checker; pick by key here.
    if "app" in value:
        return WaitMode(_text(value["app"]), _text(value["mode"]))
    if "ledger" in value:
        return WaitCount(_text(value["ledger"]), _whole(value.get("at_least")),
                         _whole(value.get("at_most")))  # fmt: skip
    return WaitReady()


def _expectation(value: Mapping[str, object]) -> Expectation:
    if "mode" in value:
        within = _number(value.get("within", DEFAULT_WITHIN))
        return ModeWithin(_text(value["app"]), _text(value["mode"]), within)
    if "calls_lost" in value:
        return CallsLost(_valid(int, value["calls_lost"]))
    if "calls_duplicated" in value:
        return CallsDuplicated(_valid(int, value["calls_duplicated"]))
    if "failover_gap_ms" in value:
        gap = value["failover_gap_ms"]
        if isinstance(gap, dict):
            return FailoverGap(_number(gap["below"]), _node_or_none(gap.get("node")),
                               _whole(gap.get("fault_step")))  # fmt: skip
        return FailoverGap(_number(gap))
    if "call_wait_ms" in value:
        return CallWait(_number(value["call_wait_ms"]))
    if "sessions_recovered" in value:
        rec = value["sessions_recovered"]
        if isinstance(rec, dict):
            return SessionsRecovered(_valid(int, rec["at_least"]), _node_or_none(rec.get("node")),
                                     _whole(rec.get("fault_step")))  # fmt: skip
        return SessionsRecovered(_valid(int, rec))
    return SplitBrainNever()


# The readers of a schema-valid document's values: the schema has checked each shape, so
# a mismatch here is a bug of the schema or of this module (an AssertionError).


_SIGNALS: dict[str, Signal] = {"KILL": "KILL", "TERM": "TERM", "STOP": "STOP", "CONT": "CONT"}


def _valid(kind: type[T], value: object) -> T:
    """``value``, which the schema has checked to be a ``kind``."""
    assert isinstance(value, kind), value
    return value


def _fields(value: object) -> Mapping[str, object]:
    return _valid(dict, value)


def _text(value: object) -> str:
    return _valid(str, value)


def _names(value: object) -> tuple[str, ...]:
    return tuple(_text(v) for v in _valid(list, value))


def _number(value: object) -> float:
    assert isinstance(value, int | float | str), value
    return float(value)


def _whole(value: object) -> int | None:
    return None if value is None else _valid(int, value)


def _node(value: object) -> str | int:
    assert isinstance(value, str | int), value
    return value


def _node_or_none(value: object) -> str | int | None:
    return None if value is None else _node(value)


# --- semantic checks -----------------------------------------------------------------------


class _SemanticChecker:
    """Checks that need the topology or the whole timeline (not expressible in the schema)."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        db = scenario.topology
        self.apps = set(db.applications) | {CONFSERV_APP, *store_app_names(db)}
        self.objects = set(scenario.topology.applications) | set(scenario.topology.transactions)

    def problems(self) -> Iterable[str]:
        source = self.scenario.source
        for step in self.scenario.steps:
            for field, problem in self._step_problems(step):
                yield f"{source}: {step_label(step.number, step.verb)}, field '{field}': {problem}"

    def _app(self, field: str, name: str) -> Iterable[tuple[str, str]]:
        if name not in self.apps:
            known = ", ".join(sorted(self.apps))
            yield field, f"{name!r} is not an application of the topology (known: {known})"

    def _end(self, field: str, name: str) -> Iterable[tuple[str, str]]:
        """One end of a link fault: an application (names of applications win) or a
        host with applications."""
        if name in self.apps or self.scenario.host_apps(name):
            return
        known = ", ".join(sorted(self.apps))
        hosts = ", ".join(self._hosts()) or "none"
        yield field, (f"{name!r} is neither an application nor a host of the topology "
                      f"(applications: {known}; hosts: {hosts})")  # fmt: skip

    def _hosts(self) -> list[str]:
        db = self.scenario.topology
        return sorted({a.host for a in db.applications.values()})

    def _host(self, field: str, name: str) -> Iterable[tuple[str, str]]:
        hosts = self._hosts()
        if name not in hosts:
            yield field, (f"{name!r} is not a host with applications "
                          f"(hosts: {', '.join(hosts) or 'none'})")  # fmt: skip
        elif len(hosts) < 2:
            yield field, f"every application is on host {name!r}: nothing to cut it from"

    def _node(self, field: str, ref: str | int) -> Iterable[tuple[str, str]]:
        if self.scenario.resolve_node(ref) is None:
            nodes = ", ".join(self.scenario.nodes)
            yield field, f"{ref!r} is not a Node of the topology (Nodes: {nodes})"

    def _step_problems(self, step: Step) -> Iterable[tuple[str, str]]:
        action, verb = step.action, step.verb
        if isinstance(action, Start) and action.apps is not None:
            for app in action.apps:
                yield from self._app(verb, app)
        elif isinstance(action, Wait):
            yield from self._wait_problems(action)
        elif isinstance(action, SendSignal | Restart):
            yield from self._app(verb, action.app)
        elif isinstance(action, Isolate):
            yield from self._host(verb, action.host)
        elif isinstance(action, Partition | Delay):
            field = "delay.between" if isinstance(action, Delay) else verb
            yield from self._end(field, action.a)
            yield from self._end(field, action.b)
            if action.a == action.b:
                yield field, f"names {action.a!r} twice; a link has two ends"
        elif isinstance(action, Switchover):
            yield from self._node(verb, action.node)
        elif isinstance(action, SetOption) and action.object not in self.objects:
            known = ", ".join(sorted(self.objects))
            yield (
                "set-option.object",
                f"{action.object!r} is not an object of the topology ({known})",
            )
        elif isinstance(action, Sleep) and action.low > action.high:
            yield "sleep.between", f"the low bound {action.low} is above the high one {action.high}"
        elif isinstance(action, Expect):
            yield from self._expect_problems(step, action.expectation)

    def _wait_problems(self, wait: Wait) -> Iterable[tuple[str, str]]:
        cond = wait.condition
        if isinstance(cond, WaitMode):
            yield from self._app("wait.app", cond.app)
        if not math.isfinite(wait.timeout):
            yield "wait.timeout", "must be a finite number of seconds"

    def _expect_problems(self, step: Step, exp: Expectation) -> Iterable[tuple[str, str]]:
        if isinstance(exp, ModeWithin):
            yield from self._app("expect.app", exp.app)
            return
        if isinstance(exp, FailoverGap | SessionsRecovered):
            key = "failover_gap_ms" if isinstance(exp, FailoverGap) else "sessions_recovered"
            if exp.node is not None:
                yield from self._node(f"expect.{key}.node", exp.node)
            faults = [s for s in self.scenario.steps if s.is_fault]
            if exp.fault_step is not None:
                target = next((s for s in faults if s.number == exp.fault_step), None)
                if target is None:
                    numbers = ", ".join(str(s.number) for s in faults) or "none"
                    yield (
                        f"expect.{key}.fault_step",
                        (f"step {exp.fault_step} is not a fault step (fault steps: {numbers})"),
                    )
            elif not faults:
                yield f"expect.{key}", "the scenario has no fault step to measure from"
            elif exp.node is None and fault_node(self.scenario, faults[-1]) is None:
                yield (
                    f"expect.{key}.node",
                    (f"the fault of step {faults[-1].number} hits no Node; name the Node"),
                )


def fault_node(scenario: Scenario, step: Step) -> str | None:
    """The Node a fault step hits: the (first) ORS application it names."""
    action = step.action
    if isinstance(action, Switchover):
        return scenario.resolve_node(action.node)
    names: tuple[str, ...] = ()
    if isinstance(action, SendSignal | Restart):
        names = (action.app,)
    elif isinstance(action, Partition | Delay):
        names = (action.a, action.b)
    for name in names:
        node = scenario.node_of(name)
        if node is not None:
            return node
    return None


def fault_app(step: Step) -> str | None:
    """The application a fault step acts on (the first named for link faults)."""
    action = step.action
    if isinstance(action, SendSignal | Restart):
        return action.app
    if isinstance(action, Partition | Delay):
        return action.a
    return None
