"""How far ahead a worker claims, on real servers: the size it measures, and
what it claims ahead waits for a slot. The sizing maths are unit tests
(tests/unit/test_prefetch_sizing.py)."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import timedelta
from typing import Any

from pmq_core import JobStatus, JobType, hookimpl
from pmq_core.testing import wait_until
from tests.reliability_support import sql


class Nap:
    """Jobs that sleep as long as their payload says."""

    @hookimpl
    def pmq_register_job_types(self) -> list[JobType]:
        async def nap(job: Any) -> None:
            await asyncio.sleep(job.payload["seconds"])

        return [JobType(name="nap", handler=nap)]


def test_a_worker_sizes_its_prefetch_from_the_jobs_it_runs(pmq_runtime):
    rt = pmq_runtime(Nap(), concurrency=1)
    quick = rt.client.enqueue_many("nap", [{"seconds": 0}] * 30)
    for job_id in quick:
        assert rt.wait(job_id).status is JobStatus.COMPLETED
    assert rt.worker.prefetch.ahead() >= 2  # no-op jobs: claimed well ahead of the one slot
    assert rt.wait(rt.enqueue("nap", {"seconds": 0.5})).status is JobStatus.COMPLETED
    assert rt.worker.prefetch.ahead() == 0  # a long job: none


class Gate:
    """``hold`` jobs run until the gate opens; ``pass`` jobs return at once."""

    def __init__(self) -> None:
        self.open = threading.Event()

    @hookimpl
    def pmq_register_job_types(self) -> list[JobType]:
        async def hold(job: Any) -> None:
            while not self.open.is_set():
                await asyncio.sleep(0.01)

        async def go(job: Any) -> None:
            pass

        return [JobType(name="hold", handler=hold), JobType(name="pass", handler=go)]


def test_jobs_claimed_ahead_count_neither_as_running_nor_in_their_processing_time(pmq_runtime):
    gate = Gate()
    rt = pmq_runtime(gate, concurrency=1, prefetch=3)
    try:
        held = rt.enqueue("hold", {})
        rt.wait(held, statuses=[JobStatus.RUNNING])
        ahead = rt.client.enqueue_many("pass", [{}] * 3)
        for job_id in ahead:
            rt.wait(job_id, statuses=[JobStatus.RUNNING])  # claimed, waiting for the one slot
        with rt.admin() as admin:
            # As the heartbeat reports them: one handler runs, three jobs wait.
            stats = wait_until(lambda: admin.stats(), lambda s: s["claimed_ahead"] == 3, 10, "no heartbeat")
            assert stats["utilisation"] == 1.0
            [worker] = admin.health()["workers"]
            assert (worker["running"], worker["claimed_ahead"], worker["utilisation"]) == (1, 3, 1.0)
        time.sleep(0.5)  # what the jobs claimed ahead wait for must not count as their processing time
        gate.open.set()
        done = rt.wait_all([held, *ahead])
    finally:
        gate.open.set()
    rows = sql(rt.settings.database_url, "SELECT j.started_at, l.started_at, extract(epoch FROM l.duration) "
               "FROM jobs j JOIN job_logs l ON l.job_id = j.id WHERE j.id = ANY(%s)", (ahead,))
    assert [(job_start == log_start, float(duration) < 0.25) for job_start, log_start, duration in rows] == [
        (True, True)] * 3
    # Each started once the held job had been running a while (dated from its claim it would not).
    assert all(job.started_at - done[0].started_at > timedelta(seconds=0.5) for job in done[1:])


def test_pausing_a_queue_gives_back_its_jobs_claimed_ahead(pmq_runtime):
    gate = Gate()
    rt = pmq_runtime(gate, concurrency=1, prefetch=2)
    try:
        held = rt.enqueue("hold", {})
        rt.wait(held, statuses=[JobStatus.RUNNING])
        ahead = rt.client.enqueue_many("pass", [{}] * 2)
        for job_id in ahead:
            rt.wait(job_id, statuses=[JobStatus.RUNNING])  # claimed, waiting for the one slot
        with rt.admin() as admin:
            admin.set_active("pass", False)
            for job_id in ahead:  # given back, the attempt not counted; paused, they wait
                given_back = rt.wait(job_id, statuses=[JobStatus.QUEUED])
                assert (given_back.attempt_count, given_back.worker_id) == (0, None)
            gate.open.set()
            assert rt.wait(held).status is JobStatus.COMPLETED
            sentinel = rt.wait(rt.enqueue("hold", {}))  # the slot is free, yet nothing paused started
            assert sentinel.status is JobStatus.COMPLETED
            assert [rt.job(job_id).status for job_id in ahead] == [JobStatus.QUEUED] * 2
            admin.set_active("pass", True)
        assert [(job.status, job.attempt_count) for job in rt.wait_all(ahead)] == [(JobStatus.COMPLETED, 1)] * 2
    finally:
        gate.open.set()
