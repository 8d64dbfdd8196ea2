"""`orsim demo`: start the demo cluster and show a failover (``make run``).

The show: calls flow, the primary of Node 1 is killed, its backup takes over, the killed
application is started again and rejoins as backup, and the T-Server's ledger tells how
many calls were lost or routed twice. Then the cluster stays up until Ctrl-C (or stops at
once with ``--no-wait``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import trio

from orsim.cluster._handle import ClusterHandle
from orsim.cluster._render import status_table
from orsim.cluster._status import ClusterStatus, app_mode, app_row, mode_changed_at
from orsim.cluster.cli import make_console, progress_display
from orsim.errors import EXIT_OK, ClusterError, OrsimError
from orsim.runtime import run_cancellable

DEMO_CONFIG = Path("scenarios/topologies/demo.yaml")
DEMO_RUN_DIR = Path(".orsim/demo")
#: How long the show waits for each step (failover, restart, calls draining).
STEP_TIMEOUT = 20.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="start the demo cluster and show a failover",
        description="Start scenarios/topologies/demo.yaml, kill a primary under load, "
        "watch its backup take over, restart it.",
    )
    parser.add_argument(
        "--config",
        default=None,
        metavar="CONFIG.yaml",
        help=f"the database to run (default {DEMO_CONFIG})",
    )
    parser.add_argument("--run-dir", default=str(DEMO_RUN_DIR), metavar="DIR")
    parser.add_argument("--ports", choices=("given", "auto"), default="given")
    parser.add_argument("--rate", type=float, default=20.0, help="calls per second (20)")
    parser.add_argument(
        "--no-wait",
        action="store_true",
        help="stop the cluster after the show instead of staying up",
    )
    parser.set_defaults(func=run, command_name="demo")


def _config(path: str | None) -> Path:
    if path is not None:
        return Path(path)
    if DEMO_CONFIG.exists():
        return DEMO_CONFIG
    # Run from elsewhere than the checkout: the file sits next to the package.
    return Path(__file__).resolve().parents[2] / DEMO_CONFIG


def takeover_ms(status: ClusterStatus, app: str, killed_at: float, seen_at: float) -> float:
    """How long after the kill (wall clock) ``app`` became primary, as ``status``, asked
    at ``seen_at``, shows it (``mode_changed_at``)."""
    row = app_row(status, app)
    since = row.get("mode_since") if row is not None else None
    return (mode_changed_at(since, killed_at, seen_at) - killed_at) * 1000.0


def run(args: argparse.Namespace) -> int:
    console = make_console()
    err = make_console(stderr=True)

    async def main() -> int:
        console.rule("orsim demo: starting the cluster")
        with progress_display(err) as progress:
            handle = await ClusterHandle.up(
                _config(args.config), args.run_dir, ports=args.ports, progress=progress
            )
        try:
            await show(handle)
            if args.no_wait:
                return EXIT_OK
            console.print(
                "the cluster stays up (try `orsim cluster status --run-dir "
                f"{args.run_dir}`); Ctrl-C stops it"
            )
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                with trio.move_on_after(2):
                    try:
                        await handle.stop_load()
                    except OrsimError:
                        pass  # the T-Server is gone already: nothing to stop
                err.print("stopping the cluster...")
                await handle.down()
        return EXIT_OK

    async def show(handle: ClusterHandle) -> None:
        status = await handle.status()
        console.print(status_table(status))
        nodes = sorted(
            (a for a in status["apps"] if a["type"] == "OrchestrationServer"),
            key=lambda a: (a["node_id"], a["mode"] != "primary"),
        )
        if not nodes:
            raise ClusterError("the demo database has no ORS application")
        node_id = nodes[0]["node_id"]
        pair = [a["app"] for a in nodes if a["node_id"] == node_id]
        victim = next(
            (a["app"] for a in nodes if a["node_id"] == node_id and a["mode"] == "primary"), pair[0]
        )
        heir = next((app for app in pair if app != victim), None)

        console.rule(f"load: {args.rate:g} calls/s into the SIP Server")
        await handle.load(args.rate)
        status = await handle.wait_for(lambda s: (s["calls"]["routed"] or 0) >= 10, STEP_TIMEOUT)
        console.print(f"calls are flowing: {status['calls']['routed']} routed")

        console.rule(f"kill -9 {victim} (primary of Node {node_id})")
        killed_at = time.time()
        await handle.kill(victim, "KILL")
        if heir is not None:
            status = await handle.wait_for(lambda s: app_mode(s, heir) == "primary", STEP_TIMEOUT)
            took = takeover_ms(status, heir, killed_at, time.time())
            console.print(f"[bold green]{heir} is primary[/] {took:.0f} ms after the kill")
        console.print(status_table(await handle.status()))

        console.rule(f"restart {victim}")
        await handle.start(victim)
        await handle.wait_for(lambda s: app_mode(s, victim) == "backup", STEP_TIMEOUT)
        console.print(f"{victim} is back, as backup")

        routed = (await handle.ledger()).counts.routed
        await handle.wait_for(lambda s: (s["calls"]["routed"] or 0) >= routed + 10, STEP_TIMEOUT)
        await handle.stop_load()
        status = await handle.wait_for(lambda s: s["calls"]["in_flight"] == 0, STEP_TIMEOUT)
        console.print(status_table(status))
        calls = status["calls"]
        verdict = (
            "[bold green]no call lost[/]"
            if calls["lost"] == 0
            else (f"[bold red]{calls['lost']} calls lost[/]")
        )
        console.print(
            f"{verdict}, {calls['duplicates']} routed twice, "
            f"{calls['routed']} of {calls['created']} routed"
        )

    return run_cancellable(main)
