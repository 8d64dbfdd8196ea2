"""What one option is: where it is set, how its text parses, what orsim does with it.

The definitions themselves are in ``_options.py``. An option's value is text, as in
Genesys; its ``parse`` turns the text into the value orsim uses, or raises ``BadValue``
whose message is a predicate ("must be a number of seconds > 0, not 'x'"), so that every
reader words the same problem the same way and prefixes only who it is about.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Generic, Literal, Protocol, TypeVar

import attrs

from orsim.errors import ConfigError

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

#: The key of a definition that stands for every key of its section (``cluster/*``).
ANY_KEY = "*"
#: Where an option is set: an Application's options (or a cluster list's annex), or an
#: entry of an Application's connections list (the ADDP parameters).
SetIn = Literal["options", "connection"]


class BadValue(ValueError):
    """A text an option does not accept; the message says what it must be."""


class Parser(Protocol[T_co]):
    """Text to value (raises ``BadValue``), and the accepted values as a person reads them."""

    @property
    def range(self) -> str: ...

    def __call__(self, text: str) -> T_co: ...


@attrs.frozen
class Number:
    """A finite decimal number of ``unit``, at least (or, ``above``, more than) ``minimum``."""

    unit: str
    minimum: float = 0.0
    above: bool = False

    @property
    def range(self) -> str:
        return f"{'>' if self.above else '>='} {self.minimum:g}"

    def __call__(self, text: str) -> float:
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if math.isfinite(number) and (
            number > self.minimum if self.above else number >= self.minimum
        ):
            return number
        raise BadValue(f"must be a number of {self.unit} {self.range}, not {text!r}")


@attrs.frozen
class WholeNumber:
    """A whole number of ``unit``, zero or more."""

    unit: str

    @property
    def range(self) -> str:
        return ">= 0, whole"

    def __call__(self, text: str) -> int:
        try:
            number = int(text)
        except ValueError:
            raise BadValue(f"must be a whole number of {self.unit}, not {text!r}") from None
        if number < 0:
            raise BadValue(f"must not be negative ({number})")
        return number


@attrs.frozen
class Choice:
    """One of ``values``' keys, whatever the case and surrounding spaces; parses to the
    value that key maps to."""

    values: Mapping[str, str] = attrs.field(eq=False)

    @classmethod
    def of(cls, *names: str) -> Choice:
        """A choice among ``names`` that parses to the name itself."""
        return cls({name: name for name in names})

    @property
    def range(self) -> str:
        return " | ".join(self.values)

    def __call__(self, text: str) -> str:
        name = text.strip().lower()
        if name in self.values:
            return self.values[name]
        raise BadValue(f"must be one of {', '.join(self.values)}, not {name!r}")


@attrs.frozen
class Text:
    """Any text (``strip``: without surrounding spaces); ``required``: not blank."""

    what: str
    strip: bool = False
    required: bool = False

    @property
    def range(self) -> str:
        return self.what

    def __call__(self, text: str) -> str:
        if self.required and not text.strip():
            raise BadValue(f"needs a {self.what} as its value")
        return text.strip() if self.strip else text


@attrs.frozen(kw_only=True)
class Option(Generic[T_co]):
    """One option orsim understands: its only definition.

    ``key`` is ``ANY_KEY`` for a section whose keys are names the user chooses (the Nodes
    of ``cluster``, the DNs of ``routing-points``). ``default`` is text, as the option
    would be written (None: no default; unset means absent). A blank value means the
    default unless ``blank_is_default`` is False.
    """

    section: str
    key: str
    parse: Parser[T_co] = attrs.field(eq=False)
    default: str | None
    #: Which application reads it: ORS, T_co-Server or URS.
    applies_to: str
    #: What orsim does with it, in a sentence or two.
    effect: str
    #: Applied by a running process at once (else read at start-up only).
    dynamic: bool = False
    #: False: accepted and kept but with no effect in orsim.
    simulated: bool = True
    #: False: a bad value is kept and warned of, and its reader ignores it (``log/verbose``)
    #: rather than the loader and the Configuration Server refusing it.
    refuse_bad: bool = True
    blank_is_default: bool = True
    #: False: never taken from a cluster list, whatever its section.
    list_allowed: bool = True
    set_in: SetIn = "options"
    #: Genesys's documented range, when orsim accepts more (it warns outside it).
    advised: tuple[int, int] | None = None
    #: How a problem names the option; ``{key}`` is the key it was set under.
    noun: str = "{key}"
    #: The unit of a number, as shown after a value ("ms").
    unit: str = ""

    def __str__(self) -> str:
        return self.name

    @property
    def name(self) -> str:
        """``section/key``, or the key alone for a connection parameter."""
        return self.key if self.set_in == "connection" else f"{self.section}/{self.key}"

    @property
    def range(self) -> str:
        """The values accepted, as a person reads them."""
        text = self.parse.range if self.blank_is_default else f"{self.parse.range}, not blank"
        if self.advised is None:
            return text
        low, high = self.advised
        return f"{text} (Genesys: {low}-{high})"

    @property
    def takes_effect(self) -> str:
        """When a change takes effect in orsim, in the node's log wording."""
        if not self.simulated:
            return "not simulated (kept, no effect in orsim)"
        return "at once" if self.dynamic else "after restart"

    @property
    def default_value(self) -> T_co:
        """The parsed default. Raises LookupError for an option without one."""
        if self.default is None:
            raise LookupError(f"option {self.name} has no default")
        return self.parse(self.default)

    def problem(self, key: str, text: str) -> str | None:
        """Why ``text`` set under ``key`` is refused (None: it is accepted)."""
        return self._bad(key, text) if self.refuse_bad else None

    def warning(self, key: str, text: str) -> str | None:
        """What to tell about an accepted ``text`` set under ``key`` (None: nothing)."""
        bad = self._bad(key, text)
        if bad is not None:
            return None if self.refuse_bad else f"{bad}; {self.applies_to} ignores it"
        if self.advised is None or (self.blank_is_default and not text.strip()):
            return None
        value = self.parse(text)
        low, high = self.advised
        if not isinstance(value, int | float) or low <= value <= high:
            return None
        return (
            f"{self.noun.format(key=key)} {value} {self.unit} is outside the documented "
            f"range {low}-{high}; a real ORS would reject it (orsim accepts it)"
        )

    def _bad(self, key: str, text: str) -> str | None:
        if self.blank_is_default and not text.strip():
            return None
        try:
            self.parse(text)
        except BadValue as exc:
            return f"{self.noun.format(key=key)} {exc}"
        return None

    def value(self, text: str | None, *, owner: str = "") -> T_co:
        """The value of ``text`` (None or blank: the default).

        Raises:
            ConfigError: the text is refused, naming the option (and ``owner`` if given).
        """
        if text is None or (self.blank_is_default and not text.strip()):
            if self.default is None:
                raise ConfigError(f"{_owner(owner)}option {self.name} is not set")
            text = self.default
        try:
            return self.parse(text)
        except BadValue as exc:
            raise ConfigError(f"{_owner(owner)}option {self.name} {exc}") from None

    def text_in(self, options: Mapping[str, Mapping[str, str]]) -> str | None:
        """The text this option is set to in ``options`` (None: not set)."""
        return options.get(self.section, {}).get(self.key)

    def read(self, options: Mapping[str, Mapping[str, str]], *, owner: str = "") -> T_co:
        """This option's value in ``options`` (``section -> key -> text``), or its default.

        Raises:
            ConfigError: the value set is refused.
        """
        return self.value(self.text_in(options), owner=owner)

    def read_section(self, options: Mapping[str, Mapping[str, str]]) -> dict[str, T_co]:
        """Every key of an ``ANY_KEY`` option's section with its value, in order.

        Raises:
            ConfigError: a value is refused.
        """
        result: dict[str, T_co] = {}
        for key, text in options.get(self.section, {}).items():
            bad = self._bad(key, text)
            if bad is not None:
                raise ConfigError(f"option {self.section}/{key}: {bad}")
            result[key] = self.parse(text)
        return result


def _owner(owner: str) -> str:
    return f"{owner}: " if owner else ""


def sections(values: Mapping[Option[object], object]) -> dict[str, dict[str, object]]:
    """``{option: value}`` as ``section -> key -> value``, the shape of a database's
    ``options`` (for code that writes a configuration)."""
    result: dict[str, dict[str, object]] = {}
    for option, value in values.items():
        result.setdefault(option.section, {})[option.key] = value
    return result
