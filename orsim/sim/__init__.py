"""The whole cluster in one process, in seeded virtual time.

The production servers (Configuration Server, T-Server, URS, ORS nodes) run as tasks of
one trio run, linked by an in-memory network with faults (``orsim.wire.MemoryNetwork``)
and sharing an in-memory session store, under ``trio.testing.MockClock``: minutes of
cluster life take seconds, and a run is repeated exactly from its seed.

Low level, for tests of server behaviour::

    async with open_sim_cluster(db, seed=1) as sim:      # a SimCluster
        sim.crash("ORS_1"); sim.freeze("ORS_2"); sim.thaw("ORS_2")
        sim.partition("ORS_1", "ORS_1_B"); sim.delay("ORS_1", "SIP_Server", 300)
        sim.stall_store(); sim.stall_store(resume=True)
        await sim.start("ORS_1"); await sim.set_option(obj, section, key, value)
        await sim.ledger(); sim.nodes["ORS_1"].mode; sim.trace.digest()

The launcher's verbs (what the scenario runner and the pytest plugin drive)::

    handle = await SimClusterHandle.up("topology.yaml", nursery=nursery, seed=1)
    await handle.status()            # the real launcher's JSON shape, ``store`` included
    await handle.kill("ORS_1", "STOP"); await handle.start("ORS_1"); ...
    await handle.down()

A whole run, deterministic::

    result = run_seeded(main, seed=1)    # trio.run in virtual time (SimClock), seeded

See ``orsim.sim._handle`` for how signals and start-up are modelled.
"""

from __future__ import annotations

from orsim.sim._cluster import CONFSERV as CONFSERV
from orsim.sim._cluster import SIM_EPOCH as SIM_EPOCH
from orsim.sim._cluster import SimCluster as SimCluster
from orsim.sim._cluster import open_sim_cluster as open_sim_cluster
from orsim.sim._cluster import run_id_of as run_id_of
from orsim.sim._cluster import sim_wall as sim_wall
from orsim.sim._cluster import start_order as start_order
from orsim.sim._handle import START_DELAY as START_DELAY
from orsim.sim._handle import STOP_GRACE as STOP_GRACE
from orsim.sim._handle import SimClusterHandle as SimClusterHandle
from orsim.sim._run import SimClock as SimClock
from orsim.sim._run import run_seeded as run_seeded
from orsim.sim._run import seed_scheduler as seed_scheduler
from orsim.sim._run import sim_clock as sim_clock
from orsim.sim._trace import TIME_DIGITS as TIME_DIGITS
from orsim.sim._trace import Trace as Trace
from orsim.sim._trace import vtime as vtime

__all__ = [
    "CONFSERV",
    "SIM_EPOCH",
    "START_DELAY",
    "STOP_GRACE",
    "TIME_DIGITS",
    "SimClock",
    "SimCluster",
    "SimClusterHandle",
    "Trace",
    "open_sim_cluster",
    "run_id_of",
    "run_seeded",
    "seed_scheduler",
    "sim_clock",
    "sim_wall",
    "start_order",
    "vtime",
]
