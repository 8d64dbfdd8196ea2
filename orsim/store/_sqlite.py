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
the wall-clock time it was made) in the same transaction as the session;
``delete_session`` marks it ``done``, and a done call is never created again, not even
by its own Node (a backup taking over must not serve a call its primary finished). A
claim older
than ``CLAIM_TTL`` counts as absent; such claims are deleted now and then (see
``PRUNE_EVERY_CREATES``/``PRUNE_INTERVAL``) inside a create's transaction, by an index
on their time, so the per-call cost stays a few row writes.

sqlite3 calls block, so each runs in a worker thread; one connection per store, and a
trio.Lock serialises the calls on it (a connection must not be used by two threads at
once, and the calls of one node are short).

Group commit: creates, puts and deletes that arrive while a transaction is running wait
and then all go in the next one (one thread hand-off, one lock, one commit for the
batch). Each keeps its own outcome: a ``StaleEpoch`` is decided before its write, so it
refuses that operation only; a database error fails the whole batch, which is rolled
back. A node at load thus pays one transaction per batch, not two per call.

Lock waits are retried by orsim, not by SQLite's busy handler (which sleeps 1, 2, 5, 10
... ms between tries): the connection's ``busy_timeout`` is 0 and an operation refused
with SQLITE_BUSY is tried again after a sleep growing from 0.1 to 2 ms, until the store's
busy timeout. The write lock is held for a fraction of a millisecond, so this keeps two
node processes writing one file from queueing behind each other's sleeps.

In-loop fast path: a transaction that finds the write lock free takes a fraction of a
millisecond (no fsync: WAL with ``synchronous=NORMAL``), less than handing it to a worker
thread and back. So an operation is first tried once right in the event loop; only when
the database is locked by another process (or a thread operation of this store is still
running) does it go to a worker thread and retry there. The one step that does fsync,
the WAL checkpoint, is taken out of commits (``wal_autocheckpoint = 0``) and run in a
worker thread every ``CHECKPOINT_EVERY`` in-loop transactions, on a connection of its own.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final, TypeVar, final

import attrs
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

#: In-loop transactions between two WAL checkpoints (each adds a few pages to the WAL;
#: SQLite's own default is a checkpoint per 1000 pages).
CHECKPOINT_EVERY: Final = 500

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
    claimed_at REAL NOT NULL,
    done INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS claims_by_age ON claims (claimed_at);
"""

#: Retry sleeps after SQLITE_BUSY: from the first to the longest, doubling (s).
_FIRST_RETRY = 0.0001
_LONGEST_RETRY = 0.002
_BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


def _is_busy(exc: sqlite3.Error) -> bool:
    """Locked by another connection, extended codes included: SQLITE_BUSY_RECOVERY is what
    a second process gets while the first one opening a fresh WAL file recovers it."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and (code & 0xFF) in _BUSY_CODES


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


def _retrying(
    op: Callable[[sqlite3.Connection], T], busy_timeout: float
) -> Callable[[sqlite3.Connection], T]:
    """``op`` tried again while the database is locked by another process.

    Safe because every operation is one transaction (rolled back when it fails) or a
    plain read.
    """

    def run(conn: sqlite3.Connection) -> T:
        deadline = time.monotonic() + busy_timeout
        pause = _FIRST_RETRY
        while True:
            try:
                return op(conn)
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, _LONGEST_RETRY)

    return run


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
    # timeout=0: lock waits are ours (``_retrying``), not SQLite's sleeping busy handler.
    conn = sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA busy_timeout = 0")

        def settings(c: sqlite3.Connection) -> None:
            c.execute("PRAGMA journal_mode = WAL")
            c.execute("PRAGMA synchronous = NORMAL")
            # Checkpoints (the fsync) run in a worker thread, not inside in-loop commits.
            c.execute("PRAGMA wal_autocheckpoint = 0")

        # Both halves of a Node start together and open a fresh file at once: every
        # step may find it locked by the other and is retried.
        _retrying(settings, busy_timeout)(conn)

        def schema(c: sqlite3.Connection) -> None:
            with _immediate(c):
                # Statement by statement: executescript() would commit our transaction.
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        c.execute(statement)
                columns = {row[1] for row in c.execute("PRAGMA table_info(claims)")}
                if "done" not in columns:  # a file from before calls were marked done
                    c.execute("ALTER TABLE claims ADD COLUMN done INTEGER NOT NULL DEFAULT 0")

        _retrying(schema, busy_timeout)(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _write_session(conn: sqlite3.Connection, s: Session) -> None:
    row = (s.call_id, s.node_id, s.epoch, s.dn, s.state, s.target, s.created_at,
           json.dumps(s.data, separators=(",", ":")))  # fmt: skip
    conn.execute(f"INSERT OR REPLACE INTO sessions ({_COLUMNS}) VALUES ({_MARKS})", row)


# The batched operations below run inside the batch's transaction (``_apply_batch``);
# each checks its epoch before it writes anything, so a StaleEpoch leaves no trace.


def _put(conn: sqlite3.Connection, s: Session) -> None:
    _fence(conn, s.node_id, s.epoch)
    _write_session(conn, s)


def _create(conn: sqlite3.Connection, s: Session, now: float, prune: bool) -> bool:
    oldest_live = now - CLAIM_TTL
    _fence(conn, s.node_id, s.epoch)
    if prune:
        conn.execute("DELETE FROM claims WHERE claimed_at < ?", (oldest_live,))
    row = conn.execute(
        "SELECT node_id, done FROM claims WHERE call_id = ? AND claimed_at >= ?",
        (s.call_id, oldest_live),
    ).fetchone()
    if row is None:  # absent, or expired but not pruned yet
        conn.execute(
            "INSERT OR REPLACE INTO claims (call_id, node_id, claimed_at, done)"
            " VALUES (?, ?, ?, 0)",
            (s.call_id, s.node_id, now),
        )
    elif row[0] != s.node_id or row[1]:
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
    _fence(conn, node_id, epoch)
    conn.execute("DELETE FROM sessions WHERE node_id = ? AND call_id = ?", (node_id, call_id))
    conn.execute("UPDATE claims SET done = 1 WHERE call_id = ? AND node_id = ?", (call_id, node_id))


@attrs.define(eq=False)
class _Op:
    """One batched operation and, once its batch ran, its outcome."""

    fn: Callable[[sqlite3.Connection], object]
    #: Set when its batch ran, or when its task must run the next batch.
    done: trio.Event = attrs.Factory(trio.Event)
    finished: bool = False
    result: object = None
    error: BaseException | None = None


def _apply_batch(conn: sqlite3.Connection, ops: list[_Op]) -> None:
    """Run ``ops`` in order in one write transaction; each keeps its own outcome."""
    for op in ops:
        op.result, op.error = None, None
    try:
        with _immediate(conn):
            for op in ops:
                try:
                    op.result = op.fn(conn)
                except StaleEpoch as exc:
                    op.error = exc
    except sqlite3.OperationalError as exc:
        if _is_busy(exc):
            raise  # not begun: ``_retrying`` runs the whole batch again
        for op in ops:
            op.error = exc
    except sqlite3.Error as exc:
        for op in ops:  # rolled back: nothing of the batch happened
            op.error = exc


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


def _checkpoint(path: Path) -> None:
    conn = sqlite3.connect(path, timeout=1.0, isolation_level=None)
    try:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    finally:
        conn.close()


@final
class SqliteStore:
    """A :class:`~orsim.store.SessionStore` in a SQLite file; open with :meth:`open`."""

    def __init__(
        self, conn: sqlite3.Connection, path: Path, busy_timeout: float = DEFAULT_BUSY_TIMEOUT
    ) -> None:
        self._conn: sqlite3.Connection | None = conn
        self._busy_timeout = busy_timeout
        self._lock = trio.Lock()
        self._queue: list[_Op] = []
        self._batch_running = False
        self._since_checkpoint = 0
        self._checkpointing = False
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
        return cls(conn, path, busy_timeout)

    async def _run(self, op: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        if conn is not None and not self._lock.locked():
            # Fast path: one try in the event loop (see the module docstring).
            try:
                result = op(conn)
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise StoreError(f"session store {self.path}: {exc}") from exc
            except sqlite3.Error as exc:
                raise StoreError(f"session store {self.path}: {exc}") from exc
            else:
                self._after_in_loop()
                await trio.lowlevel.checkpoint()
                return result
        async with self._lock:
            conn = self._conn
            if conn is None:
                raise trio.ClosedResourceError("session store is closed")
            try:
                # Not abandoned on cancel: the lock must stay held until the thread is done.
                return await trio.to_thread.run_sync(_retrying(op, self._busy_timeout), conn)
            except sqlite3.Error as exc:
                raise StoreError(f"session store {self.path}: {exc}") from exc

    def _after_in_loop(self) -> None:
        self._since_checkpoint += 1
        if self._since_checkpoint >= CHECKPOINT_EVERY and not self._checkpointing:
            self._since_checkpoint = 0
            self._checkpointing = True
            trio.lowlevel.spawn_system_task(self._checkpoint)

    async def _checkpoint(self) -> None:
        """Copy the WAL into the database file, in a worker thread, on its own connection."""
        try:
            await trio.to_thread.run_sync(_checkpoint, self.path)
        except (sqlite3.Error, OSError):
            pass  # the next one will try again; the WAL only grows meanwhile
        finally:
            self._checkpointing = False

    async def _batched(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in the next batch transaction (see the module docstring).

        The first caller to find no batch running runs one with everything queued; when
        it ends, the first operation still queued is woken to run the next. Waiting is
        shielded from cancellation, as a thread's work is: an operation once queued
        runs, and its outcome is what the caller sees (a cancellation is delivered after).
        """
        op = _Op(fn)
        self._queue.append(op)
        with trio.CancelScope(shield=True):
            if self._batch_running:
                await op.done.wait()
            if not op.finished:  # this task runs the batch (first, or handed the lead)
                await self._run_batches(op)
        await trio.lowlevel.checkpoint_if_cancelled()
        if op.error is not None:
            if isinstance(op.error, sqlite3.Error):
                raise StoreError(f"session store {self.path}: {op.error}") from op.error
            raise op.error
        return op.result  # type: ignore[return-value]  # what ``fn`` returned

    async def _run_batches(self, mine: _Op) -> None:
        self._batch_running = True
        batch, self._queue = self._queue, []
        try:
            await self._run(lambda c: _apply_batch(c, batch))
        except BaseException as exc:  # closed store, or a thread failure: fail the batch
            for op in batch:
                op.error = exc if isinstance(exc, Exception) else StoreError(repr(exc))
            if not isinstance(exc, Exception):
                raise
        finally:
            for op in batch:
                op.finished = True
                op.done.set()
            if self._queue:
                self._queue[0].done.set()  # not finished: its task runs the next batch
            else:
                self._batch_running = False

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
            await self._batched(lambda c: _put(c, session))
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
            created = await self._batched(lambda c: _create(c, session, wall, prune))
        except StaleEpoch:
            self._counters.stale_refusals += 1
            raise
        if prune:
            self._creates_since_prune, self._last_prune = 0, now
        self._creates_since_prune += 1
        return self._counters.created(created)

    async def adopt_session(self, session: Session, from_node: int, from_epoch: int) -> bool:
        wall = time.time()
        try:
            return await self._run(lambda c: _adopt(c, session, from_node, from_epoch, wall))
        except StaleEpoch:
            self._counters.stale_refusals += 1
            raise

    async def delete_session(self, node_id: int, epoch: int, call_id: str) -> None:
        try:
            await self._batched(lambda c: _delete(c, node_id, epoch, call_id))
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
