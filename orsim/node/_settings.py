"""What a running node knows about itself and its cluster once start-up has read it."""

from __future__ import annotations

import attrs

from orsim.config import (
    CALL_WATCHING_TIMEOUT,
    PEER_ADDP_TIMEOUT,
    PEER_HEARTBEAT,
    RECONNECT_TIMEOUT,
    STORE,
)

#: Default ADDP timeout (s) of node-to-node links when the application lists no
#: connection to that peer.
DEFAULT_PEER_ADDP_TIMEOUT = PEER_ADDP_TIMEOUT.default_value
#: Default call-watching-timeout (ms), from the Genesys documentation.
DEFAULT_CALL_WATCHING_TIMEOUT_MS = float(CALL_WATCHING_TIMEOUT.default_value)


@attrs.frozen
class Endpoint:
    """A server this node connects to, with the ADDP timeouts of that connection.

    ``backup``: the server's twin of a redundant pair (its ``backup``), tried in turn
    with it, ``reconnect_timeout`` seconds apart, once a link is lost or an attempt fails.
    """

    name: str
    address: str
    port: int
    addp_timeout: float = 0.0
    addp_remote_timeout: float = 0.0
    addp_trace: str = "off"
    backup: Endpoint | None = None
    reconnect_timeout: float = RECONNECT_TIMEOUT.default_value

    def pair(self) -> tuple[Endpoint, ...]:
        """The servers to try in turn: this one, then its backup if it has one."""
        return (self,) if self.backup is None else (self, self.backup)


@attrs.frozen
class PeerApp:
    """Another ORS application of the cluster (the partner included)."""

    name: str
    node_id: int
    data_center: str
    address: str
    port: int
    is_backup: bool
    addp_timeout: float = DEFAULT_PEER_ADDP_TIMEOUT


@attrs.frozen(kw_only=True)
class NodeSettings:
    """Everything the node runtime needs, resolved from the Configuration Server."""

    app: str
    app_type: str = "OrchestrationServer"
    node_id: int
    configured_backup: bool
    partner: str | None
    cluster: str | None
    data_center: str
    address: str
    port: int
    peers: tuple[PeerApp, ...] = ()
    #: node_id -> data center, for every Node of the cluster (this one included).
    nodes: dict[int, str] = attrs.field(factory=dict, eq=False)
    tserver: Endpoint
    urs: Endpoint
    routing_points: tuple[str, ...] = ()
    store_url: str = STORE.default_value
    call_watching_timeout_ms: float = DEFAULT_CALL_WATCHING_TIMEOUT_MS
    #: Heartbeat period on peer links (s): also how often the store epoch is checked.
    heartbeat: float = PEER_HEARTBEAT.default_value

    @property
    def partner_peer(self) -> PeerApp | None:
        for peer in self.peers:
            if peer.name == self.partner:
                return peer
        return None
