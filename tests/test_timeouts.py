"""Timeouts: an attempt that runs too long counts as a failure and is retried
per policy, for async and sync handlers, while the worker goes on serving
other jobs (a stuck sync handler keeps its thread, not its slot)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from pmq_core import JobStatus, JobType, RetryPolicy, hookimpl
from tests.reliability_support import sql


class Sluggish:
    def __init__(self) -> None:
        self.release = threading.Event()
        self.contexts: list[Any] = []
        self.quick_runs = 0

    async def slow_async(self, job: Any) -> None:
        if job.attempt < job.payload.get("fast_from", 99):
            await asyncio.sleep(60)

    def slow_sync(self, job: Any) -> None:
        self.contexts.append(job)
        if job.attempt < job.payload.get("fast_from", 99):
            self.release.wait(60)  # ignores job.cancelled on purpose

    def quick(self, job: Any) -> None:
        self.quick_runs += 1

    @hookimpl
    def pmq_register_job_types(self) -> list[JobType]:
        policy = RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.02)
        return [JobType(name="slow-async", handler=self.slow_async, timeout=0.3, retry=policy),
                JobType(name="slow-sync", handler=self.slow_sync, timeout=0.3, retry=policy),
                JobType(name="quick", handler=self.quick)]


def logs(rt: Any, job_id: Any) -> list[tuple[str, int, str | None]]:
    return sql(rt.settings.database_url,
               "SELECT status, attempt_number, log_message FROM job_logs WHERE job_id = %s ORDER BY id", (job_id,))


def test_async_timeout_is_a_failure_that_retries(pmq_runtime):
    rt = pmq_runtime(Sluggish(), concurrency=2)
    job_id = rt.enqueue("slow-async", {"fast_from": 2})
    other = rt.enqueue("quick", {})
    assert rt.wait(other).status is JobStatus.COMPLETED
    job = rt.wait(job_id)
    assert (job.status, job.attempt_count) == (JobStatus.COMPLETED, 2)
    assert logs(rt, job_id) == [("retry", 1, "TimeoutError: job exceeded its 0.3s timeout"), ("success", 2, None)]


def test_timeouts_on_every_attempt_end_dead(pmq_runtime):
    rt = pmq_runtime(Sluggish())
    job = rt.wait(rt.enqueue("slow-async", {}))
    assert (job.status, job.attempt_count) == (JobStatus.FAILED, 2)
    assert job.last_error_message == "TimeoutError: job exceeded its 0.3s timeout"


def test_stuck_sync_handler_gives_its_slot_back(pmq_runtime):
    plugin = Sluggish()
    rt = pmq_runtime(plugin, concurrency=1)
    try:
        stuck = rt.enqueue("slow-sync", {})
        # The handler never returns by itself, yet with one slot the worker
        # times it out, retries it (stuck again), and then runs other work.
        job = rt.wait(stuck)
        assert (job.status, job.attempt_count) == (JobStatus.FAILED, 2)
        assert [c.cancelled for c in plugin.contexts] == [True, True]  # told to stop, though it ignores it
        others = rt.wait_all([rt.enqueue("quick", {}) for _ in range(3)])
        assert [o.status for o in others] == [JobStatus.COMPLETED] * 3
        assert plugin.quick_runs == 3
    finally:
        plugin.release.set()


def test_sync_timeout_then_success_on_retry(pmq_runtime):
    plugin = Sluggish()
    rt = pmq_runtime(plugin)
    try:
        job = rt.wait(rt.enqueue("slow-sync", {"fast_from": 2}))
        assert (job.status, job.attempt_count) == (JobStatus.COMPLETED, 2)
        assert [row[:2] for row in logs(rt, job.id)] == [("retry", 1), ("success", 2)]
    finally:
        plugin.release.set()
