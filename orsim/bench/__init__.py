"""``make bench`` (``python -m orsim.bench``): orsim's benchmark suite.

Sections, each the median of several runs: launch time against a bare-interpreter floor,
failover gaps (SIGKILL, SIGSTOP x addp-timeout, graceful switchover), throughput of a
2-Node cluster against a raw loopback framing limit, ORS memory, and a 16-Node scale run.
Prints one table with the targets and writes the raw numbers as JSON to ``bench/results``.
Speed is measured here, never asserted in tests.
"""

from __future__ import annotations
