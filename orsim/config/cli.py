"""`orsim config`: lint a database; show, set, delete and import options on a running
Configuration Server."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import trio

from orsim.config._effective import effective_options
from orsim.config._ini import parse_options_ini
from orsim.config._loader import lint_database
from orsim.config._option_table import option_rows, options_markdown, options_text
from orsim.confserv import add_genesys_args
from orsim.errors import ConfigError

if TYPE_CHECKING:
    from orsim.config._effective import EffectiveOptions
    from orsim.confserv.client import ConfServClient

T = TypeVar("T")

TOOL_APP = "orsim-config"
TOOL_TYPE = "ConfigTool"

DESCRIPTION = """\
Work with a configuration database: check a YAML file (lint), list the options orsim
understands (options), or read and change the options served by a running Configuration
Server (-host/-port name it, as for every orsim server).

exit codes: 0 success, 2 usage error, 3 configuration error (a broken rule, an unknown
object or option, a refused value), 4 the Configuration Server cannot be reached."""

LINT_HELP = """\
Check CONFIG.yaml against every rule of the configuration database without starting
anything: object references (hosts, backups, connections), application types and ports,
cluster lists (tenant, members, allowed annex sections; no log* sections nor
scxml/system-id), exactly one RoutingServer per ORS application, and the same T-Server and
the same persistence/store across the Nodes of each cluster (list or legacy `cluster`
section); and every option orsim knows against its range (`orsim config options`). Every
problem is printed, one per line, as FILE:LINE: OBJECT: KEY: PROBLEM. Warnings (e.g.
call-watching-timeout below Genesys's 1000 ms minimum, an unknown log/verbose value) are
printed but do not fail.

exit codes: 0 no problems, 3 at least one problem."""

SHOW_HELP = """\
Print the effective options of application APP as the Configuration Server at -host/-port
serves them: its own options, and with -cluster C those of the cluster list C on top (the
list wins where both set an option; log* sections and scxml/system-id are never taken
from a list). Each option shows where it came from (application or transaction).

--json prints {"app": A, "cluster": C or null, "options": {SECTION: {KEY: {"value": V,
"from": "application"|"transaction"}}}}."""

SET_HELP = """\
Set option SECTION/KEY of OBJECT (an application or a cluster list transaction) to VALUE
on a running Configuration Server. The change is durable when this command returns and
is pushed to every process that read OBJECT. A value starting with '-' needs `--` before
the positional arguments."""

DELETE_HELP = """\
Delete option SECTION/KEY of OBJECT on a running Configuration Server (durable when this
returns; pushed to every reader). Exit 3 if OBJECT or the option does not exist."""

IMPORT_HELP = """\
Load the options of FILE.cfg, a Genesys-style exported options file ([section] headers,
key=value lines, ';' or '#' comments), into OBJECT on a running Configuration Server.
All options are set at once, or none if one is refused; they are kept like any live
change."""


OPTIONS_HELP = """\
Print every option orsim understands, from its one definition: section and key (`*`: the
keys are names you choose, as the Nodes of `cluster`), which application reads it, its
default, the values it accepts, whether a running process applies a change at once
(dynamic) or only after a restart, whether a cluster list may set it, and what orsim does
with it. Options orsim does not list are kept and served but change nothing.

--json prints a list of objects with the fields section, key, set_in ("options" or
"connection": an entry of an application's connections list), applies_to, default (null:
none), unit, range, dynamic (true/false), takes_effect, cluster_list (true/false) and
effect. --markdown prints the table the README carries."""


def _add_server_args(parser: argparse.ArgumentParser) -> None:
    add_genesys_args(parser, with_app=False)
    parser.add_argument(
        "--run-dir",
        default=".orsim/run",
        help="the cluster's run directory, whose key (cluster.key) changes need "
        "(default: .orsim/run; $ORSIM_CLUSTER_KEY if it has none)",
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "config",
        help="lint a database; list, show, set, delete or import options",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.set_defaults(func=lambda _args: _usage(parser))
    sub = parser.add_subparsers(dest="config_command", metavar="SUBCOMMAND")

    def add(name: str, help_text: str, description: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=help_text,
            description=description,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            allow_abbrev=False,
        )

    lint = add("lint", "check a YAML database against every rule", LINT_HELP)
    lint.add_argument("config", metavar="CONFIG.yaml")
    lint.set_defaults(func=run_lint)

    show = add("show", "print an application's effective options", SHOW_HELP)
    _add_server_args(show)
    show.add_argument("-app", "--app", required=True, metavar="APP", help="the application")
    show.add_argument("-cluster", "--cluster", metavar="C", help="the cluster list to apply")
    show.add_argument("--json", action="store_true", help="print the SPEC JSON form")
    show.set_defaults(func=run_show)

    set_ = add("set", "set an option on a running Configuration Server", SET_HELP)
    _add_server_args(set_)
    for name in ("OBJECT", "SECTION", "KEY", "VALUE"):
        set_.add_argument(name.lower(), metavar=name)
    set_.set_defaults(func=run_set)

    delete = add("delete", "delete an option on a running Configuration Server", DELETE_HELP)
    _add_server_args(delete)
    for name in ("OBJECT", "SECTION", "KEY"):
        delete.add_argument(name.lower(), metavar=name)
    delete.set_defaults(func=run_delete)

    opts = add("options", "list every option orsim understands", OPTIONS_HELP)
    form = opts.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="print a JSON list of options")
    form.add_argument("--markdown", action="store_true", help="print the README's table")
    opts.set_defaults(func=run_options)

    imp = add("import-options", "load a Genesys options file (INI) into an object", IMPORT_HELP)
    _add_server_args(imp)
    imp.add_argument("object", metavar="OBJECT")
    imp.add_argument("file", metavar="FILE.cfg")
    imp.set_defaults(func=run_import)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _addresses(args: argparse.Namespace) -> list[tuple[str, int]]:
    addresses = [(args.host, args.port)]
    if args.backup_host and args.backup_port:
        addresses.append((args.backup_host, args.backup_port))
    return addresses


def _with_client(args: argparse.Namespace, action: Callable[[ConfServClient], Awaitable[T]]) -> T:
    """Connect to the Configuration Server, run ``action(client)``, disconnect."""
    from orsim.confserv.client import ConfServClient
    from orsim.logs import configure_logging
    from orsim.wire import TcpNetwork, read_cluster_key

    configure_logging(level="warning")
    network = TcpNetwork(key=read_cluster_key(Path(args.run_dir)) or None)

    async def main() -> T:
        client = await ConfServClient.connect(
            network,
            _addresses(args),
            app=TOOL_APP,
            app_type=TOOL_TYPE,
            timeout=args.connect_timeout,
        )
        async with client:
            return await action(client)

    return trio.run(main)


def run_lint(args: argparse.Namespace) -> int:
    result = lint_database(args.config)
    for problem in result.problems:
        print(problem)
    for warning in result.warnings:
        print(f"warning: {warning}")
    if result.problems:
        count = len(result.problems)
        raise ConfigError(f"{args.config}: {count} problem{'s' if count > 1 else ''} found")
    db = result.database
    assert db is not None
    print(
        f"ok: {args.config}: {len(db.hosts)} hosts, {len(db.applications)} applications, "
        f"{len(db.transactions)} transactions; {len(result.warnings)} warnings"
    )
    return 0


def run_show(args: argparse.Namespace) -> int:
    async def fetch(client: ConfServClient) -> EffectiveOptions:
        app = await client.get_application(args.app)
        cluster = await client.get_transaction(args.cluster) if args.cluster else None
        return effective_options(app, cluster)

    effective = _with_client(args, fetch)
    for warning in effective.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps(effective.to_json(), indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    title = f"Effective options of {effective.app}"
    title += f" (cluster {effective.cluster})" if effective.cluster else " (no cluster)"
    table = Table(title=title)
    for column in ("Section", "Option", "Value", "From"):
        table.add_column(column)
    for section, keys in sorted(effective.values.items()):
        for key, value in sorted(keys.items()):
            table.add_row(section, key, value.value, value.origin)
    Console().print(table)
    return 0


def run_options(args: argparse.Namespace) -> int:
    if args.json:
        print(json.dumps(option_rows(), indent=2))
        return 0
    if args.markdown:
        print(options_markdown(), end="")
        return 0
    print(options_text(shutil.get_terminal_size().columns), end="")
    return 0


def run_set(args: argparse.Namespace) -> int:
    async def change(client: ConfServClient) -> str:
        return await client.set_option(args.object, args.section, args.key, args.value)

    kind = _with_client(args, change)
    print(f"set {args.section}/{args.key}={args.value} on {kind} '{args.object}'")
    return 0


def run_delete(args: argparse.Namespace) -> int:
    async def change(client: ConfServClient) -> str:
        return await client.delete_option(args.object, args.section, args.key)

    kind = _with_client(args, change)
    print(f"deleted {args.section}/{args.key} from {kind} '{args.object}'")
    return 0


def run_import(args: argparse.Namespace) -> int:
    try:
        with open(args.file, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{args.file}: cannot read: {exc}") from None
    options = parse_options_ini(text, args.file)

    async def change(client: ConfServClient) -> int:
        return await client.import_options(args.object, options)

    count = _with_client(args, change)
    print(f"imported {count} options from {args.file} into '{args.object}'")
    return 0
