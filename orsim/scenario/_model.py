"""A loaded scenario: frozen values, one class per kind of step and expectation.

The YAML form (``orsim/scenario/schema.json``) is turned into these by ``_load``; the
runner and the expectation checks only ever see these, never raw YAML.
"""

from __future__ import annotations

from typing import Literal

import attrs

from orsim.config import ConfigDatabase

#: The launcher's name for the Configuration Server process (not a database application).
CONFSERV_APP = "confserv"

Signal = Literal["KILL", "TERM", "STOP", "CONT"]
CountName = Literal["created", "routed", "lost", "duplicates", "in_flight"]


# --- steps -------------------------------------------------------------------------------


@attrs.frozen
class Start:
    """Start applications that are not running (``None``: every one that is down)."""

    apps: tuple[str, ...] | None


@attrs.frozen
class WaitMode:
    app: str
    mode: str


@attrs.frozen
class WaitReady:
    """Every application is ``primary`` or ``backup``."""


@attrs.frozen
class WaitCount:
    """A cluster-level call count reaches a bound."""

    count: str
    at_least: int | None = None
    at_most: int | None = None


WaitCondition = WaitMode | WaitReady | WaitCount


@attrs.frozen
class Wait:
    condition: WaitCondition
    timeout: float


@attrs.frozen
class Load:
    rate: float
    duration: float | None


@attrs.frozen
class StopLoad:
    pass


@attrs.frozen
class SendSignal:
    """``kill`` (any signal), ``stop`` (STOP), ``stop-gracefully`` (TERM: graceful
    shutdown) and ``continue`` (CONT)."""

    app: str
    signal: Signal


@attrs.frozen
class Restart:
    """Stop an application with ``signal``, wait until it is down, start it again."""

    app: str
    signal: Signal


@attrs.frozen
class Partition:
    """Cut (``heal``: restore) every link between A and B: applications or hosts."""

    a: str
    b: str
    heal: bool = False


@attrs.frozen
class Isolate:
    """Cut (``heal``: restore) every link between ``host``'s applications and any
    application on another host."""

    host: str
    heal: bool = False


@attrs.frozen
class Delay:
    a: str
    b: str
    ms: float


@attrs.frozen
class Switchover:
    node: str | int


@attrs.frozen
class SetOption:
    object: str
    section: str
    key: str
    value: str


@attrs.frozen
class Sleep:
    low: float
    high: float  # == low unless the scenario asked for a seeded random pause


# --- expectations ------------------------------------------------------------------------


@attrs.frozen
class ModeWithin:
    """Checked where it stands in the timeline: ``app`` reaches ``mode`` within ``within`` s."""

    app: str
    mode: str
    within: float


@attrs.frozen
class CallsLost:
    at_most: int


@attrs.frozen
class CallsDuplicated:
    at_most: int


@attrs.frozen
class FailoverGap:
    below_ms: float
    node: str | int | None = None
    fault_step: int | None = None


@attrs.frozen
class CallWait:
    """Every call offered was routed, each less than ``below_ms`` after it was offered."""

    below_ms: float


@attrs.frozen
class SessionsRecovered:
    at_least: int
    node: str | int | None = None
    fault_step: int | None = None


@attrs.frozen
class SplitBrainNever:
    pass


Expectation = (
    ModeWithin
    | CallsLost
    | CallsDuplicated
    | FailoverGap
    | CallWait
    | SessionsRecovered
    | SplitBrainNever
)
#: Expectations checked over the whole run once the last step is done.
RunWide = CallsLost | CallsDuplicated | FailoverGap | CallWait | SessionsRecovered | SplitBrainNever


@attrs.frozen
class Expect:
    expectation: Expectation


Action = (
    Start
    | Wait
    | Load
    | StopLoad
    | SendSignal
    | Restart
    | Partition
    | Isolate
    | Delay
    | Switchover
    | SetOption
    | Sleep
    | Expect
)


@attrs.frozen
class Step:
    """One step of the timeline. ``number`` counts from 1, as users read the file."""

    number: int
    verb: str  # the YAML key: "kill", "stop", "set-option", ...
    action: Action

    @property
    def is_fault(self) -> bool:
        """Steps that break something (drawn as fault markers, measured from)."""
        return self.verb in FAULT_VERBS

    @property
    def is_intervention(self) -> bool:
        """Steps drawn as markers in the report: faults and their repairs."""
        return self.verb in FAULT_VERBS or self.verb in REPAIR_VERBS


FAULT_VERBS = frozenset(
    {"kill", "stop", "stop-gracefully", "restart", "partition", "isolate", "delay", "switchover"}
)
REPAIR_VERBS = frozenset({"continue", "start", "heal", "set-option"})


@attrs.frozen(kw_only=True)
class Scenario:
    """A validated scenario and the topology it runs on."""

    source: str
    name: str
    description: str
    topology_path: str
    topology: ConfigDatabase = attrs.field(eq=False, repr=False)
    seed: int | None
    sample_interval: float
    settle_timeout: float
    steps: tuple[Step, ...]

    def host_apps(self, host: str) -> tuple[str, ...]:
        """The applications of the topology placed on ``host`` (none: not a host)."""
        return tuple(sorted(a.name for a in self.topology.applications.values() if a.host == host))

    def node_of(self, app: str) -> str | None:
        """The Node (its primary application's name) an ORS application belongs to."""
        found = self.topology.applications.get(app)
        if found is None or found.type != "OrchestrationServer":
            return None
        return found.primary_name

    def node_apps(self, node: str) -> tuple[str, ...]:
        """The applications of a Node: its primary then its backup (if any)."""
        primary = self.topology.applications[node]
        return (node,) if primary.backup is None else (node, primary.backup)

    def resolve_node(self, ref: str | int) -> str | None:
        """A Node reference (any of its apps' names, or its Node ID) -> primary app name."""
        if isinstance(ref, int):
            for app in self.topology.applications.values():
                if app.type == "OrchestrationServer" and not app.is_backup and app.dbid == ref:
                    return app.name
            return None
        return self.node_of(ref)

    @property
    def nodes(self) -> tuple[str, ...]:
        """Every Node of the topology, by primary application name, sorted."""
        return tuple(
            sorted(
                a.name
                for a in self.topology.applications.values()
                if a.type == "OrchestrationServer" and not a.is_backup
            )
        )

    @property
    def expectations(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if isinstance(s.action, Expect))
