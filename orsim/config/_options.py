"""Every option orsim understands, each defined once (reference section 8 and 9).

The loader, ``config lint``, the Configuration Server's live-change checks, the node, the
T-Server and the URS all read these definitions; ``orsim config options`` prints them and
the README's option table is rendered from them. An option's name appears in code only
here: everywhere else it is reached through its constant or ``find``.
"""

from __future__ import annotations

import attrs

from orsim.config._option import (
    ANY_KEY,
    BadValue,
    Choice,
    Number,
    Option,
    Text,
    WholeNumber,
)
from orsim.logs import VERBOSE_LEVELS
from orsim.wire import ADDP_TRACE_VALUES

ORS = "ORS"
TSERVER = "T-Server"
URS = "URS"

#: Option sections a cluster List transaction may carry besides ``cluster`` itself
#: (reference section 5).
LIST_OPTION_SECTIONS = (
    "orchestration",
    "scxml",
    "persistence",
    "elasticsearch",
    "performance-alarms",
    "mcr",
)

# -- ORS ----------------------------------------------------------------------------------

CALL_WATCHING_TIMEOUT: Option[int] = Option(
    section="orchestration", key="call-watching-timeout", applies_to=ORS, default="5000",
    # Whole milliseconds, as the reference documents it (the node used to read a float).
    parse=WholeNumber("milliseconds"), unit="ms",
    # Genesys refuses values outside 1000-300000; orsim takes shorter ones so tests run
    # fast and warns (reference section 9). An empty value is refused, not the default.
    advised=(1000, 300000), blank_is_default=False, dynamic=True,
    effect="How long the backup and the Reserved Node watch a new call for its session "
    "before creating it themselves. Applied at once to calls that arrive afterwards "
    "(a real ORS reads it at start-up only).",
)  # fmt: skip
BACKUP_SYNCH_MAX_AGE: Option[int] = Option(
    section="orchestration", key="backup-synch-max-age", applies_to=ORS, default="600",
    parse=WholeNumber("seconds"), unit="s", dynamic=True, simulated=False,
    effect="How long a primary keeps sync data for its backup. Kept, no effect: orsim's "
    "backup carries sessions on from the shared store.",
)  # fmt: skip
BACKUP_SYNCH_MAX_BUFFER: Option[int] = Option(
    section="orchestration", key="backup-synch-max-buffer", applies_to=ORS, default="100",
    parse=WholeNumber("KB"), unit="KB", dynamic=True, simulated=False,
    effect="The primary's sync buffer for its backup. Kept, no effect (as max-age).",
)  # fmt: skip
PEER_ADDP_TIMEOUT: Option[float] = Option(
    section="orchestration", key="peer-addp-timeout", applies_to=ORS, default="2",
    parse=Number("seconds"), unit="s",
    effect="orsim's own: the ADDP timeout of a link to another ORS application that the "
    "connections list does not give one; short, so a hung primary is replaced quickly.",
)  # fmt: skip
PEER_HEARTBEAT: Option[float] = Option(
    section="orchestration", key="peer-heartbeat", applies_to=ORS, default="0.25",
    parse=Number("seconds", above=True), unit="s",
    effect="orsim's own: how often an ORS application heartbeats on its peer links and "
    "checks its Node's epoch in the store.",
)  # fmt: skip
STORE: Option[str] = Option(
    section="persistence", key="store", applies_to=ORS, default="sqlite:///sessions.db",
    parse=Text("sqlite:///PATH or redis://HOST:PORT/DB"),
    effect="The cluster's shared session store; every Node of a cluster must use the same "
    "one. A SQLite file is served by one store server process; Redis spans machines.",
)  # fmt: skip
SYSTEM_ID: Option[str] = Option(
    section="scxml", key="system-id", applies_to=ORS, default=None,
    parse=Text("any text"), simulated=False, list_allowed=False,
    effect="Kept, no effect; refused in a cluster list (each ORS has its own).",
)  # fmt: skip
LOG_VERBOSE: Option[str] = Option(
    section="log", key="verbose", applies_to=ORS, default=None,
    # Parses to the structlog level the Genesys verbose value maps to.
    parse=Choice(VERBOSE_LEVELS), dynamic=True,
    # Refusing it would break nothing in a running cluster: the node logs and ignores it.
    refuse_bad=False,
    effect="A running node's log level: all and debug log debug events, trace, interaction "
    "and standard info, none warnings only (never hidden). Unset: the start level.",
)  # fmt: skip
CLUSTER: Option[str] = Option(
    section="cluster", key=ANY_KEY, applies_to=ORS, default=None,
    parse=Text("data center name", required=True), blank_is_default=False, noun="Node '{key}'",
    effect="The Nodes of a cluster: each key a primary ORS application, its value the Node's "
    "data center. In a cluster list's annex, or (legacy) in the ORS applications' "
    "own options.",
)  # fmt: skip

# -- T-Server -----------------------------------------------------------------------------

ROUTER_TIMEOUT: Option[float] = Option(
    section="TServer", key="router-timeout", applies_to=TSERVER, default="10",
    parse=Number("seconds", above=True), unit="s", dynamic=True,
    effect="A call not routed within this time goes to default-dn if one is set, else it "
    "is counted lost.",
)  # fmt: skip
DEFAULT_DN: Option[str] = Option(
    section="TServer", key="default-dn", applies_to=TSERVER, default="",
    parse=Text("a DN, or empty", strip=True), dynamic=True,
    effect="Where a call not routed in time is sent (counted default_routed, not lost); "
    "empty: nowhere.",
)  # fmt: skip
DEFAULT_REDIRECTION_LIMIT: Option[int] = Option(
    section="TServer", key="default-redirection-limit", applies_to=TSERVER, default="4",
    parse=WholeNumber("redirections"), dynamic=True, simulated=False,
    effect="Kept, no effect: a call sent to default-dn is not offered again (logged).",
)  # fmt: skip
ROUTING_POINTS: Option[str] = Option(
    section="routing-points", key=ANY_KEY, applies_to=TSERVER, default=None,
    parse=Text("strategy name"), dynamic=True,
    effect="Each key a routing point DN, its value the strategy loaded there: the T-Server "
    "offers calls on these DNs and ORS applications register on them.",
)  # fmt: skip

# -- URS ----------------------------------------------------------------------------------

URS_STRATEGIES = ("round-robin", "least-busy")
DEFAULT_URS_TARGETS = ("Agent_1", "Agent_2", "Agent_3", "Agent_4")


@attrs.frozen
class _Targets:
    """A comma list of target names, none twice (no name at all: the default ones)."""

    @property
    def range(self) -> str:
        return "comma list of names, none twice"

    def __call__(self, text: str) -> tuple[str, ...]:
        targets = tuple(t.strip() for t in text.split(",") if t.strip())
        if not targets:
            return DEFAULT_URS_TARGETS
        if len(set(targets)) != len(targets):
            raise BadValue(f"names a target twice: {text!r}")
        return targets


URS_TARGETS: Option[tuple[str, ...]] = Option(
    section="urs", key="targets", applies_to=URS, default=",".join(DEFAULT_URS_TARGETS),
    parse=_Targets(), dynamic=True,
    effect="The targets the URS chooses among (a live change keeps the load of those kept).",
)  # fmt: skip
URS_STRATEGY: Option[str] = Option(
    section="urs", key="strategy", applies_to=URS, default=URS_STRATEGIES[0],
    parse=Choice.of(*URS_STRATEGIES), dynamic=True,
    effect="round-robin: targets in turn; least-busy: a target holding the fewest calls "
    "(chosen, not yet released).",
)  # fmt: skip
URS_THINK_TIME: Option[float] = Option(
    section="urs", key="think-time-ms", applies_to=URS, default="0",
    parse=Number("milliseconds"), unit="ms", dynamic=True,
    effect="orsim's own: a delay before each answer, to model a slow strategy.",
)  # fmt: skip

# -- connections --------------------------------------------------------------------------

#: The ``connection`` pseudo-section: parameters of an entry of a connections list.
CONNECTION = "connection"

ADDP_TIMEOUT: Option[float] = Option(
    section=CONNECTION, key="addp-timeout", applies_to="any", default="0",
    parse=Number("seconds"), unit="s", blank_is_default=False, set_in="connection",
    effect="ADDP on this link: after this long without a frame this side polls, and gives "
    "the peer up if nothing arrives within as long again (loss seen between T and "
    "2T, as in Genesys). 0: not watched.",
)  # fmt: skip
ADDP_REMOTE_TIMEOUT: Option[float] = Option(
    section=CONNECTION, key="addp-remote-timeout", applies_to="any", default="0",
    parse=Number("seconds"), unit="s", blank_is_default=False, set_in="connection",
    effect="The ADDP timeout the server at the other end is asked to use on this link.",
)  # fmt: skip
ADDP_TRACE: Option[str] = Option(
    section=CONNECTION, key="addp-trace", applies_to="any", default="off",
    parse=Choice.of(*ADDP_TRACE_VALUES),
    blank_is_default=False, set_in="connection",
    effect="Which side logs its ADDP traffic: its polls (addp_poll), their answers "
    "(addp_answer), the polls it answers (addp_polled); local/on this one, remote "
    "the server, both/full both. A loss is always logged (addp_timeout).",
)  # fmt: skip

RECONNECT_TIMEOUT: Option[float] = Option(
    # Genesys' reconnect-tout (T-Server extrouter section): "the time interval after
    # which a remote T-Server attempts to connect to this T-Server after an unsuccessful
    # attempt or a lost connection", default 5 seconds:
    # https://docs.genesys.com/Documentation/TS/8.1.1/TSCSTA/TCExtrouterSection
    section=CONNECTION, key="reconnect-timeout", applies_to="any", default="5",
    parse=Number("seconds"), unit="s", set_in="connection",
    effect="A link to a server with a backup (a redundant T-Server or URS): once lost, "
    "the next round of attempts waits this long, then tries the lost server and, if it "
    "does not take the link, its twin at once; a round in which both failed is followed "
    "by the next this long after. A server without a backup is retried at once, then "
    "with a backoff up to 1 s (orsim's own).",
)  # fmt: skip

#: Every definition, in the order ``orsim config options`` and the README list them.
OPTIONS: tuple[Option[object], ...] = (
    CALL_WATCHING_TIMEOUT,
    BACKUP_SYNCH_MAX_AGE,
    BACKUP_SYNCH_MAX_BUFFER,
    PEER_ADDP_TIMEOUT,
    PEER_HEARTBEAT,
    STORE,
    SYSTEM_ID,
    LOG_VERBOSE,
    CLUSTER,
    ROUTER_TIMEOUT,
    DEFAULT_DN,
    DEFAULT_REDIRECTION_LIMIT,
    ROUTING_POINTS,
    URS_TARGETS,
    URS_STRATEGY,
    URS_THINK_TIME,
    ADDP_TIMEOUT,
    ADDP_REMOTE_TIMEOUT,
    ADDP_TRACE,
    RECONNECT_TIMEOUT,
)
#: The parameters of a connections-list entry, in order.
CONNECTION_OPTIONS = tuple(o for o in OPTIONS if o.set_in == "connection")

_BY_NAME = {(o.section, o.key): o for o in OPTIONS if o.set_in == "options"}


def find(section: str, key: str) -> Option[object] | None:
    """The definition of option ``section/key`` set in options (None: orsim has none)."""
    return _BY_NAME.get((section, key)) or _BY_NAME.get((section, ANY_KEY))


def is_logging_section(section: str) -> bool:
    """``log``, ``log-extended``, ``log-filter``... (every ``log*`` section)."""
    return section.startswith(LOG_VERBOSE.section)


def takes_effect(section: str, key: str) -> str:
    """When a change of ``section/key`` takes effect in a running node.

    An option without a definition takes effect after a restart, except in the logging
    sections, which Genesys applies at once (reference section 8).
    """
    option = find(section, key)
    if option is not None:
        return option.takes_effect
    return "at once" if is_logging_section(section) else "after restart"
