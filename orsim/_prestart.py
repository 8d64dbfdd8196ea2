"""Starting the fork server (``orsim.forkserver``): its command line, and early start-up.

The launcher's side, apart from the server itself: the server runs ``orsim.cli.main`` in
its children, so it sits above the command line, while ``orsim.cli`` (to start a server
before its own imports) and the launcher (to take it) sit below. This module imports
only the standard library, so ``prestart`` costs nothing before the server is running.
"""

from __future__ import annotations

import subprocess
import sys

#: The module ``python -m`` runs as the fork server.
SERVER_MODULE = "orsim.forkserver"

_prestarted: subprocess.Popen[bytes] | None = None


def command() -> list[str]:
    """The command line that runs a fork server with this interpreter."""
    return [sys.executable, "-m", SERVER_MODULE]


def prestart() -> None:
    """Start a fork server now, for the launcher to take later (see ``take_prestarted``).

    Called first thing by commands that launch a cluster, so the server's imports run on
    another core while the launcher imports its own modules and validates the database.
    """
    global _prestarted
    if _prestarted is None:
        _prestarted = subprocess.Popen(command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE)


def take_prestarted() -> subprocess.Popen[bytes] | None:
    """The prestarted fork server, if any (each is handed out once)."""
    global _prestarted
    server, _prestarted = _prestarted, None
    return server
