"""The mock Configuration Server (``serve_confserv``) and its client (``ConfServClient``).

Also what every server process shares at start-up: the Genesys flags naming the
Configuration Server (``add_genesys_args``, ``confserv_addresses``), and
``serve_configured``, which serves an Application and applies its live changes.
"""

from __future__ import annotations

from orsim.confserv._changes import Change as Change
from orsim.confserv._changes import apply_change as apply_change
from orsim.confserv._configured import LISTEN_PORT_ENV as LISTEN_PORT_ENV
from orsim.confserv._configured import ConfiguredServer as ConfiguredServer
from orsim.confserv._configured import add_configured_command as add_configured_command
from orsim.confserv._configured import listen_port_override as listen_port_override
from orsim.confserv._configured import serve_configured as serve_configured
from orsim.confserv._configured import start_serving as start_serving
from orsim.confserv._genesys_args import add_genesys_args as add_genesys_args
from orsim.confserv._genesys_args import confserv_addresses as confserv_addresses
from orsim.confserv._journal import Journal as Journal
from orsim.confserv._messages import ApplicationFound as ApplicationFound
from orsim.confserv._messages import ApplicationsFound as ApplicationsFound
from orsim.confserv._messages import ConfServStatus as ConfServStatus
from orsim.confserv._messages import DeleteOption as DeleteOption
from orsim.confserv._messages import GetApplication as GetApplication
from orsim.confserv._messages import GetApplications as GetApplications
from orsim.confserv._messages import GetHost as GetHost
from orsim.confserv._messages import GetTransaction as GetTransaction
from orsim.confserv._messages import HostFound as HostFound
from orsim.confserv._messages import Imported as Imported
from orsim.confserv._messages import ImportOptions as ImportOptions
from orsim.confserv._messages import ListApplications as ListApplications
from orsim.confserv._messages import Names as Names
from orsim.confserv._messages import ObjectChanged as ObjectChanged
from orsim.confserv._messages import OptionChanged as OptionChanged
from orsim.confserv._messages import SetOption as SetOption
from orsim.confserv._messages import TransactionFound as TransactionFound
from orsim.confserv._server import APP_NAME as APP_NAME
from orsim.confserv._server import APP_TYPE as APP_TYPE
from orsim.confserv._server import ConfServ as ConfServ
from orsim.confserv._server import serve_confserv as serve_confserv
from orsim.confserv.client import ConfServClient as ConfServClient
from orsim.confserv.client import NodeConfig as NodeConfig
from orsim.limits import raise_fd_limit as raise_fd_limit

__all__ = [
    "APP_NAME",
    "APP_TYPE",
    "LISTEN_PORT_ENV",
    "ApplicationFound",
    "ApplicationsFound",
    "Change",
    "ConfServ",
    "ConfServClient",
    "ConfServStatus",
    "ConfiguredServer",
    "DeleteOption",
    "GetApplication",
    "GetApplications",
    "GetHost",
    "GetTransaction",
    "HostFound",
    "ImportOptions",
    "Imported",
    "Journal",
    "ListApplications",
    "Names",
    "NodeConfig",
    "ObjectChanged",
    "OptionChanged",
    "SetOption",
    "TransactionFound",
    "add_configured_command",
    "add_genesys_args",
    "apply_change",
    "confserv_addresses",
    "listen_port_override",
    "raise_fd_limit",
    "serve_configured",
    "serve_confserv",
    "start_serving",
]
