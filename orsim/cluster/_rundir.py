"""The run directory of a launched cluster and its manifest.

Layout (``./.orsim/run`` by default)::

    manifest.json        what every `orsim cluster` command reads to find the cluster
    proxy.json           the fault proxy's routes and control port
    config.yaml          the database served (a copy with rewritten ports for --ports auto)
    confserv/            the Configuration Server's state directory
    logs/<APP>.jsonl     each process's stderr: structlog JSON lines
    pids/<APP>.pid       one pid file per running process (also read by `down`)
    cluster.key          the cluster's shared secret (0600; see ``orsim.wire``)
    sessions.db          the nodes' SQLite session store (nodes run with cwd = run dir)
    redis/<APP>/         the working directory of a Redis the launcher runs (no files kept)
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import attrs

from orsim.config import name_problem, safe_file_stem
from orsim.errors import ClusterError

DEFAULT_RUN_DIR = Path(".orsim/run")
MANIFEST_VERSION = 1


@attrs.frozen(kw_only=True)
class AppEntry:
    """One process of the cluster as the launcher starts it."""

    app: str
    type: str
    host: str
    public_port: int
    private_port: int
    #: Start-up wave: everything of one tier is started together, tiers in order.
    tier: int
    #: Arguments after ``orsim`` (e.g. ``["node", "-host", ...]``).
    argv: tuple[str, ...]
    node_id: int | None = None
    cluster: str | None = None
    data_center: str | None = None
    primary: str | None = None
    backup: str | None = None
    #: Whether the private port is passed as ``ORSIM_LISTEN_PORT`` (not for the confserv,
    #: which gets it as ``--port``).
    listen_env: bool = True
    #: The program run with ``argv`` when it is not orsim (``redis-server``, from PATH).
    program: str | None = None
    #: The topology's host the application is placed on (None: the launcher's own).
    host_name: str | None = None
    #: Placed on another host than this run directory's (``up --host``): not started,
    #: stopped or signalled here, and asked over the wire at its public port (which
    #: ``private_port`` then repeats), through that host's fault proxy.
    remote: bool = False


@attrs.frozen(kw_only=True)
class Manifest:
    """Everything needed to find and drive a running cluster."""

    cluster: str | None
    config: str
    served_config: str
    run_dir: str
    confserv_host: str
    confserv_port: int
    proxy_control_port: int
    apps: tuple[AppEntry, ...]
    state: str = "starting"
    pids: dict[str, int] = attrs.field(factory=dict, eq=False)
    #: The topology host this run directory launched (``up --host``); None: all of them.
    host: str | None = None
    #: False for ``up --no-proxy``: every application listens on its public port itself,
    #: no fault proxy runs, and faults between applications are refused.
    proxy: bool = True

    def entry(self, app: str) -> AppEntry:
        for entry in self.apps:
            if entry.app == app:
                return entry
        known = ", ".join(e.app for e in self.apps)
        raise ClusterError(f"no application {app!r} in this cluster (known: {known})")

    def to_json(self) -> dict[str, Any]:
        data = attrs.asdict(self)
        for app in data["apps"]:
            app["argv"] = list(app["argv"])
            app["pid"] = self.pids.get(app["app"])
        data["version"] = MANIFEST_VERSION
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        fields = {k: v for k, v in data.items() if k != "version"}
        apps = []
        for raw in fields["apps"]:
            item = {k: v for k, v in raw.items() if k != "pid"}
            item["argv"] = tuple(item["argv"])
            apps.append(AppEntry(**item))
        fields["apps"] = tuple(apps)
        fields["pids"] = {k: int(v) for k, v in fields.get("pids", {}).items()}
        return cls(**fields)


class _Inside:
    """One fixed name of the layout above, read as a path: ``RunDir.at(...).logs``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, run_dir: RunDir, owner: type[RunDir] | None = None) -> Path:
        return run_dir.root / self.name


@attrs.frozen
class RunDir:
    """Paths inside one run directory (absolute)."""

    root: Path
    #: The fixed names of the layout (module docstring).
    manifest = _Inside("manifest.json")
    proxy_config = _Inside("proxy.json")
    served_config = _Inside("config.yaml")
    confserv_state = _Inside("confserv")
    logs = _Inside("logs")
    pids = _Inside("pids")

    @classmethod
    def at(cls, path: str | os.PathLike[str] | None) -> RunDir:
        return cls(Path(path if path is not None else DEFAULT_RUN_DIR).absolute())

    def log(self, app: str) -> Path:
        return self.logs / f"{_file_stem(app)}.jsonl"

    def pid_file(self, app: str) -> Path:
        return self.pids / f"{_file_stem(app)}.pid"

    def create(self) -> None:
        for path in (self.root, self.logs, self.pids, self.confserv_state):
            path.mkdir(parents=True, exist_ok=True)

    # -- pid files ---------------------------------------------------------------

    def write_pid(self, app: str, pid: int) -> None:
        write_atomic(self.pid_file(app), f"{pid}\n")

    def remove_pid(self, app: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.pid_file(app).unlink()

    def read_pids(self) -> dict[str, int]:
        """Every pid file present: app -> pid (unreadable files are skipped)."""
        found: dict[str, int] = {}
        if not self.pids.is_dir():
            return found
        for path in sorted(self.pids.glob("*.pid")):
            if name_problem(path.stem) is not None:
                continue  # not one of ours: no launched app has that name
            try:
                found[path.stem] = int(path.read_text().strip())
            except (OSError, ValueError):
                continue
        return found

    # -- manifest ----------------------------------------------------------------

    def write_manifest(self, manifest: Manifest) -> None:
        write_atomic(self.manifest, json.dumps(manifest.to_json(), indent=2) + "\n")

    def read_manifest(self) -> Manifest:
        """The manifest of the cluster in this run directory.

        Raises:
            ClusterError: no cluster was ever started here, or the manifest is unreadable.
        """
        try:
            data = json.loads(self.manifest.read_text())
        except FileNotFoundError:
            raise ClusterError(
                f"no cluster in {self.root} (start one with `orsim cluster up CONFIG.yaml"
                f" --run-dir {self.root}`)"
            ) from None
        except (OSError, ValueError) as exc:
            raise ClusterError(f"cannot read {self.manifest}: {exc}") from exc
        try:
            return Manifest.from_json(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise ClusterError(f"{self.manifest} is not an orsim manifest: {exc}") from exc


def write_secret(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``, readable and writable by its owner only (0600)
    from the moment it exists: a secret never sits in a file others may read."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _file_stem(app: str) -> str:
    """``app`` as a file name inside the run directory: never a path that leaves it."""
    try:
        return safe_file_stem(app)
    except ValueError as exc:
        raise ClusterError(f"application name {exc}") from None


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
