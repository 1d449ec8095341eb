"""How far ahead a worker claims: what the operator set, else sized from
the job and round durations the worker measured."""

from __future__ import annotations

import asyncio
from typing import Any

from pmq_core import JobStatus, JobType, hookimpl
from pmq_core.prefetch import MOST_AHEAD_PER_SLOT, Prefetch


def test_a_set_prefetch_is_kept_whatever_the_durations():
    prefetch = Prefetch(concurrency=10, fixed=0)
    prefetch.round_took(0.01)
    prefetch.job_took(0.0001)
    assert prefetch.ahead() == 0


def test_until_both_durations_are_known_it_claims_as_many_as_it_runs():
    prefetch = Prefetch(concurrency=7)
    assert prefetch.ahead() == 7
    prefetch.round_took(0.003)
    assert prefetch.ahead() == 7


def test_quick_jobs_fill_four_rounds_up_to_the_bound():
    prefetch = Prefetch(concurrency=10)
    prefetch.round_took(0.002)
    prefetch.job_took(0.010)  # 1,000 jobs/s over four 2 ms rounds: 8
    assert prefetch.ahead() == 8
    prefetch = Prefetch(concurrency=10)
    prefetch.round_took(0.004)
    prefetch.job_took(0.0005)  # 20,000 jobs/s: 320, bounded
    assert prefetch.ahead() == MOST_AHEAD_PER_SLOT * 10


def test_long_jobs_claim_nothing_ahead():
    prefetch = Prefetch(concurrency=10)
    prefetch.round_took(0.005)
    prefetch.job_took(2.0)
    assert prefetch.ahead() == 0


def test_durations_are_running_averages_that_follow_a_change():
    prefetch = Prefetch(concurrency=10)
    prefetch.round_took(0.002)
    prefetch.job_took(2.0)
    assert prefetch.ahead() == 0
    for _ in range(40):  # the jobs became quick
        prefetch.job_took(0.010)
    assert prefetch.ahead() == 8


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
