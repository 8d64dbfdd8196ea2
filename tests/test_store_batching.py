"""SQLite group commit: operations queued behind a locked database share one transaction,
each with its own outcome; the in-loop fast path and the thread path agree."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable
from pathlib import Path

import pytest
import trio
import trio.testing

from orsim.store import Session, SqliteStore, StaleEpoch


def _session(call_id: str, *, node_id: int = 1, epoch: int = 0) -> Session:
    return Session(
        call_id=call_id, node_id=node_id, epoch=epoch, dn="5000", state="created",
        target="", created_at=1_700_000_000.0, data={"app": "ORS_1"},
    )  # fmt: skip


async def test_operations_behind_a_lock_share_a_batch_and_keep_their_outcomes(
    tmp_path: Path,
) -> None:
    """While another process holds the write lock, creates, a stale create, a refused
    create and a delete queue up; once it is released each gets its own outcome."""
    path = tmp_path / "s.db"
    store = await SqliteStore.open(path)
    try:
        assert await store.claim_epoch(1, 0, 3)
        assert await store.create_session(_session("owned", node_id=2))
        assert await store.create_session(_session("gone", node_id=1, epoch=3))
        blocker = sqlite3.connect(path, isolation_level=None, timeout=0)
        blocker.execute("BEGIN IMMEDIATE")  # another process writing
        outcomes: dict[str, object] = {}

        async def attempt(name: str, op: Awaitable[object]) -> None:
            try:
                outcomes[name] = await op
            except StaleEpoch:
                outcomes[name] = "stale"

        async with trio.open_nursery() as nursery:
            nursery.start_soon(attempt, "a", store.create_session(_session("a", epoch=3)))
            nursery.start_soon(attempt, "stale", store.create_session(_session("b", epoch=2)))
            nursery.start_soon(attempt, "owned", store.create_session(_session("owned", epoch=3)))
            nursery.start_soon(attempt, "c", store.create_session(_session("c", epoch=3)))
            nursery.start_soon(attempt, "del", store.delete_session(1, 3, "gone"))
            await trio.testing.wait_all_tasks_blocked()
            assert not outcomes  # all waiting for the lock
            blocker.execute("COMMIT")
        blocker.close()
        assert outcomes == {"a": True, "stale": "stale", "owned": False, "c": True, "del": None}
        assert sorted(s.call_id for s in await store.sessions(1)) == ["a", "c"]
    finally:
        await store.aclose()


async def test_a_database_error_fails_the_whole_batch(tmp_path: Path) -> None:
    """A batch that breaks is rolled back: none of its operations took effect."""
    path = tmp_path / "s.db"
    store = await SqliteStore.open(path)
    try:
        blocker = sqlite3.connect(path, isolation_level=None, timeout=0)
        blocker.execute("BEGIN IMMEDIATE")
        errors: list[str] = []

        async def create(call_id: str) -> None:
            try:
                await store.create_session(_session(call_id))
            except Exception as exc:
                errors.append(type(exc).__name__)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(create, "x")
            nursery.start_soon(create, "y")
            await trio.testing.wait_all_tasks_blocked()
            blocker.execute("DROP TABLE sessions")
            blocker.execute("COMMIT")
        blocker.close()
        assert errors and set(errors) == {"StoreError"}
    finally:
        await store.aclose()


@pytest.mark.parametrize("calls", [1200])
async def test_many_in_loop_transactions_checkpoint_the_wal(tmp_path: Path, calls: int) -> None:
    """The WAL is checkpointed in the background, and nothing is lost on the way."""
    path = tmp_path / "s.db"
    store = await SqliteStore.open(path)
    try:
        for i in range(calls):
            assert await store.create_session(_session(f"c{i}"))
            if i % 2:
                await store.delete_session(1, 0, f"c{i}")
        assert await store.count(1) == calls // 2
    finally:
        await store.aclose()
    reopened = await SqliteStore.open(path)
    try:
        assert await reopened.count(1) == calls // 2
    finally:
        await reopened.aclose()
