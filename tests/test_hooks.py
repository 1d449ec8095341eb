"""Lifecycle hooks on real servers: which fire, in which order, with what,
for a job that succeeds, one that is retried and one that dies; wrappers
around sync and async handlers; and a crashing hook never hurting a job."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import psycopg
import pytest

from pmq_core import Fail, JobStatus, JobType, Migration, RetryPolicy, UnreadablePayload, hookimpl
from pmq_core.testing import wait_until
from pmq_core.worker import Worker
from tests.crash_plugin import Probe
from tests.plugin_samples import Recorder, make_plugin
from tests.reliability_support import scalar, sql
from tests.test_poison import FAULT, insert

QUICK = RetryPolicy(max_attempts=2, base_delay=0.05, max_delay=0.2)


def ok(job: Any) -> int:
    return job.payload["n"] * 2


async def aok(job: Any) -> str:
    await asyncio.sleep(0)
    return "async-ok"


def flaky(job: Any) -> str:
    if job.attempt == 1:
        raise ConnectionResetError("connection reset by peer")
    return "second time lucky"


def doomed(job: Any) -> None:
    raise ValueError(f"attempt {job.attempt} went wrong")


def refused(job: Any) -> None:
    raise Fail("never")


async def afailing(job: Any) -> None:
    raise KeyError("missing")


class Jobs:
    """The job types of these tests."""

    @hookimpl
    def pmq_register_job_types(self) -> list[JobType]:
        return [
            JobType(name="hooks:ok", handler=ok),
            JobType(name="hooks:async", handler=aok),
            JobType(name="hooks:flaky", handler=flaky, retry=QUICK),
            JobType(name="hooks:doomed", handler=doomed, retry=QUICK),
            JobType(name="hooks:refused", handler=refused, retry=QUICK),
            JobType(name="hooks:afailing", handler=afailing, retry=QUICK),
        ]


class Lifecycle:
    """Records every lifecycle hook, in the order they fire."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.lock = threading.Lock()

    def note(self, *event: Any) -> None:
        with self.lock:
            self.events.append(event)

    def of(self, job_id: Any) -> list[tuple[Any, ...]]:
        with self.lock:
            return [e[:1] + e[2:] for e in self.events if len(e) > 1 and e[1] == job_id]

    @hookimpl
    def pmq_jobs_enqueued(self, queue: str, job_ids: list[Any]) -> None:
        self.note("enqueued", queue, tuple(job_ids))

    @hookimpl
    def pmq_worker_started(self, worker_id: Any, queues: list[str], settings: Any) -> None:
        self.note("worker_started", worker_id, tuple(queues), settings.key_prefix)

    @hookimpl
    def pmq_worker_stopping(self, worker_id: Any) -> None:
        self.note("worker_stopping", worker_id)

    @hookimpl
    def pmq_worker_stopped(self, worker_id: Any) -> None:
        self.note("worker_stopped", worker_id)

    @hookimpl
    def pmq_job_started(self, job: Any) -> None:
        self.note("started", job.id, job.attempt)

    @hookimpl
    def pmq_wrap_job(self, job: Any) -> Any:
        self.note("before", job.id, job.attempt)
        try:
            result = yield
        except BaseException as exc:
            self.note("raised", job.id, job.attempt, type(exc).__name__)
            raise
        self.note("returned", job.id, job.attempt, result)
        return result

    @hookimpl
    def pmq_job_succeeded(self, job: Any, result: Any, duration: float) -> None:
        assert duration >= 0
        self.note("succeeded", job.id, job.attempt, result)

    @hookimpl
    def pmq_job_failed(self, job: Any, error: BaseException, will_retry: bool, retry_in: float | None) -> None:
        self.note("failed", job.id, job.attempt, type(error).__name__, will_retry, retry_in is not None)

    @hookimpl
    def pmq_job_dead(self, job: Any, error: BaseException) -> None:
        self.note("dead", job.id, job.attempt, type(error).__name__)


def test_pmq_job_started_then_pmq_job_succeeded_for_a_job_that_succeeds(pmq_runtime):
    hooks = Lifecycle()
    rt = pmq_runtime(Jobs(), hooks)
    job_id = rt.enqueue("hooks:ok", {"n": 21})
    assert rt.wait(job_id).status is JobStatus.COMPLETED
    assert ("enqueued", "hooks:ok", (job_id,)) in hooks.events
    assert hooks.of(job_id) == [
        ("started", 1), ("before", 1), ("returned", 1, 42), ("succeeded", 1, 42),
    ]
    kinds = [e[0] for e in hooks.events]
    assert kinds.index("worker_started") < kinds.index("started")


def test_pmq_job_failed_will_retry_for_a_job_that_is_retried(pmq_runtime):
    hooks = Lifecycle()
    rt = pmq_runtime(Jobs(), hooks)
    job_id = rt.enqueue("hooks:flaky")
    job = rt.wait(job_id)
    assert job.status is JobStatus.COMPLETED and job.attempt_count == 2
    assert hooks.of(job_id) == [
        ("started", 1), ("before", 1), ("raised", 1, "ConnectionResetError"),
        ("failed", 1, "ConnectionResetError", True, True),
        ("started", 2), ("before", 2), ("returned", 2, "second time lucky"), ("succeeded", 2, "second time lucky"),
    ]


def test_pmq_job_dead_follows_the_last_pmq_job_failed(pmq_runtime):
    hooks = Lifecycle()
    rt = pmq_runtime(Jobs(), hooks)
    job_id = rt.enqueue("hooks:doomed")
    assert rt.wait(job_id).status is JobStatus.FAILED
    events = wait_until(lambda: hooks.of(job_id), lambda ev: bool(ev) and ev[-1][0] == "dead", 10,
                        "pmq_job_dead did not fire")
    assert events == [
        ("started", 1), ("before", 1), ("raised", 1, "ValueError"), ("failed", 1, "ValueError", True, True),
        ("started", 2), ("before", 2), ("raised", 2, "ValueError"), ("failed", 2, "ValueError", False, False),
        ("dead", 2, "ValueError"),
    ]


# -- pmq_job_dead on every path that ends a job dead ------------------------------------
# (The rescue's: tests/test_crashes.py, test_a_rescue_gives_the_attempt_back_...)


class Deaths:
    """Records pmq_job_dead only; picklable, so that a worker's isolation
    child can load it too."""

    def __init__(self) -> None:
        self.dead: list[tuple[Any, ...]] = []

    @hookimpl
    def pmq_job_dead(self, job: Any, error: BaseException) -> None:
        self.dead.append((job.id, job.queue, type(error).__name__, str(error), job.raw_payload))

    def wait(self, count: int) -> list[tuple[Any, ...]]:
        return wait_until(lambda: list(self.dead), lambda dead: len(dead) >= count, 10, "pmq_job_dead did not fire")


@pytest.mark.parametrize(("state", "who"), [("migrated_to_redis", "hand this job to Redis"),
                                             ("running", "claim or record this job")])
def test_pmq_job_dead_for_a_job_the_migrator_cannot_move_or_the_worker_cannot_claim(pmq_runtime, state, who):
    deaths = Deaths()
    rt = pmq_runtime(make_plugin(Recorder()), deaths, worker=False)
    url = rt.settings.database_url
    sql(url, FAULT.replace("%s", f"'{state}'").replace("%%", "%"))
    poison, fine = insert(url, "aecho", '{"poison": true}'), insert(url, "aecho", "{}")
    rt.start_worker()
    assert [job.status for job in rt.wait_all([poison, fine])] == [JobStatus.FAILED, JobStatus.COMPLETED]
    [(job_id, queue, error, message, payload)] = deaths.wait(1)
    assert (job_id, queue, error, payload) == (poison, "aecho", "Fail", {"poison": True})
    assert message.startswith(f"pmq could not {who}")
    assert message in (rt.job(poison).last_error_message or "")


def test_pmq_job_dead_for_a_payload_that_cannot_be_read(pmq_runtime):
    deaths = Deaths()
    rt = pmq_runtime(make_plugin(Recorder()), deaths)
    poison = insert(rt.settings.database_url, "aecho", '{"n": ' + "1" * 5000 + "}")
    assert rt.wait(poison).status is JobStatus.FAILED
    [(job_id, _queue, error, message, payload)] = deaths.wait(1)
    assert (job_id, error) == (poison, "Fail") and "cannot be read" in message
    assert isinstance(payload, UnreadablePayload)


def test_pmq_job_dead_for_a_suspect_that_fails_in_the_isolation_child(pmq_runtime):
    deaths = Deaths()
    rt = pmq_runtime(Probe(), deaths)
    url = rt.settings.database_url
    suspect = scalar(url, "INSERT INTO jobs (queue_name, payload, rescue_count) "
                          "VALUES ('probe', '{\"raise\": \"Fail\"}', 1) RETURNING id")
    assert rt.wait(suspect, timeout=30).status is JobStatus.FAILED
    assert scalar(url, "SELECT suspect_started_at IS NOT NULL FROM jobs WHERE id = %s", (suspect,))
    assert deaths.wait(1) == [(suspect, "probe", "Fail", "raised on purpose", {"raise": "Fail"})]


def test_a_job_refused_by_its_handler_dies_after_one_attempt(pmq_runtime):
    hooks = Lifecycle()
    rt = pmq_runtime(Jobs(), hooks)
    job_id = rt.enqueue("hooks:refused")
    assert rt.wait(job_id).status is JobStatus.FAILED
    events = wait_until(lambda: hooks.of(job_id), lambda ev: bool(ev) and ev[-1][0] == "dead", 10,
                        "pmq_job_dead did not fire")
    assert [e[0] for e in events] == ["started", "before", "raised", "failed", "dead"]
    assert events[3] == ("failed", 1, "Fail", False, False)


def test_pmq_jobs_enqueued_once_per_bulk_enqueue(pmq_runtime):
    hooks = Lifecycle()
    rt = pmq_runtime(Jobs(), hooks, worker=False, migrator=False)
    ids = rt.client.enqueue_many("hooks:ok", [{"n": 1}, {"n": 2}, {"n": 3}])
    assert [e for e in hooks.events if e[0] == "enqueued"] == [("enqueued", "hooks:ok", tuple(ids))]


def test_pmq_worker_started_pmq_worker_stopping_and_pmq_worker_stopped_in_order(pmq_runtime):
    hooks = Lifecycle()
    rt = pmq_runtime(Jobs(), hooks, worker=False, migrator=False)
    worker = Worker(rt.settings, rt.plugins, queues=["hooks:ok"])

    async def start_then_stop() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        await worker.started.wait()
        stop.set()
        await task

    asyncio.run(start_then_stop())
    assert hooks.events == [
        ("worker_started", worker.id, ("hooks:ok",), rt.settings.key_prefix),
        ("worker_stopping", worker.id),
        ("worker_stopped", worker.id),
    ]


class Labelled:
    """A wrapper that notes its label on the way in and out, and wraps the
    result (or turns an exception into one) so that nesting shows."""

    def __init__(self, label: str, trail: list[str], recover: bool = False) -> None:
        self.label = label
        self.trail = trail
        self.recover = recover
        self.__name__ = f"wrapper-{label}"

    @hookimpl
    def pmq_wrap_job(self, job: Any) -> Any:
        self.trail.append(f"{self.label}:in")
        try:
            result = yield
        except Exception as exc:
            self.trail.append(f"{self.label}:saw {type(exc).__name__}")
            if not self.recover:
                raise
            return f"{self.label} recovered from {type(exc).__name__}"
        self.trail.append(f"{self.label}:out {result!r}")
        return {self.label: result}


@pytest.mark.parametrize("queue", ["hooks:ok", "hooks:async"])
def test_pmq_wrap_job_wrappers_nest_and_can_replace_the_result(pmq_runtime, queue):
    trail: list[str] = []
    hooks = Lifecycle()
    # The most recently registered wrapper is called first: it is the outermost.
    rt = pmq_runtime(Jobs(), Labelled("inner", trail), Labelled("outer", trail), hooks)
    job_id = rt.enqueue(queue, {"n": 5})
    assert rt.wait(job_id).status is JobStatus.COMPLETED
    raw = 10 if queue == "hooks:ok" else "async-ok"
    assert trail == ["outer:in", "inner:in", f"inner:out {raw!r}", f"outer:out {({'inner': raw})!r}"]
    assert hooks.of(job_id)[-1] == ("succeeded", 1, {"outer": {"inner": raw}})


@pytest.mark.parametrize(("queue", "error"), [("hooks:doomed", "ValueError"), ("hooks:afailing", "KeyError")])
def test_wrappers_see_the_handlers_exception_and_may_turn_it_into_a_result(pmq_runtime, queue, error):
    trail: list[str] = []
    hooks = Lifecycle()
    rt = pmq_runtime(Jobs(), Labelled("inner", trail), Labelled("outer", trail, recover=True), hooks)
    job_id = rt.enqueue(queue)
    job = rt.wait(job_id)
    assert job.status is JobStatus.COMPLETED and job.attempt_count == 1
    assert trail == ["outer:in", "inner:in", f"inner:saw {error}", f"outer:saw {error}"]
    assert hooks.of(job_id)[-1] == ("succeeded", 1, f"outer recovered from {error}")


class Exploding:
    """Every observing hook raises."""

    @hookimpl
    def pmq_jobs_enqueued(self, queue: str, job_ids: list[Any]) -> None:
        raise RuntimeError("enqueued hook exploded")

    @hookimpl
    def pmq_worker_started(self, worker_id: Any) -> None:
        raise RuntimeError("worker_started hook exploded")

    @hookimpl
    def pmq_job_started(self, job: Any) -> None:
        raise RuntimeError("job_started hook exploded")

    @hookimpl
    def pmq_job_succeeded(self, job: Any) -> None:
        raise RuntimeError("job_succeeded hook exploded")

    @hookimpl
    def pmq_job_failed(self, job: Any) -> None:
        raise RuntimeError("job_failed hook exploded")

    @hookimpl
    def pmq_job_dead(self, job: Any) -> None:
        raise RuntimeError("job_dead hook exploded")


def test_a_failing_lifecycle_hook_is_logged_and_does_not_affect_the_job(pmq_runtime, caplog):
    caplog.set_level(logging.ERROR, logger="pmq_core.plugins")
    rt = pmq_runtime(Jobs(), Exploding())
    good = rt.enqueue("hooks:ok", {"n": 1})
    flaky_id = rt.enqueue("hooks:flaky")
    bad = rt.enqueue("hooks:refused")
    assert [j.status for j in rt.wait_all([good, flaky_id, bad])] == [
        JobStatus.COMPLETED, JobStatus.COMPLETED, JobStatus.FAILED]
    assert rt.job(flaky_id).attempt_count == 2

    def failed_hooks() -> set[str]:
        return {r.getMessage() for r in caplog.records if "hook failed; the job is not affected" in r.getMessage()}

    logged = wait_until(failed_hooks, lambda found: len(found) == 6, 10, "not every failing hook was logged")
    assert logged == {f"a plugin's {name} hook failed; the job is not affected" for name in (
        "pmq_jobs_enqueued", "pmq_worker_started", "pmq_job_started", "pmq_job_succeeded", "pmq_job_failed",
        "pmq_job_dead")}


class Audit:
    """A plugin owning a table, created by its two migrations."""

    @hookimpl
    def pmq_register_migrations(self) -> list[Migration]:
        return [
            Migration(component="hooks-audit", version=2, name="add_note",
                      sql="ALTER TABLE hooks_audit ADD COLUMN note text"),
            Migration(component="hooks-audit", version=1, name="create",
                      sql="CREATE TABLE hooks_audit (job_id uuid PRIMARY KEY)"),
        ]


def test_pmq_register_migrations_are_applied_in_order_and_once(pmq_runtime):
    rt = pmq_runtime(Jobs(), Audit(), worker=False, migrator=False)
    with psycopg.connect(rt.settings.database_url, autocommit=True) as conn:
        columns = conn.execute("SELECT column_name FROM information_schema.columns "
                               "WHERE table_name = 'hooks_audit' ORDER BY ordinal_position").fetchall()
        applied = conn.execute("SELECT version, name FROM pmq_schema_migrations WHERE component = 'hooks-audit' "
                               "ORDER BY version").fetchall()
    assert columns == [("job_id",), ("note",)]
    assert applied == [(1, "create"), (2, "add_note")]
    with rt.admin() as admin:
        assert admin.upgrade(rt.plugins) == []
