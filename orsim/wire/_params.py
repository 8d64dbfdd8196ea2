"""Validating request parameters at the edge: a bad value is a ``bad_request`` answer."""

from __future__ import annotations

from collections.abc import Awaitable
from types import CoroutineType
from typing import NoReturn, TypeVar, overload

from orsim.errors import RequestRefused
from orsim.logs import get_logger
from orsim.wire._connection import Connection
from orsim.wire._messages import Json, Request

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


async def dispatch(target: object, app: str, conn: Connection, request: Request) -> Json:
    """Answer ``request`` with ``target._do_<method>(conn, params)`` (a coroutine function,
    or a plain function for a method that never waits).

    An unknown method is ``unknown_method``; an unexpected exception in a handler (a bug
    of ours) is logged and answered ``internal``, so it never takes the server down.
    """
    result = dispatch_inline(target, app, conn, request)
    if isinstance(result, CoroutineType):
        result = await result
    return result


def dispatch_inline(target: object, app: str, conn: Connection, request: Request) -> Json:
    """``dispatch`` as an ``InlineHandler``: the answer of a plain ``_do_<method>``, or,
    for a coroutine function, a coroutine to await for it (errors as ``dispatch``)."""
    method = getattr(target, f"_do_{request.method}", None)
    if method is None:
        raise RequestRefused("unknown_method", f"{app} has no method {request.method!r}")
    try:
        result: Json = method(conn, request.params)
    except RequestRefused:
        raise
    except Exception as exc:
        _failed(app, request, exc)
    if isinstance(result, CoroutineType):
        return _finish(result, app, request)
    return result


async def _finish(pending: Awaitable[Json], app: str, request: Request) -> Json:
    try:
        return await pending
    except RequestRefused:
        raise
    except Exception as exc:
        _failed(app, request, exc)


def _failed(app: str, request: Request, exc: Exception) -> NoReturn:
    get_logger(app=app).exception("handler_failed", method=request.method)
    raise RequestRefused("internal", f"{request.method}: {exc!r}") from exc
