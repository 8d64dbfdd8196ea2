"""structlog set-up: JSON lines with bound context, one stream per process."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO


def _import_structlog_without_rich() -> None:
    """Import structlog with rich hidden, unless either is imported already.

    structlog's package root imports rich, when it is installed, for the tracebacks its
    console renderer draws: ~35 ms of every server's start-up (rich and pygments) and
    ~4 MB of its memory. orsim writes JSON lines with plain tracebacks
    (``format_exc_info``), so no orsim process uses that; rich itself stays importable
    afterwards, for the launcher's tables and spinners.
    """
    if "structlog" in sys.modules or "rich" in sys.modules:
        return
    # A None entry makes ``import rich`` raise ImportError, which structlog handles.
    sys.modules["rich"] = None  # type: ignore[assignment]
    try:
        import structlog  # noqa: F401
    finally:
        del sys.modules["rich"]


_import_structlog_without_rich()

import structlog  # noqa: E402 - after the import above, which hides rich from it
from structlog.typing import FilteringBoundLogger  # noqa: E402

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}


#: Genesys ``log/verbose`` values and the level each maps to here (``none`` keeps
#: warnings: orsim never hides them).
VERBOSE_LEVELS = {
    "all": "debug",
    "debug": "debug",
    "trace": "info",
    "interaction": "info",
    "standard": "info",
    "none": "warning",
}

_stream: list[TextIO | None] = [None]


def configure_logging(stream: TextIO | None = None, level: str = "info") -> None:
    """Send structlog events as JSON lines to ``stream`` (stderr by default)."""
    _stream[0] = stream
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(sort_keys=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.WriteLoggerFactory(file=stream if stream else sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(**context: object) -> FilteringBoundLogger:
    """A structlog logger with ``context`` bound."""
    # The wrapper class ``configure_logging`` sets (structlog's default one filters too).
    logger: FilteringBoundLogger = structlog.get_logger()
    return logger.bind(**context)


def set_log_level(level: str) -> None:
    """Log at ``level`` from now on (``debug``, ``info``, ``warning``), to the same stream.

    Loggers bound before keep their level: rebind long-lived ones (``get_logger``).
    """
    configure_logging(_stream[0], level)


@contextmanager
def quiet_logs() -> Iterator[None]:
    """Drop every log line below CRITICAL while the block runs (thousands of simulated
    runs, millions of fuzzed inputs); structlog's configuration is restored after."""
    previous = structlog.get_config()
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL),
        cache_logger_on_first_use=False,
    )
    try:
        yield
    finally:
        structlog.configure(**previous)
