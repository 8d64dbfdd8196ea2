"""Reading YAML while remembering where each value came from.

PyYAML's composer gives a node tree with marks; we build plain Python values from it and
keep, beside them, the line of every mapping key and sequence item, addressed by its path
(``("applications", "ORS_1", "port")``). Rules can then name ``file:line`` in messages.
"""

from __future__ import annotations

from typing import Any

import attrs
import yaml
from yaml.constructor import ConstructorError, SafeConstructor

#: A path into the document: mapping keys and sequence indexes.
Path = tuple[str | int, ...]


@attrs.frozen
class YamlDocument:
    """A parsed YAML file: its data and the line (1-based) of every key and item."""

    source: str
    data: Any
    lines: dict[Path, int] = attrs.field(eq=False)
    #: Problems met while reading (duplicate keys, non-string keys), already located.
    problems: tuple[str, ...] = ()

    def line(self, path: Path) -> int | None:
        """The line of ``path``, or of its nearest located ancestor."""
        for end in range(len(path), -1, -1):
            found = self.lines.get(path[:end])
            if found is not None:
                return found
        return None

    def where(self, path: Path) -> str:
        """``file:line`` for ``path`` (just ``file`` when nothing is located)."""
        line = self.line(path)
        return f"{self.source}:{line}" if line is not None else self.source


def parse_yaml(text: str, source: str) -> YamlDocument:
    """Parse one YAML document.

    Raises:
        yaml.YAMLError: the text is not valid YAML (its ``problem_mark`` locates it).
    """
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if root is None:
        return YamlDocument(source, None, {(): 1})
    builder = _Builder(source)
    data = builder.value(root, ())
    builder.lines.setdefault((), root.start_mark.line + 1)
    return YamlDocument(source, data, builder.lines, tuple(builder.problems))


class _Builder:
    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: dict[Path, int] = {}
        self.problems: list[str] = []
        self.constructor = SafeConstructor()

    def value(self, node: yaml.Node, path: Path) -> Any:
        if isinstance(node, yaml.MappingNode):
            return self.mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            items = []
            for index, item in enumerate(node.value):
                self.lines[(*path, index)] = item.start_mark.line + 1
                items.append(self.value(item, (*path, index)))
            return items
        return self.constructor.construct_object(node, deep=True)

    def mapping(self, node: yaml.MappingNode, path: Path) -> dict[str, Any]:
        try:
            self.constructor.flatten_mapping(node)  # resolves YAML merge keys (<<)
        except ConstructorError as exc:
            self.problems.append(f"{self.source}:{node.start_mark.line + 1}: {exc.problem}")
            return {}
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            key = self.constructor.construct_object(key_node, deep=True)
            if isinstance(key, bool) or not isinstance(key, str | int | float):
                where = "/".join(str(p) for p in path) or "top level"
                self.problems.append(
                    f"{self.source}:{line}: {where}: keys must be plain names, not {key!r}"
                )
                continue
            name = str(key)  # `5000:` is a DN name, not a number
            if name in result:
                where = "/".join(str(p) for p in (*path, name))
                self.problems.append(
                    f"{self.source}:{line}: {where}: duplicate key (first at line "
                    f"{self.lines[(*path, name)]})"
                )
                continue
            self.lines[(*path, name)] = line
            result[name] = self.value(value_node, (*path, name))
        return result
