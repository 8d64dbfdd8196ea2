"""`orsim confserv` and `orsim config` as real processes: kill -9 durability and the CLI."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import yaml

from orsim.confserv import ConfServClient
from orsim.wire import TcpNetwork

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "scenarios" / "topologies" / "demo.yaml"
ORSIM = str(ROOT / ".venv" / "bin" / "orsim")

pytestmark = pytest.mark.slow


@asynccontextmanager
async def confserv(state: Path, config: Path = DEMO) -> AsyncIterator[tuple[trio.Process, int]]:
    """Start `orsim confserv` on a free port; yields the process and the port it bound."""
    proc = await trio.lowlevel.open_process(
        [ORSIM, "confserv", str(config), "--port", "0", "--state", str(state)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        port = None
        buffer = b""
        with trio.fail_after(20):
            while port is None:
                chunk = await proc.stderr.receive_some()
                assert chunk, f"confserv exited early: {buffer.decode()}"
                buffer += chunk
                *lines, rest = buffer.split(b"\n")
                buffer = rest
                for line in lines:
                    event = json.loads(line)
                    if event.get("event") == "listening":
                        port = int(event["port"])
        yield proc, port
    finally:
        if proc.returncode is None:
            proc.kill()
        with trio.move_on_after(10):
            await proc.wait()


async def client(port: int) -> ConfServClient:
    return await ConfServClient.connect(
        TcpNetwork(), [("127.0.0.1", port)], app="test", app_type="Test", timeout=10
    )


async def run_cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [ORSIM, *args], capture_stdout=True, capture_stderr=True, check=False
    )


async def test_kill_9_loses_no_acknowledged_change(tmp_path: Path) -> None:
    """Every change acknowledged before SIGKILL is there after a restart."""
    state = tmp_path / "state"
    async with confserv(state) as (proc, port):
        done = await run_cli(
            "config",
            "set",
            "-host",
            "127.0.0.1",
            "-port",
            str(port),
            "ORS_1",
            "orchestration",
            "cli-set",
            "yes",
        )
        assert done.returncode == 0, done
        async with await client(port) as c:
            for i in range(40):
                await c.set_option("ORS_2", "orchestration", f"k{i}", str(i))
            await c.set_option("ORS_Cluster_1", "orchestration", "call-watching-timeout", "777")
            proc.send_signal(signal.SIGKILL)  # right after the last acknowledgement
    async with confserv(state) as (proc, port), await client(port) as c:
        ors2 = await c.get_application("ORS_2")
        assert {f"k{i}": str(i) for i in range(40)}.items() <= ors2.options["orchestration"].items()
        assert (await c.get_application("ORS_1")).options["orchestration"]["cli-set"] == "yes"
        txn = await c.get_transaction("ORS_Cluster_1")
        assert txn.annex["orchestration"]["call-watching-timeout"] == "777"
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(10):
            assert await proc.wait() == 0


async def test_config_show_set_delete_import(tmp_path: Path) -> None:
    """`orsim config show --json` is the SPEC form; set/delete/import change what it shows."""
    async with confserv(tmp_path / "state") as (_proc, port):
        server = ["-host", "127.0.0.1", "-port", str(port)]
        shown = await run_cli(
            "config", "show", *server, "-app", "ORS_1", "-cluster", "ORS_Cluster_1", "--json"
        )
        assert shown.returncode == 0, shown
        data: dict[str, Any] = json.loads(shown.stdout)
        assert data["app"] == "ORS_1"
        assert data["cluster"] == "ORS_Cluster_1"
        assert data["options"]["orchestration"]["call-watching-timeout"] == {
            "value": "500",
            "from": "transaction",
        }
        assert data["options"]["log"]["verbose"] == {"value": "standard", "from": "application"}

        ini = tmp_path / "opts.cfg"
        ini.write_text("[orchestration]\ncall-watching-timeout=1200\n[mcr]\nx=1\n")
        imported = await run_cli("config", "import-options", *server, "ORS_Cluster_1", str(ini))
        assert imported.returncode == 0, imported
        assert b"imported 2" in imported.stdout
        deleted = await run_cli("config", "delete", *server, "ORS_Cluster_1", "mcr", "x")
        assert deleted.returncode == 0, deleted

        legacy = await run_cli("config", "show", *server, "-app", "ORS_1", "--json")
        assert json.loads(legacy.stdout)["cluster"] is None
        assert "orchestration" not in json.loads(legacy.stdout)["options"]
        table = await run_cli(
            "config", "show", *server, "-app", "ORS_1", "-cluster", "ORS_Cluster_1"
        )
        assert table.returncode == 0, table
        assert b"1200" in table.stdout
        assert b"transaction" in table.stdout

        missing = await run_cli("config", "show", *server, "-app", "Ghost")
        assert missing.returncode == 3
        assert missing.stderr.decode().strip() == (
            "orsim config: configuration error: application 'Ghost' not found"
        )
        refused = await run_cli("config", "set", *server, "ORS_Cluster_1", "log", "x", "1")
        assert refused.returncode == 3
        assert b"logging section" in refused.stderr


async def test_config_commands_exit_4_without_a_server(tmp_path: Path) -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()
    done = await run_cli(
        "config",
        "show",
        "-host",
        "127.0.0.1",
        "-port",
        str(port),
        "-app",
        "ORS_1",
        "--connect-timeout",
        "0.3",
    )
    assert done.returncode == 4
    assert len(done.stderr.decode().strip().splitlines()) == 1


async def test_confserv_refuses_a_broken_database(tmp_path: Path) -> None:
    """Exit 3 with one line; nothing listens."""
    data = yaml.safe_load(DEMO.read_text())
    data["applications"]["ORS_1"]["backup"] = "Ghost"
    data["applications"]["URS"]["port"] = 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    done = await run_cli("confserv", str(bad), "--port", "0", "--state", str(tmp_path / "s"))
    assert done.returncode == 3, done
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("orsim confserv: configuration error: 2 problems")
    assert not (tmp_path / "s").exists()
