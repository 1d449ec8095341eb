"""Small plugins used by the core tests, registered directly (not installed)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from pathlib import Path
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


class Spans:
    """Each run's start and end, appended to a file (so that a worker in
    another process can record them), to check that no two runs of a job
    ever overlapped."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def record(self, job: Any, run: str, phase: str) -> None:
        with self.path.open("a") as out:  # one short append: whole lines, even across processes
            out.write(f"{job.id} {job.attempt} {run} {phase} {time.time()!r}\n")

    def runs(self) -> dict[str, list[dict[str, Any]]]:
        """Job id -> its runs in start order: {"attempt", "start", "end"}
        ("end" missing: the run never ended, its process was killed)."""
        found: dict[str, dict[str, dict[str, Any]]] = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                job_id, attempt, run, phase, at = line.split()
                found.setdefault(job_id, {}).setdefault(run, {"attempt": int(attempt)})[phase] = float(at)
        return {job_id: sorted(runs.values(), key=lambda r: r["start"]) for job_id, runs in found.items()}

    def overlaps(self, killed_by: float = float("inf")) -> list[str]:
        """Runs that started while an earlier run of the job could still be
        running; a run that never recorded its end ran until ``killed_by``
        (when its process was known to be gone)."""
        found = []
        for job_id, runs in self.runs().items():
            for first, second in zip(runs, runs[1:], strict=False):
                if first.get("end", killed_by) > second["start"]:
                    found.append(f"{job_id}: a run of attempt {second['attempt']} started while one of "
                                 f"attempt {first['attempt']} still ran")
        return found


def stubborn(job: Any) -> None:
    """Ignores ``job.cancelled``: its job's first run sleeps ``seconds``
    whatever it is told, and runs from attempt ``fast_from`` on, or after a
    first run, return at once. Records each run's span in ``spans``."""
    spans = Spans(job.payload["spans"])
    first = str(job.id) not in spans.runs()
    run = uuid.uuid4().hex
    spans.record(job, run, "start")
    if first or job.attempt < job.payload.get("fast_from", 1):
        time.sleep(job.payload["seconds"])
    spans.record(job, run, "end")


async def stubborn_async(job: Any) -> None:
    """The async twin of :func:`stubborn`: it swallows its cancellation."""
    spans = Spans(job.payload["spans"])
    first = str(job.id) not in spans.runs()
    run = uuid.uuid4().hex
    spans.record(job, run, "start")
    deadline = time.monotonic() + (job.payload["seconds"] if first else 0)
    while time.monotonic() < deadline:
        try:
            await asyncio.sleep(deadline - time.monotonic())
        except asyncio.CancelledError:
            pass
    spans.record(job, run, "end")


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
                JobType(name="stubborn", handler=stubborn, timeout=30),
                JobType(name="stubborn-async", handler=stubborn_async, timeout=30),
            ]

    return Plugin()
