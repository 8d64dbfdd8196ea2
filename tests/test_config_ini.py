"""Genesys exported option files (INI)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orsim.config import options_to_ini, parse_options_ini
from orsim.errors import ConfigError

SAMPLE = """\
; exported from Configuration Manager
[orchestration]
call-watching-timeout = 250
# a comment
backup-synch-max-age=600

[persistence]
store=sqlite:///run/sessions.db?mode=rwc
"""


def test_parse_sample() -> None:
    assert parse_options_ini(SAMPLE) == {
        "orchestration": {"call-watching-timeout": "250", "backup-synch-max-age": "600"},
        "persistence": {"store": "sqlite:///run/sessions.db?mode=rwc"},
    }


def test_bad_lines_are_all_reported() -> None:
    with pytest.raises(ConfigError) as info:
        parse_options_ini("orphan=1\n[ok]\nnot an option\n[]\n", "f.cfg")
    assert [p.split(":")[1] for p in info.value.problems] == ["1", "3", "4"]
    assert all(p.startswith("f.cfg:") for p in info.value.problems)


NAME = st.text(
    alphabet=st.characters(codec="ascii", categories=["L", "N"], include_characters="-_."),
    min_size=1,
    max_size=12,
)
VALUE = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["C", "Z"], include_characters=" "),
    max_size=20,
).map(str.strip)


@given(st.dictionaries(NAME, st.dictionaries(NAME, VALUE, max_size=5), max_size=5))
def test_round_trip(options: dict[str, dict[str, str]]) -> None:
    """Writing options out and reading them back gives the same options."""
    assert parse_options_ini(options_to_ini(options)) == options
