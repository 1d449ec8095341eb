"""Graceful shutdown: SIGTERM lets running jobs finish, gives back the rest,
and never hands out a job whose sync handler is still running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from pmq_core import JobStatus
from pmq_core.migrator import Migrator
from pmq_core.testing import wait_until
from pmq_core.worker import STOP_MARGIN
from tests.plugin_samples import Recorder, Spans, make_plugin
from tests.reliability_support import sql

ROOT = Path(__file__).resolve().parent.parent


def start_worker_process(settings, grace: float) -> subprocess.Popen:
    env = {**os.environ, "PMQ_DATABASE_URL": settings.database_url, "PMQ_REDIS_URL": settings.redis_url,
           "PMQ_KEY_PREFIX": settings.key_prefix, "PMQ_SHUTDOWN_GRACE": str(grace),
           "PMQ_POLL_INTERVAL": "0.2", "PMQ_HEARTBEAT_INTERVAL": str(settings.heartbeat_interval),
           "PMQ_RESCUE_AFTER": str(settings.rescue_after), "PYTHONPATH": str(ROOT)}
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


def test_sigterm_never_hands_out_a_job_whose_sync_handler_still_runs(pmq_runtime, tmp_path):
    spans = Spans(tmp_path / "spans")
    rt = pmq_runtime(make_plugin(Recorder()), worker=False, migrator=False)
    grace = 1.0
    process = start_worker_process(rt.settings, grace=grace)
    standby_stop = threading.Event()
    try:
        stuck = [rt.enqueue(queue, {"spans": str(spans.path), "seconds": 15})
                 for queue in ("stubborn", "stubborn", "stubborn", "stubborn-async")]
        wait_until(spans.runs, lambda runs: len(runs) == 4, 20, "the stubborn jobs did not all start")
        # Another worker stands ready to take whatever is given back, and a
        # standby migrator to hand it over once the process's migrator stops.
        rt.start_worker()
        standby = Migrator(rt.settings, rt.plugins)
        threading.Thread(target=standby.run, args=(standby_stop,), daemon=True).start()
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, process.stderr.read().decode()
        took = time.monotonic() - sent
        gone = time.time()
        # Its handlers ignore the stop (three threads, and a coroutine that
        # swallows its cancellation): the process ends hard soon after the
        # grace rather than waiting 15 s for them, and gives their jobs back for later.
        assert took < grace + STOP_MARGIN + 5
        rows = sql(rt.settings.database_url, "SELECT status, attempt_count, worker_id, "
                   "run_at > now() + interval '30 s' FROM jobs WHERE id = ANY(%s)", (stuck,))
        assert rows == [("queued", 0, None, True)] * 4
        # Once due (the delay is skipped here), they run again, after the old
        # threads died with their process.
        sql(rt.settings.database_url, "UPDATE jobs SET run_at = now() WHERE id = ANY(%s)", (stuck,))
        assert [job.status for job in rt.wait_all(stuck)] == [JobStatus.COMPLETED] * 4
    finally:
        process.kill()
        standby_stop.set()
    assert all(len(runs) == 2 for runs in spans.runs().values())
    assert spans.overlaps(killed_by=gone) == []
