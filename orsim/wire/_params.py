"""Validating request parameters at the edge: a bad value is a ``bad_request`` answer."""

from __future__ import annotations

from typing import TypeVar, overload

from orsim.errors import RequestRefused
from orsim.wire._messages import Json

T = TypeVar("T")
_MISSING = object()


@overload
def param(params: dict[str, Json], name: str, kind: type[T]) -> T: ...


@overload
def param(params: dict[str, Json], name: str, kind: type[T], default: None) -> T | None: ...


@overload
def param(params: dict[str, Json], name: str, kind: type[T], default: T) -> T: ...


def param(params: dict[str, Json], name: str, kind: type[T], default: object = _MISSING) -> object:
    """``params[name]`` checked to be a ``kind`` (int accepted for float, bool never for int).

    Raises:
        RequestRefused: ``bad_request`` when the value is missing (and has no default) or of
            the wrong type.
    """
    value = params.get(name, _MISSING)
    if value is _MISSING or value is None:
        if default is _MISSING:
            raise RequestRefused("bad_request", f"missing parameter {name!r}")
        return default
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool) and kind is not bool:
        raise RequestRefused("bad_request", f"parameter {name!r} must be {kind.__name__}")
    if not isinstance(value, kind):
        raise RequestRefused("bad_request", f"parameter {name!r} must be {kind.__name__}")
    return value


def str_list(params: dict[str, Json], name: str) -> list[str]:
    """``params[name]`` as a list of strings (missing: empty)."""
    value = params.get(name)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RequestRefused("bad_request", f"parameter {name!r} must be a list of strings")
    return list(value)
