"""Follow one Application's options for as long as a server runs, across Configuration
Server restarts (the T-Server and the URS; ORS nodes have their own, orsim.node._live).

A restarted Configuration Server knows nothing of its old readers, so a client must
connect again and read its Application again to be told of later changes; the options
read then are applied too, in case they changed while the link was down.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NoReturn

import trio

from orsim.config import Options
from orsim.confserv.client import ConfServClient
from orsim.errors import ConfigError, ConnectionLost, RequestRefused
from orsim.logs import get_logger
from orsim.wire import Network

#: Pause before reconnecting, so a Configuration Server that accepts and drops at once
#: is not hammered (connect_with_retry backs off on its own while nothing answers).
RECONNECT_PAUSE = 0.5


async def apply_changes(client: ConfServClient, app: str, apply: Callable[[Options], None]) -> None:
    """Apply every change of Application ``app`` pushed on ``client`` until the link ends."""
    async for change in client.changes:
        if change.kind == "application" and change.object == app:
            apply(change.options)


async def follow_application(
    network: Network,
    addresses: list[tuple[str, int]],
    *,
    app: str,
    app_type: str,
    apply: Callable[[Options], None],
) -> NoReturn:
    """Reconnect to the Configuration Server, re-read ``app`` and apply its options and
    their changes; again each time the link is lost. Runs until cancelled."""
    log = get_logger(app=app)
    while True:
        log.warning("confserv_link_lost")
        await trio.sleep(RECONNECT_PAUSE)
        client = await ConfServClient.connect(
            network, addresses, app=app, app_type=app_type, timeout=math.inf
        )
        try:
            async with client:
                apply((await client.get_application(app)).options)
                log.info("confserv_resubscribed")
                await apply_changes(client, app, apply)
        except (ConnectionLost, RequestRefused, ConfigError) as exc:
            # ConfigError: the Application is gone from a restarted database; keep the
            # options in force and try again (it may come back).
            log.warning("confserv_link_error", error=str(exc))
