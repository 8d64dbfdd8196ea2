"""Running a process under trio: logging set-up, graceful stop on SIGTERM/SIGINT."""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable

import trio

from orsim.logs import configure_logging, get_logger

#: Exit code after an interrupt, as shells report SIGINT.
EXIT_INTERRUPTED = 130


async def run_until_signal(main: Callable[[trio.Nursery], Awaitable[None]]) -> None:
    """Run ``main(nursery)`` and the tasks it starts until SIGTERM/SIGINT, then stop cleanly.

    ``main`` starts its long-running tasks in the nursery it is given and may return at
    once; the signals stay handled until the nursery ends, and a signal cancels it, so
    every task's ``finally`` runs and the process exits 0.
    """
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                async for signum in signals:
                    get_logger().info("stopping", signal=signal.Signals(signum).name)
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(watch)
            await main(nursery)


def run_server(main: Callable[[trio.Nursery], Awaitable[None]], log_level: str = "info") -> int:
    """Synchronous wrapper for a server CLI: configure logs, run, return exit code 0."""
    configure_logging(level=log_level)
    trio.run(run_until_signal, main)
    return 0


def run_cancellable(main: Callable[[], Awaitable[int]]) -> int:
    """Run ``main`` under trio; SIGINT/SIGTERM cancel it and give exit code 130."""

    async def guarded() -> int:
        code = EXIT_INTERRUPTED
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:

                async def watch() -> None:
                    async for _ in signals:
                        nursery.cancel_scope.cancel()
                        return

                async def body() -> None:
                    nonlocal code
                    code = await main()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(watch)
                nursery.start_soon(body)
        return code

    return trio.run(guarded)
