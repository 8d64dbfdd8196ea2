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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import trio
import yaml

from orsim.cluster._hosts import link_sides
from orsim.cluster._plan import (
    CONFSERV_APP,
    DEFAULT_CONFSERV_PORT,
    LOOPBACK,
    STORE_TYPE,
    TIER_CONFSERV,
    cluster_name,
    launched_apps,
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
from orsim.cluster._proxy import PROXY_APP, Route
from orsim.cluster._redis import (
    REDIS_DIR,
    REDIS_PROGRAM,
    REDIS_TYPE,
    RedisServer,
    missing_program_error,
    ping_redis,
    probe_redis,
    rewrite_store_urls,
    set_store,
)
from orsim.cluster._rundir import AppEntry, Manifest, RunDir, write_atomic
from orsim.cluster._status import cluster_status, node_primary, process_label
from orsim.config import TSERVER_TYPES, ConfigDatabase, load_database
from orsim.errors import ClusterError, OrsimError, RequestRefused, UnreachableError, UsageError
from orsim.store import parse_store_url
from orsim.wire import (
    CLUSTER_KEY_ENV,
    Json,
    Network,
    TcpNetwork,
    connected,
    create_cluster_key,
    read_cluster_key,
)

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

        Raises:
            ConfigError: the database (or ``store``) is broken (nothing is started).
            UnreachableError: a local Redis store must be started and ``redis-server`` is
                not on PATH.
            ClusterError: a cluster already runs there, a port is taken, or a process died
                or did not get ready (everything started is stopped again).
        """
        if ports not in ("given", "auto"):
            raise UsageError(f"--ports must be 'given' or 'auto', not {ports!r}")
        rundir = RunDir.at(run_dir)
        # The fork server imports orsim on another core while the database is checked.
        forks = ForkServer.start()
        try:
            manifest = await trio.to_thread.run_sync(
                _prepare, Path(config_path), rundir, ports, confserv_port, store
            )
        except BaseException:
            with trio.CancelScope(shield=True):
                await forks.aclose()
            raise
        key = create_cluster_key(rundir.root)
        handle = cls(rundir, manifest, network=TcpNetwork(key=key), forks=forks)
        try:
            async with trio.open_nursery() as nursery:
                # Nobody talks to the proxy before the Configuration Server is up.
                nursery.start_soon(handle._start_proxy, progress, ready_timeout)
                await handle._start_tier(
                    [e for e in manifest.apps if e.tier == TIER_CONFSERV], progress, ready_timeout
                )
            for wave in start_waves(manifest.apps)[1:]:
                await handle._start_tier(wave, progress, ready_timeout)
        except BaseException:
            with trio.CancelScope(shield=True):
                await handle.down()
            raise
        handle._update(state="up")
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

    async def _start_tier(
        self, entries: list[AppEntry], progress: Progress | None, timeout: float
    ) -> None:
        failures: list[str] = []
        async with trio.open_nursery() as nursery:
            for entry in entries:
                nursery.start_soon(
                    self._start_one,
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
    ) -> None:
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
        key = getattr(self.network, "key", "")
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
        self._update(pids={**self.manifest.pids, app: proc.pid})
        return proc

    async def _wait_ready(
        self, app: str, host: str, port: int, proc: Child, timeout: float, *, redis: bool = False
    ) -> Json:
        log = self.run_dir.log(app)
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
                if isinstance(answer, dict) and answer.get("mode") not in (None, "starting"):
                    return answer
                await trio.sleep(READY_POLL_INTERVAL)
        raise ClusterError(
            f"{app} was not ready within {timeout:g}s; last lines of {log}:\n{log_tail(log)}"
        )

    def _update(self, **changes: Any) -> None:
        self.manifest = attrs.evolve(self.manifest, **changes)
        self.run_dir.write_manifest(self.manifest)

    # -- talking to processes ----------------------------------------------------

    async def _request_at(
        self,
        host: str,
        port: int,
        method: str,
        params: dict[str, Json] | None = None,
        timeout: float = STATUS_TIMEOUT,
    ) -> Json:
        """One request on a fresh connection (errors come out unwrapped)."""
        failure: BaseException | None = None
        result: Json = None
        with trio.fail_after(timeout):
            async with connected(
                self.network, host, port, app=LAUNCHER_APP, app_type=LAUNCHER_TYPE
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

    def _tserver(self) -> str:
        for entry in self.manifest.apps:
            if entry.type in TSERVER_TYPES:
                return entry.app
        raise ClusterError("this cluster has no T-Server/SIP Server")

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

    async def status(self) -> dict[str, Any]:
        """The SPEC status object: ``{"cluster", "apps": [...], "calls": {...}}``."""
        self._reap()
        pids = self.pids()
        answers: dict[str, dict[str, Any] | None] = {}
        ledger: dict[str, Any] | None = None

        processes = {}
        for entry in self.manifest.apps:
            pid = pids.get(entry.app)
            state = process_state(pid) if pid is not None and pid_alive(pid) else None
            processes[entry.app] = process_label(state)

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

        async def ask_ledger() -> None:
            nonlocal ledger
            try:
                entry = self.manifest.entry(self._tserver())
                answer = await self._request_at(entry.host, entry.private_port, "ledger")
            except _UNANSWERED:
                return
            ledger = answer if isinstance(answer, dict) else None

        async with trio.open_nursery() as nursery:
            for entry in self.manifest.apps:
                nursery.start_soon(ask, entry)
            nursery.start_soon(ask_ledger)
        return cluster_status(self.manifest, answers, pids, processes, ledger)

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float
    ) -> dict[str, Any]:
        """Poll ``status()`` until ``predicate`` holds; returns that status.

        Raises:
            ClusterError: it did not hold within ``timeout`` seconds.
        """
        last: dict[str, Any] = {}
        with trio.move_on_after(timeout):
            while True:
                last = await self.status()
                if predicate(last):
                    return last
                await trio.sleep(POLL_INTERVAL * 4)
        modes = ", ".join(f"{a['app']}={a['mode']}" for a in last.get("apps", []))
        raise ClusterError(f"condition not met within {timeout:g}s (last: {modes})")

    async def ledger(self, records: bool = False) -> dict[str, Any]:
        """The T-Server's call ledger."""
        answer = await self.request(self._tserver(), "ledger", {"records": records})
        return answer if isinstance(answer, dict) else {}

    # -- faults ----------------------------------------------------------------------

    async def kill(self, app: str, signal: str = "KILL") -> None:
        """Send ``signal`` (KILL, TERM, STOP, CONT) to ``app``'s process.

        KILL and TERM wait until the process is gone (TERM up to the ``down`` grace).
        """
        signum = SIGNALS.get(signal.upper().removeprefix("SIG"))
        if signum is None:
            raise UsageError(f"unknown signal {signal!r} (use KILL, TERM, STOP or CONT)")
        if app != PROXY_APP:
            self.manifest.entry(app)
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
        self.manifest.entry(app)
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
        entry = self.manifest.entry(app)
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

    async def switchover(self, node: str) -> dict[str, Any]:
        """Hand the Node's primary role over to its backup; ``node``: an app or node id."""
        primary = node_primary(self.manifest, await self.status(), node)
        answer = await self.request(primary, "switchover", {}, timeout=30.0)
        return answer if isinstance(answer, dict) else {"result": answer}

    async def partition(self, a: str, b: str, heal: bool = False) -> None:
        """Cut (or, with ``heal``, restore) every link between ``a`` and ``b``: each an
        application or a topology host (every application placed on it)."""
        ends = link_sides(self.manifest, a, b)
        await self.request(PROXY_APP, "heal" if heal else "partition", ends)

    async def delay(self, a: str, b: str, ms: float) -> None:
        """Delay every chunk between ``a`` and ``b`` (applications or hosts) by ``ms``
        milliseconds (0: no delay)."""
        await self.request(PROXY_APP, "delay", {**link_sides(self.manifest, a, b), "ms": ms})

    async def proxy_status(self) -> dict[str, Any]:
        answer = await self.request(PROXY_APP, "status")
        return answer if isinstance(answer, dict) else {}

    # -- load and configuration ------------------------------------------------------

    async def load(self, rate: float, duration: float | None = None) -> None:
        """Have the T-Server create ``rate`` calls per second (for ``duration`` seconds).

        Raises:
            UsageError: ``rate`` is not in (0, ``MAX_LOAD_RATE``].
        """
        check_load_rate(rate)
        await self.request(self._tserver(), "generate", {"rate": rate, "duration": duration})

    async def stop_load(self) -> None:
        await self.request(self._tserver(), "stop_generator", {})

    async def set_option(self, object: str, section: str, key: str, value: str) -> None:
        """A live option change through the Configuration Server."""
        await self.request(
            CONFSERV_APP,
            "set_option",
            {"object": object, "section": section, "key": key, "value": value},
        )

    # -- stopping --------------------------------------------------------------------

    async def down(self, grace: float = DOWN_GRACE) -> None:
        """Stop every process: SIGTERM, then SIGKILL after ``grace`` seconds. Idempotent."""
        self._reap()
        await stop_processes(self.run_dir, self.manifest.pids, grace)
        for proc in self._procs.values():
            with trio.move_on_after(grace):
                await proc.wait()
        await self.release()
        self._update(state="down", pids={})

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
    config_path: Path, rundir: RunDir, ports: str, confserv_port: int | None, store: str | None
) -> Manifest:
    """The blocking part of ``up``: validate, choose ports, write the run directory."""
    config = config_path.absolute()
    db = load_database(config)
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

    raw: Any = None  # the database as served, when that is not the file itself
    if store is not None:
        parse_store_url(store, rundir.root)  # a bad URL is one line naming the option
        raw = set_store(yaml.safe_load(config.read_text()), store)
        write_atomic(rundir.served_config, yaml.safe_dump(raw, sort_keys=False))
        db = load_database(rundir.served_config)
    apps = launched_apps(db)
    names = [a.name for a in apps]
    stores = store_names(db, len(sqlite_stores(db)))
    redis = _redis_to_run(db, auto=ports == "auto")
    free = _free_ports(len(names) * 2 + len(stores) + len(redis) + 3)
    if ports == "auto":
        public = {name: free.pop() for name in names}
        confserv_public = free.pop()
        redis = [attrs.evolve(server, port=free.pop()) for server in redis]
    else:
        public = {a.name: a.port for a in apps}
        confserv_public = confserv_port if confserv_port is not None else DEFAULT_CONFSERV_PORT
        _check_ports_free({**public, CONFSERV_APP: confserv_public})
    moved = {r.url: r.served_url for r in redis if r.served_url != r.url}
    served = config
    if raw is not None or ports == "auto" or moved:
        raw = raw if raw is not None else yaml.safe_load(config.read_text())
        if ports == "auto":
            raw = rewrite_ports(raw, public)
        raw = rewrite_store_urls(raw, moved)
        write_atomic(rundir.served_config, yaml.safe_dump(raw, sort_keys=False))
        served = rundir.served_config
    private = {name: free.pop() for name in [*names, CONFSERV_APP, *stores]}
    entries = plan_apps(
        db,
        served_config=str(served),
        state_dir=str(rundir.confserv_state),
        confserv_port=confserv_public,
        public=public,
        private=private,
        redis=redis,
    )
    manifest = Manifest(
        cluster=cluster_name(entries),
        config=str(config),
        served_config=str(served),
        run_dir=str(rundir.root),
        confserv_host=LOOPBACK,
        confserv_port=confserv_public,
        proxy_control_port=free.pop(),
        apps=entries,
    )
    rundir.write_manifest(manifest)
    write_atomic(rundir.proxy_config, json.dumps(_proxy_config(manifest), indent=2) + "\n")
    return manifest


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


def _notify(progress: Progress | None, app: str, state: str) -> None:
    if progress is not None:
        progress(app, state)


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


def _check_ports_free(ports: dict[str, int]) -> None:
    taken = []
    for app, port in sorted(ports.items(), key=lambda item: item[1]):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((LOOPBACK, port))
            except OSError:
                taken.append(f"{port} ({app})")
    if taken:
        raise ClusterError(
            f"port{'s' if len(taken) > 1 else ''} {', '.join(taken)} already in use; "
            "stop what holds them or use --ports auto"
        )


def _proxy_config(manifest: Manifest) -> dict[str, Any]:
    return {
        "control_host": LOOPBACK,
        "control_port": manifest.proxy_control_port,
        "routes": [
            attrs.asdict(Route(e.app, e.host, e.public_port, e.host, e.private_port))
            for e in manifest.apps
            if e.type not in (STORE_TYPE, REDIS_TYPE)  # nodes reach them directly
        ],
    }


def read_proxy_config(path: Path) -> tuple[str, int, list[Route]]:
    """(control host, control port, routes) from a run directory's ``proxy.json``."""
    data = json.loads(path.read_text())
    return (
        data["control_host"],
        int(data["control_port"]),
        [Route(**route) for route in data["routes"]],
    )
