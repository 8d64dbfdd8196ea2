"""Progress lines on stderr: the suite takes minutes, so say what it is doing."""

from __future__ import annotations

import sys
import time

_START = time.monotonic()


def say(message: str) -> None:
    """One progress line, stamped with the seconds since the suite started."""
    print(f"[{time.monotonic() - _START:7.1f}s] {message}", file=sys.stderr, flush=True)
