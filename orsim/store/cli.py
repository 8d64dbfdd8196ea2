"""``orsim store serve PATH``: the store server that owns a SQLite session file."""

from __future__ import annotations

import argparse
from pathlib import Path

import trio

from orsim.errors import ConfigError, UsageError
from orsim.runtime import run_server

DESCRIPTION = """\
Serve a SQLite session file to the ORS nodes of a cluster over the wire.

Only this process opens the file; nodes send it each store operation with a deadline,
so a node that freezes or dies holds no database lock, and a store server that stalls
is an outage every node rides out (routing goes on, sessions are not persisted meanwhile,
status shows `store: degraded`) until it answers again. It writes PATH.server.json
(where it listens) beside the file and holds PATH.server.lock, so one server serves a
file. `orsim cluster up` starts one (app `store`); a node that finds none starts one
itself, which exits when no node has been connected for --idle-exit seconds.

exit codes: 0 stopped (signal or idle), 2 usage error, 3 the path is not a sqlite store,
1 another server already serves the file, or anything else."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "store",
        help="serve a SQLite session store to the nodes (started for you by `cluster up`)",
        description="Session store commands.",
    )
    sub = parser.add_subparsers(dest="store_command", metavar="COMMAND", required=True)
    serve = sub.add_parser(
        "serve",
        help="own a SQLite session file and serve it to the nodes",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("path", metavar="PATH", help="the database file, or a sqlite:/// URL")
    serve.add_argument(
        "--bind",
        default="127.0.0.1",
        metavar="ADDRESS",
        help="address to listen on (default 127.0.0.1)",
    )
    serve.add_argument(
        "--port",
        type=int,
        default=0,
        metavar="PORT",
        help="port to listen on (default 0: a free one)",
    )
    serve.add_argument(
        "--managed",
        action="store_true",
        help="run until stopped (the launcher's); nodes never replace it",
    )
    serve.add_argument(
        "--idle-exit",
        type=float,
        default=None,
        metavar="SECONDS",
        help="unmanaged: exit after this long with no node connected (default 30)",
    )
    serve.add_argument("--log-level", choices=("debug", "info", "warning"), default="info")
    serve.set_defaults(func=run, command_name="store serve")


def database_path(text: str) -> Path:
    """The file a ``PATH`` argument names (a plain path or a ``sqlite:///`` URL)."""
    from orsim.store._url import SqliteLocation, parse_store_url

    if "://" not in text:
        return Path(text).absolute()
    location = parse_store_url(text, Path.cwd())
    if not isinstance(location, SqliteLocation):
        raise ConfigError(
            f"persistence/store: {text!r} is not a SQLite store; only those are served"
        )
    return location.path.absolute()


def run(args: argparse.Namespace) -> int:
    from orsim.store._server import DEFAULT_IDLE_EXIT, StoreServerBusy, serve_store
    from orsim.wire import TcpNetwork

    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port} is out of range 0-65535")
    if args.idle_exit is not None and not args.idle_exit > 0:
        raise UsageError("--idle-exit must be a positive number of seconds")
    path = database_path(args.path)
    idle = None if args.managed else (args.idle_exit or DEFAULT_IDLE_EXIT)
    busy: list[StoreServerBusy] = []

    async def main(nursery: trio.Nursery) -> None:
        try:
            await serve_store(
                TcpNetwork(),
                path,
                host=args.bind,
                port=args.port,
                managed=args.managed,
                idle_exit=idle,
            )
        except StoreServerBusy as exc:
            busy.append(exc)
        nursery.cancel_scope.cancel()  # idle, or busy: stop the signal watcher too

    code = run_server(main, log_level=args.log_level)
    if busy:
        if args.managed:
            raise busy[0]
        return 0  # an unmanaged server that lost the race: the winner serves the file
    return code
