"""The Redis session store, for nodes spread over several machines.

Why a small RESP client on trio streams (``_resp.py``) rather than redis-py in worker
threads: a node does a put and a delete per call, and on this kind of host a thread hop
costs more than the loopback round trip itself (measured: ~130-190 us per
``trio.to_thread`` call against ~70 us for a PING over a trio socket, and ~500 us per
store operation through redis-py in a thread). Native trio I/O is also cancellable and
needs no thread pool. The client needs only a handful of commands, one connection and
in-order replies, which is little code.

Layout per Node (the ``{node_id}`` hash tag keeps both keys in one Redis Cluster slot):

- ``orsim:{N}:node``: hash with ``epoch`` (absent = 0) and ``claim`` (the token of the
  claim that set it);
- ``orsim:{N}:sessions``: hash call_id -> session JSON (the session holds its epoch).

and per call created with ``create_session``: ``orsim:claim:CALL_ID``, the owning Node ID,
expiring ``CLAIM_TTL`` after it was set (it outlives the session); ``adopt_session``
moves it to the adopter (refreshing its expiry) and leaves ``orsim:adopt:CALL_ID``, the
adoption's random token, expiring likewise. These keys are in other Cluster slots than
the Node's keys, so ``create_session`` and ``adopt_session`` need a single Redis server
(or a proxy that allows cross-slot scripts), which is what this client speaks to.

Every check-and-write is one Lua script (EVALSHA, falling back to EVAL after a server
restart), which Redis runs atomically. A call that fails on a broken connection is
retried once on a fresh one, so each script is safe to run twice: put replaces, delete
forgets, a create finds the call claim it made, and a claim carries a random token, so
the retry of a claim that was applied (its answer lost) is recognised as won rather than
lost to a rival; an adoption carries a token for the same reason.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from typing import Final, final

import trio

from orsim.errors import ProtocolError, UnreachableError
from orsim.store._protocol import CLAIM_TTL, Counters, StoreStatistics
from orsim.store._resp import ErrorReply, NeedData, Reply, ReplyParser, encode_command
from orsim.store._session import (
    Session,
    StaleEpoch,
    StoreError,
    check_claim,
    session_from_json,
    session_to_json,
)
from orsim.store._url import RedisLocation

#: Time limit for connecting and for each command's round trip (s). Redis answers in
#: well under a millisecond on a healthy link; past this the server is treated as gone.
DEFAULT_TIMEOUT: Final = 5.0
_RECEIVE_SIZE: Final = 65536

_CLAIM = """
local cur = tonumber(redis.call('HGET', KEYS[1], 'epoch') or '0')
if cur == tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'epoch', ARGV[2], 'claim', ARGV[3])
  return 1
end
if cur == tonumber(ARGV[2]) and redis.call('HGET', KEYS[1], 'claim') == ARGV[3] then
  return 1
end
return 0
"""

# Both return {1, current} when written, {0, current} when the epoch is stale.
_PUT = """
local cur = tonumber(redis.call('HGET', KEYS[1], 'epoch') or '0')
if tonumber(ARGV[1]) < cur then return {0, cur} end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return {1, cur}
"""

# {1, current} when written, {0, current} when the epoch is stale, {2, owner} when
# another Node owns the call. The GET and SET NX are one atomic step with the write.
_CREATE = """
local cur = tonumber(redis.call('HGET', KEYS[1], 'epoch') or '0')
if tonumber(ARGV[1]) < cur then return {0, cur} end
local owner = redis.call('GET', KEYS[3])
if owner then
  if owner ~= ARGV[4] then return {2, 0} end
else
  redis.call('SET', KEYS[3], ARGV[4], 'NX', 'PX', ARGV[5])
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return {1, cur}
"""

# {1, 0} when moved, {2, 0} when there was nothing to move, {0, current} when the dead
# Node's epoch is not the adopter's, {3, current} when the adopter's own epoch is stale.
# KEYS: from node, from sessions, claim, to node, to sessions, adoption token.
# ARGV: from epoch, to epoch, from node, to node, call_id, session JSON, TTL ms, token.
# The token (kept as long as the claim) makes the retry of an adoption that was applied,
# its answer lost, report True instead of "already adopted".
_ADOPT = """
if redis.call('GET', KEYS[6]) == ARGV[8] then return {1, 0} end
local from_cur = tonumber(redis.call('HGET', KEYS[1], 'epoch') or '0')
if from_cur ~= tonumber(ARGV[1]) then return {0, from_cur} end
local to_cur = tonumber(redis.call('HGET', KEYS[4], 'epoch') or '0')
if tonumber(ARGV[2]) < to_cur then return {3, to_cur} end
local owner = redis.call('GET', KEYS[3])
if owner ~= ARGV[3] or redis.call('HEXISTS', KEYS[2], ARGV[5]) == 0 then return {2, 0} end
redis.call('HDEL', KEYS[2], ARGV[5])
redis.call('SET', KEYS[3], ARGV[4], 'PX', ARGV[7])
redis.call('HSET', KEYS[5], ARGV[5], ARGV[6])
redis.call('SET', KEYS[6], ARGV[8], 'PX', ARGV[7])
return {1, 0}
"""

# KEYS: node, sessions, claim. ARGV: epoch, call_id, node. The claim of a finished call
# becomes "done:NODE" (same expiry), which no create matches, not even its own Node's.
_DELETE = """
local cur = tonumber(redis.call('HGET', KEYS[1], 'epoch') or '0')
if tonumber(ARGV[1]) < cur then return {0, cur} end
redis.call('HDEL', KEYS[2], ARGV[2])
if redis.call('GET', KEYS[3]) == ARGV[3] then
  redis.call('SET', KEYS[3], 'done:' .. ARGV[3], 'KEEPTTL')
end
return {1, cur}
"""


def _node_key(node_id: int) -> str:
    return f"orsim:{{{node_id}}}:node"


def _sessions_key(node_id: int) -> str:
    return f"orsim:{{{node_id}}}:sessions"


def _claim_key(call_id: str) -> str:
    return f"orsim:claim:{call_id}"


def _adopt_key(call_id: str) -> str:
    return f"orsim:adopt:{call_id}"


_SHA1 = {
    script: hashlib.sha1(script.encode()).hexdigest()
    for script in (_CLAIM, _PUT, _CREATE, _ADOPT, _DELETE)
}
_CLAIM_TTL_MS: Final = math.ceil(CLAIM_TTL * 1000)


class _ConnectionFailed(Exception):
    """Internal: the connection broke or timed out; the call may be retried."""


class _Link:
    """One RESP connection: one request at a time, its reply read before the next."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.parser = ReplyParser()

    async def call(self, *args: str | int | bytes) -> Reply:
        await self.stream.send_all(encode_command(*args))
        while True:
            reply = self.parser.next_reply()
            if not isinstance(reply, NeedData):
                return reply
            data = await self.stream.receive_some(_RECEIVE_SIZE)
            if not data:
                raise trio.BrokenResourceError("redis closed the connection")
            self.parser.receive_data(data)


@final
class RedisStore:
    """A :class:`~orsim.store.SessionStore` on a Redis server; open with :meth:`open`."""

    def __init__(self, location: RedisLocation, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.location = location
        self._timeout = timeout
        self._link: _Link | None = None
        self._lock = trio.StrictFIFOLock()  # requests and replies must not interleave
        self._closed = False
        self._counters = Counters()

    @classmethod
    async def open(cls, location: RedisLocation, *, timeout: float = DEFAULT_TIMEOUT) -> RedisStore:
        """Connect to the server and check it answers.

        Raises:
            UnreachableError: the server could not be reached or refused us (AUTH, SELECT).
        """
        store = cls(location, timeout=timeout)
        try:
            await store._command("PING")
        except StoreError as exc:
            await store.aclose()
            raise UnreachableError(f"persistence/store: {exc}") from exc
        return store

    async def _connect(self) -> _Link:
        loc = self.location
        stream = await trio.open_tcp_stream(loc.host, loc.port)
        link = _Link(stream)
        setup: list[tuple[str | int, ...]] = []
        if loc.password is not None:
            auth = (loc.username, loc.password) if loc.username else (loc.password,)
            setup.append(("AUTH", *auth))
        if loc.db:
            setup.append(("SELECT", loc.db))
        try:
            for command in setup:
                reply = await link.call(*command)
                if isinstance(reply, ErrorReply):
                    raise StoreError(
                        f"redis at {loc.describe()}: {command[0]} failed: {reply.message}"
                    )
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        return link

    async def _attempt(self, args: tuple[str | int | bytes, ...]) -> Reply:
        try:
            with trio.fail_after(self._timeout):
                if self._link is None:
                    self._link = await self._connect()
                return await self._link.call(*args)
        except (OSError, trio.BrokenResourceError, trio.TooSlowError, ProtocolError) as exc:
            await self._drop()
            raise _ConnectionFailed(str(exc) or type(exc).__name__) from exc
        except BaseException:
            # Cancelled (or a bug) between a request and its reply: the link is out of step.
            await self._drop()
            raise

    async def _drop(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            await trio.aclose_forcefully(link.stream)

    async def _exchange(self, *args: str | int | bytes) -> Reply:
        """Send one command, return its reply (an error reply too); retry once on a new
        connection if the connection fails.

        Raises:
            StoreError: the server is unreachable.
            trio.ClosedResourceError: the store was closed.
        """
        async with self._lock:
            if self._closed:
                raise trio.ClosedResourceError("session store is closed")
            try:
                try:
                    return await self._attempt(args)
                except _ConnectionFailed:
                    return await self._attempt(args)
            except _ConnectionFailed as exc:
                raise StoreError(f"redis at {self.location.describe()}: {exc}") from exc

    def _check(self, reply: Reply) -> Reply:
        if isinstance(reply, ErrorReply):
            raise StoreError(f"redis at {self.location.describe()}: {reply.message}")
        return reply

    async def _command(self, *args: str | int | bytes) -> Reply:
        """Run one command; an error reply raises StoreError."""
        return self._check(await self._exchange(*args))

    async def _script(self, script: str, keys: list[str], args: list[str | int]) -> Reply:
        reply = await self._exchange("EVALSHA", _SHA1[script], len(keys), *keys, *args)
        if isinstance(reply, ErrorReply) and reply.code == "NOSCRIPT":
            # The server restarted or flushed its scripts; EVAL caches the script again.
            reply = await self._exchange("EVAL", script, len(keys), *keys, *args)
        return self._check(reply)

    async def current_epoch(self, node_id: int) -> int:
        value = await self._command("HGET", _node_key(node_id), "epoch")
        return int(value) if isinstance(value, bytes) else 0

    async def claim_epoch(self, node_id: int, expected: int, new: int) -> bool:
        check_claim(expected, new)
        token = secrets.token_hex(8)
        won = await self._script(_CLAIM, [_node_key(node_id)], [expected, new, token]) == 1
        if won:
            self._counters.claims_won += 1
        else:
            self._counters.claims_lost += 1
        return won

    async def _fenced(
        self,
        script: str,
        node_id: int,
        epoch: int,
        call_id: str,
        *extra: str | int,
        keys: tuple[str, ...] = (),
    ) -> None:
        keys = (_node_key(node_id), _sessions_key(node_id), *keys)
        reply = await self._script(script, list(keys), [epoch, call_id, *extra])
        match reply:
            case [1, int()]:
                return
            case [0, int(current)]:
                self._counters.stale_refusals += 1
                raise StaleEpoch(node_id, epoch, current)
        raise StoreError(f"redis at {self.location.describe()}: unexpected reply {reply!r}")

    async def put_session(self, session: Session) -> None:
        await self._fenced(
            _PUT, session.node_id, session.epoch, session.call_id, session_to_json(session)
        )
        self._counters.puts += 1

    async def create_session(self, session: Session) -> bool:
        node_id = session.node_id
        keys = [_node_key(node_id), _sessions_key(node_id), _claim_key(session.call_id)]
        args: list[str | int] = [
            session.epoch, session.call_id, session_to_json(session), node_id, _CLAIM_TTL_MS
        ]  # fmt: skip
        reply = await self._script(_CREATE, keys, args)
        match reply:
            case [1, int()]:
                self._counters.creates += 1
                return True
            case [2, int()]:
                self._counters.creates_refused += 1
                return False
            case [0, int(current)]:
                self._counters.stale_refusals += 1
                raise StaleEpoch(node_id, session.epoch, current)
        raise StoreError(f"redis at {self.location.describe()}: unexpected reply {reply!r}")

    async def adopt_session(self, session: Session, from_node: int, from_epoch: int) -> bool:
        keys = [
            _node_key(from_node),
            _sessions_key(from_node),
            _claim_key(session.call_id),
            _node_key(session.node_id),
            _sessions_key(session.node_id),
            _adopt_key(session.call_id),
        ]
        args: list[str | int] = [
            from_epoch, session.epoch, from_node, session.node_id, session.call_id,
            session_to_json(session), _CLAIM_TTL_MS, secrets.token_hex(8),
        ]  # fmt: skip
        reply = await self._script(_ADOPT, keys, args)
        match reply:
            case [1, int()]:
                return True
            case [2, int()]:
                return False
            case [0, int(current)]:
                self._counters.stale_refusals += 1
                raise StaleEpoch(from_node, from_epoch, current)
            case [3, int(current)]:
                self._counters.stale_refusals += 1
                raise StaleEpoch(session.node_id, session.epoch, current)
        raise StoreError(f"redis at {self.location.describe()}: unexpected reply {reply!r}")

    async def delete_session(self, node_id: int, epoch: int, call_id: str) -> None:
        await self._fenced(_DELETE, node_id, epoch, call_id, node_id, keys=(_claim_key(call_id),))
        self._counters.deletes += 1

    async def sessions(self, node_id: int) -> list[Session]:
        values = await self._command("HVALS", _sessions_key(node_id))
        if not isinstance(values, list):
            raise StoreError(f"redis at {self.location.describe()}: unexpected reply {values!r}")
        found = [session_from_json(v) for v in values if isinstance(v, bytes)]
        found.sort(key=lambda s: (s.created_at, s.call_id))
        return found

    async def count(self, node_id: int) -> int:
        value = await self._command("HLEN", _sessions_key(node_id))
        return value if isinstance(value, int) else 0

    def statistics(self) -> StoreStatistics:
        return self._counters.snapshot("redis", self.location.describe())

    async def aclose(self) -> None:
        self._closed = True
        await self._drop()
