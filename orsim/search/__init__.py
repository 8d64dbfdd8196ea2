"""Fault-schedule search: ``orsim search`` finds a failover bug by itself.

hypothesis draws fault schedules (``orsim.search._schedule``); each runs as an ordinary
scenario in the seeded simulation (``orsim.sim``), where the safety invariants are read
from the exact history; the first violation is shrunk by hypothesis to the shortest
schedule that still fails the same way, and written as a scenario file::

    result = search("scenarios/topologies/two-nodes.yaml", budget=500, seed=1)
    if result.found:
        print(result.found.reason, result.found.path)
"""

from __future__ import annotations

from orsim.search._search import Found as Found
from orsim.search._search import SearchResult as SearchResult
from orsim.search._search import search as search
from orsim.search._search import write_summary as write_summary

__all__ = ["Found", "SearchResult", "search", "write_summary"]
