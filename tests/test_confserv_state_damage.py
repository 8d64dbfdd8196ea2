"""A damaged Configuration Server state file is refused in one line naming it, never
silently read as "no changes"; `--reset-state` starts clean on purpose (issue 20,
finding 8)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import trio

from orsim.confserv._changes import Change
from orsim.confserv._journal import JOURNAL_FILE, DamagedState, Journal

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "scenarios" / "topologies" / "demo.yaml"
ORSIM = str(ROOT / ".venv" / "bin" / "orsim")
CHANGES = [Change("ORS_1", "orchestration", f"key-{n}", "x" * 200) for n in range(200)]


def journal_with_changes(state: Path) -> Path:
    journal = Journal(state)
    journal.append(CHANGES)
    journal.close()
    return state / JOURNAL_FILE


@pytest.mark.parametrize("damage", ["garbage", "truncated", "emptied", "zeroed-header"])
def test_damaged_file_is_refused_naming_it(damage: str, tmp_path: Path) -> None:
    path = journal_with_changes(tmp_path)
    data = path.read_bytes()
    damaged = {
        "garbage": b"not a database at all\n" * 100,
        "truncated": data[: len(data) // 3],
        "emptied": b"",
        "zeroed-header": bytes(100) + data[100:],
    }[damage]
    path.write_bytes(damaged)
    with pytest.raises(DamagedState) as info:
        Journal(tmp_path).changes()
    message = str(info.value)
    assert str(path) in message and "--reset-state" in message
    assert "\n" not in message


def test_a_lost_wal_file_loses_no_acknowledged_change(tmp_path: Path) -> None:
    """As after kill -9 and a lost -wal: only the main file is left (copied while open)."""
    journal = Journal(tmp_path / "live")
    journal.append(CHANGES[:3])
    journal.append(CHANGES[3:5])
    (tmp_path / "copy").mkdir()
    shutil.copy(tmp_path / "live" / JOURNAL_FILE, tmp_path / "copy" / JOURNAL_FILE)
    journal.close()
    assert Journal(tmp_path / "copy").changes() == CHANGES[:5]


def test_reset_removes_the_journal(tmp_path: Path) -> None:
    path = journal_with_changes(tmp_path)
    path.write_bytes(b"garbage")
    assert Journal.reset(tmp_path)
    assert Journal(tmp_path).changes() == []
    assert not Journal.reset(tmp_path / "elsewhere")


@pytest.mark.slow
async def test_confserv_refuses_damaged_state_then_resets_on_purpose(tmp_path: Path) -> None:
    state = tmp_path / "state"
    journal_with_changes(state).write_bytes(b"garbage" * 1000)
    args = [ORSIM, "confserv", str(DEMO), "--port", "0", "--state", str(state)]
    with trio.fail_after(30):
        result = await trio.run_process(args, capture_stdout=True, capture_stderr=True, check=False)
    err = result.stderr.decode()
    assert result.returncode == 1, err
    lines = [line for line in err.splitlines() if not line.startswith("{")]  # JSON logs
    assert lines == [lines[0]] and lines[0].startswith("orsim confserv: error: state file")
    assert str(state / JOURNAL_FILE) in lines[0]
    assert "Traceback" not in err
    proc = await trio.lowlevel.open_process(
        [*args, "--reset-state"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        assert proc.stderr is not None
        seen = b""
        with trio.fail_after(30):
            while b'"listening"' not in seen:
                chunk = await proc.stderr.receive_some()
                assert chunk, seen.decode()
                seen += chunk
        events = [json.loads(line) for line in seen.decode().splitlines() if line]
        assert any(e["event"] == "state_reset" and e["found"] for e in events), events
    finally:
        proc.kill()
        await proc.wait()
