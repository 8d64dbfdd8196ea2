"""The simulated Universal Routing Server: ORS nodes ask it where to send a call.

URS options (its Application, defined in ``orsim.config``): ``urs/targets`` (comma list),
``urs/strategy`` (``round-robin`` | ``least-busy``) and ``urs/think-time-ms`` (a delay
before each answer, to model a slow strategy). The choice itself is the pure
``_selection.Selector``.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable
from typing import NoReturn

import attrs
import trio
from structlog.typing import FilteringBoundLogger

from orsim.config import URS_STRATEGY, URS_TARGETS, URS_THINK_TIME, Application, Options
from orsim.confserv import start_serving
from orsim.errors import ConfigError
from orsim.logs import get_logger
from orsim.urs._messages import (
    Register,
    Released,
    ReleaseTarget,
    SelectTarget,
    Target,
    UrsClientInfo,
    UrsStatus,
)
from orsim.urs._selection import Selector, make_selector
from orsim.wire import (
    Connection,
    Done,
    HandlerTable,
    Network,
    Status,
    StatusReport,
    frame_totals,
    on,
)


@attrs.frozen
class UrsOptions:
    """The URS options, validated."""

    targets: tuple[str, ...]
    strategy: str
    think_time_ms: float

    @classmethod
    def from_options(cls, options: Options) -> UrsOptions:
        """Raises ConfigError naming the bad option."""
        return cls(
            URS_TARGETS.read(options), URS_STRATEGY.read(options), URS_THINK_TIME.read(options)
        )


@attrs.define(eq=False)
class UrsServer:
    """One URS run: its selector and registered ORS clients."""

    app: Application
    options: UrsOptions
    selector: Selector
    requests: int = 0
    _clients: dict[Connection, UrsClientInfo] = attrs.Factory(dict)
    #: The logger of the per-call line (bound once, not per call).
    _call_log: FilteringBoundLogger | None = None
    #: Every request the URS answers, with its handler.
    handlers: HandlerTable = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.handlers = HandlerTable.of(
            self.app.name,
            [
                on(Register, self._register),
                on(SelectTarget, self._select_target),
                on(ReleaseTarget, self._release_target),
                on(Status, self._status),
            ],
        )

    @classmethod
    def from_application(cls, app: Application) -> UrsServer:
        """A URS for ``app``; ConfigError if its options are invalid."""
        options = UrsOptions.from_options(app.options)
        return cls(app, options, make_selector(options.targets, options.strategy))

    def apply_options(self, options: Options) -> None:
        """Apply a live change of the ``urs`` options (invalid values are ignored)."""
        log = get_logger(app=self.app.name)
        try:
            new = UrsOptions.from_options(options)
        except ConfigError as exc:
            log.warning("option_rejected", error=str(exc))
            return
        if new != self.options:
            self.selector = self.selector.reconfigured(new.targets, new.strategy)
            self.options = new
            log.info(
                "option_applied",
                targets=list(new.targets),
                strategy=new.strategy,
                think_time_ms=new.think_time_ms,
            )

    async def serve(
        self,
        network: Network,
        *,
        host: str | None = None,
        port: int | None = None,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> NoReturn:
        """Listen (on the Application's address unless told otherwise) until cancelled."""
        log = get_logger(app=self.app.name)
        async with trio.open_nursery() as nursery:
            bound = await start_serving(
                nursery,
                network,
                self.app,
                self.handlers,
                host=host,
                port=port,
                on_disconnect=self._on_disconnect,
            )
            log.info(
                "urs_ready",
                port=bound,
                targets=list(self.options.targets),
                strategy=self.options.strategy,
            )
            task_status.started(bound)
        raise AssertionError("serve_app returned")  # pragma: no cover

    async def _on_disconnect(self, conn: Connection) -> None:
        if self._clients.pop(conn, None) is not None:
            get_logger(app=self.app.name).info("client_gone", peer=conn.peer_app)

    def _register(self, conn: Connection, request: Register) -> Done:
        app = conn.peer_app if request.app is None else request.app
        self._clients[conn] = UrsClientInfo(app, request.node_id)
        get_logger(app=self.app.name).info("client_registered", peer=app, node_id=request.node_id)
        return Done()

    def _select_target(self, conn: Connection, request: SelectTarget) -> Target | Awaitable[Target]:
        self.requests += 1
        if self.options.think_time_ms > 0:
            return self._select_after_thinking(request.call_id)  # answered by a task of its own
        return self._select(request.call_id)

    async def _select_after_thinking(self, call_id: str | None) -> Target:
        await trio.sleep(self.options.think_time_ms / 1000.0)
        return self._select(call_id)

    def _select(self, call_id: str | None) -> Target:
        target = self.selector.choose()
        if self._call_log is None:
            self._call_log = get_logger(app=self.app.name)
        self._call_log.debug("target_selected", call_id=call_id, target=target)
        return Target(target)

    def _release_target(self, conn: Connection, request: ReleaseTarget) -> Released:
        return Released(self.selector.release(request.target))

    def status(self) -> UrsStatus:
        """What ``status`` answers."""
        return UrsStatus(
            app=self.app.name,
            type=self.app.type,
            # A URS twin is a hot standby that answers anyone who asks (it keeps no
            # call state to hand over); status names the configured role.
            mode="backup" if self.app.is_backup else "primary",
            pid=os.getpid(),
            clients=tuple(self._clients.values()),
            requests=self.requests,
            strategy=self.options.strategy,
            targets=self.options.targets,
            think_time_ms=self.options.think_time_ms,
            busy=dict(self.selector.busy()),
            frames=frame_totals(),
        )

    def _status(self, conn: Connection, request: Status) -> StatusReport:
        return StatusReport(self.status().to_json())
