"""An adoption answered after its application stepped down carries nothing on.

Noticed while fixing another bug: ORS_2 stepped down at 6.50 s and, at 6.53 s, the
answer to its adoption round (``Adopted``) arrived: 13 sessions moved into its Node,
stamped with the newer epoch it had just learned, and it carried them on as a backup
(later fencing refused its routes). A backup must never carry on calls, and the moved
sessions must not be stranded: they are the Node's, so its holder carries them on.

The adopter moves each session at the epoch its round began under
(``AdoptOrphans.epoch``), so the store takes a move only while the Node is still at that
epoch: before a new holder's claim, whose recovery reads after it and finds the session.
A move after that claim is refused, and the session stays with the dead Node for the
next adopter.
"""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import pytest
from helpers import claimed_primary, core_settings

from orsim.node._core import (
    CALL_COMMANDS,
    ORPHAN_GRACE,
    Adopted,
    AdoptOrphans,
    Command,
    EpochClaimed,
    EpochRead,
    FenceAnswered,
    FenceTServer,
    LoadOrphans,
    MemberAnnounced,
    NodeCore,
    OrphansLoaded,
    PeerLinkDown,
    PeerLinkUp,
    QueryCall,
    SessionsLoaded,
)
from orsim.node._membership import MemberInfo
from orsim.node._runtime import OrsNode
from orsim.node._settings import NodeSettings, PeerApp
from orsim.scenario._sim import run_files_sim
from orsim.store import MemoryStore, Session

ROOT = Path(__file__).resolve().parent.parent
CREATED = 1_700_000_000.5
#: When dead Node 2's orphan round is due (its last link went down at 1.0).
ROUND = 1.0 + ORPHAN_GRACE


def _settings() -> NodeSettings:
    """A, primary of Node 1 (backup B), and P2, the only application of Node 2."""
    base = core_settings(partner=True)
    p2 = PeerApp("P2", 2, "DC", "127.0.0.1", 3, is_backup=False)
    return attrs.evolve(base, peers=(*base.peers, p2), nodes={1: "DC", 2: "DC"})


def _orphan(call_id: str) -> Session:
    """Dead Node 2's stored session of ``call_id``."""
    return Session(
        call_id=call_id, node_id=2, epoch=1, dn="5000", state="created", created_at=CREATED
    )


def _moved(call_id: str, epoch: int = 1) -> Session:
    """``call_id``'s session as the adoption moved it into Node 1."""
    return attrs.evolve(_orphan(call_id), node_id=1, epoch=epoch)


def _adopting(*call_ids: str) -> tuple[NodeCore, AdoptOrphans]:
    """A, primary of Node 1 at epoch 1, its round adopting dead Node 2's ``call_ids``
    (its ``AdoptOrphans`` not answered yet)."""
    core = NodeCore(_settings(), wall=CREATED + 5)
    core.start(0.0)
    core.handle(PeerLinkUp("B"), 0.0)
    core.handle(MemberAnnounced(MemberInfo("B", 1, "DC", "backup", 0)), 0.0)
    claimed_primary(core)
    core.handle(PeerLinkUp("P2"), 0.0)
    core.handle(MemberAnnounced(MemberInfo("P2", 2, "DC", "primary", 1)), 0.0)
    core.handle(PeerLinkDown("P2"), 1.0)
    assert LoadOrphans(2) in core.tick(ROUND)
    orphans = tuple(_orphan(c) for c in call_ids)
    (adopt,) = core.handle(OrphansLoaded(2, orphans), ROUND + 0.01)
    assert adopt == AdoptOrphans(2, orphans, epoch=1)
    return core, adopt


def _step_down(core: NodeCore, how: str) -> None:
    """B took the Node over at epoch 2: A reads it in the store, or B says so and the
    T-Server refuses A's fence."""
    if how == "epoch-read":
        core.handle(EpochRead(2), ROUND + 0.05)
    else:
        out = core.handle(MemberAnnounced(MemberInfo("B", 1, "DC", "primary", 2)), ROUND + 0.05)
        assert FenceTServer(1) in out
        core.handle(FenceAnswered(1, refused=True), ROUND + 0.06)
    assert core.mode == "backup"


def _call_steps(commands: list[Command]) -> list[Command]:
    return [c for c in commands if isinstance(c, CALL_COMMANDS)]


@pytest.mark.parametrize("how", ["epoch-read", "refused-fence"])
@pytest.mark.parametrize("moved_at", [1, 2], ids=["round-epoch", "epoch-learned"])
def test_a_backup_carries_on_no_session_its_adoption_moved(how: str, moved_at: int) -> None:
    """Moved at the round's epoch (as the runtime does) or at the one it learned (as it
    did), a backup carries none of them on."""
    core, _ = _adopting("c1", "c2")
    _step_down(core, how)
    moved = (_moved("c1", moved_at), _moved("c2", moved_at))
    out = core.handle(Adopted(2, moved), ROUND + 0.1)
    assert _call_steps(out) == []
    assert not core.calls
    later = [c for t in (ROUND + 0.5, ROUND + 1.0, ROUND + 3.0) for c in core.tick(t)]
    assert _call_steps(later) == []


def test_the_nodes_holder_carries_them_on_from_its_recovery() -> None:
    """B, the configured backup, takes the Node over once A is gone: its recovery, read
    after its claim, finds the sessions A moved before it (the store took no later move)."""
    settings = attrs.evolve(
        _settings(),
        app="B",
        configured_backup=True,
        partner="A",
        peers=(PeerApp("A", 1, "DC", "127.0.0.1", 1, is_backup=False), _settings().peers[1]),
    )
    core = NodeCore(settings, epoch=1)
    core.start(0.0)
    core.handle(PeerLinkUp("A"), 0.0)
    core.handle(MemberAnnounced(MemberInfo("A", 1, "DC", "primary", 1)), 0.0)
    assert core.mode == "backup"
    core.handle(PeerLinkDown("A"), 1.0)
    core.handle(EpochClaimed(2, True, 2), 1.0)
    core.handle(FenceAnswered(2), 1.0)
    out = core.handle(SessionsLoaded((_moved("c1"),), 2), 1.0)
    assert QueryCall("c1") in out and core.mode == "primary"


def test_the_holder_at_the_rounds_epoch_carries_them_on() -> None:
    core, _ = _adopting("c1")
    assert QueryCall("c1") in core.handle(Adopted(2, (_moved("c1"),)), ROUND + 0.1)


@attrs.define(eq=False)
class _FencingTServer:
    """The T-Server link of an adopter: every fence is confirmed."""

    async def call(self, request: object, timeout: float) -> object:
        return None


@attrs.define(eq=False)
class _ClaimedMidRound(MemoryStore):
    """A store in which B claims Node 1 at epoch 2 right after the first move."""

    on_first_move: list[object] = attrs.Factory(list)

    async def adopt_session(self, session: Session, from_node: int, from_epoch: int) -> bool:
        moved = await super().adopt_session(session, from_node, from_epoch)
        if self.on_first_move:
            hook = self.on_first_move.pop()
            assert callable(hook)
            await hook()
        return moved


async def test_a_move_after_the_nodes_new_claim_is_refused_and_left_to_the_next_round() -> None:
    """The runtime: A's round moves c1, then B claims the Node (epoch 2) and A learns it,
    then the round tries c2. c1 is in Node 1 for B's recovery; c2, refused, stays with
    dead Node 2 for the next adopter; A, a backup, carries on neither."""
    core, adopt = _adopting("c1", "c2")
    store = _ClaimedMidRound()
    assert await store.claim_epoch(1, 0, 1)
    assert await store.claim_epoch(2, 0, 1)
    for call_id in ("c1", "c2"):
        assert await store.create_session(_orphan(call_id))
    ors = OrsNode(_settings(), network=None, store=store)  # type: ignore[arg-type]  # unused
    ors.core = core
    ors._tserver = _FencingTServer()  # type: ignore[assignment]

    async def b_takes_the_node() -> None:
        assert await store.claim_epoch(1, 1, 2)
        ors.feed(EpochRead(2))

    store.on_first_move.append(b_takes_the_node)
    await ors._adopt_orphans(adopt)
    assert core.mode == "backup" and not core.calls
    assert [(s.call_id, s.epoch) for s in await store.sessions(1)] == [("c1", 1)]
    assert [s.call_id for s in await store.sessions(2)] == ["c2"]


def test_in_the_simulation_no_backup_is_handed_the_sessions_it_adopted(tmp_path: Path) -> None:
    """The run it was seen in: the library's mutual adoption (ORS_1 and ORS_2 cut from
    each other, each finds the other's Node dead) at seed 0. ORS_2 stepped down at
    6.50 s (ORS_1 had fenced its Node); at 6.53 s its adoption moved 13 sessions into
    Node 105 at epoch 2, and it carried them on as a backup."""
    scenario = ROOT / "scenarios" / "search-adoption-holds-new-creations.yaml"
    assert run_files_sim([scenario], run_root=tmp_path, seed=0, out=lambda _: None) == 0
    log = tmp_path / scenario.stem / "logs" / "sim.jsonl"
    mode: dict[str, str] = {}
    adopted_as = []
    for line in log.read_text().splitlines():
        entry = json.loads(line)
        if entry["event"] == "mode_changed":
            mode[entry["app"]] = entry["mode"]
        elif entry["event"] == "sessions_adopted":
            adopted_as.append((entry["app"], mode[entry["app"]], entry["vt"]))
    assert all(m == "primary" for _, m, _ in adopted_as), adopted_as
