"""The durable record of live changes: a SQLite file in the state directory.

Every acknowledged change is committed before the answer goes out. SQLite in WAL mode
with ``synchronous=FULL`` makes a commit durable once it returns (the WAL is fsynced), and
a crash at any moment leaves either the whole transaction or none of it, so ``kill -9``
loses no acknowledged change and never corrupts the file. Each commit is checkpointed into
the main file at once (changes are rare), so the file alone holds every change. At start
the changes are read back in order and re-applied on top of the YAML database.

A file damaged from outside (truncated, overwritten, emptied) is refused with one line
naming it (``DamagedState``), never silently read as "no changes"; ``reset`` removes the
state on purpose (``orsim confserv --reset-state``).

These calls block; the server runs them in a worker thread, one at a time.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Sequence

from orsim.confserv._changes import Change
from orsim.errors import OrsimError

JOURNAL_FILE = "confserv-changes.sqlite3"
#: The journal file and SQLite's companions to it.
_SUFFIXES = ("", "-wal", "-shm", "-journal")
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


class DamagedState(OrsimError):
    """The state file exists but cannot be read as a journal."""


class Journal:
    """Append-only list of changes in ``<state_dir>/confserv-changes.sqlite3``.

    Raises:
        DamagedState: the file is there but empty or not a readable journal.
    """

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        os.makedirs(state_dir, exist_ok=True)
        self.path = os.path.join(state_dir, JOURNAL_FILE)
        # SQLite would take an emptied file for a new, empty journal.
        if os.path.exists(self.path) and os.path.getsize(self.path) == 0:
            raise self._damaged("the file is empty")
        # One connection used from worker threads, never two at once (the lock).
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        try:
            with self._lock:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")
                self._db.executescript(_SCHEMA)
                (check,) = self._db.execute("PRAGMA quick_check").fetchone()
            if check != "ok":
                raise self._damaged(str(check))
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise self._damaged(str(exc)) from None
        except DamagedState:
            self._db.close()
            raise

    @staticmethod
    def reset(state_dir: str | os.PathLike[str]) -> bool:
        """Remove the journal of ``state_dir`` (True if there was one)."""
        path = os.path.join(state_dir, JOURNAL_FILE)
        found = False
        for suffix in _SUFFIXES:
            try:
                os.remove(path + suffix)
                found = True
            except FileNotFoundError:
                pass
        return found

    def _damaged(self, why: str) -> DamagedState:
        return DamagedState(
            f"state file {self.path} is damaged ({why}); its live changes cannot be restored "
            "(`orsim confserv --reset-state` starts from the YAML alone, on purpose)"
        )

    def changes(self) -> list[Change]:
        """Every recorded change, oldest first.

        Raises:
            DamagedState: a row cannot be read.
        """
        try:
            with self._lock:
                rows = self._db.execute(
                    "SELECT object, section, key, value FROM changes ORDER BY seq"
                ).fetchall()
        except sqlite3.DatabaseError as exc:
            raise self._damaged(str(exc)) from None
        if not all(isinstance(v, str) for row in rows for v in row[:3]):
            raise self._damaged("a change has no object, section or key")
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
            # Into the main file now: a lost -wal file then loses nothing acknowledged.
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

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
