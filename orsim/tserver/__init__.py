"""The simulated SIP Server/T-Server: routing points, route requests and the call ledger."""

from __future__ import annotations

from orsim.tserver._client import CallRouted as CallRouted
from orsim.tserver._client import RouteRequest as RouteRequest
from orsim.tserver._client import TServerClient as TServerClient
from orsim.tserver._ledger import CallLedger as CallLedger
from orsim.tserver._ledger import CallLost as CallLost
from orsim.tserver._ledger import CallRecord as CallRecord
from orsim.tserver._ledger import DuplicateRoute as DuplicateRoute
from orsim.tserver._ledger import LedgerCounts as LedgerCounts
from orsim.tserver._ledger import RouteRefused as RouteRefused
from orsim.tserver._ledger import StaleEpoch as StaleEpoch
from orsim.tserver._ledger import UnknownCall as UnknownCall
from orsim.tserver._server import TServer as TServer
from orsim.tserver._server import router_timeout_of as router_timeout_of
from orsim.tserver._server import serve_tserver as serve_tserver

__all__ = [
    "CallLedger",
    "CallLost",
    "CallRecord",
    "CallRouted",
    "DuplicateRoute",
    "LedgerCounts",
    "RouteRefused",
    "RouteRequest",
    "StaleEpoch",
    "TServer",
    "TServerClient",
    "UnknownCall",
    "router_timeout_of",
    "serve_tserver",
]
