"""Session recovery proven (ors-domain.md section 6): a primary crashes holding sessions;
its backup recovers exactly those from the store and routes them, none twice."""

from __future__ import annotations

from pathlib import Path

import attrs
import trio
import trio.testing

from orsim.config import load_database
from orsim.testing import open_sim_cluster

TOPOLOGY = Path(__file__).parent.parent / "scenarios" / "topologies" / "demo.yaml"


async def test_backup_recovers_and_routes_the_crashed_primarys_sessions(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A URS think time keeps sessions open; ORS_1 crashes with some: ORS_1_B reports
    sessions_recovered > 0, routes those very calls, and the ledger has 0 lost, 0 dup."""
    db = load_database(TOPOLOGY)
    urs = db.applications["URS"]
    slow = attrs.evolve(urs, options={**urs.options, "urs": {**urs.options.get("urs", {}),
                                                             "think-time-ms": "400"}})  # fmt: skip
    db = attrs.evolve(db, applications={**db.applications, "URS": slow})
    async with open_sim_cluster(db) as sim:
        await sim.request("generate", rate=40, duration=6)
        await trio.sleep(2)
        held = set(sim.nodes["ORS_1"].core.calls)
        assert held, "ORS_1 holds sessions when it crashes"
        sim.crash("ORS_1")
        await sim.wait_until(lambda: sim.mode("ORS_1_B") == "primary", timeout=5)
        await trio.sleep(12)
        assert sim.nodes["ORS_1_B"].core.sessions_recovered > 0
        records = {r["call_id"]: r for r in (await sim.request("ledger", records=True))["records"]}
        recovered_by_b = {c for c in held if records[c]["app"] == "ORS_1_B"}
        assert recovered_by_b == held, {c: records[c]["app"] for c in held}
        ledger = await sim.ledger()
        assert ledger.lost == 0 and ledger.duplicates == 0, ledger
        assert ledger.routed == ledger.created == 240
