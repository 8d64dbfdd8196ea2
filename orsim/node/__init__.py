"""orsim.node: the ORS node process and the pure logic at its heart.

Pure (sans-IO) parts re-exported here: assignment of calls to Nodes (``assign``), the
primary/backup role machine (``RoleMachine`` with its events and actions), and the
call-watching rules (``Watcher``). The process itself: ``OrsNode`` (its trio shell),
``read_startup`` (its configuration) and ``follow_changes`` (live option changes).
"""

from __future__ import annotations

from orsim.node._assignment import Assignment as Assignment
from orsim.node._assignment import NodeInfo as NodeInfo
from orsim.node._assignment import assign as assign
from orsim.node._core import SWITCHOVER_DRAIN as SWITCHOVER_DRAIN
from orsim.node._core import ModeChanged as ModeChanged
from orsim.node._core import probe_window as probe_window
from orsim.node._live import follow_changes as follow_changes
from orsim.node._membership import MemberInfo as MemberInfo
from orsim.node._messages import Handover as Handover
from orsim.node._messages import Member as Member
from orsim.node._messages import NodeStatus as NodeStatus
from orsim.node._messages import SessionCreated as SessionCreated
from orsim.node._messages import StoreHealth as StoreHealth
from orsim.node._messages import SwitchedOver as SwitchedOver
from orsim.node._messages import Switchover as Switchover
from orsim.node._mutations import MUTATIONS as MUTATIONS
from orsim.node._mutations import set_mutation as set_mutation
from orsim.node._role import Action as Action
from orsim.node._role import ClaimEpoch as ClaimEpoch
from orsim.node._role import ClaimLost as ClaimLost
from orsim.node._role import ClaimWon as ClaimWon
from orsim.node._role import EpochObserved as EpochObserved
from orsim.node._role import Event as Event
from orsim.node._role import Fence as Fence
from orsim.node._role import Fenced as Fenced
from orsim.node._role import HandedOver as HandedOver
from orsim.node._role import HandOver as HandOver
from orsim.node._role import PartnerLost as PartnerLost
from orsim.node._role import PartnerSeen as PartnerSeen
from orsim.node._role import RecoverSessions as RecoverSessions
from orsim.node._role import Role as Role
from orsim.node._role import RoleError as RoleError
from orsim.node._role import RoleMachine as RoleMachine
from orsim.node._role import StepDown as StepDown
from orsim.node._role import StopRequested as StopRequested
from orsim.node._role import SwitchoverFailed as SwitchoverFailed
from orsim.node._role import SwitchoverRequested as SwitchoverRequested
from orsim.node._role import SwitchoverTimedOut as SwitchoverTimedOut
from orsim.node._runtime import OrsNode as OrsNode
from orsim.node._startup import read_startup as read_startup
from orsim.node._watch import Decision as Decision
from orsim.node._watch import Verdict as Verdict
from orsim.node._watch import Watcher as Watcher
from orsim.node._watch import WatchKind as WatchKind
from orsim.node._watch import decide as decide

__all__ = [
    "MUTATIONS",
    "SWITCHOVER_DRAIN",
    "Action",
    "Assignment",
    "ClaimEpoch",
    "ClaimLost",
    "ClaimWon",
    "Decision",
    "EpochObserved",
    "Event",
    "Fence",
    "Fenced",
    "HandOver",
    "HandedOver",
    "Handover",
    "Member",
    "MemberInfo",
    "ModeChanged",
    "NodeInfo",
    "NodeStatus",
    "OrsNode",
    "PartnerLost",
    "PartnerSeen",
    "RecoverSessions",
    "Role",
    "RoleError",
    "RoleMachine",
    "SessionCreated",
    "StepDown",
    "StopRequested",
    "StoreHealth",
    "SwitchedOver",
    "Switchover",
    "SwitchoverFailed",
    "SwitchoverRequested",
    "SwitchoverTimedOut",
    "Verdict",
    "WatchKind",
    "Watcher",
    "assign",
    "decide",
    "follow_changes",
    "read_startup",
    "set_mutation",
]
