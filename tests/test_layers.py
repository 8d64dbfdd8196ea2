"""orsim's layers, checked on every module's imports (those inside functions included).

Rules, for an import in module M of module (or name) T, both inside ``orsim``:

1. **Private stays home.** A ``_name`` (module or imported name) belongs to the package
   that holds it; only modules inside that package may import it. Every other package
   uses the public API: the package's ``__init__`` (or a public module of it).
2. **No import goes up.** Each module sits in one layer of ``LAYERS`` (lowest first): its
   package's, or its own for a top-level module. M may import T from a lower layer, or
   from its own package in its own layer; two packages that share a layer do not import
   each other. A module in no layer fails until it is placed.
3. **Commands sit above the packages.** The command modules that ``orsim.cli`` registers
   (``COMMAND_MODULES``: ``orsim/<package>/cli.py`` and ``orsim/cluster/demo.py``) turn
   argv into calls on any package, so they form the ``commands`` layer, above every
   package and below ``orsim.cli``; a package's own modules never import them, and one
   command module imports another only within its own package.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import attrs
import pytest

from orsim.cli import COMMAND_MODULES

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "orsim"

#: The command modules ``orsim.cli`` registers: their own layer (rule 3).
COMMANDS = frozenset(module for _name, module in COMMAND_MODULES)

#: Lowest first. An entry names a package (``wire``) or a top-level module (``errors``),
#: ``commands`` stands for ``COMMANDS``, and ``orsim`` for the package's ``__init__``.
LAYERS: tuple[tuple[str, ...], ...] = (
    # Utilities, standard library and third-party imports only.
    ("orsim", "errors", "logs", "limits", "_alarm", "_prestart"),
    ("runtime",),  # running a process: logging, signals
    ("wire",),  # framing, messages, the transport seam
    ("store", "config"),  # session storage; the configuration model
    ("confserv",),  # the Configuration Server, its client, a server's start-up
    ("tserver", "urs"),  # the servers an ORS node talks to
    ("node",),
    ("cluster",),  # the launcher of real processes
    ("sim",),  # every server in one process (reuses the launcher's plan and status)
    ("scenario",),  # runs on the launcher or on the simulation
    ("search", "testing", "bench", "fuzz"),
    ("commands",),
    ("cli",),  # `orsim`: the command table
    ("__main__", "forkserver"),  # run `orsim.cli.main`
)

_RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}


@attrs.frozen
class Violation:
    """One import that breaks a rule, located for the person who will fix it."""

    path: str
    line: int
    importer: str
    imported: str
    rule: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.importer} imports {self.imported}: {self.rule}"


def module_name(path: Path) -> str:
    """``orsim/wire/_codec.py`` -> ``orsim.wire._codec``; a package is its ``__init__``."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def unit_of(module: str) -> str:
    """The package (or top-level module) that owns ``module``: ``orsim.wire._codec`` -> wire."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def layer_of(module: str) -> str:
    """The ``LAYERS`` entry ``module`` sits in."""
    return "commands" if module in COMMANDS else unit_of(module)


def private_part(dotted: str) -> tuple[str, str] | None:
    """(owning package, private name) for the first ``_private`` part of ``dotted``.

    ``orsim.store._resp.NEED_DATA`` -> (``orsim.store``, ``orsim.store._resp``); None if
    every part is public (dunders such as ``__version__`` are public).
    """
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_") and not part.startswith("__"):
            return ".".join(parts[:i]), ".".join(parts[: i + 1])
    return None


def imports_of(module: str, tree: ast.AST, is_package: bool) -> list[tuple[int, str, str]]:
    """Every ``orsim`` import in ``tree``: (line, module imported from, full dotted name).

    For ``from M import n`` the dotted name is ``M.n`` (a submodule or a name of M).
    """
    found: list[tuple[int, str, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            found += [(node.lineno, source, f"{source}.{alias.name}") for alias in node.names]
    return sorted(
        (line, source, dotted)
        for line, source, dotted in found
        if source == "orsim" or source.startswith("orsim.")
    )


def check_module(
    module: str, source: str, path: str, *, is_package: bool = False
) -> list[Violation]:
    """The violations of the rules above in ``source``, the text of module ``module``."""
    violations: list[Violation] = []
    rank = _RANK.get(layer_of(module))
    if rank is None:
        return [
            Violation(
                path,
                1,
                module,
                "-",
                f"rule 2: {layer_of(module)!r} is in no layer: add it to LAYERS",
            )
        ]
    for line, imported, dotted in imports_of(module, ast.parse(source, path), is_package):
        private = private_part(dotted)
        if private is not None:
            owner, name = private
            if module != owner and not module.startswith(owner + "."):
                violations.append(
                    Violation(
                        path,
                        line,
                        module,
                        name,
                        f"rule 1, private stays home: {name} is private to {owner}; "
                        f"import from {owner}",
                    )
                )
        # ``from orsim.cluster import cli`` imports the command module itself.
        target = dotted if dotted in COMMANDS else imported
        target_layer = layer_of(target)
        target_rank = _RANK.get(target_layer)
        if target_rank is None:
            violations.append(
                Violation(path, line, module, target, f"rule 2: {target_layer!r} is in no layer")
            )
        elif target_rank > rank:
            violations.append(
                Violation(
                    path,
                    line,
                    module,
                    target,
                    f"rule 2, no import goes up: layer {target_layer!r} is above "
                    f"layer {layer_of(module)!r}",
                )
            )
        elif target_rank == rank and unit_of(target) != unit_of(module):
            violations.append(
                Violation(
                    path,
                    line,
                    module,
                    target,
                    f"rule 2, no import goes sideways: {unit_of(module)!r} and "
                    f"{unit_of(target)!r} share layer {target_layer!r}",
                )
            )
    # ``from orsim.cli import a, b`` is one violation, not two.
    return list(dict.fromkeys(violations))


def all_violations() -> list[Violation]:
    """The violations in every module of the ``orsim`` package."""
    found: list[Violation] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        found += check_module(
            module_name(path),
            path.read_text(encoding="utf-8"),
            str(path.relative_to(ROOT)),
            is_package=path.name == "__init__.py",
        )
    return found


def test_imports_respect_the_layers() -> None:
    """No module imports another package's private module or a higher layer."""
    violations = all_violations()
    assert not violations, "\n".join(map(str, violations))


PACKAGES = sorted(path.parent.name for path in PACKAGE.glob("*/__init__.py"))


@pytest.mark.parametrize("name", PACKAGES)
def test_each_package_lists_its_public_api(name: str) -> None:
    """A package's ``__all__`` is its public API: every name in it resolves (those
    ``orsim.testing`` takes from the simulation on first use included)."""
    package = importlib.import_module(f"orsim.{name}")
    public = getattr(package, "__all__", None)
    assert public is not None, f"orsim.{name} has no __all__"
    missing = [n for n in public if getattr(package, n, None) is None]
    assert not missing, f"orsim.{name}.__all__ names what it does not have: {missing}"


def test_checker_flags_synthetic_bad_imports() -> None:
    """A private reach-in, an upward, a sideways and a relative import are each caught."""
    source = (
        "from orsim.node._core import NodeCore\n"  # private and upward
        "def later():\n"
        "    import orsim.sim\n"  # upward, inside a function
        "from orsim.store import Session\n"  # sideways: store and config share a layer
        "from ..node import assign\n"  # relative, upward
        "from orsim.errors import ConfigError\n"  # fine
        "from orsim.wire import Connection\n"  # fine
    )
    found = check_module("orsim.config._bad", source, "orsim/config/_bad.py")
    assert [(v.line, _rule(v)) for v in found] == [
        (1, "rule 1, private stays home"),
        (1, "rule 2, no import goes up"),
        (3, "rule 2, no import goes up"),
        (4, "rule 2, no import goes sideways"),
        (5, "rule 2, no import goes up"),
    ]
    assert str(found[0]) == (
        "orsim/config/_bad.py:1: orsim.config._bad imports orsim.node._core: rule 1, private "
        "stays home: orsim.node._core is private to orsim.node; import from orsim.node"
    )
    assert str(found[1]).endswith("layer 'node' is above layer 'config'")


def test_a_module_in_no_layer_fails() -> None:
    """A new package fails the check until it is placed in LAYERS."""
    [found] = check_module("orsim.newpkg._x", "import trio\n", "orsim/newpkg/_x.py")
    assert "'newpkg' is in no layer" in found.rule


def test_commands_sit_above_packages() -> None:
    """A command imports any package and its own package's commands; a package module
    imports no command, and one package's command no other's."""
    assert not check_module("orsim.urs.cli", "from orsim.confserv import ConfServClient\n", "u")
    assert not check_module("orsim.cluster.demo", "from orsim.cluster.cli import x\n", "d")
    upward = check_module("orsim.cluster._plan", "from orsim.cluster.cli import run\n", "p")
    assert [_rule(v) for v in upward] == ["rule 2, no import goes up"]
    sideways = check_module("orsim.urs.cli", "from orsim.tserver.cli import x\n", "u")
    assert [_rule(v) for v in sideways] == ["rule 2, no import goes sideways"]


def _rule(violation: Violation) -> str:
    return violation.rule.split(":")[0]
