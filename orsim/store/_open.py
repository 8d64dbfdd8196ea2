"""Open the store a `persistence/store` URL names."""

from __future__ import annotations

from pathlib import Path

import trio

from orsim.store._protocol import SessionStore
from orsim.store._redis import RedisStore
from orsim.store._remote import RemoteStore
from orsim.store._sqlite import SqliteStore
from orsim.store._url import RedisLocation, parse_store_url
from orsim.wire import Network


async def open_store(url: str, base_dir: Path) -> SessionStore:
    """Open the session store at ``url``; the caller must ``aclose()`` it.

    Args:
        url: ``sqlite:///rel/path`` (relative to ``base_dir``), ``sqlite:////abs/path``
            or ``redis://HOST:PORT/DB``.
        base_dir: where relative SQLite paths start (a node's working directory).

    Raises:
        ConfigError: the URL is not a store URL (the message names ``persistence/store``).
        UnreachableError: the Redis server did not answer.
        StoreError: the SQLite file cannot be opened.
    """
    location = parse_store_url(url, base_dir)
    if isinstance(location, RedisLocation):
        return await RedisStore.open(location)
    return await SqliteStore.open(location.path)


async def open_shared_store(
    url: str, base_dir: Path, network: Network, nursery: trio.Nursery, *, app: str
) -> SessionStore:
    """The store as a node uses it: a SQLite file through its store server (started if
    need be; the link is kept in ``nursery``), Redis directly. The caller must
    ``aclose()`` it.

    Raises:
        ConfigError: the URL is not a store URL.
        UnreachableError: the Redis server did not answer.
    """
    location = parse_store_url(url, base_dir)
    if isinstance(location, RedisLocation):
        return await RedisStore.open(location)
    store = RemoteStore(location.path, network, app=app)
    await nursery.start(store.run)
    return store
