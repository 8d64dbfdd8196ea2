"""Live option changes applied to a configuration database (pure: no I/O).

A change names an object (an Application or a Transaction, by name), a section, a key and
a new value (None: delete). Applying it returns a new database; the old one is untouched,
so a rejected or failed write never leaves a half-changed database behind.
"""

from __future__ import annotations

from typing import Literal

import attrs

from orsim.config import ConfigDatabase, Options, list_option_problem, option_value_problem
from orsim.errors import RequestRefused

Kind = Literal["application", "transaction"]


@attrs.frozen
class Change:
    """Set (``value`` a string) or delete (``value`` None) one option of one object."""

    object: str
    section: str
    key: str
    value: str | None


def object_kind(db: ConfigDatabase, name: str) -> Kind:
    """Whether ``name`` is an application or a transaction.

    Raises:
        RequestRefused: ``not_found``.
    """
    if name in db.applications:
        return "application"
    if name in db.transactions:
        return "transaction"
    raise RequestRefused("not_found", f"object '{name}' not found (no application or transaction)")


def options_of(db: ConfigDatabase, kind: Kind, name: str) -> Options:
    """The options (application) or annex (transaction) of an object."""
    if kind == "application":
        return db.applications[name].options
    return db.transactions[name].annex


def check_change(db: ConfigDatabase, change: Change) -> Kind:
    """Validate ``change`` against ``db`` without applying it.

    Raises:
        RequestRefused: ``not_found`` (object, or the option to delete), ``bad_request``
            (empty names), ``not_allowed`` (a section/option a cluster list may not
            carry) or ``bad_value``.
    """
    kind = object_kind(db, change.object)
    if not change.section.strip() or not change.key.strip():
        raise RequestRefused("bad_request", "section and key must not be empty")
    if change.value is None:
        if change.key not in options_of(db, kind, change.object).get(change.section, {}):
            raise RequestRefused(
                "not_found",
                f"option {change.section}/{change.key} not found in {kind} '{change.object}'",
            )
        return kind
    if kind == "transaction":
        reason = list_option_problem(change.section, change.key)
        if reason is not None:
            raise RequestRefused("not_allowed", f"transaction '{change.object}': {reason}")
    problem = option_value_problem(change.section, change.key, change.value)
    if problem is not None:
        raise RequestRefused("bad_value", f"{kind} '{change.object}': {problem}")
    return kind


def apply_change(db: ConfigDatabase, change: Change) -> tuple[ConfigDatabase, Kind]:
    """``db`` with ``change`` applied, and the kind of the changed object.

    Raises:
        RequestRefused: as ``check_change``.
    """
    kind = check_change(db, change)
    options = {s: dict(kv) for s, kv in options_of(db, kind, change.object).items()}
    if change.value is None:
        del options[change.section][change.key]
        if not options[change.section]:
            del options[change.section]
    else:
        options.setdefault(change.section, {})[change.key] = change.value
    if kind == "application":
        app = attrs.evolve(db.applications[change.object], options=options)
        apps = {**db.applications, change.object: app}
        return attrs.evolve(db, applications=apps), kind
    txn = attrs.evolve(db.transactions[change.object], annex=options)
    txns = {**db.transactions, change.object: txn}
    return attrs.evolve(db, transactions=txns), kind


def apply_all(db: ConfigDatabase, changes: list[Change]) -> tuple[ConfigDatabase, Kind]:
    """Apply several changes to one object at once: all of them or none.

    Raises:
        RequestRefused: the first change that cannot be applied (``db`` is unchanged).
    """
    kind: Kind = "application"
    for change in changes:
        db, kind = apply_change(db, change)
    return db, kind
