"""`orsim tserver` and `orsim urs` as processes, configured by a Configuration Server."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from orsim.config import load_database
from orsim.confserv._server import serve_confserv
from orsim.confserv.client import ConfServClient
from orsim.tserver import TServerClient
from orsim.urs import UrsClient
from orsim.wire import TcpNetwork, connect_with_retry

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_config(tmp_path: Path, ts_port: int, urs_port: int) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(
        textwrap.dedent(f"""\
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
        """)
    )
    return path


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Poll ``check`` until true: the state lives in another task or process, so there is
    no event to wait on; the timeout bounds the wait."""
    with trio.fail_after(timeout):
        for _ in itertools.count():
            if await check():
                return
            await trio.sleep(0.02)


async def _status_has(status: Awaitable[dict[str, Any]], key: str, value: object) -> bool:
    return bool((await status)[key] == value)


async def run_orsim(args: Sequence[str], env: dict[str, str] | None = None) -> tuple[int, str]:
    result = await trio.run_process(
        [sys.executable, "-m", "orsim.cli", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env={**os.environ, **(env or {})},
    )
    return result.returncode, result.stderr.decode()


async def test_servers_start_from_confserv_and_stop_on_sigterm(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """Both servers read their Application, listen on ORSIM_LISTEN_PORT, answer, exit 0."""
    ts_port, urs_port, ts_listen = free_port(), free_port(), free_port()
    db = load_database(write_config(tmp_path, ts_port, urs_port))
    net = TcpNetwork()
    cs_port: int = await nursery.start(
        partial(serve_confserv, net, db, "127.0.0.1", 0, tmp_path / "state")
    )
    common = ["-host", "127.0.0.1", "-port", str(cs_port)]
    env = {**os.environ, "ORSIM_LISTEN_PORT": str(ts_listen)}
    procs = []
    for args, proc_env in (
        (["tserver", *common, "-app", "SIP_Server"], env),
        (["urs", *common, "-app", "URS"], dict(os.environ)),
    ):
        procs.append(
            await trio.lowlevel.open_process(
                [sys.executable, "-m", "orsim.cli", *args],
                env=proc_env,
                stdout=subprocess.DEVNULL,
            )
        )
    try:
        with trio.fail_after(20):
            conn = await connect_with_retry(
                net, [("127.0.0.1", ts_listen)], app="T", app_type="X", timeout=15, what="ts"
            )
            async with trio.open_nursery() as inner:
                inner.start_soon(conn.serve)
                status = await TServerClient(conn).status()
                assert status["app"] == "SIP_Server"
                assert status["router_timeout"] == 3.0
                assert status["routing_points"] == {"5000": "default"}
                # A live change reaches the running T-Server.
                admin = await ConfServClient.connect(
                    net, [("127.0.0.1", cs_port)], app="admin", app_type="Tool"
                )
                async with admin:
                    await admin.set_option("SIP_Server", "TServer", "router-timeout", "5")
                    await admin.set_option("URS", "urs", "strategy", "round-robin")
                tserver = TServerClient(conn)
                await eventually(lambda: _status_has(tserver.status(), "router_timeout", 5.0))
                await conn.aclose()
            conn = await connect_with_retry(
                net, [("127.0.0.1", urs_port)], app="T", app_type="X", timeout=15, what="urs"
            )
            async with trio.open_nursery() as inner:
                inner.start_soon(conn.serve)
                status = await UrsClient(conn).status()
                assert status["targets"] == ["A", "B"]
                urs = UrsClient(conn)
                await eventually(lambda: _status_has(urs.status(), "strategy", "round-robin"))
                await conn.aclose()
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
                assert await proc.wait() == 0
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def test_cli_errors_have_exit_codes(nursery: trio.Nursery, tmp_path: Path) -> None:
    """Unreachable Configuration Server: 4; unknown or wrong-typed app: 3; bad env: 2."""
    code, err = await run_orsim(
        [
            "tserver",
            "-host",
            "127.0.0.1",
            "-port",
            str(free_port()),
            "-app",
            "SIP_Server",
            "--connect-timeout",
            "0.3",
        ]
    )
    assert code == 4, err
    assert err.startswith("orsim tserver: unreachable:")
    db = load_database(write_config(tmp_path, free_port(), free_port()))
    cs_port: int = await nursery.start(
        partial(serve_confserv, TcpNetwork(), db, "127.0.0.1", 0, tmp_path / "state")
    )
    common = ["-host", "127.0.0.1", "-port", str(cs_port)]
    code, err = await run_orsim(["tserver", *common, "-app", "Nope"])
    assert code == 3, err
    code, err = await run_orsim(["urs", *common, "-app", "SIP_Server"])
    assert code == 3, err
    assert "RoutingServer" in err
    assert "Traceback" not in err
    code, err = await run_orsim(
        ["tserver", *common, "-app", "SIP_Server"], env={"ORSIM_LISTEN_PORT": "http"}
    )
    assert code == 2, err
