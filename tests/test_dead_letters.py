"""Dead letters: what a job that used up its attempts leaves behind, and
replaying or purging dead jobs by id, by queue or all, through Admin."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from pmq_core import JobNotFoundError, JobStatus, JobType, RetryPolicy, hookimpl
from pmq_core.db import pg_connect, redis_client
from pmq_core.keys import Keys
from pmq_core.limits import MAX_ERROR_LENGTH
from pmq_core.migrator import Migrator
from pmq_core.testing import wait_until


class Doomed:
    """Two job types that fail until the plugin is healed."""

    def __init__(self) -> None:
        self.healed = False
        self.runs: list[tuple[str, int]] = []

    def handler(self, job: Any) -> str:
        self.runs.append((str(job.id), job.attempt))
        if not self.healed:
            raise ConnectionAbortedError("smtp down " + "x" * job.payload.get("pad", 0))
        return "ok"

    @hookimpl
    def pmq_register_job_types(self) -> list[JobType]:
        policy = RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.02)
        return [JobType(name="mail", handler=self.handler, retry=policy),
                JobType(name="hooks", handler=self.handler, retry=policy)]


def dead_list(rt: Any, queue: str) -> list[str]:
    rds = redis_client(rt.settings.redis_url)
    try:
        return [item.decode() for item in rds.lrange(Keys(rt.settings.key_prefix).dead(queue), 0, -1)]
    finally:
        rds.close()


def kill(rt: Any, queue: str, count: int) -> list[Any]:
    ids = [rt.enqueue(queue, {}) for _ in range(count)]
    assert all(job.status is JobStatus.FAILED for job in rt.wait_all(ids))
    return ids


def count(rt: Any, query: str) -> int:
    with psycopg.connect(rt.settings.database_url) as conn:
        return conn.execute(query).fetchone()[0]


def test_a_dead_job_is_failed_logged_bounded_and_listed_in_redis(pmq_runtime):
    plugin = Doomed()
    rt = pmq_runtime(plugin)
    job_id = rt.enqueue("mail", {"pad": 10_000})
    job = rt.wait(job_id)
    assert job.status is JobStatus.FAILED and job.attempt_count == 2
    assert job.failed_at is not None and job.completed_at is None
    assert job.last_error_message.startswith("ConnectionAbortedError: smtp down xxx")
    assert len(job.last_error_message) == MAX_ERROR_LENGTH
    with rt.admin() as admin:
        _, logs = admin.job(job_id)
        dead = admin.dead()
    assert [(log["status"], log["attempt_number"]) for log in logs] == [("retry", 1), ("failed", 2)]
    assert all(len(log["log_message"]) <= MAX_ERROR_LENGTH for log in logs)
    assert [row["id"] for row in dead] == [job_id]
    assert dead_list(rt, "mail") == [str(job_id)]


def test_a_job_whose_worker_is_lost_for_the_last_time_is_listed_in_redis(pmq_runtime):
    rt = pmq_runtime(Doomed(), worker=False, migrator=False)
    last, early = rt.enqueue("mail", {}), rt.enqueue("hooks", {})
    # Held by a worker that has vanished: one job rescued max_rescues - 1
    # times already and running alone as a suspect, one never rescued.
    with psycopg.connect(rt.settings.database_url, autocommit=True) as conn:
        conn.execute("UPDATE jobs SET status = 'running', started_at = now(), attempt_count = 1, "
                     "rescue_count = CASE WHEN id = %(last)s THEN %(count)s ELSE 0 END, "
                     "suspect_started_at = CASE WHEN id = %(last)s THEN now() END",
                     {"last": last, "count": rt.settings.max_rescues - 1})
    rds = redis_client(rt.settings.redis_url)
    try:
        with pg_connect(rt.settings.database_url) as conn:
            assert Migrator(rt.settings, rt.plugins).rescue(conn, rds) == 2
    finally:
        rds.close()
    assert (rt.job(last).status, rt.job(early).status) == (JobStatus.FAILED, JobStatus.QUEUED)
    assert (dead_list(rt, "mail"), dead_list(rt, "hooks")) == ([str(last)], [])


def test_replay_by_id_resets_attempts_and_runs_again(pmq_runtime):
    plugin = Doomed()
    rt = pmq_runtime(plugin)
    first, second = kill(rt, "mail", 2)
    plugin.healed = True
    with rt.admin() as admin:
        assert admin.replay([first]) == [first]
    job = rt.wait(first)
    assert (job.status, job.attempt_count, job.failed_at) == (JobStatus.COMPLETED, 1, None)
    assert (str(first), 1) in plugin.runs[-1:]  # ran again from attempt 1
    assert rt.job(second).status is JobStatus.FAILED
    assert dead_list(rt, "mail") == [str(second)]


def test_replay_by_queue_and_all(pmq_runtime):
    plugin = Doomed()
    rt = pmq_runtime(plugin)
    mail = kill(rt, "mail", 2)
    hooks = kill(rt, "hooks", 2)
    plugin.healed = True
    with rt.admin() as admin:
        assert sorted(admin.replay(queue="hooks")) == sorted(hooks)
        assert all(j.status is JobStatus.COMPLETED for j in rt.wait_all(hooks))
        assert [j.status for j in map(rt.job, mail)] == [JobStatus.FAILED] * 2
        assert sorted(admin.replay()) == sorted(mail)
    assert all(j.status is JobStatus.COMPLETED for j in rt.wait_all(mail))
    assert dead_list(rt, "mail") == dead_list(rt, "hooks") == []


def test_replay_of_a_job_that_is_not_dead_is_refused_by_name(pmq_runtime):
    plugin = Doomed()
    rt = pmq_runtime(plugin)
    (dead,) = kill(rt, "mail", 1)
    plugin.healed = True
    done = rt.wait(rt.enqueue("mail", {}))
    with rt.admin() as admin, pytest.raises(JobNotFoundError, match=str(done.id)):
        admin.replay([done.id, dead])
    assert rt.wait(dead).status is JobStatus.COMPLETED  # the dead one of the pair was replayed
    with rt.admin() as admin, pytest.raises(JobNotFoundError, match="not a job id"):
        admin.replay(["not-a-uuid"])


def test_purge_by_id_queue_and_all_deletes_jobs_logs_and_redis_entries(pmq_runtime):
    plugin = Doomed()
    rt = pmq_runtime(plugin)
    mail = kill(rt, "mail", 3)
    hooks = kill(rt, "hooks", 2)
    with rt.admin() as admin:
        assert admin.purge([mail[0]]) == [mail[0]]
        with pytest.raises(JobNotFoundError):
            rt.job(mail[0])
        assert sorted(admin.purge(queue="hooks")) == sorted(hooks)
        assert dead_list(rt, "hooks") == []
        assert sorted(admin.purge()) == sorted(mail[1:])
        assert admin.dead() == []
    assert count(rt, "SELECT count(*) FROM jobs") == 0
    assert count(rt, "SELECT count(*) FROM job_logs") == 0
    assert dead_list(rt, "mail") == []


def test_a_job_no_loaded_plugin_serves_waits_and_health_warns(pmq_runtime):
    plugin = Doomed()
    plugin.healed = True
    rt = pmq_runtime(plugin)
    url = rt.settings.database_url
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO job_queues (name) VALUES ('orphan')")
    orphans = rt.client.enqueue_many("orphan", [{"n": i} for i in range(3)])
    # Let the migrator hand them to Redis and run a few housekeeping rounds.
    rt.wait(orphans[0], statuses=[JobStatus.MIGRATED_TO_REDIS])
    assert rt.wait(rt.enqueue("mail", {})).status is JobStatus.COMPLETED
    with rt.admin() as admin:
        wait_until(admin.health, lambda report: any("'orphan'" in w for w in report["warnings"]), 10,
                   "health did not warn about the unserved queue")
        report = admin.health()
    warning = next(w for w in report["warnings"] if "'orphan'" in w)
    assert "3 waiting" in warning and report["status"] == "warning"
    entry = next(q for q in report["queues"] if q["name"] == "orphan")
    assert (entry["waiting"], entry["served"], entry["dead"]) == (3, False, 0)
    assert all(rt.job(i).status in (JobStatus.QUEUED, JobStatus.MIGRATED_TO_REDIS) for i in orphans)
    assert all(rt.job(i).attempt_count == 0 for i in orphans)
