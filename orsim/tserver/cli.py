"""`orsim tserver -host H -port P -app SIP_Server`: the simulated SIP Server/T-Server."""

from __future__ import annotations

import argparse

from orsim.config import TSERVER_TYPES
from orsim.confserv import add_configured_command
from orsim.tserver import TServer


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    add_configured_command(
        subparsers,
        "tserver",
        help="run the simulated SIP Server/T-Server",
        description="Serve calls on routing points and keep the call ledger. "
        "-host/-port name the Configuration Server; the T-Server listens on its "
        "Application's host:port.",
        app_type="SIPServer",
        accepted_types=TSERVER_TYPES,
        build=TServer.from_application,
    )
