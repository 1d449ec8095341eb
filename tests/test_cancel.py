"""Cancellation: a waiting job never runs; a running async job is stopped; a
running sync job is told through ``job.cancelled``; all end ``cancelled``."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from pmq_core import JobNotFoundError, JobStatus, JobType, hookimpl
from pmq_core.testing import wait_until
from tests.plugin_samples import Recorder, Spans, make_plugin
from tests.reliability_support import scalar


class Cancellable:
    def __init__(self) -> None:
        self.started: dict[str, threading.Event] = {}
        self.ran: list[str] = []
        self.async_cancelled = threading.Event()
        self.sync_saw_cancel = threading.Event()

    def _start(self, job: Any) -> None:
        self.ran.append(str(job.id))
        self.started.setdefault(str(job.id), threading.Event()).set()

    def started_event(self, job_id: Any) -> threading.Event:
        return self.started.setdefault(str(job_id), threading.Event())

    async def along(self, job: Any) -> None:
        self._start(job)
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            self.async_cancelled.set()
            raise

    def slong(self, job: Any) -> str:
        self._start(job)
        wait_until(lambda: job.cancelled, bool, 60, "sync job was not told it is cancelled")
        self.sync_saw_cancel.set()
        return "stopped early"

    def quick(self, job: Any) -> None:
        self._start(job)

    @hookimpl
    def pmq_register_job_types(self) -> list[JobType]:
        return [JobType(name="along", handler=self.along, timeout=120),
                JobType(name="slong", handler=self.slong, timeout=120),
                JobType(name="quick", handler=self.quick)]


def test_waiting_jobs_cancelled_never_run(pmq_runtime):
    plugin = Cancellable()
    rt = pmq_runtime(plugin, worker=False)
    queued = rt.enqueue("quick", {})
    rt.wait(queued, statuses=[JobStatus.MIGRATED_TO_REDIS])  # its message sits in Redis
    scheduled = rt.enqueue("quick", {}, delay=0.5)
    with rt.admin() as admin:
        assert admin.cancel(queued) == "migrated_to_redis"
        assert admin.cancel(scheduled) == "queued"
        assert admin.cancel(queued) is None  # already finished: nothing to do
        with pytest.raises(JobNotFoundError):
            admin.cancel("00000000-0000-0000-0000-000000000000")
    rt.start_worker()
    # The scheduled job's due time passes; a later job runs, the cancelled ones do not.
    wait_until(lambda: scalar(rt.settings.database_url, "SELECT now() > run_at FROM jobs WHERE id = %s",
                              (scheduled,)), bool, 5, "the scheduled time did not pass")
    sentinel = rt.wait(rt.enqueue("quick", {}))
    assert sentinel.status is JobStatus.COMPLETED
    assert plugin.ran == [str(sentinel.id)]
    assert [rt.job(i).status for i in (queued, scheduled)] == [JobStatus.CANCELLED] * 2


def test_running_async_job_is_cancelled_and_its_slot_freed(pmq_runtime):
    plugin = Cancellable()
    rt = pmq_runtime(plugin, concurrency=1)
    job_id = rt.enqueue("along", {})
    assert plugin.started_event(job_id).wait(10)
    with rt.admin() as admin:
        assert admin.cancel(job_id) == "running"
    assert plugin.async_cancelled.wait(10)
    after = rt.wait(rt.enqueue("quick", {}))  # the only slot is free again
    assert after.status is JobStatus.COMPLETED
    job = rt.job(job_id)
    assert job.status is JobStatus.CANCELLED and job.completed_at is None and job.worker_id is None


def test_running_sync_job_sees_cancelled_and_stays_cancelled(pmq_runtime):
    plugin = Cancellable()
    rt = pmq_runtime(plugin)
    job_id = rt.enqueue("slong", {})
    assert plugin.started_event(job_id).wait(10)
    with rt.admin() as admin:
        assert admin.cancel(job_id) == "running"
    assert plugin.sync_saw_cancel.wait(10)
    # Its return value arrives after the cancel and must not overwrite it.
    wait_until(lambda: rt.worker.slots.held, lambda held: not held, 10, "the sync job did not finish")
    sentinel = rt.wait(rt.enqueue("quick", {}))  # outcomes are written in order: the sync one is settled
    assert sentinel.status is JobStatus.COMPLETED
    job = rt.job(job_id)
    assert job.status is JobStatus.CANCELLED and job.completed_at is None


def test_a_cancelled_sync_handler_holds_its_slot_until_it_returns(pmq_runtime, tmp_path):
    spans = Spans(tmp_path / "spans")
    rt = pmq_runtime(make_plugin(Recorder()), concurrency=1, prefetch=1)
    job_id = rt.enqueue("stubborn", {"spans": str(spans.path), "seconds": 1.5})  # ignores job.cancelled
    wait_until(spans.runs, lambda runs: str(job_id) in runs, 10, "the job did not start")
    with rt.admin() as admin:
        assert admin.cancel(job_id) == "running"
        assert rt.job(job_id).status is JobStatus.CANCELLED  # at once: no attempt of it can start again
        with pytest.raises(JobNotFoundError):  # nor can it be replayed: only dead jobs can
            admin.replay([job_id])
    after = rt.enqueue("stubborn", {"spans": str(spans.path), "seconds": 0})
    assert rt.wait(after).status is JobStatus.COMPLETED
    [cancelled] = spans.runs()[str(job_id)]
    [later] = spans.runs()[str(after)]
    assert later["start"] >= cancelled.get("end", float("inf"))  # the only slot stayed taken while the thread ran
    assert rt.job(job_id).status is JobStatus.CANCELLED


# -- jobs claimed ahead (prefetch) --------------------------------------------------------


def test_a_job_claimed_ahead_waits_for_a_slot_and_can_be_cancelled(pmq_runtime):
    plugin = Cancellable()
    rt = pmq_runtime(plugin, concurrency=1, prefetch=1)
    busy = rt.enqueue("along", {})
    assert plugin.started_event(busy).wait(10)
    ahead = rt.enqueue("quick", {})
    rt.wait(ahead, statuses=[JobStatus.RUNNING])  # claimed by the worker, whose only slot is taken
    assert plugin.ran == [str(busy)]
    with rt.admin() as admin:
        assert admin.cancel(ahead) == "running"
        wait_until(lambda: rt.worker.slots.get(ahead), lambda held: held is None, 10, "the worker kept the job")
        assert admin.cancel(busy) == "running"
    sentinel = rt.wait(rt.enqueue("quick", {}))
    assert sentinel.status is JobStatus.COMPLETED
    assert plugin.ran == [str(busy), str(sentinel.id)]  # the cancelled job never started
    assert rt.job(ahead).status is JobStatus.CANCELLED


def test_jobs_claimed_ahead_are_given_back_when_the_worker_stops(pmq_runtime):
    plugin = Cancellable()
    rt = pmq_runtime(plugin, concurrency=1, prefetch=2, shutdown_grace=0.2)
    busy = rt.enqueue("along", {})
    assert plugin.started_event(busy).wait(10)
    ahead = [rt.enqueue("quick", {}) for _ in range(2)]
    for job_id in ahead:
        rt.wait(job_id, statuses=[JobStatus.RUNNING])
    rt.stop()
    assert plugin.ran == [str(busy)]
    for job in map(rt.job, [busy, *ahead]):  # waiting again, the attempt not counted
        assert job.status in (JobStatus.QUEUED, JobStatus.MIGRATED_TO_REDIS)
        assert (job.attempt_count, job.worker_id) == (0, None)
