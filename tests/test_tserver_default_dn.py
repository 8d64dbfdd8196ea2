"""TServer/default-dn in a whole simulated cluster (virtual time)."""

from __future__ import annotations

from pathlib import Path

import attrs
import trio
import trio.testing

from orsim.config import load_database
from orsim.testing import open_sim_cluster

TOPOLOGY = Path(__file__).parent.parent / "scenarios" / "topologies" / "demo.yaml"


async def test_calls_nobody_routes_go_to_default_dn(autojump_clock: trio.testing.MockClock) -> None:
    """With every ORS down, a T-Server with default-dn sends each call there at its
    router-timeout (ors-domain.md section 7): default_routed, not lost; set back to empty
    (a live change), the next calls are lost again."""
    db = load_database(TOPOLOGY)
    sip = db.applications["SIP_Server"]
    options = {**sip.options, "TServer": {**sip.options.get("TServer", {}), "default-dn": "9999"}}
    db = attrs.evolve(db, applications={**db.applications, "SIP_Server": attrs.evolve(
        sip, options=options)})  # fmt: skip
    async with open_sim_cluster(db, start_nodes=False) as sim:
        await sim.request("generate", rate=10, duration=2)
        await trio.sleep(15)
        ledger = await sim.ledger()
        assert (ledger.created, ledger.default_routed, ledger.lost) == (20, 20, 0)
        records = (await sim.request("ledger", records=True))["records"]
        assert {r["state"] for r in records} == {"default_routed"}
        await sim.set_option("SIP_Server", "TServer", "default-dn", "")
        await trio.sleep(1)
        await sim.request("generate", rate=10, duration=1)
        await trio.sleep(15)
        ledger = await sim.ledger()
        assert (ledger.created, ledger.default_routed, ledger.lost) == (30, 20, 10)
