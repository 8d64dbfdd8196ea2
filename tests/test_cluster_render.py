"""The status table says what a takeover under way is doing, where the mode cannot."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from orsim.cluster._render import status_table


def _row(app: str, mode: str, role: str | None) -> dict[str, Any]:
    return {
        "app": app, "type": "OrchestrationServer", "host_name": "local", "remote": False,
        "node_id": 101, "cluster": "C", "data_center": "DC", "mode": mode, "role": role,
        "process": "running", "pid": 4242, "sessions": 0, "calls_routed": 0, "store": "ok",
        "sessions_unpersisted": 0, "public_port": 7000, "private_port": 7001,
    }  # fmt: skip


def _text(rows: list[dict[str, Any]]) -> str:
    console = Console(width=200, record=True, color_system=None)
    console.print(status_table({"cluster": "C", "apps": rows, "calls": {}}))  # type: ignore[typeddict-item]
    return console.export_text()


def test_a_claim_under_way_shows_beside_the_mode() -> None:
    text = _text([
        _row("ORS_1", "primary", "primary"),
        _row("ORS_1_B", "backup", "claiming"),
        _row("ORS_2_B", "backup", "primary"),
        _row("URS", "primary", None),
    ])  # fmt: skip
    assert "backup (claiming)" in text
    assert "backup (fence pending)" in text
    assert "primary (" not in text  # a role that says what the mode says adds nothing
