"""`orsim search` finds known bugs by itself: each test-only mutation (``ORSIM_MUTATION``)
is found within a small budget and shrunk (in a few runs) to a scenario of at most 6
chosen steps, and the written file fails the same way when run as `orsim scenario run
--sim` runs it."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import TOPOLOGIES

from orsim.node._mutations import MUTATIONS, active_mutation
from orsim.scenario._load import load_scenario
from orsim.search import search

TOPOLOGY = TOPOLOGIES / "pair-and-lone-slow-urs.yaml"
#: (mutation, search seed, what its violation is, budget, fault kinds): each found well
#: within its budget with this seed; a bug the search stops finding fails here. Adoption
#: needs a lone Node frozen for seconds while calls are in flight, the rarest schedule of
#: the four: that search draws only crashes, hangs and restarts (`--faults`).
HANGS = frozenset({"stop", "kill", "restart"})
#: A watch is a call's only way to be created when its creator is gone and no router
#: reconnects; a healed partition now closes the links it cut (routers reconnect and
#: hear the waiting calls again), so that search leaves delays, switchovers and store
#: faults out.
OUTAGES = frozenset({"stop", "kill", "restart", "partition"})
CASES = [
    # A takeover at the old epoch: the T-Server's fence refuses it (that epoch's holder is
    # the other application), so the Node is left without a primary.
    ("backup-skips-epoch", 7, "liveness", 100, None),
    ("reserved-ignores-claim", 1, "duplicated", 100, None),
    ("watcher-ignores-timeout", 4, "lost", 200, OUTAGES),
    ("adoption-skips-fence", 3, "duplicated", 200, HANGS),
]
MAX_STEPS = 6
#: Shrinking runs on for 130-150 runs here, ~20 s a case: a capped one still writes a
#: schedule that fails alike, which is what these tests check.
MAX_SHRINK_RUNS = 30


def test_every_mutation_has_a_case() -> None:
    assert sorted(case[0] for case in CASES) == sorted(MUTATIONS)


@pytest.mark.parametrize(
    ("mutation", "seed", "kind", "budget", "faults"), CASES, ids=[c[0] for c in CASES]
)
def test_search_finds_and_shrinks_the_injected_bug(
    mutation: str,
    seed: int,
    kind: str,
    budget: int,
    faults: frozenset[str] | None,
    tmp_path: Path,
) -> None:
    result = search(
        TOPOLOGY,
        budget=budget,
        seed=seed,
        mutation=mutation,
        out_dir=tmp_path,
        max_steps=MAX_STEPS,
        faults=faults,
        max_shrink_runs=MAX_SHRINK_RUNS,
    )
    assert active_mutation() is None, "the switch is off again after the search"
    found = result.found
    assert found is not None, f"{mutation} not found in {result.tally.schedules} schedules"
    assert found.outcome.violations[0].kind == kind
    assert len(found.schedule.steps) <= MAX_STEPS
    assert found.shrink_runs <= MAX_SHRINK_RUNS
    assert found.replayed, "the written scenario must fail the same way"
    scenario = load_scenario(found.path)
    assert mutation in scenario.description and found.outcome.trace_hash in scenario.description


@pytest.mark.parametrize("faults", [None, HANGS, OUTAGES], ids=["every-fault", "hangs", "outages"])
def test_the_same_schedules_run_clean_without_the_mutation(
    faults: frozenset[str] | None, tmp_path: Path
) -> None:
    """The budget above finds the bugs, not the topology: unmutated, it runs clean."""
    result = search(
        TOPOLOGY, budget=60, seed=2, out_dir=tmp_path, max_steps=MAX_STEPS, faults=faults
    )
    assert result.found is None, result.found and result.found.reason
    assert result.tally.schedules == 60
