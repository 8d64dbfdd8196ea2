"""Rules about single options, shared by the loader, the live-change path and the node."""

from __future__ import annotations

import datetime
import math

from orsim.config._model import LIST_OPTION_SECTIONS

#: The section of a cluster list (or, legacy, of an ORS application) naming its Nodes.
CLUSTER_SECTION = "cluster"
#: Documented range of orchestration/call-watching-timeout, in ms (reference section 4).
CALL_WATCHING_RANGE_MS = (1000, 300000)


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


def is_logging_section(section: str) -> bool:
    """``log``, ``log-extended``, ``log-filter``... (every ``log*`` section)."""
    return section.startswith("log")


def list_option_problem(section: str, key: str) -> str | None:
    """Why a cluster list's annex may not carry ``section/key`` (None: it may)."""
    if section == CLUSTER_SECTION:
        return None
    if is_logging_section(section):
        return f"logging section '{section}' is not allowed in a cluster list"
    if section == "scxml" and key == "system-id":
        return "scxml/system-id is not allowed in a cluster list"
    if section not in LIST_OPTION_SECTIONS:
        return (
            f"section '{section}' is not allowed in a cluster list "
            f"(allowed: {', '.join((CLUSTER_SECTION, *LIST_OPTION_SECTIONS))})"
        )
    return None


def option_value_problem(section: str, key: str, value: str) -> str | None:
    """Why ``value`` is not a valid value of ``section/key`` (None: it is)."""
    if (section, key) == ("orchestration", "call-watching-timeout"):
        try:
            number = int(value)
        except ValueError:
            return f"call-watching-timeout must be a whole number of milliseconds, not {value!r}"
        if number < 0:
            return f"call-watching-timeout must not be negative ({number})"
    if (section, key) == ("TServer", "router-timeout") and value.strip():
        return _number_problem(key, value, "seconds", positive=True)
    if (section, key) == ("urs", "think-time-ms") and value.strip():
        return _number_problem(key, value, "milliseconds", positive=False)
    if section == CLUSTER_SECTION and not value.strip():
        return f"Node '{key}' needs a data center name as its value"
    return None


def _number_problem(key: str, value: str, unit: str, *, positive: bool) -> str | None:
    """Why ``value`` is not a finite number of ``unit`` (> 0, or >= 0)."""
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if math.isfinite(number) and (number > 0 if positive else number >= 0):
        return None
    return f"{key} must be a number of {unit} {'> 0' if positive else '>= 0'}, not {value!r}"


def option_value_warning(section: str, key: str, value: str) -> str | None:
    """A value Genesys would refuse that orsim accepts (None: nothing to say)."""
    if (section, key) == ("orchestration", "call-watching-timeout"):
        try:
            number = int(value)
        except ValueError:
            return None
        low, high = CALL_WATCHING_RANGE_MS
        if 0 <= number < low or number > high:
            return (
                f"call-watching-timeout {number} ms is outside the documented range "
                f"{low}-{high}; a real ORS would reject it (orsim accepts it)"
            )
    return None
