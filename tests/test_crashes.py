"""A worker crash costs only its culprit: rescues never blame, suspects run
alone in an isolation child where a crash names the culprit, and a job that
kills even its worker again and again ends dead after ``max_rescues``."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from pmq_core import Client, Fail, HandlerCrashed, JobCancelled, JobStatus, RetryPolicy, WorkerLost, hookimpl
from pmq_core.db import pg_connect
from pmq_core.isolation import Isolation
from pmq_core.keys import Keys
from pmq_core.migrator import Migrator
from pmq_core.models import JobContext
from pmq_core.plugins import Plugins
from pmq_core.testing import wait_until
from tests.crash_plugin import QUEUE, RUNS_TABLE, CrashPlugin, Probe, start_worker_process
from tests.plugin_samples import Recorder, make_plugin
from tests.reliability_support import redis_of, scalar, sql

pytestmark = pytest.mark.timeout(180)


# -- the isolation runner -------------------------------------------------------------


def context(queue: str, payload: dict[str, Any]) -> JobContext:
    now = datetime.now(UTC)
    return JobContext(id=uuid.uuid4(), queue=queue, payload=None, attempt=1, max_attempts=3, priority=100,
                      created_at=now, started_at=now, raw_payload=payload)


@pytest.fixture
def isolation(pmq_settings) -> Iterator[Callable[[Plugins], Any]]:
    """Run a coroutine against an Isolation of the given plugins on a fresh
    event loop; the child is stopped afterwards."""
    made: list[Isolation] = []

    def run(plugins: Plugins, body: Callable[[Isolation], Any]) -> Any:
        async def main() -> Any:
            isolation = Isolation(plugins.load(), pmq_settings, uuid.uuid4(), ["probe", "aprobe"])
            made.append(isolation)
            try:
                return await body(isolation)
            finally:
                await isolation.close()

        return asyncio.run(main())

    yield run


def probes() -> Plugins:
    return Plugins(None, [Probe()], entry_points=False)


def test_isolation_runs_sync_and_async_handlers_in_one_child_it_reuses(isolation):
    async def body(iso: Isolation) -> list[Any]:
        assert await iso.can_run("probe")
        return [await iso.run(context("probe", {})), await iso.run(context("aprobe", {}))]

    sync, async_ = isolation(probes(), body)
    assert sync["pid"] == async_["pid"] != os.getpid()
    assert len(sync["started_for"]) == 1  # pmq_worker_started ran in the child, once


def test_isolation_passes_exceptions_back_with_their_class(isolation):
    async def body(iso: Isolation) -> list[BaseException]:
        errors = []
        for name in ("ConnectionResetError", "Fail", "KeyError"):
            with pytest.raises(BaseException) as caught:
                await iso.run(context("probe", {"raise": name}))
            errors.append(caught.value)
        return errors

    reset, fail, key = isolation(probes(), body)
    assert (type(reset), type(fail), type(key)) == (ConnectionResetError, Fail, KeyError)
    policy = RetryPolicy(retry_on=(ConnectionError,))
    assert (policy.retries(reset), policy.retries(fail), policy.retries(key)) == (True, False, False)


def test_a_crash_in_isolation_names_its_culprit_and_the_next_job_gets_a_new_child(isolation):
    async def body(iso: Isolation) -> tuple[BaseException, Any, Any]:
        first = await iso.run(context("probe", {}))
        with pytest.raises(HandlerCrashed) as crashed:
            await iso.run(context("probe", {"crash": 3}))
        return crashed.value, first, await iso.run(context("probe", {}))

    error, before, after = isolation(probes(), body)
    assert str(error) == "the handler crashed its process (exit code 3)"
    assert before["pid"] != after["pid"]


def test_a_timeout_in_isolation_kills_the_child(isolation):
    async def body(iso: Isolation) -> tuple[int, Any]:
        child = (await iso.run(context("probe", {})))["pid"]
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await iso.run(context("probe", {"sleep": 60}))
        return child, await iso.run(context("aprobe", {}))

    killed, after = isolation(probes(), body)
    with pytest.raises(ProcessLookupError):
        os.kill(killed, 0)  # gone (and reaped), not left running the attempt
    assert after["pid"] != killed


def test_a_result_that_cannot_be_pickled_comes_back_as_none(isolation):
    async def body(iso: Isolation) -> Any:
        return await iso.run(context("probe", {"unpicklable": True}))

    assert isolation(probes(), body) is None


def test_plugins_that_cannot_reach_a_child_leave_isolation_unavailable(isolation, caplog):
    async def body(iso: Isolation) -> bool:
        return await iso.can_run("echo")

    assert isolation(Plugins(None, [make_plugin(Recorder())], entry_points=False), body) is False
    assert "cannot be sent to a child process" in caplog.text


# -- the rescue --------------------------------------------------------------------


class DeadHooks:
    def __init__(self) -> None:
        self.dead: list[tuple[uuid.UUID, BaseException]] = []

    @hookimpl
    def pmq_job_dead(self, job: Any, error: BaseException) -> None:
        self.dead.append((job.id, error))


def test_a_rescue_gives_the_attempt_back_and_counts_only_what_may_have_run(pmq_runtime):
    hooks = DeadHooks()
    rt = pmq_runtime(Probe(), hooks, worker=False, migrator=False, max_rescues=3)
    job_id = rt.enqueue("probe", {})
    url = rt.settings.database_url
    migrator = Migrator(rt.settings, rt.plugins)

    def held(suspect_started: bool) -> None:  # as if claimed by a worker that then died
        sql(url, "UPDATE jobs SET status = 'running', attempt_count = attempt_count + 1, worker_id = %s,"
                 " suspect_started_at = CASE WHEN %s THEN now() END WHERE id = %s",
            (uuid.uuid4(), suspect_started, job_id))

    def rescue() -> tuple[Any, ...]:
        with redis_of(rt.settings) as rds, pg_connect(url) as conn:
            assert migrator.rescue(conn, rds) == 1
        return sql(url, "SELECT status, attempt_count, rescue_count FROM jobs WHERE id = %s", (job_id,))[0]

    held(suspect_started=False)
    assert rescue() == ("queued", 0, 1)  # a suspect now, its attempt given back
    held(suspect_started=False)
    assert rescue() == ("queued", 0, 1)  # waited for its turn and never ran: not counted again
    held(suspect_started=True)
    assert rescue() == ("queued", 0, 2)  # ran, alone, when its worker died
    held(suspect_started=True)
    assert rescue() == ("failed", 1, 3)
    job = rt.job(job_id)
    assert job.last_error_message == "its worker died 3 times while holding it (no heartbeat for 3s)"
    with rt.admin() as admin:
        _, logs = admin.job(job_id)
    assert [(log["status"], log["attempt_number"]) for log in logs] == [("retry", 1)] * 3 + [("failed", 1)]
    assert [(dead_id, type(error)) for dead_id, error in hooks.dead] == [(job_id, WorkerLost)]
    with redis_of(rt.settings) as rds:
        assert rds.lrange(Keys(rt.settings.key_prefix).dead("probe"), 0, -1) == [str(job_id).encode()]


# -- suspects in a worker -------------------------------------------------------------


def insert_suspect(url: str, queue: str, payload: str) -> uuid.UUID:
    return scalar(url, "INSERT INTO jobs (queue_name, payload, rescue_count) VALUES (%s, %s, 1) RETURNING id",
                  (queue, payload))


def test_a_suspect_runs_in_the_isolation_child_and_an_ordinary_job_does_not(pmq_runtime):
    rt = pmq_runtime(Probe(), concurrency=4)
    ordinary = rt.wait(rt.enqueue("probe", {}))
    suspect = rt.wait(insert_suspect(rt.settings.database_url, "probe", "{}"))
    assert (ordinary.status, suspect.status) == (JobStatus.COMPLETED, JobStatus.COMPLETED)
    assert scalar(rt.settings.database_url, "SELECT suspect_started_at IS NOT NULL FROM jobs WHERE id = %s",
                  (suspect.id,))
    assert scalar(rt.settings.database_url, "SELECT suspect_started_at FROM jobs WHERE id = %s",
                  (ordinary.id,)) is None


def test_a_suspect_that_crashes_its_child_fails_like_any_attempt_and_its_worker_lives_on(pmq_runtime):
    rt = pmq_runtime(Probe(), concurrency=4)
    culprit = rt.wait(insert_suspect(rt.settings.database_url, "aprobe", '{"crash": 1}'), timeout=30)
    assert (culprit.status, culprit.attempt_count) == (JobStatus.FAILED, 3)
    assert culprit.last_error_message == "HandlerCrashed: the handler crashed its process (exit code 1)"
    with rt.admin() as admin:
        _, logs = admin.job(culprit.id)
    assert [log["status"] for log in logs] == ["retry", "retry", "failed"]
    assert rt.wait(rt.enqueue("probe", {})).status is JobStatus.COMPLETED  # the worker lived on


class Failures:
    """Records each ``pmq_job_failed`` call: job id, error class, will_retry."""

    def __init__(self) -> None:
        self.seen: list[tuple[uuid.UUID, type[BaseException], bool]] = []

    @hookimpl
    def pmq_job_failed(self, job: Any, error: BaseException, will_retry: bool) -> None:
        self.seen.append((job.id, type(error), will_retry))


def test_a_suspect_taken_before_its_turn_does_not_run_and_its_attempt_ends_in_job_cancelled(pmq_runtime, tmp_path):
    failures = Failures()
    rt = pmq_runtime(Probe(), failures, concurrency=4)
    url = rt.settings.database_url
    gate = tmp_path / "gate"
    first = insert_suspect(url, "probe", json.dumps({"until": str(gate)}))  # holds the suspects' turn
    wait_until(lambda: scalar(url, "SELECT suspect_started_at IS NOT NULL FROM jobs WHERE id = %s", (first,)),
               bool, 15, "the first suspect did not start")
    second = insert_suspect(url, "probe", "{}")
    rt.wait(second, statuses=[JobStatus.RUNNING])  # claimed, waiting for its turn
    # Cancelled behind the worker's back (as when the cancel's message to
    # the worker is lost with Redis): the worker learns it at its turn.
    sql(url, "UPDATE jobs SET status = 'cancelled', worker_id = NULL WHERE id = %s", (second,))
    gate.touch()
    assert rt.wait(first).status is JobStatus.COMPLETED
    wait_until(lambda: list(failures.seen), bool, 15, "pmq_job_failed was not called")
    assert failures.seen == [(second, JobCancelled, False)]
    cancelled = rt.job(second)
    assert (cancelled.status, cancelled.attempt_count, cancelled.last_error_message) == (JobStatus.CANCELLED, 1, None)
    assert scalar(url, "SELECT suspect_started_at FROM jobs WHERE id = %s", (second,)) is None  # never started


# -- the whole story, with a real worker process ------------------------------------------


def test_a_job_that_kills_its_worker_ends_dead_and_costs_its_neighbours_nothing(pmq_runtime, tmp_path):
    rt = pmq_runtime(Probe(), worker=False, rescue_after=2.0)
    url = rt.settings.database_url
    sql(url, RUNS_TABLE)
    host = Plugins(None, [CrashPlugin(url)], entry_points=False)
    with rt.admin() as admin:
        admin.register_job_types(host)
    with Client(rt.settings, plugins=host) as client:
        innocents = client.enqueue_many(QUEUE, [{"sleep": 0.3}] * 5)
        culprit = client.enqueue(QUEUE, {"crash": True})
        innocents += client.enqueue_many(QUEUE, [{"sleep": 0.3}] * 5)
    everyone = [*innocents, culprit]

    def finished() -> int:
        return scalar(url, "SELECT count(*) FROM jobs WHERE id = ANY(%s) AND status IN ('completed', 'failed')",
                      (everyone,))

    exits: list[int] = []
    deadline = time.monotonic() + 120
    while finished() < len(everyone):
        assert time.monotonic() < deadline, f"jobs not finished; worker exits so far: {exits}"
        with open(tmp_path / f"worker-{len(exits)}.log", "wb") as log:
            process = start_worker_process(rt.settings, log, concurrency=4, prefetch=8)
            try:
                while process.poll() is None and finished() < len(everyone):
                    assert time.monotonic() < deadline, "jobs not finished in time"
                    time.sleep(0.1)
            finally:
                if process.poll() is None:
                    process.terminate()
                code = process.wait(timeout=60)
        if finished() < len(everyone):
            exits.append(code)

    assert exits == [1]  # the culprit killed its worker once; then it only ever killed its isolation child
    dead = rt.job(culprit)
    assert (dead.status, dead.attempt_count) == (JobStatus.FAILED, 3)
    assert dead.last_error_message == "HandlerCrashed: the handler crashed its process (exit code 1)"
    rescued = scalar(url, "SELECT count(*) FROM jobs WHERE id = ANY(%s) AND rescue_count > 0", (innocents,))
    print(f"{rescued} innocent jobs were held by the worker the culprit killed; all completed at attempt 1")
    assert rescued >= 2  # running beside the culprit or claimed ahead of it: the neighbours at stake
    for job_id in innocents:
        job = rt.job(job_id)
        assert (job.status, job.attempt_count) == (JobStatus.COMPLETED, 1), job
        with rt.admin() as admin:
            _, logs = admin.job(job_id)
        assert all(log["status"] in ("success", "retry") for log in logs), logs
        assert all("the attempt does not count" in log["log_message"] for log in logs if log["status"] == "retry")
    runs = sql(url, "SELECT job_id, started, ended FROM crash_runs ORDER BY job_id, started")
    for (job_a, _, ended_a), (job_b, started_b, _) in zip(runs, runs[1:], strict=False):
        if job_a == job_b and ended_a is not None:
            assert ended_a <= started_b, f"two runs of job {job_a} overlapped"
