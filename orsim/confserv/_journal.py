"""The durable record of live changes: a SQLite file in the state directory.

Every acknowledged change is committed before the answer goes out. SQLite in WAL mode
with ``synchronous=FULL`` makes a commit durable once it returns (the WAL is fsynced), and
a crash at any moment leaves either the whole transaction or none of it, so ``kill -9``
loses no acknowledged change and never corrupts the file. At start the changes are read
back in order and re-applied on top of the YAML database.

These calls block; the server runs them in a worker thread, one at a time.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Sequence

from orsim.confserv._changes import Change

JOURNAL_FILE = "confserv-changes.sqlite3"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    object TEXT NOT NULL,
    section TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class Journal:
    """Append-only list of changes in ``<state_dir>/confserv-changes.sqlite3``."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        os.makedirs(state_dir, exist_ok=True)
        self.path = os.path.join(state_dir, JOURNAL_FILE)
        # One connection used from worker threads, never two at once (the lock).
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)

    def changes(self) -> list[Change]:
        """Every recorded change, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT object, section, key, value FROM changes ORDER BY seq"
            ).fetchall()
        return [Change(*row) for row in rows]

    def append(self, changes: Sequence[Change]) -> None:
        """Record ``changes`` in one transaction; durable when this returns."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT INTO changes (object, section, key, value, at) VALUES (?, ?, ?, ?, ?)",
                    [(c.object, c.section, c.key, c.value, now) for c in changes],
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def count(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT COUNT(*) FROM changes").fetchone()
        return int(row[0])

    def source(self, source: str) -> str | None:
        """Remember which database file this journal belongs to; return the previous one."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE name = 'source'").fetchone()
            self._db.execute(
                "INSERT OR REPLACE INTO meta (name, value) VALUES ('source', ?)", (source,)
            )
        return str(row[0]) if row else None

    def close(self) -> None:
        with self._lock:
            self._db.close()
