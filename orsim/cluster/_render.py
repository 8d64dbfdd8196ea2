"""Human views of a cluster: the status table, the live load line, log lines (rich)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from orsim.cluster._status import AppRow, ClusterStatus
    from orsim.tserver import LedgerCounts

_MODE_STYLES = {
    "primary": "bold green",
    "backup": "cyan",
    "starting": "yellow",
    "suspending": "magenta",
    "down": "bold red",
}
#: What a role says where the mode does not (``AppRow.role``), where its name does not.
_ROLE_NOTES = {"primary": "fence pending"}
_LEVEL_STYLES = {"error": "bold red", "critical": "bold red", "warning": "yellow", "debug": "dim"}
_LOG_KEYS = ("ts", "level", "event", "timestamp")


def _cell(value: object) -> str:
    return "—" if value is None else str(value)


def _store_cell(app: AppRow) -> Text:
    """``ok``, or ``degraded`` with the sessions routed unpersisted so far."""
    state = app.get("store")
    if state is None:
        return Text("—")
    unpersisted = app.get("sessions_unpersisted") or 0
    if state == "degraded":
        return Text(f"degraded ({unpersisted} unpersisted)", style="bold red")
    return Text("ok" if not unpersisted else f"ok ({unpersisted} unpersisted)")


def status_table(status: ClusterStatus) -> Table:
    """The status of every application and the call totals as one table."""
    title = f"cluster {status.get('cluster') or '(no cluster list)'}"
    if status.get("host"):
        title += f", seen from host {status['host']} (other hosts' apps: remote)"
    table = Table(title=title, title_justify="left")
    for column in (
        "App",
        "Type",
        "Host",
        "Node",
        "Cluster",
        "DC",
        "Mode",
        "PID",
        "Sessions",
        "Routed",
        "Store",
        "Port",
    ):
        table.add_column(
            column,
            justify="right" if column in ("PID", "Sessions", "Routed", "Port", "Node") else "left",
        )
    for app in status.get("apps", []):
        mode = str(app.get("mode"))
        role = app.get("role")
        if role is not None and role != mode:
            mode += f" ({_ROLE_NOTES.get(role, role)})"  # a claim under way, say
        if app.get("process") == "stopped":
            mode += " (stopped)"
        host = _cell(app.get("host_name"))
        if app.get("remote"):
            host += " (remote)"
        ports = f"{app.get('public_port')}→{app.get('private_port')}"
        if app.get("remote"):
            ports = str(app.get("public_port"))  # its private port is its host's own
        table.add_row(
            app["app"],
            app["type"],
            host,
            _cell(app.get("node_id")),
            _cell(app.get("cluster")),
            _cell(app.get("data_center")),
            Text(mode, style=_MODE_STYLES.get(str(app.get("mode")), "")),
            _cell(app.get("pid")),
            _cell(app.get("sessions")),
            _cell(app.get("calls_routed")),
            _store_cell(app),
            ports,
        )
    calls = status.get("calls", {})
    table.caption = "calls: " + "  ".join(
        f"{name}={_cell(calls.get(name))}"
        for name in (
            "created",
            "routed",
            "lost",
            "default_routed",
            "duplicates",
            "resent",
            "in_flight",
        )
        if name in calls or name not in ("resent", "default_routed")
    )
    table.caption_justify = "left"
    return table


def load_line(counts: LedgerCounts, rate: float, elapsed: float) -> Text:
    """``calls/s  created  routed  lost  dup  p99`` for the live load display."""
    p99, lost = counts.latency_p99_ms, counts.lost
    return Text.assemble(
        f"{elapsed:6.1f}s  {rate:6.1f} calls/s  created {counts.created}  routed {counts.routed}  ",
        (f"lost {lost}", "bold red" if lost else "green"),
        f"  dup {counts.duplicates}  in flight {counts.in_flight}  "
        f"p99 {'—' if p99 is None else f'{p99:.1f} ms'}",
    )


def parse_log_line(line: str) -> dict[str, object] | None:
    """A structlog JSON line as a dict, or None for anything else (tracebacks...)."""
    try:
        data = json.loads(line)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def format_log_line(app: str, line: str) -> Text:
    """``12:00:01.250 ORS_1 info  mode_changed mode=primary epoch=2``."""
    data = parse_log_line(line)
    if data is None:
        return Text(f"{'':12} {app:<10} {line.rstrip()}", style="dim")
    ts = str(data.get("ts") or data.get("timestamp") or "")
    clock = ts.split("T", 1)[1][:12] if "T" in ts else ts
    level = str(data.get("level", ""))
    rest = " ".join(
        f"{k}={v if isinstance(v, str) else json.dumps(v)}"
        for k, v in data.items()
        if k not in _LOG_KEYS
    )
    return Text.assemble(
        (f"{clock:<12} ", "dim"),
        (f"{app:<10} ", "bold"),
        (f"{level:<7} ", _LEVEL_STYLES.get(level, "")),
        (str(data.get("event", "")), "bold"),
        f" {rest}" if rest else "",
    )


def log_sort_key(line: str) -> str:
    """Sort key merging several logs by time (lines without a time sort first)."""
    data = parse_log_line(line)
    return str(data.get("ts", "")) if data else ""
