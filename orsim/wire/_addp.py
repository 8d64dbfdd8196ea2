"""ADDP keepalive as a pure state machine (no clock of its own).

Genesys ADDP polls a connection that has been silent for the local timeout and declares it
lost if the poll is not answered. orsim keeps the promise users rely on (a silent peer is
detected *within* ``addp-timeout``) by polling after half the timeout of silence and
declaring the connection lost once nothing at all arrived for the whole timeout.
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
    last_ping: float = -math.inf

    @property
    def enabled(self) -> bool:
        return self.timeout > 0

    def on_receive(self, now: float) -> None:
        """Any frame from the peer proves it alive."""
        self.last_rx = now

    def next_deadline(self) -> float:
        """The time at which ``poll`` may have something to do."""
        if not self.enabled:
            return math.inf
        ping_at = max(self.last_rx + self.timeout / 2, self.last_ping + self.timeout / 4)
        return min(ping_at, self.last_rx + self.timeout)

    def poll(self, now: float) -> AddpAction:
        """Decide, at ``now``, whether to send a poll or give the peer up."""
        if not self.enabled:
            return AddpAction.NOTHING
        if now >= self.last_rx + self.timeout:
            return AddpAction.LOST
        if now >= self.last_rx + self.timeout / 2 and now >= self.last_ping + self.timeout / 4:
            self.last_ping = now
            return AddpAction.PING
        return AddpAction.NOTHING
