"""Jobs run end to end on real servers: enqueue, migrate, claim, run, record."""

from __future__ import annotations

import psycopg

from pmq_core import JobStatus
from tests.plugin_samples import Recorder, make_plugin


def test_sync_and_async_jobs_complete(pmq_runtime):
    recorder = Recorder()
    rt = pmq_runtime(make_plugin(recorder))
    a = rt.enqueue("echo", {"n": 1})
    b = rt.enqueue("aecho", {"x": 2})
    done = rt.wait_all([a, b])
    assert [j.status for j in done] == [JobStatus.COMPLETED, JobStatus.COMPLETED]
    assert done[0].attempt_count == 1 and done[0].completed_at is not None
    with psycopg.connect(rt.settings.database_url) as conn:
        logs = conn.execute("SELECT status, attempt_number, duration IS NOT NULL FROM job_logs WHERE job_id = %s",
                            (a,)).fetchall()
    assert logs == [("success", 1, True)]


def test_job_inserted_by_plain_sql_runs(pmq_runtime):
    recorder = Recorder()
    rt = pmq_runtime(make_plugin(recorder))
    with psycopg.connect(rt.settings.database_url, autocommit=True) as conn:
        job_id = conn.execute("INSERT INTO jobs (queue_name, payload) VALUES ('aecho', '{\"k\": 1}') RETURNING id"
                              ).fetchone()[0]
        # A row that gives one of the two takes the queue's default for the other.
        half = conn.execute("INSERT INTO jobs (queue_name, priority, run_at) "
                            "VALUES ('flaky', 7, now() + interval '1 hour') RETURNING id").fetchone()[0]
    job = rt.wait(job_id)
    assert job.status is JobStatus.COMPLETED
    assert job.priority == 100 and job.max_attempts == 5
    assert (rt.job(half).priority, rt.job(half).max_attempts) == (7, 3)
