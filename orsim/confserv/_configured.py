"""A server process's start-up from the Configuration Server (the T-Server's and the URS's).

``serve_configured`` fetches the process's Application, builds and serves the server,
and keeps applying live option changes, following a restarted Configuration Server;
``add_configured_command`` is the command that runs it. ``start_serving`` is what such a
server's ``serve`` does first: it listens as its Application and answers through its
``HandlerTable``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Awaitable, Callable
from functools import partial
from typing import NoReturn, Protocol

import trio

from orsim.config import Application, Options
from orsim.confserv._genesys_args import add_genesys_args, confserv_addresses
from orsim.confserv.client import ConfServClient
from orsim.confserv.follow import apply_changes, follow_application
from orsim.errors import ConfigError, UsageError
from orsim.runtime import run_server
from orsim.wire import (
    READ_ONLY,
    Connection,
    HandlerTable,
    Network,
    PushHandler,
    TcpNetwork,
    serve_app,
)

LISTEN_PORT_ENV = "ORSIM_LISTEN_PORT"


class ConfiguredServer(Protocol):
    """What ``serve_configured`` runs: a server built from its Application."""

    async def serve(
        self,
        network: Network,
        *,
        port: int | None = None,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> NoReturn: ...

    def apply_options(self, options: Options) -> None: ...


async def start_serving(
    nursery: trio.Nursery,
    network: Network,
    app: Application,
    handlers: HandlerTable,
    *,
    host: str | None,
    port: int | None,
    on_disconnect: Callable[[Connection], Awaitable[None]],
    on_push: PushHandler | None = None,
    open_methods: frozenset[str] = READ_ONLY,
) -> int:
    """Serve ``app``'s requests through ``handlers`` in ``nursery`` (on the Application's
    address unless ``host``/``port`` say otherwise); returns the bound port.

    Raises:
        UnreachableError: the port cannot be bound.
    """
    bound: int = await nursery.start(
        partial(
            serve_app,
            network,
            app.address if host is None else host,
            app.port if port is None else port,
            app=app.name,
            app_type=app.type,
            handler=handlers.handle,
            inline_handler=handlers,
            on_push=on_push,
            on_disconnect=on_disconnect,
            open_methods=open_methods,
        )
    )
    return bound


def listen_port_override() -> int | None:
    """``ORSIM_LISTEN_PORT`` if set (the launcher's fault proxy holds the public port)."""
    raw = os.environ.get(LISTEN_PORT_ENV, "").strip()
    if not raw:
        return None
    try:
        port = int(raw)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise UsageError(f"{LISTEN_PORT_ENV}={raw!r} is not a port number")
    return port


async def serve_configured(
    args: argparse.Namespace,
    *,
    app_type: str,
    accepted_types: tuple[str, ...],
    build: Callable[[Application, Application | None], ConfiguredServer],
) -> None:
    """Fetch ``args.app`` from the Configuration Server, serve it, apply live changes
    (reconnecting to a restarted Configuration Server to keep getting them).

    ``build`` gets the Application and its twin of a redundant pair (the ``backup`` it
    names, or the primary whose backup it is; None: it has none).

    Raises:
        UnreachableError: no Configuration Server answered within ``--connect-timeout``.
        ConfigError: the Application is missing, of the wrong type, or has bad options.
    """
    listen_port = listen_port_override()
    network = TcpNetwork()
    addresses = confserv_addresses(args)
    client = await ConfServClient.connect(
        network, addresses, app=args.app, app_type=app_type, timeout=args.connect_timeout
    )
    async with trio.open_nursery() as nursery:
        async with client:
            app = await client.get_application(args.app)
            if app.type not in accepted_types:
                raise ConfigError(
                    f"application {app.name!r} is of type {app.type}; this command serves "
                    + " or ".join(accepted_types)
                )
            twin_name = app.backup or app.primary
            twin = await client.get_application(twin_name) if twin_name else None
            server = build(app, twin)
            await nursery.start(partial(server.serve, network, port=listen_port))
            await apply_changes(client, app.name, server.apply_options)
        await follow_application(
            network, addresses, app=app.name, app_type=app_type, apply=server.apply_options
        )


def add_configured_command(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    *,
    help: str,
    description: str,
    app_type: str,
    accepted_types: tuple[str, ...],
    build: Callable[[Application, Application | None], ConfiguredServer],
) -> None:
    """``orsim NAME -host H -port P -app A``: a server process that ``serve_configured``
    runs until a signal stops it (the T-Server's and the URS's command)."""
    parser = subparsers.add_parser(name, help=help, description=description)
    add_genesys_args(parser)

    def run(args: argparse.Namespace) -> int:
        async def main(_nursery: trio.Nursery) -> None:
            await serve_configured(
                args, app_type=app_type, accepted_types=accepted_types, build=build
            )

        return run_server(main)

    parser.set_defaults(func=run)
