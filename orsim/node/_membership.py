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
    #: It does not hold its Node and does not see it held: it is neither primary nor
    #: suspending, and has no live partner that is (``headless_nodes``).
    headless: bool = False


@attrs.define
class PeerView:
    """Links and announcements per peer application."""

    #: node_id -> data center, for every configured Node.
    nodes: dict[int, str]
    #: app -> node_id, for every configured peer application.
    app_nodes: dict[str, int]
    links: dict[str, int] = attrs.Factory(dict)
    info: dict[str, MemberInfo] = attrs.Factory(dict)
    #: ``live_nodes`` as last computed (None: a peer came or went since), and for which
    #: own Node: every call asks, and a scan of every peer each time made a call's cost
    #: grow with the cluster's size in every application (100 Nodes: 200 of them).
    _live: dict[int, str] | None = attrs.field(default=None, init=False, repr=False)
    _live_for: int | None = attrs.field(default=None, init=False, repr=False)

    def link_up(self, app: str) -> None:
        count = self.links.get(app, 0)
        self.links[app] = count + 1
        if not count:
            self._live = None

    def link_down(self, app: str) -> None:
        count = self.links.get(app, 0)
        self.links[app] = max(0, count - 1)
        if not self.links[app]:
            # What a peer said before it was lost is stale by the time it comes back.
            self.info.pop(app, None)
            if count:
                self._live = None

    def announce(self, info: MemberInfo) -> None:
        self.info[info.app] = info

    def is_live(self, app: str) -> bool:
        return self.links.get(app, 0) > 0

    def headless_nodes(self, own_node: int) -> set[int]:
        """The live Nodes (this one aside) whose every reachable application says it is
        ``headless``: nobody acts for them, though they look alive (a backup that cannot
        take over, a Node whose applications are still starting). An application that
        said nothing yet counts as acting."""
        acting: set[int] = {own_node}
        headless: set[int] = set()
        for app, node_id in self.app_nodes.items():
            if node_id in acting or not self.is_live(app):
                continue
            info = self.info.get(app)
            if info is None or not info.headless:
                acting.add(node_id)
                headless.discard(node_id)
            else:
                headless.add(node_id)
        return headless

    def live_nodes(self, own_node: int) -> dict[int, str]:
        """node_id -> data center of every live Node, this one always included (a copy:
        the caller may keep or change it)."""
        live = self._live
        if live is None or self._live_for != own_node:
            live = {own_node: self.nodes.get(own_node, "")}
            for app, node_id in self.app_nodes.items():
                if self.is_live(app):
                    live[node_id] = self.nodes.get(node_id, "")
            self._live, self._live_for = live, own_node
        return dict(live)
