"""The Configuration Server's protocol: every request, answer and push as a typed message.

Requests and pushes are those of CONTRACTS.md ("Configuration Server"); the JSON of each
is exactly what the server and its clients exchanged as dicts before, and parameters are
checked with the same messages (``'name' must be a non-empty string``, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Self

import attrs

from orsim.config import (
    Application,
    Host,
    Options,
    Transaction,
    application_from_wire,
    application_to_wire,
    option_value_to_str,
    transaction_from_wire,
    transaction_to_wire,
)
from orsim.errors import ConfigError, RequestRefused
from orsim.wire import (
    FLATTEN,
    OMIT_NONE,
    AppStatus,
    Call,
    FrameTotals,
    Json,
    Notice,
    Record,
    codec,
    json_object,
    nonempty_text,
)

#: What reading a malformed object from the wire may raise.
_MALFORMED = (KeyError, TypeError, ValueError, AttributeError, ConfigError)


def _value(params: dict[str, Json], name: str) -> str:
    try:
        return option_value_to_str(params.get(name))
    except TypeError as exc:
        raise RequestRefused("bad_request", f"'{name}' {exc}") from None


#: A field that must be a non-empty string.
_NAME = codec(nonempty_text)


def _malformed(what: str, exc: Exception) -> RequestRefused:
    return RequestRefused("bad_request", f"malformed {what}: {exc!r}")


# -- answers -----------------------------------------------------------------------------


@attrs.frozen
class ApplicationFound(Record):
    application: Application

    def to_json(self) -> Json:
        return application_to_wire(self.application)

    @classmethod
    def from_json(cls, data: Json) -> Self:
        try:
            return cls(application_from_wire(json_object(data)))
        except _MALFORMED as exc:
            raise _malformed("application", exc) from None


@attrs.frozen
class ApplicationsFound(Record):
    """The Applications found, by name."""

    applications: Mapping[str, Application]

    def to_json(self) -> Json:
        return {name: application_to_wire(app) for name, app in self.applications.items()}

    @classmethod
    def from_json(cls, data: Json) -> Self:
        try:
            found = {str(n): application_from_wire(w) for n, w in json_object(data).items()}
        except _MALFORMED as exc:
            raise _malformed("application", exc) from None
        return cls(found)


@attrs.frozen
class TransactionFound(Record):
    transaction: Transaction

    def to_json(self) -> Json:
        return transaction_to_wire(self.transaction)

    @classmethod
    def from_json(cls, data: Json) -> Self:
        try:
            return cls(transaction_from_wire(json_object(data)))
        except _MALFORMED as exc:
            raise _malformed("transaction", exc) from None


@attrs.frozen
class Names(Record):
    """Application names (a JSON list)."""

    names: tuple[str, ...]

    def to_json(self) -> Json:
        return list(self.names)

    @classmethod
    def from_json(cls, data: Json) -> Self:
        if not isinstance(data, list):
            raise RequestRefused("bad_request", "names must be a list")
        return cls(tuple(str(n) for n in data))


@attrs.frozen
class HostFound(Record):
    host: Host

    def to_json(self) -> Json:
        return {"name": self.host.name, "address": self.host.address, "dbid": self.host.dbid}

    @classmethod
    def from_json(cls, data: Json) -> Self:
        data = json_object(data)
        try:
            return cls(Host(str(data["name"]), str(data["address"]), int(data["dbid"])))
        except _MALFORMED as exc:
            raise _malformed("host", exc) from None


@attrs.frozen
class OptionChanged(Record):
    """The object changed and its kind (``application`` or ``transaction``)."""

    object: str
    kind: str


@attrs.frozen
class Imported(Record):
    """How many options were set."""

    count: int


# -- requests ----------------------------------------------------------------------------


@attrs.frozen
class GetApplication(Call[ApplicationFound], method="get_application"):
    """``get_application``: the Application ``name`` (the reader then gets its changes)."""

    name: str = attrs.field(metadata=_NAME)


@attrs.frozen
class GetApplications(Call[ApplicationsFound], method="get_applications"):
    """``get_applications``: the Applications of ``names`` that exist, in one request."""

    names: tuple[str, ...]

    @classmethod
    def from_json(cls, data: Json) -> Self:
        names = json_object(data).get("names")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise RequestRefused("bad_request", "names must be a list of strings")
        return cls(tuple(names))


@attrs.frozen
class GetTransaction(Call[TransactionFound], method="get_transaction"):
    """``get_transaction``: the List transaction ``name`` under the list tenant."""

    name: str = attrs.field(metadata=_NAME)


@attrs.frozen
class ListApplications(Call[Names], method="list_applications"):
    """``list_applications``: the names of the Applications (of ``type``, if given)."""

    type: str | None = attrs.field(default=None, metadata=OMIT_NONE)

    @classmethod
    def from_json(cls, data: Json) -> Self:
        wanted = json_object(data).get("type")
        if wanted is not None and not isinstance(wanted, str):
            raise RequestRefused("bad_request", "'type' must be a string")
        return cls(wanted)


@attrs.frozen
class GetHost(Call[HostFound], method="get_host"):
    """``get_host``: the Host ``name``."""

    name: str = attrs.field(metadata=_NAME)


@attrs.frozen
class SetOption(Call[OptionChanged], method="set_option"):
    """``set_option``: set one option of an object (durable once answered)."""

    object: str = attrs.field(metadata=_NAME)
    section: str = attrs.field(metadata=_NAME)
    key: str = attrs.field(metadata=_NAME)
    value: str = attrs.field(metadata=codec(_value))


@attrs.frozen
class DeleteOption(Call[OptionChanged], method="delete_option"):
    """``delete_option``: delete one option of an object (durable once answered)."""

    object: str = attrs.field(metadata=_NAME)
    section: str = attrs.field(metadata=_NAME)
    key: str = attrs.field(metadata=_NAME)


@attrs.frozen
class ImportOptions(Call[Imported], method="import_options"):
    """``import_options``: set many options of an object at once (all or none)."""

    object: str
    options: Options

    def to_json(self) -> Json:
        return {"object": self.object, "options": self.options}

    @classmethod
    def from_json(cls, data: Json) -> Self:
        data = json_object(data)
        name = nonempty_text(data, "object")
        options = data.get("options")
        if not isinstance(options, dict):
            raise RequestRefused("bad_request", "'options' must be an object of sections")
        checked: dict[str, dict[str, str]] = {}
        for section, keys in options.items():
            if not isinstance(keys, dict):
                raise RequestRefused("bad_request", f"section '{section}' must be an object")
            checked[section] = {}
            for key, value in keys.items():
                try:
                    checked[section][key] = option_value_to_str(value)
                except TypeError as exc:
                    raise RequestRefused("bad_request", f"{section}/{key}: {exc}") from None
        return cls(name, checked)


# -- pushes ------------------------------------------------------------------------------


@attrs.frozen
class ObjectChanged(Notice, topic="object_changed"):
    """A change of an object this client read (push ``object_changed``).

    ``value`` is None for a deleted option; ``options`` are the object's full options
    (application) or annex (transaction) after the change.
    """

    kind: str
    object: str
    section: str
    key: str
    value: str | None
    options: Options = attrs.field(eq=False)

    @classmethod
    def from_json(cls, data: Json) -> Self:
        data = json_object(data)
        try:
            options = {
                str(s): {str(k): str(v) for k, v in kv.items()} for s, kv in data["options"].items()
            }
            value = data.get("value")
            return cls(
                kind=str(data["kind"]),
                object=str(data["object"]),
                section=str(data["section"]),
                key=str(data["key"]),
                value=None if value is None else str(value),
                options=options,
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise _malformed("object_changed push", exc) from None


@attrs.frozen(kw_only=True)
class ConfServStatus(AppStatus):
    """The Configuration Server's ``status`` answer (field names are a contract)."""

    source: str
    applications: int
    transactions: int
    changes: int
    clients: int
    frames: FrameTotals = attrs.field(metadata=FLATTEN)
