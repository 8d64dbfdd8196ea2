"""Measure a session store's per-call cost: one create and one delete per call, as a node
does (``--put``: a put instead of the create, the node's former path).

    python -m orsim.store.bench [--calls N] [--concurrency 1,8] [--put] [URL ...]

Without a URL it measures a SQLite file in a temporary directory. Each URL gets its own
Node ID far from real ones, and the sessions it writes are deleted again.
"""

from __future__ import annotations

import argparse
import itertools
import secrets
import tempfile
import time
from pathlib import Path

import trio

from orsim.store._open import open_store
from orsim.store._protocol import SessionStore
from orsim.store._session import Session

#: A Node ID no configuration uses (DBIDs are small positive numbers).
BENCH_NODE_ID = 999_999_001


# Call IDs unique across runs: a created call's claim outlives it (CLAIM_TTL).
_RUN = secrets.token_hex(4)
_runs = itertools.count()


async def _one_call(store: SessionStore, call_id: str, put: bool) -> None:
    session = Session(
        call_id=call_id, node_id=BENCH_NODE_ID, epoch=1, dn="5000", state="created",
        target="Agent_1", created_at=time.time(), data={"app": "bench"},
    )  # fmt: skip
    if put:
        await store.put_session(session)
    elif not await store.create_session(session):
        raise SystemExit(f"bench call {call_id} is owned by another Node; clear the store")
    await store.delete_session(BENCH_NODE_ID, 1, call_id)


async def measure(store: SessionStore, calls: int, concurrency: int, *, put: bool = False) -> float:
    """Run ``calls`` create+delete (or put+delete) pairs over ``concurrency`` tasks; return
    operations per second."""
    current = await store.current_epoch(BENCH_NODE_ID)
    if current < 1:
        await store.claim_epoch(BENCH_NODE_ID, current, 1)
    elif current > 1:
        raise SystemExit(f"bench node {BENCH_NODE_ID} is at epoch {current}; clear the store")
    per_task = max(1, calls // concurrency)
    run = f"bench-{_RUN}-{next(_runs)}"

    async def worker(w: int) -> None:
        for i in range(per_task):
            await _one_call(store, f"{run}-{w}-{i}", put)

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for w in range(concurrency):
            nursery.start_soon(worker, w)
    elapsed = trio.current_time() - start
    return 2 * per_task * concurrency / elapsed


async def _run(urls: list[str], calls: int, levels: list[int], base_dir: Path, put: bool) -> None:
    for url in urls:
        store = await open_store(url, base_dir)
        try:
            for level in levels:
                rate = await measure(store, calls, level, put=put)
                print(
                    f"{url:40} concurrency={level:<3} {rate:9.0f} ops/s "
                    f"({rate / 2:8.0f} calls/s, {1e6 / rate:7.0f} us/op)",
                    flush=True,
                )
        finally:
            await store.aclose()


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; prints one line per store URL and concurrency level."""
    parser = argparse.ArgumentParser(prog="python -m orsim.store.bench", description=__doc__)
    parser.add_argument("urls", nargs="*", metavar="URL", help="store URLs to measure")
    parser.add_argument("--calls", type=int, default=500, help="calls per run (default 500)")
    parser.add_argument(
        "--concurrency", default="1,8", help="comma list of concurrent tasks (default 1,8)"
    )
    parser.add_argument(
        "--put", action="store_true", help="put+delete per call instead of create+delete"
    )
    args = parser.parse_args(argv)
    levels = [int(x) for x in args.concurrency.split(",") if x.strip()]
    with tempfile.TemporaryDirectory(prefix="orsim-bench-") as tmp:
        urls = args.urls or ["sqlite:///bench.db"]
        trio.run(_run, urls, args.calls, levels, Path(tmp), args.put)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
