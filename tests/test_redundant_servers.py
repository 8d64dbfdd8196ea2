"""Redundant T-Server and URS (reference section 8): a hot-standby T-Server twin keeps the
call ledger in step, and an ORS alternates between a server and its backup,
``reconnect-timeout`` apart.

Genesys statements shown here:

- Hot standby: "a backup server application remains initialized, clients connect to both
  the primary and backup servers at startup, and the backup server data is synchronized
  from the primary server"
  (https://docs.genesys.com/Documentation/TS/8.1.1/BWCSTAConnector/CSTARedundancySupport).
- After a lost connection, "if a redundant process is configured, the application makes
  alternate attempts to restore the failed communication session and to establish a
  session with the redundant process"
  (https://enu.docs.genesys.com/Documentation/FR/8.5.0/Dep/ADDP).
- reconnect-tout, default 5 seconds: "the time interval after which a remote T-Server
  attempts to connect to this T-Server after an unsuccessful attempt or a lost
  connection" (https://docs.genesys.com/Documentation/TS/8.1.1/TSCSTA/TCExtrouterSection).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
import yaml
from helpers import wait_until
from hypothesis import given, settings
from hypothesis import strategies as st

from orsim.cluster._plan import confserv_place, launched_apps
from orsim.config import RECONNECT_TIMEOUT, lint_text, load_database
from orsim.sim import open_sim_cluster
from orsim.tserver import CallLedger, TServer
from orsim.tserver._journal import LedgerJournal
from orsim.tserver._ledger import EpochTaken, RouteRefused
from orsim.tserver._server import REPLICA_ACK_TIMEOUT

ROOT = Path(__file__).resolve().parent.parent
TOPOLOGY = ROOT / "scenarios" / "topologies" / "two-nodes-redundant-servers.yaml"
ORS_APPS = ("ORS_1", "ORS_1_B", "ORS_2", "ORS_2_B")


# -- the journal (sans-IO) ---------------------------------------------------------------

_CALLS = [f"c{i}" for i in range(6)]
_command = st.one_of(
    st.tuples(st.just("create"), st.sampled_from(_CALLS), st.floats(0.1, 5.0)),
    st.tuples(
        st.just("route"),
        st.sampled_from([*_CALLS, "nobody"]),
        st.sampled_from(["ORS_1", "ORS_1_B", "ORS_2"]),
        st.integers(0, 3),
        st.sampled_from([None, "Agent_1", "Agent_2"]),
    ),
    st.tuples(
        st.just("fence"), st.integers(101, 102), st.integers(0, 3), st.sampled_from([None, "ORS_1"])
    ),
    st.tuples(st.just("claim"), st.integers(101, 102), st.integers(0, 3), st.integers(0, 4)),
    st.tuples(st.just("expire")),
    st.tuples(st.just("default_dn"), st.sampled_from(["", "9999"])),
    st.tuples(st.just("tick"), st.floats(0.0, 3.0)),
)


def _run(journal: LedgerJournal, commands: list[tuple[Any, ...]]) -> None:
    """Apply ``commands`` as a primary T-Server would (refusals included)."""
    now = 0.0
    for command in commands:
        kind, *args = command
        try:
            if kind == "create":
                if journal.ledger.get(args[0]) is None:
                    journal.create(args[0], "5000", now, now + args[1])
            elif kind == "route":
                call, app, epoch, target = args
                journal.route(call, app=app, node_id=101, epoch=epoch, now=now, target=target)
            elif kind == "fence":
                journal.fence(args[0], args[1], args[2])
            elif kind == "claim":
                journal.claim(args[0], args[1], args[2], "ORS_1_B")
            elif kind == "expire":
                journal.expire(now)
            elif kind == "default_dn":
                journal.set_default_dn(args[0])
            else:
                now += args[0]
        except (RouteRefused, EpochTaken):
            pass


def _state(ledger: CallLedger) -> tuple[Any, ...]:
    return (
        [r.to_wire() for r in ledger.records()],
        ledger.counts().to_wire(),
        {n: ledger.epoch_of(n) for n in (101, 102)},
        ledger.default_dn,
    )


@settings(max_examples=200, deadline=None)
@given(st.lists(_command, max_size=60))
def test_backup_replaying_the_journal_holds_the_same_ledger(
    commands: list[tuple[Any, ...]],
) -> None:
    """Hot standby "the backup server data is synchronized from the primary": a backup
    that applies the primary's journal ops, in order, holds an equal ledger (records,
    epochs, every counter, refusals included), whatever the commands were."""
    primary = LedgerJournal()
    _run(primary, commands)
    backup = LedgerJournal()
    for op in primary.ops:
        backup.apply(op)
    assert _state(backup.ledger) == _state(primary.ledger)
    assert backup.ops == primary.ops


async def test_a_lone_tserver_keeps_no_journal() -> None:
    """A T-Server without a backup writes no ops (nothing to keep in step)."""
    db = load_database(ROOT / "scenarios" / "topologies" / "two-nodes.yaml")
    server = TServer.from_application(db.applications["SIP_Server"])
    server.new_call("5000")
    assert server.mode == "primary"
    assert server.journal.ops == []


# -- the pair, in virtual time (the simulation runs the production servers) ------------


async def _wait(predicate: Any, timeout: float) -> None:
    await wait_until(predicate, timeout, poll=0.01)


async def test_backup_tserver_takes_over_with_the_whole_ledger(autojump_clock: Any) -> None:
    """Hot standby: SIP_Server_B holds SIP_Server's data; killed under load, the primary
    is replaced at once by a twin with every call it had offered (none missing, none
    changed), the calls that were waiting for a route are routed after the switch, and
    the ledger ends whole: 0 lost, 0 routed twice."""
    db = load_database(TOPOLOGY)
    async with open_sim_cluster(db, seed=3) as sim:
        primary, backup = sim.tservers["SIP_Server"], sim.tservers["SIP_Server_B"]
        await _wait(lambda: backup.mode == "backup", 10)
        assert primary.mode == "primary"
        await sim.set_option("URS", "urs", "think-time-ms", "300")
        await sim.request("generate", rate=30)
        await _wait(lambda: primary.ledger.counts().routed >= 40, 10)
        before = {r.call_id: r for r in primary.ledger.records()}
        waiting = {c for c, r in before.items() if r.state == "in_flight"}
        assert waiting, "the crash must catch calls waiting for a route"
        sim.crash("SIP_Server")
        assert backup.mode == "backup"
        await _wait(lambda: backup.mode == "primary", 1)
        after = {r.call_id: r for r in backup.ledger.records()}
        # Every call the primary had made is there, as it was (routed ones routed by
        # the same application at the same epoch).
        for call_id, record in before.items():
            assert call_id in after
            if record.state == "routed":
                assert after[call_id] == record
        await _wait(lambda: backup.ledger.counts().routed >= 200, 20)
        await sim.request("stop_generator")
        await _wait(lambda: backup.ledger.counts().in_flight == 0, 15)
        counts = backup.ledger.counts()
        assert counts.lost == 0 and counts.duplicates == 0
        assert all(backup.ledger.get(c).state == "routed" for c in waiting)  # type: ignore[union-attr]
        assert (await sim.ledger()).created == counts.created  # the driver reads B


async def test_restarted_primary_tserver_comes_back_as_backup_and_catches_up(
    autojump_clock: Any,
) -> None:
    """Hot standby after a switch: the old primary, started again, finds its twin primary
    and follows it: mode backup, and its copy of the ledger becomes equal to the acting
    one (the whole journal from the first op), load and all."""
    db = load_database(TOPOLOGY)
    async with open_sim_cluster(db, seed=6) as sim:
        backup = sim.tservers["SIP_Server_B"]
        await _wait(lambda: backup.mode == "backup", 10)
        await sim.request("generate", rate=20)
        await _wait(lambda: backup.ledger.counts().routed >= 20, 10)
        sim.crash("SIP_Server")
        await _wait(lambda: backup.mode == "primary", 1)
        await trio.sleep(2)
        again = await sim.start("SIP_Server")
        assert isinstance(again, TServer)
        await _wait(lambda: again.mode == "backup", 5)
        await sim.request("stop_generator")
        await _wait(lambda: backup.ledger.counts().in_flight == 0, 20)
        await _wait(lambda: _state(again.ledger) == _state(backup.ledger), 5)
        assert backup.mode == "primary" and backup.generation == again.generation


async def test_a_frozen_backup_tserver_does_not_stall_routing(autojump_clock: Any) -> None:
    """No hostage: a primary whose backup stops confirming (SIGSTOP) drops it after
    REPLICA_ACK_TIMEOUT and routes on alone; the thawed backup follows again from the
    first op and holds the same ledger."""
    db = load_database(TOPOLOGY)
    async with open_sim_cluster(db, seed=7) as sim:
        primary, backup = sim.tservers["SIP_Server"], sim.tservers["SIP_Server_B"]
        await _wait(lambda: backup.mode == "backup", 10)
        await sim.request("generate", rate=20)
        await _wait(lambda: primary.ledger.counts().routed >= 20, 10)
        sim.freeze("SIP_Server_B")
        routed = primary.ledger.counts().routed
        await trio.sleep(REPLICA_ACK_TIMEOUT + 2)
        assert primary.ledger.counts().routed >= routed + 20  # ~2 s of load went through
        sim.thaw("SIP_Server_B")
        await sim.request("stop_generator")
        await _wait(lambda: primary.ledger.counts().in_flight == 0, 20)
        await _wait(lambda: _state(backup.ledger) == _state(primary.ledger), 10)
        counts = primary.ledger.counts()
        assert counts.lost == 0 and counts.duplicates == 0
        assert primary.mode == "primary" and backup.mode == "backup"


async def test_ors_reconnects_to_the_backup_tserver_after_reconnect_timeout(
    autojump_clock: Any,
) -> None:
    """reconnect-tout (default 5 s): an ORS whose T-Server link is lost makes its next
    attempt that long after, to the redundant T-Server: registered on SIP_Server_B not
    before 5 s, and within a second after."""
    assert RECONNECT_TIMEOUT.default_value == 5.0
    db = load_database(TOPOLOGY)
    async with open_sim_cluster(db, seed=4) as sim:
        backup = sim.tservers["SIP_Server_B"]
        await _wait(lambda: backup.mode == "backup", 10)

        def registered() -> set[str]:
            return {c.app for c in backup.status().clients}

        start = trio.current_time()
        sim.crash("SIP_Server")
        await _wait(lambda: backup.mode == "primary", 1)
        await _wait(lambda: registered() >= set(ORS_APPS), 10)
        took = trio.current_time() - start
        assert 5.0 <= took <= 6.0, took


async def test_a_link_dropped_from_a_healthy_tserver_is_restored_after_one_timeout(
    autojump_clock: Any,
) -> None:
    """ORS_1 frozen 1.5 s: SIP_Server gives it up by ADDP as it thaws. The next round,
    reconnect-timeout (5 s) later, tries SIP_Server again first ("restore the failed
    communication session"), so ORS_1 is back on its T-Server after one timeout, and the
    calls it holds meanwhile are routed (router-timeout is 10 s). Before, its one attempt
    went to the backup twin, which refused it, and the next came another 5 s later:
    10 s without a T-Server, and 2 calls lost (found by `orsim search`, seed 61)."""
    db = load_database(TOPOLOGY)
    async with open_sim_cluster(db, seed=0) as sim:
        node, tserver = sim.nodes["ORS_1"], sim.tservers["SIP_Server"]
        await _wait(lambda: node.status().tserver_connected, 10)
        await sim.request("generate", rate=6)
        await trio.sleep(1)
        sim.freeze("ORS_1")
        await trio.sleep(1.5)
        sim.thaw("ORS_1")
        await _wait(lambda: not node.status().tserver_connected, 1)
        lost_at = trio.current_time()
        await _wait(lambda: node.status().tserver_connected, 10)
        took = trio.current_time() - lost_at
        assert 4.99 <= took <= 6.0, took  # one timeout (float sums of virtual time)
        assert "ORS_1" in {c.app for c in tserver.status().clients}
        await sim.request("stop_generator")
        await _wait(lambda: tserver.ledger.counts().in_flight == 0, 20)
        assert tserver.ledger.counts().lost == 0


async def test_ors_alternates_between_urs_and_its_backup(autojump_clock: Any) -> None:
    """ "Alternate attempts" with the redundant process, rounds reconnect-timeout (1 s
    here) apart: both URSes gone, an ORS tries URS and URS_B after 1 s (both refused),
    then again after 2 s, when URS has been started again: it is back on URS then, not
    before."""
    db = load_database(TOPOLOGY)
    async with open_sim_cluster(db, seed=5) as sim:
        node = sim.nodes["ORS_1"]
        await _wait(lambda: node.status().urs_connected, 10)
        start = trio.current_time()
        sim.crash("URS")
        sim.crash("URS_B")
        await trio.sleep(1.5)
        assert not node.status().urs_connected  # URS_B was tried at +1 s: down
        urs = await sim.start("URS")
        await _wait(lambda: node.status().urs_connected, 5)
        took = trio.current_time() - start
        assert 2.0 <= took <= 2.5, took
        assert "ORS_1" in {c.app for c in urs.status().clients}  # type: ignore[union-attr]


def test_the_launcher_starts_both_twins_with_the_servers() -> None:
    """``cluster up`` starts a T-Server's and a URS's backup in the servers' wave (their
    Application is in the database like any other); the Configuration Server goes with
    the configured primary SIP Server."""
    db = load_database(TOPOLOGY)
    servers = [a.name for a in launched_apps(db) if a.type != "OrchestrationServer"]
    assert servers == ["SIP_Server", "SIP_Server_B", "URS", "URS_B"]
    assert confserv_place(db) == ("local", "127.0.0.1")
    assert db.applications["SIP_Server_B"].primary == "SIP_Server"


# -- lint --------------------------------------------------------------------------------


def _redundant() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(TOPOLOGY.read_text())
    return data


def _problems(data: dict[str, Any]) -> list[str]:
    return list(lint_text(yaml.safe_dump(data, sort_keys=False), "t.yaml").problems)


def test_the_shipped_redundant_topology_is_valid() -> None:
    """The library's topology with twins passes lint."""
    assert _problems(_redundant()) == []


def test_a_tserver_backup_of_another_type_is_an_error() -> None:
    """A backup must be of its primary's type: a TServer cannot back a SIPServer."""
    data = _redundant()
    data["applications"]["SIP_Server_B"]["type"] = "TServer"
    problems = _problems(data)
    assert any(
        "application 'SIP_Server'" in p and "backup 'SIP_Server_B' is a TServer" in p
        for p in problems
    ), problems


def test_a_tserver_twin_with_other_routing_points_is_an_error() -> None:
    """A hot-standby T-Server must serve its primary's routing points."""
    data = _redundant()
    data["applications"]["SIP_Server_B"]["options"]["routing-points"] = {"5001": "default"}
    problems = _problems(data)
    assert len(problems) == 1, problems
    assert "application 'SIP_Server_B'" in problems[0]
    assert "serves routing points 5001 but its primary 'SIP_Server' serves 5000" in problems[0]


@pytest.mark.parametrize("twin", ["SIP_Server_B", "URS_B"])
def test_a_connection_to_a_backup_server_is_an_error(twin: str) -> None:
    """A client lists the primary: it finds the backup through the backup link."""
    data = _redundant()
    primary = twin.removesuffix("_B")
    conns = data["applications"]["ORS_2"]["connections"]
    for conn in conns:
        if conn["server"] == primary:
            conn["server"] = twin
    problems = _problems(data)
    assert any(
        "application 'ORS_2'" in p and f"'{twin}' is the backup of '{primary}'" in p
        for p in problems
    ), problems


# -- real processes over TCP -------------------------------------------------------------


@pytest.mark.slow
def test_library_redundant_server_scenarios_pass_on_real_processes(tmp_path: Path) -> None:
    """Killing the primary SIP Server, then the primary URS, under load on a real
    cluster: each scenario ends with 0 lost, 0 duplicated (the ledger read from the
    twin that took over)."""
    files = [str(ROOT / "scenarios" / f"{n}-crash-under-load.yaml") for n in ("tserver", "urs")]
    proc = subprocess.run(
        [sys.executable, "-m", "orsim.cli", "scenario", "run", *files,
         "--run-dir", str(tmp_path / "runs")],
        capture_output=True, text=True, timeout=240, check=False, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "7 passed, 0 failed"
