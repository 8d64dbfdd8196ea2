"""The cluster key: a secret every application of one cluster presents in its Hello.

``orsim cluster up`` makes one per run directory (``cluster.key``, mode 0600) and hands
it to every process it starts (``$ORSIM_CLUSTER_KEY``); a server that has one answers a
client without it only for methods that change nothing (``serve_app``). Tools run by the
same user read it from the run directory. It keeps other local users, and clients that
merely know a port, from steering the cluster; it is not encryption.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

#: The key's file in a run directory.
KEY_FILE = "cluster.key"


def create_cluster_key(run_dir: Path) -> str:
    """The key of ``run_dir``, made now (random, readable by its owner only) if it has none."""
    path = run_dir / KEY_FILE
    key = read_cluster_key(run_dir)
    if key:
        return key
    key = secrets.token_hex(32)
    tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, f"{key}\n".encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return key


def read_cluster_key(run_dir: Path) -> str:
    """The key of ``run_dir`` ("" when it has none)."""
    try:
        return (run_dir / KEY_FILE).read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return ""
