"""``pmq demo``: watch pmq work on this machine in well under a minute.

The demo runs a migrator and a worker in this process, enqueues a realistic
mix of jobs, shows their progress, and sums up: most complete at once, some
fail transiently and succeed on a retry, and some fail for good and wait in
the dead-letter queue, where ``pmq dlq list`` finds them.

The mix is :data:`MIX`, one :class:`DemoJobs` entry per kind of job. An entry
either declares its job type (the demo's own, registered as a plugin object
so the demo works with nothing installed) or names the queue of a job type an
installed plugin declares; an entry whose job type is not loaded is skipped.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, TextIO

import attrs

from pmq_core.client import Client
from pmq_core.config import Settings
from pmq_core.hookspecs import hookimpl
from pmq_core.jobtypes import JobType, RetryPolicy
from pmq_core.migrator import Migrator
from pmq_core.models import JobContext
from pmq_core.plugins import Plugins
from pmq_core.worker import Worker

#: Seconds after which the demo stops waiting for its jobs.
DEADLINE = 60.0
#: Jobs the demo's worker runs at once.
CONCURRENCY = 20
#: Longest migrator poll during the demo, so retries are picked up promptly.
POLL_INTERVAL = 0.2
#: Retries for the demo's job types: transient errors only, a fraction of a second apart.
QUICK_RETRY = RetryPolicy(max_attempts=3, base_delay=0.05, max_delay=0.5,
                          retry_on=(ConnectionError, TimeoutError))


# -- the demo's own job types ------------------------------------------------------


def make_thumbnail(job: JobContext) -> str:
    """Sync and quick: hash some "pixels" and pretend to store a thumbnail."""
    pixels = f"image-{job.payload['image_id']}".encode() * 2000
    time.sleep(random.uniform(0.002, 0.01))
    return hashlib.sha256(pixels).hexdigest()[:16]


async def build_report(job: JobContext) -> dict[str, Any]:
    """Async: wait on "the database" like a report would."""
    await asyncio.sleep(random.uniform(0.005, 0.03))
    return {"account": job.payload["account_id"], "rows": random.randint(10, 500)}


def sync_contact(job: JobContext) -> None:
    """Flaky: the CRM resets the connection for the first attempt(s), then
    accepts the contact, which shows a transient failure being retried."""
    if job.attempt <= job.payload["fails"]:
        raise ConnectionResetError("connection reset by peer (the CRM is having a bad day)")


def charge_invoice(job: JobContext) -> None:
    """Doomed: a bad invoice fails at once, without a retry (a ValueError is
    not transient), and lands in the dead-letter queue."""
    raise ValueError(f"invoice {job.payload['invoice_id']} has no customer; nothing to charge")


# -- the mix -----------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class DemoJobs:
    """One kind of job in the demo: ``count`` jobs on ``queue``, the ``i``-th
    with ``payload(i)``. ``declares`` is the job type when the demo provides
    it itself; None when an installed plugin does."""

    queue: str
    count: int
    payload: Callable[[int], dict[str, Any]]
    declares: JobType | None = attrs.field(default=None)

    @declares.validator
    def _same_queue(self, attribute: attrs.Attribute[Any], value: JobType | None) -> None:
        if value is not None and value.name != self.queue:
            raise ValueError(f"demo entry for {self.queue!r} declares job type {value.name!r}")


MIX: list[DemoJobs] = [
    DemoJobs(queue="demo:thumbnail", count=150, payload=lambda i: {"image_id": i, "width": 320},
             declares=JobType(name="demo:thumbnail", handler=make_thumbnail, priority=40, retry=QUICK_RETRY,
                              timeout=10, description="resize an uploaded image (a user waits for it)")),
    DemoJobs(queue="demo:report", count=90, payload=lambda i: {"account_id": i % 17, "period": "last-month"},
             declares=JobType(name="demo:report", handler=build_report, priority=120, retry=QUICK_RETRY,
                              timeout=10, description="build a monthly report")),
    DemoJobs(queue="demo:flaky", count=40, payload=lambda i: {"contact_id": i, "fails": 1 + i % 2},
             declares=JobType(name="demo:flaky", handler=sync_contact, retry=QUICK_RETRY, timeout=10,
                              description="push a contact to a CRM that drops connections")),
    DemoJobs(queue="demo:doomed", count=20, payload=lambda i: {"invoice_id": 9000 + i},
             declares=JobType(name="demo:doomed", handler=charge_invoice, retry=QUICK_RETRY, timeout=10,
                              description="charge an invoice that has no customer")),
    # Job types of the first-party plugins (pmq-email, pmq-analytics), run when installed; both need only
    # the database. Each warm-up step schedules the next day's step, which the demo does not wait for.
    DemoJobs(queue="warmup:process", count=5, payload=lambda i: {
        "account": f"sender-{i}@demo.example", "start": 20, "target": 500, "growth": 1.5}),
    DemoJobs(queue="analytics:daily-aggregate", count=1, payload=lambda i: {}),
]


class DemoPlugin:
    """The demo's own job types, as a plugin registered in code."""

    __name__ = "pmq-demo"

    @hookimpl
    def pmq_register_job_types(self) -> list[JobType]:
        return [entry.declares for entry in MIX if entry.declares is not None]


demo_plugin = DemoPlugin()


# -- following the outcomes --------------------------------------------------------


class Tally:
    """Outcomes of the demo's jobs, counted from the worker's lifecycle hooks
    (jobs not enqueued by the demo are ignored)."""

    __name__ = "pmq-demo-tally"

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.expected: set[uuid.UUID] = set()
        self.completed = 0
        self.dead = 0
        self.retried = 0
        self.retrying: set[uuid.UUID] = set()

    def expect(self, job_ids: list[uuid.UUID]) -> None:
        with self.changed:
            self.expected.update(job_ids)

    @property
    def finished(self) -> bool:
        return self.completed + self.dead >= len(self.expected)

    def _record(self, job_id: uuid.UUID, update: Callable[[], None]) -> None:
        with self.changed:
            if job_id in self.expected:
                update()
                self.changed.notify_all()

    @hookimpl
    def pmq_job_succeeded(self, job: JobContext) -> None:
        def update() -> None:
            self.completed += 1
            self.retrying.discard(job.id)
        self._record(job.id, update)

    @hookimpl
    def pmq_job_failed(self, job: JobContext, will_retry: bool) -> None:
        def update() -> None:
            if will_retry:
                self.retried += 1
                self.retrying.add(job.id)
        self._record(job.id, update)

    @hookimpl
    def pmq_job_dead(self, job: JobContext) -> None:
        def update() -> None:
            self.dead += 1
            self.retrying.discard(job.id)
        self._record(job.id, update)

    def line(self) -> str:
        return (f"completed {self.completed:>4}/{len(self.expected)}   retrying {len(self.retrying):>3}   "
                f"dead {self.dead:>3}")


# -- the summary -------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Summary:
    """What the demo did."""

    enqueued: int
    completed: int
    retried: int
    dead: int
    seconds: float
    queues: tuple[str, ...]

    @property
    def finished(self) -> bool:
        return self.completed + self.dead == self.enqueued

    @property
    def throughput(self) -> float:
        return (self.completed + self.dead) / self.seconds if self.seconds > 0 else 0.0

    def render(self) -> str:
        lines = [
            "",
            f"{self.enqueued} jobs on {', '.join(self.queues)}",
            f"  completed   {self.completed}",
            f"  retried     {self.retried} (attempts that failed transiently and were tried again)",
            f"  dead        {self.dead} (failed for good, waiting in the dead-letter queue)",
            f"  throughput  {self.throughput:.1f} jobs/s ({self.seconds:.1f}s)",
        ]
        unfinished = self.enqueued - self.completed - self.dead
        if unfinished:
            lines.append(f"  unfinished  {unfinished} after the {DEADLINE:.0f}s deadline")
        lines += [
            "",
            "Next, try:",
            "  pmq dlq list     the dead jobs and why they failed (then: pmq dlq replay --all)",
            "  pmq stats        throughput, failures and processing times",
            "  pmq health       servers, queues and workers at a glance",
        ]
        return "\n".join(lines)


# -- running it ----------------------------------------------------------------------


class _BackgroundWorker:
    """A worker on an event loop of its own thread, stopped gracefully."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._serve, name="pmq-demo-worker", daemon=True)

    def _serve(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            task = asyncio.create_task(self.worker.run(self._stop))
            started = asyncio.create_task(self.worker.started.wait())
            await asyncio.wait([task, started], return_when=asyncio.FIRST_COMPLETED)
            self.ready.set()
            await task

        try:
            asyncio.run(main())
        except BaseException as exc:  # handed to the main thread, which reports it
            self.error = exc
        finally:
            self.ready.set()

    def start(self) -> None:
        """Start serving; raise what stopped the worker if it could not start."""
        self._thread.start()
        self.ready.wait()
        self.check()

    def check(self) -> None:
        """Raise what ended the worker early, if anything did."""
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:
                pass  # the loop has just ended on its own
        if self._thread.is_alive():
            self._thread.join()


def run(settings: Settings, *, out: TextIO | None = None, deadline: float = DEADLINE,
        linger: threading.Event | None = None) -> Summary:
    """Run the demo against ``settings``' servers (embedded ones when none
    are configured) and return its summary; progress goes to ``out``. With
    ``linger``, the demo's migrator and worker go on serving once its jobs
    are done, until ``linger`` is set (a dashboard beside it then shows a
    live deployment, and jobs replayed from it run)."""
    from pmq_core import runner

    out = out or sys.stdout
    tally = Tally()
    plugins = Plugins(settings.plugins, extra=[demo_plugin, tally])
    settings = runner.prepare(settings, plugins)
    settings = attrs.evolve(settings, poll_interval=min(settings.poll_interval, POLL_INTERVAL))
    mix = [entry for entry in MIX if entry.queue in plugins.job_types]
    queues = tuple(entry.queue for entry in mix)

    migrator_stop = threading.Event()
    migrator = threading.Thread(target=Migrator(settings, plugins).run, args=(migrator_stop,),
                                name="pmq-demo-migrator", daemon=True)
    migrator.start()
    worker = _BackgroundWorker(Worker(settings, plugins, queues=list(queues), concurrency=CONCURRENCY))
    try:
        with Client(settings, plugins=plugins) as client:
            for entry in mix:
                tally.expect(client.enqueue_many(entry.queue, [entry.payload(i) for i in range(entry.count)]))
        out.write(f"enqueued {len(tally.expected)} jobs; running them\n")
        out.flush()
        started = time.monotonic()
        worker.start()
        _follow(tally, out, started + deadline, worker_died=lambda: worker.error is not None)
        seconds = time.monotonic() - started
        if linger is not None:
            out.write("the demo's worker and migrator go on serving\n")
            out.flush()
            while not linger.wait(0.5) and worker.error is None:
                pass
    finally:
        worker.stop()
        migrator_stop.set()
        migrator.join()
    worker.check()
    return Summary(enqueued=len(tally.expected), completed=tally.completed, retried=tally.retried,
                   dead=tally.dead, seconds=seconds, queues=queues)


def _follow(tally: Tally, out: TextIO, deadline: float, worker_died: Callable[[], bool]) -> None:
    """Show progress until every job has finished, the deadline passes or
    the worker dies: one line redrawn in place on a terminal, a line a
    second otherwise."""
    live = out.isatty()
    last_line, last_print = "", 0.0
    with tally.changed:
        while not tally.finished and time.monotonic() < deadline and not worker_died():
            tally.changed.wait(timeout=0.1)
            line = tally.line()
            now = time.monotonic()
            if live:
                out.write(f"\r{line}")
                out.flush()
            elif line != last_line and now - last_print >= 1.0:
                out.write(f"{line}\n")
                out.flush()
                last_line, last_print = line, now
        line = tally.line()
    out.write(f"\r{line}\n" if live else f"{line}\n")
    out.flush()
