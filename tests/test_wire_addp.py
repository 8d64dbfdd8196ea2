"""ADDP as Genesys times it (ors-domain.md section 8; Genesys Framework "Advanced
Disconnect Detection Protocol", https://enu.docs.genesys.com/Documentation/FR/8.5.0/Dep/ADDP):
"when a connection is silent for the local timeout, the side sends a poll; no answer
within the same interval means the connection is lost" -- so a peer is given up between
T and 2T after its last frame, never before T."""

from __future__ import annotations

import math

import pytest
import structlog
import trio
import trio.testing
from helpers import serve_memory_app
from hypothesis import given
from hypothesis import strategies as st

from orsim.wire import Connection, MemoryNetwork, Request, connected
from orsim.wire._addp import Addp, AddpAction, trace_sides


def test_a_silent_link_is_polled_after_t_and_given_up_t_later() -> None:
    """Genesys: after addp-timeout of silence a side polls; no answer within the same
    interval means the link is lost."""
    addp = Addp(timeout=3.0, last_rx=10.0)
    assert addp.next_deadline() == 13.0
    assert addp.poll(12.999) is AddpAction.NOTHING
    assert addp.poll(13.0) is AddpAction.PING
    assert addp.next_deadline() == 16.0
    assert addp.poll(15.999) is AddpAction.NOTHING  # one poll per silence, not a stream
    assert addp.poll(16.0) is AddpAction.LOST


def test_any_frame_answers_the_poll() -> None:
    """Genesys: any traffic proves the peer alive; the next poll comes T after it."""
    addp = Addp(timeout=2.0, last_rx=0.0)
    assert addp.poll(2.0) is AddpAction.PING
    addp.on_receive(2.5)  # the answer, or any other frame
    assert not addp.polling
    assert addp.next_deadline() == 4.5
    assert addp.poll(4.0) is AddpAction.NOTHING
    assert addp.poll(4.5) is AddpAction.PING


def test_zero_turns_detection_off() -> None:
    """Genesys: an addp-timeout of 0 turns this side's detection off."""
    addp = Addp(timeout=0.0)
    assert addp.next_deadline() == math.inf
    assert addp.poll(1e9) is AddpAction.NOTHING


@given(
    timeout=st.floats(min_value=0.05, max_value=60.0),
    arrivals=st.lists(st.floats(min_value=0.0, max_value=30.0), max_size=20),
)
def test_loss_is_declared_between_t_and_2t_after_the_last_frame(
    timeout: float, arrivals: list[float]
) -> None:
    """Driven at each deadline, as the connection drives it: a peer that sends frames at
    ``arrivals`` then falls silent is given up no sooner than T and no later than 2T
    after its last frame, and never while it was still sending."""
    addp = Addp(timeout=timeout, last_rx=0.0)
    pending = sorted(arrivals)
    last = 0.0
    while True:
        deadline = addp.next_deadline()
        if pending and pending[0] <= deadline:  # a frame there at the deadline counts
            last = pending.pop(0)
            addp.on_receive(last)
            continue
        action = addp.poll(deadline)
        if action is AddpAction.LOST:
            assert timeout <= deadline - last <= 2 * timeout + 1e-9
            return


@pytest.mark.parametrize(
    ("value", "sides"),
    [("off", (False, False)), ("no", (False, False)), ("local", (True, False)),
     ("on", (True, False)), ("true", (True, False)), ("remote", (False, True)),
     ("both", (True, True)), ("full", (True, True))],
)  # fmt: skip
def test_addp_trace_values_name_the_sides(value: str, sides: tuple[bool, bool]) -> None:
    """Genesys addp-trace: off, local/on, remote, both/full."""
    assert trace_sides(value) == sides


async def _echo(_conn: Connection, request: Request) -> object:
    return request.params


async def _serve(net: MemoryNetwork, nursery: trio.Nursery) -> int:
    """Serve app "S" (echo) on ``net``; its port."""
    return await serve_memory_app(net, nursery, _echo)


async def test_a_hung_peer_is_given_up_not_before_t_and_by_2t(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Over a real connection in virtual time: a peer hung at any phase of the poll cycle
    is declared lost between T and 2T after the hang (its last frame came at most T
    before it: the previous poll's answer)."""
    lost_after: list[float] = []
    for phase in (0.0, 0.7, 1.4, 2.1, 2.9):
        net = MemoryNetwork()
        async with trio.open_nursery() as nursery:
            port = await _serve(net, nursery)
            async with connected(
                net.for_app("C"), "h", port, app="C", app_type="Client", addp_timeout=3
            ) as c:
                await trio.sleep(10 + phase)  # quiet: ADDP polls keep the link up
                assert not c.closed.is_set()
                net.hang("S")
                hung = trio.current_time()
                await c.closed.wait()
                lost_after.append(trio.current_time() - hung)
                assert "addp" in c.close_reason
            nursery.cancel_scope.cancel()
    assert all(0.0 < t <= 6.0 for t in lost_after), lost_after
    # Not a fixed delay: where the hang falls in the poll cycle decides it.
    assert max(lost_after) > 3.0 and len(set(lost_after)) > 1, lost_after


async def test_addp_trace_logs_polls_and_answers_on_the_sides_it_names(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Genesys addp-trace: ``local`` logs this side's ADDP traffic (its polls, their
    answers), ``remote`` has the server log its own (the polls it answers), ``both`` both,
    ``off`` none. The client's timeout is the shorter, so the client polls."""
    seen: dict[str, set[tuple[str, str]]] = {}
    for trace in ("off", "local", "remote", "both"):
        net = MemoryNetwork()
        async with trio.open_nursery() as nursery:
            port = await _serve(net, nursery)
            with structlog.testing.capture_logs() as logs:
                async with connected(
                    net.for_app("C"), "h", port, app="C", app_type="Client",
                    addp_timeout=1, addp_remote_timeout=3, addp_trace=trace,
                ):  # fmt: skip
                    await trio.sleep(5)
            nursery.cancel_scope.cancel()
        # Each side names its peer: "S" in the client's lines, "C" in the server's.
        seen[trace] = {
            (e["event"], str(e.get("peer"))) for e in logs if e["event"].startswith("addp_")
        }
    assert seen["off"] == set()
    assert seen["local"] == {("addp_poll", "S"), ("addp_answer", "S")}
    assert seen["remote"] == {("addp_polled", "C")}
    assert seen["both"] == seen["local"] | seen["remote"]
