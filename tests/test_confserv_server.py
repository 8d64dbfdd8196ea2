"""The Configuration Server over real TCP: reads, live changes, pushes, restarts, abuse."""

from __future__ import annotations

import functools
import resource
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from orsim.config import ConfigDatabase, load_database
from orsim.confserv import ConfServClient, ObjectChanged, serve_confserv
from orsim.errors import ConfigError, RequestRefused, UnreachableError
from orsim.wire import TcpNetwork

DEMO = Path(__file__).resolve().parent.parent / "scenarios" / "topologies" / "demo.yaml"
NET = TcpNetwork()


@pytest.fixture
def db() -> ConfigDatabase:
    return load_database(DEMO)


class Server:
    """A Configuration Server running in the test's nursery; restartable."""

    def __init__(self, nursery: trio.Nursery, db: ConfigDatabase, state: Path | None) -> None:
        self.nursery, self.db, self.state = nursery, db, state
        self.port = 0
        self.scope = trio.CancelScope()

    async def start(self) -> int:
        self.scope = trio.CancelScope()
        scope = self.scope

        async def run(task_status: trio.TaskStatus[int]) -> None:
            with scope:
                await serve_confserv(
                    NET, self.db, "127.0.0.1", 0, self.state, task_status=task_status
                )

        self.port = await self.nursery.start(run)
        return self.port

    def stop(self) -> None:
        self.scope.cancel()


@pytest.fixture
async def server(
    nursery: trio.Nursery, db: ConfigDatabase, tmp_path: Path
) -> AsyncIterator[Server]:
    srv = Server(nursery, db, tmp_path / "state")
    await srv.start()
    yield srv
    srv.stop()


async def client_for(port: int, app: str = "ORS_1") -> ConfServClient:
    return await ConfServClient.connect(
        NET, [("127.0.0.1", port)], app=app, app_type="OrchestrationServer", timeout=5
    )


async def next_change(client: ConfServClient) -> ObjectChanged:
    with trio.fail_after(5):
        return await client.changes.receive()


async def test_reads(server: Server, db: ConfigDatabase) -> None:
    """Applications, lists, hosts and the status come back as loaded."""
    async with await client_for(server.port) as client:
        app = await client.get_application("ORS_1_B")
        assert app == db.applications["ORS_1_B"]
        assert app.options == db.applications["ORS_1_B"].options
        assert app.primary == "ORS_1"
        txn = await client.get_transaction("ORS_Cluster_1")
        assert txn == db.transactions["ORS_Cluster_1"]
        assert txn.annex == db.transactions["ORS_Cluster_1"].annex
        assert await client.list_applications("OrchestrationServer") == [
            "ORS_1",
            "ORS_1_B",
            "ORS_2",
            "ORS_2_B",
        ]
        assert len(await client.list_applications()) == 6
        host = await client.get_host("local")
        assert host.address == "127.0.0.1"
        status = await client.status()
        assert status["app"] == "confserv"
        assert status["type"] == "ConfigurationServer"
        assert status["mode"] == "primary"
        assert isinstance(status["pid"], int)


async def test_not_found_is_a_config_error(server: Server) -> None:
    async with await client_for(server.port) as client:
        with pytest.raises(ConfigError, match="application 'Nope' not found"):
            await client.get_application("Nope")
        with pytest.raises(ConfigError, match="transaction 'Nope' not found"):
            await client.get_transaction("Nope")
        with pytest.raises(ConfigError, match="not found"):
            await client.delete_option("ORS_1", "orchestration", "absent")
        with pytest.raises(RequestRefused) as info:
            await client.request("get_application", {"name": 5})
        assert info.value.code == "bad_request"
        with pytest.raises(RequestRefused) as info:
            await client.request("no_such_method", {})
        assert info.value.code == "unknown_method"


async def test_bulk_read_returns_the_existing_ones_and_subscribes(server: Server) -> None:
    """``get_applications`` answers what exists, leaves out the rest, and its reader
    gets the change pushes of what it read."""
    async with (
        await client_for(server.port, "ORS_1") as reader,
        await client_for(server.port, "tool") as writer,
    ):
        apps = await reader.get_applications(["ORS_1", "ORS_2_B", "Nope", "ORS_1"])
        assert sorted(apps) == ["ORS_1", "ORS_2_B"]
        assert apps["ORS_2_B"] == await writer.get_application("ORS_2_B")
        assert await reader.get_applications([]) == {}
        with pytest.raises(RequestRefused) as info:
            await reader.request("get_applications", {"names": "ORS_1"})
        assert info.value.code == "bad_request"
        await writer.set_option("ORS_2_B", "orchestration", "x", "1")
        change = await next_change(reader)
        assert (change.object, change.key, change.value) == ("ORS_2_B", "x", "1")


async def test_change_is_pushed_to_readers_only(server: Server) -> None:
    """A reader of the object is told; a client that never read it is not."""
    async with (
        await client_for(server.port, "ORS_1") as reader,
        await client_for(server.port, "ORS_2") as bystander,
        await client_for(server.port, "tool") as writer,
    ):
        await reader.get_application("ORS_1")
        await reader.get_transaction("ORS_Cluster_1")
        await bystander.get_application("ORS_2")
        assert await writer.set_option("ORS_1", "orchestration", "x", "1") == "application"
        change = await next_change(reader)
        assert (change.kind, change.object, change.section, change.key, change.value) == (
            "application",
            "ORS_1",
            "orchestration",
            "x",
            "1",
        )
        assert change.options["orchestration"] == {"x": "1"}
        assert change.options["log"] == {"verbose": "standard"}
        kind = await writer.set_option(
            "ORS_Cluster_1", "orchestration", "call-watching-timeout", "900"
        )
        assert kind == "transaction"
        change = await next_change(reader)
        assert change.kind == "transaction"
        assert change.options["orchestration"]["call-watching-timeout"] == "900"
        await writer.delete_option("ORS_1", "orchestration", "x")
        change = await next_change(reader)
        assert change.value is None
        assert "orchestration" not in change.options
        # A later read sees the changes.
        assert (await writer.get_application("ORS_1")).options.get("orchestration") is None
        with pytest.raises(trio.WouldBlock):
            bystander.changes.receive_nowait()


async def test_list_rules_apply_to_live_changes(server: Server) -> None:
    """A list refuses log* sections and scxml/system-id; bad values are refused."""
    async with await client_for(server.port) as client:
        with pytest.raises(ConfigError, match="logging section"):
            await client.set_option("ORS_Cluster_1", "log", "verbose", "all")
        with pytest.raises(ConfigError, match="system-id"):
            await client.set_option("ORS_Cluster_1", "scxml", "system-id", "x")
        with pytest.raises(ConfigError, match="whole number"):
            await client.set_option("ORS_1", "orchestration", "call-watching-timeout", "soon")
        with pytest.raises(ConfigError, match="object 'Ghost' not found"):
            await client.set_option("Ghost", "a", "b", "c")
        # scxml/system-id is fine on an application.
        assert await client.set_option("ORS_1", "scxml", "system-id", "x") == "application"


async def test_import_is_all_or_nothing(server: Server) -> None:
    async with await client_for(server.port) as client:
        count = await client.import_options(
            "ORS_Cluster_1", {"orchestration": {"a": "1", "b": "2"}, "mcr": {"c": "3"}}
        )
        assert count == 3
        txn = await client.get_transaction("ORS_Cluster_1")
        assert txn.annex["orchestration"]["a"] == "1"
        assert txn.annex["mcr"] == {"c": "3"}
        with pytest.raises(ConfigError):
            await client.import_options("ORS_Cluster_1", {"mcr": {"d": "4"}, "log": {"x": "1"}})
        assert "d" not in (await client.get_transaction("ORS_Cluster_1")).annex["mcr"]


async def test_restart_keeps_changes(server: Server) -> None:
    """A new server on the same state directory re-applies every acknowledged change."""
    async with await client_for(server.port) as client:
        await client.set_option("ORS_1", "orchestration", "call-watching-timeout", "700")
        await client.set_option("ORS_1", "orchestration", "call-watching-timeout", "800")
        await client.set_option("ORS_2", "orchestration", "x", "1")
        await client.delete_option("ORS_2", "orchestration", "x")
        await client.import_options("SIP_Server", {"TServer": {"router-timeout": "3"}})
    server.stop()
    await server.start()
    async with await client_for(server.port) as client:
        ors1 = await client.get_application("ORS_1")
        assert ors1.options["orchestration"]["call-watching-timeout"] == "800"
        assert "orchestration" not in (await client.get_application("ORS_2")).options
        sip = await client.get_application("SIP_Server")
        assert sip.options["TServer"]["router-timeout"] == "3"
        assert (await client.status())["changes"] == 5


async def test_changes_channel_ends_when_server_goes(server: Server) -> None:
    async with await client_for(server.port) as client:
        await client.get_application("ORS_1")
        server.stop()
        with trio.fail_after(5):
            async for _change in client.changes:
                pass
            await client.closed.wait()


async def test_node_config_gathers_everything_for_the_checks(server: Server) -> None:
    async with await client_for(server.port) as client:
        node = await client.get_node_config("ORS_2_B", "ORS_Cluster_1")
        assert set(node.apps) == {
            "ORS_2_B",
            "ORS_2",
            "SIP_Server",
            "URS",
            "ORS_1",
            "ORS_1_B",
        }
        assert node.problems() == []
        assert node.effective.get("orchestration", "call-watching-timeout") == "500"


async def test_unreachable() -> None:
    """No server: UnreachableError after the timeout, naming what was tried."""
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()
    with trio.fail_after(5), pytest.raises(UnreachableError, match="Configuration Server"):
        await ConfServClient.connect(
            NET, [("127.0.0.1", port), ("127.0.0.1", port)], app="x", app_type="y", timeout=0.3
        )


async def test_survives_abuse(server: Server) -> None:
    """Garbage, a half frame, a 2 GiB header and 1,000 idle connections: still serving."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < 2500:
        new = hard if hard == resource.RLIM_INFINITY or hard < 1 << 20 else 1 << 20
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    open_tcp = functools.partial(trio.open_tcp_stream, "127.0.0.1", server.port)
    for junk in (
        b"\xff" * 64,
        b"\x00\x00\x00\x05hello",
        b'\x00\x00\x01\x00{"type":',
        struct.pack(">I", 2**31) + b"x",
    ):
        stream = await open_tcp()
        await stream.send_all(junk)
        await stream.aclose()
    idle = [await open_tcp() for _ in range(1000)]
    try:
        async with await client_for(server.port) as client:
            with trio.fail_after(10):
                assert (await client.get_application("URS")).name == "URS"
                await client.set_option("URS", "urs", "think-time-ms", "5")
                assert (await client.status())["mode"] == "primary"
    finally:
        for stream in idle:
            await stream.aclose()


async def test_bad_requests_after_handshake(server: Server) -> None:
    """Malformed params are answered with errors; the connection stays usable."""
    async with await client_for(server.port) as client:
        for method, params in (
            ("set_option", {"object": "ORS_1"}),
            ("set_option", {"object": "ORS_1", "section": "a", "key": "b", "value": [1]}),
            ("import_options", {"object": "ORS_1", "options": [1]}),
            ("import_options", {"object": "ORS_1", "options": {"a": 1}}),
            ("list_applications", {"type": 3}),
        ):
            with pytest.raises(RequestRefused) as info:
                await client.request(method, params)
            assert info.value.code == "bad_request", (method, info.value)
        assert (await client.get_application("URS")).name == "URS"
