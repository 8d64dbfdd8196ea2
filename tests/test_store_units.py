"""Pure parts of the session store: URL parsing, RESP parsing, session encoding."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from orsim.errors import ConfigError, RemoteProtocolError
from orsim.store import RedisLocation, Session, SqliteLocation, parse_store_url
from orsim.store._memory import MemoryStore
from orsim.store._resp import NEED_DATA, ErrorReply, NeedData, Reply, ReplyParser, encode_command
from orsim.store._session import session_from_json, session_to_json

BASE = Path("/srv/cluster")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///sessions.db", SqliteLocation(BASE / "sessions.db")),
        ("sqlite:///run/sessions.db", SqliteLocation(BASE / "run/sessions.db")),
        ("sqlite:////var/lib/orsim/s.db", SqliteLocation(Path("/var/lib/orsim/s.db"))),
        ("sqlite:///my%20dir/s.db", SqliteLocation(BASE / "my dir/s.db")),
        ("redis://10.0.0.5:6380/2", RedisLocation("10.0.0.5", 6380, 2)),
        ("redis://cache", RedisLocation("cache", 6379, 0)),
        ("redis://cache:7000", RedisLocation("cache", 7000, 0)),
        ("redis://:secret@cache/1", RedisLocation("cache", 6379, 1, None, "secret")),
    ],
)
def test_store_urls(url: str, expected: SqliteLocation | RedisLocation) -> None:
    """Each accepted URL form maps to its location; relative SQLite paths use base_dir."""
    assert parse_store_url(url, BASE) == expected


@pytest.mark.parametrize(
    "url",
    [
        "",
        "sessions.db",
        "mysql://db/x",
        "sqlite://",
        "sqlite:///",
        "sqlite://host/x.db",
        "redis://",
        "redis://host:port/0",
        "redis://host:6379/zero",
        "redis://host:6379/0?timeout=1",
    ],
)
def test_bad_store_urls(url: str) -> None:
    """Anything else is a configuration error naming the option."""
    with pytest.raises(ConfigError, match="persistence/store"):
        parse_store_url(url, BASE)


_text = st.text(max_size=20)
_sessions = st.builds(
    Session,
    call_id=_text,
    node_id=st.integers(0, 2**40),
    epoch=st.integers(0, 2**40),
    dn=_text,
    state=_text,
    target=_text,
    created_at=st.floats(0, 4e9),
    data=st.dictionaries(_text, _text, max_size=4),
)


@given(_sessions)
def test_session_json_round_trip(session: Session) -> None:
    """A session decodes to an equal one."""
    assert session_from_json(session_to_json(session)) == session


def test_session_data_is_copied() -> None:
    """Mutating the dict a Session was built from does not change the Session."""
    data = {"a": "1"}
    session = Session(call_id="c", node_id=1, epoch=0, dn="d", state="s", data=data)
    data["a"] = "2"
    assert session.data == {"a": "1"}


def test_encode_command() -> None:
    """Commands go out as arrays of bulk strings."""
    assert encode_command("HGET", "k", 5) == b"*3\r\n$4\r\nHGET\r\n$1\r\nk\r\n$1\r\n5\r\n"


def _encode_reply(reply: Reply) -> bytes:
    match reply:
        case None:
            return b"$-1\r\n"
        case ErrorReply(message):
            return b"-" + message.encode() + b"\r\n"
        case bool():
            raise AssertionError("no booleans in RESP2")
        case int():
            return b":%d\r\n" % reply
        case str():
            return b"+" + reply.encode() + b"\r\n"
        case bytes():
            return b"$%d\r\n%s\r\n" % (len(reply), reply)
        case list():
            return b"*%d\r\n" % len(reply) + b"".join(_encode_reply(r) for r in reply)
    raise AssertionError(reply)


_line = st.text(st.characters(blacklist_characters="\r\n", codec="utf-8"), max_size=10)
_replies: st.SearchStrategy[Reply] = st.recursive(
    st.none()
    | st.integers(-(2**63), 2**63 - 1)
    | st.binary(max_size=20)
    | _line
    | _line.map(lambda m: ErrorReply("ERR " + m)),
    lambda inner: st.lists(inner, max_size=4),
    max_leaves=12,
)


@given(st.lists(_replies, min_size=1, max_size=5), st.data())
def test_replies_parse_whole_or_split(replies: list[Reply], data: st.DataObject) -> None:
    """Replies come out in order whether the bytes arrive at once or cut anywhere."""
    wire = b"".join(_encode_reply(r) for r in replies)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=6)))
    parser = ReplyParser()
    got: list[Reply] = []
    for start, end in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        parser.receive_data(wire[start:end])
        while not isinstance(reply := parser.next_reply(), NeedData):
            got.append(reply)
    assert got == replies


@given(st.binary(max_size=40))
def test_garbage_raises_only_protocol_errors(garbage: bytes) -> None:
    """Arbitrary bytes either parse, wait for more, or raise RemoteProtocolError."""
    parser = ReplyParser()
    parser.receive_data(garbage)
    try:
        while parser.next_reply() is not NEED_DATA:
            pass
    except RemoteProtocolError:
        pass


def test_public_names() -> None:
    """Every name in orsim.store.__all__ is importable from the package."""
    import orsim.store

    assert all(hasattr(orsim.store, name) for name in orsim.store.__all__)


async def test_memory_store_finishes_a_call_like_the_real_ones() -> None:
    """The in-memory store (simulations) keeps the real stores' claim rules."""
    store = MemoryStore()
    session = Session(call_id="c1", node_id=1, epoch=0, dn="5000", state="created")
    assert await store.create_session(session)
    assert not await store.create_session(attrs.evolve(session, node_id=2))
    await store.delete_session(1, 0, "c1")
    assert await store.claim_epoch(1, 0, 1)
    assert not await store.create_session(attrs.evolve(session, epoch=1))
    assert await store.sessions(1) == []
