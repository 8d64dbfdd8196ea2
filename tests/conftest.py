"""Shared pytest fixtures for orsim's own tests."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
from hypothesis import settings

# No per-example deadline: CI runs on 2 shared cores, where one slow example (an import,
# a collection) would fail a property for timing, not for a counterexample. A found
# failure prints its reproduction blob.
settings.register_profile("orsim", deadline=None, print_blob=True)
settings.load_profile("orsim")

_REDIS_READY = "Ready to accept connections"
_REDIS_START_TIMEOUT = 15.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Watcher:
    """Copies the server's output to a log file and tells when the server is ready."""

    def __init__(self, stream: IO[str], log: Path) -> None:
        self.ready = False
        self.changed = threading.Event()  # set on the ready line, or when the server exits
        self._stream = stream
        self._log = log
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        with self._log.open("a") as out:
            for line in self._stream:
                out.write(line)
                out.flush()
                if _REDIS_READY in line:
                    self.ready = True
                    self.changed.set()
        self.changed.set()


def _start_redis(binary: str, directory: Path) -> tuple[subprocess.Popen[str], int]:
    for _ in range(3):  # a free port may be taken by someone else before redis binds it
        port = _free_port()
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--dir", str(directory), "--daemonize", "no"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        assert proc.stdout is not None
        watcher = _Watcher(proc.stdout, directory / "redis.log")
        watcher.changed.wait(_REDIS_START_TIMEOUT)
        if watcher.ready:
            return proc, port
        proc.kill()
        proc.wait()
    pytest.fail(f"redis-server did not start; see {directory / 'redis.log'}")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``redis://127.0.0.1:PORT/0`` of a real redis-server started for this test session.

    Append-only file on, snapshots off. Skips the test when redis-server is not installed
    (CI installs it). Tests share the server: clear what you use (e.g. FLUSHDB).
    """
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    proc, port = _start_redis(binary, tmp_path_factory.mktemp("redis"))
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
