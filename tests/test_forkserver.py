"""The fork server: children are real processes with their own session, log and exit code."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from helpers import free_ports

from orsim._prestart import command
from orsim.cluster._procs import ForkServer, pid_alive, wait_exit
from orsim.wire import TcpNetwork, connected

DEMO = Path(__file__).resolve().parent.parent / "scenarios" / "topologies" / "demo.yaml"


async def test_children_exit_codes_logs_and_signals(tmp_path: Path) -> None:
    server = ForkServer.start()
    try:
        version = await server.spawn(
            ["--version"], log_path=tmp_path / "v.log", cwd=tmp_path, env={}, append=False
        )
        usage = await server.spawn(
            ["node"], log_path=tmp_path / "u.log", cwd=tmp_path, env={}, append=False
        )
        with trio.fail_after(30):
            assert await version.wait() == 0
            assert await usage.wait() == 2
        assert "orsim" in (tmp_path / "v.log").read_text()
        assert "-host" in (tmp_path / "u.log").read_text()

        (port,) = free_ports(1)
        confserv = await server.spawn(
            ["confserv", str(DEMO), "--port", str(port), "--state", str(tmp_path / "state")],
            log_path=tmp_path / "c.log",
            cwd=tmp_path,
            env={},
            append=False,
        )
        with trio.fail_after(30):
            while True:
                try:
                    async with connected(TcpNetwork(), "127.0.0.1", port, app="t", app_type="T"):
                        break
                except OSError:
                    await trio.sleep(0.05)
        # A real process of its own: own session and orsim's title. (The environment it was
        # given is exercised by every cluster test: nodes listen where ORSIM_LISTEN_PORT says.)
        assert os.getsid(confserv.pid) == confserv.pid
        assert b"orsim confserv" in Path(f"/proc/{confserv.pid}/cmdline").read_bytes()  # noqa: ASYNC240
        assert confserv.poll() is None
        os.kill(confserv.pid, signal.SIGKILL)
        with trio.fail_after(30):
            assert await confserv.wait() == -signal.SIGKILL
    finally:
        await server.aclose()


async def test_children_outlive_a_closed_server(tmp_path: Path) -> None:
    server = ForkServer.start()
    (port,) = free_ports(1)
    child = await server.spawn(
        ["confserv", str(DEMO), "--port", str(port), "--state", str(tmp_path / "state")],
        log_path=tmp_path / "c.log",
        cwd=tmp_path,
        env={},
        append=False,
    )
    await server.aclose()
    try:
        assert pid_alive(child.pid)
        assert child.poll() is None
        os.kill(child.pid, signal.SIGTERM)
        assert await wait_exit(child.pid, 30)
        with trio.fail_after(30):
            assert await child.wait() == -1  # unknown once the server is gone
    finally:
        if pid_alive(child.pid):
            os.kill(child.pid, signal.SIGKILL)


def test_bad_requests_get_an_error_reply_and_the_server_goes_on() -> None:
    proc = subprocess.run(
        [*command()],
        input=b'not json\n{"argv": 5}\n{"argv": ["--version"], "log": "/dev/null", "cwd": "/"}\n',
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 0
    lines = proc.stdout.decode().splitlines()
    assert "bad request" in lines[0]
    assert "bad request" in lines[1]
    assert '"pid"' in lines[2]


def test_the_preloaded_servers_leave_rich_out() -> None:
    """Every forked process carries what the server preloads: rich is only for the
    launcher's own tables (structlog imports it unless hidden; see ``orsim.logs``), and
    it stays importable afterwards."""
    script = (
        "import importlib, sys\n"
        "from orsim.forkserver import PRELOAD\n"
        "for module in PRELOAD:\n"
        "    importlib.import_module(module)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'rich', 'pygments'}))\n"
        "import rich.console\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert proc.stdout.strip() == "[]"


PRESTART = """
import json, os, sys, threading
from orsim import _prestart
if sys.argv[1] == "threaded":
    threading.Thread(target=threading.Event().wait, daemon=True).start()
_prestart.prestart()
server = _prestart.take_prestarted()
print(type(server).__name__, flush=True)
request = {"argv": ["--version"], "log": sys.argv[2], "cwd": "/", "env": {}}
server.stdin.write(json.dumps(request).encode() + b"\\n")
server.stdin.flush()
lines = [json.loads(server.stdout.readline()) for _ in range(2)]
pid = lines[0]["pid"]
assert lines[1] == {"exited": pid, "code": 0}, lines
server.stdin.close()
print(server.wait(), flush=True)
"""


@pytest.mark.parametrize(("threads", "kind"), [("single", "ForkedServer"), ("threaded", "Popen")])
def test_a_launcher_forks_its_server_unless_it_has_threads(
    threads: str, kind: str, tmp_path: Path
) -> None:
    """``prestart`` forks the launcher itself once it has imported the servers' modules
    (a thread could hold a lock the child needs: then a new interpreter); either way the
    server forks children on request, reports their exits and ends with its stdin."""
    log = tmp_path / "version.log"
    proc = subprocess.run(
        [sys.executable, "-c", PRESTART, threads, str(log)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [kind, "0"]
    assert "orsim" in log.read_text()
