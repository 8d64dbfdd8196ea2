"""The mock Configuration Server (``serve_confserv``) and its client (``ConfServClient``)."""

from __future__ import annotations

from orsim.confserv._changes import Change as Change
from orsim.confserv._changes import ChangeRejected as ChangeRejected
from orsim.confserv._changes import apply_change as apply_change
from orsim.confserv._journal import Journal as Journal
from orsim.confserv._server import APP_NAME as APP_NAME
from orsim.confserv._server import APP_TYPE as APP_TYPE
from orsim.confserv._server import serve_confserv as serve_confserv
from orsim.confserv.client import ConfServClient as ConfServClient
from orsim.confserv.client import NodeConfig as NodeConfig
from orsim.confserv.client import ObjectChanged as ObjectChanged
from orsim.limits import raise_fd_limit as raise_fd_limit

__all__ = [
    "APP_NAME",
    "APP_TYPE",
    "Change",
    "ChangeRejected",
    "ConfServClient",
    "Journal",
    "NodeConfig",
    "ObjectChanged",
    "apply_change",
    "raise_fd_limit",
    "serve_confserv",
]
