"""Live option changes: follow the Configuration Server and re-apply dynamic options.

The node keeps a connection to the Configuration Server after start-up, reading its own
Application and its cluster list again (which registers it for change notifications).
Each change is merged as at start-up (the list wins) and the options the reference marks
dynamic are applied at once; the others are logged as taking effect after a restart.
A lost Configuration Server (restarted, say) is reconnected to; the node keeps serving.
"""

from __future__ import annotations

import attrs
import trio
from structlog.typing import FilteringBoundLogger

from orsim.config import EffectiveOptions, effective_options
from orsim.errors import ConfigError, ConnectionLost, RemoteError
from orsim.logs import VERBOSE_LEVELS, get_logger
from orsim.node._runtime import OrsNode
from orsim.node._startup import Startup, call_watching_timeout_ms
from orsim.wire import Network

#: Options a running node re-applies at once (reference section 8; orsim applies
#: call-watching-timeout at once too, see reference section 9).
DYNAMIC_OPTIONS = {
    ("orchestration", "call-watching-timeout"),
    ("orchestration", "backup-synch-max-age"),
    ("orchestration", "backup-synch-max-buffer"),
}


def is_dynamic(section: str, key: str) -> bool:
    """True for options a running node applies without a restart."""
    return (section, key) in DYNAMIC_OPTIONS or section.startswith("log")


#: Options accepted and kept but with no effect in orsim (logged as such, not "applied").
NOT_SIMULATED = {
    ("orchestration", "backup-synch-max-age"),
    ("orchestration", "backup-synch-max-buffer"),
}


def apply_options(node: OrsNode, options: EffectiveOptions, log: FilteringBoundLogger) -> None:
    """Apply the dynamic options of ``options`` to a running node."""
    verbose = options.get("log", "verbose")
    if verbose:
        level = VERBOSE_LEVELS.get(verbose.strip().lower())
        if level is None:
            log.warning("option_rejected", option="log/verbose", value=verbose,
                        expected=sorted(VERBOSE_LEVELS))  # fmt: skip
        elif level != node.log_level:
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
                        takes_effect=_takes_effect(change.section, change.key),
                    )
                    apply_options(node, effective_options(app, cluster), log)
        except (ConnectionLost, RemoteError, ConfigError) as exc:
            log.warning("confserv_link_error", error=str(exc))
        log.warning("confserv_link_lost")
        await trio.sleep(0.5)


def _takes_effect(section: str, key: str) -> str:
    if (section, key) in NOT_SIMULATED:
        return "not simulated (kept, no effect in orsim)"
    return "at once" if is_dynamic(section, key) else "after restart"
