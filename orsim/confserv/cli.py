"""`orsim confserv CONFIG.yaml`: run the mock Configuration Server."""

from __future__ import annotations

import argparse
import functools
import os

import trio

from orsim.config import ConfigDatabase, lint_database
from orsim.errors import ConfigError
from orsim.logs import get_logger
from orsim.runtime import run_server

DEFAULT_PORT = 2020
DEFAULT_STATE_DIR = ".orsim-confserv"

DESCRIPTION = """\
Serve a configuration database (YAML) as a Genesys-style Configuration Server.

The database is loaded and checked first (the same checks as `orsim config lint`); if it
breaks a rule, the command prints one line and exits 3 without listening. Otherwise it
listens on --bind:--port and serves every orsim process started with -host/-port naming
it. Live changes (`orsim config set/delete/import-options`) are written to the state
directory before they are acknowledged and re-applied on top of the YAML at the next
start, so a crash loses none of them. A damaged state file is refused (one line naming
it, exit 1); --reset-state discards the live changes kept there and starts from the YAML
alone. Logs are JSON lines on stderr; nothing else is printed. SIGTERM/SIGINT stop it.

exit codes: 0 stopped by a signal, 2 usage error, 3 configuration error,
4 the port cannot be bound, 1 anything else (a damaged state file)."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "confserv",
        help="run the mock Configuration Server over a YAML database",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("config", metavar="CONFIG.yaml", help="the configuration database")
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        metavar="PORT",
        help=f"port to listen on (default {DEFAULT_PORT}; 0 picks a free one)",
    )
    parser.add_argument(
        "--bind",
        default="127.0.0.1",
        metavar="ADDRESS",
        help="address to listen on (default 127.0.0.1, loopback only)",
    )
    parser.add_argument(
        "--state",
        default=DEFAULT_STATE_DIR,
        metavar="DIR",
        help=f"directory keeping live changes across restarts (default ./{DEFAULT_STATE_DIR})",
    )
    parser.add_argument(
        "--reset-state",
        action="store_true",
        help="discard the live changes kept in --state and start from the YAML alone",
    )
    parser.add_argument(
        "--log-level",
        choices=("debug", "info", "warning"),
        default="info",
        help="log verbosity (default info)",
    )
    parser.set_defaults(func=run)


def load_for_serving(path: str) -> tuple[ConfigDatabase, tuple[str, ...]]:
    """Load and check the database; one-line ConfigError if it breaks any rule."""
    result = lint_database(path)
    if result.database is None:
        first = result.problems[0]
        if len(result.problems) == 1:
            raise ConfigError(first)
        raise ConfigError(
            f"{len(result.problems)} problems, first: {first} "
            f"(`orsim config lint {path}` lists them all)"
        )
    return result.database, result.warnings


def run(args: argparse.Namespace) -> int:
    from orsim.confserv._server import serve_confserv
    from orsim.limits import raise_fd_limit
    from orsim.wire import TcpNetwork

    if not 0 <= args.port <= 65535:
        from orsim.errors import UsageError

        raise UsageError(f"--port {args.port} is out of range 0-65535")
    db, warnings = load_for_serving(args.config)
    state = os.path.abspath(args.state)

    async def main(nursery: trio.Nursery) -> None:
        log = get_logger(app="confserv")
        if args.reset_state:
            from orsim.confserv._journal import Journal

            log.warning("state_reset", state=state, found=Journal.reset(state))
        for warning in warnings:
            log.warning("config_warning", message=warning)
        log.info("fd_limit", soft=raise_fd_limit())
        await nursery.start(
            functools.partial(serve_confserv, TcpNetwork(), db, args.bind, args.port, state)
        )
        log.info("ready", source=db.source, state=state)
        # Stay inside run_until_signal's main: its signal receiver lives only that long.
        await trio.sleep_forever()

    return run_server(main, log_level=args.log_level)
