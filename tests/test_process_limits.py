"""Every orsim process raises its open-file soft limit as it starts (issue 20, finding 7):
under ``ulimit -Sn 1024`` 1,000 idle connections kept a restarting ORS from its
Configuration Server, and the proxy holds four descriptors per link."""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest

LOW = 256

_PROBE = """
import resource, sys
from orsim.cli import main
try:
    main(["--help"])
except SystemExit:
    pass
print(resource.getrlimit(resource.RLIMIT_NOFILE)[0], file=sys.stderr)
"""


def _low_soft_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (LOW, hard))


def test_an_orsim_process_started_under_a_low_soft_limit_raises_it_to_the_hard_one() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= LOW:
        pytest.skip(f"the hard limit ({hard}) leaves nothing to raise")
    done = subprocess.run(
        [sys.executable, "-c", _PROBE],
        preexec_fn=_low_soft_limit,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    raised = int(done.stderr.strip().splitlines()[-1])
    expected = hard if hard != resource.RLIM_INFINITY else 1 << 20
    assert raised == expected > LOW
