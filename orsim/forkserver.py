"""A fork server: one preloaded Python process that forks cluster processes on request.

Starting a Python process that imports trio, attrs, structlog and orsim costs about
0.6 s of CPU on this kind of machine, and a cluster of 4 Nodes is 12 processes. The
launcher therefore starts one fork server, which imports every server module once, and
asks it for each process. A fork takes milliseconds, and every child is still a real OS
process: its own pid, session, log file and sockets, killed and stopped like any other.

Protocol, one JSON object per line over the server's stdin and stdout:

- request: ``{"argv": [...], "log": PATH, "cwd": PATH, "env": {...}, "append": BOOL}``
  asks for ``orsim <argv>``; the reply is ``{"pid": N}`` or ``{"error": "..."}``,
  in request order;
- event: ``{"exited": N, "code": C}`` when child N ends (C as ``subprocess``
  returncodes: the exit status, or minus the signal number).

The server ignores SIGINT (the launcher decides when to stop) and exits when its stdin
closes; its children live on, each in its own session. Each child runs
``orsim.cli.main``, so this module sits above the command line; starting a server and
taking the prestarted one live in ``orsim._prestart``, which ``orsim.cli`` and the launcher
import. Until it forks, the server imports only the standard library and ``PRELOAD``. A
launcher's own server is not run as ``python -m``: it is the launcher itself, forked once
it has imported ``PRELOAD`` (``prestart``), and calls ``serve`` with nothing left to load.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import selectors
import signal
import sys
import traceback
from collections.abc import Mapping, Sequence
from typing import IO

from orsim._prestart import PRELOAD, set_title

__all__ = ["PRELOAD", "serve"]


def serve(preload: Sequence[str] = PRELOAD) -> int:
    """Run the fork server on stdin/stdout until stdin closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    # Stray prints (from an imported module, say) must not corrupt the protocol.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    for module in preload:
        importlib.import_module(module)
    with contextlib.suppress(ImportError):
        importlib.import_module("setproctitle")
    # Objects that exist now are shared with every child; keep the collector off them so
    # their pages stay shared instead of being copied on first write.
    gc.freeze()
    _release_free_memory()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)
    selector = selectors.DefaultSelector()
    selector.register(0, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    pending = b""
    try:
        while True:
            for key, _mask in selector.select():
                if key.fd == wake_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake_r, 4096)
                    continue
                data = os.read(0, 65536)
                if not data:
                    return 0
                pending += data
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    _write(replies, _handle(line))
            _reap(replies)
    except BrokenPipeError:
        return 0


def _release_free_memory() -> None:
    """Hand the C heap's free pages back to the system before any fork: importing leaves
    ~2 MB of them, which every child would otherwise count in its RSS from the start."""
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _write(stream: IO[str], message: Mapping[str, object]) -> None:
    stream.write(json.dumps(message) + "\n")


def _reap(replies: IO[str]) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _write(replies, {"exited": pid, "code": os.waitstatus_to_exitcode(status)})


def _handle(line: bytes) -> dict[str, object]:
    try:
        request = json.loads(line)
        argv = [str(a) for a in request["argv"]]
        log, cwd = str(request["log"]), str(request["cwd"])
        env = {str(k): str(v) for k, v in dict(request.get("env") or {}).items()}
        append = bool(request.get("append", False))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return {"error": f"bad request: {exc}"}
    try:
        pid = os.fork()
    except OSError as exc:
        return {"error": f"fork failed: {exc}"}
    if pid == 0:
        _child(argv, log, cwd, env, append)
    return {"pid": pid}


def _child(argv: list[str], log: str, cwd: str, env: dict[str, str], append: bool) -> None:
    """Become ``orsim <argv>``; never returns."""
    code = 1
    try:
        os.setsid()
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGCHLD, signal.SIGTERM):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
        out = os.open(log, flags, 0o644)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(out)
        stdin = os.open(os.devnull, os.O_RDONLY)
        os.dup2(stdin, 0)
        os.close(stdin)
        _close_inherited_fds()
        os.chdir(cwd)
        os.environ.update(env)
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 - the process's stdout
        sys.stderr = open(2, "w", buffering=1, closefd=False, errors="backslashreplace")  # noqa: SIM115
        sys.argv = ["orsim", *argv]
        set_title(" ".join(sys.argv))  # ``ps`` shows ``orsim node -app ORS_1 ...``
        from orsim.cli import main

        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _close_inherited_fds() -> None:
    """Close every fd above stderr: the protocol pipes and the selector are the server's."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2:
            with contextlib.suppress(OSError):
                os.close(fd)


if __name__ == "__main__":
    code = serve()
    # Nothing is left to finalize: the replies are flushed line by line and the children
    # live on. Tearing down the preloaded modules would take ~30 ms, which every
    # launcher's release of the server (``ForkServer.aclose``) waits for.
    os._exit(code)
