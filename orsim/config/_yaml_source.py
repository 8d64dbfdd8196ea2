"""Reading YAML while remembering where each value came from, within limits.

PyYAML's composer gives a node tree with marks; we build plain Python values from it and
keep, beside them, the line of every mapping key and sequence item, addressed by its path
(``("applications", "ORS_1", "port")``). Rules can then name ``file:line`` in messages.

A hostile file must fail fast and in one line, not exhaust memory or the stack: the text
is capped in size, nesting in depth (PyYAML composes recursively), and aliases in how
much they may expand the document (a "billion laughs" is a few lines of anchors).

Where PyYAML was built with libyaml, libyaml scans and parses (a 330-line database: 13 ms
in Python, 1.5 ms so) and the depth-limited composer here still builds the nodes; every
launch reads its database three times, twice on the way to the first server ready. A
document libyaml refuses is read again by PyYAML's own parser, so errors (and what is
accepted) stay PyYAML's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import attrs
import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor

from orsim.errors import ConfigError

#: Path into the document: mapping keys and sequence indexes.
Path = tuple[str | int, ...]
#: Largest file read (bytes). Real databases and scenarios are a few kilobytes.
MAX_BYTES = 16 * 1024 * 1024
#: Deepest nesting of mappings and sequences, aliases expanded (real files: under 10).
MAX_DEPTH = 100
#: Most nodes that aliases may add to the document once expanded.
MAX_ALIAS_NODES = 100_000
_MERGE_TAG = "tag:yaml.org,2002:merge"


@attrs.frozen
class YamlDocument:
    """A parsed YAML file: its data and the line (1-based) of every key and item."""

    source: str
    data: object
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


class YamlLimitError(yaml.MarkedYAMLError):
    """The text breaks one of the limits above (``problem`` says which)."""


def read_yaml_text(source: str) -> str:
    """The text of file ``source``, at most MAX_BYTES (a device or FIFO is read the same).

    Raises:
        ConfigError: ``source`` cannot be read, is not UTF-8, or is too large.
    """
    try:
        with open(source, "rb") as handle:
            data = handle.read(MAX_BYTES + 1)
        if len(data) > MAX_BYTES:
            raise ConfigError(f"{source}: larger than {MAX_BYTES // (1024 * 1024)} MiB")
        return data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: cannot read: {exc}") from None


def load_yaml(text: str, source: str) -> object:
    """The plain data of one YAML document, within the limits; a one-line ConfigError
    naming ``source`` (and the line) for invalid YAML or a broken limit."""
    try:
        document = parse_yaml(text, source)
    except yaml.YAMLError as exc:
        raise ConfigError(yaml_error_message(exc, source)) from None
    if document.problems:
        raise ConfigError(document.problems[0], list(document.problems))
    return document.data


def safe_load(text: str) -> object:
    """``yaml.safe_load``, by libyaml where present (for a file already read by
    ``load_yaml``: same data, ~8x faster)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(text, Loader=loader)


def safe_dump(data: object) -> str:
    """``yaml.safe_dump(data, sort_keys=False)``, by libyaml where present."""
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return yaml.dump(data, Dumper=dumper, sort_keys=False)


def yaml_error_message(exc: yaml.YAMLError, source: str) -> str:
    """``file:line: ...`` for an error of ``parse_yaml``."""
    mark = getattr(exc, "problem_mark", None)
    where = f"{source}:{mark.line + 1}" if mark is not None else source
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if isinstance(exc, YamlLimitError):
        return f"{where}: {problem}"
    return f"{where}: not valid YAML: {problem}"


def parse_yaml(text: str, source: str) -> YamlDocument:
    """Parse one YAML document.

    Raises:
        yaml.YAMLError: the text is not valid YAML (its ``problem_mark`` locates it), or
            ``YamlLimitError``: it is too large, too deep or expands too much.
    """
    if len(text) > MAX_BYTES:
        raise YamlLimitError(problem=f"larger than {MAX_BYTES // (1024 * 1024)} MiB")
    try:
        root = _compose(_FAST_LOADER, text)
    except YamlLimitError:
        raise
    except yaml.YAMLError:
        root = _compose(_LimitedLoader, text)  # PyYAML's own error (and verdict)
    if root is None:
        return YamlDocument(source, None, {(): 1})
    _check_expansion(root)
    builder = _Builder(source)
    data = builder.value(root, ())
    builder.lines.setdefault((), root.start_mark.line + 1)
    return YamlDocument(source, data, builder.lines, tuple(builder.problems))


class _Composing(Protocol):
    def get_single_node(self) -> yaml.Node | None: ...

    def dispose(self) -> None: ...


def _compose(loader: Callable[[str], _Composing], text: str) -> yaml.Node | None:
    composing = loader(text)
    try:
        return composing.get_single_node()
    finally:
        composing.dispose()


class _LimitedComposer(Composer):
    """PyYAML's (recursive) composer, refusing to nest beyond MAX_DEPTH."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise YamlLimitError(
                    problem=f"nested more than {MAX_DEPTH} levels deep",
                    problem_mark=self.peek_event().start_mark,  # type: ignore[attr-defined]
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _LimitedLoader(_LimitedComposer, yaml.SafeLoader):
    """PyYAML's SafeLoader, all in Python, with the limited composer."""


_FAST_LOADER: Callable[[str], _Composing] = _LimitedLoader
if yaml.__with_libyaml__:

    class _FastLimitedLoader(_LimitedComposer, yaml.CSafeLoader):
        """libyaml's scanner and parser under the limited composer: listed first, it
        composes instead of libyaml's own, which has no depth limit."""

        def __init__(self, stream: str) -> None:
            yaml.CSafeLoader.__init__(self, stream)
            Composer.__init__(self)

    _FAST_LOADER = _FastLimitedLoader


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a node graph whose aliases nest it too deep, loop, or expand it too much.

    One walk in document order, memoized per node: an alias always follows its anchor,
    so its subtree is known when met and the walk never goes deeper than the text does.
    """
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded nodes, depth)
    open_nodes: set[int] = set()

    def walk(node: yaml.Node) -> tuple[int, int]:
        known = sizes.get(id(node))
        if known is not None:
            return known
        if id(node) in open_nodes:
            raise YamlLimitError(problem="an alias refers to itself", problem_mark=node.start_mark)
        open_nodes.add(id(node))
        size, depth = 1, 1
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        for child in children:
            child_size, child_depth = walk(child)
            size += child_size
            depth = max(depth, child_depth + 1)
            if depth > MAX_DEPTH:
                raise YamlLimitError(
                    problem=f"aliases nest the document more than {MAX_DEPTH} levels deep",
                    problem_mark=child.start_mark,
                )
            # More expanded nodes than every distinct node met so far plus the budget:
            # aliases added more than the budget.
            if size > len(sizes) + len(open_nodes) + MAX_ALIAS_NODES:
                raise YamlLimitError(
                    problem=f"aliases expand the document by more than {MAX_ALIAS_NODES:,} nodes",
                    problem_mark=child.start_mark,
                )
        open_nodes.discard(id(node))
        sizes[id(node)] = (size, depth)
        return size, depth

    walk(root)


class _Builder:
    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: dict[Path, int] = {}
        self.problems: list[str] = []
        self.constructor = SafeConstructor()

    def value(self, node: yaml.Node, path: Path) -> object:
        if isinstance(node, yaml.MappingNode):
            return self.mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            items = []
            for index, item in enumerate(node.value):
                self.lines[(*path, index)] = item.start_mark.line + 1
                items.append(self.value(item, (*path, index)))
            return items
        try:
            return self.constructor.construct_object(node, deep=True)
        except ValueError as exc:  # e.g. an integer of more digits than Python converts
            self.problems.append(f"{self.source}:{node.start_mark.line + 1}: {exc}")
            return node.value

    def mapping(self, node: yaml.MappingNode, path: Path) -> dict[str, object]:
        """The mapping's own keys (each once) over those merged in with ``<<``."""
        result: dict[str, object] = {}
        # Merges first, so the own keys built after them win, and so do their lines.
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                self.merge(result, value_node, path)
        own: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            line = key_node.start_mark.line + 1
            key = self.constructor.construct_object(key_node, deep=True)
            if isinstance(key, bool) or not isinstance(key, str | int | float):
                where = "/".join(str(p) for p in path) or "top level"
                self.problems.append(
                    f"{self.source}:{line}: {where}: keys must be plain names, not {key!r}"
                )
                continue
            name = str(key)  # `5000:` is a DN name, not a number
            if name in own:
                where = "/".join(str(p) for p in (*path, name))
                self.problems.append(
                    f"{self.source}:{line}: {where}: duplicate key (first at line {own[name]})"
                )
                continue
            own[name] = line
            self.lines[(*path, name)] = line
            result[name] = self.value(value_node, (*path, name))
        return result

    def merge(self, result: dict[str, object], value: yaml.Node, path: Path) -> None:
        """Merge key ``<<``: keys of a mapping, or of a list of mappings (the first that
        has a key wins), not already in ``result``; the mapping's own keys win over all."""
        sources = value.value if isinstance(value, yaml.SequenceNode) else [value]
        for source in sources:
            if not isinstance(source, yaml.MappingNode):
                where = "/".join(str(p) for p in path) or "top level"
                self.problems.append(
                    f"{self.source}:{source.start_mark.line + 1}: {where}: '<<' merges a "
                    "mapping or a list of mappings"
                )
                continue
            for name, item in self.mapping(source, path).items():
                result.setdefault(name, item)
