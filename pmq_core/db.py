"""Connections to PostgreSQL and Redis, and the translation of their
failures into pmq's errors (with passwords never shown)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

import attrs
import psycopg
import redis
import redis.cluster
import redis.sentinel
from psycopg.adapt import AdaptersMap
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import set_json_loads

from pmq_core import payloads
from pmq_core.config import SentinelAddress, Settings, split_hosts
from pmq_core.errors import ConfigurationError, DatabaseUnavailableError, RedisUnavailableError, SchemaError
from pmq_core.redaction import passwords_in, redact_url, scrub

#: Errors that mean "this database lacks part of pmq's schema": a migration
#: not yet applied (or none at all).
SCHEMA_MISSING = (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn)
#: Errors that mean "the server is unreachable or went away": worth a reconnect.
PG_DOWN = (psycopg.OperationalError, psycopg.InterfaceError)
#: A Cluster's errors while a primary fails over (no node serves the slot
#: for a moment, or none of the known nodes answers: redis-py's
#: RedisClusterException) and a primary turned replica's refusal to write
#: count too.
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, redis.exceptions.ClusterError,
              redis.exceptions.TryAgainError, redis.exceptions.RedisClusterException, redis.ReadOnlyError)
#: Errors that one row's values can cause (a value out of range, a
#: constraint, text PostgreSQL cannot store): retrying the same batch would
#: fail the same way, so the loops set the row aside instead.
PG_DATA = (psycopg.DataError, psycopg.IntegrityError, ValueError)

#: psycopg's default: a statement run this many times on a connection is
#: prepared on the server (never through a transaction pooler).
PREPARE_THRESHOLD = 5

#: The adapters of every connection pmq opens: psycopg's, with a JSON loader
#: that turns a stored value Python cannot decode into a marker (see
#: payloads.UnreadablePayload) instead of failing the whole read. Kept apart
#: from psycopg's global adapters so that an application's own connections
#: are left alone.
ADAPTERS = AdaptersMap(psycopg.adapters)
set_json_loads(payloads.loads, ADAPTERS)


def pg_connect(url: str, *, autocommit: bool = True, timeout: float = 10.0,
               pooled: bool = False) -> psycopg.Connection[DictRow]:
    """A dict-row connection, or DatabaseUnavailableError naming the server.
    ``pooled``: through a transaction pooler, where a statement prepared on
    one server connection is missing on the next, so none is prepared."""
    try:
        return psycopg.connect(url, autocommit=autocommit, row_factory=dict_row, context=ADAPTERS,
                               connect_timeout=max(1, int(timeout)), application_name="pmq",
                               prepare_threshold=None if pooled else PREPARE_THRESHOLD)
    except PG_DOWN as exc:
        raise DatabaseUnavailableError(
            f"cannot connect to PostgreSQL at {redact_url(url)}: {reason(exc, url)}"
        ) from None
    except psycopg.ProgrammingError as exc:
        raise DatabaseUnavailableError(f"invalid PostgreSQL URL {redact_url(url)}: {reason(exc, url)}") from None


async def apg_connect(url: str, *, autocommit: bool = True, timeout: float = 10.0,
                      pooled: bool = False) -> psycopg.AsyncConnection[DictRow]:
    try:
        return await psycopg.AsyncConnection.connect(
            url, autocommit=autocommit, row_factory=dict_row, context=ADAPTERS,
            connect_timeout=max(1, int(timeout)), application_name="pmq",
            prepare_threshold=None if pooled else PREPARE_THRESHOLD)
    except PG_DOWN as exc:
        raise DatabaseUnavailableError(
            f"cannot connect to PostgreSQL at {redact_url(url)}: {reason(exc, url)}"
        ) from None


def redis_client(url: str, *, timeout: float | None = None, mode: str = "standalone") -> redis.Redis:
    """A Redis client for the topology ``mode`` names (see the setting
    ``redis_mode``): redis-py's own cluster and Sentinel clients route
    commands and follow failovers. ``timeout`` bounds each connect and reply
    (default: 5 s to connect, replies unbounded, as blocking pops need)."""
    options = _redis_options(timeout)
    try:
        if mode == "cluster":
            first, others = split_hosts(url)
            nodes = [redis.cluster.ClusterNode(host, port) for host, port in others]  # type: ignore[no-untyped-call]
            return redis.RedisCluster.from_url(first, startup_nodes=nodes, **options)  # type: ignore[return-value]
        if mode == "sentinel":
            address = SentinelAddress.parse(url)
            sentinel = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
                address.sentinels, **_sentinel_options(timeout, address))
            primary: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
                address.service, db=address.db, username=address.username, password=address.password, **options)
            return primary
        return redis.Redis.from_url(url, **options)
    except ValueError as exc:
        raise RedisUnavailableError(f"invalid Redis URL {redact_url(url)}: {reason(exc, url)}") from None


def aredis_client(url: str, *, timeout: float | None = None, mode: str = "standalone") -> redis.asyncio.Redis:
    """:func:`redis_client` for asyncio."""
    import redis.asyncio
    import redis.asyncio.cluster
    import redis.asyncio.sentinel

    options = _redis_options(timeout)
    try:
        if mode == "cluster":
            first, others = split_hosts(url)
            nodes = [redis.asyncio.cluster.ClusterNode(host, port) for host, port in others]
            return redis.asyncio.RedisCluster.from_url(  # type: ignore[return-value]
                first, startup_nodes=nodes, **options)
        if mode == "sentinel":
            address = SentinelAddress.parse(url)
            sentinel = redis.asyncio.sentinel.Sentinel(  # type: ignore[no-untyped-call]
                address.sentinels, **_sentinel_options(timeout, address))
            primary: redis.asyncio.Redis = sentinel.master_for(
                address.service, db=address.db, username=address.username, password=address.password, **options)
            return primary
        return redis.asyncio.Redis.from_url(url, **options)
    except ValueError as exc:
        raise RedisUnavailableError(f"invalid Redis URL {redact_url(url)}: {reason(exc, url)}") from None


def _redis_options(timeout: float | None) -> dict[str, Any]:
    return {"socket_connect_timeout": timeout or 5, "socket_timeout": timeout, "health_check_interval": 30}


def _sentinel_options(timeout: float | None, address: SentinelAddress) -> dict[str, Any]:
    """How to ask the Sentinels for the primary: with their own credentials
    if the URL gives them (its user information is the primary's), and with
    short timeouts, so that a dead Sentinel is soon skipped for the next."""
    brief = {"socket_timeout": timeout or 1, "socket_connect_timeout": timeout or 1}
    credentials = {"username": address.sentinel_username, "password": address.sentinel_password}
    return {**brief, "sentinel_kwargs": {**brief, **credentials}}


def prepare_threshold(settings: Settings) -> int | None:
    """psycopg's ``prepare_threshold`` for connections to ``database_url``."""
    return None if settings.database_pooled else PREPARE_THRESHOLD


@contextlib.contextmanager
def translated(database_url: str | None = None, redis_url: str | None = None) -> Iterator[None]:
    """Turn "server unreachable" and "schema missing" errors into pmq's,
    naming the server or saying to run `pmq db upgrade`. The message makes
    no claim about what was written: the work inside may be a read, and a
    connection lost during a commit leaves that commit's fate unknown."""
    try:
        yield
    except SCHEMA_MISSING as exc:
        raise schema_error(exc) from None
    except PG_DOWN as exc:
        raise DatabaseUnavailableError(
            f"PostgreSQL at {redact_url(database_url)} is unavailable: {reason(exc, database_url)}"
        ) from None
    except REDIS_DOWN as exc:
        raise RedisUnavailableError(
            f"Redis at {redact_url(redis_url)} is unavailable: {reason(exc, redis_url)}") from None


#: What each Sentinel answered, in redis-py's MasterNotFoundError: its text
#: follows each Sentinel client's long repr with " - " and the error.
_SENTINEL_ANSWER = re.compile(r" - (?:\w+:)?(\w+: .*?)(?=, <redis\.|$)", re.DOTALL)


def reason(exc: BaseException, url: str | None) -> str:
    """The first line of a library's error, with ``url`` and its passwords
    hidden: libraries quote the connection string back in some errors."""
    text = str(exc)
    if isinstance(exc, redis.sentinel.MasterNotFoundError):  # one line, not every client's repr
        head, _, answers = text.partition(" : ")
        found = list(dict.fromkeys(_SENTINEL_ANSWER.findall(answers)))
        text = f"{head} ({'; '.join(found)})" if found else head
    if url:
        text = scrub(text.replace(url, redact_url(url)), passwords_in(url))
    lines = text.strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def schema_error(exc: BaseException) -> SchemaError:
    """The one-line error for a statement that met a missing table or column."""
    return SchemaError(f"the database has no pmq schema, or an older one than this pmq needs "
                       f"({_first_line(exc)}): run `pmq db upgrade`")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def resolve_servers(settings: Settings) -> Settings:
    """Settings with server URLs filled in, starting embedded servers when
    none are configured."""
    if not settings.embedded:
        if not settings.database_url or not settings.redis_url:
            missing = "PMQ_DATABASE_URL" if not settings.database_url else "PMQ_REDIS_URL"
            raise ConfigurationError(f"{missing} is not set: set both server URLs, or neither for embedded servers")
        return settings
    from pmq_core.embedded import ensure_running

    database_url, redis_url = ensure_running(settings.data_dir)
    return attrs.evolve(settings, database_url=database_url, redis_url=redis_url)
