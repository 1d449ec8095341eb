"""Retention: the leading migrator deletes finished jobs and old logs by age,
a batch at a time, and never touches a job that is still live."""

from __future__ import annotations

from typing import Any

import attrs

from pmq_core import migrator as migrator_module
from pmq_core.db import pg_connect
from pmq_core.migrator import Migrator
from pmq_core.plugins import Plugins
from tests.reliability_support import sql

SEED = """
INSERT INTO jobs (queue_name, status, attempt_count, max_attempts, created_at, updated_at)
SELECT 'q', %(status)s, 1, 1, now() - make_interval(days => %(days)s), now() - make_interval(days => %(days)s)
  FROM generate_series(1, %(n)s)
RETURNING id
"""


def seed(url: str, status: str, days: int, n: int, log_days: int | None = None) -> None:
    ids = [row[0] for row in sql(url, SEED, {"status": status, "days": days, "n": n})]
    if log_days is not None:
        sql(url, """INSERT INTO job_logs (job_id, status, attempt_number, started_at, finished_at)
                    SELECT id, 'success', 1, now() - make_interval(days => %(d)s), now() - make_interval(days => %(d)s)
                      FROM unnest(%(ids)s::uuid[]) AS id""", {"d": log_days, "ids": ids})


def by_status_and_age(url: str) -> dict[tuple[str, int], int]:
    rows = sql(url, "SELECT status, extract(day FROM now() - updated_at)::int, count(*) FROM jobs GROUP BY 1, 2")
    return {(status, age): n for status, age, n in rows}


def prune(settings: Any) -> dict[str, int]:
    with pg_connect(settings.database_url) as conn:
        return Migrator(settings, Plugins(None, [], entry_points=False)).prune(conn)


def test_prune_deletes_by_age_per_status_in_batches(pmq_settings, monkeypatch):
    monkeypatch.setattr(migrator_module, "RETENTION_BATCH", 100)
    url = pmq_settings.database_url
    sql(url, "INSERT INTO job_queues (name) VALUES ('q')")
    seed(url, "completed", 200, 250, log_days=200)  # past 183 days: go, with their logs
    seed(url, "completed", 100, 5, log_days=100)    # kept; their logs (past 90 days) go
    seed(url, "cancelled", 200, 3)                  # go
    seed(url, "failed", 200, 4, log_days=10)        # dead letters are kept a year
    seed(url, "failed", 400, 6)                     # go
    seed(url, "queued", 1000, 2)                    # live: never pruned, however old
    seed(url, "retry_scheduled", 1000, 1)
    removed = prune(pmq_settings)
    assert removed == {"completed": 250, "cancelled": 3, "failed": 6, "job_logs": 5}
    assert by_status_and_age(url) == {("completed", 100): 5, ("failed", 200): 4, ("queued", 1000): 2,
                                      ("retry_scheduled", 1000): 1}
    assert sql(url, "SELECT count(*) FROM job_logs") == [(4,)]
    assert prune(pmq_settings) == {"completed": 0, "cancelled": 0, "failed": 0, "job_logs": 0}


def test_retention_follows_the_settings(pmq_settings):
    url = pmq_settings.database_url
    sql(url, "INSERT INTO job_queues (name) VALUES ('q')")
    seed(url, "completed", 3, 2)
    seed(url, "failed", 3, 2, log_days=3)
    short = attrs.evolve(pmq_settings, retention_completed_days=2, retention_failed_days=5, retention_logs_days=1)
    assert prune(short) == {"completed": 2, "cancelled": 0, "failed": 0, "job_logs": 2}
    assert by_status_and_age(url) == {("failed", 3): 2}
    assert sql(url, "SELECT count(*) FROM job_logs") == [(0,)]
