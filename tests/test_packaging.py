"""What orsim needs at run time, as pyproject.toml declares it."""

from __future__ import annotations

import subprocess
import sys

# Every orsim module imported with redis-py made unimportable.
_IMPORT_ALL = """
import importlib, pkgutil, sys
sys.modules["redis"] = None
import orsim
for module in pkgutil.walk_packages(orsim.__path__, "orsim."):
    if not module.name.endswith("__main__"):
        importlib.import_module(module.name)
"""


def test_orsim_runs_without_redis_py() -> None:
    """redis-py is a test dependency only: the Redis store speaks RESP itself."""
    proc = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
