"""Real processes on one store (both backends): a SIGKILLed writer loses no acknowledged
write, and claims racing from two processes have exactly one winner."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis
import trio

from orsim.store import open_store

NODE_ID = 7
#: Acknowledged writes to see before the kill; enough for the writer to be in its stride.
ACKED_BEFORE_KILL = 60

# Put session i, acknowledge "+i"; delete session i-1, acknowledge "-(i-1)"; forever.
# An acknowledgement is printed only after the store call returned.
_WRITER = """
import sys, trio
from pathlib import Path
from orsim.store import Session, open_store

async def main(url, base_dir, node_id):
    store = await open_store(url, Path(base_dir))
    assert await store.claim_epoch(node_id, 0, 1)
    i = 0
    while True:
        await store.put_session(Session(
            call_id=f"c{i}", node_id=node_id, epoch=1, dn="5000", state="created",
            created_at=float(i), data={"i": str(i)}))
        print(f"+{i}", flush=True)
        if i:
            await store.delete_session(node_id, 1, f"c{i - 1}")
            print(f"-{i - 1}", flush=True)
        i += 1

trio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]))
"""


# Claim epoch 1 of each Node in turn; print "node won" per claim.
_CLAIMER = """
import sys, trio
from pathlib import Path
from orsim.store import open_store

async def main(url, base_dir, nodes):
    store = await open_store(url, Path(base_dir))
    for node_id in range(1, nodes + 1):
        print(node_id, await store.claim_epoch(node_id, 0, 1), flush=True)
    await store.aclose()

trio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]))
"""
RACED_NODES = 100


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request: pytest.FixtureRequest) -> str:
    if request.param == "sqlite":
        return "sqlite:///sessions.db"
    url: str = request.getfixturevalue("redis_url")
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()
    return url


async def _run_and_kill(url: str, base_dir: Path) -> list[str]:
    """Start the writer, SIGKILL it right after an acknowledgement; return every ack."""
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-c", _WRITER, url, str(base_dir), str(NODE_ID)],
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    acks: list[str] = []
    buffer = b""
    killed = False
    try:
        with trio.fail_after(30):
            while chunk := await proc.stdout.receive_some(65536):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                acks.extend(line.decode() for line in lines)
                if not killed and len(acks) >= ACKED_BEFORE_KILL:
                    proc.send_signal(signal.SIGKILL)
                    killed = True
            await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            with trio.CancelScope(shield=True):
                await proc.wait()
        await proc.stdout.aclose()
    assert proc.returncode == -signal.SIGKILL, f"writer exited on its own: {acks[-3:]}"
    return acks


async def test_sigkill_loses_no_acknowledged_write(store_url: str, tmp_path: Path) -> None:
    """Every acknowledged put is there unless its delete was acknowledged too; every
    acknowledged delete stays done; only the one write in flight may go either way."""
    acks = await _run_and_kill(store_url, tmp_path)
    put = {int(a[1:]) for a in acks if a.startswith("+")}
    deleted = {int(a[1:]) for a in acks if a.startswith("-")}
    last_put = max(put)
    in_flight_delete = {last_put - 1} if acks[-1] == f"+{last_put}" else set()

    store = await open_store(store_url, tmp_path)
    try:
        present = {int(s.call_id[1:]) for s in await store.sessions(NODE_ID)}
        assert await store.current_epoch(NODE_ID) == 1
    finally:
        await store.aclose()
    must_be_present = put - deleted - in_flight_delete
    assert must_be_present <= present
    assert not (deleted & present)
    assert len(put) >= ACKED_BEFORE_KILL // 2


async def test_claims_racing_across_processes(store_url: str, tmp_path: Path) -> None:
    """Two processes claim the same epochs of the same Nodes: each Node has one winner."""
    # Both processes also create the database and its tables at the same moment.
    outputs: list[bytes] = []

    async def claimer() -> None:
        result = await trio.run_process(
            [sys.executable, "-c", _CLAIMER, store_url, str(tmp_path), str(RACED_NODES)],
            capture_stdout=True,
        )
        outputs.append(result.stdout)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(claimer)
            nursery.start_soon(claimer)
    wins = [line.split()[0] for out in outputs for line in out.splitlines() if b"True" in line]
    assert sorted(int(n) for n in wins) == list(range(1, RACED_NODES + 1))
