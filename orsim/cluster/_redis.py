"""The Redis server a topology's ``redis://HOST:PORT/DB`` store gets from the launcher.

When the store's HOST is an address of this machine, ``up`` runs a ``redis-server`` from
PATH (app ``redis``, type ``Redis``) in the run directory, without persistence: a
simulated cluster's sessions are worth nothing after ``down``, and an RDB or AOF file
would only make a killed-and-restarted Redis differ from run to run. If a Redis already
answers at HOST:PORT, it is used as it is (not started, not stopped, not listed); a
remote HOST is never started either.

Nodes talk to Redis directly, not through the fault proxy (as to the SQLite store
server): ``kill``/``start`` and SIGSTOP/SIGCONT are its faults.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import attrs
import trio

from orsim.config import CLUSTER, STORE, ConfigDatabase, storage_of
from orsim.errors import OrsimError, UnreachableError
from orsim.store import (
    NEED_DATA,
    ErrorReply,
    RedisLocation,
    ReplyParser,
    encode_command,
    parse_store_url,
)

REDIS_APP = "redis"
REDIS_TYPE = "Redis"
REDIS_PROGRAM = "redis-server"
#: Each managed Redis runs in ``RUN_DIR/redis/APP`` (its working directory).
REDIS_DIR = "redis"
INSTALL_HINT = "install it: apt-get install redis-server"
#: How long a probe waits for a Redis to answer PING.
PING_TIMEOUT = 1.0
#: Error replies that still prove a live Redis (it wants a password, or is loading).
_ALIVE_ERRORS = ("NOAUTH", "LOADING")


@attrs.frozen
class RedisServer:
    """A Redis server the launcher runs for the store at ``url``."""

    name: str
    #: the store URL as the topology gives it
    url: str
    #: the IP address it listens on (HOST of the URL, resolved)
    bind: str
    #: where it listens: the URL's port, or a free one under ``--ports auto``
    port: int
    password: str | None = attrs.field(default=None, repr=False)

    @property
    def served_url(self) -> str:
        """``url`` with ``port`` in it: what the nodes are told."""
        return with_port(self.url, self.port)

    def argv(self) -> tuple[str, ...]:
        """``redis-server`` arguments: this port and address, no RDB, no AOF, foreground."""
        args = ["--port", str(self.port), "--bind", self.bind, "--save", "",
                "--appendonly", "no", "--daemonize", "no",
                "--dir", f"{REDIS_DIR}/{self.name}"]  # fmt: skip
        if not ipaddress.ip_address(self.bind).is_loopback:
            # Nodes on other machines must get in; protected mode would refuse them.
            args += ["--protected-mode", "no"]
        if self.password is not None:
            args += ["--requirepass", self.password]
        return tuple(args)


def local_address(host: str) -> str | None:
    """The IP address to listen on for ``host``, if it is an address of this machine.

    An address is this machine's when a socket can bind to it (all of 127.0.0.0/8 can).
    """
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return None
    for family, _, _, _, sockaddr in infos:
        ip = str(sockaddr[0])
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((ip, 0))
            except OSError:
                continue
        return ip
    return None


def redis_stores(db: ConfigDatabase) -> list[tuple[str, RedisLocation]]:
    """(URL, location) of each Redis store the ORS applications use, once per server."""
    txns = {name: txn for txn in db.transactions.values() for name in txn.cluster_members}
    found: dict[tuple[str, int], tuple[str, RedisLocation]] = {}
    for app in db.applications.values():
        if app.type != "OrchestrationServer":
            continue
        url = storage_of(app, txns.get(app.primary_name))
        if url is None or not url.strip().startswith("redis:"):
            continue
        location = parse_store_url(url, Path("."))
        assert isinstance(location, RedisLocation)
        found.setdefault((location.host, location.port), (url, location))
    return [found[key] for key in sorted(found)]


def managed_redis(db: ConfigDatabase, taken: set[str]) -> list[RedisServer]:
    """The Redis servers ``db`` would have the launcher run, each at its URL's port.

    Those on an address of this machine; named ``redis``, ``redis_2``... (none of ``taken``).
    """
    servers: list[RedisServer] = []
    n = 1
    for url, location in redis_stores(db):
        bind = local_address(location.host)
        if bind is None:
            continue  # a remote server: used as it is
        name = REDIS_APP if n == 1 else f"{REDIS_APP}_{n}"
        while name in taken:
            n += 1
            name = f"{REDIS_APP}_{n}"
        n += 1
        servers.append(RedisServer(name, url, bind, location.port, location.password))
    return servers


def with_port(url: str, port: int) -> str:
    """A ``redis://`` URL with its port replaced (user, password, host and DB kept)."""
    parts = urlsplit(url.strip())
    userinfo, _, _ = parts.netloc.rpartition("@")
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{userinfo}@{host}:{port}" if userinfo else f"{host}:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def rewrite_store_urls(raw: object, urls: Mapping[str, str]) -> object:
    """``raw`` (a YAML database, changed in place) with each store URL in ``urls`` replaced,
    in cluster lists and applications' options alike."""
    for section in _persistence_sections(raw):
        url = section.get(STORE.key)
        if isinstance(url, str) and url in urls:
            section[STORE.key] = urls[url]
    return raw


def set_store(raw: object, url: str) -> object:
    """``raw`` (changed in place) with every Node's store set to ``url``: in each cluster
    list (which wins over an application's own options) and in each ORS application (for
    legacy clusters, which read only those)."""
    db = _table(raw)
    targets = [_annex(txn) for txn in _table(db.get("transactions")).values()]
    targets = [annex for annex in targets if CLUSTER.section in annex]
    for app in _table(db.get("applications")).values():
        if isinstance(app, dict) and app.get("type") == "OrchestrationServer":
            if not isinstance(app.get("options"), dict):
                app["options"] = {}
            targets.append(app["options"])
    for options in targets:
        section = options.setdefault(STORE.section, {})
        if isinstance(section, dict):
            section[STORE.key] = url
    return raw


def _table(value: object) -> dict[str, object]:
    """``value`` if it is a YAML mapping, else an empty one."""
    return value if isinstance(value, dict) else {}


def _annex(txn: object) -> dict[str, object]:
    return _table(_table(txn).get("annex"))


def _persistence_sections(raw: object) -> list[dict[str, object]]:
    db = _table(raw)
    sections = []
    for txn in _table(db.get("transactions")).values():
        section = _annex(txn).get(STORE.section)
        if isinstance(section, dict):
            sections.append(section)
    for app in _table(db.get("applications")).values():
        section = _table(_table(app).get("options")).get(STORE.section)
        if isinstance(section, dict):
            sections.append(section)
    return sections


# -- is a Redis there? ---------------------------------------------------------------------


def _is_alive_reply(reply: object) -> bool:
    if isinstance(reply, ErrorReply):
        return reply.code in _ALIVE_ERRORS
    return reply == "PONG"


def probe_redis(host: str, port: int, timeout: float = PING_TIMEOUT) -> bool | None:
    """Blocking: True if a Redis answers PING at host:port, False if something else
    listens there, None if nothing does."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError:
        return None
    parser = ReplyParser()
    with sock:
        try:
            sock.sendall(encode_command("PING"))
            while True:
                data = sock.recv(4096)
                if not data:
                    return False
                parser.receive_data(data)
                reply = parser.next_reply()
                if reply is not NEED_DATA:
                    return isinstance(reply, ErrorReply) or reply == "PONG"
        except (OSError, OrsimError):  # gone, or not RESP at all: some other server
            return False


async def ping_redis(host: str, port: int, timeout: float = PING_TIMEOUT) -> bool:
    """True if the Redis at host:port answers PING within ``timeout`` (it is serving)."""
    parser = ReplyParser()
    with trio.move_on_after(timeout):
        try:
            stream = await trio.open_tcp_stream(host, port)
        except OSError:
            return False
        async with stream:
            with contextlib.suppress(OSError, trio.BrokenResourceError):
                await stream.send_all(encode_command("PING"))
                while True:
                    data = await stream.receive_some(4096)
                    if not data:
                        return False
                    parser.receive_data(data)
                    reply = parser.next_reply()
                    if reply is not NEED_DATA:
                        return _is_alive_reply(reply)
    return False


def missing_program_error(url: str) -> UnreachableError:
    """The one line for a local Redis store when ``redis-server`` is not on PATH."""
    return UnreachableError(
        f"persistence/store {url}: {REDIS_PROGRAM} is not on PATH and no Redis answers "
        f"there; {INSTALL_HINT}"
    )
