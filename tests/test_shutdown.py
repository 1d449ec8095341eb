"""Graceful shutdown: SIGTERM lets running jobs finish, gives back the rest."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from pmq_core import JobStatus
from pmq_core.testing import wait_until
from tests.plugin_samples import Recorder, make_plugin

ROOT = Path(__file__).resolve().parent.parent


def start_worker_process(settings, grace: float) -> subprocess.Popen:
    env = {**os.environ, "PMQ_DATABASE_URL": settings.database_url, "PMQ_REDIS_URL": settings.redis_url,
           "PMQ_KEY_PREFIX": settings.key_prefix, "PMQ_SHUTDOWN_GRACE": str(grace),
           "PMQ_POLL_INTERVAL": "0.2", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "tests.worker_process"], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_sigterm_lets_a_running_job_finish(pmq_runtime):
    rt = pmq_runtime(make_plugin(Recorder()), worker=False, migrator=False)
    process = start_worker_process(rt.settings, grace=20)
    try:
        job_id = rt.enqueue("slow", {"seconds": 1.5})
        wait_until(lambda: rt.job(job_id).status, lambda s: s is JobStatus.RUNNING, 20, "job should start")
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        process.kill()
    job = rt.job(job_id)
    assert job.status is JobStatus.COMPLETED and job.attempt_count == 1


def test_sigterm_gives_back_a_job_that_outlives_the_grace_period(pmq_runtime):
    rt = pmq_runtime(make_plugin(Recorder()), worker=False, migrator=False)
    process = start_worker_process(rt.settings, grace=0.5)
    try:
        job_id = rt.enqueue("slow", {"seconds": 2})
        wait_until(lambda: rt.job(job_id).status, lambda s: s is JobStatus.RUNNING, 20, "job should start")
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, process.stderr.read().decode()
    finally:
        process.kill()
    job = rt.job(job_id)
    # Given back: waiting again (in PostgreSQL, or already handed to Redis by
    # a migrator that was still running), its attempt not counted.
    assert job.status in (JobStatus.QUEUED, JobStatus.MIGRATED_TO_REDIS)
    assert (job.attempt_count, job.worker_id) == (0, None)
    rt.start_migrator()
    rt.start_worker()
    done = rt.wait(job_id)
    assert done.status is JobStatus.COMPLETED and done.attempt_count == 1
