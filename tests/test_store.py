"""The session store contract, run against SQLite and a real Redis server."""

from __future__ import annotations

import itertools
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path

import pytest
import redis
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orsim.errors import ConfigError, UnreachableError
from orsim.store import (
    RedisStore,
    RemoteStore,
    Session,
    SessionStore,
    SqliteStore,
    StaleEpoch,
    open_store,
)
from orsim.store._protocol import CLAIM_TTL
from orsim.store._server import serve_store
from orsim.store._sqlite import PRUNE_INTERVAL
from orsim.wire import TcpNetwork

_node_ids = itertools.count(1000)


def _session(call_id: str, *, node_id: int = 1, epoch: int = 0, state: str = "created") -> Session:
    return Session(
        call_id=call_id, node_id=node_id, epoch=epoch, dn="5000", state=state,
        target="Agent_1", created_at=1_700_000_000.25, data={"app": "ORS_1", "note": "é ✓"},
    )  # fmt: skip


@pytest.fixture(params=["sqlite", "redis", "served"])
def backend(request: pytest.FixtureRequest) -> str:
    """sqlite: the file opened in this process; redis: a real server; served: the SQLite
    file through its store server, as the nodes use it."""
    return str(request.param)


@pytest.fixture
def store_url(backend: str, request: pytest.FixtureRequest) -> str:
    """A store URL for each backend; the Redis database is emptied first."""
    if backend != "redis":
        return "sqlite:///run/sessions.db"
    # Database 2, not 0, so the client's SELECT on connect is exercised too.
    url = str(request.getfixturevalue("redis_url")).rsplit("/", 1)[0] + "/2"
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()
    return url


Opener = Callable[[], Awaitable[SessionStore]]
#: Hypothesis runs each example in a trio run of its own, which a server started by a
#: fixture does not outlive; the server hands each request to the SQLite store as it is.
SERVED_BY_SQLITE = "hypothesis examples: the sqlite run covers what the server delegates"


@pytest.fixture
async def open_one(
    backend: str, store_url: str, tmp_path: Path, nursery: trio.Nursery
) -> AsyncIterator[Opener]:
    """Opens one more handle on the test's store (each its own connection or client)."""
    if backend != "served":

        async def direct() -> SessionStore:
            return await open_store(store_url, tmp_path)

        yield direct
        return
    db = tmp_path / "run" / "sessions.db"
    await nursery.start(partial(serve_store, TcpNetwork(), db, managed=True, idle_exit=None))
    clients: list[RemoteStore] = []

    async def client() -> SessionStore:
        remote = RemoteStore(db, TcpNetwork(), app="test", autostart=False, timeout=10.0)
        await nursery.start(remote.run)
        clients.append(remote)
        return remote

    yield client
    for remote in clients:
        await remote.aclose()


@pytest.fixture
async def store(open_one: Opener) -> AsyncIterator[SessionStore]:
    opened = await open_one()
    yield opened
    await opened.aclose()


async def test_put_replace_and_delete(store: SessionStore) -> None:
    """A put session reads back equal; a second put replaces it; delete forgets it."""
    first = _session("c1")
    await store.put_session(first)
    assert await store.sessions(1) == [first]
    routed = _session("c1", state="routing")
    await store.put_session(routed)
    assert await store.sessions(1) == [routed]
    await store.delete_session(1, 0, "c1")
    assert await store.sessions(1) == []
    await store.delete_session(1, 0, "c1")  # deleting an absent session is fine


async def test_sessions_are_kept_by_node(store: SessionStore) -> None:
    """Each Node sees only its own sessions, ordered by creation time."""
    a = [_session(f"a{i}", node_id=1) for i in range(3)]
    b = _session("b0", node_id=2)
    for s in [*a, b]:
        await store.put_session(s)
    assert sorted(s.call_id for s in await store.sessions(1)) == ["a0", "a1", "a2"]
    assert await store.sessions(2) == [b]
    assert await store.sessions(3) == []
    assert isinstance(store, SqliteStore | RedisStore | RemoteStore)
    assert (await store.count(1), await store.count(2)) == (3, 1)
    assert store.statistics().puts == 4


async def test_epoch_compare_and_set(store: SessionStore) -> None:
    """The epoch starts at 0 and moves only when the expected value matches."""
    assert await store.current_epoch(1) == 0
    assert await store.claim_epoch(1, 0, 1)
    assert not await store.claim_epoch(1, 0, 1)
    assert not await store.claim_epoch(1, 5, 6)
    assert await store.claim_epoch(1, 1, 2)
    assert await store.current_epoch(1) == 2
    assert await store.current_epoch(2) == 0  # per Node
    with pytest.raises(ValueError):
        await store.claim_epoch(1, 2, 2)


async def test_two_contenders_exactly_one_wins(open_one: Opener) -> None:
    """Two handles (two connections) claiming the same epoch at once: exactly one wins."""
    a = await open_one()
    b = await open_one()
    try:

        async def contend(handle: SessionStore, node_id: int, results: list[bool]) -> None:
            results.append(await handle.claim_epoch(node_id, 0, 1))

        for node_id in range(10, 30):
            results: list[bool] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(contend, a, node_id, results)
                nursery.start_soon(contend, b, node_id, results)
            assert sorted(results) == [False, True]
            assert await a.current_epoch(node_id) == 1
    finally:
        await a.aclose()
        await b.aclose()


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    steps=st.lists(st.tuples(st.integers(0, 2), st.sampled_from(["read", "claim"])), max_size=30)
)
async def test_any_interleaving_of_claims(
    backend: str, store_url: str, tmp_path: Path, steps: list[tuple[int, str]]
) -> None:
    """Contenders that read then claim, interleaved any way: the epoch never decreases and
    ends equal to the number of successful claims; a claim wins iff its view is current."""
    if backend == "served":
        pytest.skip(SERVED_BY_SQLITE)
    node_id = next(_node_ids)  # the store outlives one example; keep examples apart
    store = await open_store(store_url, tmp_path)
    try:
        views = [0, 0, 0]
        wins = 0
        last = 0
        for who, action in steps:
            if action == "read":
                views[who] = await store.current_epoch(node_id)
                continue
            won = await store.claim_epoch(node_id, views[who], views[who] + 1)
            assert won == (views[who] == wins)
            wins += won
            now = await store.current_epoch(node_id)
            assert now >= last
            last = now
        assert await store.current_epoch(node_id) == wins
    finally:
        await store.aclose()


async def test_stale_writes_are_refused(store: SessionStore) -> None:
    """Once a higher epoch is claimed, puts and deletes carrying the old one are refused."""
    assert await store.claim_epoch(1, 0, 1)
    await store.put_session(_session("c1", epoch=1))
    await store.put_session(_session("c2", epoch=1))
    assert await store.claim_epoch(1, 1, 2)  # the backup takes over

    with pytest.raises(StaleEpoch) as refused:
        await store.put_session(_session("c3", epoch=1))
    assert (refused.value.node_id, refused.value.epoch, refused.value.current) == (1, 1, 2)
    with pytest.raises(StaleEpoch):
        await store.delete_session(1, 1, "c1")
    with pytest.raises(StaleEpoch):
        await store.put_session(_session("c1", epoch=0, state="late"))
    assert [(s.call_id, s.state) for s in await store.sessions(1)] == [
        ("c1", "created"),
        ("c2", "created"),
    ]

    # The new primary carries on; other Nodes are not affected.
    await store.put_session(_session("c1", epoch=2, state="recovered"))
    await store.delete_session(1, 2, "c2")
    await store.put_session(_session("x", node_id=2, epoch=0))
    assert [(s.call_id, s.epoch) for s in await store.sessions(1)] == [("c1", 2)]
    assert isinstance(store, SqliteStore | RedisStore | RemoteStore)
    assert store.statistics().stale_refusals == 3


async def test_sessions_and_epochs_survive_reopen(open_one: Opener) -> None:
    """What one handle wrote is there for the next one, after the first is closed."""
    first = await open_one()
    assert await first.claim_epoch(7, 0, 3)
    kept = _session("c1", node_id=7, epoch=3)
    await first.put_session(kept)
    await first.aclose()
    await first.aclose()  # closing twice is fine
    with pytest.raises(trio.ClosedResourceError):
        await first.current_epoch(7)

    second = await open_one()
    try:
        assert await second.current_epoch(7) == 3
        assert await second.sessions(7) == [kept]
    finally:
        await second.aclose()


async def test_bad_url_is_a_config_error(tmp_path: Path) -> None:
    """An unusable URL names the option."""
    with pytest.raises(ConfigError, match="persistence/store"):
        await open_store("mysql://db/x", tmp_path)


async def test_unreachable_redis(tmp_path: Path) -> None:
    """A Redis URL nobody answers on is an UnreachableError."""
    with trio.socket.socket() as sock:  # a port that is bound but not listening
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        with pytest.raises(UnreachableError, match="persistence/store"):
            await open_store(f"redis://127.0.0.1:{port}/0", tmp_path)


async def test_redis_reconnects_and_reloads_scripts(redis_url: str, tmp_path: Path) -> None:
    """A killed client connection and a flushed script cache are both recovered from."""
    store = await open_store(redis_url, tmp_path)
    admin = redis.Redis.from_url(redis_url)
    try:
        admin.flushdb()
        await store.put_session(_session("c1"))
        assert admin.client_kill_filter(_type="normal", skipme=True) >= 1
        admin.script_flush()
        await store.put_session(_session("c2"))  # reconnects, then EVAL after NOSCRIPT
        assert await store.claim_epoch(1, 0, 1)
        assert [s.call_id for s in await store.sessions(1)] == ["c1", "c2"]
    finally:
        admin.close()
        await store.aclose()


async def test_first_creator_owns_the_call(store: SessionStore) -> None:
    """The first create wins; another Node's create is refused and writes nothing; the
    owner (a retry, or a higher epoch of the same Node) may create again."""
    assert await store.create_session(_session("c1", node_id=1))
    assert not await store.create_session(_session("c1", node_id=2))
    assert await store.sessions(2) == []
    assert await store.create_session(_session("c1", node_id=1, state="retried"))
    assert await store.claim_epoch(1, 0, 1)  # the backup of Node 1 takes over
    recovered = _session("c1", node_id=1, epoch=1, state="recovered")
    assert await store.create_session(recovered)
    assert await store.sessions(1) == [recovered]
    assert isinstance(store, SqliteStore | RedisStore | RemoteStore)
    stats = store.statistics()
    assert (stats.creates, stats.creates_refused, stats.puts) == (3, 1, 0)


async def test_claim_outlives_the_session(store: SessionStore) -> None:
    """After the owner deleted the session, a late contender still loses."""
    assert await store.create_session(_session("c1", node_id=1))
    await store.delete_session(1, 0, "c1")
    assert await store.sessions(1) == []
    assert not await store.create_session(_session("c1", node_id=2))
    assert await store.sessions(2) == []
    assert await store.create_session(_session("c2", node_id=2))  # other calls are free


async def test_a_finished_call_is_not_created_again_by_its_own_node(
    store: SessionStore,
) -> None:
    """Deleting the session finishes the call: the Node's backup, taking over with a
    higher epoch and a late watch on the call, must not serve it a second time."""
    assert await store.create_session(_session("c1", node_id=1))
    await store.delete_session(1, 0, "c1")
    assert await store.claim_epoch(1, 0, 1)
    assert not await store.create_session(_session("c1", node_id=1, epoch=1))
    assert await store.sessions(1) == []
    # A delete of a session never created (or of another Node's call) finishes nothing.
    await store.delete_session(2, 0, "c1")
    await store.delete_session(2, 0, "c3")
    assert await store.create_session(_session("c3", node_id=2))


async def test_stale_create_is_refused(store: SessionStore) -> None:
    """A create carrying an old epoch raises StaleEpoch and claims nothing."""
    assert await store.claim_epoch(1, 0, 2)
    with pytest.raises(StaleEpoch) as refused:
        await store.create_session(_session("c1", node_id=1, epoch=1))
    assert (refused.value.node_id, refused.value.epoch, refused.value.current) == (1, 1, 2)
    assert await store.sessions(1) == []
    assert await store.create_session(_session("c1", node_id=3))  # the call is still free
    with pytest.raises(StaleEpoch):  # the epoch is checked before the claim
        await store.create_session(_session("c1", node_id=1, epoch=1))
    assert isinstance(store, SqliteStore | RedisStore | RemoteStore)
    assert store.statistics().stale_refusals == 2


async def test_concurrent_creators_exactly_one_wins(open_one: Opener) -> None:
    """Two Nodes on two connections creating the same call at once: exactly one wins, and
    only the winner's session is stored."""
    a = await open_one()
    b = await open_one()
    try:

        async def create(
            handle: SessionStore, node_id: int, call_id: str, won: dict[int, bool]
        ) -> None:
            won[node_id] = await handle.create_session(_session(call_id, node_id=node_id))

        for round_ in range(20):
            call_id = f"race-{round_}"
            won: dict[int, bool] = {}
            async with trio.open_nursery() as nursery:
                nursery.start_soon(create, a, 1, call_id, won)
                nursery.start_soon(create, b, 2, call_id, won)
            assert sorted(won.values()) == [False, True]
            for node_id, created in won.items():
                stored = [s.call_id for s in await a.sessions(node_id)]
                assert (call_id in stored) == created
    finally:
        await a.aclose()
        await b.aclose()


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    steps=st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 2), st.sampled_from(["create", "delete"])),
        max_size=30,
    )
)
async def test_any_interleaving_of_creates(
    backend: str, store_url: str, tmp_path: Path, steps: list[tuple[int, int, str]]
) -> None:
    """Creates and deletes by 3 Nodes over 3 calls, in any order: each call gets exactly
    one owner (its first creator), every successful create is by that owner before it
    finished the call (deleted its session), and only owners hold sessions."""
    if backend == "served":
        pytest.skip(SERVED_BY_SQLITE)
    nodes = [next(_node_ids) for _ in range(3)]  # the store outlives one example
    calls = [f"call-{nodes[0]}-{i}" for i in range(3)]
    store = await open_store(store_url, tmp_path)
    try:
        owner: dict[str, int] = {}
        done: set[str] = set()
        held: dict[int, set[str]] = {n: set() for n in nodes}
        for who, which, action in steps:
            node_id, call_id = nodes[who], calls[which]
            if action == "delete":
                await store.delete_session(node_id, 0, call_id)
                held[node_id].discard(call_id)
                if owner.get(call_id) == node_id:
                    done.add(call_id)
                continue
            created = await store.create_session(_session(call_id, node_id=node_id))
            mine = owner.setdefault(call_id, node_id) == node_id
            assert created == (mine and call_id not in done)
            if created:
                held[node_id].add(call_id)
        for node_id in nodes:
            assert {s.call_id for s in await store.sessions(node_id)} == held[node_id]
    finally:
        await store.aclose()


async def test_sqlite_claims_expire_and_are_pruned(tmp_path: Path) -> None:
    """A claim older than CLAIM_TTL no longer refuses, and pruning deletes it."""
    store = await SqliteStore.open(tmp_path / "s.db")
    try:
        assert await store.create_session(_session("old", node_id=1))
        conn = sqlite3.connect(tmp_path / "s.db")
        try:
            with conn:
                conn.execute("UPDATE claims SET claimed_at = claimed_at - ?", (CLAIM_TTL + 1,))
            assert await store.create_session(_session("old", node_id=2))  # expired claim
            assert await store.create_session(_session("new", node_id=2))
            with conn:
                conn.execute(
                    "INSERT INTO claims (call_id, node_id, claimed_at) VALUES ('gone', 1, ?)",
                    (time.time() - CLAIM_TTL - 1,),
                )
            store._last_prune -= PRUNE_INTERVAL  # prune at the next create
            assert await store.create_session(_session("another", node_id=2))
            claims = dict(conn.execute("SELECT call_id, node_id FROM claims").fetchall())
            assert claims == {"old": 2, "new": 2, "another": 2}
        finally:
            conn.close()
    finally:
        await store.aclose()


async def test_redis_claims_expire(redis_url: str, tmp_path: Path) -> None:
    """Each claim is a key expiring CLAIM_TTL after the create that made it."""
    store = await open_store(redis_url, tmp_path)
    admin = redis.Redis.from_url(redis_url)
    try:
        admin.flushdb()
        assert await store.create_session(_session("c1", node_id=1))
        assert admin.get("orsim:claim:c1") == b"1"
        assert 0 < admin.pttl("orsim:claim:c1") <= CLAIM_TTL * 1000
        admin.delete("orsim:claim:c1")  # as Redis does when it expires
        assert await store.create_session(_session("c1", node_id=2))
    finally:
        admin.close()
        await store.aclose()


async def _adoption_cases(store: SessionStore) -> None:
    dead, live, other = 7, 8, 9
    await store.create_session(_session("orphan", node_id=dead))
    await store.create_session(_session("routed", node_id=dead))
    await store.delete_session(dead, 0, "routed")
    await store.create_session(_session("theirs", node_id=other))
    await store.put_session(_session("theirs", node_id=dead))  # held, but claimed by other
    assert await store.claim_epoch(dead, 0, 1)  # the adopter fences the dead Node
    mine = _session("orphan", node_id=live)

    # Not holding the dead Node's epoch: refused, nothing changes.
    with pytest.raises(StaleEpoch) as refused:
        await store.adopt_session(mine, dead, 0)
    assert (refused.value.node_id, refused.value.epoch, refused.value.current) == (dead, 0, 1)
    assert {s.call_id for s in await store.sessions(dead)} == {"orphan", "theirs"}
    assert await store.sessions(live) == []
    assert not await store.create_session(_session("orphan", node_id=live))  # still dead's

    # Adopting moves the session and the claim, once.
    assert await store.adopt_session(mine, dead, 1)
    assert [s.call_id for s in await store.sessions(dead)] == ["theirs"]
    assert await store.sessions(live) == [mine]
    assert not await store.adopt_session(mine, dead, 1)  # already moved: nothing to do
    assert not await store.adopt_session(_session("orphan", node_id=other), dead, 1)
    assert not await store.create_session(_session("orphan", node_id=dead, epoch=1))
    assert not await store.create_session(_session("orphan", node_id=other))
    assert await store.create_session(_session("orphan", node_id=live, state="next"))

    # Nothing to adopt: routed and deleted before the Node died; claimed by another Node.
    assert not await store.adopt_session(_session("routed", node_id=live), dead, 1)
    assert not await store.adopt_session(_session("theirs", node_id=live), dead, 1)
    assert {s.call_id for s in await store.sessions(live)} == {"orphan"}
    assert [s.call_id for s in await store.sessions(dead)] == ["theirs"]

    # An adopter whose own epoch is stale is refused like a stale put.
    await store.create_session(_session("late", node_id=dead, epoch=1))
    assert await store.claim_epoch(live, 0, 2)
    with pytest.raises(StaleEpoch) as refused:
        await store.adopt_session(_session("late", node_id=live, epoch=1), dead, 1)
    assert (refused.value.node_id, refused.value.epoch, refused.value.current) == (live, 1, 2)
    assert {s.call_id for s in await store.sessions(dead)} == {"late", "theirs"}
    assert {s.call_id for s in await store.sessions(live)} == {"orphan"}
    assert await store.adopt_session(_session("late", node_id=live, epoch=2), dead, 1)


async def test_adopt_moves_a_dead_nodes_session_and_claim(store: SessionStore) -> None:
    """A live Node holding a dead Node's epoch moves the session and its claim, once;
    a wrong or stale epoch is refused and changes nothing."""
    await _adoption_cases(store)


async def test_memory_store_adopts_like_the_others() -> None:
    """The in-process store used by simulations follows the same adoption rules."""
    from orsim.store._memory import MemoryStore

    await _adoption_cases(MemoryStore())


async def test_two_adopters_race_and_one_wins(open_one: Opener) -> None:
    """Two Nodes on two connections adopting the same orphan: exactly one moves it."""
    a = await open_one()
    b = await open_one()

    async def adopt(
        store: SessionStore, node: int, call: str, epoch: int, won: dict[int, bool]
    ) -> None:
        won[node] = await store.adopt_session(_session(call, node_id=node), 20, epoch)

    try:
        for round_ in range(10):
            call = f"race-{round_}"
            epoch = await a.current_epoch(20)
            assert await a.create_session(_session(call, node_id=20, epoch=epoch))
            assert await a.claim_epoch(20, epoch, epoch + 1)
            won: dict[int, bool] = {}
            async with trio.open_nursery() as nursery:
                nursery.start_soon(adopt, a, 21, call, epoch + 1, won)
                nursery.start_soon(adopt, b, 22, call, epoch + 1, won)
            assert sorted(won.values()) == [False, True]
            for node, moved in won.items():
                assert (call in {s.call_id for s in await b.sessions(node)}) == moved
                assert await b.create_session(_session(call, node_id=node)) == moved
            assert call not in {s.call_id for s in await a.sessions(20)}
    finally:
        await a.aclose()
        await b.aclose()


async def test_sqlite_adoption_needs_a_live_claim(tmp_path: Path) -> None:
    """An expired claim (not yet pruned) counts as absent, as Redis expires its key."""
    store = await SqliteStore.open(tmp_path / "s.db")
    try:
        assert await store.create_session(_session("old", node_id=1))
        assert await store.claim_epoch(1, 0, 1)
        conn = sqlite3.connect(tmp_path / "s.db")
        try:
            with conn:
                conn.execute("UPDATE claims SET claimed_at = claimed_at - ?", (CLAIM_TTL + 1,))
        finally:
            conn.close()
        assert not await store.adopt_session(_session("old", node_id=2), 1, 1)
        assert [s.call_id for s in await store.sessions(1)] == ["old"]
    finally:
        await store.aclose()


async def test_redis_adoption_retry_reports_the_move(redis_url: str, tmp_path: Path) -> None:
    """The script run twice with one token (a retry after a lost answer) reports True both
    times; the claim moves with a fresh expiry."""
    from orsim.store import _redis
    from orsim.store._session import session_to_json

    store = await open_store(redis_url, tmp_path)
    admin = redis.Redis.from_url(redis_url)
    try:
        admin.flushdb()
        assert isinstance(store, RedisStore)
        assert await store.create_session(_session("c1", node_id=1))
        assert await store.claim_epoch(1, 0, 1)
        moved = _session("c1", node_id=2)
        keys = [_redis._node_key(1), _redis._sessions_key(1), _redis._claim_key("c1"),
                _redis._node_key(2), _redis._sessions_key(2), _redis._adopt_key("c1")]  # fmt: skip
        args: list[str | int] = [1, 0, 1, 2, "c1", session_to_json(moved), 60000, "tok"]
        assert await store._script(_redis._ADOPT, keys, args) == [1, 0]
        assert await store._script(_redis._ADOPT, keys, args) == [1, 0]
        assert not await store.adopt_session(moved, 1, 1)  # another attempt: already moved
        assert admin.get("orsim:claim:c1") == b"2"
        assert 0 < admin.pttl("orsim:claim:c1") <= 60000
        assert await store.sessions(2) == [moved]
    finally:
        admin.close()
        await store.aclose()


def test_processes_opening_a_fresh_sqlite_file_together_all_succeed(tmp_path: Path) -> None:
    """Both halves of a Node start at once and open the same new file: whoever finds it
    locked (by the other's WAL switch or recovery) waits and opens it too."""
    script = (
        "import sys, trio\n"
        "from pathlib import Path\n"
        "from orsim.store._sqlite import SqliteStore\n"
        "async def main():\n"
        "    store = await SqliteStore.open(Path(sys.argv[1]))\n"
        "    await store.aclose()\n"
        "trio.run(main)\n"
    )
    for attempt in range(5):
        path = tmp_path / f"s{attempt}.db"
        procs = [
            subprocess.Popen([sys.executable, "-c", script, str(path)], stderr=subprocess.PIPE)
            for _ in range(6)
        ]
        for proc in procs:
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err.decode()
