"""Schema migrations: applied once, safely when two sessions race."""

from __future__ import annotations

import threading
import uuid

import psycopg

from pmq_core import JobStatus, schema
from pmq_core.admin import Admin
from pmq_core.queries import q
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


def test_every_filter_of_jobs_lists_reads_an_index_not_the_table(pmq_settings):
    """20,000 jobs over four queues and three statuses (one of them rare:
    about 200 failed jobs per queue), analysed, so that the planner's choice
    is its honest one."""
    with psycopg.connect(pmq_settings.database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO job_queues (name) SELECT 'q' || n FROM generate_series(0, 3) AS n")
        conn.execute("""
            INSERT INTO jobs (queue_name, status, created_at, updated_at)
            SELECT 'q' || (i % 4),
                   CASE WHEN i % 23 = 0 THEN 'failed' WHEN i % 5 = 0 THEN 'queued' ELSE 'completed' END,
                   now() - i * interval '1 second', now() - i * interval '1 second'
              FROM generate_series(1, 20000) AS i""")
        conn.execute("ANALYZE jobs")
        every = [s.value for s in JobStatus]
        page = {"error": None, "since": None, "until": None, "before_at": None, "before_id": None}
        # A queue's waiting and finished jobs are read from the partial queue
        # index, its handed-over and running ones from the status index.
        for queue, statuses, indexes in (
                (None, every, ["jobs_status_updated_idx"]), (None, ["failed"], ["jobs_status_updated_idx"]),
                ("q1", every, ["jobs_queue_backlog_idx", "jobs_status_updated_idx"]),
                ("q2", ["failed"], ["jobs_queue_backlog_idx"]), ("q3", ["queued"], ["jobs_queue_backlog_idx"])):
            params = {"queue": queue, "statuses": statuses, "limit": 50}
            query = "queue_job_page" if queue else "job_page"
            plan = "\n".join(row[0] for row in conn.execute("EXPLAIN " + q(query), {**params, **page}))
            assert "Seq Scan on jobs" not in plan, (query, queue, statuses, plan)
            assert plan.splitlines()[0].startswith("Limit"), plan
            for index in indexes:
                assert f"Index Scan Backward using {index} on jobs" in plan, (query, queue, statuses, plan)
        with Admin(pmq_settings) as admin:
            newest = admin.jobs(queue="q1", limit=5)
            failed = admin.jobs(status="failed", limit=3)
        assert [j.queue_name for j in newest] == ["q1"] * 5
        assert [j.updated_at for j in newest] == sorted((j.updated_at for j in newest), reverse=True)
        assert {j.status for j in failed} == {JobStatus.FAILED} and len(failed) == 3
