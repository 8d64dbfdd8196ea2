"""`orsim cluster ...`: a thin command line over ``ClusterHandle``.

rich (and ``_render``, its views) is imported by the commands that print with it, not
here: the fork server preloads this module for ``cluster proxy``, and every process it
forks would otherwise carry rich without ever printing a table (~30 ms of the server's
start-up, on the launch's critical path).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from orsim.cluster._handle import (
    ClusterHandle,
    check_load_rate,
    read_proxy_config,
    stop_processes,
)
from orsim.cluster._handle import Progress as ProgressCallback
from orsim.cluster._procs import Child
from orsim.cluster._proxy import serve_proxy
from orsim.cluster._rundir import DEFAULT_RUN_DIR, RunDir
from orsim.cluster._status import app_mode
from orsim.errors import EXIT_OK, ClusterError, UsageError
from orsim.logs import configure_logging
from orsim.runtime import run_cancellable
from orsim.wire import CLUSTER_KEY_ENV, KEY_FILE, TcpNetwork

if TYPE_CHECKING:
    from rich.console import Console

_PUBLIC = (
    "up",
    "status",
    "kill",
    "stop",
    "start",
    "switchover",
    "partition",
    "isolate",
    "delay",
    "load",
    "logs",
    "down",
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "cluster",
        help="launch and drive a local cluster (up, status, kill, start, down...)",
        description="Launch a whole cluster as local processes, inspect it and inject faults.",
    )
    sub = parser.add_subparsers(dest="cluster_command", metavar="{" + ",".join(_PUBLIC) + "}")
    parser.set_defaults(func=lambda _args: _usage(parser))

    def command(
        name: str, func: Callable[[argparse.Namespace], int], help: str
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help, description=help)
        p.add_argument(
            "--run-dir",
            default=None,
            metavar="DIR",
            help=f"the cluster's run directory (default $ORSIM_RUN_DIR or {DEFAULT_RUN_DIR})",
        )
        p.set_defaults(func=func, command_name=f"cluster {name}")
        return p

    p = command("up", cmd_up, "start every process of a configuration database")
    p.add_argument("config", metavar="CONFIG.yaml")
    p.add_argument("--detach", action="store_true", help="return once the cluster is up")
    p.add_argument(
        "--ports",
        choices=("given", "auto"),
        default="given",
        help="use the database's ports (given) or pick free ones (auto)",
    )
    p.add_argument(
        "--confserv-port",
        type=int,
        default=None,
        metavar="PORT",
        help="the Configuration Server's port (default 2020; free with --ports auto)",
    )
    p.add_argument(
        "--store",
        default=None,
        metavar="URL",
        help="use this persistence/store for every Node (sqlite:///PATH or redis://HOST:PORT/DB)",
    )
    p.add_argument(
        "--host",
        default=None,
        metavar="NAME",
        help="start only the applications placed on topology host NAME (one machine of"
        " several; the Configuration Server lives with the T-Server); start the"
        " Configuration Server's host first",
    )
    p.add_argument(
        "--key-file",
        default=None,
        metavar="FILE",
        help=f"the cluster key to use: another host's RUN_DIR/{KEY_FILE} (default"
        f" ${CLUSTER_KEY_ENV}, else this run directory's, made if it has none)",
    )

    p.add_argument(
        "--no-proxy",
        action="store_true",
        help="run without the fault proxy: each application listens on its own public"
        " port and links are direct (to measure what the proxy costs); partition,"
        " isolate and delay are then refused",
    )

    p = command("status", cmd_status, "show every application's mode and the call totals")
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.add_argument("--watch", action="store_true", help="refresh the table until Ctrl-C")

    p = command("kill", cmd_kill, "send a signal to an application's process")
    p.add_argument("app", metavar="APP")
    p.add_argument(
        "--signal", default="KILL", type=str.upper, choices=("KILL", "TERM", "STOP", "CONT")
    )

    p = command(
        "stop",
        cmd_stop,
        "graceful shutdown: a primary suspends, finishes or hands over its sessions, exits",
    )
    p.add_argument("app", metavar="APP")
    p.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                   help="how long to wait for it to stop (default 30)")  # fmt: skip

    p = command("start", cmd_start, "start a stopped application again and wait until ready")
    p.add_argument("app", metavar="APP")

    p = command("switchover", cmd_switchover, "hand a Node's primary role to its backup")
    p.add_argument("node", metavar="NODE", help="the Node's primary application or node id")

    p = command(
        "partition",
        cmd_partition,
        "cut (or with --heal restore) the links A<->B; A and B: applications or hosts",
    )
    p.add_argument("a", metavar="A", help="an application, or a host (all its applications)")
    p.add_argument("b", metavar="B", help="an application, or a host (all its applications)")
    p.add_argument("--heal", action="store_true")

    p = command(
        "isolate",
        cmd_isolate,
        "cut (or with --heal restore) every link between HOST's applications and any other host's",
    )
    p.add_argument("host", metavar="HOST", help="a topology host")
    p.add_argument("--heal", action="store_true")

    p = command("delay", cmd_delay, "delay the traffic between A and B (applications or hosts)")
    p.add_argument("a", metavar="A")
    p.add_argument("b", metavar="B")
    p.add_argument("--ms", type=float, required=True, help="milliseconds added (0: none)")

    p = command("load", cmd_load, "generate calls into the T-Server and show the ledger")
    p.add_argument("--rate", type=float, required=True, help="calls per second")
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop after this long (default: until Ctrl-C)",
    )

    p = command("logs", cmd_logs, "show the processes' logs, human-readable")
    p.add_argument("app", nargs="?", metavar="APP", help="one application (default: all)")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new lines")

    command("down", cmd_down, "stop every process of the cluster")

    command("proxy", cmd_proxy, "(internal) the fault proxy process that `up` starts")


def make_console(stderr: bool = False) -> Console:
    """A console; wide when not a terminal, so tables and log lines do not wrap in files."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 200, highlight=False)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _run_dir(args: argparse.Namespace) -> str | None:
    return args.run_dir if args.run_dir is not None else os.environ.get("ORSIM_RUN_DIR")


@contextmanager
def progress_display(console: Console) -> Iterator[ProgressCallback]:
    """A rich spinner line per process while `up` waits for it."""
    from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        tasks: dict[str, TaskID] = {}
        labels = {
            "starting": "[yellow]starting",
            "ready": "[green]ready",
            "failed": "[bold red]failed",
        }

        def update(app: str, state: str) -> None:
            text = f"{app:<12} {labels.get(state, state)}"
            if app not in tasks:
                tasks[app] = progress.add_task(text, total=1)
            progress.update(tasks[app], description=text, completed=state != "starting")

        yield update


# -- commands ------------------------------------------------------------------------


def cmd_up(args: argparse.Namespace) -> int:
    from orsim.cluster._render import status_table

    console = make_console()
    err = make_console(stderr=True)

    key = _given_key(args.key_file)

    async def main() -> int:
        started = trio.current_time()
        with progress_display(err) as progress:
            handle = await ClusterHandle.up(
                args.config,
                _run_dir(args),
                ports=args.ports,
                progress=progress,
                confserv_port=args.confserv_port,
                store=args.store,
                host=args.host,
                key=key,
                proxy=not args.no_proxy,
            )
        took = trio.current_time() - started
        try:
            console.print(status_table(await handle.status()))
            where = f"host {args.host} up" if args.host else "cluster up"
            console.print(f"{where} in {took:.2f}s; run dir {handle.run_dir.root}")
            if args.host:
                console.print(
                    f"cluster key: {handle.run_dir.root / KEY_FILE} (other hosts: --key-file)"
                )
            if args.detach:
                await handle.release()
                return EXIT_OK
            console.print("running in the foreground; Ctrl-C stops every process")
            async with trio.open_nursery() as nursery:
                for app, proc in handle.children.items():
                    nursery.start_soon(_report_exit, console, app, proc)
        finally:
            if not args.detach:
                with trio.CancelScope(shield=True):
                    err.print("stopping the cluster...")
                    await handle.down()
                    err.print("cluster stopped")
        return EXIT_OK

    return run_cancellable(main)


def _given_key(key_file: str | None) -> str | None:
    """The key ``up`` must use: ``--key-file``'s, else ``$ORSIM_CLUSTER_KEY``, else None
    (the run directory's own, made if it has none).

    Raises:
        UsageError: the key file cannot be read or is empty.
    """
    if key_file is None:
        return os.environ.get(CLUSTER_KEY_ENV) or None
    try:
        key = Path(key_file).read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--key-file {key_file}: cannot read it: {exc}") from None
    if not key:
        raise UsageError(f"--key-file {key_file}: the file is empty")
    return key


async def _report_exit(console: Console, app: str, proc: Child) -> None:
    code = await proc.wait()
    console.print(
        f"[bold red]{app} exited with code {code}[/] (restart: orsim cluster start {app})"
    )


def cmd_status(args: argparse.Namespace) -> int:
    from rich.live import Live

    from orsim.cluster._render import status_table

    handle = ClusterHandle.attach(_run_dir(args))
    console = make_console()

    async def main() -> int:
        if args.json:
            print(json.dumps(await handle.status(), indent=2))
            return EXIT_OK
        if not args.watch:
            console.print(status_table(await handle.status()))
            return EXIT_OK
        with Live(status_table(await handle.status()), console=console, auto_refresh=False) as live:
            while True:
                await trio.sleep(1.0)
                live.update(status_table(await handle.status()), refresh=True)

    return run_cancellable(main)


def _act(args: argparse.Namespace, action: Callable[[ClusterHandle], Awaitable[str]]) -> int:
    """Run ``action`` on the cluster of ``args``'s run directory and print what it did."""
    handle = ClusterHandle.attach(_run_dir(args))

    async def main() -> int:
        print(await action(handle))
        return EXIT_OK

    return run_cancellable(main)


def cmd_kill(args: argparse.Namespace) -> int:
    async def kill(handle: ClusterHandle) -> str:
        await handle.kill(args.app, args.signal)
        return f"{args.app}: sent SIG{args.signal}"

    return _act(args, kill)


def cmd_stop(args: argparse.Namespace) -> int:
    def waiting(busy: list[str]) -> None:
        print(f"waiting: {', '.join(busy)} is suspending (one Node stops at a time)")

    async def stop(handle: ClusterHandle) -> str:
        await handle.stop(args.app, args.timeout, on_wait=waiting)
        return f"{args.app}: stopped"

    return _act(args, stop)


def cmd_start(args: argparse.Namespace) -> int:
    async def start(handle: ClusterHandle) -> str:
        await handle.start(args.app)
        mode = app_mode(await handle.status(), args.app) or "unknown"
        return f"{args.app}: started (pid {handle.pids().get(args.app)}), mode {mode}"

    return _act(args, start)


def cmd_switchover(args: argparse.Namespace) -> int:
    async def switchover(handle: ClusterHandle) -> str:
        answer = await handle.switchover(args.node)
        return f"Node {args.node}: switched over, new primary {answer.new_primary}"

    return _act(args, switchover)


def cmd_partition(args: argparse.Namespace) -> int:
    async def partition(handle: ClusterHandle) -> str:
        await handle.partition(args.a, args.b, heal=args.heal)
        return f"{args.a} <-> {args.b}: {'healed' if args.heal else 'partitioned'}"

    return _act(args, partition)


def cmd_isolate(args: argparse.Namespace) -> int:
    async def isolate(handle: ClusterHandle) -> str:
        await handle.isolate(args.host, heal=args.heal)
        return f"{args.host}: {'joined again' if args.heal else 'isolated from every other host'}"

    return _act(args, isolate)


def cmd_delay(args: argparse.Namespace) -> int:
    async def delay(handle: ClusterHandle) -> str:
        await handle.delay(args.a, args.b, args.ms)
        return f"{args.a} <-> {args.b}: delay {args.ms:g} ms"

    return _act(args, delay)


def cmd_load(args: argparse.Namespace) -> int:
    from rich.live import Live

    from orsim.cluster._render import load_line

    check_load_rate(args.rate)
    handle = ClusterHandle.attach(_run_dir(args))
    console = make_console()

    async def main() -> int:
        before = await handle.ledger()
        await handle.load(args.rate, args.duration)
        started = last_time = trio.current_time()
        last_created = before.counts.created
        rate = 0.0
        live = Live(console=console, auto_refresh=False, transient=False)
        try:
            with live if console.is_terminal else nullcontext():
                while args.duration is None or trio.current_time() - started < args.duration:
                    await trio.sleep(0.5 if console.is_terminal else 1.0)
                    counts = (await handle.ledger()).counts
                    now = trio.current_time()
                    rate = (counts.created - last_created) / max(now - last_time, 1e-6)
                    last_created, last_time = counts.created, now
                    line = load_line(counts, rate, now - started)
                    if console.is_terminal:
                        live.update(line, refresh=True)
                    else:
                        console.print(line)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await handle.stop_load()
        return EXIT_OK

    return run_cancellable(main)


def cmd_logs(args: argparse.Namespace) -> int:
    from orsim.cluster._render import format_log_line

    rundir = RunDir.at(_run_dir(args))
    console = make_console()
    paths = sorted(rundir.logs.glob("*.jsonl")) if rundir.logs.is_dir() else []
    if args.app:
        paths = [p for p in paths if p.stem == args.app]
        if not paths:
            raise ClusterError(
                f"no log for {args.app!r} in {rundir.logs}{_elsewhere(rundir, args.app)}"
            )
    offsets = {path: 0 for path in paths}
    for app, line in _merged(_read_new(offsets)):
        console.print(format_log_line(app, line))
    if not args.follow:
        return EXIT_OK

    async def follow() -> int:
        while True:
            await trio.sleep(0.25)
            for path in sorted(rundir.logs.glob("*.jsonl")):
                if (not args.app or path.stem == args.app) and path not in offsets:
                    offsets[path] = 0
            for app, line in _merged(_read_new(offsets)):
                console.print(format_log_line(app, line))

    return run_cancellable(follow)


def _elsewhere(rundir: RunDir, app: str) -> str:
    """``; it runs on host H: ...`` when ``app`` is another host's (``up --host``)."""
    try:
        entry = rundir.read_manifest().entry(app)
    except ClusterError:
        return ""
    if not entry.remote:
        return ""
    return f"; {app} runs on host {entry.host_name}: its log is in that host's run directory"


def _read_new(offsets: dict[Path, int]) -> dict[str, list[str]]:
    """New whole lines of each log since the last read (offsets are advanced)."""
    found: dict[str, list[str]] = {}
    for path, offset in offsets.items():
        try:
            with open(path, "rb") as file:
                file.seek(offset)
                data = file.read()
        except OSError:
            continue
        end = data.rfind(b"\n") + 1
        offsets[path] = offset + end
        found[path.stem] = data[:end].decode("utf-8", "replace").splitlines()
    return found


def _merged(lines_by_app: dict[str, list[str]]) -> list[tuple[str, str]]:
    """Lines of several logs in time order; lines without a time stay after their event."""
    from orsim.cluster._render import parse_log_line

    groups: list[tuple[str, int, str, list[str]]] = []
    for app, lines in lines_by_app.items():
        for line in lines:
            data = parse_log_line(line)
            if data is not None or not groups or groups[-1][0] != app:
                ts = str(data.get("ts", "")) if data else ""
                groups.append((app, len(groups), ts, [line]))
            else:
                groups[-1][3].append(line)
    groups.sort(key=lambda g: (g[2], g[1]))
    return [(app, line) for app, _, _, lines in groups for line in lines]


def cmd_down(args: argparse.Namespace) -> int:
    rundir = RunDir.at(_run_dir(args))

    async def main() -> int:
        try:
            handle = ClusterHandle.attach(rundir.root)
        except ClusterError:
            # `up` may have been killed before it wrote a manifest: pid files suffice.
            if not rundir.read_pids():
                raise
            await stop_processes(rundir)
        else:
            await handle.down()
        print(f"cluster in {rundir.root} stopped")
        return EXIT_OK

    return run_cancellable(main)


def cmd_proxy(args: argparse.Namespace) -> int:
    rundir = RunDir.at(_run_dir(args))
    control_host, control_port, routes = read_proxy_config(rundir.proxy_config)
    configure_logging(sys.stderr)

    async def main() -> int:
        await serve_proxy(TcpNetwork(), routes, control_host, control_port)

    return run_cancellable(main)
