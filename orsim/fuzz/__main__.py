"""``python -m orsim.fuzz``: fuzz every target, one process per target, ``--jobs`` at once.

Prints one line per target (inputs, seconds, inputs/s, memory before and after, the
outcomes) and the failing inputs; exits 1 if any target crashed or hung.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

from orsim.fuzz import NAMES, Report, fuzz

DEFAULT_INPUTS = 1_000_000
#: The slowest targets go first, so the last process is not left alone with one.
SLOWEST_FIRST = ("node", "confserv", "codec", "tserver", "urs")
#: Memory a target may gain over a run before it counts as a leak (its own state, such
#: as the T-Server's ledger, grows a little with every call it is told of).
LEAK_MB = 256


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orsim.fuzz", description=__doc__)
    parser.add_argument(
        "--inputs",
        type=int,
        default=DEFAULT_INPUTS,
        metavar="N",
        help=f"inputs per target (default {DEFAULT_INPUTS:,})",
    )
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="seed (default 0)")
    parser.add_argument("--only", metavar="T,T", help=f"targets (default all: {','.join(NAMES)})")
    parser.add_argument(
        "--jobs",
        type=int,
        default=2,
        metavar="J",
        help="targets fuzzed at once, one process each (default 2)",
    )
    args = parser.parse_args(argv)  # fmt: skip
    targets = args.only.split(",") if args.only else list(NAMES)
    unknown = sorted(set(targets) - set(NAMES))
    if unknown or args.inputs < 1 or args.jobs < 1:
        parser.error(f"unknown targets {unknown}" if unknown else "--inputs/--jobs must be >= 1")
    print(f"fuzzing {', '.join(targets)}: {args.inputs:,} inputs each, seed {args.seed}, "
          f"{args.jobs} at once", flush=True)  # fmt: skip
    started = time.perf_counter()
    reports: list[Report] = []
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        ordered = sorted(targets, key=lambda t: SLOWEST_FIRST.index(t))
        futures = [pool.submit(fuzz, t, args.inputs, args.seed) for t in ordered]
        for future in as_completed(futures):
            report = future.result()
            reports.append(report)
            print(report.line(), flush=True)
            for example in report.examples:
                print(f"    {example}", flush=True)
    failed = [r for r in reports if r.failures or r.rss_end_mb - r.rss_start_mb > LEAK_MB]
    total = sum(r.inputs for r in reports)
    verdict = "FAIL: " + ", ".join(r.target for r in failed) if failed else "ok"
    print(f"{total:,} inputs in {time.perf_counter() - started:.0f} s; "
          f"crashes {sum(r.outcomes['crash'] for r in reports)}, "
          f"hangs {sum(r.outcomes['hang'] for r in reports)}; {verdict}")  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
