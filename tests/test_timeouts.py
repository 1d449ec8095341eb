"""Timeouts: an attempt that runs too long counts as a failure and is retried
per policy, for async and sync handlers. An async handler is cancelled; a
sync handler's thread cannot be, so its job keeps its slot and stays
running until the thread ends: no second attempt overlaps it."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from pmq_core import JobStatus, JobType, RetryPolicy, hookimpl
from pmq_core.testing import wait_until
from tests.plugin_samples import Spans, stubborn
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
                JobType(name="quick", handler=self.quick),
                JobType(name="stubborn", handler=stubborn, timeout=0.3,
                        retry=RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.02))]


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


def test_a_timed_out_sync_handler_keeps_its_slot_and_job_until_it_returns(pmq_runtime):
    plugin = Sluggish()
    rt = pmq_runtime(plugin, concurrency=1, prefetch=1)
    try:
        stuck = rt.enqueue("slow-sync", {"fast_from": 2})
        wait_until(lambda: plugin.contexts, lambda seen: seen and seen[0].cancelled, 10, "no timeout")
        other = rt.enqueue("quick", {})
        rt.wait(other, statuses=[JobStatus.RUNNING])  # claimed ahead, waiting for the one slot
        # Timed out and told to stop, the handler ignores it: its job stays
        # running on the worker (no retry can start) and holds the slot.
        assert (rt.job(stuck).status, rt.job(stuck).attempt_count) == (JobStatus.RUNNING, 1)
        assert plugin.quick_runs == 0
        assert sql(rt.settings.database_url, "SELECT count(*) FROM job_logs WHERE job_id = %s", (stuck,)) == [(0,)]
        plugin.release.set()
        assert rt.wait(other).status is JobStatus.COMPLETED
        job = rt.wait(stuck)
        assert (job.status, job.attempt_count) == (JobStatus.COMPLETED, 2)
        assert [row[:2] for row in logs(rt, stuck)] == [("retry", 1), ("success", 2)]
    finally:
        plugin.release.set()


def test_timed_out_sync_attempts_never_overlap(pmq_runtime, tmp_path):
    spans = Spans(tmp_path / "spans")
    rt = pmq_runtime(Sluggish(), concurrency=4)
    job_id = rt.enqueue("stubborn", {"spans": str(spans.path), "seconds": 1.0, "fast_from": 3})
    job = rt.wait(job_id)
    assert (job.status, job.attempt_count) == (JobStatus.COMPLETED, 3)
    assert [run["attempt"] for run in spans.runs()[str(job_id)]] == [1, 2, 3]
    assert spans.overlaps() == []
    # Each timed-out attempt is logged as lasting until its thread ended.
    durations = sql(rt.settings.database_url, "SELECT extract(epoch FROM duration) FROM job_logs "
                    "WHERE job_id = %s AND status = 'retry' ORDER BY id", (job_id,))
    assert [float(d) >= 1.0 for (d,) in durations] == [True, True]
