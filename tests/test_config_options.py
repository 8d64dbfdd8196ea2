"""The option registry: one definition per option, read by lint, the Configuration Server's
live-change checks, the node, the T-Server and the URS alike (issue 19, item 2)."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import attrs
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from test_config_loader import base, lint

from orsim.config import (
    ANY_KEY,
    CALL_WATCHING_TIMEOUT,
    CONNECTION_OPTIONS,
    LOG_VERBOSE,
    OPTIONS,
    ROUTER_TIMEOUT,
    URS_STRATEGY,
    URS_TARGETS,
    BadValue,
    Choice,
    Number,
    Option,
    Text,
    WholeNumber,
    effective_options,
    find,
    lint_text,
    load_database,
    option_value_problem,
    option_value_warning,
    takes_effect,
)
from orsim.confserv import Change, apply_change
from orsim.errors import ConfigError, RequestRefused
from orsim.search._topology import read_topology
from orsim.urs import UrsOptions

ROOT = Path(__file__).resolve().parent.parent
TOPOLOGIES = ROOT / "scenarios" / "topologies"
IN_OPTIONS = [o for o in OPTIONS if o.set_in == "options"]
NAMED = [o for o in IN_OPTIONS if o.key != ANY_KEY]
#: The application of ``base()`` that reads each kind of option.
READER = {"ORS": "ORS_1", "T-Server": "SIP", "URS": "URS"}


def bad_values(option: Option[Any]) -> list[str]:
    """Texts ``option`` refuses, from what its parser accepts."""
    parse = option.parse
    if isinstance(parse, Number):
        below = [f"{parse.minimum - 1:g}", "x", "nan", "inf"]
        return [*below, f"{parse.minimum:g}"] if parse.above else below
    if isinstance(parse, WholeNumber):
        return ["-1", "1.5", "x"]
    if isinstance(parse, Choice):
        return ["no-such-choice"]
    if isinstance(parse, Text):
        return [" "] if parse.required else []
    if option is URS_TARGETS:
        return ["a, b, a"]
    raise AssertionError(f"no bad values known for {option.name}")


def test_each_option_is_defined_once() -> None:
    """No two definitions share a section and key; lookup finds each one."""
    names = [(o.set_in, o.section, o.key) for o in OPTIONS]
    assert len(names) == len(set(names))
    for option in IN_OPTIONS:
        assert find(option.section, option.key) is option
    assert find("cluster", "ORS_7") is find("cluster", ANY_KEY)
    assert find("orchestration", "no-such-option") is None


@pytest.mark.parametrize("option", [o for o in OPTIONS if o.default is not None], ids=str)
def test_parse_accepts_the_default_text(option: Option[Any]) -> None:
    """Each default parses, and an unset option reads as it."""
    assert option.problem(option.key, option.default or "") is None
    assert option.value(None) == option.parse(option.default or "")


@pytest.mark.parametrize("option", [o for o in OPTIONS if bad_values(o)], ids=str)
def test_parse_refuses_values_out_of_range(option: Option[Any]) -> None:
    """Every text out of range is a problem (a warning, where the bad value is kept) and a
    ConfigError naming the option when read."""
    key = "ORS_9" if option.key == ANY_KEY else option.key
    shown = option.name if option.key != ANY_KEY else f"{option.section}/{key}"
    for text in bad_values(option):
        if option.refuse_bad:
            assert option.problem(key, text) is not None, text
        else:
            assert option.problem(key, text) is None
            assert option.warning(key, text) is not None

        def read(text: str = text) -> object:
            if option.key == ANY_KEY:
                return option.read_section({option.section: {key: text}})
            return option.value(text)

        with pytest.raises(ConfigError, match=re.escape(f"option {shown}")):
            read()


NUMBERS = [o for o in OPTIONS if isinstance(o.parse, Number)]
WHOLE = [o for o in OPTIONS if isinstance(o.parse, WholeNumber)]
CHOICES = [o for o in OPTIONS if isinstance(o.parse, Choice)]


@given(option=st.sampled_from(NUMBERS), x=st.floats(allow_nan=False, allow_infinity=False))
def test_number_options_accept_exactly_their_range(option: Option[float], x: float) -> None:
    """A number option accepts a finite value iff it is at least (or above) its minimum."""
    parse = option.parse
    assert isinstance(parse, Number)
    inside = x > parse.minimum if parse.above else x >= parse.minimum
    assert (option.problem(option.key, repr(x)) is None) == inside


@given(option=st.sampled_from(WHOLE), n=st.integers(-(10**6), 10**6))
def test_whole_number_options_accept_exactly_zero_or_more(option: Option[int], n: int) -> None:
    """A whole-number option accepts n iff n >= 0, and reads it as that int."""
    assert (option.problem(option.key, str(n)) is None) == (n >= 0)
    if n >= 0:
        assert option.value(f" {n} ") == n


@given(option=st.sampled_from(CHOICES), text=st.text(max_size=12))
def test_choice_options_accept_exactly_their_names(option: Option[str], text: str) -> None:
    """A choice parses a text iff, stripped and lower-cased, it is one of its names."""
    parse = option.parse
    assert isinstance(parse, Choice)
    named = text.strip().lower() in parse.values
    try:
        parse(text)
    except BadValue:
        parsed = False
    else:
        parsed = True
    assert parsed == named
    blank = option.blank_is_default and not text.strip()
    refused = option.problem(option.key, text) is not None
    assert refused == (option.refuse_bad and not named and not blank)


@given(
    section=st.sampled_from(["orchestration", "TServer", "urs", "log", "persistence", "x"]),
    key=st.text(min_size=1, max_size=20),
    value=st.text(max_size=20),
)
def test_lint_checks_no_option_outside_the_registry(section: str, key: str, value: str) -> None:
    """The rules lint and the Configuration Server apply know only registry options: any
    other one is kept whatever its value."""
    if find(section, key) is None:
        assert option_value_problem(section, key, value) is None
        assert option_value_warning(section, key, value) is None


@pytest.mark.parametrize(
    "option", [o for o in NAMED if o.default is not None or bad_values(o)], ids=str
)
def test_lint_reports_each_refused_value_where_it_is_set(option: Option[Any]) -> None:
    """Set in the application that reads it, a refused value is one lint problem naming
    the key; its default text is no problem at all."""
    for text, expect_problem in [
        (option.default, False),
        *((bad, option.refuse_bad) for bad in bad_values(option)),
    ]:
        if text is None:
            continue
        data = base()
        app = data["applications"][READER[option.applies_to]]
        app["options"] = {option.section: {option.key: text}}
        problems = lint(data)
        if expect_problem:
            assert len(problems) == 1, (text, problems)
            assert f"{option.section}/{option.key}: {option.key} " in problems[0]
        else:
            assert problems == [], (text, problems)


@pytest.mark.parametrize("option", CONNECTION_OPTIONS, ids=str)
def test_connection_parameters_are_read_through_the_registry(option: Option[Any]) -> None:
    """A connection's ADDP parameters are refused as their definition says."""
    for text in bad_values(option):
        data = base()
        data["applications"]["ORS_1"]["connections"][0] = {"server": "SIP", option.key: text}
        problems = lint(data)
        assert len(problems) == 1 and f"{option.key} must be" in problems[0], problems


def test_lint_messages_are_unchanged() -> None:
    """The registry words lint's problems and warnings as lint did before it."""
    assert option_value_problem("orchestration", "call-watching-timeout", "1.5") == (
        "call-watching-timeout must be a whole number of milliseconds, not '1.5'"
    )
    assert option_value_problem("orchestration", "call-watching-timeout", "-5") == (
        "call-watching-timeout must not be negative (-5)"
    )
    assert option_value_warning("orchestration", "call-watching-timeout", "500") == (
        "call-watching-timeout 500 ms is outside the documented range 1000-300000; "
        "a real ORS would reject it (orsim accepts it)"
    )
    assert option_value_problem("TServer", "router-timeout", "0") == (
        "router-timeout must be a number of seconds > 0, not '0'"
    )
    assert option_value_problem("urs", "think-time-ms", "-1") == (
        "think-time-ms must be a number of milliseconds >= 0, not '-1'"
    )
    assert option_value_problem("cluster", "ORS_1", " ") == (
        "Node 'ORS_1' needs a data center name as its value"
    )
    # A blank call-watching-timeout stays refused; a blank router-timeout is the default.
    assert option_value_problem("orchestration", "call-watching-timeout", "") is not None
    assert option_value_problem("TServer", "router-timeout", " ") is None


def test_lint_now_refuses_what_the_urs_would_refuse_at_start() -> None:
    """urs/strategy and urs/targets were checked only by the URS when it started; lint and
    live changes now refuse them too, with the same rule."""
    for key, value in (("strategy", "random"), ("targets", "a,b,a")):
        data = base()
        data["applications"]["URS"]["options"] = {"urs": {key: value}}
        problems = lint(data)
        assert len(problems) == 1 and f"urs/{key}" in problems[0], problems
        with pytest.raises(ConfigError, match=f"option urs/{key}"):
            UrsOptions.from_options({"urs": {key: value}})
    db = load_database(TOPOLOGIES / "demo.yaml")
    with pytest.raises(RequestRefused) as caught:
        apply_change(db, Change("URS", "urs", "strategy", "random"))
    assert caught.value.code == "bad_value"


def test_log_verbose_bad_value_is_kept_and_warned_of() -> None:
    """log/verbose is the one option whose bad value is kept (the node ignores it): lint
    warns instead of refusing, the Configuration Server accepts it."""
    data = base()
    data["applications"]["ORS_1"]["options"] = {"log": {"verbose": "bogus"}}
    result = lint_text(yaml.safe_dump(data), "t.yaml")
    assert result.problems == ()
    assert any("verbose must be one of" in w for w in result.warnings), result.warnings
    assert LOG_VERBOSE.value("ALL ") == "debug"


def test_call_watching_timeout_is_whole_milliseconds_everywhere() -> None:
    """The node reads call-watching-timeout as lint does: a whole number of ms (it used to
    take '250.5' as a float), naming the application when it is refused."""
    db = load_database(TOPOLOGIES / "demo.yaml")
    app = db.applications["ORS_1"]
    options = effective_options(app, None)
    assert options.value(CALL_WATCHING_TIMEOUT) == 5000
    for text, expected in (("250", 250), ("250.5", None)):
        cwt = {CALL_WATCHING_TIMEOUT.section: {CALL_WATCHING_TIMEOUT.key: text}}
        patched = effective_options(attrs.evolve(app, options=cwt), None)
        if expected is None:
            with pytest.raises(ConfigError, match="application 'ORS_1': option orchestration"):
                patched.value(CALL_WATCHING_TIMEOUT)
        else:
            assert patched.value(CALL_WATCHING_TIMEOUT) == expected


def test_servers_word_refusals_with_the_option_name() -> None:
    """A server refusing a value at start names the option and the rule."""
    with pytest.raises(ConfigError) as caught:
        ROUTER_TIMEOUT.read({"TServer": {"router-timeout": "soon"}})
    assert str(caught.value) == (
        "option TServer/router-timeout must be a number of seconds > 0, not 'soon'"
    )
    with pytest.raises(ConfigError, match="option urs/strategy must be one of"):
        URS_STRATEGY.read({"urs": {"strategy": "random"}})


def test_search_assumes_the_call_watching_timeout_nodes_run_with() -> None:
    """Without a cluster list the search used a 1000 ms call-watching-timeout while the
    node ran with the 5000 ms default; it now reads the registry's."""
    assert read_topology(TOPOLOGIES / "single.yaml").cwt_ms == 5000.0
    assert read_topology(TOPOLOGIES / "two-nodes.yaml").cwt_ms == 500.0


# -- the name of an option is written once ---------------------------------------------

#: ``store`` sits below ``config`` and cannot import the registry: it names the option of
#: its URL in its own messages.
NAME_ALLOWED = {Path("orsim/config/_options.py"), Path("orsim/store/_url.py")}


def _distinct_names() -> set[str]:
    """Option names no other orsim word shares: hyphenated keys and sections, and every
    ``section/key``."""
    names = {o.name for o in IN_OPTIONS if o.key != ANY_KEY}
    names |= {o.key for o in OPTIONS if "-" in o.key}
    names |= {o.section for o in OPTIONS if "-" in o.section}
    return names


def _string_literals(tree: ast.AST) -> list[ast.Constant]:
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
    }
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def test_option_names_are_written_only_in_the_registry() -> None:
    """Outside the registry, code reaches an option through its constant, never by
    spelling its name (prose in docstrings and messages aside)."""
    names = _distinct_names()
    assert "orchestration/call-watching-timeout" in names and "routing-points" in names
    found = []
    for path in sorted((ROOT / "orsim").rglob("*.py")):
        relative = path.relative_to(ROOT)
        if relative in NAME_ALLOWED:
            continue
        for node in _string_literals(ast.parse(path.read_text())):
            if node.value in names:
                found.append(f"{relative}:{node.lineno}: {node.value!r}")
    assert found == []


def test_the_loader_accepts_exactly_the_registry_connection_parameters() -> None:
    """A connection entry takes ``server`` and the registry's connection parameters: an
    unknown key is refused with that list."""
    data = base()
    data["applications"]["ORS_1"]["connections"][0] = {"server": "SIP", "bogus": 1}
    (problem,) = lint(data)
    expected = problem.split("expected one of: ", 1)[1].rstrip(")").split(", ")
    assert expected == ["server", *(o.key for o in CONNECTION_OPTIONS)]


@pytest.mark.parametrize(
    ("section", "key", "when"),
    [
        ("orchestration", "call-watching-timeout", "at once"),
        ("orchestration", "peer-heartbeat", "after restart"),
        ("TServer", "router-timeout", "at once"),
        ("cluster", "ORS_1", "after restart"),
        ("log", "all", "at once"),  # not defined: logging sections apply at once
        ("log-extended", "x", "at once"),
        ("orchestration", "no-such-option", "after restart"),
    ],
)
def test_takes_effect_follows_the_registry(section: str, key: str, when: str) -> None:
    """What the node logs for a live change comes from the registry's ``dynamic``."""
    assert takes_effect(section, key) == when
