"""The Genesys start-up flags every server command takes: where the Configuration Server is.

Shared by the command modules of the servers, the node and ``orsim config``.
"""

from __future__ import annotations

import argparse

from orsim.errors import UsageError


def add_genesys_args(
    parser: argparse.ArgumentParser,
    *,
    app_required: bool = True,
    required: bool = True,
    with_app: bool = True,
) -> None:
    """The Genesys start-up flags: ``-host``/``-port`` name the Configuration Server.

    ``required=False`` lets a command accept ``-V`` alone; it must then check the flags.
    """
    parser.add_argument(
        "-host", "--host", required=required, metavar="H", help="Configuration Server host"
    )
    parser.add_argument(
        "-port",
        "--port",
        required=required,
        type=int,
        metavar="P",
        help="Configuration Server port",
    )
    if with_app:
        parser.add_argument(
            "-app",
            "--app",
            required=app_required and required,
            metavar="APP",
            help="this server's Application",
        )
    parser.add_argument(
        "-backup_host",
        "--backup-host",
        "--backup_host",
        dest="backup_host",
        metavar="H",
        help="backup Configuration Server host",
    )
    parser.add_argument(
        "-backup_port",
        "--backup-port",
        "--backup_port",
        dest="backup_port",
        type=int,
        metavar="P",
        help="backup Configuration Server port",
    )
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how long to keep retrying the Configuration Server (default 10)",
    )


def confserv_addresses(args: argparse.Namespace) -> list[tuple[str, int]]:
    """The Configuration Server addresses to try, primary first."""
    addresses = [(args.host, args.port)]
    if bool(args.backup_host) != (args.backup_port is not None):
        given, missing = (
            ("-backup_host", "-backup_port")
            if args.backup_host
            else ("-backup_port", "-backup_host")
        )
        raise UsageError(f"{given} needs {missing} too (the backup Configuration Server)")
    if args.backup_host and args.backup_port is not None:
        addresses.append((args.backup_host, args.backup_port))
    return addresses
