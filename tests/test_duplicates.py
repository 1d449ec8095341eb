"""A Redis message is only a hint: duplicated messages never run a job twice
at once, and stale or garbage ones never run anything."""

from __future__ import annotations

import threading
import uuid
from typing import Any

from pmq_core import JobStatus, JobType, hookimpl
from pmq_core.keys import message
from pmq_core.testing import wait_until
from tests.reliability_support import background_worker, keys_of, redis_of, scalar, sql


class Gate:
    """A job type that holds each run until the gate opens, counting runs
    and the most that ran at the same time."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open = threading.Event()
        self.runs: list[tuple[str, int]] = []
        self.active = 0
        self.most_active = 0

    def handler(self, job: Any) -> None:
        with self.lock:
            self.runs.append((str(job.id), job.attempt))
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        try:
            self.open.wait(30)
        finally:
            with self.lock:
                self.active -= 1

    @hookimpl
    def pmq_register_job_types(self) -> list[JobType]:
        return [JobType(name="gated", handler=self.handler)]


def band_items(rt: Any, queue: str = "gated") -> list[bytes]:
    with redis_of(rt.settings) as rds:
        return rds.lrange(keys_of(rt.settings).band(queue, "normal"), 0, -1)


def push(rt: Any, *items: str | bytes, queue: str = "gated") -> None:
    with redis_of(rt.settings) as rds:
        rds.rpush(keys_of(rt.settings).band(queue, "normal"), *items)


def migrated(rt: Any, job_id: uuid.UUID) -> None:
    rt.wait(job_id, statuses=[JobStatus.MIGRATED_TO_REDIS])
    wait_until(lambda: band_items(rt), lambda items: message(job_id, 0).encode() in items, 5,
               "the job's message did not reach Redis")


def test_a_message_pushed_many_times_runs_the_job_once(pmq_runtime):
    plugin = Gate()
    rt = pmq_runtime(plugin, worker=False)
    job_id = rt.enqueue("gated", {})
    migrated(rt, job_id)
    push(rt, *[message(job_id, 0)] * 5)
    # Two workers with room for all copies pop them at the same time.
    with background_worker(rt.settings, rt.plugins, concurrency=4), \
            background_worker(rt.settings, rt.plugins, concurrency=4):
        wait_until(lambda: band_items(rt), lambda items: items == [], 10, "the copies were not all popped")
        # A popped message claims its job in the worker's next database
        # round, so the claim may land a moment after the band empties.
        wait_until(lambda: rt.job(job_id).status, lambda status: status is JobStatus.RUNNING, 10,
                   "no copy claimed the job")
        plugin.open.set()
        job = rt.wait(job_id)
    assert (job.status, job.attempt_count) == (JobStatus.COMPLETED, 1)
    assert plugin.runs == [(str(job_id), 1)] and plugin.most_active == 1
    assert scalar(rt.settings.database_url, "SELECT count(*) FROM job_logs WHERE job_id = %s", (job_id,)) == 1


def test_stale_and_garbage_messages_run_nothing(pmq_runtime):
    plugin = Gate()
    plugin.open.set()
    rt = pmq_runtime(plugin)
    finished = rt.wait(rt.enqueue("gated", {}))
    with rt.admin() as admin:
        cancelled = rt.enqueue("gated", {}, delay=3600)
        admin.cancel(cancelled)
    stale = [
        message(finished.id, 0),   # the attempt it already ran
        message(finished.id, 1),   # its current attempt, but it is finished
        message(cancelled, 0),  # cancelled before it ever ran
        message(uuid.uuid4(), 0),  # no such job
        "not a message", "", ":", "123:456", f"{finished.id}:x", b"\xff\xfe\x00",
    ]
    push(rt, *stale)
    sentinel = rt.enqueue("gated", {})
    assert rt.wait(sentinel).status is JobStatus.COMPLETED
    wait_until(lambda: band_items(rt), lambda items: items == [], 5, "stale messages were not consumed")
    assert [run[0] for run in plugin.runs] == [str(finished.id), str(sentinel)]
    assert rt.job(finished.id).status is JobStatus.COMPLETED
    assert rt.job(cancelled).status is JobStatus.CANCELLED
    assert scalar(rt.settings.database_url, "SELECT count(*) FROM job_logs") == 2


def test_a_message_for_an_older_attempt_does_not_claim_and_the_job_is_handed_over_again(pmq_runtime):
    plugin = Gate()
    plugin.open.set()
    rt = pmq_runtime(plugin, worker=False)
    job_id = rt.enqueue("gated", {})
    migrated(rt, job_id)
    # As if the job had run once and been migrated again: Redis still holds
    # the first attempt's message, which must not claim attempt 2.
    sql(rt.settings.database_url, "UPDATE jobs SET attempt_count = 1 WHERE id = %s", (job_id,))
    rt.start_worker()
    job = rt.wait(job_id)
    assert (job.status, job.attempt_count) == (JobStatus.COMPLETED, 2)
    assert plugin.runs == [(str(job_id), 2)]
