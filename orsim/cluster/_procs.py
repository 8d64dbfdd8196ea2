"""OS processes of a cluster: spawning, liveness, signals, waiting for exit.

Each server runs in its own session (``start_new_session``): it survives a detached
``up``, and a terminal's Ctrl-C reaches only the launcher, which then stops everyone in
order. Processes are found again through pid files; a pid is only trusted while the
process behind it is alive and is an orsim process (pids get reused).
"""

from __future__ import annotations

import collections
import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import trio

from orsim._prestart import ServerProcess, take_prestarted
from orsim._prestart import command as fork_server_command
from orsim.cluster._redis import REDIS_DIR, REDIS_PROGRAM
from orsim.errors import ClusterError

#: How to run ``orsim`` with the same interpreter and package as the launcher.
ORSIM_COMMAND = (sys.executable, "-m", "orsim.cli")

SIGNALS = {
    "KILL": signal.SIGKILL,
    "TERM": signal.SIGTERM,
    "STOP": signal.SIGSTOP,
    "CONT": signal.SIGCONT,
    "INT": signal.SIGINT,
}


class Child(Protocol):
    """A process the launcher started: trio's ``Process`` or a ``ForkedProcess``."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    def poll(self) -> int | None: ...

    async def wait(self) -> int: ...


async def spawn(
    argv: Sequence[str],
    *,
    log_path: Path,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    append: bool = False,
) -> trio.Process:
    """Start ``orsim <argv>`` in its own session, stdout and stderr into ``log_path``."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with open(log_path, "ab" if append else "wb") as log:  # noqa: ASYNC230 - a local open
        return await trio.lowlevel.open_process(
            [*ORSIM_COMMAND, *argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            cwd=cwd,
            env=full_env,
            start_new_session=True,
        )


async def spawn_program(
    program: str, argv: Sequence[str], *, log_path: Path, cwd: Path, append: bool = False
) -> trio.Process:
    """Start ``program`` (found on PATH) in its own session, output into ``log_path``.

    Raises:
        ClusterError: ``program`` is not on PATH.
    """
    path = shutil.which(program)
    if path is None:
        raise ClusterError(f"{program} is not on PATH")
    with open(log_path, "ab" if append else "wb") as log:  # noqa: ASYNC230 - a local open
        return await trio.lowlevel.open_process(
            [path, *argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            cwd=cwd,
            start_new_session=True,
        )


def process_state(pid: int) -> str | None:
    """The kernel's one-letter state of ``pid`` (``R``, ``S``, ``T``, ``Z``...), None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name in parentheses may itself contain spaces or parentheses.
    return stat.rsplit(")", 1)[1].split()[0]


def is_orsim(pid: int) -> bool:
    """True if ``pid`` is an orsim process or a Redis a launcher runs.

    Redis rewrites its command line (to ``redis-server ADDR:PORT``), so one of ours is
    known by its working directory instead: ``RUN_DIR/redis/APP`` of a run directory.
    """
    try:
        if b"orsim" in Path(f"/proc/{pid}/cmdline").read_bytes():
            return True
        if Path(f"/proc/{pid}/comm").read_text().strip() != REDIS_PROGRAM:
            return False
        cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return False
    return cwd.parent.name == REDIS_DIR and (cwd.parent.parent / "manifest.json").is_file()


def pid_alive(pid: int) -> bool:
    """True while ``pid`` is a live (not zombie) orsim process (or our Redis)."""
    state = process_state(pid)
    return state is not None and state not in ("Z", "X") and is_orsim(pid)


def send_signal(pid: int, signum: int) -> bool:
    """Signal ``pid`` if it is one of ours and alive; False when it was already gone."""
    if not pid_alive(pid):
        return False
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return False
    return True


async def wait_exit(pid: int, timeout: float) -> bool:
    """Wait until ``pid`` is gone (or a zombie); True if it was within ``timeout``."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        with trio.move_on_after(timeout):
            await trio.lowlevel.wait_readable(fd)
            return True
    finally:
        os.close(fd)
    return not pid_alive(pid)


def log_tail(path: Path, lines: int = 12) -> str:
    """The last ``lines`` lines of a log file (empty if it does not exist)."""
    with contextlib.suppress(OSError):
        with open(path, "rb") as file:
            file.seek(0, os.SEEK_END)
            size = file.tell()
            file.seek(max(0, size - 64 * 1024))
            text = file.read().decode("utf-8", "replace")
        return "\n".join(text.splitlines()[-lines:])
    return ""


# -- the fork server's client ------------------------------------------------------------


class ForkedProcess:
    """A process forked by a ``ForkServer``: ``pid``, ``poll()`` and ``wait()``, as trio's.

    Its exit code comes from the fork server (its parent). Once the server is closed, a
    process found gone reports ``returncode`` -1 (unknown).
    """

    def __init__(self, pid: int, server: ForkServer) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._server = server

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._server.exit_code(self.pid)
        return self.returncode

    async def wait(self) -> int:
        while True:
            news = self._server.news
            if self.poll() is not None:
                assert self.returncode is not None
                return self.returncode
            if self._server.closed:
                await wait_exit(self.pid, math.inf)
            else:
                await news.wait()


class _ReplySlot:
    """Where the answer to one spawn request lands (None: the server went away)."""

    def __init__(self) -> None:
        self.ready = trio.Event()
        self.reply: dict[str, object] | None = None


class ForkServer:
    """The launcher's end of ``orsim.forkserver``: spawn processes by fork, learn exits.

    A system task reads the server's pipe; whoever reads it (that task, or ``poll``)
    sets ``news``, which waiters wait on.
    """

    def __init__(self, popen: ServerProcess) -> None:
        assert popen.stdin is not None and popen.stdout is not None
        self._popen = popen
        self._in = popen.stdin.fileno()
        self._out = popen.stdout.fileno()
        os.set_blocking(self._out, False)
        self._buffer = b""
        self._waiting: collections.deque[_ReplySlot] = collections.deque()
        self._exits: dict[int, int] = {}
        self._closed = False
        #: Set (and replaced) whenever a reply or an exit arrives; left set once closed.
        self.news = trio.Event()

    @classmethod
    def start(cls) -> ForkServer:
        """Take the prestarted fork server, or start one now (call from within trio)."""
        popen: ServerProcess = take_prestarted() or subprocess.Popen(
            fork_server_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        server = cls(popen)
        trio.lowlevel.spawn_system_task(server._read_loop, name="orsim fork server reader")
        return server

    @property
    def closed(self) -> bool:
        return self._closed

    async def _read_loop(self) -> None:
        while not self._closed:
            try:
                await trio.lowlevel.wait_readable(self._out)
            except (trio.ClosedResourceError, OSError):
                return
            self._drain()

    async def spawn(
        self,
        argv: Sequence[str],
        *,
        log_path: Path,
        cwd: Path,
        env: Mapping[str, str],
        append: bool,
    ) -> ForkedProcess:
        """Fork ``orsim <argv>`` (raises ClusterError if the server cannot).

        Requests are pipelined: the server answers in order, so many spawns started
        together cost one round trip, not one each.
        """
        request = {
            "argv": list(argv),
            "log": str(log_path),
            "cwd": str(cwd),
            "env": dict(env),
            "append": append,
        }
        if self._closed:
            raise ClusterError("the fork server is closed")
        try:
            os.write(self._in, (json.dumps(request) + "\n").encode())
        except OSError as exc:
            raise ClusterError(f"the fork server is gone: {exc}") from exc
        slot = _ReplySlot()
        self._waiting.append(slot)
        await slot.ready.wait()
        reply = slot.reply
        if reply is None:
            raise ClusterError("the fork server exited")
        if "pid" not in reply:
            raise ClusterError(f"the fork server could not start {argv[0]}: {reply.get('error')}")
        return ForkedProcess(int(str(reply["pid"])), self)

    def exit_code(self, pid: int) -> int | None:
        """``pid``'s exit code if it ended, else None."""
        self._drain()
        if pid in self._exits:
            return self._exits[pid]
        if self._closed and not pid_alive(pid):
            return -1
        return None

    def _drain(self) -> None:
        """Take in what the server wrote (it never blocks)."""
        if self._out < 0:
            return
        got = False
        while True:
            try:
                data = os.read(self._out, 65536)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                # The server is gone: exits from now on are learnt from /proc.
                self._closed = True
                break
            self._buffer += data
            got = True
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            message = json.loads(line)
            if "exited" in message:
                self._exits[int(message["exited"])] = int(message["code"])
            elif self._waiting:
                slot = self._waiting.popleft()
                slot.reply = message
                slot.ready.set()
        if self._closed:
            while self._waiting:
                self._waiting.popleft().ready.set()
            self.news.set()
        elif got:
            self.news.set()
            self.news = trio.Event()

    async def aclose(self) -> None:
        """Close the server (its children live on) and wait for it to exit."""
        if self._out < 0:
            return
        self._closed = True
        assert self._popen.stdin is not None and self._popen.stdout is not None
        with contextlib.suppress(OSError):
            self._popen.stdin.close()
        # It exits as soon as its stdin closes: its pidfd says when, without polling.
        if not await wait_exit(self._popen.pid, 5):
            self._popen.kill()
        self._popen.wait()
        self._drain()
        trio.lowlevel.notify_closing(self._out)
        self._popen.stdout.close()
        self._out = -1
        while self._waiting:
            self._waiting.popleft().ready.set()
        self.news.set()
