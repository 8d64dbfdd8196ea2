"""Safe object names: application names end up in file names (the launcher's log and pid
files), command lines and log lines, so they are restricted to a portable identifier."""

from __future__ import annotations

import re

#: Longest name accepted (well under any file system's 255-byte name limit).
NAME_MAX = 128
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
NAME_RULE = (
    f"a name is 1-{NAME_MAX} letters, digits, '_', '-' or '.', and does not start with '.' or '-'"
)


def name_problem(name: str) -> str | None:
    """Why ``name`` is not a safe object name (None: it is)."""
    if not name:
        return f"the name is empty; {NAME_RULE}"
    if len(name) > NAME_MAX:
        return f"the name is {len(name)} characters long; {NAME_RULE}"
    if not name.isascii() or _SAFE_NAME.fullmatch(name) is None:
        return f"not a safe name; {NAME_RULE}"
    return None


def safe_file_stem(name: str) -> str:
    """``name`` checked for use as one path component (no separator, no ``..``).

    Raises:
        ValueError: ``name`` is not a safe name.
    """
    problem = name_problem(name)
    if problem is not None:
        raise ValueError(f"{shown(name)}: {problem}")
    return name


def shown(name: str) -> str:
    """``name`` quoted for a one-line message (control characters escaped)."""
    text = name if name.isprintable() else name.encode("unicode_escape").decode("ascii")
    if len(text) > 60:
        text = text[:57] + "..."
    return f"'{text}'"
