"""Rules about single options, shared by the loader, the live-change path and the node.

Each option's own rule (its parse, its range) is its definition in ``_options.py``; this
module adds the rules about where an option may be set.
"""

from __future__ import annotations

import datetime

from orsim.config._options import CLUSTER, LIST_OPTION_SECTIONS, find, is_logging_section

#: The section of a cluster list (or, legacy, of an ORS application) naming its Nodes.
CLUSTER_SECTION = CLUSTER.section


def option_value_to_str(value: object) -> str:
    """A YAML/JSON scalar as the string Genesys would store.

    Raises:
        TypeError: ``value`` is a list, a mapping or another non-scalar.
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float | datetime.date):
        return str(value)
    raise TypeError(f"must be a single value, not a {type(value).__name__}")


def list_option_problem(section: str, key: str) -> str | None:
    """Why a cluster list's annex may not carry ``section/key`` (None: it may)."""
    if section == CLUSTER_SECTION:
        return None
    if is_logging_section(section):
        return f"logging section '{section}' is not allowed in a cluster list"
    option = find(section, key)
    if option is not None and not option.list_allowed:
        return f"{option.name} is not allowed in a cluster list"
    if section not in LIST_OPTION_SECTIONS:
        return (
            f"section '{section}' is not allowed in a cluster list "
            f"(allowed: {', '.join((CLUSTER_SECTION, *LIST_OPTION_SECTIONS))})"
        )
    return None


def option_value_problem(section: str, key: str, value: str) -> str | None:
    """Why ``value`` is refused for ``section/key`` (None: it is accepted)."""
    option = find(section, key)
    return None if option is None else option.problem(key, value)


def option_value_warning(section: str, key: str, value: str) -> str | None:
    """What to say about an accepted value, e.g. one Genesys would refuse (None: nothing)."""
    option = find(section, key)
    return None if option is None else option.warning(key, value)
