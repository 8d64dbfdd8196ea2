"""The primary/backup role state machine of an ORS application (orsim.node._role)."""

from __future__ import annotations

import pytest

from orsim.node._role import (
    TRANSITIONS,
    Action,
    ClaimEpoch,
    ClaimLost,
    ClaimWon,
    Do,
    EpochObserved,
    Event,
    Fence,
    Fenced,
    HandedOver,
    HandOver,
    PartnerLost,
    PartnerSeen,
    RecoverSessions,
    Role,
    RoleError,
    RoleMachine,
    StepDown,
    StopRequested,
    SwitchoverFailed,
    SwitchoverRequested,
    SwitchoverTimedOut,
    Trigger,
    _Partner,
)

EPOCH = 3
_ACTION_TYPES: dict[Do, type[Action]] = {
    Do.CLAIM: ClaimEpoch,
    Do.FENCE: Fence,
    Do.RECOVER: RecoverSessions,
    Do.STEP_DOWN: StepDown,
    Do.HAND_OVER: HandOver,
    Do.FAIL_SWITCHOVER: SwitchoverFailed,
}


def role_of(machine: RoleMachine) -> Role:
    """``machine.role``, read afresh: after ``assert m.role is X`` mypy takes ``m.role`` to
    stay X, though ``m.handle`` changes it."""
    return machine.role


def machine_in(role: Role, *, configured_primary: bool = True) -> RoleMachine:
    """A machine brought to ``role`` through public events only."""
    m = RoleMachine(configured_primary=configured_primary, epoch=EPOCH)
    if role is Role.STARTING:
        return m
    if role is Role.BACKUP:
        m.handle(PartnerSeen(primary=True, epoch=EPOCH))
    elif role is Role.STOPPED:
        m.handle(StopRequested())
    else:
        m.handle(PartnerLost())
        if role is not Role.CLAIMING:
            m.handle(ClaimWon(EPOCH + 1))
            if role is Role.SUSPENDING:
                m.handle(PartnerSeen(primary=False, epoch=EPOCH + 1))
                m.handle(SwitchoverRequested())
    assert m.role is role
    return m


def event_for(m: RoleMachine, trigger: Trigger) -> Event:
    """The event that reduces to ``trigger`` for ``m`` as it stands."""
    match trigger:
        case Trigger.PARTNER_PRIMARY:
            return PartnerSeen(primary=True, epoch=m.epoch)
        case Trigger.PARTNER_IDLE | Trigger.PARTNER_IDLE_I_LEAD:
            return PartnerSeen(primary=False, epoch=m.epoch)
        case Trigger.PARTNER_LOST:
            return PartnerLost()
        case Trigger.HIGHER_EPOCH:
            return EpochObserved(m.epoch + 1)
        case Trigger.CLAIM_WON:
            return ClaimWon(m.epoch + 1)
        case Trigger.CLAIM_LOST | Trigger.CLAIM_LOST_ALONE:
            return ClaimLost(m.epoch + 1)
        case Trigger.SWITCHOVER | Trigger.SWITCHOVER_NO_PARTNER:
            return SwitchoverRequested()
        case Trigger.SWITCHOVER_TIMEOUT:
            return SwitchoverTimedOut()
        case Trigger.STOP:
            return StopRequested()


# A suspending primary's partner is connected by construction (losing it resumes).
UNREACHABLE = {(Role.SUSPENDING, Trigger.SWITCHOVER_NO_PARTNER)}


@pytest.mark.parametrize(
    ("role", "trigger"),
    [key for key in TRANSITIONS if key[0] is not Role.STOPPED and key not in UNREACHABLE],
    ids=lambda x: x.name,
)
def test_each_transition(role: Role, trigger: Trigger) -> None:
    """Each table row: the right event in the right role gives its role and actions."""
    m = machine_in(role, configured_primary=trigger is not Trigger.PARTNER_IDLE)
    # Set the partner's link as the trigger needs it; only reachable through events
    # that would also change the role.
    wants_up = trigger in (Trigger.SWITCHOVER, Trigger.PARTNER_LOST, Trigger.CLAIM_LOST)
    if trigger in (Trigger.SWITCHOVER_NO_PARTNER, Trigger.CLAIM_LOST_ALONE):
        m._partner = _Partner.LOST
    elif wants_up:
        m._partner = _Partner.UP
    next_role, todo = TRANSITIONS[role, trigger]
    actions = m.handle(event_for(m, trigger))
    assert m.role is next_role
    assert [type(a) for a in actions] == [_ACTION_TYPES[d] for d in todo]


@pytest.mark.parametrize("trigger", list(Trigger), ids=lambda t: t.name)
def test_stopped_is_final(trigger: Trigger) -> None:
    """Nothing moves a stopped application, not even a late claim answer."""
    m = machine_in(Role.STOPPED)
    assert m.handle(event_for(m, trigger)) == []
    assert m.role is Role.STOPPED


def test_table_covers_every_reachable_pair() -> None:
    """Missing rows are exactly the pairs the reduction never produces."""
    missing = {(r, t) for r in Role for t in Trigger} - set(TRANSITIONS)
    claims = {Trigger.CLAIM_WON, Trigger.CLAIM_LOST, Trigger.CLAIM_LOST_ALONE}
    for role, trigger in missing:
        if trigger in claims:
            assert role is not Role.CLAIMING  # answered outside a claim: RoleError
        elif trigger is Trigger.HIGHER_EPOCH:
            assert not role.holds_node  # only recorded when not holding the Node
        else:
            assert trigger is Trigger.SWITCHOVER_TIMEOUT
            assert role is not Role.SUSPENDING  # ignored outside a switchover


def test_configured_primary_starts_primary() -> None:
    """The configured primary, seeing its backup, claims the next epoch and serves."""
    m = RoleMachine(configured_primary=True, epoch=7)
    assert m.handle(PartnerSeen(primary=False, epoch=7)) == [ClaimEpoch(7, 8)]
    assert m.role is Role.CLAIMING
    assert m.handle(ClaimWon(8)) == [Fence(8), RecoverSessions(8)]
    assert (m.role, m.epoch) == (Role.PRIMARY, 8)


def test_configured_primary_alone_starts_primary() -> None:
    """With no partner reachable at start-up, the configured primary claims the Node."""
    m = RoleMachine(configured_primary=True, epoch=0)
    assert m.handle(PartnerLost()) == [ClaimEpoch(0, 1)]


def test_returning_primary_joins_as_backup() -> None:
    """A configured primary whose partner already is primary joins as backup."""
    m = RoleMachine(configured_primary=True, epoch=4)
    assert m.handle(PartnerSeen(primary=True, epoch=5)) == []
    assert (m.role, m.epoch) == (Role.BACKUP, 5)


def test_backup_starts_backup() -> None:
    """The configured backup starts as backup, whatever its partner's mode."""
    for primary in (True, False):
        m = RoleMachine(configured_primary=False, epoch=1)
        assert m.handle(PartnerSeen(primary=primary, epoch=1)) == []
        assert m.role is Role.BACKUP


def test_backup_takes_over_when_primary_lost() -> None:
    """A backup losing its primary claims epoch+1 and, on winning, recovers sessions."""
    m = RoleMachine(configured_primary=False, epoch=2)
    m.handle(PartnerSeen(primary=True, epoch=2))
    assert m.handle(PartnerLost()) == [ClaimEpoch(2, 3)]
    assert m.handle(ClaimWon(3)) == [Fence(3), RecoverSessions(3)]
    assert (m.role, m.epoch, m.role.mode) == (Role.PRIMARY, 3, "primary")


def test_lost_claim_with_partner_connected_goes_back_to_backup() -> None:
    """Losing the compare-and-set while the partner is connected: the partner leads."""
    m = RoleMachine(configured_primary=True, epoch=3)
    m.handle(PartnerSeen(primary=False, epoch=3))  # claims 3 -> 4
    assert m.handle(ClaimLost(current=9)) == []
    assert (m.role, m.epoch) == (Role.BACKUP, 9)


def test_lost_claim_alone_retries_from_the_store_epoch() -> None:
    """A backup whose epoch was out of date when its primary vanished claims again."""
    b = RoleMachine(configured_primary=False, epoch=0)
    b.handle(PartnerSeen(primary=False, epoch=0))  # the primary was still starting
    assert b.handle(PartnerLost()) == [ClaimEpoch(0, 1)]  # it had won epoch 1 meanwhile
    assert b.handle(ClaimLost(current=1)) == [ClaimEpoch(1, 2)]
    assert b.handle(ClaimWon(2)) == [Fence(2), RecoverSessions(2)]


@pytest.mark.parametrize(
    "news",
    [
        PartnerSeen(primary=True, epoch=EPOCH + 2),
        PartnerSeen(primary=False, epoch=EPOCH + 2),
        EpochObserved(EPOCH + 2),
        Fenced(EPOCH + 1),
    ],
    ids=["partner-primary", "partner-backup", "store", "refused"],
)
def test_primary_steps_down_on_higher_epoch(news: Event) -> None:
    """Any sign of a higher epoch makes a primary a backup at once."""
    m = machine_in(Role.PRIMARY)  # holds EPOCH + 1
    assert m.handle(news) == [StepDown()]
    assert (m.role, m.epoch) == (Role.BACKUP, EPOCH + 2)


def test_old_refusals_and_lower_epochs_change_nothing() -> None:
    """A refusal of a command from an older term, or a stale epoch, is not news."""
    m = machine_in(Role.PRIMARY)
    assert m.handle(Fenced(EPOCH)) == []
    assert m.handle(EpochObserved(EPOCH)) == []
    assert m.handle(PartnerSeen(primary=True, epoch=EPOCH)) == []
    assert (m.role, m.epoch) == (Role.PRIMARY, EPOCH + 1)


def test_win_superseded_before_it_was_heard_is_a_loss() -> None:
    """A won claim is void if a higher epoch was seen meanwhile (someone claimed past it)."""
    m = machine_in(Role.CLAIMING)  # claiming EPOCH -> EPOCH+1, partner lost
    m.handle(EpochObserved(EPOCH + 2))
    assert m.handle(ClaimWon(EPOCH + 1)) == [ClaimEpoch(EPOCH + 2, EPOCH + 3)]
    assert (m.role, m.epoch) == (Role.CLAIMING, EPOCH + 2)
    m.handle(PartnerSeen(primary=True, epoch=EPOCH + 3))
    assert m.handle(ClaimLost(EPOCH + 3)) == []
    assert m.role is Role.BACKUP


def test_claim_answers_outside_a_claim_are_the_callers_bug() -> None:
    """Claim results are only valid while claiming; the machine is left unchanged."""
    m = machine_in(Role.PRIMARY)
    with pytest.raises(RoleError):
        m.handle(ClaimWon(EPOCH + 2))
    with pytest.raises(RoleError):
        m.handle(ClaimLost(EPOCH + 2))
    assert (m.role, m.epoch) == (Role.PRIMARY, EPOCH + 1)
    c = machine_in(Role.CLAIMING)
    with pytest.raises(RoleError, match="answers no claim"):
        c.handle(ClaimWon(EPOCH + 5))
    assert c.handle(ClaimWon(EPOCH + 1))  # the real answer still works


def test_fenced_backup_does_not_fight_a_partner_it_cannot_see() -> None:
    """After a cut between the halves, the fenced old primary stays backup: no flapping."""
    a = RoleMachine(configured_primary=True, epoch=0)
    a.handle(PartnerSeen(primary=False, epoch=0))
    a.handle(ClaimWon(1))
    a.handle(PartnerLost())  # the cut; a is still primary
    assert a.handle(Fenced(1)) == [StepDown()]  # the backup took over behind the cut
    assert a.handle(PartnerLost()) == []  # lost again (reconnect failed): no claim
    assert a.role is Role.BACKUP
    # Once it sees the partner again and then loses it, it takes over as usual.
    a.handle(PartnerSeen(primary=True, epoch=2))
    assert a.handle(PartnerLost()) == [ClaimEpoch(2, 3)]


def test_two_backups_the_configured_primary_leads() -> None:
    """If both halves are backup, the configured primary claims; the other waits."""
    a = machine_in(Role.BACKUP, configured_primary=True)
    b = machine_in(Role.BACKUP, configured_primary=False)
    assert a.handle(PartnerSeen(primary=False, epoch=EPOCH)) == [ClaimEpoch(EPOCH, EPOCH + 1)]
    assert b.handle(PartnerSeen(primary=False, epoch=EPOCH)) == []


def test_news_older_than_the_known_epoch_is_ignored() -> None:
    """A partner report below the known epoch is stale (a SIGCONT'd process reading its
    socket buffer, or a fenced primary): it must not make anyone claim or step down."""
    a = RoleMachine(configured_primary=True, epoch=5)
    assert a.handle(PartnerSeen(primary=True, epoch=4)) == []
    assert a.role is Role.STARTING
    assert a.handle(PartnerSeen(primary=False, epoch=4)) == []
    b = RoleMachine(configured_primary=True, epoch=2)
    b.handle(PartnerSeen(primary=True, epoch=2))
    assert b.role is Role.BACKUP
    assert b.handle(PartnerSeen(primary=False, epoch=1)) == []
    assert b.role is Role.BACKUP


def test_graceful_switchover_between_two_machines() -> None:
    """Primary suspends and hands over; backup claims; primary steps down on the new epoch."""
    p = RoleMachine(configured_primary=True, epoch=0)
    b = RoleMachine(configured_primary=False, epoch=0)
    p.handle(PartnerSeen(primary=False, epoch=0))
    p.handle(ClaimWon(1))
    b.handle(PartnerSeen(primary=True, epoch=1))
    p.handle(PartnerSeen(primary=False, epoch=1))

    assert p.handle(SwitchoverRequested()) == [HandOver()]
    assert (p.role, p.role.mode, p.role.creates_sessions) == (Role.SUSPENDING, "primary", False)
    assert b.handle(SwitchoverRequested()) == [ClaimEpoch(1, 2)]
    assert b.handle(ClaimWon(2)) == [Fence(2), RecoverSessions(2)]
    assert p.handle(PartnerSeen(primary=True, epoch=2)) == [StepDown()]
    assert (p.role, b.role) == (Role.BACKUP, Role.PRIMARY)


def test_switchover_without_backup_is_refused() -> None:
    """A primary with no connected backup refuses to switch over and stays primary."""
    m = machine_in(Role.PRIMARY)
    assert m.handle(SwitchoverRequested()) == [SwitchoverFailed("no backup is connected")]
    assert m.role is Role.PRIMARY


@pytest.mark.parametrize("event", [PartnerLost(), SwitchoverTimedOut()], ids=repr)
def test_failed_handover_resumes_primary(event: Event) -> None:
    """Losing the backup or timing out while suspending resumes primary service."""
    m = machine_in(Role.SUSPENDING)
    [failed] = m.handle(event)
    assert isinstance(failed, SwitchoverFailed)
    assert m.role is Role.PRIMARY


def test_switchover_timeout_outside_a_switchover_is_ignored() -> None:
    """A late timeout after the handover completed changes nothing."""
    m = machine_in(Role.BACKUP)
    assert m.handle(SwitchoverTimedOut()) == []
    assert m.role is Role.BACKUP


def test_stopping_primary_steps_down_and_ignores_late_claims() -> None:
    """Stop is final; a primary steps down first; a claim answered after stop is dropped."""
    assert machine_in(Role.PRIMARY).handle(StopRequested()) == [StepDown()]
    c = machine_in(Role.CLAIMING)
    assert c.handle(StopRequested()) == []
    assert c.handle(ClaimWon(EPOCH + 1)) == []
    assert c.role is Role.STOPPED


def test_modes_for_status() -> None:
    """Roles map onto the three ``status`` modes of the contract."""
    assert {r: r.mode for r in Role} == {
        Role.STARTING: "starting",
        Role.BACKUP: "backup",
        Role.CLAIMING: "backup",
        Role.PRIMARY: "primary",
        Role.SUSPENDING: "primary",
        Role.STOPPED: "backup",
    }
    assert repr(Role.PRIMARY) == "PRIMARY"


def test_fenced_primary_does_not_claim_back_when_its_dead_links_close() -> None:
    """A primary frozen (SIGSTOP) past a takeover steps down on the store's higher epoch;
    the links that died meanwhile then close, and that must not make it claim the Node."""
    a = RoleMachine(configured_primary=True, epoch=1)
    a.handle(PartnerSeen(primary=False, epoch=1))
    a.handle(ClaimWon(2))
    assert a.role is Role.PRIMARY
    assert a.handle(EpochObserved(3)) == [StepDown()]
    assert role_of(a) is Role.BACKUP
    assert a.handle(PartnerLost()) == []
    assert role_of(a) is Role.BACKUP
    # Seen again as primary, then lost for real: now it takes over.
    a.handle(PartnerSeen(primary=True, epoch=3))
    assert a.handle(PartnerLost()) == [ClaimEpoch(3, 4)]


def test_a_handover_is_taken_by_a_backup_only() -> None:
    """The partner's handover hands the Node to a backup, which claims it. Claiming or
    holding the Node already, an application takes it for nothing: read as a switchover
    request, it made a new primary hand the Node straight back to a partner that was
    stopping (`orsim search`, seed 113)."""
    b = machine_in(Role.BACKUP, configured_primary=False)
    b.handle(PartnerSeen(primary=True, epoch=EPOCH))
    assert b.handle(HandedOver()) == [ClaimEpoch(EPOCH, EPOCH + 1)]
    for role in (Role.STARTING, Role.CLAIMING, Role.PRIMARY, Role.SUSPENDING):
        m = machine_in(role)
        assert m.handle(HandedOver()) == []
        assert role_of(m) is role
