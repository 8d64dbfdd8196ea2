"""`orsim urs -host H -port P -app URS`: the simulated Universal Routing Server."""

from __future__ import annotations

import argparse

import trio

from orsim.confserv import add_genesys_args, serve_configured
from orsim.runtime import run_server
from orsim.urs import UrsServer


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "urs",
        help="run the simulated Universal Routing Server",
        description="Answer ORS routing requests with a target. -host/-port name the "
        "Configuration Server; the URS listens on its Application's host:port.",
    )
    add_genesys_args(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    async def main(_nursery: trio.Nursery) -> None:
        await serve_configured(
            args,
            app_type="RoutingServer",
            accepted_types=("RoutingServer",),
            build=lambda app, _twin: UrsServer.from_application(app),
        )

    return run_server(main)
