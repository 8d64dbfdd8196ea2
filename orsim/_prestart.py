"""Starting the fork server (``orsim.forkserver``): its command line, and early start-up.

The launcher's side, apart from the server itself: the server runs ``orsim.cli.main`` in
its children, so it sits above the command line, while ``orsim.cli`` (to start a server
first thing) and the launcher (to take it) sit below. This module imports only the
standard library; ``prestart`` imports ``PRELOAD`` by name.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import subprocess
import sys
import threading
import traceback
from typing import IO, Protocol

#: The module ``python -m`` runs as the fork server.
SERVER_MODULE = "orsim.forkserver"

#: What the server imports before forking: every command a launcher starts.
PRELOAD = (
    "orsim.cli",
    "orsim.confserv.cli",
    "orsim.tserver.cli",
    "orsim.urs.cli",
    "orsim.node.cli",
    "orsim.cluster.cli",
)


class ServerProcess(Protocol):
    """What the launcher uses of a fork server's process (a ``subprocess.Popen``'s)."""

    @property
    def pid(self) -> int: ...

    @property
    def stdin(self) -> IO[bytes] | None: ...

    @property
    def stdout(self) -> IO[bytes] | None: ...

    def poll(self) -> int | None: ...

    def kill(self) -> None: ...

    def wait(self) -> int: ...


_prestarted: ServerProcess | None = None


def command() -> list[str]:
    """The command line that runs a fork server with this interpreter."""
    return [sys.executable, "-m", SERVER_MODULE]


def prestart() -> None:
    """Start a fork server now, for the launcher to take later (see ``take_prestarted``).

    Called first thing by commands that launch a cluster. The server is this process,
    forked once it has imported ``PRELOAD`` (the launcher's own modules among them): a
    new interpreter would import the same modules again, 0.25 s of CPU on the launch's
    critical path whenever the machine has no idle core to run it beside the launcher's
    own imports. A process with threads is not forked (another thread may hold a lock
    the child would need): it starts a new interpreter as ``command()``.
    """
    global _prestarted
    if _prestarted is not None:
        return
    if threading.active_count() > 1:
        _prestarted = subprocess.Popen(command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        return
    for module in PRELOAD:
        importlib.import_module(module)
    _prestarted = _fork_server()


def _fork_server() -> ForkedServer:
    requests_r, requests_w = os.pipe()
    replies_r, replies_w = os.pipe()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # nothing buffered here is written twice
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.dup2(requests_r, 0)
            os.dup2(replies_w, 1)
            # Whatever else this process had open (the pipes' other ends included) is the
            # launcher's: a listening socket kept open here would outlive its owner.
            os.closerange(3, os.sysconf("SC_OPEN_MAX"))
            set_title("orsim fork server")
            code = importlib.import_module(SERVER_MODULE).serve(preload=())
        except BaseException:
            with contextlib.suppress(BaseException):
                traceback.print_exc()
                sys.stderr.flush()
        finally:
            os._exit(code)
    os.close(requests_r)
    os.close(replies_w)
    return ForkedServer(pid, os.fdopen(requests_w, "wb"), os.fdopen(replies_r, "rb"))


def set_title(title: str) -> None:
    """What ``ps`` shows for this process, where ``setproctitle`` is installed."""
    try:
        import setproctitle
    except ImportError:
        return
    setproctitle.setproctitle(title)


class ForkedServer:
    """A fork server forked from this process: what ``subprocess.Popen`` would give."""

    def __init__(self, pid: int, stdin: IO[bytes], stdout: IO[bytes]) -> None:
        self.pid = pid
        self.stdin: IO[bytes] | None = stdin
        self.stdout: IO[bytes] | None = stdout
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self) -> int:
        if self.returncode is None:
            _pid, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            os.kill(self.pid, signal.SIGKILL)


def take_prestarted() -> ServerProcess | None:
    """The prestarted fork server, if any (each is handed out once)."""
    global _prestarted
    server, _prestarted = _prestarted, None
    return server
