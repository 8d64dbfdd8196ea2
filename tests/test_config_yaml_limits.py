"""YAML with limits: hostile files fail fast in one line (issue 20, finding 6)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import yaml
from test_config_loader import ORSIM, base, lint

from orsim.config import _yaml_source, lint_database, lint_text, load_yaml
from orsim.config._yaml_source import MAX_DEPTH
from orsim.errors import ConfigError

BASE = yaml.safe_dump(base(), sort_keys=False)


def with_apps(text: str) -> str:
    """The base database with ``text`` (YAML lines) added under ``applications``."""
    return BASE.replace("applications:\n", "applications:\n" + text, 1)


BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def deep_options(depth: int) -> str:
    """The base database with one application's options nested ``depth`` deep."""
    nested = "{k: " * depth + "v" + "}" * depth
    return BASE.replace("    type: RoutingServer\n", f"    type: RoutingServer\n    x: {nested}\n")


def anchors_under_options(levels: int) -> str:
    """Mappings of 10 aliases to the previous level, ``levels`` times, under options."""
    lines = ["  Extra:", "    type: RoutingServer", "    host: h", "    port: 7999",
             "    options:", "      l0: &l0 {a: b, c: d}"]  # fmt: skip
    for n in range(1, levels + 1):
        refs = ", ".join(f"k{i}: *l{n - 1}" for i in range(10))
        lines.append(f"      l{n}: &l{n} {{{refs}}}")
    return with_apps("\n".join(lines) + "\n")


def only_problem(result_problems: tuple[str, ...], needle: str) -> str:
    assert len(result_problems) == 1, result_problems
    assert needle in result_problems[0], result_problems
    assert "\n" not in result_problems[0]
    return result_problems[0]


def test_dev_zero_is_one_line_not_memory_error() -> None:
    started = time.monotonic()
    only_problem(lint_database("/dev/zero").problems, "larger than 16 MiB")
    assert time.monotonic() - started < 5


def test_deep_nesting_is_one_line_not_recursion_error() -> None:
    problem = only_problem(lint_text(deep_options(2000), "t.yaml").problems, "levels deep")
    assert problem.startswith("t.yaml:")
    # 10 deep is fine (its only problem: `x` is not an application key).
    only_problem(lint_text(deep_options(10), "t.yaml").problems, "unknown key")


@pytest.mark.parametrize(
    "text",
    [BILLION_LAUGHS, anchors_under_options(8)],
    ids=["billion-laughs", "anchors-under-options"],
)
def test_alias_bombs_fail_fast(text: str) -> None:
    started = time.monotonic()
    only_problem(lint_text(text, "t.yaml").problems, "aliases expand the document")
    assert time.monotonic() - started < 0.5


def test_aliases_cannot_nest_past_the_depth_limit() -> None:
    half = MAX_DEPTH // 2 + 5
    text = f"a: &a {'[' * half}1{']' * half}\nb: {'[' * half}*a{']' * half}\n"
    only_problem(lint_text(text, "t.yaml").problems, "levels deep")


def test_recursive_alias() -> None:
    only_problem(lint_text("a: &a [1, *a]\n", "t.yaml").problems, "refers to itself")


def test_huge_integer_is_a_problem_not_a_traceback() -> None:
    text = BASE.replace("port: 7001", "port: " + "9" * 5000)
    problems = lint_text(text, "t.yaml").problems
    assert any("digits" in p for p in problems), problems


def test_merge_keys_work_and_own_keys_win() -> None:
    text = with_apps(
        "  URS_2:\n"
        "    <<: &ors {type: RoutingServer, host: h, port: 7003}\n"
        "    port: 7004\n"
        "  URS_3:\n"
        "    <<: [{port: 7005}, *ors]\n"
    )
    result = lint_text(text, "t.yaml")
    assert result.problems == (), result.problems
    assert result.database is not None
    apps = result.database.applications
    assert (apps["URS_2"].type, apps["URS_2"].port) == ("RoutingServer", 7004)
    assert (apps["URS_3"].type, apps["URS_3"].port) == ("RoutingServer", 7005)


def test_duplicate_keys_are_still_reported() -> None:
    problems = lint_text(with_apps("  URS:\n    port: 1\n"), "t.yaml").problems
    assert any("duplicate key" in p for p in problems), problems


@pytest.mark.parametrize("address", ["0.0.0.0", "::"])
def test_any_address_hosts_warn(address: str) -> None:
    data = base()
    data["hosts"]["h"]["address"] = address
    result = lint_text(yaml.safe_dump(data), "t.yaml")
    assert result.problems == ()
    assert any("every network interface" in w for w in result.warnings), result.warnings


@pytest.mark.parametrize("value", [-5, 0, ".inf", ".nan", "soon"])
def test_bad_router_timeout_is_rejected(value: object) -> None:
    data = base()
    data["applications"]["SIP"]["options"] = {"TServer": {"router-timeout": "PLACEHOLDER"}}
    text = yaml.safe_dump(data).replace("PLACEHOLDER", str(value))
    only_problem(lint_text(text, "t.yaml").problems, "router-timeout must be a number of seconds")


def test_empty_app_name_is_rejected() -> None:
    data = base()
    data["applications"][""] = {"type": "RoutingServer", "host": "h", "port": 7999}
    assert any("the name is empty" in p for p in lint(data))


@pytest.mark.parametrize("kind", ["dev-zero", "deep", "laughs"])
def test_lint_command_one_line_exit_3(kind: str, tmp_path: Path) -> None:
    path = Path("/dev/zero")
    if kind != "dev-zero":
        path = tmp_path / "bad.yaml"
        path.write_text(deep_options(2000) if kind == "deep" else BILLION_LAUGHS)
    started = time.monotonic()
    proc = subprocess.run(
        [ORSIM, "config", "lint", str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 3, proc
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert time.monotonic() - started < 10


def test_scenarios_use_the_same_reader(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(BILLION_LAUGHS)
    proc = subprocess.run(
        [ORSIM, "scenario", "check", str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 3, proc
    assert "aliases expand the document" in proc.stderr
    with pytest.raises(ConfigError, match="levels deep"):
        load_yaml("[" * 2000 + "]" * 2000, "s.yaml")


REPO = Path(__file__).resolve().parent.parent
READ_BY_BOTH = [
    *sorted(str(p.relative_to(REPO)) for p in (REPO / "scenarios").rglob("*.yaml")),
    BASE,
    BILLION_LAUGHS,
    deep_options(MAX_DEPTH + 5),
    "a: b: c\n",
    "a: [1, 2\n",
    "- a\nb: c\n",
    "a: 'x\n",
    "\t- x\n",
    "a: &x 1\nb: *y\n",
    "{a: 1, a: 2}\n",
    "a:\n  - 1\n - 2\n",
    "%YAML 9.9\n---\na: 1\n",
    "? [a]\n: 1\n",
    "\x00a: 1\n",
    "a: 1\n---\nb: 2\n",
]


@pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML without libyaml")
@pytest.mark.parametrize("source", READ_BY_BOTH, ids=range(len(READ_BY_BOTH)))
def test_libyaml_reads_as_pyyaml_does(source: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """libyaml's parser, where present, gives the same data, lines, problems and errors."""
    text = (REPO / source).read_text() if source.endswith(".yaml") else source

    def read() -> tuple[object, ...]:
        try:
            document = _yaml_source.parse_yaml(text, "db.yaml")
        except yaml.YAMLError as exc:
            return ("error", _yaml_source.yaml_error_message(exc, "db.yaml"))
        return (document.data, document.lines, document.problems)

    fast = read()
    monkeypatch.setattr(_yaml_source, "_FAST_LOADER", _yaml_source._LimitedLoader)
    assert fast == read()
