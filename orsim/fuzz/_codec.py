"""Fuzzing the wire codec (sans-IO, no trio): mutated frames fed in random pieces.

Each input is a few frames of valid messages, encoded, then (mostly) damaged: bytes
flipped, inserted, cut, a length header rewritten, or a body replaced by other JSON.
``FrameDecoder`` may only hand out messages or raise ``RemoteProtocolError``; an
undamaged frame must decode to the message that was encoded (but for integers beyond
64 bits, which orjson reads as floats: the codec's documented trade for speed).
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable

import attrs

from orsim import wire
from orsim.errors import LocalProtocolError, RemoteProtocolError
from orsim.fuzz._gen import JsonGen
from orsim.fuzz._harness import EXAMPLES, Report, rss_mb
from orsim.wire import NEED_DATA, FrameDecoder, Message, decode_body, encode

#: A decoder limit small enough that the "too large" path is met often.
MAX_FRAME = 4096


def _message(gen: JsonGen) -> Message:
    text, whole = gen.string, gen.integer
    makers: tuple[Callable[[], Message], ...] = (
        lambda: wire.Hello(text(), text(), whole(), gen.rng.choice((0.0, 1.5, 3))),
        lambda: wire.Welcome(text(), text(), whole()),
        lambda: wire.Request(whole(), text(), {text(): gen.any()}),
        lambda: wire.Response(whole(), gen.any()),
        lambda: wire.ErrorResponse(whole(), text(), text()),
        lambda: wire.Push(text(), {text(): gen.any()}),
        lambda: wire.Ping(whole()),
        lambda: wire.Pong(whole()),
    )
    return makers[gen.rng.randrange(len(makers))]()


def _damage(gen: JsonGen, data: bytearray) -> None:
    rng = gen.rng
    for _ in range(rng.randint(1, 3)):
        how = rng.randrange(6)
        at = rng.randrange(len(data) + 1)
        if how == 0 and data:
            data[min(at, len(data) - 1)] = rng.randrange(256)
        elif how == 1:
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
        elif how == 2:
            del data[at : at + rng.randint(1, 8)]
        elif how == 3 and len(data) >= 4:
            data[0:4] = rng.choice((0, 1, 2**31, 2**32 - 1, len(data))).to_bytes(4, "big")
        elif how == 4:
            body = _json({"t": gen.string(), gen.string(): gen.any()})
            data[:] = len(body).to_bytes(4, "big") + body
        else:
            body = _json(gen.any())
            data[:] = len(body).to_bytes(4, "big") + body


def _json(value: object) -> bytes:
    """object generated value as JSON (big integers and lone surrogates included)."""
    return json.dumps(value, separators=(",", ":")).encode()


def _as_read(value: object) -> object:
    """``value`` with integers beyond 64 bits as the floats orjson reads them as."""
    if isinstance(value, list | tuple):
        return [_as_read(v) for v in value]
    if isinstance(value, dict):
        return {k: _as_read(v) for k, v in value.items()}
    if isinstance(value, int) and not isinstance(value, bool):
        return value if -(2**63) <= value < 2**64 else float(value)
    cls = type(value)
    if attrs.has(cls):
        return (cls, _as_read([getattr(value, a.name) for a in attrs.fields(cls)]))
    return value


def _one(gen: JsonGen) -> str:
    """One input; its outcome (``ok``, ``rejected``, ``unsendable``)."""
    messages = [_message(gen) for _ in range(gen.rng.randint(1, 3))]
    try:
        frames = [encode(m) for m in messages]
    except LocalProtocolError:
        return "unsendable"
    data = bytearray(b"".join(frames))
    damaged = gen.rng.random() < 0.8
    if damaged:
        _damage(gen, data)
    decoder = FrameDecoder(max_frame=MAX_FRAME if damaged else 2**20)
    got: list[object] = []
    try:
        at = 0
        while at < len(data):
            step = gen.rng.randint(1, 64)
            decoder.receive_data(bytes(data[at : at + step]))
            at += step
            while (message := decoder.next_message()) is not NEED_DATA:
                got.append(message)
        decoder.receive_data(b"")
        while (message := decoder.next_message()) is not NEED_DATA:
            got.append(message)
        if not damaged and _as_read(got) != _as_read(messages):
            raise AssertionError(f"decoded {got!r}, sent {messages!r}")
        if gen.rng.random() < 0.2:
            decode_body(bytes(data[4:]))
    except RemoteProtocolError:
        return "rejected"
    return "ok"


def run_codec(inputs: int, seed: int) -> Report:
    """Fuzz the codec with ``inputs`` inputs from ``seed``."""
    gen = JsonGen(seed, {})
    report = Report("codec", rss_start_mb=rss_mb())
    started = time.perf_counter()
    for n in range(inputs):
        try:
            outcome = _one(gen)
        except Exception as exc:
            outcome = "crash"
            if len(report.examples) < EXAMPLES:
                frame = traceback.extract_tb(exc.__traceback__)[-1]
                report.examples.append(
                    f"crash: {exc!r} at {frame.filename}:{frame.lineno} (input {n}, seed {seed})"
                )
        report.outcomes[outcome] += 1
    report.seconds = time.perf_counter() - started
    report.inputs = inputs
    report.rss_end_mb = rss_mb()
    return report
