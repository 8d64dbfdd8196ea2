"""``make bench`` (``python -m orsim.bench``): orsim's benchmark suite.

Sections, each the median of several runs: launch time against a bare-interpreter floor,
failover gaps (SIGKILL, SIGSTOP x addp-timeout, graceful switchover), throughput of a
2-Node cluster against a raw call-shaped exchange (``._raw_call``) and with the fault
proxy out of the path, ORS memory, a 16-Node scale run, and
the simulation's own speed (a 60 s library-style ``--sim`` run, 100 Nodes in one process).
Prints one table with the targets (a failover row also shows its worst run, and is met
only if every run was) and writes the raw numbers as JSON to ``bench/results``.
Speed is measured here, never asserted in tests.

``--soak N`` (``make soak``) makes N failover runs instead, the fault kinds in turn, and
counts each run ok or failed (exit status 1 if any failed).
"""

from __future__ import annotations

#: Nothing to import: the suite runs as ``python -m orsim.bench``.
__all__: list[str] = []
