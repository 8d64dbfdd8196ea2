"""The SQLite session store: one database file shared by every local node.

Several processes open the same file. WAL mode lets readers run beside the one writer;
``synchronous=NORMAL`` in WAL mode makes a committed write survive the death of the
process (kill -9), which is the failure orsim simulates; only an OS crash or power cut
could lose the last commits, and not syncing at every commit keeps a call's two writes
cheap. Every write runs inside
``BEGIN IMMEDIATE``: it takes the database's write lock before reading the Node's epoch,
so the epoch check and the write are one atomic step across processes; a busy lock is
waited for (``busy_timeout``), not failed.

``create_session`` records the call's claim (table ``claims``: call_id -> node_id, with
the wall-clock time it was made) in the same transaction as the session. A claim older
than ``CLAIM_TTL`` counts as absent; such claims are deleted now and then (see
``PRUNE_EVERY_CREATES``/``PRUNE_INTERVAL``) inside a create's transaction, by an index
on their time, so the per-call cost stays a few row writes.

sqlite3 calls block, so each runs in a worker thread; one connection per store, and a
trio.Lock serialises the calls on it (a connection must not be used by two threads at
once, and the calls of one node are short).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final, TypeVar, final

import trio

from orsim.store._protocol import CLAIM_TTL, Counters, StoreStatistics
from orsim.store._session import Session, StaleEpoch, StoreError, check_claim

T = TypeVar("T")

#: How long a writer waits for another process's write lock before failing (s). Writes
#: are a few milliseconds each, so this only runs out when a process hangs holding it.
DEFAULT_BUSY_TIMEOUT: Final = 10.0

#: Expired claims are deleted by the first create after this many creates or this many
#: seconds since the last pruning (per store handle), whichever comes first.
PRUNE_EVERY_CREATES: Final = 1000
PRUNE_INTERVAL: Final = 10.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS epochs (
    node_id INTEGER PRIMARY KEY,
    epoch INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    node_id INTEGER NOT NULL,
    call_id TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    dn TEXT NOT NULL,
    state TEXT NOT NULL,
    target TEXT NOT NULL,
    created_at REAL NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (node_id, call_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS claims (
    call_id TEXT PRIMARY KEY,
    node_id INTEGER NOT NULL,
    claimed_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS claims_by_age ON claims (claimed_at);
"""

_COLUMNS = "call_id, node_id, epoch, dn, state, target, created_at, data"
_MARKS = ", ".join("?" * len(_COLUMNS.split(",")))


@contextlib.contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """A write transaction holding the database write lock from its start."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # also after a failed COMMIT, so the next BEGIN works
            conn.execute("ROLLBACK")
        raise


def _epoch(conn: sqlite3.Connection, node_id: int) -> int:
    row = conn.execute("SELECT epoch FROM epochs WHERE node_id = ?", (node_id,)).fetchone()
    return int(row[0]) if row else 0


def _fence(conn: sqlite3.Connection, node_id: int, epoch: int) -> None:
    current = _epoch(conn, node_id)
    if epoch < current:
        raise StaleEpoch(node_id, epoch, current)


def _connect(path: Path, busy_timeout: float) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: no implicit transactions, ours are explicit BEGIN IMMEDIATE.
    # check_same_thread=False: trio's worker threads vary; the store's lock serialises use.
    conn = sqlite3.connect(
        path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
    )
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        with _immediate(conn):
            # Statement by statement: executescript() would commit our transaction first.
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
    except BaseException:
        conn.close()
        raise
    return conn


def _write_session(conn: sqlite3.Connection, s: Session) -> None:
    row = (s.call_id, s.node_id, s.epoch, s.dn, s.state, s.target, s.created_at,
           json.dumps(s.data, separators=(",", ":")))  # fmt: skip
    conn.execute(f"INSERT OR REPLACE INTO sessions ({_COLUMNS}) VALUES ({_MARKS})", row)


def _put(conn: sqlite3.Connection, s: Session) -> None:
    with _immediate(conn):
        _fence(conn, s.node_id, s.epoch)
        _write_session(conn, s)


def _create(conn: sqlite3.Connection, s: Session, now: float, prune: bool) -> bool:
    oldest_live = now - CLAIM_TTL
    with _immediate(conn):
        _fence(conn, s.node_id, s.epoch)
        if prune:
            conn.execute("DELETE FROM claims WHERE claimed_at < ?", (oldest_live,))
        row = conn.execute(
            "SELECT node_id FROM claims WHERE call_id = ? AND claimed_at >= ?",
            (s.call_id, oldest_live),
        ).fetchone()
        if row is None:  # absent, or expired but not pruned yet
            conn.execute(
                "INSERT OR REPLACE INTO claims (call_id, node_id, claimed_at) VALUES (?, ?, ?)",
                (s.call_id, s.node_id, now),
            )
        elif row[0] != s.node_id:
            return False
        _write_session(conn, s)
        return True


def _adopt(
    conn: sqlite3.Connection, s: Session, from_node: int, from_epoch: int, now: float
) -> bool:
    with _immediate(conn):
        current = _epoch(conn, from_node)
        if current != from_epoch:  # the adopter no longer holds the dead Node's epoch
            raise StaleEpoch(from_node, from_epoch, current)
        _fence(conn, s.node_id, s.epoch)
        owner = conn.execute(  # an expired claim counts as absent, as in create
            "SELECT node_id FROM claims WHERE call_id = ? AND claimed_at >= ?",
            (s.call_id, now - CLAIM_TTL),
        ).fetchone()
        held = conn.execute(
            "SELECT 1 FROM sessions WHERE node_id = ? AND call_id = ?", (from_node, s.call_id)
        ).fetchone()
        if owner is None or owner[0] != from_node or held is None:
            return False
        conn.execute(
            "DELETE FROM sessions WHERE node_id = ? AND call_id = ?", (from_node, s.call_id)
        )
        conn.execute(
            "UPDATE claims SET node_id = ?, claimed_at = ? WHERE call_id = ?",
            (s.node_id, now, s.call_id),
        )
        _write_session(conn, s)
        return True


def _delete(conn: sqlite3.Connection, node_id: int, epoch: int, call_id: str) -> None:
    with _immediate(conn):
        _fence(conn, node_id, epoch)
        conn.execute("DELETE FROM sessions WHERE node_id = ? AND call_id = ?", (node_id, call_id))


def _claim(conn: sqlite3.Connection, node_id: int, expected: int, new: int) -> bool:
    with _immediate(conn):
        if _epoch(conn, node_id) != expected:
            return False
        conn.execute(
            "INSERT INTO epochs (node_id, epoch) VALUES (?, ?)"
            " ON CONFLICT (node_id) DO UPDATE SET epoch = excluded.epoch",
            (node_id, new),
        )
        return True


def _sessions(conn: sqlite3.Connection, node_id: int) -> list[Session]:
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM sessions WHERE node_id = ? ORDER BY created_at, call_id",
        (node_id,),
    ).fetchall()
    return [
        Session(
            call_id=r[0],
            node_id=r[1],
            epoch=r[2],
            dn=r[3],
            state=r[4],
            target=r[5],
            created_at=r[6],
            data=json.loads(r[7]),
        )
        for r in rows
    ]


def _count(conn: sqlite3.Connection, node_id: int) -> int:
    row = conn.execute("SELECT COUNT(*) FROM sessions WHERE node_id = ?", (node_id,)).fetchone()
    return int(row[0])


@final
class SqliteStore:
    """A :class:`~orsim.store.SessionStore` in a SQLite file; open with :meth:`open`."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn: sqlite3.Connection | None = conn
        self._lock = trio.Lock()
        self._counters = Counters()
        self._creates_since_prune = 0
        self._last_prune = -PRUNE_INTERVAL  # prune at the first create
        self.path = path

    @classmethod
    async def open(cls, path: Path, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> SqliteStore:
        """Open (creating if needed) the database file and its tables.

        Raises:
            StoreError: the file cannot be opened or is not a usable database.
        """
        try:
            conn = await trio.to_thread.run_sync(_connect, path, busy_timeout)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"persistence/store: cannot open {path}: {exc}") from exc
        return cls(conn, path)

    async def _run(self, op: Callable[[sqlite3.Connection], T]) -> T:
        async with self._lock:
            conn = self._conn
            if conn is None:
                raise trio.ClosedResourceError("session store is closed")
            try:
                # Not abandoned on cancel: the lock must stay held until the thread is done.
                return await trio.to_thread.run_sync(op, conn)
            except sqlite3.Error as exc:
                raise StoreError(f"session store {self.path}: {exc}") from exc

    async def current_epoch(self, node_id: int) -> int:
        return await self._run(lambda c: _epoch(c, node_id))

    async def claim_epoch(self, node_id: int, expected: int, new: int) -> bool:
        check_claim(expected, new)
        won = await self._run(lambda c: _claim(c, node_id, expected, new))
        if won:
            self._counters.claims_won += 1
        else:
            self._counters.claims_lost += 1
        return won

    async def put_session(self, session: Session) -> None:
        try:
            await self._run(lambda c: _put(c, session))
        except StaleEpoch:
            self._counters.stale_refusals += 1
            raise
        self._counters.puts += 1

    async def create_session(self, session: Session) -> bool:
        now = time.monotonic()
        prune = (
            self._creates_since_prune >= PRUNE_EVERY_CREATES
            or now - self._last_prune >= PRUNE_INTERVAL
        )
        wall = time.time()  # claims cross processes, so their time is wall-clock
        try:
            created = await self._run(lambda c: _create(c, session, wall, prune))
        except StaleEpoch:
            self._counters.stale_refusals += 1
            raise
        if prune:
            self._creates_since_prune, self._last_prune = 0, now
        self._creates_since_prune += 1
        if created:
            self._counters.creates += 1
        else:
            self._counters.creates_refused += 1
        return created

    async def adopt_session(self, session: Session, from_node: int, from_epoch: int) -> bool:
        wall = time.time()
        try:
            return await self._run(lambda c: _adopt(c, session, from_node, from_epoch, wall))
        except StaleEpoch:
            self._counters.stale_refusals += 1
            raise

    async def delete_session(self, node_id: int, epoch: int, call_id: str) -> None:
        try:
            await self._run(lambda c: _delete(c, node_id, epoch, call_id))
        except StaleEpoch:
            self._counters.stale_refusals += 1
            raise
        self._counters.deletes += 1

    async def sessions(self, node_id: int) -> list[Session]:
        return await self._run(lambda c: _sessions(c, node_id))

    async def count(self, node_id: int) -> int:
        return await self._run(lambda c: _count(c, node_id))

    def statistics(self) -> StoreStatistics:
        return self._counters.snapshot("sqlite", str(self.path))

    async def aclose(self) -> None:
        # Shielded: closing must finish even in a cancelled scope; it waits at most for
        # the one call in flight.
        with trio.CancelScope(shield=True):
            async with self._lock:
                conn, self._conn = self._conn, None
                if conn is not None:
                    await trio.to_thread.run_sync(conn.close)
