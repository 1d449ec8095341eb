"""analytics:daily-aggregate over a seeded day of jobs, on a real database."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import psycopg
import pytest
from pmq_analytics import AnalyticsPlugin
from pmq_analytics.plugin import POOL

from pmq_core import JobStatus, PayloadError
from pmq_core.testing import run_inline, wait_until

QUEUE = "analytics:daily-aggregate"
TODAY = datetime.now(UTC).date()
YESTERDAY = TODAY - timedelta(days=1)
MIDNIGHT = datetime.combine(TODAY, time.min, tzinfo=UTC)

# (queue, status, attempt_count, created_at, [(log status, seconds), ...])
SEED = [
    ("seed-a", "completed", 1, MIDNIGHT - timedelta(hours=23, minutes=59), [("success", 1)]),
    ("seed-a", "completed", 2, MIDNIGHT - timedelta(hours=12), [("retry", 2), ("success", 3)]),
    ("seed-a", "failed", 3, MIDNIGHT - timedelta(hours=6), [("retry", 4), ("retry", 5), ("failed", 6)]),
    ("seed-a", "retry_scheduled", 1, MIDNIGHT - timedelta(seconds=1), [("retry", 7)]),
    ("seed-b", "cancelled", 0, MIDNIGHT - timedelta(hours=3), []),
    ("seed-b", "completed", 1, MIDNIGHT - timedelta(hours=2), [("success", 10)]),
    # Not yesterday's: the day before, and today from midnight on.
    ("seed-a", "completed", 1, MIDNIGHT - timedelta(days=1, seconds=1), [("success", 100)]),
    ("seed-a", "completed", 1, MIDNIGHT, [("success", 200)]),
]

COLUMNS = ("queue_name, jobs, completed, failed, cancelled, unfinished, attempts, timed_attempts, "
           "p50_seconds, p95_seconds")
EXPECTED = [
    # durations 1..7: median 4; 95th percentile 6 + 0.7 * (7 - 6)
    ("seed-a", 4, 2, 1, 0, 1, 7, 7, 4.0, pytest.approx(6.7)),
    ("seed-b", 2, 1, 0, 1, 0, 1, 1, 10.0, 10.0),
]


def seed(url: str) -> None:
    with psycopg.connect(url) as conn:
        conn.execute("INSERT INTO job_queues (name) VALUES ('seed-a'), ('seed-b')")
        for queue, status, attempts, created, logs in SEED:
            (job_id,) = conn.execute(
                "INSERT INTO jobs (queue_name, status, attempt_count, max_attempts, created_at, run_at) "
                "VALUES (%s, %s, %s, 5, %s, %s) RETURNING id",
                (queue, status, attempts, created, MIDNIGHT + timedelta(days=7))).fetchone()
            started = created
            for number, (log_status, seconds) in enumerate(logs, start=1):
                finished = started + timedelta(seconds=seconds)
                conn.execute("INSERT INTO job_logs (job_id, status, attempt_number, started_at, finished_at, duration) "
                             "VALUES (%s, %s, %s, %s, %s, %s)",
                             (job_id, log_status, number, started, finished, finished - started))
                started = finished


def daily(url: str, day=YESTERDAY) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(f"SELECT {COLUMNS} FROM pmq_analytics_daily WHERE day = %s ORDER BY queue_name",
                            (day,)).fetchall()


@pytest.fixture
def analytics():
    return AnalyticsPlugin()


def job_type(plugin):
    (kind,) = plugin.pmq_register_job_types()
    return kind


@pytest.fixture
def inline(pmq_runtime, analytics):
    """The schema and no worker; runs the handler inline with the
    resources a worker would give it."""
    rt = pmq_runtime(analytics, worker=False, migrator=False)
    resources = analytics.pmq_worker_resources(rt.settings)

    def run(payload=None):
        return run_inline(job_type(analytics), payload, resources=resources)

    run.settings = rt.settings
    yield run
    resources[POOL].close()


def test_yesterday_is_aggregated_per_queue_once(inline):
    url = inline.settings.database_url
    seed(url)
    first = inline()
    assert first == {"day": YESTERDAY.isoformat(), "queues": ["seed-a", "seed-b"]}
    assert daily(url) == EXPECTED
    inline({"day": YESTERDAY.isoformat()})
    assert daily(url) == EXPECTED
    backfill = inline({"day": (YESTERDAY - timedelta(days=1)).isoformat()})
    assert backfill["queues"] == ["seed-a"]
    assert daily(url, YESTERDAY - timedelta(days=1)) == [
        ("seed-a", 1, 1, 0, 0, 0, 1, 1, 100.0, 100.0)]


def test_payload_is_checked_and_one_job_per_day_is_live(pmq_runtime, analytics):
    rt = pmq_runtime(analytics, worker=False, migrator=False)
    with pytest.raises(PayloadError, match=QUEUE):
        rt.enqueue(QUEUE, {"day": "yesterday"})
    assert rt.enqueue(QUEUE, {"day": "2026-01-01"}) == rt.enqueue(QUEUE, {"day": "2026-01-01"})
    assert rt.enqueue(QUEUE, {"day": "2026-01-02"}) != rt.enqueue(QUEUE, {"day": "2026-01-01"})


def test_the_daily_schedule_runs_the_aggregate(pmq_runtime, analytics):
    assert job_type(analytics).cron == "5 0 * * *"
    rt = pmq_runtime(analytics, migrator=False)
    seed(rt.settings.database_url)
    rt.start_migrator()

    def scheduled():
        with psycopg.connect(rt.settings.database_url) as conn:
            return conn.execute("SELECT id FROM jobs WHERE queue_name = %s", (QUEUE,)).fetchall()

    ((job_id,),) = wait_until(scheduled, bool, 15, "the migrator did not enqueue the cron job")
    job = rt.wait(job_id)
    assert job.status is JobStatus.COMPLETED
    # Whatever tick it was enqueued for, a job without a day aggregates the day before it was created.
    assert daily(rt.settings.database_url) == EXPECTED
