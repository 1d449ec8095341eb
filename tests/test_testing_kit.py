"""The testing kit as plugin authors use it: retries made fast on purpose,
a job's log rows, and a runtime that stops without waiting out a pop."""

from __future__ import annotations

from typing import Any

import pytest

from pmq_core import JobStatus, JobType, Retry, RetryPolicy, Settings, hookimpl
from pmq_core.plugins import Plugins
from pmq_core.testing import TEST_POP_TIMEOUT
from pmq_core.worker import POP_TIMEOUT, Worker


class Flaky:
    """``flaky`` fails its first two attempts: by the policy's backoff (a
    minute at least) and by a ``Retry`` asking for an hour."""

    @staticmethod
    def handle(job: Any) -> str:
        if job.attempt == 1:
            raise ConnectionError("reset by peer")
        if job.attempt == 2:
            raise Retry("come back in an hour", delay=3600)
        return "third time lucky"

    @hookimpl
    def pmq_register_job_types(self) -> list[JobType]:
        return [JobType(name="flaky", handler=self.handle, retry=RetryPolicy(max_attempts=3, base_delay=60))]


def test_retry_delay_scale_zero_retries_at_once_and_the_logs_show_each_attempt(pmq_runtime):
    rt = pmq_runtime(Flaky(), retry_delay_scale=0)
    job = rt.wait(rt.enqueue("flaky", {}))
    assert (job.status, job.attempt_count) == (JobStatus.COMPLETED, 3)
    logs = rt.logs(job.id)
    assert [(row["attempt_number"], row["status"]) for row in logs] == [(1, "retry"), (2, "retry"), (3, "success")]
    assert logs[0]["log_message"] == "ConnectionError: reset by peer"
    assert logs[1]["log_message"] == "Retry: come back in an hour"
    assert all(row["duration"] >= 0 for row in logs)


def test_without_the_knob_a_retry_waits_its_backoff(pmq_runtime):
    rt = pmq_runtime(Flaky())
    job = rt.wait(rt.enqueue("flaky", {}), statuses=[JobStatus.RETRY_SCHEDULED])
    assert (job.run_at - job.updated_at).total_seconds() >= 60 * 2 * 0.75  # base_delay x 2^1, less the jitter


@pytest.mark.parametrize("scale", [-0.5, 1.5, float("nan")])
def test_a_retry_delay_scale_outside_0_to_1_is_refused(scale):
    with pytest.raises(ValueError, match="retry_delay_scale must be between 0 and 1"):
        Worker(Settings(), Plugins(None, [Flaky()], entry_points=False), retry_delay_scale=scale)


def test_a_test_worker_pops_briefly_so_that_stopping_it_is_quick(pmq_runtime):
    rt = pmq_runtime(Flaky(), migrator=False)
    assert rt.worker is not None and rt.worker.pop_timeout == TEST_POP_TIMEOUT < POP_TIMEOUT
    rt.stop()
    assert not any(thread.is_alive() for thread in rt._threads)
