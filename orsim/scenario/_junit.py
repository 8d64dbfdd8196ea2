"""JUnit XML for CI: one testsuite per scenario, one testcase per expectation."""

from __future__ import annotations

import datetime
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from orsim.scenario._runner import ScenarioResult
from orsim.scenario._timeline import format_timeline


def junit_xml(results: Sequence[ScenarioResult]) -> ET.ElementTree[ET.Element]:
    """The JUnit document for ``results`` (the timeline goes in each testcase's system-out)."""
    total = sum(len(r.verdicts) for r in results)
    failed = sum(r.counts[1] for r in results)
    root = ET.Element(
        "testsuites", name="orsim scenarios", tests=str(total), failures=str(failed), errors="0"
    )
    for result in results:
        timeline = result.timeline
        text = format_timeline(timeline.events, timeline.t0)
        suite = ET.SubElement(
            root,
            "testsuite",
            name=result.scenario.name,
            tests=str(len(result.verdicts)),
            failures=str(result.counts[1]),
            errors="0",
            skipped="0",
            time=f"{timeline.duration:.3f}",
            timestamp=datetime.datetime.fromtimestamp(timeline.t0, datetime.UTC)
            .replace(tzinfo=None)
            .isoformat(timespec="seconds"),
        )
        props = ET.SubElement(suite, "properties")
        for name, value in (
            ("file", result.scenario.source),
            ("topology", result.scenario.topology_path),
            ("seed", str(result.seed)),
            ("run_dir", result.run_dir),
        ):
            ET.SubElement(props, "property", name=name, value=value)
        for verdict in result.verdicts:
            case = ET.SubElement(
                suite,
                "testcase",
                classname=f"scenario.{result.scenario.name}",
                name=verdict.label,
                time="0",  # expectations are judged, not timed; the suite carries the time
            )
            if not verdict.passed:
                failure = ET.SubElement(
                    case, "failure", message=verdict.detail, type="ExpectationFailed"
                )
                failure.text = f"{verdict.label}: {verdict.detail}"
            out = ET.SubElement(case, "system-out")
            out.text = text
    tree: ET.ElementTree[ET.Element] = ET.ElementTree(root)
    ET.indent(tree)
    return tree


def write_junit(results: Sequence[ScenarioResult], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    junit_xml(results).write(path, encoding="utf-8", xml_declaration=True)
