"""The node's view of its cluster: which peer applications are reachable and what they say.

Pure bookkeeping fed by the runtime: a peer application is *live* while at least one
link to it (dialled by us or accepted from it) is open; ADDP closes silent links, so
liveness follows the connection rules of SPEC section 3. A Node is live while any of its
applications is, because a live backup will carry the Node on.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class MemberInfo:
    """What a peer last announced about itself."""

    app: str
    node_id: int
    data_center: str
    mode: str
    epoch: int


@attrs.define
class PeerView:
    """Links and announcements per peer application."""

    #: node_id -> data center, for every configured Node.
    nodes: dict[int, str]
    #: app -> node_id, for every configured peer application.
    app_nodes: dict[str, int]
    links: dict[str, int] = attrs.Factory(dict)
    info: dict[str, MemberInfo] = attrs.Factory(dict)

    def link_up(self, app: str) -> None:
        self.links[app] = self.links.get(app, 0) + 1

    def link_down(self, app: str) -> None:
        self.links[app] = max(0, self.links.get(app, 0) - 1)
        if not self.links[app]:
            # What a peer said before it was lost is stale by the time it comes back.
            self.info.pop(app, None)

    def announce(self, info: MemberInfo) -> None:
        self.info[info.app] = info

    def is_live(self, app: str) -> bool:
        return self.links.get(app, 0) > 0

    def live_nodes(self, own_node: int) -> dict[int, str]:
        """node_id -> data center of every live Node, this one always included."""
        live = {own_node: self.nodes.get(own_node, "")}
        for app, node_id in self.app_nodes.items():
            if self.is_live(app):
                live[node_id] = self.nodes.get(node_id, "")
        return live
