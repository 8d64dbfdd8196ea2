"""Progress on stderr: the suite takes minutes, so say what it is doing."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator

import attrs
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

_START = time.monotonic()


def say(message: str) -> None:
    """One progress line, stamped with the seconds since the suite started."""
    print(f"[{time.monotonic() - _START:7.1f}s] {message}", file=sys.stderr, flush=True)


@attrs.frozen
class Bar:
    """A live progress bar; :meth:`say` prints a line above it."""

    progress: Progress
    task: TaskID

    def advance(self, description: str) -> None:
        self.progress.update(self.task, advance=1, description=description)

    def say(self, message: str) -> None:
        self.progress.console.print(
            f"[{time.monotonic() - _START:7.1f}s] {message}", markup=False, highlight=False
        )


@contextlib.contextmanager
def progress_bar(total: int, description: str) -> Iterator[Bar]:
    """A rich progress bar on stderr for ``total`` steps (done/total, elapsed, left)."""
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )
    with progress:
        yield Bar(progress, progress.add_task(description, total=total))
