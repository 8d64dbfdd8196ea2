"""The shared session store of an ORS cluster, fenced by a per-Node epoch.

Sessions are kept by Node ID with the epoch that wrote them. Backends: a SQLite file
(``sqlite:///PATH``, the default, for nodes on one machine) and Redis
(``redis://HOST:PORT/DB``). See CONTRACTS.md "Session store".
"""

from __future__ import annotations

from orsim.store._memory import MemoryStore as MemoryStore
from orsim.store._messages import AdoptSession as AdoptSession
from orsim.store._messages import ClaimEpoch as ClaimEpoch
from orsim.store._messages import Count as Count
from orsim.store._messages import Counted as Counted
from orsim.store._messages import Created as Created
from orsim.store._messages import CreateSession as CreateSession
from orsim.store._messages import CurrentEpoch as CurrentEpoch
from orsim.store._messages import DeleteSession as DeleteSession
from orsim.store._messages import Epoch as Epoch
from orsim.store._messages import Moved as Moved
from orsim.store._messages import PutSession as PutSession
from orsim.store._messages import SessionList as SessionList
from orsim.store._messages import Sessions as Sessions
from orsim.store._messages import Stale as Stale
from orsim.store._messages import StoreServerStatus as StoreServerStatus
from orsim.store._messages import Won as Won
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
from orsim.store._server import StoreServer as StoreServer
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
    "AdoptSession",
    "ClaimEpoch",
    "Count",
    "Counted",
    "CreateSession",
    "Created",
    "CurrentEpoch",
    "DeleteSession",
    "Epoch",
    "ErrorReply",
    "MemoryStore",
    "Moved",
    "PutSession",
    "RedisLocation",
    "RedisStore",
    "RemoteStore",
    "ReplyParser",
    "Session",
    "SessionList",
    "SessionStore",
    "Sessions",
    "SqliteLocation",
    "SqliteStore",
    "Stale",
    "StaleEpoch",
    "StoreError",
    "StoreServer",
    "StoreServerStatus",
    "StoreStatistics",
    "StoreUnavailable",
    "Won",
    "encode_command",
    "open_shared_store",
    "open_store",
    "parse_store_url",
]
