"""OS processes of a cluster: spawning, liveness, signals, waiting for exit.

Each server runs in its own session (``start_new_session``): it survives a detached
``up``, and a terminal's Ctrl-C reaches only the launcher, which then stops everyone in
order. Processes are found again through pid files; a pid is only trusted while the
process behind it is alive and is an orsim process (pids get reused).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import trio

#: How to run ``orsim`` with the same interpreter and package as the launcher.
ORSIM_COMMAND = (sys.executable, "-m", "orsim.cli")

SIGNALS = {
    "KILL": signal.SIGKILL,
    "TERM": signal.SIGTERM,
    "STOP": signal.SIGSTOP,
    "CONT": signal.SIGCONT,
    "INT": signal.SIGINT,
}


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


def process_state(pid: int) -> str | None:
    """The kernel's one-letter state of ``pid`` (``R``, ``S``, ``T``, ``Z``...), None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name in parentheses may itself contain spaces or parentheses.
    return stat.rsplit(")", 1)[1].split()[0]


def is_orsim(pid: int) -> bool:
    try:
        return b"orsim" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    """True while ``pid`` is a live (not zombie) orsim process."""
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
