"""The simulation's speed devices keep its semantics: SimClock's time, the link timers
(ADDP and request timeouts of memory links), garbage collection around a run."""

from __future__ import annotations

import gc
import math
from typing import Any

import pytest
import trio
import trio.testing
from helpers import serve_memory_app

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
    port = await serve_memory_app(net, nursery, handler)
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


def test_a_frozen_peer_is_given_up_within_twice_the_addp_timeout() -> None:
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
    assert 0 < lost <= 2.0 and "addp" in reason  # between T and 2T (Genesys ADDP)


def test_a_push_sent_to_many_memory_links_is_decoded_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every ORS of a simulated cluster gets each route request: one decode serves all of
    them, and each receiver still gets the push, equal to what was sent."""
    from orsim.wire import Push, _codec

    decoded: list[bytes] = []
    real_decode = _codec.decode_body

    def counting(body: bytes | bytearray) -> object:
        decoded.append(bytes(body))
        return real_decode(body)

    async def main() -> list[list[Push]]:
        net = MemoryNetwork()
        clients: list[Connection] = []
        received: list[list[Push]] = [[], [], []]

        async def joined(conn: Connection) -> None:
            clients.append(conn)

        async with trio.open_nursery() as nursery:

            async def server(task_status: trio.TaskStatus[int]) -> None:
                await serve_app(
                    net.for_app("S"), "h", 1, app="S", app_type="S", handler=None,
                    on_connect=joined, task_status=task_status,
                )  # fmt: skip

            port: int = await nursery.start(server)
            for n, got in enumerate(received):

                async def on_push(_conn: Connection, push: Push, got: list[Push] = got) -> None:
                    got.append(push)

                conn = await open_connection(
                    net.for_app(f"C{n}"), "h", port, app=f"C{n}", app_type="C",
                    on_push=on_push,
                )  # fmt: skip
                nursery.start_soon(conn.serve)
            while len(clients) < 3:
                await trio.sleep(0.01)
            monkeypatch.setattr(_codec, "decode_body", counting)
            frame = _codec.encode(Push("route_request", {"call_id": "fan-out-1", "dn": "7001"}))
            for conn in clients:
                conn.send_frame_nowait(frame)
            while not all(received):
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
        return received

    received = run_seeded(main, seed=5)
    assert [len(got) for got in received] == [1, 1, 1]
    assert all(got[0] == Push("route_request", {"call_id": "fan-out-1", "dn": "7001"})
               for got in received)  # fmt: skip
    assert len([b for b in decoded if b"fan-out-1" in b]) == 1


def test_a_simulation_still_hears_other_threads_while_it_runs() -> None:
    """The run loop skips most of its zero-timeout I/O polls in a simulation: a thread's
    call into the run (how Ctrl-C arrives too) is still taken while tasks keep running."""

    async def main() -> tuple[str, int]:
        spins = 0
        done = trio.Event()

        async def spinner() -> None:
            nonlocal spins
            while not done.is_set():
                spins += 1
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(spinner)
            answer = await trio.to_thread.run_sync(
                lambda: trio.from_thread.run_sync(lambda: "heard")
            )
            done.set()
        return answer, spins

    answer, spins = run_seeded(main, seed=1)
    assert answer == "heard" and spins > 0
