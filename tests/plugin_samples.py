"""Small plugins used by the core tests, registered directly (not installed)."""

from __future__ import annotations

import threading
import time
from typing import Any

import attrs

from pmq_core import Fail, JobType, Retry, RetryPolicy, hookimpl


class Recorder:
    """Collects what handlers saw, in order, across threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[tuple[str, Any, int]] = []
        self.event = threading.Event()

    def add(self, queue: str, payload: Any, attempt: int) -> None:
        with self.lock:
            self.calls.append((queue, payload, attempt))
        self.event.set()


@attrs.frozen
class Echo:
    n: int
    text: str = ""


def make_plugin(recorder: Recorder, **job_type_options: Any) -> Any:
    """A plugin object declaring job types that record into ``recorder``."""

    def echo(job: Any) -> int:
        recorder.add(job.queue, job.payload, job.attempt)
        return job.payload.n

    async def aecho(job: Any) -> str:
        recorder.add(job.queue, job.payload, job.attempt)
        return "ok"

    def flaky(job: Any) -> None:
        recorder.add(job.queue, job.payload, job.attempt)
        if job.attempt < job.payload.get("succeed_on", 99):
            raise ConnectionResetError("connection reset by peer")

    def doomed(job: Any) -> None:
        recorder.add(job.queue, job.payload, job.attempt)
        raise Fail("this job can never succeed")

    def later(job: Any) -> None:
        recorder.add(job.queue, job.payload, job.attempt)
        if job.attempt == 1:
            raise Retry("not yet", delay=0.2)

    def slow(job: Any) -> None:
        recorder.add(job.queue, job.payload, job.attempt)
        deadline = time.monotonic() + job.payload.get("seconds", 1.0)
        while time.monotonic() < deadline and not job.cancelled:
            time.sleep(0.01)

    fast_retry = RetryPolicy(max_attempts=3, base_delay=0.05, max_delay=0.2)

    class Plugin:
        @hookimpl
        def pmq_register_job_types(self) -> list[JobType]:
            return [
                JobType(name="echo", handler=echo, payload=Echo, **job_type_options),
                JobType(name="aecho", handler=aecho),
                JobType(name="flaky", handler=flaky, retry=fast_retry),
                JobType(name="doomed", handler=doomed, retry=fast_retry),
                JobType(name="later", handler=later, retry=fast_retry),
                JobType(name="slow", handler=slow, timeout=30),
            ]

    return Plugin()
