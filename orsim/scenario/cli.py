"""``orsim scenario run FILE... [--junit OUT.xml] [--report OUT.html] [--seed N] [--sim]
[--store URL]``,
``orsim scenario replay RUN_DIR --sim [--seed N]`` and ``orsim scenario check FILE...``."""

from __future__ import annotations

import argparse
import functools
import os
import sys
from pathlib import Path

from orsim.errors import UsageError
from orsim.scenario._session import DEFAULT_RUN_ROOT, RunOptions, load_all, run_files
from orsim.scenario._store import STORE_ENV, store_factory
from orsim.store import parse_store_url


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "scenario",
        help="run failover scenarios against a fresh local cluster",
        description="Scenario-driven failover tests (see scenarios/ for a library).",
    )
    sub = parser.add_subparsers(dest="scenario_command", metavar="SUBCOMMAND")
    parser.set_defaults(func=lambda args: _usage(parser))

    run = sub.add_parser("run", help="run scenarios, print a timeline and verdicts")
    run.add_argument("files", nargs="+", metavar="FILE", help="scenario YAML files")
    run.add_argument("--junit", type=Path, metavar="OUT.xml", help="write JUnit XML")
    run.add_argument("--report", type=Path, metavar="OUT.html", help="write an HTML report")
    run.add_argument("--seed", type=int, metavar="N", help="override every scenario's seed")
    run.add_argument(
        "--sim", action="store_true",
        help="run every server in one process in seeded virtual time (prints a trace hash)",
    )  # fmt: skip
    run.add_argument(
        "--store", metavar="URL",
        help=f"replace every topology's persistence/store by URL, e.g. redis://127.0.0.1:6390/0"
        f" (default ${STORE_ENV}; a local Redis that is not running is started)",
    )  # fmt: skip
    run.add_argument(
        "--run-dir", type=Path, default=DEFAULT_RUN_ROOT, metavar="DIR",
        help=f"where each scenario's run directory goes (default {DEFAULT_RUN_ROOT})",
    )  # fmt: skip
    run.set_defaults(func=run_command, command_name="scenario run")

    replay = sub.add_parser(
        "replay",
        help="re-run a run's recorded seed and fault schedule in simulation",
        description=(
            "Re-run the scenario of RUN_DIR (a run directory of `orsim scenario run`, real "
            "or --sim) in simulation with its recorded seed, each fault, repair, load and "
            "option step at its recorded offset; print the verdicts, how each compares "
            "with the recorded one, and the trace hash. Exit 0 if every verdict matches, "
            "1 if any differs, 3 if RUN_DIR holds no usable schedule.json."
        ),
    )
    replay.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a scenario run directory")
    replay.add_argument(
        "--sim", action="store_true", help="replay in simulation (the only replay there is)"
    )
    replay.add_argument("--seed", type=int, metavar="N", help="use this seed, not the recorded one")
    replay.add_argument(
        "--report", type=Path, metavar="OUT.html", help="write an HTML report of the replay"
    )
    replay.add_argument(
        "--run-dir", type=Path, dest="replay_root", metavar="DIR",
        help="where the replay's run directory goes (default RUN_DIR/replay)",
    )  # fmt: skip
    replay.set_defaults(func=replay_command, command_name="scenario replay")

    check = sub.add_parser("check", help="validate scenario files without running them")
    check.add_argument("files", nargs="+", metavar="FILE")
    check.set_defaults(func=check_command, command_name="scenario check")


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _print(line: str) -> None:
    print(line, flush=True)


def run_command(args: argparse.Namespace) -> int:
    store = args.store if args.store is not None else os.environ.get(STORE_ENV) or None
    if args.sim and store is not None:
        if args.store is not None:
            raise UsageError("--store is for real processes; --sim keeps sessions in memory")
        print(f"orsim scenario run: --sim keeps sessions in memory; {STORE_ENV} is not used",
              file=sys.stderr)  # fmt: skip
    options: RunOptions = {
        "run_root": args.run_dir,
        "junit": args.junit,
        "report": args.report,
        "seed": args.seed,
        "out": _print,
    }
    if args.sim:
        from orsim.scenario._sim import run_files_sim

        return run_files_sim(args.files, **options)
    # SIGINT/SIGTERM cancel the run: the runner's teardown (shielded) then brings the
    # cluster down, so no process outlives the command.
    from orsim.runtime import EXIT_INTERRUPTED, run_cancellable
    from orsim.scenario._runner import launch_cluster

    if store is not None:
        parse_store_url(store, args.run_dir)  # a bad URL: one line, before anything runs
        _print(f"every scenario's persistence/store: {store}")
    code = run_cancellable(
        functools.partial(
            run_files,
            args.files,
            factory=launch_cluster if store is None else store_factory(store),
            **options,
        )
    )
    if code == EXIT_INTERRUPTED:
        print("orsim scenario run: interrupted; the cluster was stopped", file=sys.stderr)
    return code


def replay_command(args: argparse.Namespace) -> int:
    if not args.sim:
        raise UsageError("only a simulated replay exists: orsim scenario replay RUN_DIR --sim")
    from orsim.scenario._replay import replay

    return replay(
        args.run_dir, seed=args.seed, run_root=args.replay_root, report=args.report, out=_print
    )


def check_command(args: argparse.Namespace) -> int:
    for scenario in load_all(args.files):
        print(
            f"{scenario.source}: ok ({scenario.name}, {len(scenario.steps)} steps, "
            f"{len(scenario.expectations)} expectations)"
        )
    return 0
