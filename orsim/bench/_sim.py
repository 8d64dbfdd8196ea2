"""The simulation's own speed: how far ahead of real time ``--sim`` runs.

Two measurements, each made in a child process of its own (``python -m
orsim.bench._sim``, one JSON line on stdout), so its peak memory is its own and no
trio or logging state carries over:

``library``  a library-style scenario of ``seconds`` virtual seconds on
             ``scenarios/topologies/two-nodes.yaml`` (2 Nodes): 30 calls/s, ORS_1
             killed (SIGKILL) and started again, ORS_2 stopped (SIGSTOP) and continued,
             run as ``orsim scenario run --sim`` runs it (runner, sampling, logs). Speed
             is virtual seconds per wall second of the whole run; a lost or duplicated
             call, or any failed expectation, makes the run a failure.
``cluster``  ``nodes`` Nodes (a primary and a backup each, one cluster list, every ORS
             application linked to every other, a Node's two halves both ways:
             ``2 * nodes**2`` links) in one process: the wall time until every
             application is primary or backup (started as the launcher starts them,
             primaries at once, then backups), then until every link is up; then
             ``rate`` calls/s for ``load_s`` virtual seconds: calls routed per wall
             second, lost and duplicated; the process's peak RSS by then (the
             teardown, which drops every link at once, is not the cluster's).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import trio

import orsim
from orsim.bench._stats import Row
from orsim.bench._topology import topology_yaml

if TYPE_CHECKING:
    from orsim.config import ConfigDatabase

#: The 2-Node topology of the scenario library.
TWO_NODES = Path(orsim.__file__).resolve().parent.parent / "scenarios/topologies/two-nodes.yaml"
LIBRARY_RATE = 30.0
#: Virtual seconds per wall second the library run should reach.
SPEED_TARGET = 100.0
#: The library run's quiet stretches, as shares of its sleeping time: under load,
#: after the crash, after the restart, while ORS_2 is stopped, after it continues.
_PHASES = (10, 5, 10, 5, 28)
#: The library run's faults, one after each quiet stretch but the last, each with what
#: must follow it.
_FAULTS = (
    ("kill: ORS_1", "expect: {app: ORS_1_B, mode: primary, within: 5}"),
    ("start: ORS_1", "expect: {app: ORS_1, mode: backup, within: 5}"),
    ("stop: ORS_2", "expect: {app: ORS_2_B, mode: primary, within: 6}"),
    ("continue: ORS_2", "expect: {app: ORS_2, mode: backup, within: 6}"),
)
_FINAL_EXPECTATIONS = ("calls_lost: 0", "calls_duplicated: 0", "split_brain: never")
#: Virtual seconds the library run spends outside its sleeps (the takeovers, the
#: restart's start-up, the drain at the end): taken off the sleeps so the run lasts
#: about ``seconds``.
_NOT_SLEEPING_S = 2.0
#: Longest wait (virtual s) for every link of a big cluster, and for its calls to end.
MESH_TIMEOUT_S = 60.0
DRAIN_TIMEOUT_S = 15.0
SEED = 7


def library_scenario(seconds: float, topology: Path = TWO_NODES) -> str:
    """The library-style scenario (YAML) lasting about ``seconds`` virtual seconds."""
    sleeping = max(seconds - _NOT_SLEEPING_S, 1.0)
    sleeps = [f"sleep: {sleeping * share / sum(_PHASES):.3f}" for share in _PHASES]
    steps = [f"load: {{rate: {LIBRARY_RATE:g}}}"]
    for sleep, (fault, then) in zip(sleeps[:-1], _FAULTS, strict=True):
        steps += [sleep, fault, then]
    steps += [sleeps[-1], "load: stop", *(f"expect: {{{e}}}" for e in _FINAL_EXPECTATIONS)]
    return f"""\
name: sim-bench-library
description: {seconds:g} s library-style run, 2 Nodes, {LIBRARY_RATE:g} calls/s, a crash, a hang
topology: {topology}
seed: {SEED}
steps:
""" + "".join(f"  - {step}\n" for step in steps)


def measure_library(seconds: float, topology: Path = TWO_NODES) -> Row:
    """Run the library-style scenario once, in this process; its row."""
    # The simulation's modules (servers, node, sim) are imported before the clock starts:
    # a library of scenarios imports them once, and the speed is the simulation's
    # (importing them is about 0.06 s, 5% of a 60 s run's wall time).
    import orsim.sim  # noqa: F401
    from orsim.scenario import load_all, run_scenario_sim, sim_logs

    with tempfile.TemporaryDirectory(prefix="orsim-bench-sim-") as tmp:
        path = Path(tmp) / "library.yaml"
        path.write_text(library_scenario(seconds, topology))
        (scenario,) = load_all([path])
        started = time.perf_counter()
        with sim_logs(Path(tmp) / "logs" / "sim.jsonl"):
            result, trace = run_scenario_sim(
                scenario, run_dir=Path(tmp), seed=SEED, out=lambda _line: None
            )
        wall = time.perf_counter() - started
    counts = result.ledger.counts if result.ledger else None
    virtual = result.timeline.duration
    failed = [v.label for v in result.verdicts if not v.passed]
    return {
        "kind": "library",
        "nodes": 2,
        "virtual_s": virtual,
        "wall_s": wall,
        "speed": virtual / wall if wall > 0 else None,
        "calls": counts.created if counts else None,
        "routed": counts.routed if counts else None,
        "lost": counts.lost if counts else None,
        "duplicates": counts.duplicates if counts else None,
        "failed_expectations": failed,
        "trace": trace.digest(),
        "peak_rss_mb": _peak_rss_mb(),
    }


def measure_cluster(nodes: int, rate: float, load_s: float) -> Row:
    """Start a ``nodes``-Node cluster in this process and load it; its row."""
    from orsim.config import load_database
    from orsim.scenario import sim_logs
    from orsim.sim import run_seeded

    with tempfile.TemporaryDirectory(prefix="orsim-bench-sim-") as tmp:
        path = Path(tmp) / "cluster.yaml"
        path.write_text(topology_yaml(nodes))
        db = load_database(path)
        with sim_logs(Path(tmp) / "logs" / "sim.jsonl"):
            row: Row = run_seeded(_cluster_run, db, nodes, rate, load_s, seed=SEED)
    return row


async def _cluster_run(db: ConfigDatabase, nodes: int, rate: float, load_s: float) -> Row:
    from orsim.sim import open_sim_cluster, start_order

    started = time.perf_counter()
    async with open_sim_cluster(db, start_nodes=False, seed=SEED) as sim:
        _, ors = start_order(db)
        for wave in ([a for a in ors if not db.applications[a].is_backup],
                     [a for a in ors if db.applications[a].is_backup]):  # fmt: skip
            async with trio.open_nursery() as nursery:
                for app in wave:
                    nursery.start_soon(sim.start, app)
        settled = time.perf_counter()
        settled_v = trio.current_time()
        links = sum(len(n.core.peers.app_nodes) for n in sim.nodes.values())

        def meshed() -> bool:
            return all(
                all(n.core.peers.is_live(a) for a in n.core.peers.app_nodes)
                for n in sim.nodes.values()
            )

        await sim.wait_until(meshed, MESH_TIMEOUT_S)
        mesh = time.perf_counter()
        mesh_v = trio.current_time()
        before = await sim.ledger()
        await sim.request("generate", rate=rate, duration=load_s)
        await trio.sleep(load_s)
        await sim.request("stop_generator")
        with trio.move_on_after(DRAIN_TIMEOUT_S):
            while (await sim.ledger()).in_flight:
                await trio.sleep(0.1)
        loaded = time.perf_counter()
        after = await sim.ledger()
        # Before the teardown, which makes garbage of every link at once.
        peak = _peak_rss_mb()
    routed = after.routed - before.routed
    load_wall = loaded - mesh
    return {
        "kind": "cluster",
        "nodes": nodes,
        "apps": 2 * nodes,
        # Each application counts its peers; a link joins two of them.
        "links": links // 2 + nodes,
        "settle_s": settled - started,
        "settle_virtual_s": settled_v,
        "mesh_s": mesh - started,
        "mesh_virtual_s": mesh_v,
        "offered_per_s": rate,
        "load_virtual_s": load_s,
        "load_wall_s": load_wall,
        "calls": after.created - before.created,
        "routed": routed,
        "calls_per_s": routed / load_wall if load_wall > 0 else None,
        "lost": after.lost - before.lost,
        "duplicates": after.duplicates - before.duplicates,
        "in_flight": after.in_flight,
        "peak_rss_mb": peak,
    }


def _peak_rss_mb() -> float:
    """This process's peak resident set (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def library_ok(row: Row) -> bool:
    """A library run counts only if no call was lost or duplicated and every
    expectation held."""
    return (
        "error" not in row
        and row.get("lost") == 0
        and row.get("duplicates") == 0
        and not row.get("failed_expectations")
    )


async def measure_in_child(args: Sequence[str]) -> Row:
    """Run ``python -m orsim.bench._sim ARGS`` and return the row it prints.

    Raises:
        RuntimeError: the child failed (its last lines of stderr say why).
    """
    done = await trio.run_process(
        [sys.executable, "-m", "orsim.bench._sim", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"exit status {done.returncode}: {' | '.join(tail)}")
    row: Row = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return row


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orsim.bench._sim", description=__doc__)
    sub = parser.add_subparsers(dest="kind", required=True)
    library = sub.add_parser("library", help="the 2-Node library-style run")
    library.add_argument("--seconds", type=float, default=60.0)
    cluster = sub.add_parser("cluster", help="a big cluster in one process")
    cluster.add_argument("--nodes", type=int, default=100)
    cluster.add_argument("--rate", type=float, default=50.0)
    cluster.add_argument("--load-s", type=float, default=4.0)
    args = parser.parse_args(argv)
    if args.kind == "library":
        row = measure_library(args.seconds)
    else:
        row = measure_cluster(args.nodes, args.rate, args.load_s)
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
