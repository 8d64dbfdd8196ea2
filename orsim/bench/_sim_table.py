"""The ``sim`` section's summary and table rows (pure).

The library-style runs are summarised by their medians, and, over every run, the calls
lost and duplicated and the runs that failed (an error, a failed expectation, a lost or
duplicated call): one such run makes the row not met, whatever the median speed.
"""

from __future__ import annotations

from collections.abc import Sequence

from orsim.bench._sim import SPEED_TARGET, library_ok
from orsim.bench._stats import Row, median_rows


def summarize_sim(runs: Sequence[Row]) -> list[Row]:
    """Per kind (``library``, ``cluster``): the medians of the runs that did not raise,
    with ``lost_total``, ``duplicates_total``, ``runs`` and ``failed`` over all of them."""
    rows = []
    for kind in ("library", "cluster"):
        mine = [r for r in runs if r.get("kind") == kind]
        if not mine:
            continue
        done = [r for r in mine if "error" not in r]
        row: Row = median_rows(done, ("kind",))[0] if done else {"kind": kind}
        row["nodes"] = mine[0].get("nodes")
        row["runs"] = len(mine)
        row["lost_total"] = sum(r.get("lost") or 0 for r in done)
        row["duplicates_total"] = sum(r.get("duplicates") or 0 for r in done)
        if kind == "library":
            row["failed"] = sum(1 for r in mine if not library_ok(r))
        else:
            row["failed"] = sum(1 for r in mine if "error" in r)
        rows.append(row)
    return rows


def _num(value: object, spec: str = ".0f", unit: str = "") -> str:
    return "?" if value is None else f"{value:{spec}}{unit}"


def _calls(r: Row) -> str:
    return f"lost {r.get('lost_total', 0)}, dup {r.get('duplicates_total', 0)}"


def sim_rows(rows: Sequence[Row]) -> list[tuple[str, str, str, str, str]]:
    """(measure, median, worst, target, met) per line of the table."""
    out = []
    for r in rows:
        runs, failed = r.get("runs", 0), r.get("failed", 0)
        if r["kind"] == "library":
            speed = r.get("speed")
            ok = speed is not None and speed >= SPEED_TARGET and not failed and runs
            out.append((
                f"{_num(r.get('virtual_s'))} s library-style run, 2 Nodes: virtual s / wall s",
                f"x{_num(speed)} ({_num(r.get('virtual_s'), '.1f')} s in"
                f" {_num(r.get('wall_s'), '.2f')} s; {_num(r.get('calls'))} calls)",
                f"{_calls(r)}; {failed}/{runs} runs failed",
                f">= {SPEED_TARGET:g}x, 0 lost/dup",
                "yes" if ok else "NO",
            ))  # fmt: skip
            continue
        nodes = r.get("nodes")
        out.append((
            f"{nodes} Nodes in one process ({_num(r.get('apps'))} apps,"
            f" {_num(r.get('links'))} links): settled",
            f"{_num(r.get('settle_s'), '.1f', ' s')} (every link up after"
            f" {_num(r.get('mesh_s'), '.1f', ' s')})",
            "", "", "",
        ))  # fmt: skip
        out.append((
            f"{nodes} Nodes, {_num(r.get('offered_per_s'))} calls/s for"
            f" {_num(r.get('load_virtual_s'))} virtual s",
            f"{_num(r.get('calls_per_s'), '.1f')} calls routed per wall s"
            f" ({_num(r.get('routed'))} calls)",
            f"{_calls(r)}{'; FAILED' if failed else ''}",
            "0 lost/dup",
            "yes" if runs and not failed and not r.get("lost_total")
            and not r.get("duplicates_total") else "NO",
        ))  # fmt: skip
        out.append((
            f"{nodes} Nodes, peak memory",
            f"{_num(r.get('peak_rss_mb'))} MB (peak RSS of the process)",
            "", "", "",
        ))  # fmt: skip
    return out
