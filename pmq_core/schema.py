"""Versioned schema migrations, for the core and for plugins.

Migrations are SQL files (``sql/migrations/NNNN_name.sql`` for the core) or
:class:`Migration` objects returned by a plugin's
``pmq_register_migrations`` hook. ``upgrade`` applies those not yet applied,
each in its own transaction, under an advisory lock so that two processes
upgrading at once wait for each other instead of colliding. Applying twice
is a no-op.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from importlib import resources
from typing import Any

import attrs
import psycopg

from pmq_core import store

CORE = "pmq_core"

_FILE = re.compile(r"(\d{4})_(\w+)\.sql")


@attrs.frozen(kw_only=True)
class Migration:
    """One step of a component's schema; ``version`` orders the steps."""

    component: str
    version: int
    name: str
    sql: str


def migrations_in(package: str, component: str, folder: str = "sql/migrations") -> list[Migration]:
    """The migrations shipped as ``NNNN_name.sql`` files in a folder of
    ``package``, in version order: how the core and plugins keep theirs."""
    found = []
    for entry in resources.files(package).joinpath(folder).iterdir():
        match = _FILE.fullmatch(entry.name)
        if match:
            found.append(Migration(component=component, version=int(match[1]), name=match[2],
                                   sql=entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda m: m.version)


def core_migrations() -> list[Migration]:
    return migrations_in("pmq_core", CORE)


def upgrade(conn: psycopg.Connection[Any], extra: Iterable[Migration] = ()) -> list[Migration]:
    """Apply every migration not yet applied; return those applied now.

    ``conn`` must be in autocommit mode; each migration commits on its own.
    """
    todo = core_migrations() + sorted(extra, key=lambda m: (m.component, m.version))
    applied_now: list[Migration] = []
    with store.schema_lock(conn):
        store.create_migrations_table(conn)
        done = store.applied_migrations(conn)
        for migration in todo:
            if (migration.component, migration.version) not in done:
                store.apply_migration(conn, migration.component, migration.version, migration.name, migration.sql)
                applied_now.append(migration)
    return applied_now


def pending(conn: psycopg.Connection[Any], extra: Iterable[Migration] = ()) -> list[Migration]:
    """The migrations (the core's and ``extra``) not yet applied to this
    database: all of them before the first upgrade."""
    done = store.applied_migrations(conn)
    return [m for m in core_migrations() + list(extra) if (m.component, m.version) not in done]
