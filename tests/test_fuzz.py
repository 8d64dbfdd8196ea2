"""The in-process fuzzer (``make fuzz``) on a small budget, and what it must catch."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from orsim.fuzz import NAMES, fuzz
from orsim.fuzz import _harness as harness
from orsim.fuzz._gen import JsonGen
from orsim.node._assignment import assign
from orsim.wire import Connection, Json, Message, Request, RequestRefused

#: Inputs per target here; `make fuzz` runs 1,000,000 of the same generator.
BUDGET = 3000


@pytest.mark.parametrize("target", NAMES)
def test_no_crash_or_hang_on_a_small_budget(target: str) -> None:
    report = fuzz(target, BUDGET, seed=20)
    assert report.inputs == BUDGET
    assert report.failures == 0, report.examples
    # Most inputs get past the codec and reach the server, some succeed.
    assert report.outcomes["ok"] > BUDGET // 10, report.outcomes


def _request(gen: JsonGen, conn: Connection) -> Message:
    return Request(1, gen.choice(["ok", "bug", "refused", "unchecked"]), {})


async def _handler(conn: Connection, request: Request) -> Json:
    if request.method == "bug":
        raise AttributeError("a handler bug")
    if request.method == "refused":
        raise RequestRefused("bad_request", "no")
    if request.method == "unchecked":
        nothing: dict[str, Json] = {}
        return nothing["missing"]  # a KeyError: the handler bug this target must report
    if request.method == "hang":
        await trio.sleep_forever()
    return {}


@asynccontextmanager
async def _broken(nursery: trio.Nursery) -> AsyncIterator[harness.Dispatch]:
    yield harness.Dispatch(peers=(("a", "T"),), make=_request, handler=_handler)


async def test_the_loop_tells_crashes_from_answers() -> None:
    report = await harness.run_target("broken", _broken, 400, seed=1)
    assert report.outcomes["crash"] > 50 and report.outcomes["error"] > 50
    assert report.outcomes["unchecked"] > 50 and report.outcomes["ok"] > 50
    assert any("AttributeError" in e for e in report.examples), report.examples


async def test_a_hang_stops_the_run_and_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(harness, "HANG_S", 0.2)

    @asynccontextmanager
    async def hanging(nursery: trio.Nursery) -> AsyncIterator[harness.Dispatch]:
        yield harness.Dispatch(
            peers=(("a", "T"),), make=lambda g, c: Request(1, "hang", {}), handler=_handler
        )

    with trio.fail_after(5):
        report = await harness.run_target("hanging", hanging, 10, seed=1)
    assert report.outcomes["hang"] == 1 and report.inputs == 0
    assert report.examples[0].startswith("hang:")


def test_a_call_id_with_a_lone_surrogate_is_assigned() -> None:
    """Found by the fuzzer: a `route_request` push with call id "\\ud800" (valid JSON)
    ended the node while weighing Nodes for the call."""
    first = assign("\ud800", {101: "DC_East", 103: "DC_West"})
    assert first == assign("\ud800", {103: "DC_West", 101: "DC_East"})
