"""Known bugs that can be switched on, to prove that ``orsim search`` finds such bugs.

Test-only: nothing is mutated unless ``ORSIM_MUTATION`` names a mutation (read when
this module is first imported, so child processes of a real cluster inherit it) or
``set_mutation`` is called. Each name below is checked at the one place its bug lives.
"""

from __future__ import annotations

import os

#: Every mutation, and the bug it injects.
MUTATIONS: dict[str, str] = {
    "backup-skips-epoch": (
        "a backup taking over does not claim a new epoch in the store: it acts as primary"
        " at the epoch it knows, which is the old primary's"
    ),
    "reserved-ignores-claim": (
        "a Node whose session write is refused because another Node owns the call routes"
        " the call anyway (the Reserved Node ignores the store's claim)"
    ),
    "watcher-ignores-timeout": (
        "watched calls never reach their call-watching-timeout: the Reserved Node never"
        " creates the calls of a Node that went silent"
    ),
    "adoption-skips-fence": (
        "adopting a dead Node's sessions does not fence that Node at the T-Server, so a"
        " Node that was only frozen routes its old calls again when it wakes"
    ),
}

_active: str | None = None


def set_mutation(name: str | None) -> None:
    """Switch one mutation on (None: none). Also sets ``ORSIM_MUTATION`` for children.

    Raises:
        ValueError: ``name`` is not one of ``MUTATIONS``.
    """
    global _active
    if name is not None and name not in MUTATIONS:
        known = ", ".join(MUTATIONS)
        raise ValueError(f"unknown mutation {name!r} (known: {known})")
    _active = name
    if name is None:
        os.environ.pop("ORSIM_MUTATION", None)
    else:
        os.environ["ORSIM_MUTATION"] = name


def mutated(name: str) -> bool:
    """True while the mutation ``name`` is switched on."""
    return _active == name


def active_mutation() -> str | None:
    """The mutation switched on, if any."""
    return _active


set_mutation(os.environ.get("ORSIM_MUTATION") or None)
