"""In-process fuzzing of the wire codec and of every server's dispatch (``make fuzz``).

    python -m orsim.fuzz [--inputs N] [--seed S] [--only codec,node] [--jobs J]

Targets: ``codec`` (framing and message decoding), ``confserv``, ``tserver``, ``urs``
(their request handlers) and ``node`` (an ORS node's pushes and requests, inside a
simulated cluster). Inputs are seeded, so a run can be repeated; no socket is opened.
A crash (an exception that would end a server, or a handler bug) or a hang fails it.
"""

from __future__ import annotations

import trio

from orsim.fuzz._codec import run_codec
from orsim.fuzz._harness import Report, run_target
from orsim.fuzz._targets import TARGETS

#: Every target, in the order reports are printed.
NAMES = ("codec", *TARGETS)


def fuzz(target: str, inputs: int, seed: int = 0) -> Report:
    """Run ``inputs`` inputs against ``target`` (one of NAMES) in this process."""
    if target == "codec":
        return run_codec(inputs, seed)
    return trio.run(run_target, target, TARGETS[target], inputs, seed)


__all__ = ["NAMES", "Report", "fuzz"]
