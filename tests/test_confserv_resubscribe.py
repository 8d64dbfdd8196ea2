"""The T-Server and the URS keep getting live changes after a Configuration Server restart
(issue 20, finding 4): they reconnect and read their Application again, as nodes do."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel
from helpers import free_ports

from orsim.config import Application, Options, load_database
from orsim.confserv import serve_configured
from orsim.confserv._server import serve_confserv
from orsim.confserv.client import ConfServClient
from orsim.tserver._server import TServer
from orsim.urs._server import UrsServer
from orsim.wire import TcpNetwork

CONFIG = """\
tenants: [Environment]
hosts:
  hostA: {{address: 127.0.0.1}}
applications:
  SIP_Server:
    type: SIPServer
    host: hostA
    port: {ts_port}
    options:
      routing-points: {{"5000": default}}
      TServer: {{router-timeout: 3}}
  URS:
    type: RoutingServer
    host: hostA
    port: {urs_port}
    options:
      urs: {{targets: "A,B", strategy: least-busy}}
"""


class Watched:
    """A server whose ``applied`` is set once an applied change makes ``done`` true."""

    def __init__(self, server: Any, done: Callable[[Any], bool]) -> None:
        self.server = server
        self.done = done
        self.applied = trio.Event()

    async def serve(self, *args: Any, **kwargs: Any) -> Any:
        return await self.server.serve(*args, **kwargs)

    def apply_options(self, options: Options) -> None:
        self.server.apply_options(options)
        if self.done(self.server):
            self.applied.set()


_Case = tuple[
    str, Callable[[Application], Any], tuple[str, ...], tuple[str, str, str], Callable[[Any], bool]
]
CASES: dict[str, _Case] = {
    "tserver": (
        "SIP_Server", TServer.from_application, ("SIPServer", "TServer"),
        ("TServer", "router-timeout", "5"), lambda s: s.router_timeout == 5.0,
    ),
    "urs": (
        "URS", UrsServer.from_application, ("RoutingServer",),
        ("urs", "strategy", "round-robin"), lambda s: s.options.strategy == "round-robin",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
async def test_option_change_applied_after_confserv_restart(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, build, types, (section, key, value), done = CASES[case]
    monkeypatch.delenv("ORSIM_LISTEN_PORT", raising=False)
    ts_port, urs_port = free_ports(2)
    config = tmp_path / "cluster.yaml"
    config.write_text(CONFIG.format(ts_port=ts_port, urs_port=urs_port))
    db = load_database(config)
    net = TcpNetwork()
    watched: list[Watched] = []
    built = trio.Event()

    def build_watched(application: Application, _twin: Application | None) -> Watched:
        watched.append(Watched(build(application), done))
        built.set()
        return watched[-1]

    async with trio.open_nursery() as nursery:
        confserv, stopped = trio.CancelScope(), trio.Event()

        async def run_confserv(port: int, *, task_status: Any) -> None:
            try:
                with confserv:
                    await serve_confserv(
                        net, db, "127.0.0.1", port, tmp_path / "state", task_status=task_status
                    )
            finally:
                stopped.set()

        cs_port: int = await nursery.start(run_confserv, 0)
        args = argparse.Namespace(
            host="127.0.0.1", port=cs_port, backup_host=None, backup_port=None,
            app=app, connect_timeout=5.0,
        )  # fmt: skip
        with trio.fail_after(20):
            run = partial(serve_configured, app_type=types[0], accepted_types=types)
            nursery.start_soon(partial(run, args, build=build_watched))
            await built.wait()  # its Application read: subscribed to its changes
            confserv.cancel()
            await stopped.wait()  # its port is free again
            confserv, stopped = trio.CancelScope(), trio.Event()
            await nursery.start(run_confserv, cs_port)
            admin = await ConfServClient.connect(
                net, [("127.0.0.1", cs_port)], app="admin", app_type="Tool"
            )
            async with admin:
                await admin.set_option(app, section, key, value)
            await watched[0].applied.wait()
        nursery.cancel_scope.cancel()


async def test_a_block_error_comes_out_unwrapped_when_the_process_stops_meanwhile() -> None:
    """The link is lost under a request while a scope around the client is cancelled (the
    process stopping): the caller gets the ConnectionLost it handles, not a group holding
    it and the reader's cancellation (found by `orsim search`: a SIGTERM restart ended the
    whole simulation)."""
    from orsim.errors import ConnectionLost
    from orsim.wire import Connection
    from orsim.wire._transport import MemoryNetwork, _FaultyStream, _Pipe

    net = MemoryNetwork()
    there, back = _Pipe(1024), _Pipe(1024)
    stream = _FaultyStream(there, back, net, "ORS_1", "confserv")
    send, receive = trio.open_memory_channel[Any](8)
    client = ConfServClient(Connection(stream, "confserv", "CfgServer"), receive, send)
    caught = False
    with trio.CancelScope() as stopping:
        try:
            async with client:
                await trio.lowlevel.checkpoint()  # the reader waits
                stopping.cancel()  # the reader is cancelled when the block ends
                raise ConnectionLost("connection to confserv lost while sending")
        except ConnectionLost:
            caught = True
    assert caught
