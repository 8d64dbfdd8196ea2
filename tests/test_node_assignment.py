"""Assigned and Reserved Nodes by rendezvous hashing (orsim.node._assignment)."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orsim.node import _assignment
from orsim.node._assignment import Assignment, NodeInfo, assign, outweighed_at_home

CALLS = 10_000

node_ids = st.integers(min_value=1, max_value=10**9)
call_ids = st.text(min_size=1, max_size=40)
data_centers = st.sampled_from(["DC_East", "DC_West", "DC_North"])


@st.composite
def clusters(draw: st.DrawFn, min_size: int = 1, max_size: int = 16) -> dict[int, str]:
    """A cluster: distinct Node IDs, each in one of a few data centers."""
    ids = draw(st.sets(node_ids, min_size=min_size, max_size=max_size))
    return {node_id: draw(data_centers) for node_id in ids}


def many_calls(prefix: str) -> list[str]:
    return [f"{prefix}{i:06d}" for i in range(CALLS)]


@given(clusters(), call_ids, st.randoms(use_true_random=False))
def test_deterministic_and_order_independent(
    cluster: dict[int, str], call_id: str, rnd: random.Random
) -> None:
    """The answer depends only on the call and the set of Nodes, not on their order."""
    nodes = [NodeInfo(n, dc) for n, dc in cluster.items()]
    shuffled = nodes[:]
    rnd.shuffle(shuffled)
    first = assign(call_id, nodes)
    assert assign(call_id, shuffled) == first
    assert assign(call_id, dict(reversed(list(cluster.items())))) == first
    assert first.assigned in cluster


@given(clusters(), call_ids)
def test_reserved_differs_and_prefers_the_same_data_center(
    cluster: dict[int, str], call_id: str
) -> None:
    """The Reserved Node is another Node, in the Assigned Node's DC whenever one exists."""
    result = assign(call_id, cluster)
    if len(cluster) == 1:
        assert result.reserved is None
        return
    assert result.reserved is not None
    assert result.reserved != result.assigned
    home = cluster[result.assigned]
    others_at_home = [n for n, dc in cluster.items() if dc == home and n != result.assigned]
    if others_at_home:
        assert cluster[result.reserved] == home


@given(clusters(min_size=2), st.text(max_size=8))
@settings(max_examples=15, deadline=None)
def test_balanced(cluster: dict[int, str], prefix: str) -> None:
    """Over 10,000 calls no Node gets more than 1.3 times its fair share."""
    counts = Counter(assign(call, cluster).assigned for call in many_calls(prefix))
    fair = CALLS / len(cluster)
    assert max(counts.values()) <= 1.3 * fair, (counts, fair)
    assert set(counts) == set(cluster)


@given(clusters(min_size=2), st.data(), st.text(max_size=8))
@settings(max_examples=15, deadline=None)
def test_removing_a_node_moves_only_its_calls(
    cluster: dict[int, str], data: st.DataObject, prefix: str
) -> None:
    """When a Node leaves, only the calls it was Assigned change Node."""
    gone = data.draw(st.sampled_from(sorted(cluster)))
    smaller = {n: dc for n, dc in cluster.items() if n != gone}
    for call in many_calls(prefix)[:2000]:
        before, after = assign(call, cluster), assign(call, smaller)
        if before.assigned != gone:
            assert after.assigned == before.assigned
        else:
            assert after.assigned != gone


@given(clusters(max_size=15), node_ids, data_centers, st.text(max_size=8))
@settings(max_examples=15, deadline=None)
def test_adding_a_node_moves_calls_only_to_it(
    cluster: dict[int, str], new: int, dc: str, prefix: str
) -> None:
    """When a Node joins, a call either stays where it was or moves to the new Node."""
    bigger = {**cluster, new: cluster.get(new, dc)}
    for call in many_calls(prefix)[:2000]:
        before, after = assign(call, cluster), assign(call, bigger)
        assert after.assigned in (before.assigned, new)


@given(clusters(max_size=20), call_ids)
def test_outweighed_at_home_is_neither_assigned_nor_reserved(
    cluster: dict[int, str], call_id: str
) -> None:
    """The cheap test says "no part in the call" only of Nodes ``assign`` makes neither
    Assigned nor Reserved, and says it of every Node with two heavier Nodes in its data
    center (so most Nodes of a big cluster skip the full assignment)."""
    result = assign(call_id, cluster)
    for node_id, home in cluster.items():
        outweighed = outweighed_at_home(call_id, cluster, node_id)
        if outweighed:
            assert node_id not in (result.assigned, result.reserved)
        heavier = [
            n for n, dc in cluster.items()
            if dc == home and n != node_id
            and (_weight_of(n, call_id), n) > (_weight_of(node_id, call_id), node_id)
        ]  # fmt: skip
        assert outweighed == (len(heavier) >= 2)
    assert not outweighed_at_home(call_id, cluster, max(cluster) + 1)  # not a live Node


def test_outweighed_at_home_tie_goes_to_the_larger_node_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Equal weights are ranked by Node ID, as ``assign`` ranks them."""
    monkeypatch.setattr(_assignment, "_keyed_weight", lambda node_id, key: 7)
    monkeypatch.setattr(_assignment, "_WEIGHT_CACHE", {})
    cluster = {1: "A", 2: "A", 3: "A"}
    assert assign("tie", cluster) == Assignment(3, 2)
    assert outweighed_at_home("tie", cluster, 1)
    assert not outweighed_at_home("tie", cluster, 2)
    assert not outweighed_at_home("tie", cluster, 3)


def _weight_of(node_id: int, call_id: str) -> int:
    return _assignment._weight(node_id, call_id)


def test_single_node_has_no_reserved() -> None:
    """A lone Node is Assigned every call and has nobody to reserve."""
    assert assign("c1", {7: "DC"}) == Assignment(7, None)


def test_reserved_falls_back_to_another_data_center() -> None:
    """When the Assigned Node is alone in its DC, the Reserved Node is elsewhere."""
    cluster = {1: "East", 2: "West", 3: "West"}
    for call in many_calls("x")[:300]:
        result = assign(call, cluster)
        if result.assigned == 1:
            assert result.reserved in (2, 3)
        else:
            assert result.reserved == ({2, 3} - {result.assigned}).pop()


def test_known_answer_is_stable_across_processes() -> None:
    """The hash is blake2b, not Python's salted hash: answers are fixed forever."""
    assert assign("call-1", {101: "A", 102: "A", 103: "B"}) == assign(
        "call-1", [NodeInfo(103, "B"), NodeInfo(102, "A"), NodeInfo(101, "A")]
    )
    # Pinned value: a change here breaks agreement between orsim versions in one cluster.
    assert tuple(assign("call-1", {101: "A", 102: "A", 103: "B"})) == PINNED


PINNED = (102, 101)


def test_unpacks_as_a_pair() -> None:
    """``assigned, reserved = assign(...)`` works."""
    assigned, reserved = assign("c", {1: "A", 2: "A"})
    assert {assigned, reserved} == {1, 2}


def test_rejects_no_nodes_and_conflicting_data_centers() -> None:
    """An empty cluster or a Node in two DCs is the caller's error."""
    with pytest.raises(ValueError, match="no live Node"):
        assign("c", [])
    with pytest.raises(ValueError, match="two data centers"):
        assign("c", [NodeInfo(1, "A"), NodeInfo(1, "B")])
