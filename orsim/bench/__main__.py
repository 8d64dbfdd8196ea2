"""``python -m orsim.bench [--runs N] [--only SECTIONS] [--quick] [--out DIR]``."""

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
    parser.add_argument("--runs", type=int, default=3, help="runs per measurement (median)")
    parser.add_argument("--only", help=f"comma list of sections: {','.join(SECTIONS)}")
    parser.add_argument("--quick", action="store_true", help="1 run, fewer sizes and rates")
    parser.add_argument(
        "--out", type=Path, default=Path("bench/results"), help="where the JSON goes"
    )
    args = parser.parse_args(argv)
    try:
        only = parse_only(args.only)
    except ValueError as exc:
        parser.error(str(exc))
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    plan = make_plan(args.quick, args.runs)
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
