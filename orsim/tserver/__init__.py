"""The simulated SIP Server/T-Server: routing points, route requests and the call ledger."""

from __future__ import annotations

from orsim.tserver._client import TServerClient as TServerClient
from orsim.tserver._ledger import CallLedger as CallLedger
from orsim.tserver._ledger import CallLost as CallLost
from orsim.tserver._ledger import CallRecord as CallRecord
from orsim.tserver._ledger import DoublePrimary as DoublePrimary
from orsim.tserver._ledger import DuplicateRoute as DuplicateRoute
from orsim.tserver._ledger import LedgerCounts as LedgerCounts
from orsim.tserver._ledger import RouteRefused as RouteRefused
from orsim.tserver._ledger import StaleEpoch as StaleEpoch
from orsim.tserver._ledger import UnknownCall as UnknownCall
from orsim.tserver._messages import CallCounts as CallCounts
from orsim.tserver._messages import CallRouted as CallRouted
from orsim.tserver._messages import CallState as CallState
from orsim.tserver._messages import ClaimEpoch as ClaimEpoch
from orsim.tserver._messages import EpochClaim as EpochClaim
from orsim.tserver._messages import Fence as Fence
from orsim.tserver._messages import Fenced as Fenced
from orsim.tserver._messages import Follow as Follow
from orsim.tserver._messages import Generate as Generate
from orsim.tserver._messages import GeneratorInfo as GeneratorInfo
from orsim.tserver._messages import Ledger as Ledger
from orsim.tserver._messages import LedgerOps as LedgerOps
from orsim.tserver._messages import LedgerReport as LedgerReport
from orsim.tserver._messages import MadeCall as MadeCall
from orsim.tserver._messages import MakeCall as MakeCall
from orsim.tserver._messages import QueryCall as QueryCall
from orsim.tserver._messages import Register as Register
from orsim.tserver._messages import Registered as Registered
from orsim.tserver._messages import ReplicaAck as ReplicaAck
from orsim.tserver._messages import Role as Role
from orsim.tserver._messages import Route as Route
from orsim.tserver._messages import Routed as Routed
from orsim.tserver._messages import RoutedCalls as RoutedCalls
from orsim.tserver._messages import RouteRequest as RouteRequest
from orsim.tserver._messages import RouteRequests as RouteRequests
from orsim.tserver._messages import StopGenerator as StopGenerator
from orsim.tserver._messages import Stopped as Stopped
from orsim.tserver._messages import TServerClientInfo as TServerClientInfo
from orsim.tserver._messages import TServerStatus as TServerStatus
from orsim.tserver._server import TServer as TServer
from orsim.tserver._server import router_timeout_of as router_timeout_of

__all__ = [
    "CallCounts",
    "CallLedger",
    "CallLost",
    "CallRecord",
    "CallRouted",
    "CallState",
    "ClaimEpoch",
    "DoublePrimary",
    "DuplicateRoute",
    "EpochClaim",
    "Fence",
    "Fenced",
    "Follow",
    "Generate",
    "GeneratorInfo",
    "Ledger",
    "LedgerCounts",
    "LedgerOps",
    "LedgerReport",
    "MadeCall",
    "MakeCall",
    "QueryCall",
    "Register",
    "Registered",
    "ReplicaAck",
    "Role",
    "Route",
    "RouteRefused",
    "RouteRequest",
    "RouteRequests",
    "Routed",
    "RoutedCalls",
    "StaleEpoch",
    "StopGenerator",
    "Stopped",
    "TServer",
    "TServerClient",
    "TServerClientInfo",
    "TServerStatus",
    "UnknownCall",
    "router_timeout_of",
]
