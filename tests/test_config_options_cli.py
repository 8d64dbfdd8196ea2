"""``orsim config options [--json|--markdown]`` and the README's option table: both rendered
from the option registry, so neither can drift from it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from orsim.cli import main
from orsim.config import OPTIONS, options_markdown

ROOT = Path(__file__).resolve().parent.parent
ORSIM = str(ROOT / ".venv" / "bin" / "orsim")
TABLE_START = "<!-- options table: generated from orsim.config.OPTIONS, do not edit by hand -->\n"
TABLE_END = "<!-- end of options table -->"
FIELDS = [
    "section",
    "key",
    "set_in",
    "applies_to",
    "default",
    "unit",
    "range",
    "dynamic",
    "takes_effect",
    "cluster_list",
    "effect",
]


def test_json_lists_every_option_with_stable_fields(capsys: pytest.CaptureFixture[str]) -> None:
    """--json: one object per registry option, in order, with the documented field names."""
    assert main(["config", "options", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["section"], r["key"]) for r in rows] == [(o.section, o.key) for o in OPTIONS]
    assert all(list(row) == FIELDS for row in rows)
    cwt = rows[0]
    assert cwt["section"] == "orchestration" and cwt["key"] == "call-watching-timeout"
    assert (cwt["default"], cwt["unit"], cwt["dynamic"]) == ("5000", "ms", True)
    assert "1000-300000" in cwt["range"] and cwt["cluster_list"] is True
    by_name = {(r["section"], r["key"]): r for r in rows}
    assert by_name[("persistence", "store")]["dynamic"] is False
    assert by_name[("persistence", "store")]["takes_effect"] == "after restart"
    assert by_name[("scxml", "system-id")]["cluster_list"] is False
    assert by_name[("cluster", "*")]["default"] is None
    assert by_name[("connection", "addp-timeout")]["set_in"] == "connection"
    assert by_name[("orchestration", "backup-synch-max-age")]["takes_effect"].startswith(
        "not simulated"
    )


def test_text_form_through_the_installed_command() -> None:
    """The plain form names every option with its default and whether it is dynamic."""
    env = {**os.environ, "COLUMNS": "100"}
    done = subprocess.run(
        [ORSIM, "config", "options"], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for option in OPTIONS:
        name = option.key if option.set_in == "connection" else f"{option.section}/{option.key}"
        assert f"\n{name}" in f"\n{out}", name
    assert "orchestration/call-watching-timeout  [ORS]\n    default 5000 ms;" in out
    assert "TServer/router-timeout  [T-Server]\n    default 10 s; range > 0; dynamic: yes" in out


def test_markdown_form_is_the_rendered_table(capsys: pytest.CaptureFixture[str]) -> None:
    """--markdown prints exactly the table the README carries."""
    assert main(["config", "options", "--markdown"]) == 0
    assert capsys.readouterr().out == options_markdown()


def test_json_and_markdown_together_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """The two forms exclude each other (exit 2)."""
    with pytest.raises(SystemExit) as caught:
        main(["config", "options", "--json", "--markdown"])
    assert caught.value.code == 2
    assert "not allowed with" in capsys.readouterr().err


def test_help_describes_the_fields(capsys: pytest.CaptureFixture[str]) -> None:
    """The help names every JSON field, so a script writer knows what to expect."""
    with pytest.raises(SystemExit):
        main(["config", "options", "--help"])
    text = capsys.readouterr().out
    for field in FIELDS:
        assert field in text, field


def test_readme_option_table_is_the_rendered_one() -> None:
    """The README's option table equals ``options_markdown()``: regenerate it with
    ``orsim config options --markdown`` when an option changes."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index(TABLE_START) + len(TABLE_START)
    end = readme.index(TABLE_END)
    assert readme[start:end] == options_markdown()
    assert "| `orchestration/call-watching-timeout` | ORS | 5000 ms |" in readme
