"""A self-contained HTML report: inline CSS and SVG, no script, no external asset.

For each scenario: a timeline picture (one lane per application coloured by its sampled
mode; calls routed per second per Node from the ledger records; a vertical marker where
each fault and repair fell), the verdict table, the applied schedule (with the seed: what
``orsim scenario replay`` re-runs) and the printed timeline.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from orsim.scenario._runner import ScenarioResult
from orsim.scenario._timeline import Timeline, changed_at, format_timeline

if TYPE_CHECKING:
    from orsim.tserver import CallRecord

MODE_COLOURS = {
    "primary": "#2e7d32",
    "backup": "#1565c0",
    "starting": "#f9a825",
    "down": "#c62828",
}
OTHER_COLOUR = "#9e9e9e"
NODE_COLOURS = ("#6a1b9a", "#ef6c00", "#00838f", "#ad1457", "#558b2f", "#4e342e")

WIDTH = 960
LEFT = 130
RIGHT = 20
TOP = 34
LANE_H = 18
LANE_GAP = 6
CHART_H = 130
AXIS_H = 22


def mode_segments(timeline: Timeline) -> dict[str, list[tuple[float, float, str]]]:
    """app -> [(start, end, mode)] in seconds from t0, merging equal neighbours. A mode
    begins when the application says it changed (``changed_at``), as in the timeline,
    not at the sample that first showed it."""
    end = timeline.duration
    lanes: dict[str, list[tuple[float, float, str]]] = {}
    samples = timeline.samples
    for i, sample in enumerate(samples):
        stop = timeline.rel(samples[i + 1].t) if i + 1 < len(samples) else end
        before = samples[i - 1] if i else None
        for state in sample.apps:
            at = sample.t
            if before is not None and before.mode(state.app) != state.mode:
                at = changed_at(before, sample, state)
            start = max(timeline.rel(at), 0.0)
            if stop <= start:
                continue
            lane = lanes.setdefault(state.app, [])
            if lane and lane[-1][1] > start:  # the change came before this sample
                lane[-1] = (lane[-1][0], start, lane[-1][2])
                if lane[-1][1] <= lane[-1][0]:
                    lane.pop()
            if lane and lane[-1][2] == state.mode and math.isclose(lane[-1][1], start):
                lane[-1] = (lane[-1][0], stop, state.mode)
            else:
                lane.append((start, stop, state.mode))
    return lanes


def routed_per_second(
    records: Sequence[CallRecord], t0: float, seconds: int, node_of: Mapping[str, str]
) -> dict[str, list[int]]:
    """Node -> calls routed in each second [k, k+1) after t0 (records by routing app)."""
    rates: dict[str, list[int]] = {node: [0] * seconds for node in sorted(set(node_of.values()))}
    for record in records:
        routed_at, app = record.routed_at, record.app
        if record.state != "routed" or routed_at is None:
            continue
        node = node_of.get(str(app), str(app))
        k = int(routed_at - t0)
        if 0 <= k < seconds:
            rates.setdefault(node, [0] * seconds)[k] += 1
    return rates


def _tick_step(duration: float) -> float:
    for step in (0.5, 1, 2, 5, 10, 20, 30, 60, 120):
        if duration / step <= 12:
            return step
    return 300


def timeline_svg(result: ScenarioResult) -> str:
    """The timeline picture of one run as an inline ``<svg>`` element."""
    timeline = result.timeline
    scenario = result.scenario
    duration = max(timeline.duration, 1.0)
    lanes = mode_segments(timeline)
    ors = [a for a in scenario.topology.applications if a in lanes and scenario.node_of(a)]
    apps = sorted(ors, key=lambda a: (scenario.node_of(a) or "", a)) + sorted(
        a for a in lanes if a not in ors
    )
    plot_w = WIDTH - LEFT - RIGHT
    lanes_h = len(apps) * (LANE_H + LANE_GAP)
    chart_top = TOP + lanes_h + AXIS_H + 16
    height = chart_top + CHART_H + AXIS_H + 10

    def x(t: float) -> float:
        return LEFT + plot_w * min(max(t, 0.0), duration) / duration

    parts = [
        f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" '
        f'height="{height}" viewBox="0 0 {WIDTH} {height}" role="img" '
        f'aria-label="timeline of {_e(scenario.name)}">'
    ]
    parts.append(f'<text x="{LEFT}" y="14" class="h">which application was primary when</text>')
    for i, app in enumerate(apps):
        y = TOP + i * (LANE_H + LANE_GAP)
        parts.append(f'<g class="lane" data-app="{_e(app)}">')
        parts.append(f'<text x="{LEFT - 8}" y="{y + 13}" text-anchor="end">{_e(app)}</text>')
        for start, stop, mode in lanes[app]:
            colour = MODE_COLOURS.get(mode, OTHER_COLOUR)
            parts.append(
                f'<rect class="seg mode-{_e(mode)}" x="{x(start):.1f}" y="{y}" '
                f'width="{max(x(stop) - x(start), 0.5):.1f}" height="{LANE_H}" fill="{colour}">'
                f"<title>{_e(app)}: {_e(mode)} {start:.2f}s–{stop:.2f}s</title></rect>"
            )
        parts.append("</g>")
    parts.append(_axis(x, duration, TOP + lanes_h + 2))

    # Calls routed per second per Node.
    seconds = max(math.ceil(duration), 1)
    node_of = {a: n for a in scenario.topology.applications if (n := scenario.node_of(a))}
    records = (result.ledger.records or ()) if result.ledger else ()
    rates = routed_per_second(records, timeline.t0, seconds, node_of)
    peak = max((max(v) for v in rates.values() if v), default=0) or 1
    parts.append(
        f'<text x="{LEFT}" y="{chart_top - 6}" class="h">calls routed per second per Node '
        f"(peak {peak})</text>"
    )
    parts.append(
        f'<rect x="{LEFT}" y="{chart_top}" width="{plot_w}" height="{CHART_H}" '
        'fill="none" stroke="#bbb"/>'
    )
    for i, (node, counts) in enumerate(sorted(rates.items())):
        colour = NODE_COLOURS[i % len(NODE_COLOURS)]
        points = " ".join(
            f"{x(k + 0.5):.1f},{chart_top + CHART_H - CHART_H * c / peak:.1f}"
            for k, c in enumerate(counts)
        )
        parts.append(
            f'<g class="rate" data-node="{_e(node)}"><polyline points="{points}" fill="none" '
            f'stroke="{colour}" stroke-width="2"><title>Node {_e(node)}</title></polyline>'
            f'<text x="{LEFT - 8}" y="{chart_top + 14 + 14 * i}" text-anchor="end" '
            f'style="fill:{colour}">{_e(node)}</text></g>'
        )
    parts.append(_axis(x, duration, chart_top + CHART_H + 2))

    # Where each fault (and each repair) fell, across the whole picture.
    for event in timeline.events:
        if event.kind not in ("fault", "repair"):
            continue
        t = timeline.rel(event.t)
        colour = "#d32f2f" if event.kind == "fault" else "#388e3c"
        label = f"{event.step}" if event.step is not None else ""
        parts.append(
            f'<g class="marker {event.kind}"><line x1="{x(t):.1f}" y1="{TOP - 12}" '
            f'x2="{x(t):.1f}" y2="{chart_top + CHART_H}" stroke="{colour}" '
            f'stroke-dasharray="4 3" stroke-width="1.5"/>'
            f'<text x="{x(t) + 2:.1f}" y="{TOP - 4}" style="fill:{colour}">{_e(label)}</text>'
            f"<title>+{t:.2f}s step {_e(label)}: {_e(event.text)}</title></g>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _axis(x: Callable[[float], float], duration: float, y: float) -> str:
    step = _tick_step(duration)
    ticks = []
    k = 0
    while k * step <= duration + 1e-9:
        t = k * step
        ticks.append(
            f'<line x1="{x(t):.1f}" y1="{y}" x2="{x(t):.1f}" y2="{y + 4}" stroke="#666"/>'
            f'<text x="{x(t):.1f}" y="{y + 15}" text-anchor="middle">{t:g}s</text>'
        )
        k += 1
    return f'<g class="axis">{"".join(ticks)}</g>'


def _legend() -> str:
    items = "".join(
        f'<span class="key"><i style="background:{c}"></i>{m}</span>'
        for m, c in MODE_COLOURS.items()
    )
    return (
        f'<p class="legend">{items}<span class="key"><i class="fault"></i>fault</span>'
        '<span class="key"><i class="repair"></i>repair</span></p>'
    )


def schedule_table(result: ScenarioResult) -> str:
    """The steps that acted on the cluster, each at its offset from the first step."""
    replayed = any(s.recorded is not None for s in result.schedule)
    head = "<th>recorded</th>" if replayed else ""
    rows = "".join(
        f"<tr><td>{s.number}</td><td>{_e(s.verb)}</td><td>{_e(', '.join(s.targets))}</td>"
        f"<td>{_e(s.detail)}</td><td>+{s.offset:.3f}s</td>"
        + (f"<td>{'' if s.recorded is None else f'+{s.recorded:.3f}s'}</td>" if replayed else "")
        + "</tr>"
        for s in result.schedule
    )
    return (
        f'<table class="schedule"><caption>applied schedule, seed {result.seed}</caption>'
        f"<tr><th>step</th><th>action</th><th>target</th><th>detail</th><th>at</th>{head}</tr>"
        f"{rows}</table>"
    )


def scenario_section(result: ScenarioResult) -> str:
    scenario = result.scenario
    good, bad = result.counts
    rows = "".join(
        f'<tr class="{"pass" if v.passed else "fail"}"><td>{"PASS" if v.passed else "FAIL"}</td>'
        f"<td>{_e(v.label)}</td><td>{_e(v.detail)}</td></tr>"
        for v in result.verdicts
    )
    ledger = result.ledger
    counts = ", ".join(
        f"{name} {getattr(ledger.counts, name)}"
        for name in ("created", "routed", "lost", "duplicates", "resent", "stale", "in_flight")
        if ledger
    )
    text = format_timeline(result.timeline.events, result.timeline.t0)
    state = "passed" if result.passed else "failed"
    return (
        f'<section class="scenario {state}" id="{_e(scenario.name)}">'
        f"<h2>{_e(scenario.name)} <small>{good} passed, {bad} failed</small></h2>"
        f"<p>{_e(scenario.description)}</p>"
        f'<p class="meta">file {_e(scenario.source)} · topology {_e(scenario.topology_path)} · '
        f"seed {result.seed} · {result.timeline.duration:.1f}s"
        f"{' · ledger: ' + _e(counts) if counts else ''}</p>"
        f"{_legend()}{timeline_svg(result)}"
        f'<table class="verdicts"><tr><th></th><th>expectation</th><th>detail</th></tr>{rows}'
        f"</table>{schedule_table(result)}<details><summary>timeline</summary><pre>{_e(text)}</pre></details></section>"
    )


_CSS = """
body{font:14px system-ui,sans-serif;margin:24px;color:#222}
h1{font-size:20px} h2{font-size:17px;margin-top:32px} h2 small{font-weight:normal;color:#555}
.scenario.failed h2{color:#b71c1c} .meta{color:#555}
svg text{font:11px system-ui,sans-serif;fill:#333} svg text.h{font-weight:bold}
table.verdicts,table.schedule{border-collapse:collapse;margin:8px 0}
table.verdicts td,table.verdicts th,table.schedule td,table.schedule th{border:1px solid #ddd;
padding:3px 8px;text-align:left} table.schedule caption{text-align:left;font-weight:bold}
tr.pass td:first-child{color:#2e7d32;font-weight:bold}
tr.fail td:first-child{color:#c62828;font-weight:bold} tr.fail{background:#fff3f3}
.legend .key{margin-right:14px} .legend i{display:inline-block;width:12px;height:12px;
margin-right:4px;vertical-align:middle}
.legend i.fault{border-left:2px dashed #d32f2f;width:0}
.legend i.repair{border-left:2px dashed #388e3c;width:0}
pre{background:#f6f6f6;padding:8px;overflow:auto}
"""


def report_html(results: Sequence[ScenarioResult]) -> str:
    """The whole report page."""
    good = sum(r.counts[0] for r in results)
    bad = sum(r.counts[1] for r in results)
    sections = "".join(scenario_section(r) for r in results)
    index = "".join(
        f'<li class="{"passed" if r.passed else "failed"}"><a href="#{_e(r.scenario.name)}">'
        f"{_e(r.scenario.name)}</a>: {r.counts[0]} passed, {r.counts[1]} failed</li>"
        for r in results
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>orsim scenarios: {good} passed, {bad} failed</title><style>{_CSS}</style></head>"
        f"<body><h1>orsim scenarios: {good} passed, {bad} failed</h1><ul>{index}</ul>"
        f"{sections}</body></html>\n"
    )


def write_report(results: Sequence[ScenarioResult], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report_html(results), encoding="utf-8")


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)
