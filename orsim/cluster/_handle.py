"""`ClusterHandle`: start, watch, fault and stop a cluster of orsim processes.

The launcher talks to each process on its *private* port, so the faults it injects
through the proxy (which holds the public ports) never blind the launcher itself.
Processes this handle started are its children and are reaped here; processes started by
another launcher invocation are found through their pid files.
"""

from __future__ import annotations

import json
import os
import shutil
import signal as signals
import socket
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import TypeVar

import attrs
import trio

from orsim.cluster._control import CheckKey, Delay, Heal, Partition, Sides
from orsim.cluster._hosts import isolate_sides, link_sides, proxied_hosts
from orsim.cluster._plan import (
    CONFSERV_APP,
    DEFAULT_CONFSERV_PORT,
    LOOPBACK,
    STORE_TYPE,
    cluster_name,
    confserv_place,
    launched_apps,
    node_hosts,
    plan_apps,
    redis_servers,
    rewrite_ports,
    sqlite_stores,
    start_waves,
    store_names,
)
from orsim.cluster._procs import (
    SIGNALS,
    Child,
    ForkServer,
    log_tail,
    pid_alive,
    process_state,
    send_signal,
    spawn,
    spawn_program,
    wait_exit,
)
from orsim.cluster._proxy import PROXY_APP, PROXY_CONTROL_CLIENT, Route
from orsim.cluster._redis import (
    REDIS_APP,
    REDIS_DIR,
    REDIS_PROGRAM,
    REDIS_TYPE,
    RedisServer,
    missing_program_error,
    ping_redis,
    probe_redis,
    redis_stores,
    rewrite_store_urls,
    set_store,
)
from orsim.cluster._rundir import AppEntry, Manifest, RunDir, write_atomic, write_secret
from orsim.cluster._status import (
    REMOTE_PROCESS,
    Answer,
    ClusterStatus,
    cluster_status,
    node_primary,
    poll_status,
    process_label,
)
from orsim.config import TSERVER_TYPES, ConfigDatabase, load_database, safe_dump, safe_load
from orsim.confserv import SetOption
from orsim.errors import (
    ClusterError,
    ConfigError,
    OrsimError,
    RequestRefused,
    UnreachableError,
    UsageError,
)
from orsim.node import SwitchedOver, Switchover
from orsim.store import parse_store_url
from orsim.tserver import Generate, Ledger, LedgerCounts, LedgerReport, StopGenerator
from orsim.wire import (
    CLUSTER_KEY_ENV,
    KEY_FILE,
    Call,
    Json,
    Network,
    Record,
    Status,
    TcpNetwork,
    connected,
    create_cluster_key,
    key_of,
    read_cluster_key,
)

A = TypeVar("A")

#: How long `up` waits for one process to report ready.
READY_TIMEOUT = 30.0
#: The most calls per second ``load`` offers. Every ORS application registered on a
#: routing point is pushed every call on it, so no cluster size spreads the load: at
#: 10,000 calls/s a 2-Node cluster's applications fell behind on their own ADDP answers
#: and failed over on their own slowness (26,000 of 30,000 calls lost); `make bench`
#: saturates 2 Nodes near 2,000 calls/s. Higher rates are refused up front.
MAX_LOAD_RATE = 1000.0


def check_load_rate(rate: float) -> None:
    """Raise UsageError unless ``rate`` is in (0, ``MAX_LOAD_RATE``] calls/s."""
    if not 0 < rate <= MAX_LOAD_RATE:
        raise UsageError(
            f"load rate {rate:g} calls/s: the most a cluster on one machine takes without"
            f" failing over on its own slowness is {MAX_LOAD_RATE:g} calls/s"
        )


#: Interval between two `wait_for` polls.
POLL_INTERVAL = 0.05
#: Interval between two readiness polls of a starting process (forked ones are quick).
READY_POLL_INTERVAL = 0.02
#: Longest a starting ORS application's claim may stay under way before `up` takes it as
#: it is: its status says `backup` until the T-Server confirms the fence, which takes
#: round trips, or never comes while its T-Server is unreachable (another host's, not up).
CLAIM_SETTLE = 5.0
#: How long a process may take to answer `status` before it counts as not answering.
STATUS_TIMEOUT = 1.0
#: `down`: how long processes get after SIGTERM before SIGKILL.
DOWN_GRACE = 5.0
#: Longest ``stop`` waits, for another Node to finish suspending and then for the app.
STOP_TIMEOUT = 30.0
LAUNCHER_APP = "orsim-cluster"
LAUNCHER_TYPE = "Launcher"

#: What a request to a process that is not (yet) serving raises.
_UNANSWERED = (OSError, trio.TooSlowError, OrsimError)

Progress = Callable[[str, str], None]
"""Called as ``progress(app, state)`` with state ``starting``, ``ready`` or ``failed``."""


@attrs.define(eq=False)
class ClusterHandle:
    """A launched cluster. Create with ``await ClusterHandle.up(...)`` or ``attach(run_dir)``."""

    run_dir: RunDir
    manifest: Manifest
    network: Network = attrs.Factory(TcpNetwork)
    _procs: dict[str, Child] = attrs.Factory(dict)
    _forks: ForkServer | None = None

    # -- creating ----------------------------------------------------------------

    @classmethod
    async def up(
        cls,
        config_path: str | os.PathLike[str],
        run_dir: str | os.PathLike[str] | None = None,
        ports: str = "given",
        progress: Progress | None = None,
        *,
        confserv_port: int | None = None,
        ready_timeout: float = READY_TIMEOUT,
        store: str | None = None,
        host: str | None = None,
        key: str | None = None,
        proxy: bool = True,
    ) -> ClusterHandle:
        """Validate the database, start every process in order and wait until all are ready.

        Args:
            config_path: the YAML configuration database.
            run_dir: where logs, pid files, state and the manifest go (``.orsim/run``).
            ports: ``given`` uses the database's ports; ``auto`` picks free ones and
                serves a rewritten copy of the database.
            progress: called as each process starts and becomes ready.
            confserv_port: the Configuration Server's public port (``given``: 2020).
            store: a ``persistence/store`` URL that replaces the database's (every Node's):
                the database served is a copy with it.
            host: start only the applications placed on this topology host (one machine
                of several: see ``_prepare``); the others are listed as ``remote``.
            key: the cluster key to use (another host's); default: the run directory's,
                made now if it has none. It is written to the run directory.
            proxy: False (``--no-proxy``) runs no fault proxy: every application listens
                on its public port itself, so links are direct, and ``partition``,
                ``isolate``, ``delay`` and ``proxy_status`` raise ClusterError. For
                measuring what the proxy costs; one host only.

        Raises:
            ConfigError: the database (or ``store``) is broken (nothing is started).
            UnreachableError: a local Redis store must be started and ``redis-server`` is
                not on PATH.
            ClusterError: a cluster already runs there, a port is taken, or a process died
                or did not get ready (everything started is stopped again).
        """
        if ports not in ("given", "auto"):
            raise UsageError(f"--ports must be 'given' or 'auto', not {ports!r}")
        if host is not None and ports == "auto":
            raise UsageError(
                "--ports auto picks ports on one machine; with --host every machine must"
                " find the others at the topology's ports: use them as given"
            )
        if key is not None and not key.strip():
            raise UsageError("the cluster key is empty")
        if host is not None and not proxy:
            raise UsageError(
                "--no-proxy runs one machine's cluster without its fault proxy; with --host"
                " every host's proxy carries the links between hosts: drop one of them"
            )
        attempts = AUTO_PORT_ATTEMPTS if ports == "auto" else 1
        for attempt in range(1, attempts + 1):
            try:
                return await cls._up_once(
                    config_path, run_dir, ports, progress, confserv_port=confserv_port,
                    ready_timeout=ready_timeout, store=store, host=host, key=key,
                    proxy=proxy,
                )  # fmt: skip
            except (ClusterError, BaseExceptionGroup) as exc:
                # Ports picked free can be taken by another program before a server
                # binds them: with ports of its own choosing, the launcher picks again.
                if attempt == attempts or not _port_taken(exc):
                    raise
                _notify(progress, "cluster", "a port was taken meanwhile: picking others")
        raise AssertionError("unreachable")

    @classmethod
    async def _up_once(
        cls,
        config_path: str | os.PathLike[str],
        run_dir: str | os.PathLike[str] | None,
        ports: str,
        progress: Progress | None,
        *,
        confserv_port: int | None,
        ready_timeout: float,
        store: str | None,
        host: str | None,
        key: str | None,
        proxy: bool = True,
    ) -> ClusterHandle:
        """One try of ``up`` (``ports`` already checked)."""
        rundir = RunDir.at(run_dir)
        # The fork server imports orsim on another core while the database is checked.
        forks = ForkServer.start()
        try:
            manifest = await trio.to_thread.run_sync(
                _prepare, Path(config_path), rundir, ports, confserv_port, store, host, proxy
            )
        except BaseException:
            with trio.CancelScope(shield=True):
                await forks.aclose()
            raise
        if key is not None:
            write_secret(rundir.root / KEY_FILE, key.strip() + "\n")
        key = create_cluster_key(rundir.root)
        handle = cls(rundir, manifest, network=TcpNetwork(key=key), forks=forks)
        # What this host runs beyond the Configuration Server (started first, alone).
        local = [e for e in manifest.apps if not e.remote and e.app != CONFSERV_APP]
        try:
            confserv = manifest.entry(CONFSERV_APP)
            if confserv.remote:
                # Another host's: it must answer, and know our key, before anything starts.
                await handle._wait_remote_confserv(confserv, progress, ready_timeout)
                await handle._check_key(confserv)
                await handle._start_proxy(progress, ready_timeout)
            else:
                async with trio.open_nursery() as nursery:
                    # Nobody talks to the proxy before the Configuration Server is up.
                    if manifest.proxy:
                        nursery.start_soon(handle._start_proxy, progress, ready_timeout)
                    await handle._start_tier([confserv], progress, ready_timeout)
            for wave in start_waves(local):
                await handle._start_tier(wave, progress, ready_timeout)
        except BaseException:
            with trio.CancelScope(shield=True):
                await handle.down()
            raise
        handle._update(attrs.evolve(handle.manifest, state="up"))
        return handle

    @classmethod
    def attach(cls, run_dir: str | os.PathLike[str] | None = None) -> ClusterHandle:
        """The cluster described by ``run_dir``'s manifest (raises ClusterError if none)."""
        rundir = RunDir.at(run_dir)
        manifest = rundir.read_manifest()
        return cls(rundir, manifest, network=TcpNetwork(key=read_cluster_key(rundir.root)))

    # -- starting processes ------------------------------------------------------

    async def _start_proxy(self, progress: Progress | None, timeout: float) -> None:
        argv = ("cluster", "proxy", "--run-dir", str(self.run_dir.root))
        proc = await self._spawn(PROXY_APP, argv, env={}, append=False)
        _notify(progress, PROXY_APP, "starting")
        try:
            await self._wait_ready(
                PROXY_APP, LOOPBACK, self.manifest.proxy_control_port, proc, timeout
            )
        except ClusterError:
            _notify(progress, PROXY_APP, "failed")
            raise
        _notify(progress, PROXY_APP, "ready")

    async def _wait_remote_confserv(
        self, entry: AppEntry, progress: Progress | None, timeout: float
    ) -> None:
        """Wait until the Configuration Server of another host answers: this host's
        servers would only retry it, then exit, if it is not up first."""
        _notify(progress, entry.app, "starting")
        with trio.move_on_after(timeout):
            while True:
                try:
                    await self._request_at(entry.host, entry.public_port, "status")
                except _UNANSWERED:
                    await trio.sleep(READY_POLL_INTERVAL * 5)
                    continue
                _notify(progress, entry.app, "ready")
                return
        _notify(progress, entry.app, "failed")
        raise UnreachableError(
            f"the Configuration Server of host {entry.host_name} ({entry.host}:"
            f"{entry.public_port}) did not answer within {timeout:g}s; start that host"
            f" first: orsim cluster up CONFIG.yaml --host {entry.host_name}"
        )

    async def _check_key(self, confserv: AppEntry) -> None:
        """Make sure this host holds the cluster's key, asking the proxy of the
        Configuration Server's host (which answers ``check_key`` only to the key): with
        another, every server would refuse this host's applications.

        Raises:
            ClusterError: the key is not the cluster's.
        """
        assert confserv.host_name is not None  # _check_host: it lives on a host
        try:
            await self._remote_proxy(confserv.host_name, CheckKey())
        except RequestRefused as exc:
            if exc.code != "unauthorized":
                raise
            raise ClusterError(
                f"the cluster key in {self.run_dir.root / KEY_FILE} is not the one of the"
                f" cluster on host {confserv.host_name}: give this `up` that host's"
                f" (--key-file RUN_DIR/{KEY_FILE} of its run directory, or"
                f" ${CLUSTER_KEY_ENV})"
            ) from None

    async def _start_tier(
        self, entries: list[AppEntry], progress: Progress | None, timeout: float
    ) -> None:
        failures: list[str] = []
        async with trio.open_nursery() as nursery:
            for entry in entries:
                nursery.start_soon(
                    partial(self._start_one, settle=True),
                    entry,
                    progress,
                    timeout,
                    False,
                    failures,
                    nursery.cancel_scope,
                )
        if failures:
            raise ClusterError("\n".join(failures))

    async def _start_one(
        self,
        entry: AppEntry,
        progress: Progress | None,
        timeout: float,
        append: bool,
        failures: list[str],
        tier_scope: trio.CancelScope,
        settle: bool = False,
    ) -> None:
        """Spawn ``entry`` and wait until it is ready (``_wait_ready``; ``settle``: an ORS
        application's start-up claim too, as ``up`` wants)."""
        env = {"ORSIM_LISTEN_PORT": str(entry.private_port)} if entry.listen_env else {}
        try:
            proc = await self._spawn(
                entry.app, entry.argv, env=env, append=append, program=entry.program
            )
        except ClusterError as exc:
            _notify(progress, entry.app, "failed")
            failures.append(f"{entry.app}: {exc}")
            tier_scope.cancel()
            return
        _notify(progress, entry.app, "starting")
        try:
            await self._wait_ready(
                entry.app,
                entry.host,
                entry.private_port,
                proc,
                timeout,
                redis=entry.type == REDIS_TYPE,
                settle=settle,
            )
        except ClusterError as exc:
            _notify(progress, entry.app, "failed")
            failures.append(str(exc))
            tier_scope.cancel()
            return
        _notify(progress, entry.app, "ready")

    async def _spawn(
        self,
        app: str,
        argv: tuple[str, ...],
        *,
        env: dict[str, str],
        append: bool,
        program: str | None = None,
    ) -> Child:
        log_path, cwd = self.run_dir.log(app), self.run_dir.root
        key = key_of(self.network)
        if key:
            env = {**env, CLUSTER_KEY_ENV: key}
        proc: Child
        if program is not None:
            # Not orsim (a Redis): exec'd from PATH, in a working directory of its own.
            (cwd / REDIS_DIR / app).mkdir(parents=True, exist_ok=True)
            proc = await spawn_program(program, argv, log_path=log_path, cwd=cwd, append=append)
        elif self._forks is not None and not self._forks.closed:
            proc = await self._forks.spawn(argv, log_path=log_path, cwd=cwd, env=env, append=append)
        else:
            proc = await spawn(argv, log_path=log_path, cwd=cwd, env=env, append=append)
        self._procs[app] = proc
        self.run_dir.write_pid(app, proc.pid)
        self._update(attrs.evolve(self.manifest, pids={**self.manifest.pids, app: proc.pid}))
        return proc

    async def _wait_ready(
        self,
        app: str,
        host: str,
        port: int,
        proc: Child,
        timeout: float,
        *,
        redis: bool = False,
        settle: bool = False,
    ) -> Json:
        """Poll ``app``'s status until it is past ``starting`` (its answer). With
        ``settle``, an ORS application whose claim is under way (``claim_under_way``) is
        waited for until it settles, ``CLAIM_SETTLE`` at most: ``up`` starts a cluster with
        no fault yet, so its fence comes. A restart (``start``) takes the claim as it is:
        under a fault that cuts its T-Server, waiting would hold a scenario for the whole
        bound."""
        log = self.run_dir.log(app)
        claiming_since: float | None = None
        with trio.move_on_after(timeout):
            while True:
                code = proc.poll()
                if code is not None:
                    raise ClusterError(
                        f"{app} exited with code {code} during start-up; "
                        f"last lines of {log}:\n{log_tail(log)}"
                    )
                if redis:
                    if await ping_redis(host, port, STATUS_TIMEOUT):
                        return {"mode": "primary"}
                    await trio.sleep(READY_POLL_INTERVAL)
                    continue
                try:
                    answer = await self._request_at(host, port, "status", timeout=STATUS_TIMEOUT)
                except _UNANSWERED:
                    answer = None
                if isinstance(answer, dict) and answer.get("pid") not in (None, proc.pid):
                    # Another program answers at the port (it took it before the child
                    # bound it): not ready, and the child exits saying the port is taken.
                    answer = None
                if isinstance(answer, dict) and answer.get("mode") not in (None, "starting"):
                    if not (settle and claim_under_way(answer)):
                        return answer
                    # Taken for ready, a lone primary still showed `backup` to the status
                    # asked right after `up` (found by CI; tests/test_cluster_processes.py::
                    # test_up_returns_once_a_lone_primary_has_its_fence).
                    now = trio.current_time()
                    claiming_since = now if claiming_since is None else claiming_since
                    if now - claiming_since >= CLAIM_SETTLE:
                        return answer
                await trio.sleep(READY_POLL_INTERVAL)
        raise ClusterError(
            f"{app} was not ready within {timeout:g}s; last lines of {log}:\n{log_tail(log)}"
        )

    def _update(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self.run_dir.write_manifest(manifest)

    # -- talking to processes ----------------------------------------------------

    async def _request_at(
        self,
        host: str,
        port: int,
        method: str,
        params: dict[str, Json] | None = None,
        timeout: float = STATUS_TIMEOUT,
        client: str = LAUNCHER_APP,
    ) -> Json:
        """One request on a fresh connection (errors come out unwrapped); ``client``: the
        name this side gives in its Hello."""
        failure: BaseException | None = None
        result: Json = None
        with trio.fail_after(timeout):
            async with connected(
                self.network, host, port, app=client, app_type=LAUNCHER_TYPE
            ) as conn:
                try:
                    result = await conn.request(method, params or {})
                except OrsimError as exc:
                    failure = exc
        if failure is not None:
            raise failure
        return result

    async def request(
        self,
        app: str,
        method: str,
        params: dict[str, Json] | None = None,
        timeout: float = 10.0,
    ) -> Json:
        """Send ``method`` to ``app`` (on its private port) and return the answer.

        Raises:
            UnreachableError: the application does not answer within ``timeout``.
            RequestRefused: it answered with an error.
        """
        if app == PROXY_APP:
            host, port = LOOPBACK, self.manifest.proxy_control_port
        else:
            entry = self.manifest.entry(app)
            host, port = entry.host, entry.private_port
        try:
            return await self._request_at(host, port, method, params, timeout)
        except RequestRefused:
            raise
        except _UNANSWERED as exc:
            raise UnreachableError(f"{app} does not answer {method!r}: {exc}") from exc

    async def call(self, app: str, message: Call[A], timeout: float = 10.0) -> A:
        """``request`` with a typed message: ``message`` to ``app``, its typed answer.

        Raises:
            UnreachableError: the application does not answer within ``timeout``.
            RequestRefused: it answered with an error.
            RemoteProtocolError: its answer is malformed.
        """
        return message.answer(await self.request(app, message.METHOD, message.to_json(), timeout))

    def _tservers(self) -> list[AppEntry]:
        """The T-Servers, the configured primary of a redundant pair first."""
        found = [e for e in self.manifest.apps if e.type in TSERVER_TYPES]
        if not found:
            raise ClusterError("this cluster has no T-Server/SIP Server")
        return sorted(found, key=lambda e: e.primary is not None)

    async def _tserver(self) -> str:
        """The T-Server that acts: the one of a redundant pair that says it is primary
        (its twin holds the same ledger, but takes no load), else the first."""
        entries = self._tservers()
        if len(entries) > 1:
            for entry in entries:
                try:
                    answer = await self._request_at(
                        entry.host, entry.private_port, "status", timeout=STATUS_TIMEOUT
                    )
                except _UNANSWERED:
                    continue
                if isinstance(answer, dict) and answer.get("mode") == "primary":
                    return entry.app
        return entries[0].app

    # -- observing ----------------------------------------------------------------

    @property
    def children(self) -> dict[str, Child]:
        """The processes this handle started itself (app -> latest process)."""
        return dict(self._procs)

    def pids(self) -> dict[str, int]:
        """app -> pid of every process whose pid file is present (alive or not)."""
        return self.run_dir.read_pids()

    def _reap(self) -> None:
        for proc in self._procs.values():
            proc.poll()

    def alive(self, app: str) -> bool:
        self._reap()
        pid = self.pids().get(app)
        return pid is not None and pid_alive(pid)

    async def status(self) -> ClusterStatus:
        """The SPEC status object: ``{"cluster", "apps": [...], "calls": {...}}``."""
        self._reap()
        pids = self.pids()
        answers: dict[str, Answer | None] = {}
        ledger: LedgerCounts | None = None

        processes = {}
        for entry in self.manifest.apps:
            pid = pids.get(entry.app)
            state = process_state(pid) if pid is not None and pid_alive(pid) else None
            # Another host's process: only its answer over the wire says how it is.
            processes[entry.app] = REMOTE_PROCESS if entry.remote else process_label(state)

        async def ask(entry: AppEntry) -> None:
            if processes[entry.app] == "stopped":
                # A frozen process cannot answer: asking would only make every
                # status (and every wait_for poll) wait out the request timeout.
                answers[entry.app] = None
                return
            if entry.type == REDIS_TYPE:
                # Redis speaks RESP, not orsim's wire: a PING answered is a serving Redis.
                alive = await ping_redis(entry.host, entry.private_port, STATUS_TIMEOUT)
                answers[entry.app] = {"mode": "primary"} if alive else None
                return
            try:
                answer = await self._request_at(entry.host, entry.private_port, "status")
            except _UNANSWERED:
                answer = None
            answers[entry.app] = answer if isinstance(answer, dict) else None

        async def ask_ledger(entry: AppEntry) -> None:
            nonlocal ledger
            try:
                answer = await self._request_at(entry.host, entry.private_port, "ledger")
                ledger = LedgerReport.from_json(answer).counts
            except (*_UNANSWERED, RequestRefused):  # RequestRefused: a malformed ledger
                return

        tservers = [e for e in self.manifest.apps if e.type in TSERVER_TYPES]
        tservers.sort(key=lambda e: e.primary is not None)
        async with trio.open_nursery() as nursery:
            for entry in self.manifest.apps:
                nursery.start_soon(ask, entry)
            if len(tservers) == 1:
                nursery.start_soon(ask_ledger, tservers[0])
        if len(tservers) > 1:
            # A redundant pair: the ledger of the twin that says it is primary (the
            # backup's may be catching up, or stale once cut off).
            acting = [e for e in tservers if (answers.get(e.app) or {}).get("mode") == "primary"]
            await ask_ledger((acting or tservers)[0])
        return cluster_status(self.manifest, answers, pids, processes, ledger)

    async def wait_for(
        self, predicate: Callable[[ClusterStatus], bool], timeout: float
    ) -> ClusterStatus:
        """Poll ``status()`` until ``predicate`` holds; returns that status.

        Raises:
            ClusterError: it did not hold within ``timeout`` seconds.
        """
        return await poll_status(self.status, predicate, timeout, POLL_INTERVAL * 4)

    async def ledger(self, records: bool = False) -> LedgerReport:
        """The T-Server's call ledger."""
        return await self.call(await self._tserver(), Ledger(records))

    # -- faults ----------------------------------------------------------------------

    async def kill(self, app: str, signal: str = "KILL") -> None:
        """Send ``signal`` (KILL, TERM, STOP, CONT) to ``app``'s process.

        KILL and TERM wait until the process is gone (TERM up to the ``down`` grace).
        """
        signum = SIGNALS.get(signal.upper().removeprefix("SIG"))
        if signum is None:
            raise UsageError(f"unknown signal {signal!r} (use KILL, TERM, STOP or CONT)")
        if app != PROXY_APP:
            self._local_entry(app, f"kill {app}")
        self._reap()
        pid = self.pids().get(app)
        if pid is None or not send_signal(pid, signum):
            raise ClusterError(f"{app} is not running")
        if signum in (signals.SIGKILL, signals.SIGTERM):
            gone = await wait_exit(pid, DOWN_GRACE)
            self._reap()
            if gone:
                self.run_dir.remove_pid(app)

    async def stop(
        self,
        app: str,
        timeout: float = STOP_TIMEOUT,
        on_wait: Callable[[list[str]], None] | None = None,
    ) -> None:
        """Graceful shutdown of ``app`` (SIGTERM), waited for until its process is gone.

        A primary goes ``suspending``: it creates no new session, lets its sessions finish
        or hands them to its backup, then exits 0. One Node of a cluster suspends at a
        time: while another application is ``suspending`` this waits (``on_wait`` is told
        who, once).

        Raises:
            ClusterError: ``app`` is not running, or did not stop within ``timeout``.
        """
        self._local_entry(app, f"stop {app}")
        told = False
        with trio.move_on_after(timeout) as scope:
            while True:
                status = await self.status()
                busy = [a["app"] for a in status["apps"]
                        if a["mode"] == "suspending" and a["app"] != app]  # fmt: skip
                if not busy:
                    break
                if on_wait is not None and not told:
                    on_wait(busy)
                    told = True
                await trio.sleep(READY_POLL_INTERVAL)
        if scope.cancelled_caught:
            raise ClusterError(f"{app}: another Node is still suspending after {timeout:g}s")
        self._reap()
        pid = self.pids().get(app)
        if pid is None or not send_signal(pid, signals.SIGTERM):
            raise ClusterError(f"{app} is not running")
        gone = await wait_exit(pid, timeout)
        self._reap()
        if not gone:
            raise ClusterError(
                f"{app} did not stop within {timeout:g}s (still suspending?); "
                f"`orsim cluster kill {app}` stops it at once"
            )
        self.run_dir.remove_pid(app)

    async def start(self, app: str, timeout: float = READY_TIMEOUT) -> None:
        """Start ``app`` again (after a kill) and wait until it is ready.

        Raises:
            ClusterError: it is still running, or it died or was not ready in time.
        """
        entry = self._local_entry(app, f"start {app}")
        self._reap()
        pid = self.pids().get(app)
        if pid is not None and pid_alive(pid):
            if process_label(process_state(pid)) == "stopped":
                raise ClusterError(f"{app} is stopped, not dead (resume it with --signal CONT)")
            raise ClusterError(f"{app} is already running (pid {pid})")
        failures: list[str] = []
        with trio.CancelScope() as scope:
            await self._start_one(entry, None, timeout, True, failures, scope)
        if failures:
            raise ClusterError(failures[0])

    async def switchover(self, node: str) -> SwitchedOver:
        """Hand the Node's primary role over to its backup; ``node``: an app or node id."""
        primary = node_primary(self.manifest, await self.status(), node)
        return await self.call(primary, Switchover(), timeout=30.0)

    async def partition(self, a: str, b: str, heal: bool = False) -> None:
        """Cut (or, with ``heal``, restore) every link between ``a`` and ``b``: each an
        application or a topology host (every application placed on it)."""
        await self._tell_proxies(_cut(link_sides(self.manifest, a, b), heal))

    async def isolate(self, host: str, heal: bool = False) -> None:
        """Cut (or, with ``heal``, restore) every link between an application on topology
        host ``host`` and one on any other host."""
        await self._tell_proxies(_cut(isolate_sides(self.manifest, host), heal))

    async def delay(self, a: str, b: str, ms: float) -> None:
        """Delay every chunk between ``a`` and ``b`` (applications or hosts) by ``ms``
        milliseconds (0: no delay)."""
        sides = link_sides(self.manifest, a, b)
        await self._tell_proxies(Delay(sides.a, sides.b, ms))

    async def proxy_status(self, host: str | None = None) -> dict[str, Json]:
        """The ``status`` of this run directory's fault proxy, or of topology host
        ``host``'s (another machine's, reached through its public ports)."""
        self._need_proxy("proxy status")
        if host is None or host == self.manifest.host:
            return (await self.call(PROXY_APP, Status())).fields
        return (await self._remote_proxy(host, Status())).fields

    async def _tell_proxies(self, fault: Call[Record]) -> None:
        """Send a fault to every fault proxy of the cluster: this run directory's, and
        with ``up --host`` every other host's too. A link passes through the proxy of the
        host its server side is on, so each proxy cuts the links it carries.

        Raises:
            UnreachableError: a proxy did not answer (the others have applied it).
            ClusterError: the cluster runs without a fault proxy (``up --no-proxy``).
        """
        self._need_proxy(fault.METHOD)
        if self.manifest.host is None:
            await self.call(PROXY_APP, fault)
            return
        failures: list[str] = []
        applied: list[str] = []

        async def tell(host: str) -> None:
            try:
                if host == self.manifest.host:
                    await self.call(PROXY_APP, fault)
                else:
                    await self._remote_proxy(host, fault)
            except (UnreachableError, RequestRefused) as exc:
                failures.append(f"host {host}: {exc}")
            else:
                applied.append(host)

        async with trio.open_nursery() as nursery:
            for host in proxied_hosts(self.manifest):
                nursery.start_soon(tell, host)
        if failures:
            done = ", ".join(sorted(applied)) or "none"
            raise UnreachableError(
                f"{fault.METHOD} reached the fault proxies of hosts {done} only; "
                + "; ".join(sorted(failures))
            )

    def _need_proxy(self, what: str) -> None:
        """Raise ClusterError if this cluster runs without its fault proxy."""
        if not self.manifest.proxy:
            raise ClusterError(
                f"{what}: the cluster in {self.run_dir.root} runs without the fault proxy"
                " (up --no-proxy), so its links cannot be cut or delayed; start it again"
                " without --no-proxy to inject faults"
            )

    async def _remote_proxy(self, host: str, message: Call[A]) -> A:
        """A request to the fault proxy of another host, at the public port of one of its
        applications (the proxy puts ``PROXY_CONTROL_CLIENT`` through to its control)."""
        method = message.METHOD
        for entry in self.manifest.apps:
            if entry.host_name == host and entry.app in self._proxied_apps():
                try:
                    answer = await self._request_at(
                        entry.host,
                        entry.public_port,
                        method,
                        message.to_json(),
                        10.0,
                        PROXY_CONTROL_CLIENT,
                    )
                    return message.answer(answer)
                except RequestRefused:
                    raise
                except _UNANSWERED as exc:
                    raise UnreachableError(
                        f"the fault proxy at {entry.host}:{entry.public_port} does not answer"
                        f" {method!r}: {exc}"
                    ) from exc
        raise ClusterError(f"no host {host!r} with applications behind a fault proxy")

    def _proxied_apps(self) -> set[str]:
        return {e.app for e in self.manifest.apps if e.type not in (STORE_TYPE, REDIS_TYPE)}

    def _local_entry(self, app: str, command: str) -> AppEntry:
        """``app``'s entry, if its process is this run directory's to signal or start.

        Raises:
            ClusterError: no such application, or it runs on another host.
        """
        entry = self.manifest.entry(app)
        if entry.remote:
            raise ClusterError(
                f"{app} runs on host {entry.host_name} ({entry.host}), not on this run"
                f" directory's host {self.manifest.host}: run `orsim cluster {command}` on"
                f" host {entry.host_name}, in the run directory of its `up --host"
                f" {entry.host_name}`"
            )
        return entry

    # -- load and configuration ------------------------------------------------------

    async def load(
        self, rate: float, duration: float | None = None, *, overload: bool = False
    ) -> None:
        """Have the T-Server create ``rate`` calls per second (for ``duration`` seconds).
        ``overload``: above ``MAX_LOAD_RATE`` too (a benchmark looking for saturation
        overloads on purpose; the T-Server's own bound still holds).

        Raises:
            UsageError: ``rate`` is not in (0, ``MAX_LOAD_RATE``] (and not ``overload``).
        """
        if not overload:
            check_load_rate(rate)
        await self.call(await self._tserver(), Generate(rate, duration))

    async def stop_load(self) -> None:
        await self.call(await self._tserver(), StopGenerator())

    async def set_option(self, object: str, section: str, key: str, value: str) -> None:
        """A live option change through the Configuration Server."""
        await self.call(CONFSERV_APP, SetOption(object, section, key, value))

    # -- stopping --------------------------------------------------------------------

    async def down(self, grace: float = DOWN_GRACE) -> None:
        """Stop every process: SIGTERM, then SIGKILL after ``grace`` seconds. Idempotent."""
        self._reap()
        await stop_processes(self.run_dir, self.manifest.pids, grace)
        for proc in self._procs.values():
            with trio.move_on_after(grace):
                await proc.wait()
        await self.release()
        self._update(attrs.evolve(self.manifest, state="down", pids={}))

    async def release(self) -> None:
        """Let go of the fork server (the processes keep running); ``start`` then execs."""
        if self._forks is not None:
            await self._forks.aclose()


async def stop_processes(
    run_dir: RunDir, known: dict[str, int] | None = None, grace: float = DOWN_GRACE
) -> list[str]:
    """Stop every process of a run directory (pid files and ``known``); returns their apps.

    SIGTERM (and SIGCONT, as a stopped process cannot act on SIGTERM), then SIGKILL for
    whatever is still alive after ``grace`` seconds. Pid files are removed.
    """
    pids = {**(known or {}), **run_dir.read_pids()}
    live = {app: pid for app, pid in pids.items() if pid_alive(pid)}
    for pid in live.values():
        send_signal(pid, signals.SIGTERM)
        send_signal(pid, signals.SIGCONT)

    async def stop(pid: int) -> None:
        if not await wait_exit(pid, grace):
            send_signal(pid, signals.SIGKILL)
            await wait_exit(pid, grace)

    async with trio.open_nursery() as nursery:
        for pid in live.values():
            nursery.start_soon(stop, pid)
    for app in pids:
        run_dir.remove_pid(app)
    return sorted(live)


def _prepare(
    config_path: Path,
    rundir: RunDir,
    ports: str,
    confserv_port: int | None,
    store: str | None,
    host: str | None = None,
    proxy: bool = True,
) -> Manifest:
    """The blocking part of ``up``: validate, choose ports, write the run directory.

    With ``host`` (one machine of several), only that topology host's applications are
    planned to run here (the others are ``remote`` entries), the ports are the
    topology's, and the Nodes' store must be one every host can reach. Without
    ``proxy`` every application listens on its public port (no proxy in between).
    """
    config = config_path.absolute()
    db = load_database(config)
    if host is not None:
        _check_host(db, host, store)
    running = {app: pid for app, pid in rundir.read_pids().items() if pid_alive(pid)}
    if running:
        raise ClusterError(
            f"a cluster is already running in {rundir.root} "
            f"({', '.join(sorted(running))}); stop it with `orsim cluster down"
            f" --run-dir {rundir.root}`"
        )
    rundir.create()
    for stale in rundir.read_pids():
        rundir.remove_pid(stale)

    raw: object = None  # the database as served, when that is not the file itself
    if store is not None:
        parse_store_url(store, rundir.root)  # a bad URL is one line naming the option
        raw = set_store(safe_load(config.read_text()), store)
        write_atomic(rundir.served_config, safe_dump(raw))
        db = load_database(rundir.served_config)
    apps = launched_apps(db)
    names = [a.name for a in apps]
    stores = store_names(db, len(sqlite_stores(db)))
    redis = _redis_to_run(db, auto=ports == "auto") if host is None else _host_redis(db, host)
    free = _free_ports(len(names) * 2 + len(stores) + len(redis) + 3)
    if ports == "auto":
        public = {name: free.pop() for name in names}
        confserv_public = free.pop()
        redis = [attrs.evolve(server, port=free.pop()) for server in redis]
    else:
        public = {a.name: a.port for a in apps}
        confserv_public = confserv_port if confserv_port is not None else DEFAULT_CONFSERV_PORT
        confserv_host, confserv_address = confserv_place(db)
        wanted = {a.name: (a.address, a.port) for a in apps if host in (None, a.host)}
        if host in (None, confserv_host):
            wanted[CONFSERV_APP] = (confserv_address, confserv_public)
        _check_ports_free(wanted)
    moved = {r.url: r.served_url for r in redis if r.served_url != r.url}
    served = config
    if raw is not None or ports == "auto" or moved:
        raw = raw if raw is not None else safe_load(config.read_text())
        if ports == "auto":
            raw = rewrite_ports(raw, public)
        raw = rewrite_store_urls(raw, moved)
        write_atomic(rundir.served_config, safe_dump(raw))
        served = rundir.served_config
    private = {name: free.pop() for name in [*names, CONFSERV_APP, *stores]}
    if not proxy:
        private.update(public)
        private[CONFSERV_APP] = confserv_public
    entries = plan_apps(
        db,
        served_config=str(served),
        state_dir=str(rundir.confserv_state),
        confserv_port=confserv_public,
        public=public,
        private=private,
        redis=redis,
        local_host=host,
    )
    manifest = Manifest(
        cluster=cluster_name(entries),
        config=str(config),
        served_config=str(served),
        run_dir=str(rundir.root),
        confserv_host=confserv_place(db)[1],
        confserv_port=confserv_public,
        proxy_control_port=free.pop(),
        apps=entries,
        host=host,
        proxy=proxy,
    )
    rundir.write_manifest(manifest)
    if proxy:
        write_atomic(rundir.proxy_config, json.dumps(_proxy_config(manifest), indent=2) + "\n")
    return manifest


def _check_host(db: ConfigDatabase, host: str, store: str | None) -> None:
    """``up --host``: ``host`` must be a topology host, and Nodes on several hosts must
    share a store they can all reach (Redis; a SQLite file is one machine's).

    Raises:
        ConfigError: either is not so.
    """
    if host not in db.hosts:
        known = ", ".join(sorted(db.hosts)) or "none"
        raise ConfigError(f"{db.source}: no host {host!r} in the topology (hosts: {known})")
    if confserv_place(db)[0] is None:
        raise ConfigError(
            f"{db.source}: no T-Server: with --host the Configuration Server lives on the"
            " T-Server's host, and this topology has none"
        )
    hosts = node_hosts(db)
    if sqlite_stores(db) and len(hosts) > 1 and not (store or "").startswith("redis:"):
        raise ConfigError(
            f"{db.source}: persistence/store: the Nodes sit on hosts {', '.join(hosts)}, and a"
            " SQLite file belongs to one machine; with --host give them a Redis store every"
            " host reaches (persistence/store redis://HOST:PORT/DB, or --store)"
        )


def _host_redis(db: ConfigDatabase, host: str) -> list[RedisServer]:
    """``up --host``: the Redis servers of the topology's stores that sit on a topology
    host (the URL's address is that host's): ``host``'s own to start, unless one answers
    there already, and the other hosts' to list. A Redis on no host is used as it is.

    Raises:
        UnreachableError: one must be started and ``redis-server`` is not on PATH.
    """
    owners: dict[str, str] = {}
    for item in sorted(db.hosts.values(), key=lambda h: h.name):
        owners.setdefault(item.address, item.name)
    servers: list[RedisServer] = []
    # Named as a whole-topology ``up`` names them (``managed_redis``), on every host alike.
    taken = {*db.applications, CONFSERV_APP, *store_names(db, len(sqlite_stores(db)))}
    n = 1
    for url, location in redis_stores(db):
        owner = owners.get(location.host)
        if owner is None:
            continue
        name = REDIS_APP if n == 1 else f"{REDIS_APP}_{n}"
        while name in taken:
            n += 1
            name = f"{REDIS_APP}_{n}"
        n += 1
        server = RedisServer(name, url, location.host, location.port, location.password)
        if owner == host:
            if probe_redis(server.bind, server.port):
                continue  # a Redis answers there already: used as it is
            if shutil.which(REDIS_PROGRAM) is None:
                raise missing_program_error(url)
        servers.append(server)
    return servers


def _redis_to_run(db: ConfigDatabase, *, auto: bool) -> list[RedisServer]:
    """The local Redis servers ``up`` must start: those where no Redis answers yet.

    Raises:
        ClusterError: with ports as given, something that is not Redis holds the port.
        UnreachableError: one must be started and ``redis-server`` is not on PATH.
    """
    servers = []
    for server in redis_servers(db):
        found = probe_redis(server.bind, server.port)
        if found:
            continue  # a Redis answers there already: used as it is
        if found is False and not auto:
            raise ClusterError(
                f"port {server.port} of the store {server.url} is taken by something that "
                "is not Redis; stop it, or use --ports auto"
            )
        servers.append(server)
    if servers and shutil.which(REDIS_PROGRAM) is None:
        raise missing_program_error(servers[0].url)
    return servers


def claim_under_way(status: Mapping[str, object]) -> bool:
    """Whether an ORS application's ``status`` shows its claim of the Node under way: it
    asked the store for the next epoch (role ``claiming``), or won it and waits for the
    T-Server to confirm the fence (role ``primary``, mode still ``backup``)."""
    role = status.get("role")
    return role == "claiming" or (role == "primary" and status.get("mode") == "backup")


def _notify(progress: Progress | None, app: str, state: str) -> None:
    if progress is not None:
        progress(app, state)


#: Tries of ``up --ports auto`` when a port it picked is taken before it is bound.
AUTO_PORT_ATTEMPTS = 3


def _port_taken(exc: BaseException) -> bool:
    """Whether a start-up failed because a port was in use (a process said so), and for
    nothing else: every failure of a group must be that one."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_port_taken(e) for e in exc.exceptions)
    return isinstance(exc, ClusterError) and "already in use" in str(exc)


def _free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports free right now (all held open while picking)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((LOOPBACK, 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _check_ports_free(ports: dict[str, tuple[str, int]]) -> None:
    """Each app's (address, port) can be bound now (else one ClusterError naming all)."""
    taken = []
    for app, (address, port) in sorted(ports.items(), key=lambda item: item[1][1]):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((address, port))
            except OSError:
                taken.append(f"{port} ({app})")
    if taken:
        raise ClusterError(
            f"port{'s' if len(taken) > 1 else ''} {', '.join(taken)} already in use; "
            "stop what holds them or use --ports auto"
        )


def _cut(sides: Sides, heal: bool) -> Partition | Heal:
    """A partition of ``sides``, or (``heal``) its end."""
    return Heal(sides.a, sides.b) if heal else Partition(sides.a, sides.b)


def _proxy_routes(manifest: Manifest) -> list[Route]:
    """What this run directory's fault proxy forwards."""
    return [
        Route(e.app, e.host, e.public_port, e.host, e.private_port)
        for e in manifest.apps
        # Nodes reach the stores directly; another host's apps have their own proxy.
        if e.type not in (STORE_TYPE, REDIS_TYPE) and not e.remote
    ]


def _proxy_config(manifest: Manifest) -> dict[str, object]:
    return {
        "control_host": LOOPBACK,
        "control_port": manifest.proxy_control_port,
        "routes": [attrs.asdict(route) for route in _proxy_routes(manifest)],
    }


def read_proxy_config(path: Path) -> tuple[str, int, list[Route]]:
    """(control host, control port, routes) from a run directory's ``proxy.json``."""
    data = json.loads(path.read_text())
    return (
        data["control_host"],
        int(data["control_port"]),
        [Route(**route) for route in data["routes"]],
    )
