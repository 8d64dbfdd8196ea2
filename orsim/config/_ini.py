"""Genesys exported option files (INI): ``[section]`` then ``key=value`` lines.

Configuration Manager exports an object's options this way. Comments start with ``;`` or
``#``; blank lines are ignored; values keep inner spaces and ``=`` signs (only the first
``=`` splits); a later duplicate key wins, as on a re-import.
"""

from __future__ import annotations

from orsim.config._model import Options
from orsim.errors import ConfigError


def parse_options_ini(text: str, source: str = "<options>") -> Options:
    """Parse an exported options file.

    Raises:
        ConfigError: a line is neither a section header, an option, a comment nor blank;
            every bad line is listed in ``problems``.
    """
    options: Options = {}
    section: str | None = None
    problems: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in ";#":
            continue
        if line.startswith("["):
            if not line.endswith("]") or not line[1:-1].strip():
                problems.append(f"{source}:{number}: bad section header {line!r}")
                continue
            section = line[1:-1].strip()
            options.setdefault(section, {})
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            problems.append(f"{source}:{number}: expected key=value, got {line!r}")
            continue
        if section is None:
            problems.append(f"{source}:{number}: option {key.strip()!r} comes before any [section]")
            continue
        options[section][key.strip()] = value.strip()
    if problems:
        message = problems[0] if len(problems) == 1 else f"{source}: {len(problems)} bad lines"
        raise ConfigError(message, problems)
    return options


def options_to_ini(options: Options) -> str:
    """Write ``options`` in the exported form (inverse of ``parse_options_ini``)."""
    blocks = []
    for section, keys in options.items():
        lines = [f"[{section}]"] + [f"{key}={value}" for key, value in keys.items()]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + ("\n" if blocks else "")
