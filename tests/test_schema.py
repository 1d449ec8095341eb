"""Schema migrations: applied once, safely when two sessions race."""

from __future__ import annotations

import threading
import uuid

import psycopg

from pmq_core import schema
from pmq_core.testing import Servers, _with_database


def test_two_sessions_upgrading_at_once_apply_each_migration_once(pmq_servers: Servers):
    name = f"pmq_schema_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pmq_servers.database_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = _with_database(pmq_servers.database_url, name)
    try:
        start = threading.Barrier(2)
        results: list[object] = []

        def upgrade() -> None:
            with psycopg.connect(url, autocommit=True) as conn:
                start.wait()
                try:
                    results.append(schema.upgrade(conn))
                except Exception as exc:  # recorded so the assertion shows it
                    results.append(exc)

        threads = [threading.Thread(target=upgrade) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        applied = sorted(len(r) for r in results if isinstance(r, list))
        assert applied == [0, len(schema.core_migrations())], results
        with psycopg.connect(url, autocommit=True) as conn:
            rows = conn.execute("SELECT component, version FROM pmq_schema_migrations").fetchall()
            assert rows == [("pmq_core", m.version) for m in schema.core_migrations()]
            assert conn.execute("SELECT to_regclass('jobs') IS NOT NULL").fetchone() == (True,)
            assert schema.upgrade(conn) == []
    finally:
        with psycopg.connect(pmq_servers.database_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
