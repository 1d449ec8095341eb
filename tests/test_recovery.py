"""Crash recovery: a SIGKILLed worker's jobs are rescued and completed by
another; Redis wiped or restarted and PostgreSQL restarted under load lose
nothing. Servers that get killed here are this test's own, never the
machine's shared ones."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest

from pmq_core import DatabaseUnavailableError, JobStatus, JobType, Settings, hookimpl
from pmq_core.db import pg_connect
from pmq_core.keys import Keys
from pmq_core.migrator import Migrator
from pmq_core.plugins import Plugins
from pmq_core.testing import wait_until
from tests import reliability_support
from tests.chaos.workload import QUEUE, RUNS_TABLE, Workload, start_worker_process
from tests.plugin_samples import Recorder, make_plugin
from tests.reliability_support import redis_of, scalar, sql

own_postgres = reliability_support.own_postgres
own_valkey = reliability_support.own_valkey

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def worker_process(tmp_path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start workload workers as child processes; kill whatever is left."""
    started: list[tuple[subprocess.Popen[bytes], Any]] = []

    def start(settings: Settings, concurrency: int = 20) -> subprocess.Popen[bytes]:
        log = open(tmp_path / f"worker-{len(started)}.log", "wb")  # noqa: SIM115 (closed at teardown)
        process = start_worker_process(settings, log, concurrency)
        started.append((process, log))
        wait_until(lambda: registered(settings, process), bool, 30,
                   f"worker process {process.pid} did not register (log: {log.name})")
        return process

    yield start
    for process, log in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
        log.close()


def registered(settings: Settings, process: subprocess.Popen[bytes]) -> bool:
    if process.poll() is not None:
        raise AssertionError(f"worker process exited with {process.returncode}")
    return bool(scalar(settings.database_url, "SELECT count(*) FROM pmq_workers WHERE pid = %s", (process.pid,)))


def runs(settings: Settings) -> dict[Any, int]:
    return dict(sql(settings.database_url, "SELECT job_id, count(*) FROM chaos_runs GROUP BY job_id"))


def statuses(settings: Settings) -> dict[str, int]:
    return dict(sql(settings.database_url, "SELECT status, count(*) FROM jobs GROUP BY status"))


def all_completed(settings: Settings, total: int, timeout: float) -> None:
    wait_until(lambda: statuses(settings), lambda s: s.get("completed") == total, timeout,
               f"not all {total} jobs completed")


# -- crashed workers -----------------------------------------------------------------


def test_a_killed_workers_jobs_are_rescued_and_completed_by_another(pmq_settings, pmq_runtime, worker_process):
    sql(pmq_settings.database_url, RUNS_TABLE)
    rt = pmq_runtime(Workload(pmq_settings.database_url), worker=False, rescue_after=2.0)
    doomed_worker = worker_process(rt.settings)
    ids = rt.client.enqueue_many(QUEUE, [{"sleep": 120}] * 5)
    held = ("SELECT count(*) FROM jobs j JOIN pmq_workers w ON w.id = j.worker_id"
            " WHERE w.pid = %s AND j.status = 'running'")
    wait_until(lambda: scalar(rt.settings.database_url, held, (doomed_worker.pid,)), lambda n: n == 5, 30,
               "the worker process did not take all the jobs")

    os.kill(doomed_worker.pid, signal.SIGKILL)
    doomed_worker.wait(timeout=10)
    killed_at = time.monotonic()
    # Their next run is their first counted attempt again: make it quick.
    sql(rt.settings.database_url, "UPDATE jobs SET payload = '{}'")
    rt.start_worker()
    jobs = rt.wait_all(ids, timeout=60)
    print(f"rescued and completed {len(ids)} jobs {time.monotonic() - killed_at:.1f}s after the kill")

    # The rescue blames nobody: the lost attempt is given back, and the
    # jobs, suspects now, run again (alone, in the worker's isolation child).
    assert [(job.status, job.attempt_count) for job in jobs] == [(JobStatus.COMPLETED, 1)] * 5
    with rt.admin() as admin:
        _, logs = admin.job(ids[0])
    assert [(log["status"], log["attempt_number"], log["log_message"]) for log in logs] == [
        ("retry", 1, "worker lost: no heartbeat for 2s; the attempt does not count"), ("success", 1, None)]
    ((attempt, pid),) = sql(rt.settings.database_url, "SELECT DISTINCT attempt, pid FROM chaos_runs")
    assert attempt == 1 and pid not in (os.getpid(), doomed_worker.pid)


class LoopHog:
    """An async handler that blocks its event loop for longer than the
    rescue window: only a heartbeat from its own thread keeps the job."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def hog(self, job: Any) -> None:
        time.sleep(self.seconds)  # deliberately blocks the event loop

    @hookimpl
    def pmq_register_job_types(self) -> list[JobType]:
        return [JobType(name="hog", handler=self.hog)]


def test_a_busy_worker_keeps_its_jobs(pmq_runtime):
    rt = pmq_runtime(LoopHog(seconds=4.0), rescue_after=1.5, heartbeat_interval=0.5)
    job = rt.wait(rt.enqueue("hog", {}))
    assert (job.status, job.attempt_count) == (JobStatus.COMPLETED, 1)
    with rt.admin() as admin:
        _, logs = admin.job(job.id)
    assert [log["status"] for log in logs] == ["success"]


# -- Redis lost ------------------------------------------------------------------------


def test_jobs_wiped_from_redis_are_handed_over_again(pmq_settings, pmq_runtime, own_valkey, caplog):
    caplog.set_level(logging.WARNING, logger="pmq_core.migrator")
    sql(pmq_settings.database_url, RUNS_TABLE)
    rt = pmq_runtime(Workload(pmq_settings.database_url), worker=False, redis_url=own_valkey.url)
    ids = rt.client.enqueue_many(QUEUE, [{}] * 300)
    wait_until(lambda: statuses(rt.settings), lambda s: s == {"migrated_to_redis": 300}, 20,
               "the jobs were not all handed to Redis")
    band = Keys(rt.settings.key_prefix).band(QUEUE, "normal")
    with redis_of(rt.settings) as rds:
        # The migrator pushes the messages just after its commit: wipe them
        # once they are there, not in between (a push after the wipe would
        # leave nothing lost).
        wait_until(lambda: rds.llen(band), lambda n: n == 300, 20, "the messages did not all reach Redis")
        rds.flushall()
    wiped_at = time.monotonic()
    rt.start_worker()
    all_completed(rt.settings, len(ids), 30)
    print(f"300 wiped jobs handed over again and completed in {time.monotonic() - wiped_at:.1f}s")
    assert "had lost their Redis message" in caplog.text
    assert sorted(runs(rt.settings).values()) == [1] * 300


def test_a_message_popped_a_moment_ago_is_not_taken_for_lost(pmq_runtime):
    rt = pmq_runtime(make_plugin(Recorder()), worker=False, migrator=False, redispatch_after=0.1)
    popped, lost = rt.enqueue("echo", {"n": 1}), rt.enqueue("echo", {"n": 2})
    band = Keys(rt.settings.key_prefix).band("echo", "normal")
    with redis_of(rt.settings) as rds:
        wait_until(lambda: rds.llen(band), lambda n: n == 2, 5, "the messages did not arrive")
        rds.delete(band)  # both messages gone, as if a worker had just popped them
    sql(rt.settings.database_url, "UPDATE jobs SET updated_at = now() - interval '1 minute'")
    migrator = Migrator(rt.settings, rt.plugins)
    with redis_of(rt.settings) as rds, pg_connect(rt.settings.database_url) as conn:
        assert migrator.redispatch_lost(conn, rds) == 0  # missing once: maybe in flight
        sql(rt.settings.database_url, "UPDATE jobs SET status = 'running' WHERE id = %s", (popped,))  # claimed
        assert migrator.redispatch_lost(conn, rds) == 1  # missing twice: lost
    assert (rt.job(popped).status, rt.job(lost).status) == (JobStatus.RUNNING, JobStatus.QUEUED)


def test_redis_wiped_and_restarted_under_load_loses_nothing(pmq_settings, pmq_runtime, own_valkey):
    sql(pmq_settings.database_url, RUNS_TABLE)
    rt = pmq_runtime(Workload(pmq_settings.database_url), redis_url=own_valkey.url, concurrency=20)
    total = 3000
    rt.client.enqueue_many(QUEUE, [{"sleep": 0.005}] * total)
    done = lambda: statuses(rt.settings).get("completed", 0)  # noqa: E731
    wait_until(done, lambda n: n > total // 5, 60, "jobs did not start completing")
    with redis_of(rt.settings) as rds:
        rds.flushall()
    wait_until(done, lambda n: n > total // 2, 60, "jobs did not go on completing after FLUSHALL")
    own_valkey.kill()
    own_valkey.start()
    all_completed(rt.settings, total, 90)
    counts = runs(rt.settings)
    assert len(counts) == total
    assert statuses(rt.settings) == {"completed": total}


def test_migrator_warns_about_a_redis_that_may_evict_or_forget(pmq_settings, own_valkey, caplog):
    settings = attrs.evolve(pmq_settings, redis_url=own_valkey.url)
    with redis_of(settings) as rds:
        rds.config_set("maxmemory-policy", "allkeys-lru")
        rds.config_set("appendonly", "no")
    caplog.set_level(logging.WARNING, logger="pmq_core.migrator")
    migrator = Migrator(settings, Plugins(None, [], entry_points=False))
    stop = threading.Event()
    thread = threading.Thread(target=migrator.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert migrator.is_leader.wait(20)
    finally:
        stop.set()
        thread.join(20)
    assert "maxmemory-policy is 'allkeys-lru'" in caplog.text and "'noeviction'" in caplog.text
    assert "keeps nothing on disk" in caplog.text


# -- PostgreSQL lost -------------------------------------------------------------------


def test_a_claim_committed_while_its_reply_was_lost_is_given_back(pmq_runtime):
    """A failover or a restart can cut the connection after a round's
    commit and before its reply: the worker sends the round again, and its
    claims then match nothing. The job must not stay running under a live
    worker (no rescue takes it): the worker gives it back once it is
    connected again. Staged here: a job marked running under the worker,
    as that lost commit leaves it, then the worker's connection cut."""
    rt = pmq_runtime(make_plugin(Recorder()), worker=False)
    worker = rt.start_worker()
    url = rt.settings.database_url
    rt.wait(rt.client.enqueue("echo", {"n": 0}))  # the worker's connection is open
    orphan = rt.client.enqueue("echo", {"n": 1}, delay=3600)
    sql(url, "UPDATE jobs SET status = 'running', attempt_count = 1, started_at = now(), worker_id = %s "
             "WHERE id = %s", (worker.id, orphan))
    sql(url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "  # the runtime's, not the client's
             "WHERE datname = current_database() AND application_name = 'pmq'")

    rt.wait(rt.client.enqueue("echo", {"n": 2}))  # the worker's next round meets the cut connection

    job = rt.wait(orphan, timeout=20)
    assert (job.status, job.attempt_count) == (JobStatus.COMPLETED, 1)


def test_postgres_restarted_under_load_loses_nothing(pmq_runtime, own_postgres):
    url = own_postgres.url
    sql(url, RUNS_TABLE)
    rt = pmq_runtime(Workload(url), database_url=url, concurrency=20)
    total = 2000
    rt.client.enqueue_many(QUEUE, [{"sleep": 0.005}] * total)
    done = lambda: statuses(rt.settings).get("completed", 0)  # noqa: E731
    wait_until(done, lambda n: n > total // 4, 60, "jobs did not start completing")
    own_postgres.kill()
    try:
        asked = time.monotonic()
        for _ in range(2):  # a broken pooled connection, then no connection at all
            with pytest.raises(DatabaseUnavailableError, match="PostgreSQL"):
                rt.enqueue(QUEUE, {})
        print(f"enqueue refused after {time.monotonic() - asked:.1f}s while PostgreSQL was down")
    finally:
        own_postgres.start()
    after = wait_until(lambda: try_enqueue(rt), bool, 30, "enqueue did not work again after the restart")
    all_completed(rt.settings, total + 1, 120)
    assert rt.job(after).status is JobStatus.COMPLETED
    counts = runs(rt.settings)
    assert len(counts) == total + 1
    # Live workers keep their jobs across the outage: none was rescued and run again.
    assert scalar(url, "SELECT count(*) FROM job_logs WHERE log_message LIKE 'worker lost%%'") == 0


def try_enqueue(rt: Any) -> Any:
    """A job id, or None while the client's pool is still reconnecting."""
    try:
        return rt.enqueue(QUEUE, {})
    except DatabaseUnavailableError:
        return None
