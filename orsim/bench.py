"""``make bench``: orsim's benchmarks, each a number measured in this run.

1. wire codec: messages encoded+decoded per second;
2. one Node (real processes over TCP): calls/s and p50/p99 routing latency at a fixed
   offered rate, from the T-Server ledger;
3. failover gap of a 2-Node cluster for SIGKILL and SIGSTOP of a primary under load:
   from the signal to the backup reporting ``primary``, and to its first routed call.

Speed is measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from orsim.wire import FrameDecoder, Message, Push, Request, encode

TOPOLOGIES = Path(__file__).resolve().parent.parent / "scenarios" / "topologies"


def bench_codec(messages: int = 50_000) -> float:
    """Encode and decode ``messages`` typical messages; returns messages per second."""
    sample: list[Message] = [
        Request(1, "route", {"call_id": "SIP_Server-1-1", "target": "Agent_1", "app": "ORS_1",
                             "node_id": 103, "epoch": 2}),
        Push("route_request", {"call_id": "SIP_Server-1-1", "dn": "5000",
                               "created_at": 1.0, "deadline": 11.0}),
    ]  # fmt: skip
    start = time.perf_counter()
    decoder = FrameDecoder()
    count = 0
    for i in range(messages):
        decoder.receive_data(encode(sample[i % 2]))
        decoder.next_message()
        count += 1
    return count / (time.perf_counter() - start)


async def bench_one_node(calls: int, rate: float) -> dict[str, Any]:
    """Drive ``calls`` calls at ``rate``/s through a one-Node cluster of real processes."""
    from orsim.cluster import ClusterHandle

    with tempfile.TemporaryDirectory() as tmp:
        cluster = await ClusterHandle.up(TOPOLOGIES / "single.yaml", Path(tmp), ports="auto")
        try:
            started = time.time()
            await cluster.load(rate=rate, duration=calls / rate)
            with trio.fail_after(calls / rate + 60):
                while True:
                    ledger = await cluster.ledger()
                    if ledger["created"] >= calls and ledger["in_flight"] == 0:
                        break
                    await trio.sleep(0.2)
            elapsed = time.time() - started
        finally:
            await cluster.down()
    return {
        "offered_rate": rate,
        "calls": ledger["created"],
        "routed": ledger["routed"],
        "lost": ledger["lost"],
        "duplicates": ledger["duplicates"],
        "calls_per_s": round(ledger["routed"] / elapsed, 1),
        "latency_p50_ms": ledger["latency_p50_ms"],
        "latency_p99_ms": ledger["latency_p99_ms"],
    }


async def bench_failover(signal: str, rate: float = 40.0) -> dict[str, Any]:
    """Failover gap of Node 1 of the demo cluster when its primary gets ``signal``."""
    from orsim.cluster import ClusterHandle

    with tempfile.TemporaryDirectory() as tmp:
        cluster = await ClusterHandle.up(TOPOLOGIES / "demo.yaml", Path(tmp), ports="auto")
        try:
            await cluster.load(rate=rate, duration=10)
            await trio.sleep(3)
            fault = time.time()
            await cluster.kill("ORS_1", signal=signal)
            await cluster.wait_for(
                lambda s: any(a["app"] == "ORS_1_B" and a["mode"] == "primary" for a in s["apps"]),
                timeout=30,
            )
            primary_ms = (time.time() - fault) * 1000
            with trio.fail_after(60):
                while (ledger := await cluster.ledger())["in_flight"] or ledger["created"] < 400:
                    await trio.sleep(0.2)
            records = (await cluster.ledger(records=True))["records"]
            firsts = [
                r["routed_at"] for r in records if r.get("app") == "ORS_1_B" and r.get("routed_at")
            ]
            serving_ms = (min(firsts) - fault) * 1000 if firsts else None
        finally:
            await cluster.down()
    return {
        "signal": signal,
        "backup_primary_after_ms": round(primary_ms),
        "first_call_routed_by_backup_after_ms": None if serving_ms is None else round(serving_ms),
        "lost": ledger["lost"],
        "duplicates": ledger["duplicates"],
    }


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    print("wire codec ...", file=sys.stderr)
    results["codec_messages_per_s"] = round(bench_codec())
    print("one Node, real processes ...", file=sys.stderr)
    results["one_node"] = await bench_one_node(args.calls, args.rate)
    for signal in ("KILL", "STOP"):
        print(f"failover gap, SIG{signal} ...", file=sys.stderr)
        results[f"failover_{signal.lower()}"] = await bench_failover(signal)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orsim.bench", description=__doc__)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=300.0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    results = trio.run(_run, args)
    if args.json:
        print(json.dumps(results))
    else:
        for key, value in results.items():
            print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
