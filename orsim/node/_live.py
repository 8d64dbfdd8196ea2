"""Live option changes: follow the Configuration Server and re-apply dynamic options.

The node keeps a connection to the Configuration Server after start-up, reading its own
Application and its cluster list again (which registers it for change notifications).
Each change is merged as at start-up (the list wins) and the options the registry marks
dynamic (``orsim.config.OPTIONS``) are applied at once; the others are logged as taking
effect after a restart.
A lost Configuration Server (restarted, say) is reconnected to; the node keeps serving.
"""

from __future__ import annotations

import attrs
import trio
from structlog.typing import FilteringBoundLogger

from orsim.config import LOG_VERBOSE, EffectiveOptions, effective_options, takes_effect
from orsim.errors import ConfigError, ConnectionLost, RequestRefused
from orsim.logs import get_logger
from orsim.node._runtime import OrsNode
from orsim.node._startup import Startup, call_watching_timeout_ms
from orsim.wire import Network


def apply_options(node: OrsNode, options: EffectiveOptions, log: FilteringBoundLogger) -> None:
    """Apply the dynamic options of ``options`` to a running node."""
    verbose = options.get(LOG_VERBOSE.section, LOG_VERBOSE.key)
    if verbose is not None and verbose.strip():
        try:
            level = LOG_VERBOSE.value(verbose)
        except ConfigError as exc:  # kept by the Configuration Server, ignored here
            log.warning("option_rejected", option=LOG_VERBOSE.name, error=str(exc))
        else:
            if level != node.log_level:
                node.set_log_level(level)
    try:
        cwt = call_watching_timeout_ms(options)
    except ConfigError as exc:  # a bad live value must not stop a running node
        log.warning("option_rejected", error=str(exc))
        return
    if cwt != node.call_watching_timeout_ms:
        node.set_call_watching_timeout(cwt)


async def follow_changes(
    network: Network, addresses: list[tuple[str, int]], startup: Startup, node: OrsNode
) -> None:
    """Keep a Configuration Server link for change notifications, reconnecting as needed."""
    from orsim.confserv.client import ConfServClient

    app, cluster = startup.app, startup.cluster
    log = get_logger(app=app.name)
    while True:
        client = await ConfServClient.connect(
            network, addresses, app=app.name, app_type=app.type, timeout=float("inf")
        )
        try:
            async with client:
                app = await client.get_application(app.name)
                if cluster is not None:
                    cluster = await client.get_transaction(cluster.name)
                apply_options(node, effective_options(app, cluster), log)
                async for change in client.changes:
                    if change.kind == "application" and change.object == app.name:
                        app = attrs.evolve(app, options=change.options)
                    elif (
                        cluster is not None
                        and change.kind == "transaction"
                        and change.object == cluster.name
                    ):
                        cluster = attrs.evolve(cluster, annex=change.options)
                    else:
                        continue
                    log.info(
                        "option_changed",
                        object=change.object,
                        section=change.section,
                        key=change.key,
                        value=change.value,
                        takes_effect=takes_effect(change.section, change.key),
                    )
                    apply_options(node, effective_options(app, cluster), log)
        except (ConnectionLost, RequestRefused, ConfigError) as exc:
            log.warning("confserv_link_error", error=str(exc))
        log.warning("confserv_link_lost")
        await trio.sleep(0.5)
