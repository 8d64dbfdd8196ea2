"""The simulation's speed devices keep its semantics: SimClock's time, the link timers
(ADDP and request timeouts of memory links), garbage collection around a run."""

from __future__ import annotations

import gc
import math
from typing import Any

import pytest
import trio
import trio.testing

from orsim.sim import SimClock, run_seeded
from orsim.sim._run import no_automatic_gc
from orsim.wire import Connection, MemoryNetwork, Request, open_connection, serve_app
from orsim.wire._link_timers import LinkTimers


def test_simclock_jumps_to_each_deadline_as_mockclock_does() -> None:
    seen: list[float] = []

    async def main() -> None:
        for delay in (0.25, 1.0, 0.0, 3.5):
            await trio.sleep(delay)
            seen.append(trio.current_time())
        with trio.move_on_after(2.0):
            await trio.sleep_forever()
        seen.append(trio.current_time())

    trio.run(main, clock=SimClock())
    assert seen == [0.25, 1.25, 1.25, 4.75, 6.75]


def test_simclock_wakes_wait_all_tasks_blocked_before_jumping() -> None:
    order: list[str] = []

    async def sleeper() -> None:
        await trio.sleep(5)
        order.append(f"slept until {trio.current_time():g}")

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sleeper)
            await trio.testing.wait_all_tasks_blocked()
            order.append(f"idle at {trio.current_time():g}")

    trio.run(main, clock=SimClock())
    assert order == ["idle at 0", "slept until 5"]


def test_simclock_jump_refuses_to_go_back() -> None:
    clock = SimClock()
    clock.jump(2.0)
    assert clock.current_time() == 2.0
    with pytest.raises(ValueError):
        clock.jump(-1.0)


def test_a_run_has_no_automatic_gc_and_restores_it() -> None:
    assert gc.isenabled()

    async def main() -> bool:
        await trio.sleep(1)
        return gc.isenabled()

    assert run_seeded(main, seed=1) is False
    assert gc.isenabled()
    gc.disable()
    try:
        with no_automatic_gc():
            pass
        assert not gc.isenabled()  # was off: stays off
    finally:
        gc.enable()


class _Check:
    def __init__(self, log: list[tuple[str, float]], name: str, again: float | None) -> None:
        self.log, self.name, self.again, self.live = log, name, again, True

    def alive(self) -> bool:
        return self.live

    def due(self, now: float) -> float | None:
        self.log.append((self.name, now))
        again, self.again = self.again, None
        return again


def test_link_timers_run_due_checks_in_order_and_drop_dead_ones() -> None:
    log: list[tuple[str, float]] = []
    timers = LinkTimers()
    a, b, dead = _Check(log, "a", again=5.0), _Check(log, "b", None), _Check(log, "x", None)
    timers.add(2.0, b)
    timers.add(1.0, a)
    timers.add(1.0, dead)
    dead.live = False
    timers.run_due(0.5)
    assert log == [] and len(timers) == 3
    timers.run_due(2.0)
    assert log == [("a", 2.0), ("b", 2.0)]
    assert len(timers) == 1  # a again at 5.0; the dead one dropped unseen
    timers.run_due(math.inf)
    assert log[-1] == ("a", math.inf)


async def _pair(net: MemoryNetwork, nursery: trio.Nursery, handler: Any) -> Connection:
    async def server(task_status: trio.TaskStatus[int]) -> None:
        await serve_app(
            net.for_app("S"), "h", 1, app="S", app_type="S", handler=handler,
            task_status=task_status,
        )  # fmt: skip

    port: int = await nursery.start(server)
    conn = await open_connection(
        net.for_app("C"), "h", port, app="C", app_type="C", addp_timeout=1.0,
        addp_remote_timeout=1.0,
    )  # fmt: skip
    nursery.start_soon(conn.serve)
    return conn


def test_a_memory_links_request_times_out_on_time() -> None:
    async def slow(_conn: Connection, request: Request) -> object:
        await trio.sleep(float(request.params["s"]))
        return "late"

    async def main() -> tuple[float, str]:
        net = MemoryNetwork()
        async with trio.open_nursery() as nursery:
            conn = await _pair(net, nursery, slow)
            assert await conn.request("x", {"s": 0.5}, timeout=2) == "late"
            started = trio.current_time()
            with pytest.raises(trio.TooSlowError):
                await conn.request("x", {"s": 10}, timeout=3)
            took = trio.current_time() - started
            # The link is still fine, and an answered request's deadline is harmless.
            answer = await conn.request("x", {"s": 0}, timeout=1)
            nursery.cancel_scope.cancel()
        return took, answer

    took, answer = run_seeded(main, seed=3)
    assert took == 3.0 and answer == "late"


def test_a_frozen_peer_is_given_up_within_the_addp_timeout() -> None:
    async def echo(_conn: Connection, request: Request) -> object:
        return request.params

    async def main() -> tuple[float, str]:
        net = MemoryNetwork()
        async with trio.open_nursery() as nursery:
            conn = await _pair(net, nursery, echo)
            await trio.sleep(5)  # quiet: the link stays up on ADDP polls alone
            assert not conn.closed.is_set()
            net.freeze("S")
            frozen = trio.current_time()
            await conn.closed.wait()
            lost = trio.current_time() - frozen
            nursery.cancel_scope.cancel()
        return lost, conn.close_reason

    lost, reason = run_seeded(main, seed=3)
    assert 0 < lost <= 1.0 and "addp" in reason
