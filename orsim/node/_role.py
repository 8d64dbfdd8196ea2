"""The primary/backup role of one ORS application in its Node, as a sans-IO state machine.

Theory of operation
-------------------
A Node is a primary/backup pair of ORS applications (warm standby, ors-domain.md
section 4). Genesys leaves the choice of primary to SCS/LCA; orsim's applications decide
it themselves (section 9) with one rule that makes two primaries harmless: acting as
primary needs the Node's current **epoch**, and an application only gets an epoch by
winning a compare-and-set in the shared store (``claim_epoch(node, expected, new)`` with
``new = expected + 1``). The T-Server and the store refuse commands carrying an older
epoch, so an application that lost the Node (hung, partitioned, replaced) is fenced off
even while it still believes it is primary.

``RoleMachine`` knows nothing of sockets or clocks. The runtime feeds it what it saw
(``handle(event)``) and carries out the actions it returns, in order:

====================  ===================================================================
action                what the runtime does
====================  ===================================================================
``ClaimEpoch``        ``store.claim_epoch(node, expected, new)``; feed back ``ClaimWon(new)``
                      or ``ClaimLost(store.current_epoch(node))``
``Fence``             ``fence {node_id, epoch}`` to the T-Server before any route
``RecoverSessions``   load the Node's sessions from the store and carry them on
``StepDown``          stop serving sessions (they stay in the store for the new primary)
``HandOver``          ask the partner to take over (send it ``switchover``)
``SwitchoverFailed``  answer a pending ``switchover`` request with this reason
====================  ===================================================================

Every transition is in ``TRANSITIONS``, keyed by (role, trigger). Events carry data
(epochs, the partner's mode); ``RoleMachine`` first reduces an event to a ``Trigger``
using what it knows (its epoch, whether it is the configured primary, whether its
partner is connected), and then looks the trigger up. Rules, from the Genesys behaviour
and the orsim design:

- Start-up (``STARTING``, left at the first news of the partner): the configured primary
  becomes primary (claims the epoch) unless its partner already is primary, then it joins
  as backup. The configured backup starts as backup. An application that finds no
  partner at all claims the Node, so a lone survivor restarting serves its Node; the
  runtime should give the configured backup a longer start-up probe than the primary.
- A backup whose partner is lost (closed socket at once, silence within ADDP) claims.
  It claims only on *losing* a partner it had (or never saw): an application fenced while
  it cannot see its partner knows the partner holds the Node and does not fight for it,
  so a cut between the two halves does not make the Node flap.
- A lost claim: with the partner connected, go back to backup (the partner leads).
  Without it, claim again from the store's epoch: the loss usually means this
  application's epoch was out of date, and nobody else may be serving the Node.
- Two connected backups: the configured primary claims (someone must lead).
- News from the partner carrying an epoch below the one this application knows is stale
  (sent before the Node's last takeover) and is ignored.
- A primary (or suspending primary) that learns of a higher epoch for its Node steps
  down to backup at once: from the partner, from the store, or from a command refused as
  stale (``Fenced``).
- Switchover (``switchover {}``): asked of the primary, it suspends (creates no new
  sessions) and hands over to its backup, which claims the epoch; the old primary steps
  down when it sees the higher epoch. Asked of the backup, the backup claims directly.
  A suspending primary that loses its backup or times out resumes as primary.
- ``STOPPED`` is final; a primary stopping steps down first.

Claim results are only valid while ``CLAIMING``; feeding one in another role is the
runtime's bug and raises ``RoleError`` (h11's ``LocalProtocolError``), leaving the
machine unchanged.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

import attrs

from orsim.errors import LocalProtocolError
from orsim.node._mutations import mutated


class RoleError(LocalProtocolError):
    """The runtime fed an event the current role cannot take (a bug in the caller)."""


class Role(enum.Enum):
    """Where one ORS application stands in its Node."""

    STARTING = "starting"
    BACKUP = "backup"
    CLAIMING = "claiming"  # a backup that asked the store for the next epoch
    PRIMARY = "primary"
    SUSPENDING = "suspending"  # a primary handing over: holds the epoch, creates nothing
    STOPPED = "stopped"

    def __repr__(self) -> str:
        return self.name

    @property
    def mode(self) -> str:
        """The ``mode`` reported by ``status`` and peer ``member`` pushes."""
        return _MODES[self]

    @property
    def holds_node(self) -> bool:
        """True while this application believes it holds the Node's epoch."""
        return self in (Role.PRIMARY, Role.SUSPENDING)

    @property
    def creates_sessions(self) -> bool:
        """True only for a primary that may create new sessions."""
        return self is Role.PRIMARY


_MODES = {
    Role.STARTING: "starting",
    Role.BACKUP: "backup",
    Role.CLAIMING: "backup",
    Role.PRIMARY: "primary",
    Role.SUSPENDING: "primary",
    Role.STOPPED: "backup",
}


# ---------------------------------------------------------------------------- events


@attrs.frozen
class PartnerSeen:
    """The partner is connected and reported its mode and the epoch it knows."""

    primary: bool
    epoch: int


@attrs.frozen
class PartnerLost:
    """The partner's link closed, went silent past ADDP, or could not be opened."""


@attrs.frozen
class PartnerAbsent:
    """No partner has been seen for a while (an application with no partner configured,
    fenced by a live Node that adopted its sessions): nobody else will serve the Node.

    Unlike ``PartnerLost`` it is taken again and again (each time the runtime says so),
    except while the partner is up.
    """


@attrs.frozen
class EpochObserved:
    """The Node's epoch was read somewhere (the store, the T-Server)."""

    epoch: int


@attrs.frozen
class Fenced:
    """A command sent with ``epoch`` was refused as stale: a higher epoch exists."""

    epoch: int


@attrs.frozen
class ClaimWon:
    """The store's compare-and-set for ``ClaimEpoch(_, epoch)`` succeeded."""

    epoch: int


@attrs.frozen
class ClaimLost:
    """The compare-and-set failed; ``current`` is the store's epoch read afterwards."""

    current: int


@attrs.frozen
class SwitchoverRequested:
    """A ``switchover`` request arrived (from the launcher or from the partner)."""


@attrs.frozen
class HandedOver:
    """The partner's ``handover`` push: it hands the Node to this application.

    Taken by a backup only. An application already claiming or holding the Node has
    nothing to take: read as ``SwitchoverRequested`` there, it handed the Node straight
    back to a partner that was stopping (found by `orsim search`, seed 113: the partner,
    primary after a switchover, was stopped at once; this application claimed on seeing
    it suspend, and the handover that arrived meanwhile, kept for after its claim, made
    it suspend in turn, waiting for a partner gone to restart, and its Node served
    nothing for 7.5 s).
    """


@attrs.frozen
class SwitchoverTimedOut:
    """The runtime gave up waiting for the partner to take over."""


@attrs.frozen
class StopRequested:
    """The process is shutting down."""


Event = (
    PartnerSeen
    | PartnerLost
    | PartnerAbsent
    | EpochObserved
    | Fenced
    | ClaimWon
    | ClaimLost
    | SwitchoverRequested
    | HandedOver
    | SwitchoverTimedOut
    | StopRequested
)

# --------------------------------------------------------------------------- actions


@attrs.frozen
class ClaimEpoch:
    """Compare-and-set the Node's epoch in the store from ``expected`` to ``new``."""

    expected: int
    new: int


@attrs.frozen
class Fence:
    """Tell the T-Server the Node's epoch is now ``epoch`` (before routing anything)."""

    epoch: int


@attrs.frozen
class RecoverSessions:
    """Load the Node's sessions from the store and carry them on under ``epoch``."""

    epoch: int


@attrs.frozen
class StepDown:
    """Stop acting as primary: serve no session, keep the store as it is."""


@attrs.frozen
class HandOver:
    """Ask the partner to take over the Node (graceful switchover)."""


@attrs.frozen
class SwitchoverFailed:
    """The switchover asked of this application did not or will not happen."""

    reason: str


Action = ClaimEpoch | Fence | RecoverSessions | StepDown | HandOver | SwitchoverFailed

# ------------------------------------------------------------------ transition table


class Trigger(enum.Enum):
    """An event reduced to what matters for the transition table."""

    PARTNER_PRIMARY = enum.auto()  # partner is primary, at an epoch >= ours
    PARTNER_IDLE = enum.auto()  # partner up, not primary; it is the configured primary
    PARTNER_IDLE_I_LEAD = enum.auto()  # partner up, not primary; we are the configured primary
    PARTNER_LOST = enum.auto()  # partner link lost (and it was up, or never seen)
    HIGHER_EPOCH = enum.auto()  # while holding the Node: someone has a higher epoch
    CLAIM_WON = enum.auto()
    CLAIM_LOST = enum.auto()  # ... while the partner is connected: it leads
    CLAIM_LOST_ALONE = enum.auto()  # ... while the partner is not: retry at the new epoch
    SWITCHOVER = enum.auto()  # asked to switch over, partner connected
    SWITCHOVER_NO_PARTNER = enum.auto()  # asked to switch over, partner not connected
    SWITCHOVER_TIMEOUT = enum.auto()  # while suspending
    STOP = enum.auto()

    def __repr__(self) -> str:
        return self.name


class Do(enum.Enum):
    """Action kinds in the table; ``RoleMachine`` fills in their data."""

    CLAIM = enum.auto()
    FENCE = enum.auto()
    RECOVER = enum.auto()
    STEP_DOWN = enum.auto()
    HAND_OVER = enum.auto()
    FAIL_SWITCHOVER = enum.auto()

    def __repr__(self) -> str:
        return self.name


_S, _B, _C, _P, _U, _X = (
    Role.STARTING,
    Role.BACKUP,
    Role.CLAIMING,
    Role.PRIMARY,
    Role.SUSPENDING,
    Role.STOPPED,
)
_T = Trigger

TRANSITIONS: Mapping[tuple[Role, Trigger], tuple[Role, tuple[Do, ...]]] = {
    # STARTING: wait for the first news of the partner.
    (_S, _T.PARTNER_PRIMARY): (_B, ()),
    (_S, _T.PARTNER_IDLE): (_B, ()),
    (_S, _T.PARTNER_IDLE_I_LEAD): (_C, (Do.CLAIM,)),
    (_S, _T.PARTNER_LOST): (_C, (Do.CLAIM,)),
    (_S, _T.SWITCHOVER): (_S, (Do.FAIL_SWITCHOVER,)),
    (_S, _T.SWITCHOVER_NO_PARTNER): (_S, (Do.FAIL_SWITCHOVER,)),
    (_S, _T.STOP): (_X, ()),
    # BACKUP: watch the primary, take over when it is lost.
    (_B, _T.PARTNER_PRIMARY): (_B, ()),
    (_B, _T.PARTNER_IDLE): (_B, ()),
    (_B, _T.PARTNER_IDLE_I_LEAD): (_C, (Do.CLAIM,)),
    (_B, _T.PARTNER_LOST): (_C, (Do.CLAIM,)),
    (_B, _T.SWITCHOVER): (_C, (Do.CLAIM,)),
    (_B, _T.SWITCHOVER_NO_PARTNER): (_C, (Do.CLAIM,)),
    (_B, _T.STOP): (_X, ()),
    # CLAIMING: the store decides; partner news is recorded but changes nothing yet.
    (_C, _T.PARTNER_PRIMARY): (_C, ()),
    (_C, _T.PARTNER_IDLE): (_C, ()),
    (_C, _T.PARTNER_IDLE_I_LEAD): (_C, ()),
    (_C, _T.PARTNER_LOST): (_C, ()),
    (_C, _T.CLAIM_WON): (_P, (Do.FENCE, Do.RECOVER)),
    (_C, _T.CLAIM_LOST): (_B, ()),
    (_C, _T.CLAIM_LOST_ALONE): (_C, (Do.CLAIM,)),
    (_C, _T.SWITCHOVER): (_C, (Do.FAIL_SWITCHOVER,)),
    (_C, _T.SWITCHOVER_NO_PARTNER): (_C, (Do.FAIL_SWITCHOVER,)),
    (_C, _T.STOP): (_X, ()),
    # PRIMARY: serve until someone holds a higher epoch.
    (_P, _T.PARTNER_PRIMARY): (_P, ()),  # same epoch: impossible, the CAS gives it once
    (_P, _T.PARTNER_IDLE): (_P, ()),
    (_P, _T.PARTNER_IDLE_I_LEAD): (_P, ()),
    (_P, _T.PARTNER_LOST): (_P, ()),
    (_P, _T.HIGHER_EPOCH): (_B, (Do.STEP_DOWN,)),
    (_P, _T.SWITCHOVER): (_U, (Do.HAND_OVER,)),
    (_P, _T.SWITCHOVER_NO_PARTNER): (_P, (Do.FAIL_SWITCHOVER,)),
    (_P, _T.STOP): (_X, (Do.STEP_DOWN,)),
    # SUSPENDING: hold the epoch, create nothing, wait for the partner's higher epoch.
    (_U, _T.PARTNER_PRIMARY): (_U, ()),
    (_U, _T.PARTNER_IDLE): (_U, ()),
    (_U, _T.PARTNER_IDLE_I_LEAD): (_U, ()),
    (_U, _T.PARTNER_LOST): (_P, (Do.FAIL_SWITCHOVER,)),
    (_U, _T.HIGHER_EPOCH): (_B, (Do.STEP_DOWN,)),
    (_U, _T.SWITCHOVER): (_U, ()),  # already under way
    (_U, _T.SWITCHOVER_NO_PARTNER): (_P, (Do.FAIL_SWITCHOVER,)),
    (_U, _T.SWITCHOVER_TIMEOUT): (_P, (Do.FAIL_SWITCHOVER,)),
    (_U, _T.STOP): (_X, (Do.STEP_DOWN,)),
    # STOPPED: final.
    **{(_X, trigger): (_X, ()) for trigger in Trigger},
}

_FAILURE_REASONS = {
    _T.SWITCHOVER_NO_PARTNER: "no backup is connected",
    _T.SWITCHOVER_TIMEOUT: "the backup did not take over in time",
    _T.PARTNER_LOST: "the backup was lost during the switchover",
}


_BUSY_REASONS = {
    _S: "this application is still starting",
    _B: "this application is a backup",
    _C: "a takeover is already under way",
    _P: "this application is the primary",
    _U: "a switchover is already under way",
    _X: "this application is stopping",
}


class _Partner(enum.Enum):
    UNKNOWN = enum.auto()
    UP = enum.auto()
    LOST = enum.auto()


# --------------------------------------------------------------------------- machine


@attrs.define(eq=False)
class RoleMachine:
    """The role of one ORS application of a Node.

    Args:
        configured_primary: True for the application configured as the Node's primary
            (the one whose DBID is the Node ID), False for its backup.
        epoch: the Node's epoch as read from the store at start-up.
    """

    configured_primary: bool
    _epoch: int = attrs.field(alias="epoch")
    _role: Role = attrs.field(default=Role.STARTING, init=False)
    _partner: _Partner = attrs.field(default=_Partner.UNKNOWN, init=False)
    _claim: ClaimEpoch | None = attrs.field(default=None, init=False)

    @property
    def role(self) -> Role:
        """The current role."""
        return self._role

    @property
    def epoch(self) -> int:
        """The highest epoch of the Node this application knows of.

        While ``role.holds_node``, it is the epoch this application won.
        """
        return self._epoch

    @property
    def partner_up(self) -> bool:
        """True while the partner's link is up, as last reported."""
        return self._partner is _Partner.UP

    def handle(self, event: Event) -> list[Action]:
        """Take in one event; return the actions the runtime must carry out, in order.

        Raises:
            RoleError: a claim result outside ``CLAIMING``, or one for another claim.
        """
        trigger = self._reduce(event)
        if trigger is None:
            return []
        old = self._role
        new, todo = TRANSITIONS[old, trigger]
        self._role = new
        return [self._make(do, old, trigger) for do in todo]

    def _reduce(self, event: Event) -> Trigger | None:
        """Record what the event tells and say which trigger it is (None: no transition)."""
        match event:
            case PartnerSeen(primary=primary, epoch=epoch):
                higher = self._raise_epoch(epoch)
                self._partner = _Partner.UP
                if higher and self._role.holds_node:
                    return Trigger.HIGHER_EPOCH
                if primary and epoch >= self._epoch:
                    return Trigger.PARTNER_PRIMARY
                if epoch < self._epoch:
                    # News older than the Node's last takeover (a frozen process reading
                    # its socket buffer on SIGCONT, or a fenced primary that has not heard
                    # yet): acting on it would take the Node back from its new primary.
                    return None
                if self.configured_primary:
                    return Trigger.PARTNER_IDLE_I_LEAD
                return Trigger.PARTNER_IDLE
            case PartnerLost():
                was = self._partner
                self._partner = _Partner.LOST
                return None if was is _Partner.LOST else Trigger.PARTNER_LOST
            case PartnerAbsent():
                if self._partner is _Partner.UP:
                    return None
                self._partner = _Partner.LOST
                return Trigger.PARTNER_LOST
            case EpochObserved(epoch=epoch):
                return self._observe(epoch)
            case Fenced(epoch=epoch):
                # Refused at ``epoch``: the Node's epoch is at least one above it.
                return self._observe(epoch + 1)
            case ClaimWon(epoch=epoch):
                claim = self._pending_claim(event)
                if claim is None:
                    return None
                if epoch != claim.new:
                    raise RoleError(f"ClaimWon({epoch}) answers no claim; pending: {claim}")
                self._claim = None
                if self._epoch > epoch:
                    # Someone claimed past us before we heard the answer: already fenced.
                    return self._claim_lost()
                self._epoch = epoch
                return Trigger.CLAIM_WON
            case ClaimLost(current=current):
                if self._pending_claim(event) is None:
                    return None
                self._claim = None
                self._raise_epoch(current)
                return self._claim_lost()
            case HandedOver() if self._role is not Role.BACKUP:
                return None  # claiming or holding the Node already: nothing to take
            case SwitchoverRequested() | HandedOver():
                if self._partner is _Partner.UP:
                    return Trigger.SWITCHOVER
                return Trigger.SWITCHOVER_NO_PARTNER
            case SwitchoverTimedOut():
                return Trigger.SWITCHOVER_TIMEOUT if self._role is Role.SUSPENDING else None
            case StopRequested():
                return Trigger.STOP
        raise TypeError(f"not a role event: {event!r}")  # pragma: no cover

    def _claim_lost(self) -> Trigger:
        # With the partner connected, it holds or will take the Node. Without it, the
        # loss most often means our epoch was out of date (the partner's last claim
        # never reached us): try again from the store's epoch. Each retry needs the
        # epoch to have moved since, i.e. another claimant, so this cannot spin.
        return Trigger.CLAIM_LOST if self._partner is _Partner.UP else Trigger.CLAIM_LOST_ALONE

    def _raise_epoch(self, epoch: int) -> bool:
        higher = epoch > self._epoch
        if higher:
            self._epoch = epoch
        return higher

    def _observe(self, epoch: int) -> Trigger | None:
        if self._raise_epoch(epoch) and self._role.holds_node:
            # Fenced by news from elsewhere (store, T-Server): someone else holds the Node,
            # so what we believed of the partner is stale. Forget it, so that the loss of
            # links that died while we were away does not make us claim the Node back.
            self._partner = _Partner.LOST
            return Trigger.HIGHER_EPOCH
        return None

    def _pending_claim(self, event: Event) -> ClaimEpoch | None:
        if self._role is Role.STOPPED:
            return None  # a claim answered after stop: nothing to do
        if self._role is not Role.CLAIMING or self._claim is None:
            raise RoleError(f"{event!r} while {self._role!r}: no claim is pending")
        return self._claim

    def _make(self, do: Do, old: Role, trigger: Trigger) -> Action:
        match do:
            case Do.CLAIM:
                if old is Role.BACKUP and mutated("backup-skips-epoch"):
                    # The injected bug: take the Node at the epoch already known.
                    self._claim = ClaimEpoch(expected=self._epoch, new=self._epoch)
                    return self._claim
                self._claim = ClaimEpoch(expected=self._epoch, new=self._epoch + 1)
                return self._claim
            case Do.FENCE:
                return Fence(self._epoch)
            case Do.RECOVER:
                return RecoverSessions(self._epoch)
            case Do.STEP_DOWN:
                return StepDown()
            case Do.HAND_OVER:
                return HandOver()
            case Do.FAIL_SWITCHOVER:
                return SwitchoverFailed(_FAILURE_REASONS.get(trigger) or _BUSY_REASONS[old])
        raise AssertionError(do)  # pragma: no cover
