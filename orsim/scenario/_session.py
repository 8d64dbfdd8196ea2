"""Running several scenario files: validate them all first, then run each in turn."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TypedDict

import trio

from orsim.errors import ConfigError, UsageError
from orsim.scenario._junit import write_junit
from orsim.scenario._load import TopologyLoader, load_scenario
from orsim.scenario._model import Scenario
from orsim.scenario._report import write_report
from orsim.scenario._runner import (
    Clock,
    ClusterFactory,
    Output,
    ScenarioResult,
    launch_cluster,
    run_scenario,
)

DEFAULT_RUN_ROOT = Path(".orsim/scenarios")


def load_all(paths: Sequence[str | os.PathLike[str]], **kwargs: TopologyLoader) -> list[Scenario]:
    """Every scenario, or a ConfigError listing the problems of every broken file."""
    scenarios, problems = [], []
    for path in paths:
        try:
            scenarios.append(load_scenario(path, **kwargs))
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        if len(problems) == 1:
            raise ConfigError(problems[0])
        raise ConfigError(f"{len(problems)} problems; first: {problems[0]}", problems)
    return scenarios


def fresh_run_dir(root: Path, name: str, taken: set[Path]) -> Path:
    """``root/name`` (``name-2``... if several scenarios share a name), emptied if it holds
    an earlier orsim run; refuses to touch a directory that is not one."""
    path = root / name
    n = 1
    while path in taken:
        n += 1
        path = root / f"{name}-{n}"
    taken.add(path)
    if path.exists():
        if not path.is_dir() or not any(
            (path / marker).exists()
            for marker in ("manifest.json", "logs", "config.yaml", "trace.jsonl", "schedule.json")
        ):
            if path.is_dir() and not any(path.iterdir()):
                return path
            raise UsageError(f"run directory {path} exists and is not an orsim run directory")
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


class RunOptions(TypedDict, total=False):
    """What both runners of scenario files (real and simulated) take besides the files."""

    run_root: Path
    junit: Path | None
    report: Path | None
    seed: int | None
    out: Output


def with_run_dirs(scenarios: Sequence[Scenario], root: Path) -> Iterator[tuple[Scenario, Path]]:
    """Each scenario with its fresh run directory under ``root``, made as it comes."""
    taken: set[Path] = set()
    for scenario in scenarios:
        yield scenario, fresh_run_dir(root, scenario.name, taken)


def write_outputs(
    results: Sequence[ScenarioResult], junit: Path | None, report: Path | None, out: Output
) -> int:
    """The JUnit XML and HTML report asked for, then the closing line; the exit code."""
    if junit is not None:
        write_junit(results, junit)
        out(f"JUnit XML written to {junit}")
    if report is not None:
        write_report(results, report)
        out(f"HTML report written to {report}")
    return summarize(results, out)


async def run_files(
    paths: Sequence[str | os.PathLike[str]],
    *,
    run_root: Path = DEFAULT_RUN_ROOT,
    junit: Path | None = None,
    report: Path | None = None,
    seed: int | None = None,
    factory: ClusterFactory = launch_cluster,
    out: Output = print,
    clock: Clock = time.time,
) -> int:
    """``orsim scenario run``: 0 if every expectation held, 1 otherwise.

    Raises:
        ConfigError: a scenario file is broken (nothing was started).
    """
    results: list[ScenarioResult] = []
    for scenario, run_dir in with_run_dirs(load_all(paths), run_root):
        results.append(
            await run_scenario(
                scenario, run_dir=run_dir, factory=factory, seed=seed, out=out, clock=clock
            )
        )
        out("")
    return await trio.to_thread.run_sync(write_outputs, results, junit, report, out)


def summarize(results: Sequence[ScenarioResult], out: Output) -> int:
    """Print the closing ``N passed, M failed`` line; the exit code (0: all passed)."""
    good = sum(r.counts[0] for r in results)
    bad = sum(r.counts[1] for r in results)
    failed = [r.scenario.name for r in results if not r.passed]
    tail = f" (failed: {', '.join(failed)})" if failed else ""
    out(f"{good} passed, {bad} failed{tail}")
    return 0 if bad == 0 else 1
