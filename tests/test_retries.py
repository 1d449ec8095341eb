"""Retries on real servers: Retry and Fail, and that a retry is a row in
PostgreSQL (retry_scheduled + run_at + a job_logs row) that the migrator
hands back when due, never a sleeping worker. The policy's maths and which
errors retry are unit tests (tests/unit/test_retry_policy.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from pmq_core import Fail, JobStatus, JobType, Retry, RetryPolicy, hookimpl


def sql(url: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


class RetryPlugin:
    """Job types whose behaviour the payload chooses."""

    def __init__(self) -> None:
        self.attempts: dict[str, list[int]] = {}

    def _seen(self, job: Any) -> None:
        self.attempts.setdefault(str(job.id), []).append(job.attempt)

    def flaky(self, job: Any) -> None:
        self._seen(job)
        if job.attempt < job.payload.get("succeed_on", 99):
            raise ConnectionResetError("connection reset by peer")

    def picky(self, job: Any) -> None:
        self._seen(job)
        errors = {"connection": ConnectionRefusedError("refused"), "value": ValueError("bad value")}
        raise errors[job.payload["raise"]]

    def explicit(self, job: Any) -> None:
        self._seen(job)
        if job.attempt == 1:
            raise Retry("not yet", delay=job.payload["delay"])

    def fails(self, job: Any) -> None:
        self._seen(job)
        raise Fail("cannot ever work")

    def echo(self, job: Any) -> None:
        self._seen(job)

    @hookimpl
    def pmq_register_job_types(self) -> list[JobType]:
        quick = RetryPolicy(max_attempts=4, base_delay=0.02, max_delay=0.1)
        return [
            JobType(name="flaky", handler=self.flaky, retry=quick),
            JobType(name="picky", handler=self.picky,
                    retry=RetryPolicy(max_attempts=3, base_delay=0.02, max_delay=0.1,
                                      retry_on=(ConnectionError,))),
            JobType(name="explicit", handler=self.explicit, retry=quick),
            JobType(name="fails", handler=self.fails, retry=quick),
            JobType(name="echo", handler=self.echo),
            JobType(name="slowbackoff", handler=self.flaky,
                    retry=RetryPolicy(max_attempts=2, base_delay=10.0, max_delay=300.0)),
        ]


# -- retries on real servers --------------------------------------------------------


def test_transient_failures_retry_until_success_with_a_log_row_each(pmq_runtime):
    plugin = RetryPlugin()
    rt = pmq_runtime(plugin)
    job_id = rt.enqueue("flaky", {"succeed_on": 3})
    job = rt.wait(job_id)
    assert job.status is JobStatus.COMPLETED
    assert job.attempt_count == 3 and plugin.attempts[str(job_id)] == [1, 2, 3]
    logs = sql(rt.settings.database_url,
               "SELECT status, attempt_number, log_message FROM job_logs WHERE job_id = %s ORDER BY id", (job_id,))
    assert [(s, n) for s, n, _ in logs] == [("retry", 1), ("retry", 2), ("success", 3)]
    assert "ConnectionResetError" in logs[0][2]


def test_max_attempts_is_per_job_type_and_per_job(pmq_runtime):
    plugin = RetryPlugin()
    rt = pmq_runtime(plugin)
    by_type = rt.enqueue("flaky", {})
    by_job = rt.enqueue("flaky", {}, max_attempts=2)
    first, second = rt.wait_all([by_type, by_job])
    assert (first.status, first.attempt_count) == (JobStatus.FAILED, 4)
    assert (second.status, second.attempt_count) == (JobStatus.FAILED, 2)


def test_only_errors_named_by_retry_on_are_retried(pmq_runtime):
    plugin = RetryPlugin()
    rt = pmq_runtime(plugin)
    transient = rt.enqueue("picky", {"raise": "connection"})
    permanent = rt.enqueue("picky", {"raise": "value"})
    transient_job, permanent_job = rt.wait_all([transient, permanent])
    assert (transient_job.status, transient_job.attempt_count) == (JobStatus.FAILED, 3)
    assert (permanent_job.status, permanent_job.attempt_count) == (JobStatus.FAILED, 1)
    assert permanent_job.last_error_message == "ValueError: bad value"


def test_fail_kills_the_job_at_once(pmq_runtime):
    plugin = RetryPlugin()
    rt = pmq_runtime(plugin)
    job = rt.wait(rt.enqueue("fails", {}))
    assert (job.status, job.attempt_count) == (JobStatus.FAILED, 1)
    assert job.last_error_message == "Fail: cannot ever work"


def test_policy_backoff_is_written_as_run_at(pmq_runtime):
    plugin = RetryPlugin()
    rt = pmq_runtime(plugin)
    job_id = rt.enqueue("slowbackoff", {})
    job = rt.wait(job_id, statuses=[JobStatus.RETRY_SCHEDULED])
    (finished,) = sql(rt.settings.database_url, "SELECT finished_at FROM job_logs WHERE job_id = %s", (job_id,))[0]
    delay = (job.run_at - finished).total_seconds()
    assert 10 * 2 * 0.75 <= delay <= 10 * 2 * 1.25  # base 10 s x 2^1, +-25 %


def test_retry_is_a_scheduled_row_not_a_sleeping_worker(pmq_runtime):
    """A job asking to retry in a minute leaves the only worker slot free at
    once; when its run_at comes due, the migrator hands it back."""
    plugin = RetryPlugin()
    rt = pmq_runtime(plugin, concurrency=1)
    waiting = rt.enqueue("explicit", {"delay": 60})
    job = rt.wait(waiting, statuses=[JobStatus.RETRY_SCHEDULED])
    assert job.worker_id is None and job.attempt_count == 1
    assert timedelta(seconds=50) < job.run_at - datetime.now(UTC) <= timedelta(seconds=60)
    logs = sql(rt.settings.database_url, "SELECT status, attempt_number, log_message FROM job_logs WHERE job_id = %s",
               (waiting,))
    assert logs == [("retry", 1, "Retry: not yet")]

    other = rt.wait(rt.enqueue("echo", {}))  # the single slot is free meanwhile
    assert other.status is JobStatus.COMPLETED
    assert rt.job(waiting).status is JobStatus.RETRY_SCHEDULED

    sql(rt.settings.database_url, "UPDATE jobs SET run_at = now() WHERE id = %s", (waiting,))
    job = rt.wait(waiting)
    assert (job.status, job.attempt_count) == (JobStatus.COMPLETED, 2)
    assert plugin.attempts[str(waiting)] == [1, 2]
