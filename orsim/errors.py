"""The small family of orsim errors; the CLI maps each to one line and an exit code.

Exit codes (SPEC section 1): 0 success, 2 usage, 3 configuration, 4 unreachable, 1 other.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_OTHER = 1
EXIT_USAGE = 2
EXIT_CONFIG = 3
EXIT_UNREACHABLE = 4


class OrsimError(Exception):
    """Root of every expected orsim failure."""

    exit_code = EXIT_OTHER


class UsageError(OrsimError):
    """The command line is wrong."""

    exit_code = EXIT_USAGE


class ConfigError(OrsimError):
    """The configuration is missing an object or breaks a rule.

    ``problems`` holds every problem when several were found at once (``config lint``).
    """

    exit_code = EXIT_CONFIG

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems if problems is not None else [message]


class UnreachableError(OrsimError):
    """A required server could not be reached within its timeout."""

    exit_code = EXIT_UNREACHABLE


class ClusterError(OrsimError):
    """The launcher or a scenario could not do what was asked of the cluster."""


class ProtocolError(OrsimError):
    """Bytes or messages that break the orsim wire protocol."""


class LocalProtocolError(ProtocolError):
    """We were asked to send something the protocol does not allow (our misuse)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol does not allow."""


class ConnectionLost(OrsimError):
    """The peer closed the connection or went silent past its ADDP timeout."""


class RequestRefused(OrsimError):
    """A request was refused: raised by a handler to answer with an ``ErrorResponse``,
    and raised to the caller when the peer answers with one.

    ``code`` is a short machine-readable reason, the same string on the wire
    (``not_found``, ``stale_epoch``, ``bad_request``, ...); ``message`` says why.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
