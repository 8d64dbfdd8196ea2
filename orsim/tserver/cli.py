"""`orsim tserver -host H -port P -app SIP_Server`: the simulated SIP Server/T-Server."""

from __future__ import annotations

import argparse

import trio

from orsim.config import TSERVER_TYPES
from orsim.confserv import add_genesys_args, serve_configured
from orsim.runtime import run_server
from orsim.tserver import TServer


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "tserver",
        help="run the simulated SIP Server/T-Server",
        description="Serve calls on routing points and keep the call ledger. "
        "-host/-port name the Configuration Server; the T-Server listens on its "
        "Application's host:port.",
    )
    add_genesys_args(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    async def main(_nursery: trio.Nursery) -> None:
        await serve_configured(
            args,
            app_type="SIPServer",
            accepted_types=TSERVER_TYPES,
            build=TServer.from_application,
        )

    return run_server(main)
