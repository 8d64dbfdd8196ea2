"""Which Node of a cluster is Assigned to a call, and which Node is its Reserved Node.

Genesys does not publish its rule (ors-domain.md section 9), so orsim uses rendezvous
(highest-random-weight) hashing: every live Node gets a weight for the call, computed
from the pair (Node ID, call ID) alone, and the heaviest Node is Assigned.

Why rendezvous hashing:
- *Deterministic*: the weight is blake2b of ``f"{node_id}:{call_id}"``, never Python's
  ``hash`` (salted per process), so every ORS process of the cluster agrees without
  talking, whatever order it lists the Nodes in.
- *Even*: weights are uniform, so each of N Nodes wins about 1/N of the calls.
- *Stable*: a call's weights do not depend on the other Nodes, so a Node leaving moves
  only the calls it had won (to their runner-up), and a Node joining takes calls only
  for itself.

The Reserved Node is the heaviest *other* Node in the Assigned Node's data center, or,
when the Assigned Node is alone in its data center, the heaviest other Node anywhere.
The reference allows either ("in the same data center or in another one"); orsim
prefers the same data center because watching and taking over a call there is cheap and
survives a link cut between data centers. With one live Node there is no Reserved Node.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from hashlib import blake2b as _blake2b
from typing import Protocol

import attrs

__all__ = [
    "Assignment",
    "NodeInfo",
    "NodeLike",
    "assign",
    "home_rivals",
    "outweighed_at_home",
    "outweighed_by",
]

# 8 bytes of digest: 2**64 weights make ties between two Nodes practically impossible;
# a tie is still broken deterministically by the larger Node ID.
_DIGEST_SIZE = 8


class NodeLike(Protocol):
    """Anything that names a live Node and its data center."""

    @property
    def node_id(self) -> int: ...

    @property
    def data_center(self) -> str: ...


@attrs.frozen
class NodeInfo:
    """A live Node of the cluster, as far as assignment cares."""

    node_id: int
    data_center: str


@attrs.frozen
class Assignment:
    """Who answers for one call.

    Attributes:
        assigned: Node ID of the Assigned Node (its primary creates the session).
        reserved: Node ID of the Reserved Node (creates the session if the Assigned Node,
            both halves, did not), or None when the Assigned Node is the only live Node.
    """

    assigned: int
    reserved: int | None

    def __iter__(self) -> Iterator[int | None]:
        """Unpack as ``assigned, reserved = assign(...)``."""
        return iter((self.assigned, self.reserved))


def assign(call_id: str, live_nodes: Sequence[NodeLike] | Mapping[int, str]) -> Assignment:
    """Pick the Assigned and the Reserved Node of a call.

    Args:
        call_id: the call's ID (the T-Server's ConnID).
        live_nodes: the Nodes currently live, as ``NodeInfo``-like objects or as a
            mapping ``{node_id: data_center}``. Include the caller's own Node. Order does
            not matter.

    Returns:
        The ``Assignment``; the same inputs always give the same answer, in every process.

    Raises:
        ValueError: no live Node, or one Node ID listed with two data centers.
    """
    # A dict cannot list a Node twice: taken as it is (the usual case, from the core).
    nodes = live_nodes if type(live_nodes) is dict else _normalise(live_nodes)
    if not nodes:
        raise ValueError("no live Node to assign the call to")
    weights, key = _weights_of(call_id), _call_key(call_id)
    ranked = [(_remembered_weight(weights, node_id, key), node_id) for node_id in nodes]
    # The heaviest, then the heaviest of the rest (same data center first): scans, not
    # a sort, as every application asks for every call. Ties go to the larger Node ID.
    best = max(ranked)
    assigned = best[1]
    home = nodes[assigned]
    same_dc = other = None
    for item in ranked:
        if item is best:
            continue
        if nodes[item[1]] == home:
            if same_dc is None or item > same_dc:
                same_dc = item
        elif other is None or item > other:
            other = item
    runner_up = same_dc or other
    return Assignment(assigned, runner_up[1] if runner_up else None)


def outweighed_at_home(call_id: str, live_nodes: Mapping[int, str], node_id: int) -> bool:
    """Whether two other live Nodes of ``node_id``'s own data center outweigh it for the
    call: then it is neither the call's Assigned nor its Reserved Node, whatever the
    other weights (False: it may be either; ``assign`` says).

    Not Assigned: a heavier Node exists. Not Reserved: if the Assigned Node is in this
    data center, the Reserved Node is the heaviest of the others there, and one of the
    two still outweighs ``node_id``; if it is elsewhere, the Reserved Node is in the
    Assigned Node's data center, or, when that has no other live Node, the heaviest
    Node anywhere, which outweighs both.

    Every application hears every call (32 processes at 16 Nodes) and most of them have
    no part in it: this weighs ``node_id`` and as many of its data center as it takes
    to find two heavier, about 5 of 16 Nodes on average at 16 Nodes in 2 data centers,
    where ``assign`` weighs all 16. The weights are ``assign``'s own (and remembered
    alike), so the answer never contradicts it.
    """
    return outweighed_by(call_id, node_id, home_rivals(live_nodes, node_id))


def home_rivals(live_nodes: Mapping[int, str], node_id: int) -> tuple[int, ...]:
    """The other live Nodes of ``node_id``'s data center, for ``outweighed_by`` (none if
    ``node_id`` is not live itself). Found once for the many calls of one membership."""
    home = live_nodes.get(node_id)
    if home is None:
        return ()
    return tuple(n for n, dc in live_nodes.items() if dc == home and n != node_id)


def outweighed_by(call_id: str, node_id: int, rivals: Sequence[int]) -> bool:
    """Whether two of ``rivals`` (``home_rivals``) outweigh ``node_id`` for the call:
    ``outweighed_at_home``."""
    if len(rivals) < 2:
        return False
    weights, key = _weights_of(call_id), _call_key(call_id)
    mine = _remembered_weight(weights, node_id, key)
    heavier = 0
    for other in rivals:
        weight = _remembered_weight(weights, other, key)
        # Ties go to the larger Node ID, as in ``assign``.
        if weight > mine or (weight == mine and other > node_id):
            heavier += 1
            if heavier == 2:
                return True
    return False


#: Calls whose weights are remembered (the oldest forgotten first). A weight never
#: changes, and every application of a simulated cluster (one process) weighs every
#: call against every Node: 100 Nodes, 200 applications, 20,000 hashes a call.
_WEIGHT_CACHE_CALLS = 1024
_WEIGHT_CACHE: dict[str, dict[int, int]] = {}


def _remembered_weight(weights: dict[int, int], node_id: int, call_key: bytes) -> int:
    """``node_id``'s weight for the call whose weights ``_weights_of`` gave, computed
    (and remembered) the first time it is asked."""
    weight = weights.get(node_id)
    if weight is None:
        weight = weights[node_id] = _keyed_weight(node_id, call_key)
    return weight


def _weights_of(call_id: str) -> dict[int, int]:
    """The remembered weights of ``call_id`` by Node ID (filled in as they are needed)."""
    weights = _WEIGHT_CACHE.get(call_id)
    if weights is None:
        if len(_WEIGHT_CACHE) >= _WEIGHT_CACHE_CALLS:
            # Forgotten all at once: dropping the oldest entry one call at a time cost
            # a scan past every slot deleted before it (``next(iter(dict))``), which
            # took a tenth of an ORS's CPU at 16 Nodes. Forgotten weights are only
            # computed again, the same.
            _WEIGHT_CACHE.clear()
        weights = _WEIGHT_CACHE[call_id] = {}
    return weights


def _weight(node_id: int, call_id: str) -> int:
    """blake2b of ``f"{node_id}:{call_id}"`` (UTF-8), its 8 bytes as an integer."""
    return _keyed_weight(node_id, _call_key(call_id))


def _call_key(call_id: str) -> bytes:
    # surrogatepass: a call id may hold a lone surrogate (valid JSON, not UTF-8); every
    # Node must still weigh it, and the same way.
    return call_id.encode("utf-8", "surrogatepass")


#: blake2b having read ``f"{node_id}:"``, by Node ID: every ORS weighs calls against
#: the live Nodes (32 processes at 16 Nodes), so the call's half is encoded once and the
#: Node's half is hashed once, its state copied for each call (half the cost of hashing
#: the whole string). UTF-8 of a concatenation is the concatenation of the UTF-8s, and
#: hashing is streaming, so the weights are the very ones of the whole string.
_NODE_KEYS: dict[int, _blake2b] = {}


def _keyed_weight(node_id: int, call_key: bytes) -> int:
    state = _NODE_KEYS.get(node_id)
    if state is None:
        if len(_NODE_KEYS) >= _WEIGHT_CACHE_CALLS:
            _NODE_KEYS.clear()
        state = _NODE_KEYS[node_id] = _blake2b(f"{node_id}:".encode(), digest_size=_DIGEST_SIZE)
    digest = state.copy()
    digest.update(call_key)
    return int.from_bytes(digest.digest(), "big")


def _normalise(live_nodes: Sequence[NodeLike] | Mapping[int, str]) -> dict[int, str]:
    pairs: Iterable[tuple[int, str]]
    if isinstance(live_nodes, Mapping):
        pairs = live_nodes.items()
    else:
        pairs = ((node.node_id, node.data_center) for node in live_nodes)
    nodes: dict[int, str] = {}
    for node_id, data_center in pairs:
        if nodes.setdefault(node_id, data_center) != data_center:
            raise ValueError(
                f"Node {node_id} listed in two data centers: {nodes[node_id]!r}, {data_center!r}"
            )
    return nodes
