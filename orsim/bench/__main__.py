"""``python -m orsim.bench [--runs N] [--only SECTIONS] [--quick] [--out DIR]``, or
``python -m orsim.bench --soak N [--quick] [--out DIR]`` (``make soak``)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from functools import partial
from pathlib import Path

import trio

from orsim.bench import __doc__ as SUITE_DOC
from orsim.bench import _soak
from orsim.bench._progress import say
from orsim.bench._report import (
    failures,
    git_commit,
    medians,
    render_table,
    results_document,
    table_rows,
    write_results,
)
from orsim.bench._suite import SECTIONS, make_plan, parse_only, run_suite


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m orsim.bench",
        description=SUITE_DOC,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--runs", type=int, help="runs per measurement (median; 3)")
    parser.add_argument("--only", help=f"comma list of sections: {','.join(SECTIONS)}")
    parser.add_argument("--quick", action="store_true", help="1 run, fewer sizes and rates")
    parser.add_argument(
        "--soak",
        type=int,
        metavar="N",
        help="instead of the suite: N failover runs, the fault kinds in turn (with --quick"
        " addp 1 s only), each counted ok or failed; exit status 1 if any failed",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("bench/results"), help="where the JSON goes"
    )
    args = parser.parse_args(argv)
    if args.soak is not None:
        if args.soak < 1:
            parser.error("--soak must be at least 1")
        if args.only is not None or args.runs is not None:
            parser.error("--soak makes failover runs only, N of them: drop --only and --runs")
        return _soak.main(args.soak, make_plan(args.quick).failovers, args.out)
    try:
        only = parse_only(args.only)
    except ValueError as exc:
        parser.error(str(exc))
    runs = 3 if args.runs is None else args.runs
    if runs < 1:
        parser.error("--runs must be at least 1")
    plan = make_plan(args.quick, runs)
    say(f"orsim bench: {', '.join(only)}; {plan.runs} run(s) each; {os.cpu_count()} cores")
    sections = trio.run(partial(run_suite, plan, only))
    now = datetime.now().astimezone()
    document = results_document(
        sections,
        now=now,
        cores=os.cpu_count(),
        python=sys.version.split()[0],
        commit=git_commit(),
        options={"runs": plan.runs, "quick": args.quick, "only": list(only)},
    )
    path = write_results(document, args.out, now)
    print(render_table(table_rows(medians(sections), failures(sections))))
    say(f"results written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
