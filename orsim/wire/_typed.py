"""Typed messages: every request, answer and push of a service is an ``attrs.frozen`` class.

Theory of operation. The frame layer (``_messages``) carries ``Request(id, method,
params)``, ``Response(id, result)`` and ``Push(topic, data)`` with JSON payloads. A
service names each of its payloads as a class here:

- a request subclasses ``Call[A]`` naming its method (``class Route(Call[Routed],
  method="route")``: ``METHOD``, and ``ANSWER`` the class ``A`` of its answer);
  ``await conn.call(Route(...))`` sends it and returns the typed ``A``;
- an answer or a record subclasses ``Record``;
- a push subclasses ``Notice`` naming its topic (``TOPIC``);
  ``await conn.notify(Member(...))``.

Each class converts to the existing JSON (``to_json``: one key per attrs field, in field
order, so the bytes on the wire are the ones the dict literals made before) and from it
(``from_json``: each field checked by its annotation, as ``param`` checks; anything else
is ``RequestRefused("bad_request")``). Validation happens once, at the edge: a server's
``HandlerTable`` turns an inbound ``Request`` into its typed message before the handler
runs, and the handler returns a typed answer, encoded once.

Field metadata adjusts the generic conversion: ``OMIT_NONE`` leaves a None out of the
JSON (an optional parameter senders omit), ``FLATTEN`` merges a nested record's keys in
place (a status's frame counts), ``codec(read, write)`` reads and writes one field its
own way (a non-empty name, a session in its wire form). A class whose JSON is not one
key per field (a list, a lenient push) overrides ``to_json``/``from_json``; so do the
messages on every call's path, which check the JSON their peers write with one type test
per field and fall back to the checked reading for anything else.

``HandlerTable`` (requests) and ``PushTable`` (pushes) are each receiver's one dispatch:
a table ``{type: handler}`` built once, keyed by method or topic.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import CoroutineType
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    Generic,
    NoReturn,
    Self,
    TypeVar,
    cast,
    get_args,
    get_origin,
)

import attrs

from orsim.errors import RemoteProtocolError, RequestRefused
from orsim.logs import get_logger
from orsim.wire._codec import PUSH_MEMO, PUSH_MEMO_SIZE
from orsim.wire._messages import Json, Push, Request
from orsim.wire._params import param, str_list

if TYPE_CHECKING:
    from orsim.wire._connection import Connection

#: Field metadata: the field is left out of the JSON when it is None.
OMIT_NONE: Mapping[str, bool] = {"omit_none": True}
#: Field metadata: the field (a ``Record``) has its keys merged into the JSON at its
#: place, rather than nested under its name (a status's frame counts, say).
FLATTEN: Mapping[str, bool] = {"flatten": True}

#: How a field reads from its message's JSON: ``reader(params, name)`` -> the value,
#: or ``RequestRefused("bad_request")``.
FieldReader = Callable[[dict[str, Json], str], object]
#: How a field's value is written as JSON.
FieldWriter = Callable[[Any], Json]


def codec(
    read: FieldReader | None = None, write: FieldWriter | None = None
) -> Mapping[str, object]:
    """Field metadata: read the field with ``read``, write it with ``write``, instead of
    by its annotation (a non-empty name, a session in its wire form, ...)."""
    return {"read": read, "write": write}


_SCALARS: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool}
_MISSING = object()


@attrs.frozen
class _Field:
    """How one attrs field reads from and writes to JSON."""

    name: str
    #: ``str``/``int``/``float``/``bool``, ``list`` (of strings), ``dict``, None: any
    #: JSON, or ``Record``: a value written as its own JSON and not read generically (a
    #: class whose ``from_json`` is its own).
    kind: type | None
    default: object
    omit_none: bool
    flatten: bool = False
    reader: FieldReader | None = None
    writer: FieldWriter | None = None

    def read(self, params: dict[str, Json]) -> object:
        kind, default = self.kind, self.default
        if self.reader is not None:
            return self.reader(params, self.name)
        if kind is Record:
            raise TypeError(f"{self.name}: a record field is read by its class's from_json")
        if kind is None:
            value = params.get(self.name)
            return default if value is None and default is not _MISSING else value
        if kind is list:
            return tuple(str_list(params, self.name))
        if kind is dict:
            value = params.get(self.name)
            if value is None:
                if default is _MISSING:
                    raise RequestRefused("bad_request", f"missing parameter {self.name!r}")
                return default
            if not isinstance(value, dict):
                raise RequestRefused("bad_request", f"parameter {self.name!r} must be an object")
            return value
        if default is _MISSING:
            return param(params, self.name, kind)
        return param(params, self.name, kind, default)


def _field_of(a: attrs.Attribute[object]) -> _Field:
    text = str(a.type).replace(" ", "")
    optional = text.endswith("|None")
    base = text.removesuffix("|None")
    kind: type | None
    if base in _SCALARS:
        kind = _SCALARS[base]
    elif base in ("tuple[str,...]",):
        kind = list
    elif base in ("dict[str,Json]",):
        kind = dict
    elif base == "Json":
        kind = None
    else:
        kind = Record  # written as its JSON (records, tuples of them), read by hand
    flatten = bool(a.metadata.get("flatten"))
    reader, writer = a.metadata.get("read"), a.metadata.get("write")
    default: object = _MISSING if a.default is attrs.NOTHING else a.default
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]  # a class at run time
        default = default.factory()  # type: ignore[attr-defined]
    if optional and default is _MISSING:
        default = None
    omit = bool(a.metadata.get("omit_none"))
    return _Field(a.name, kind, default, omit, flatten, reader, writer)


_SPECS: dict[type, tuple[_Field, ...]] = {}


def _spec(cls: type) -> tuple[_Field, ...]:
    spec = _SPECS.get(cls)
    if spec is None:
        spec = _SPECS[cls] = tuple(_field_of(a) for a in attrs.fields(cls))
    return spec


_PLAIN_AS_IS = frozenset({str, int, float, bool, type(None)})


def _plain(value: object) -> object:
    """A field's value as JSON: tuples as lists, records as their JSON, mappings copied
    (a status must not share a server's live dict)."""
    if type(value) in _PLAIN_AS_IS:  # most fields: no ABC check (Mapping's is slow)
        return value
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Record):
        return value.to_json()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def json_object(data: Json, what: str = "params") -> dict[str, Json]:
    """``data`` checked to be a JSON object (else ``bad_request``)."""
    if not isinstance(data, dict):
        raise RequestRefused("bad_request", f"{what} must be an object")
    return data


def nonempty_text(data: dict[str, Json], key: str) -> str:
    """``data[key]``, a non-empty string (else ``bad_request``): a FieldReader."""
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise RequestRefused("bad_request", f"{key} must be a non-empty string, not {value!r}")
    return value


def whole_number(data: dict[str, Json], key: str) -> int:
    """``data[key]``, an integer >= 0 (else ``bad_request``): a FieldReader."""
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RequestRefused("bad_request", f"{key} must be a whole number >= 0, not {value!r}")
    return value


def int_or_none(value: Json) -> int | None:
    """``value`` if it is an integer (not a bool), else None: for lenient readers."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def number_or_none(value: Json) -> float | None:
    """``value`` as a float if it is a number (not a bool), else None."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class Record:
    """Base of a typed JSON payload (an attrs class): ``to_json``/``from_json``."""

    __slots__ = ()

    def to_json(self) -> Json:
        """The payload as JSON: one key per field, in field order."""
        out: dict[str, Json] = {}
        for f in _spec(type(self)):
            value = getattr(self, f.name)
            if value is None and f.omit_none:
                continue
            if f.flatten:
                out.update(value.to_json())
            elif f.writer is not None:
                out[f.name] = f.writer(value)
            else:
                out[f.name] = _plain(value)
        return out

    @classmethod
    def from_json(cls, data: Json) -> Self:
        """The record in ``data``, each field read by its annotation (or its ``codec``).

        Raises:
            RequestRefused: ``bad_request``: ``data`` is not an object, or a field is
                missing or of the wrong type.
        """
        params = json_object(data)
        return cls(*[f.read(params) for f in _spec(cls)])


A = TypeVar("A", covariant=True)


class Call(Record, Generic[A]):
    """Base of a typed request whose answer is an ``A`` (``ANSWER``).

    A request names its method as it subclasses, and its answer is the ``A`` it
    subclasses ``Call`` with: ``class Route(Call[Routed], method="route"): ...`` sets
    ``METHOD = "route"`` and ``ANSWER = Routed``.
    """

    __slots__ = ()
    METHOD: ClassVar[str]
    ANSWER: ClassVar[type[Record]]

    def __init_subclass__(cls, method: str | None = None, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        # attrs builds each slotted class again (without the keywords): METHOD and
        # ANSWER are then already in the class dict it copies.
        if method is not None:
            cls.METHOD = method
            cls.ANSWER = _answer_of(cls)

    def answer(self, result: Json) -> A:
        """The typed answer in ``result``.

        Raises:
            RemoteProtocolError: the answer is malformed (the peer broke the protocol).
        """
        try:
            return cast(A, self.ANSWER.from_json(result))
        except RequestRefused as exc:
            raise RemoteProtocolError(
                f"malformed answer to {self.METHOD!r}: {exc.message}"
            ) from exc


def _answer_of(cls: type) -> type[Record]:
    """The ``A`` of a request class's ``Call[A]`` base."""
    for base in getattr(cls, "__orig_bases__", ()):
        if get_origin(base) is Call:
            (answer,) = get_args(base)
            if isinstance(answer, type) and issubclass(answer, Record):
                return answer
    raise TypeError(f"{cls.__name__} names a method but subclasses no Call[Record]")


class Notice(Record):
    """Base of a typed push (a notification that expects no answer), which names its
    topic as it subclasses: ``class Member(Notice, topic="member")``."""

    __slots__ = ()
    TOPIC: ClassVar[str]

    def __init_subclass__(cls, topic: str | None = None, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if topic is not None:
            cls.TOPIC = topic


@attrs.frozen
class PushBatch(Notice):
    """``pushes``: several pushes in one frame, in the order they were made.

    A T-Server fans each call out to every router registered on its routing point; a
    client that registered for batches gets the pushes of one generator tick (and the
    ``call_routed`` news of a few ms) as one frame rather than one frame each, so a
    cluster of N Nodes costs each ORS one read and one decode per batch, not per call. A
    receiver's ``PushTable`` handles each push of the batch as if it came alone.
    """

    TOPIC: ClassVar[str] = "pushes"
    items: tuple[Push, ...]

    def to_json(self) -> Json:
        return {"items": [[push.topic, push.data] for push in self.items]}

    @classmethod
    def from_json(cls, data: Json) -> Self:
        return cls(tuple(Push(topic, body) for topic, body in cls.items_of(data)))

    @classmethod
    def items_of(cls, data: Json) -> list[tuple[str, dict[str, Json]]]:
        """The ``(topic, data)`` of each push in a batch's JSON, checked, in order.

        Raises:
            RequestRefused: ``bad_request``: not a non-empty list of ``[topic, data]``
                (a batch within a batch included).
        """
        items = json_object(data).get("items")
        if not isinstance(items, list) or not items:
            raise RequestRefused("bad_request", "items must be a non-empty list")
        pairs = []
        for item in items:
            if not (isinstance(item, list) and len(item) == 2):
                raise RequestRefused("bad_request", "each item must be [topic, data]")
            topic, body = item
            if not isinstance(topic, str) or topic == cls.TOPIC or not isinstance(body, dict):
                raise RequestRefused("bad_request", f"bad item topic or data: {topic!r}")
            pairs.append((topic, body))
        return pairs


@attrs.frozen
class Done(Record):
    """The answer ``{}``: done, nothing to tell."""


C = TypeVar("C", bound=Call[object])


@attrs.frozen
class _Entry:
    kind: type[Call[object]]
    fn: Callable[[Connection, Call[object]], Record | Awaitable[Record]]


def on(kind: type[C], fn: Callable[[Connection, C], Record | Awaitable[Record]]) -> _Entry:
    """One row of a ``HandlerTable``: requests of type ``kind`` go to ``fn``."""
    return _Entry(
        kind, cast(Callable[["Connection", Call[object]], "Record | Awaitable[Record]"], fn)
    )


@attrs.define(eq=False)
class HandlerTable:
    """One server's requests: method -> (its typed request, its handler), built once.

    Use it as the server's ``inline_handler`` (``serve_app``): an inbound request is
    decoded into its type at the edge (malformed: ``bad_request``; unknown method:
    ``unknown_method``), handled, and its typed answer encoded. A handler's unexpected
    exception (a bug of ours) is logged and answered ``internal``, so it never takes the
    server down.
    """

    app: str
    _by_method: dict[str, _Entry]

    @classmethod
    def of(cls, app: str, entries: Iterable[_Entry]) -> HandlerTable:
        by_method: dict[str, _Entry] = {}
        for entry in entries:
            if entry.kind.METHOD in by_method:
                raise ValueError(f"two handlers for {entry.kind.METHOD!r}")
            by_method[entry.kind.METHOD] = entry
        return cls(app, by_method)

    @property
    def methods(self) -> frozenset[str]:
        return frozenset(self._by_method)

    def decode(self, request: Request) -> tuple[_Entry, Call[object]]:
        """The typed message of ``request`` and its row.

        Raises:
            RequestRefused: ``unknown_method`` or ``bad_request``.
        """
        entry = self._by_method.get(request.method)
        if entry is None:
            raise RequestRefused("unknown_method", f"{self.app} has no method {request.method!r}")
        return entry, entry.kind.from_json(request.params)

    def __call__(self, conn: Connection, request: Request) -> Json:
        """Answer ``request`` (an ``InlineHandler``): the answer's JSON, or a coroutine
        for it when the handler waits."""
        entry, message = self.decode(request)
        try:
            answer = entry.fn(conn, message)
        except RequestRefused:
            raise
        except Exception as exc:
            _failed(self.app, request, exc)
        if isinstance(answer, CoroutineType):
            return self._finish(answer, request)
        return cast(Record, answer).to_json()

    async def handle(self, conn: Connection, request: Request) -> Json:
        """``__call__`` as a ``RequestHandler`` (awaits the answer)."""
        result = self(conn, request)
        if isinstance(result, CoroutineType):
            result = await result
        return result

    async def _finish(self, pending: Awaitable[Record], request: Request) -> Json:
        try:
            answer = await pending
        except RequestRefused:
            raise
        except Exception as exc:
            _failed(self.app, request, exc)
        return answer.to_json()


def _failed(app: str, request: Request, exc: Exception) -> NoReturn:
    get_logger(app=app).exception("handler_failed", method=request.method)
    raise RequestRefused("internal", f"{request.method}: {exc!r}") from exc


@attrs.frozen
class StatusReport(Record):
    """The answer to ``status``: one JSON object whose field names are a contract
    (SPEC.md section 4). A server builds it from its own typed record's ``to_json``."""

    fields: dict[str, Json]

    def to_json(self) -> Json:
        return self.fields

    @classmethod
    def from_json(cls, data: Json) -> Self:
        if not isinstance(data, dict):
            raise RequestRefused("bad_request", "a status must be an object")
        return cls(data)


@attrs.frozen(kw_only=True)
class AppStatus(Record):
    """What every application's ``status`` answer starts with; each server's status
    record adds its own fields after these."""

    app: str
    type: str
    mode: str = "primary"
    pid: int


@attrs.frozen
class Status(Call[StatusReport], method="status"):
    """``status``: what the application is and does (every server answers it)."""


N = TypeVar("N", bound=Notice)
R = TypeVar("R")


@attrs.frozen
class _PushEntry:
    kind: type[Notice]
    fn: Callable[[Connection, object], None]
    #: Reads the data of several pushes of ``kind`` at once (``when_many``); None: each
    #: push is read alone, as a ``kind``.
    many: Callable[[list[dict[str, Json]]], object] | None = None

    def read(self, bodies: list[dict[str, Json]], topic: str) -> object:
        """What ``fn`` takes for these pushes: a ``kind`` (one push), or what ``many``
        reads from them all.

        Raises:
            RemoteProtocolError: one of them is malformed.
        """
        try:
            if self.many is not None:
                return self.many(bodies)
            (body,) = bodies
            return self.kind.from_json(body)
        except RequestRefused as exc:
            raise RemoteProtocolError(f"malformed {topic!r} push: {exc.message}") from exc


def when(kind: type[N], fn: Callable[[Connection, N], None]) -> _PushEntry:
    """One row of a ``PushTable``: pushes of type ``kind`` go to ``fn``."""
    return _PushEntry(kind, cast(Callable[["Connection", object], None], fn))


def when_many(
    kind: type[Notice],
    read: Callable[[list[dict[str, Json]]], R],
    fn: Callable[[Connection, R], None],
) -> _PushEntry:
    """One row of a ``PushTable`` for pushes that come many at a time: the pushes of
    ``kind`` that follow one another in a ``PushBatch`` (pushes of topics the table does
    not take aside) are read together, ``read(their data)``, and handed to ``fn`` in one
    call; a push that comes alone is read as a batch of one.

    ``read`` raises ``RequestRefused`` for a malformed push, as ``kind.from_json`` does.
    A receiver that hears every call (an ORS at 16 Nodes: 32 of them) then pays for a
    batch, not for a typed object per push.
    """
    return _PushEntry(
        kind,
        cast(Callable[["Connection", object], None], fn),
        cast(Callable[[list[dict[str, Json]]], object], read),
    )


#: Typed notices of recent pushes: id(push) -> (the push, its notice type, the notice).
_NOTICES: dict[int, tuple[Push, type[Notice], Notice]] = {}
#: Recent batches as read by a table: id(push) -> (the push, the table's ``readers``,
#: each run of the batch with its topic).
_BATCHES: dict[int, tuple[Push, tuple[object, ...], list[tuple[str, object]]]] = {}


def _notice_of(push: Push, kind: type[Notice]) -> Notice:
    """``push`` read as a ``kind``, once per push: keyed by the push's identity (and
    holding it), so only the very push that the codec's ``PUSH_MEMO`` gave several
    receivers is decoded once for all of them.

    Raises:
        RemoteProtocolError: the push is malformed.
    """
    # A process whose links are all real decodes every push on its own (the codec's
    # memo stays empty): keeping its recent notices would only hold memory.
    if not PUSH_MEMO:
        return _read_notice(push, kind)
    known = _NOTICES.get(id(push))
    if known is not None and known[0] is push and known[1] is kind:
        return known[2]
    notice = _read_notice(push, kind)
    if len(_NOTICES) >= PUSH_MEMO_SIZE:
        _NOTICES.clear()
    _NOTICES[id(push)] = (push, kind, notice)
    return notice


def _read_notice(push: Push, kind: type[Notice]) -> Notice:
    try:
        return kind.from_json(push.data)
    except RequestRefused as exc:
        raise RemoteProtocolError(f"malformed {push.topic!r} push: {exc.message}") from exc


@attrs.define(eq=False)
class PushTable:
    """One receiver's pushes: topic -> (its typed push, its handler), built once.

    Use it as the connection's ``on_push``: a push is decoded into its type at the edge;
    a malformed one costs its sender the connection (``RemoteProtocolError``), never
    this process. A topic the table does not name is ignored.
    """

    _by_topic: dict[str, _PushEntry]
    #: How this table reads each topic: tables alike (every ORS's) share what one of
    #: them read of a batch (``_BATCHES``), as the simulation delivers one push to many.
    _readers: tuple[object, ...] = ()

    @classmethod
    def of(cls, entries: Iterable[_PushEntry]) -> PushTable:
        by_topic: dict[str, _PushEntry] = {}
        for entry in entries:
            if entry.kind.TOPIC in by_topic:
                raise ValueError(f"two handlers for {entry.kind.TOPIC!r}")
            by_topic[entry.kind.TOPIC] = entry
        readers = tuple((t, e.kind, e.many) for t, e in sorted(by_topic.items()))
        return cls(by_topic, readers)

    def decode(self, push: Push) -> tuple[_PushEntry, object] | None:
        """The typed push of ``push`` (or what its ``when_many`` row reads of it) and its
        row (None: a topic not taken).

        Raises:
            RemoteProtocolError: the push is malformed.
        """
        entry = self._by_topic.get(push.topic)
        if entry is None:
            return None
        if entry.many is None:
            return entry, _notice_of(push, entry.kind)
        return entry, entry.read([push.data], push.topic)

    def decode_batch(self, push: Push) -> list[tuple[_PushEntry, object]]:
        """What this table takes of a ``PushBatch`` push, in order: a typed push each, or
        one read of each run of consecutive pushes of a ``when_many`` row; all of them
        are checked before any is handled.

        Raises:
            RemoteProtocolError: the batch or one of its pushes is malformed.
        """
        if not PUSH_MEMO:  # no push here is shared: nothing to keep for another reader
            runs = self._read_batch(push)
        elif (known := _BATCHES.get(id(push))) and known[0] is push and known[1] == self._readers:
            runs = known[2]
        else:
            runs = self._read_batch(push)
            if len(_BATCHES) >= PUSH_MEMO_SIZE:
                _BATCHES.clear()
            _BATCHES[id(push)] = (push, self._readers, runs)
        by_topic = self._by_topic
        return [(by_topic[topic], message) for topic, message in runs]

    def _read_batch(self, push: Push) -> list[tuple[str, object]]:
        try:
            items = PushBatch.items_of(push.data)
        except RequestRefused as exc:
            raise RemoteProtocolError(f"malformed {push.topic!r} push: {exc.message}") from exc
        runs: list[tuple[str, object]] = []
        run_topic, run = "", list[dict[str, Json]]()  # a when_many row's, not read yet
        for topic, body in items:
            entry = self._by_topic.get(topic)
            if entry is None:
                continue
            if topic != run_topic and run:
                runs.append((run_topic, self._by_topic[run_topic].read(run, run_topic)))
                run_topic, run = "", []
            if entry.many is None:
                runs.append((topic, entry.read([body], topic)))
            else:
                run_topic = topic
                run.append(body)
        if run:
            runs.append((run_topic, self._by_topic[run_topic].read(run, run_topic)))
        return runs

    async def __call__(self, conn: Connection, push: Push) -> None:
        self.dispatch(conn, push)

    def dispatch(self, conn: Connection, push: Push) -> None:
        """Hand ``push`` (or each push of a batch) to its handler, at once: a handler
        never waits (a connection's reader calls this directly, without a coroutine).

        Raises:
            RemoteProtocolError: the push is malformed.
        """
        if push.topic == PushBatch.TOPIC:
            for entry, message in self.decode_batch(push):
                entry.fn(conn, message)
            return
        decoded = self.decode(push)
        if decoded is not None:
            entry, message = decoded
            entry.fn(conn, message)
