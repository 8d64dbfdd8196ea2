"""The shared session store of an ORS cluster, fenced by a per-Node epoch.

Sessions are kept by Node ID with the epoch that wrote them. Backends: a SQLite file
(``sqlite:///PATH``, the default, for nodes on one machine) and Redis
(``redis://HOST:PORT/DB``). See CONTRACTS.md "Session store".
"""

from __future__ import annotations

from orsim.store._memory import MemoryStore as MemoryStore
from orsim.store._open import open_shared_store as open_shared_store
from orsim.store._open import open_store as open_store
from orsim.store._protocol import SessionStore as SessionStore
from orsim.store._protocol import StoreStatistics as StoreStatistics
from orsim.store._redis import RedisStore as RedisStore
from orsim.store._remote import RemoteStore as RemoteStore
from orsim.store._resp import NEED_DATA as NEED_DATA
from orsim.store._resp import ErrorReply as ErrorReply
from orsim.store._resp import ReplyParser as ReplyParser
from orsim.store._resp import encode_command as encode_command
from orsim.store._session import Session as Session
from orsim.store._session import StaleEpoch as StaleEpoch
from orsim.store._session import StoreError as StoreError
from orsim.store._session import StoreUnavailable as StoreUnavailable
from orsim.store._sqlite import SqliteStore as SqliteStore
from orsim.store._url import RedisLocation as RedisLocation
from orsim.store._url import SqliteLocation as SqliteLocation
from orsim.store._url import parse_store_url as parse_store_url

__all__ = [
    "NEED_DATA",
    "ErrorReply",
    "MemoryStore",
    "RedisLocation",
    "RedisStore",
    "RemoteStore",
    "ReplyParser",
    "Session",
    "SessionStore",
    "SqliteLocation",
    "SqliteStore",
    "StaleEpoch",
    "StoreError",
    "StoreStatistics",
    "StoreUnavailable",
    "encode_command",
    "open_shared_store",
    "open_store",
    "parse_store_url",
]
