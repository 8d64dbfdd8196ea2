"""The option registry as rows: ``orsim config options`` prints them, the README's option
table is rendered from them (and a test keeps the two equal)."""

from __future__ import annotations

import textwrap

from orsim.config._option import Option
from orsim.config._option_rules import list_option_problem
from orsim.config._options import OPTIONS

#: The fields of each row, in order: ``orsim config options --json`` keeps these names.
ROW_FIELDS = (
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
)


def option_row(option: Option[object]) -> dict[str, str | bool | None]:
    """One option as a JSON-ready record with the ``ROW_FIELDS`` names.

    ``key`` is ``*`` for a section whose keys the user names; ``default`` is None for an
    option without one; ``cluster_list`` says whether a cluster list's annex may set it.
    """
    in_list = option.set_in == "options" and list_option_problem(option.section, option.key) is None
    return {
        "section": option.section,
        "key": option.key,
        "set_in": option.set_in,
        "applies_to": option.applies_to,
        "default": option.default,
        "unit": option.unit,
        "range": option.range,
        "dynamic": option.dynamic,
        "takes_effect": option.takes_effect,
        "cluster_list": in_list,
        "effect": option.effect,
    }


def option_rows() -> list[dict[str, str | bool | None]]:
    """Every option of the registry as a record (``option_row``), in registry order."""
    return [option_row(option) for option in OPTIONS]


def shown_name(option: Option[object]) -> str:
    """``section/key`` (``cluster/*``), or ``key (connection)`` for a connection parameter."""
    if option.set_in == "connection":
        return f"{option.key} (connection)"
    return f"{option.section}/{option.key}"


def shown_default(option: Option[object]) -> str:
    """The default with its unit; ``-`` for none, ``(empty)`` for an empty text."""
    if option.default is None:
        return "-"
    if option.default == "":
        return "(empty)"
    return f"{option.default} {option.unit}".strip()


def options_text(width: int = 80) -> str:
    """Every option as a few lines of plain text wrapped to ``width``: the name and who
    reads it, then default, range and when a change applies, then what orsim does."""
    blocks = []
    for option, row in zip(OPTIONS, option_rows(), strict=True):
        facts = (
            f"default {shown_default(option)}; range {option.range}; "
            f"dynamic: {'yes' if option.dynamic else 'no'}; "
            f"{'' if option.simulated else 'not simulated; '}"
            f"in a cluster list: {'yes' if row['cluster_list'] else 'no'}"
        )
        lines = [f"{shown_name(option)}  [{option.applies_to}]"]
        for paragraph in (facts, option.effect):
            lines += textwrap.wrap(paragraph, max(width, 40), initial_indent="    ",
                                   subsequent_indent="    ")  # fmt: skip
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def options_markdown() -> str:
    """The README's option table (GitHub markdown), one row per option."""
    lines = [
        "| option | for | default | range | dynamic | in a cluster list | what orsim does |",
        "|---|---|---|---|---|---|---|",
    ]
    for option, row in zip(OPTIONS, option_rows(), strict=True):
        cells = (
            f"`{shown_name(option)}`",
            option.applies_to,
            shown_default(option),
            option.range,
            "yes" if option.dynamic else "no",
            "yes" if row["cluster_list"] else "no",
            option.effect,
        )
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"
