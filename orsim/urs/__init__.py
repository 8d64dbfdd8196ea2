"""The simulated Universal Routing Server: picks a routing target for ORS nodes."""

from __future__ import annotations

from orsim.urs._client import UrsClient as UrsClient
from orsim.urs._selection import Selector as Selector
from orsim.urs._selection import make_selector as make_selector
from orsim.urs._server import UrsOptions as UrsOptions
from orsim.urs._server import UrsServer as UrsServer
from orsim.urs._server import serve_urs as serve_urs

__all__ = ["Selector", "UrsClient", "UrsOptions", "UrsServer", "make_selector", "serve_urs"]
