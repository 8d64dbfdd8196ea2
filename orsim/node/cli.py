"""``orsim node``: run one ORS application (a primary or backup half of a Node)."""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path

import trio

from orsim import __version__
from orsim.confserv import add_genesys_args, confserv_addresses
from orsim.errors import UsageError
from orsim.logs import configure_logging, get_logger
from orsim.node._live import follow_changes
from orsim.node._runtime import OrsNode
from orsim.node._startup import read_startup
from orsim.wire import TcpNetwork


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "node",
        help="run an ORS node application",
        description=(
            "Run one Orchestration Server application. -host/-port name the Configuration "
            "Server; the node listens on its own Application's host:port."
        ),
        allow_abbrev=False,
    )
    add_genesys_args(parser, required=False)
    parser.add_argument(
        "-cluster",
        "--cluster",
        metavar="C",
        help="read cluster options from the List transaction C (else legacy: application only)",
    )
    parser.add_argument(
        "-V", dest="print_version", action="store_true", help="print version and exit"
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.print_version:
        print(f"orsim node {__version__}")
        return 0
    missing = [
        flag
        for flag, value in (("-host", args.host), ("-port", args.port), ("-app", args.app))
        if value is None
    ]
    if missing:
        raise UsageError(f"missing required argument(s): {', '.join(missing)}")
    confserv_addresses(args)  # a half-given backup Configuration Server is a usage error
    configure_logging(level=args.log_level)
    trio.run(_serve, args)
    return 0


async def _serve(args: argparse.Namespace) -> None:
    """Run the node until it has stopped: the first SIGTERM/SIGINT stops it gracefully
    (a primary suspends, drains and hands over), a second one at once."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            node = await _main(args, nursery)

            async def watch() -> None:
                async for signum in signals:
                    node.log.info("signal", signal=signal.Signals(signum).name, mode=node.mode)
                    node.stop_gracefully()

            nursery.start_soon(watch)
            await node.exited.wait()
            nursery.cancel_scope.cancel()


async def _main(args: argparse.Namespace, nursery: trio.Nursery) -> OrsNode:
    from orsim.confserv.client import ConfServClient
    from orsim.store import open_shared_store

    network = TcpNetwork()
    addresses = confserv_addresses(args)
    client = await ConfServClient.connect(
        network,
        addresses,
        app=args.app,
        app_type="OrchestrationServer",
        timeout=args.connect_timeout,
    )
    async with client:
        startup = await read_startup(client, args.app, args.cluster)
    settings = startup.settings
    log = get_logger(app=settings.app, node_id=settings.node_id)
    for warning in startup.options.warnings:
        log.warning("cluster_option_ignored", detail=warning)
    log.info(
        "effective_configuration",
        cluster=settings.cluster,
        data_center=settings.data_center,
        partner=settings.partner,
        options=startup.options.to_json()["options"],
    )
    store = await open_shared_store(settings.store_url, Path.cwd(), network, nursery, app=args.app)
    listen = os.environ.get("ORSIM_LISTEN_PORT")
    node = OrsNode(settings, network, store, listen_port=int(listen) if listen else None)
    node.freeze_after_sessions = _test_freeze(args.app)
    node.log_level = args.log_level
    await nursery.start(node.run)
    nursery.start_soon(follow_changes, network, addresses, startup, node)
    return node


def _test_freeze(app: str) -> int | None:
    """``ORSIM_TEST_FREEZE=APP:N`` (tests only): freeze APP after its Nth session."""
    raw = os.environ.get("ORSIM_TEST_FREEZE", "")
    name, _, count = raw.partition(":")
    if name != app:
        return None
    if not count.isdigit() or int(count) < 1:
        raise UsageError(f"ORSIM_TEST_FREEZE={raw!r}: expected APP:N with N >= 1")
    return int(count)
