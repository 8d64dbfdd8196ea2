"""ADDP keepalive as a pure state machine (no clock of its own).

As Genesys times it (ors-domain.md section 8): when a connection has been silent for
the local ``addp-timeout`` T, this side sends a poll; if nothing arrives within the same
interval, the connection is lost. A peer that goes silent is therefore given up between
T and 2T after its last frame. Any frame counts as an answer, not only the poll's.
A timeout of 0 turns detection off, as in Genesys.
"""

from __future__ import annotations

import enum
import math

import attrs


class AddpAction(enum.Enum):
    """What the connection must do after ``poll``."""

    NOTHING = "nothing"
    PING = "ping"
    LOST = "lost"


@attrs.define
class Addp:
    """Tracks traffic on one connection; the caller supplies ``now`` from its clock."""

    timeout: float
    last_rx: float = 0.0
    #: When the outstanding poll was sent; -inf while none is (a frame since answers it).
    last_ping: float = -math.inf

    @property
    def enabled(self) -> bool:
        return self.timeout > 0

    @property
    def polling(self) -> bool:
        """Whether a poll was sent and nothing has arrived since."""
        return self.last_ping > self.last_rx

    def on_receive(self, now: float) -> None:
        """Any frame from the peer proves it alive (and answers an outstanding poll)."""
        self.last_rx = now

    def next_deadline(self) -> float:
        """The time at which ``poll`` may have something to do: the end of the silence
        that calls for a poll, or of the wait for its answer."""
        if not self.enabled:
            return math.inf
        if self.polling:
            return self.last_ping + self.timeout
        return self.last_rx + self.timeout

    def poll(self, now: float) -> AddpAction:
        """Decide, at ``now``, whether to send a poll or give the peer up."""
        if not self.enabled:
            return AddpAction.NOTHING
        if self.polling:
            if now >= self.last_ping + self.timeout:
                return AddpAction.LOST
            return AddpAction.NOTHING
        if now >= self.last_rx + self.timeout:
            self.last_ping = now
            return AddpAction.PING
        return AddpAction.NOTHING


#: ``addp-trace`` values: which sides log their polls and the answers to them.
_NEITHER = ("off", "false", "no")
_LOCAL = ("local", "on", "true", "yes")
_REMOTE = ("remote",)
_BOTH = ("both", "full")
#: Every ``addp-trace`` value (the option registry's choices).
ADDP_TRACE_VALUES = (*_NEITHER, *_LOCAL, *_REMOTE, *_BOTH)


def trace_sides(value: str) -> tuple[bool, bool]:
    """(this side traces, the other side is asked to) for an ``addp-trace`` value:
    ``off``/``false``/``no`` neither, ``local``/``on``/``true``/``yes`` this side,
    ``remote`` the other side, ``both``/``full`` both."""
    value = value.strip().lower()
    return value in _LOCAL or value in _BOTH, value in _REMOTE or value in _BOTH
