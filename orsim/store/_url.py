"""Parse the `persistence/store` URL into where the store lives (pure, no I/O)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

import attrs

from orsim.errors import ConfigError

OPTION = "persistence/store"
DEFAULT_REDIS_PORT = 6379
_EXPECTED = "expected sqlite:///PATH or redis://HOST:PORT/DB"


@attrs.frozen
class SqliteLocation:
    """A SQLite database file."""

    path: Path


@attrs.frozen
class RedisLocation:
    """A Redis server and database number."""

    host: str
    port: int = DEFAULT_REDIS_PORT
    db: int = 0
    username: str | None = attrs.field(default=None, repr=False)
    password: str | None = attrs.field(default=None, repr=False)

    def describe(self) -> str:
        return f"{self.host}:{self.port}/{self.db}"


StoreLocation = SqliteLocation | RedisLocation


def _bad(url: str, why: str) -> ConfigError:
    return ConfigError(f"{OPTION}: {why} in {url!r} ({_EXPECTED})")


def parse_store_url(url: str, base_dir: Path) -> StoreLocation:
    """Where a store URL points.

    ``sqlite:///rel/path`` is relative to ``base_dir``, ``sqlite:////abs/path`` absolute;
    ``redis://HOST[:PORT][/DB]`` defaults to port 6379 and database 0.

    Raises:
        ConfigError: naming ``persistence/store`` when the URL is not one of these.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise _bad(url, str(exc)) from None
    if parts.query or parts.fragment:
        raise _bad(url, "unexpected query or fragment")
    if parts.scheme == "sqlite":
        if parts.netloc:
            raise _bad(url, f"unexpected host {parts.netloc!r} (use three slashes)")
        raw = unquote(parts.path)
        if not raw.startswith("/") or raw in ("/", "//"):
            raise _bad(url, "missing database path")
        rest = raw[1:]  # the slash that ends "sqlite://"
        path = Path(rest) if rest.startswith("/") else base_dir / rest
        return SqliteLocation(path)
    if parts.scheme == "redis":
        if not parts.hostname:
            raise _bad(url, "missing host")
        db_text = parts.path.strip("/")
        if db_text and not db_text.isdigit():
            raise _bad(url, f"database {db_text!r} is not a number")
        return RedisLocation(
            host=parts.hostname,
            port=port if port is not None else DEFAULT_REDIS_PORT,
            db=int(db_text) if db_text else 0,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )
    raise _bad(url, f"unsupported scheme {parts.scheme!r}" if parts.scheme else "no scheme")
