"""Pure framing and encoding of wire messages (sans-IO).

A frame is a 4-byte big-endian length followed by that many bytes of UTF-8 JSON: an object
whose ``"t"`` names the message type. ``FrameDecoder`` takes bytes as they arrive
(``receive_data``) and hands out whole messages (``next_message`` returns ``NEED_DATA``
until one is complete). Any violation raises ``RemoteProtocolError`` and leaves the
decoder broken for good, so a caller can never read past garbage.

JSON is written and read with orjson (several times faster than the standard library,
and every frame of every call pays it twice). The rare values orjson does not take the
standard library's way fall back to ``json``: integers beyond 64 bits and strings with
lone surrogates are encoded by ``json``; a body orjson refuses is read again by ``json``
(which still refuses NaN and Infinity). orjson writes NaN as ``null`` instead of failing,
so a frame that contains ``null`` is checked by ``json`` before it is sent.
"""

from __future__ import annotations

import enum
import json
import math
import struct
from collections.abc import Callable
from typing import Any, Final

import attrs
import orjson

from orsim.errors import LocalProtocolError, RemoteProtocolError
from orsim.wire._messages import (
    ErrorResponse,
    Hello,
    Json,
    Message,
    Ping,
    Pong,
    Push,
    Request,
    Response,
    Welcome,
)

#: Default largest frame body accepted or sent: generous for ledger dumps, small enough
#: that a hostile length header cannot make a server allocate much.
DEFAULT_MAX_FRAME = 1024 * 1024
_HEADER = struct.Struct(">I")


class _NeedData(enum.Enum):
    """The type of ``NEED_DATA``: an enum of one member, so that ``x is NEED_DATA`` narrows
    ``x`` for mypy (an instance of a plain class would not)."""

    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData.NEED_DATA

_TAGS: dict[type[Message], str] = {
    Hello: "hello",
    Welcome: "welcome",
    Request: "req",
    Response: "res",
    ErrorResponse: "err",
    Push: "push",
    Ping: "ping",
    Pong: "pong",
}
_BY_TAG = {tag: cls for cls, tag in _TAGS.items()}
#: Field names per message type, in declaration order (the encoder's view).
_NAMES: dict[type[Message], tuple[str, ...]] = {
    cls: tuple(a.name for a in attrs.fields(cls)) for cls in _TAGS
}
#: Fields without a default per message type (the decoder's view).
_REQUIRED: dict[type[Message], frozenset[str]] = {
    cls: frozenset(a.name for a in attrs.fields(cls) if a.default is attrs.NOTHING) for cls in _TAGS
}
_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS
_PUSH, _REQ, _RES = _TAGS[Push], _TAGS[Request], _TAGS[Response]
assert _NAMES[Push] == ("topic", "data") and _NAMES[Response] == ("id", "result")
assert _NAMES[Request] == ("id", "method", "params")

# Field name -> accepted JSON types, per message type. bool is excluded from int on purpose.
_FIELD_TYPES: dict[type[Message], dict[str, tuple[type, ...]]] = {
    Hello: {
        "app": (str,),
        "app_type": (str,),
        "version": (int,),
        "addp_remote_timeout": (int, float),
        "key": (str,),
        "addp_trace": (bool,),
    },
    Welcome: {"app": (str,), "app_type": (str,), "version": (int,)},
    Request: {"id": (int,), "method": (str,), "params": (dict,)},
    Response: {"id": (int,), "result": (object,)},
    ErrorResponse: {"id": (int,), "code": (str,), "message": (str,)},
    Push: {"topic": (str,), "data": (dict,)},
    Ping: {"seq": (int,)},
    Pong: {"seq": (int,)},
}


def encode(message: Message, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """Encode one message as a frame.

    Raises:
        LocalProtocolError: the message does not serialise to JSON or exceeds ``max_frame``.
    """
    cls = type(message)
    # The frames of the call path built directly (same keys, same order); the rest by
    # their fields.
    if cls is Push:
        body_obj = {"t": _PUSH, "topic": message.topic, "data": message.data}  # type: ignore[union-attr]
    elif cls is Response:
        body_obj = {"t": _RES, "id": message.id, "result": message.result}  # type: ignore[union-attr]
    elif cls is Request:
        body_obj = {"t": _REQ, "id": message.id, "method": message.method,  # type: ignore[union-attr]
                    "params": message.params}  # type: ignore[union-attr]  # fmt: skip
    else:
        body_obj = {"t": _TAGS[cls]}
        for name in _NAMES[cls]:
            body_obj[name] = getattr(message, name)
    try:
        body = orjson.dumps(body_obj, option=_ORJSON_OPTIONS)
    except TypeError:
        body = b"null"  # not orjson's kind of value: let json decide below
    try:
        if b"null" in body:  # a None, or a NaN/Infinity that orjson turned into null
            body = json.dumps(body_obj, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise LocalProtocolError(f"cannot encode {cls.__name__}: {exc}") from exc
    if len(body) > max_frame:
        raise LocalProtocolError(f"frame of {len(body)} bytes exceeds the {max_frame}-byte limit")
    return _HEADER.pack(len(body)) + body


def _fast_push(obj: dict[str, Json]) -> Message | None:
    topic, data = obj.get("topic"), obj.get("data")
    if len(obj) == 3 and type(topic) is str and type(data) is dict:
        return Push(topic, data)
    return None


def _fast_request(obj: dict[str, Json]) -> Message | None:
    rid, method, params = obj.get("id"), obj.get("method"), obj.get("params")
    if len(obj) == 4 and type(rid) is int and type(method) is str and type(params) is dict:
        return Request(rid, method, params)
    return None


def _fast_response(obj: dict[str, Json]) -> Message | None:
    rid = obj.get("id")
    # A float result must be checked for NaN/Infinity: the general path does that.
    if len(obj) == 3 and type(rid) is int and "result" in obj and type(obj["result"]) is not float:
        return Response(rid, obj["result"])
    return None


#: Reads one frame type's fields, or None when they are not exactly the expected ones.
_FastReader = Callable[[dict[str, Json]], Message | None]


def _fast_seq(cls: type[Ping] | type[Pong]) -> _FastReader:
    def fast(obj: dict[str, Json]) -> Message | None:
        seq = obj.get("seq")
        return cls(seq) if len(obj) == 2 and type(seq) is int else None

    return fast


#: The frames of the call path and ADDP, checked field by field without the general
#: loop below (every frame of every call is decoded, often by several receivers). Each
#: answers None for anything it does not recognise exactly: the general path then
#: accepts it or says what is wrong. ``type(x) is int`` also refuses bool, as it must.
_FAST: dict[str, _FastReader] = {
    "push": _fast_push,
    "req": _fast_request,
    "res": _fast_response,
    "ping": _fast_seq(Ping),
    "pong": _fast_seq(Pong),
}


def decode_body(body: bytes | bytearray) -> Message:
    """Decode one frame body (without its length header).

    Raises:
        RemoteProtocolError: the body is not a well-formed message.
    """
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        obj = _slow_loads(body)  # lone surrogates, huge numbers, or garbage
    if type(obj) is dict:
        tag = obj.get("t")
        fast = _FAST.get(tag) if type(tag) is str else None
        if fast is not None:
            message: Message | None = fast(obj)
            if message is not None:
                return message
    if not isinstance(obj, dict):
        raise RemoteProtocolError("frame is not a JSON object")
    tag = obj.pop("t", None)
    cls = _BY_TAG.get(tag) if isinstance(tag, str) else None
    if cls is None:
        raise RemoteProtocolError(f"unknown message type {tag!r}")
    fields = _FIELD_TYPES[cls]
    if not fields.keys() >= obj.keys():
        raise RemoteProtocolError(f"{tag}: unknown fields {sorted(obj.keys() - fields.keys())}")
    if not obj.keys() >= _REQUIRED[cls]:
        raise RemoteProtocolError(f"{tag}: missing fields {sorted(_REQUIRED[cls] - obj.keys())}")
    for name, value in obj.items():
        types = fields[name]
        if object not in types and (
            (isinstance(value, bool) and bool not in types) or not isinstance(value, types)
        ):
            raise RemoteProtocolError(f"{tag}: field {name!r} has the wrong type")
        if isinstance(value, float) and not math.isfinite(value):
            raise RemoteProtocolError(f"{tag}: field {name!r} is not finite")
    return cls(**obj)


def _slow_loads(body: bytes | bytearray) -> Any:
    try:
        return json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise RemoteProtocolError(f"frame is not UTF-8 JSON: {exc}") from exc


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


#: Pushes decoded by any ``FrameDecoder`` given this memo, by frame body. In one
#: process that holds both ends of many links (the simulation) a push sent to several
#: receivers (a route request reaches every ORS) is decoded once: the receivers get one
#: message, which nobody changes (a push's data is only read, into its typed notice).
PUSH_MEMO: dict[bytes, Message] = {}
#: Bodies kept at most; then the memo starts afresh (a push's receivers read it within
#: a few frames of each other).
PUSH_MEMO_SIZE = 256


class FrameDecoder:
    """Turns a byte stream into messages; sans-IO.

    Feed bytes with ``receive_data`` (``b""`` means end of stream), then call
    ``next_message`` until it returns ``NEED_DATA``. After a ``RemoteProtocolError`` every
    further call raises again.
    """

    def __init__(
        self, max_frame: int = DEFAULT_MAX_FRAME, memo: dict[bytes, Message] | None = None
    ) -> None:
        self.max_frame = max_frame
        #: Pushes already decoded, by body (``PUSH_MEMO``), or None: decode every frame.
        self.memo = memo
        self._buffer = bytearray()
        self._eof = False
        #: Why the stream broke, once it has: every later call raises a fresh error with
        #: it. Not the exception itself: raised, its traceback's frames hold this decoder
        #: (a cycle only a GC pass frees, with the buffer).
        self._error: str | None = None

    def receive_data(self, data: bytes | bytearray) -> None:
        """Add bytes read from the peer; an empty ``data`` marks the end of the stream."""
        if self._error is not None:
            raise RemoteProtocolError(self._error)
        if not data:
            self._eof = True
        self._buffer += data

    @property
    def eof(self) -> bool:
        """True once the end of the stream was fed and every whole frame handed out."""
        return self._eof and not self._buffer

    def next_message(self) -> Message | _NeedData:
        """The next whole message, or ``NEED_DATA``."""
        if self._error is not None:
            raise RemoteProtocolError(self._error)
        if not self._buffer:
            return NEED_DATA  # the usual answer after the last frame of a read
        try:
            return self._next()
        except RemoteProtocolError as exc:
            self._error = str(exc)
            self._buffer = bytearray()  # what follows the error is never read
            raise

    def _next(self) -> Message | _NeedData:
        if len(self._buffer) < _HEADER.size:
            if self._eof and self._buffer:
                raise RemoteProtocolError("stream ended inside a frame header")
            return NEED_DATA
        (length,) = _HEADER.unpack_from(self._buffer)
        if length > self.max_frame:
            raise RemoteProtocolError(
                f"frame length {length} exceeds the {self.max_frame}-byte limit"
            )
        end = _HEADER.size + length
        if len(self._buffer) < end:
            if self._eof:
                raise RemoteProtocolError("stream ended inside a frame")
            return NEED_DATA
        # One copy (a bytearray slice): orjson reads a bytearray as it reads bytes.
        body = self._buffer[_HEADER.size : end]
        del self._buffer[:end]
        memo = self.memo
        if memo is None:
            return decode_body(body)
        key = bytes(body)
        message = memo.get(key)
        if message is None:
            message = decode_body(body)
            if type(message) is Push:
                if len(memo) >= PUSH_MEMO_SIZE:
                    memo.clear()
                memo[key] = message
        return message
