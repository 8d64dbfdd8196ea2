"""``orsim search TOPOLOGY.yaml... [--schedules N] [--seed S] [--max-steps K] [--out DIR]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from orsim.errors import UsageError

DEFAULT_OUT = Path(".orsim/search")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from orsim.node import MUTATIONS
    from orsim.search._schedule import FAULT_KINDS

    parser = subparsers.add_parser(
        "search",
        help="search fault schedules in simulation for a failover bug, shrink what fails",
        description=(
            "Generate fault schedules (a load, then timed crashes, hangs, restarts, "
            "partitions, delays, store stalls and outages, Configuration Server crashes, "
            "switchovers and live option changes) with hypothesis, and run each on the "
            "topology in the seeded simulation. Every run is checked for lost calls, "
            "calls routed twice, two primaries of a Node at one epoch, sessions created "
            "twice, and a Node without a primary once everything is repaired. The first "
            "violation is shrunk to the shortest schedule that fails the same way and "
            "written under --out as a scenario file (replay it with `orsim scenario run "
            "--sim FILE`). Exit 0: every schedule ran clean; 1: a violation was found."
        ),
    )
    parser.add_argument("topologies", nargs="+", metavar="TOPOLOGY", help="topology YAML files")
    parser.add_argument(
        "--schedules", type=int, default=200, metavar="N",
        help="schedules to run per topology (default 200)",
    )  # fmt: skip
    parser.add_argument(
        "--seed", type=int, default=0, metavar="S", help="the search's seed (default 0)"
    )
    parser.add_argument(
        "--max-steps", type=int, default=8, metavar="K",
        help="most chosen steps in a schedule (default 8)",
    )  # fmt: skip
    parser.add_argument(
        "--max-shrink-runs", type=int, metavar="R",
        help=(
            "stop shrinking a violation after R runs and write the smallest schedule "
            "found by then (default: shrink until no smaller schedule fails alike)"
        ),
    )  # fmt: skip
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, metavar="DIR",
        help=f"where found scenarios and summary.json go (default {DEFAULT_OUT})",
    )  # fmt: skip
    parser.add_argument(
        "--jobs", type=int, default=1, metavar="J",
        help="search in J processes (seeds S, S+1, ...); the first violation wins",
    )  # fmt: skip
    parser.add_argument(
        "--faults", metavar="KINDS",
        help=(
            "draw only these kinds of fault, comma-separated (repairs and pauses always): "
            + ", ".join(FAULT_KINDS)
        ),
    )  # fmt: skip
    parser.add_argument(
        "--mutation", choices=sorted(MUTATIONS), metavar="NAME",
        help=(
            "test-only: inject a known bug, to see the search find it (one of "
            + ", ".join(sorted(MUTATIONS)) + ")"
        ),
    )  # fmt: skip
    parser.set_defaults(func=search_command, command_name="search")


def search_command(args: argparse.Namespace) -> int:
    from orsim.search._search import search, write_summary

    if args.schedules < 1 or args.max_steps < 1 or args.jobs < 1:
        raise UsageError("--schedules, --max-steps and --jobs must be at least 1")
    if args.max_shrink_runs is not None and args.max_shrink_runs < 0:
        raise UsageError("--max-shrink-runs must be 0 or more")
    faults = None
    if args.faults:
        from orsim.search._schedule import check_fault_kinds

        faults = frozenset(k.strip() for k in args.faults.split(",") if k.strip())
        try:
            check_fault_kinds(faults)
        except ValueError as exc:
            raise UsageError(f"--faults: {exc}") from None
    results = []
    for topology in args.topologies:
        print(f"== searching {topology}: {args.schedules} schedules, seed {args.seed}", flush=True)
        result = search(
            topology,
            budget=args.schedules,
            seed=args.seed,
            max_steps=args.max_steps,
            out_dir=args.out,
            jobs=args.jobs,
            mutation=args.mutation,
            progress=sys.stderr,
            faults=faults,
            max_shrink_runs=args.max_shrink_runs,
        )
        results.append(result)
        tally = result.tally
        rate = tally.schedules / result.wall_s if result.wall_s else 0.0
        print(
            f"-- {tally.schedules} schedules ({tally.virtual_s:.0f} s simulated) in"
            f" {result.wall_s:.1f} s, {rate:.1f} schedules/s, {tally.violations} violation(s)",
            flush=True,
        )
        found = result.found
        if found is not None:
            same = "" if found.replayed else " (WARNING: the written file did not fail again)"
            print(f"VIOLATION {found.reason}", flush=True)
            print(
                f"shrunk to {len(found.schedule.steps)} step(s) in {found.shrink_runs} runs:"
                f" {found.path}{same}",
                flush=True,
            )
            print(f"replay: orsim scenario run --sim {found.path}", flush=True)
            break
    summary = args.out / "summary.json"
    write_summary(results, summary)
    print(f"summary: {summary}")
    return 1 if any(r.found is not None for r in results) else 0
