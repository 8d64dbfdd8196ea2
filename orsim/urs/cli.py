"""`orsim urs -host H -port P -app URS`: the simulated Universal Routing Server."""

from __future__ import annotations

import argparse

from orsim.confserv import add_configured_command
from orsim.urs import UrsServer


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    add_configured_command(
        subparsers,
        "urs",
        help="run the simulated Universal Routing Server",
        description="Answer ORS routing requests with a target. -host/-port name the "
        "Configuration Server; the URS listens on its Application's host:port.",
        app_type="RoutingServer",
        accepted_types=("RoutingServer",),
        build=lambda app, _twin: UrsServer.from_application(app),
    )
