"""``log/verbose`` changed live sets the node's log level (ors-domain.md section 8: log/*
takes effect at once); options orsim keeps but does not model say so."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import structlog
import trio
import trio.testing

from orsim.config import load_database
from orsim.config import takes_effect as _takes_effect
from orsim.logs import configure_logging, get_logger, set_log_level
from orsim.testing import open_sim_cluster

TOPOLOGY = Path(__file__).parent.parent / "scenarios" / "topologies" / "demo.yaml"


def test_set_log_level_filters_loggers_bound_afterwards() -> None:
    """Below the level nothing is written; at or above it, a JSON line."""
    out = io.StringIO()
    configure_logging(out, "info")
    try:
        set_log_level("warning")
        log = get_logger(app="x")
        log.info("hidden")
        log.warning("shown")
        set_log_level("debug")
        get_logger(app="x").debug("detail")
        events = [json.loads(line)["event"] for line in out.getvalue().splitlines()]
        assert events == ["shown", "detail"]
    finally:
        structlog.reset_defaults()


async def test_log_verbose_changed_live_sets_the_level(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Genesys verbose values map to levels: all -> debug, none -> warning, standard -> info;
    an unknown value is refused and changes nothing."""
    async with open_sim_cluster(load_database(TOPOLOGY)) as sim:
        node = sim.nodes["ORS_1"]

        def at(level: str) -> Callable[[], bool]:
            return lambda: node.log_level == level

        try:
            for verbose, level in (("all", "debug"), ("none", "warning"), ("bogus", "warning"),
                                   ("standard", "info")):  # fmt: skip
                await sim.set_option("ORS_1", "log", "verbose", verbose)
                await sim.wait_until(at(level), timeout=5)
                assert node.log_level == level, verbose
        finally:
            structlog.reset_defaults()


def test_options_without_a_modelled_effect_are_not_logged_as_applied() -> None:
    """backup-synch-max-age / -max-buffer are kept but change nothing in orsim: the node
    says "not simulated", never "at once"."""
    for key in ("backup-synch-max-age", "backup-synch-max-buffer"):
        assert _takes_effect("orchestration", key).startswith("not simulated")
    assert _takes_effect("orchestration", "call-watching-timeout") == "at once"
    assert _takes_effect("persistence", "store") == "after restart"
