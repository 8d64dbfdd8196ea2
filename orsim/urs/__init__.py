"""The simulated Universal Routing Server: picks a routing target for ORS nodes."""

from __future__ import annotations

from orsim.urs._client import UrsClient as UrsClient
from orsim.urs._messages import Register as Register
from orsim.urs._messages import Released as Released
from orsim.urs._messages import ReleaseTarget as ReleaseTarget
from orsim.urs._messages import SelectTarget as SelectTarget
from orsim.urs._messages import Target as Target
from orsim.urs._messages import UrsClientInfo as UrsClientInfo
from orsim.urs._messages import UrsStatus as UrsStatus
from orsim.urs._selection import Selector as Selector
from orsim.urs._selection import make_selector as make_selector
from orsim.urs._server import UrsOptions as UrsOptions
from orsim.urs._server import UrsServer as UrsServer

__all__ = [
    "Register",
    "ReleaseTarget",
    "Released",
    "SelectTarget",
    "Selector",
    "Target",
    "UrsClient",
    "UrsClientInfo",
    "UrsOptions",
    "UrsServer",
    "UrsStatus",
    "make_selector",
]
