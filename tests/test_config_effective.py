"""Effective options (the list wins) and the ORS node start-up requirement checks."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from orsim.config import (
    AppConnection,
    Application,
    Options,
    Transaction,
    check_node_cluster,
    effective_options,
    is_logging_section,
    list_option_problem,
)

SECTIONS = st.sampled_from(
    ["orchestration", "scxml", "persistence", "mcr", "log", "log-extended", "TServer", "x"]
)
KEYS = st.sampled_from(["system-id", "call-watching-timeout", "store", "verbose", "a", "b"])
VALUES = st.text(max_size=8)
OPTIONS = st.dictionaries(SECTIONS, st.dictionaries(KEYS, VALUES, max_size=4), max_size=5)


def app(
    name: str = "ORS_1",
    options: Options | None = None,
    *,
    backup: str | None = None,
    primary: str | None = None,
    connections: tuple[AppConnection, ...] = (AppConnection("SIP"), AppConnection("URS")),
) -> Application:
    """An ORS application (a primary with ``backup``, or the backup of ``primary``)."""
    return Application(
        name=name,
        type="OrchestrationServer",
        host="h",
        address="127.0.0.1",
        port=7000,
        backup=backup,
        primary=primary,
        options=options or {},
        connections=connections,
    )


def txn(annex: Options, name: str = "C1") -> Transaction:
    return Transaction(name=name, type="List", tenant="Environment", annex=annex)


@given(app_options=OPTIONS, list_options=OPTIONS)
def test_list_wins_where_it_may_set_the_option(app_options: Options, list_options: Options) -> None:
    """For every option: the list's value where the list sets it (and may), else the app's.

    Logging sections, scxml/system-id and sections a list may not carry never come from
    the list, and each one ignored is reported as a warning.
    """
    eff = effective_options(app(options=app_options), txn(list_options))
    ignored = 0
    for section in set(app_options) | set(list_options):
        for key in set(app_options.get(section, {})) | set(list_options.get(section, {})):
            from_list = key in list_options.get(section, {})
            allowed = list_option_problem(section, key) is None
            got = eff.values.get(section, {}).get(key)
            if from_list and allowed:
                assert got is not None
                assert (got.value, got.origin) == (list_options[section][key], "transaction")
            elif key in app_options.get(section, {}):
                assert got is not None
                assert (got.value, got.origin) == (app_options[section][key], "application")
            else:
                assert got is None
            if from_list and not allowed:
                ignored += 1
                assert (
                    is_logging_section(section)
                    or key == "system-id"
                    or section
                    in (
                        "TServer",
                        "x",
                    )
                )
    assert len(eff.warnings) == ignored


@given(app_options=OPTIONS)
def test_without_cluster_only_the_application(app_options: Options) -> None:
    """Legacy start (no -cluster): exactly the application's options."""
    eff = effective_options(app(options=app_options), None)
    assert eff.plain() == app_options
    assert eff.cluster is None
    assert all(v.origin == "application" for kv in eff.values.values() for v in kv.values())


def test_cluster_section_comes_whole_from_the_list() -> None:
    """Membership is replaced as a whole, not merged key by key."""
    a = app(options={"cluster": {"ORS_1": "A", "ORS_9": "Z"}})
    eff = effective_options(a, txn({"cluster": {"ORS_1": "DC1", "ORS_2": "DC2"}}))
    assert eff.section("cluster") == {"ORS_1": "DC1", "ORS_2": "DC2"}


def test_json_form() -> None:
    """The SPEC form of `config show --json`."""
    a = app(options={"orchestration": {"call-watching-timeout": "300"}, "log": {"verbose": "all"}})
    eff = effective_options(a, txn({"orchestration": {"call-watching-timeout": "250"}}))
    assert eff.to_json() == {
        "app": "ORS_1",
        "cluster": "C1",
        "options": {
            "orchestration": {"call-watching-timeout": {"value": "250", "from": "transaction"}},
            "log": {"verbose": {"value": "all", "from": "application"}},
        },
    }
    assert eff.get("orchestration", "call-watching-timeout") == "250"
    assert eff.get("orchestration", "nope", "d") == "d"


# -- check_node_cluster ---------------------------------------------------------------

SIP = Application(name="SIP", type="SIPServer", host="h", address="a", port=1)
SIP2 = Application(name="SIP2", type="SIPServer", host="h", address="a", port=2)
URS = Application(name="URS", type="RoutingServer", host="h", address="a", port=3)
URS_B = Application(name="URS_B", type="RoutingServer", host="h", address="a", port=4)
CLUSTER = txn({"cluster": {"ORS_1": "DC1", "ORS_2": "DC2"}, "persistence": {"store": "s"}})


def world(*extra: Application) -> dict[str, Application]:
    apps = [
        SIP,
        SIP2,
        URS,
        URS_B,
        app("ORS_1", backup="ORS_1_B"),
        app("ORS_1_B", primary="ORS_1"),
        app("ORS_2", backup="ORS_2_B"),
        app("ORS_2_B", primary="ORS_2"),
        app("ORS_3"),
    ]
    by_name = {a.name: a for a in apps}
    by_name.update({a.name: a for a in extra})
    return by_name


def test_good_node_and_its_backup() -> None:
    apps = world()
    assert check_node_cluster(apps["ORS_1"], CLUSTER, apps) == []
    assert check_node_cluster(apps["ORS_2_B"], CLUSTER, apps) == []


def test_two_urs() -> None:
    conns = (AppConnection("SIP"), AppConnection("URS_A"), AppConnection("URS_B"))
    urs_a = Application(name="URS_A", type="RoutingServer", host="h", address="a", port=5)
    ors2 = app("ORS_2", backup="ORS_2_B", connections=conns)
    apps = world(ors2, urs_a)
    assert check_node_cluster(ors2, CLUSTER, apps) == [
        "application 'ORS_2' lists 2 RoutingServer connections (URS_A, URS_B); "
        "an ORS node must have exactly one"
    ]


def test_not_listed() -> None:
    apps = world()
    assert check_node_cluster(apps["ORS_3"], CLUSTER, apps) == [
        "application 'ORS_3' is not listed in cluster 'C1'"
    ]


def test_backup_of_unlisted_primary() -> None:
    apps = world(app("ORS_3", backup="ORS_3_B"), app("ORS_3_B", primary="ORS_3"))
    problems = check_node_cluster(apps["ORS_3_B"], CLUSTER, apps)
    assert problems == [
        "application 'ORS_3_B' is not in cluster 'C1': neither it nor its primary 'ORS_3' is listed"
    ]


def test_different_tserver() -> None:
    other = app(
        "ORS_2_B", primary="ORS_2", connections=(AppConnection("SIP2"), AppConnection("URS"))
    )
    apps = world(other)
    problems = check_node_cluster(apps["ORS_1"], CLUSTER, apps)
    assert len(problems) == 1
    assert "'ORS_2_B' (Node 'ORS_2') serves SIP2" in problems[0]
    assert "same T-Server" in problems[0]


def test_different_store_uses_effective_options() -> None:
    """The list's store overrides the apps'; without it the apps' own stores differ."""
    apps = world(app("ORS_2", backup="ORS_2_B", options={"persistence": {"store": "other"}}))
    assert check_node_cluster(apps["ORS_1"], CLUSTER, apps) == []
    no_store = txn({"cluster": {"ORS_1": "DC1", "ORS_2": "DC2"}})
    problems = check_node_cluster(apps["ORS_1"], no_store, apps)
    assert len(problems) == 1
    assert "uses persistent storage none but 'ORS_2' (Node 'ORS_2') uses 'other'" in problems[0]


def test_missing_member_and_backup_member() -> None:
    apps = world()
    bad = txn({"cluster": {"ORS_1": "DC1", "Ghost": "DC", "ORS_2_B": "DC"}})
    problems = check_node_cluster(apps["ORS_1"], bad, apps)
    assert "cluster 'C1' lists 'Ghost', which is not an application" in problems
    assert any("'ORS_2_B', a backup application" in p for p in problems)


def test_legacy_cluster_from_app_options() -> None:
    legacy = {"cluster": {"ORS_1": "DC1", "ORS_2": "DC2"}}
    apps = world(
        app("ORS_1", backup="ORS_1_B", options=legacy),
        app("ORS_2", backup="ORS_2_B", options={**legacy, "persistence": {"store": "x"}}),
    )
    problems = check_node_cluster(apps["ORS_1"], None, apps)
    assert len(problems) == 1
    assert "the legacy cluster of 'ORS_1'" in problems[0]


def test_standalone_node_only_needs_one_urs() -> None:
    apps = world()
    assert check_node_cluster(apps["ORS_3"], None, apps) == []
    assert check_node_cluster(URS, None, apps) == [
        "application 'URS' is of type RoutingServer, not OrchestrationServer"
    ]
