"""Properties of the wire codec: round-trips, and garbage only ever raises RemoteProtocolError."""

from __future__ import annotations

import gc
import struct
import weakref

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orsim.errors import LocalProtocolError, RemoteProtocolError
from orsim.wire import (
    NEED_DATA,
    ErrorResponse,
    FrameDecoder,
    Hello,
    Message,
    Ping,
    Pong,
    Push,
    Request,
    Response,
    Welcome,
    encode,
)

json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
json_object = st.dictionaries(st.text(max_size=8), json_value, max_size=4)
ids = st.integers(min_value=0, max_value=2**31)
names = st.text(min_size=1, max_size=16)

messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(Hello, names, names, st.integers(0, 9), st.floats(0, 1e6)),
    st.builds(Welcome, names, names, st.integers(0, 9)),
    st.builds(Request, ids, names, json_object),
    st.builds(Response, ids, json_value),
    st.builds(ErrorResponse, ids, names, st.text(max_size=40)),
    st.builds(Push, names, json_object),
    st.builds(Ping, ids),
    st.builds(Pong, ids),
)


def decode_all(data: bytes, chunks: list[int]) -> list[Message]:
    decoder = FrameDecoder()
    out: list[Message] = []
    position = 0
    for size in [*chunks, len(data)]:
        decoder.receive_data(data[position : position + size])
        position += size
        while (message := decoder.next_message()) is not NEED_DATA:
            out.append(message)
        if position >= len(data):
            break
    return out


@given(st.lists(messages, min_size=1, max_size=5), st.lists(st.integers(1, 64), max_size=20))
def test_every_message_round_trips_whatever_the_chunking(
    sent: list[Message], chunks: list[int]
) -> None:
    """Messages encoded back to back decode to equal messages, however the bytes arrive."""
    data = b"".join(encode(m) for m in sent)
    assert decode_all(data, chunks) == sent


@settings(max_examples=300)
@given(st.binary(max_size=300), st.lists(st.integers(1, 32), max_size=10))
def test_random_bytes_raise_only_remote_protocol_error(data: bytes, chunks: list[int]) -> None:
    """Arbitrary bytes, whole or split, either decode or raise RemoteProtocolError."""
    try:
        decode_all(data, chunks)
    except RemoteProtocolError:
        pass


@given(st.binary(max_size=200))
def test_random_frame_bodies_raise_only_remote_protocol_error(body: bytes) -> None:
    """A well-framed body of garbage is rejected with RemoteProtocolError."""
    decoder = FrameDecoder()
    decoder.receive_data(struct.pack(">I", len(body)) + body)
    try:
        decoder.next_message()
    except RemoteProtocolError:
        pass


@given(messages, st.integers(min_value=1))
def test_truncated_stream_is_a_protocol_error(message: Message, cut: int) -> None:
    """A stream that ends inside a frame is an error, not a hang or a partial message."""
    data = encode(message)
    cut = 1 + cut % (len(data) - 1)  # at least one byte in, at least one missing
    decoder = FrameDecoder()
    decoder.receive_data(data[:cut])
    decoder.receive_data(b"")
    with pytest.raises(RemoteProtocolError):
        decoder.next_message()


def test_oversized_length_header_is_rejected_before_buffering() -> None:
    """A 2 GiB length header is refused at once, without waiting for its body."""
    decoder = FrameDecoder()
    decoder.receive_data(struct.pack(">I", 2**31))
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        decoder.next_message()
    with pytest.raises(RemoteProtocolError):
        decoder.receive_data(b"more")  # a broken decoder stays broken


def test_a_broken_decoder_frees_its_buffer_without_a_gc_pass() -> None:
    """Issue 20, finding 7: partial frames after a protocol error stayed in memory until a
    GC cycle, the stored error holding the decoder through its traceback. Now the bytes
    after the error go at once, and the decoder with everything it held goes by
    reference counting alone (the collector off)."""
    gc.disable()
    try:
        decoder = FrameDecoder()
        decoder.receive_data(b"\x00\x00\x00\x02{]" + b"\x00\x10\x00\x00" + bytes(1 << 20))
        for _ in range(2):  # the error, then the same error again
            with pytest.raises(RemoteProtocolError, match="not UTF-8 JSON"):
                decoder.next_message()
        assert decoder.eof is False and len(decoder._buffer) == 0
        gone = weakref.ref(decoder)
        del decoder
        assert gone() is None
    finally:
        gc.enable()


def test_encoding_refuses_oversized_and_non_json() -> None:
    """We never send frames the peer would have to refuse."""
    with pytest.raises(LocalProtocolError):
        encode(Push("big", {"x": "a" * 100}), max_frame=50)
    with pytest.raises(LocalProtocolError):
        encode(Push("nan", {"x": float("nan")}))


@pytest.mark.parametrize(
    "body",
    [
        b'{"t":"req","id":true,"method":"m","params":{}}',
        b'{"t":"req","id":1,"params":{}}',
        b'{"t":"ping","seq":1,"extra":2}',
        b'{"t":"nope"}',
        b"[1,2]",
        b'{"t":"hello","app":"a","app_type":"b","addp_remote_timeout":NaN}',
    ],
)
def test_ill_typed_messages_are_rejected(body: bytes) -> None:
    """Wrong types, missing or unknown fields and unknown tags are protocol errors."""
    decoder = FrameDecoder()
    decoder.receive_data(struct.pack(">I", len(body)) + body)
    with pytest.raises(RemoteProtocolError):
        decoder.next_message()
