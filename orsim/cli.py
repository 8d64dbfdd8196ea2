"""The one entry point: ``orsim <command> ...``.

Each command lives in its own package's ``cli`` module, which provides
``register(subparsers)``; the parser it adds sets ``func`` to a callable taking the parsed
arguments and returning an exit code. Expected failures are ``OrsimError``s, printed as one
line (``orsim <command>: <kind>: <message>``) with their exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import sys
from collections.abc import Callable, Sequence

from orsim import __version__
from orsim._prestart import prestart
from orsim.errors import (
    EXIT_OTHER,
    ConfigError,
    OrsimError,
    UnreachableError,
    UsageError,
)

#: (command, module providing ``register``), in the order ``--help`` lists them.
COMMAND_MODULES = (
    ("confserv", "orsim.confserv.cli"),
    ("tserver", "orsim.tserver.cli"),
    ("urs", "orsim.urs.cli"),
    ("node", "orsim.node.cli"),
    ("store", "orsim.store.cli"),
    ("config", "orsim.config.cli"),
    ("cluster", "orsim.cluster.cli"),
    ("scenario", "orsim.scenario.cli"),
    ("search", "orsim.search.cli"),
    ("demo", "orsim.cluster.demo"),
)

Command = Callable[[argparse.Namespace], int]

#: Commands that launch a cluster: they start a fork server before their own imports.
LAUNCHING = (("cluster", "up"), ("demo",), ("scenario", "run"))


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``orsim`` parser; ``only`` registers just that command (imports stay small).

    A server process imports only its own command's modules: start-up time is mostly
    imports, and a cluster starts many processes at once.
    """
    parser = argparse.ArgumentParser(
        prog="orsim",
        description=(
            "A simulated Genesys Orchestration Server cluster: Configuration Server, "
            "SIP Server/T-Server, URS and ORS nodes as real processes, with failover "
            "scenarios."
        ),
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"orsim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in COMMAND_MODULES:
        if only is None or name == only:
            importlib.import_module(module).register(sub)
    return parser


def _launches(argv: Sequence[str]) -> bool:
    if "-h" in argv or "--help" in argv:
        return False
    return any(tuple(argv[: len(words)]) == words for words in LAUNCHING)


def _command_in(argv: Sequence[str]) -> str | None:
    """The command ``argv`` runs, when it names one before any option (else None)."""
    names = {name for name, _module in COMMAND_MODULES}
    return argv[0] if argv and argv[0] in names else None


def error_line(command: str, exc: OrsimError) -> str:
    """The one line a user sees for an expected failure."""
    kind = "error"
    for cls, name in (
        (ConfigError, "configuration error"),
        (UnreachableError, "unreachable"),
        (UsageError, "usage error"),
    ):
        if isinstance(exc, cls):
            kind = name
            break
    return f"orsim {command}: {kind}: {exc}"


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    # Every orsim process (servers, the proxy, the launcher and what it forks) may hold
    # many links; the limit the launcher raises, its fork server and children inherit.
    from orsim.limits import raise_fd_limit

    raise_fd_limit()
    if _launches(args_list):
        prestart()
    parser = build_parser(_command_in(args_list))
    args = parser.parse_args(args_list)
    func: Command | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    command = getattr(args, "command_name", None) or args.command
    try:
        return func(args)
    except OrsimError as exc:
        print(error_line(command, exc), file=sys.stderr)
        if isinstance(exc, ConfigError) and len(exc.problems) > 1:
            for problem in exc.problems:
                print(f"  {problem}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BaseExceptionGroup as group:
        matched, _rest = group.split(OrsimError)
        if matched is not None:
            first = _first_leaf(matched)
            print(error_line(command, first), file=sys.stderr)
            return first.exit_code
        raise
    return EXIT_OTHER


def _first_leaf(group: BaseExceptionGroup[OrsimError]) -> OrsimError:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    assert isinstance(exc, OrsimError)
    return exc


def program() -> int:
    """The ``orsim`` program (console script, ``python -m orsim``): ``main``, then exit.

    Only for a process that ends when ``main`` returns (tests call ``main`` itself).
    """
    code = main()
    # The process ends next. Its last collections would walk every object of the ~500
    # modules a launcher imports: ~50 ms after ``cluster up`` has finished (measured on
    # 2 cores). Frozen objects are skipped; refcounting still frees them, and the
    # standard streams are still flushed.
    gc.freeze()
    return code


if __name__ == "__main__":
    sys.exit(program())
