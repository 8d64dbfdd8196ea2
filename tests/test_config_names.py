"""Application names are safe identifiers, never raw paths (issue 20, finding 5)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from test_config_loader import ORSIM, base, lint

from orsim.cluster._rundir import RunDir
from orsim.errors import ClusterError

BAD_NAMES = [
    "../../../orsim_escape",
    "/tmp/orsim_abs",
    "a/b",
    ".hidden",
    "-flag",
    "",
    "x" * 129,
    "two words",
    "new\nline",
    "café",
]


def with_app(name: str) -> dict[str, object]:
    data = base()
    data["applications"][name] = {"type": "RoutingServer", "host": "h", "port": 7999}
    return data


@pytest.mark.parametrize("name", BAD_NAMES)
def test_lint_rejects_unsafe_app_names(name: str) -> None:
    problems = lint(with_app(name))
    assert len(problems) == 1, problems
    assert "not a safe name" in problems[0] or "the name" in problems[0], problems
    assert "\n" not in problems[0]


@pytest.mark.parametrize("name", ["ORS_9", "sip-server.2", "9lives", "_x", "A" * 128])
def test_lint_accepts_safe_names(name: str) -> None:
    assert lint(with_app(name)) == []


@pytest.mark.parametrize("command", ["config lint", "cluster up"])
def test_unsafe_name_is_one_line_and_exit_3(command: str, tmp_path: Path) -> None:
    """Nothing is started (and no file written) for a database with a path for a name."""
    config = tmp_path / "deep" / "er" / "bad.yaml"
    config.parent.mkdir(parents=True)
    config.write_text(yaml.safe_dump(with_app("../../orsim_escape"), sort_keys=False))
    args = command.split()
    if command == "cluster up":
        args += ["--run-dir", str(config.parent / "run")]
    proc = subprocess.run([ORSIM, *args, str(config)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list(tmp_path.rglob("orsim_escape*"))


@pytest.mark.parametrize("name", ["../../escape", "/abs", "", ".."])
def test_run_dir_refuses_names_that_are_paths(name: str, tmp_path: Path) -> None:
    run_dir = RunDir.at(tmp_path / "run")
    run_dir.create()
    for path_of in (run_dir.log, run_dir.pid_file):
        with pytest.raises(ClusterError, match="application name"):
            path_of(name)
    with pytest.raises(ClusterError):
        run_dir.write_pid(name, 1)
    assert run_dir.read_pids() == {}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
