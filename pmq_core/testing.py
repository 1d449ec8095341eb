"""A kit for testing pmq plugins against real servers.

Installed with pmq as a pytest plugin (``pip install 'pmq[testing]'`` brings
pytest with it), so its fixtures are available in any test suite; the guide
is docs/testing.md:

- ``pmq_settings``: settings for a fresh database (cloned from a migrated
  template, so it costs a fraction of a second) and a fresh Redis key
  prefix, with timings shortened for tests;
- ``pmq_runtime``: a factory that starts a migrator and a worker in the
  background for the plugins you give it, returning a :class:`Runtime` with
  helpers to enqueue jobs and wait for their outcome.

Servers are those of ``PMQ_DATABASE_URL`` / ``PMQ_REDIS_URL`` when set, else
pmq's embedded servers (started on first need). Outside pytest,
:func:`run_inline` runs a handler once with a real job context and no server.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import attrs
import psycopg
import pytest

from pmq_core import payloads, schema, store
from pmq_core.admin import Admin
from pmq_core.client import Client
from pmq_core.config import Settings
from pmq_core.db import redis_client, resolve_servers
from pmq_core.jobtypes import JobType
from pmq_core.migrator import Migrator
from pmq_core.models import Job, JobContext, JobStatus
from pmq_core.plugins import Plugins
from pmq_core.worker import Worker

#: Settings that make tests quick: short polls, heartbeats and rescue windows.
FAST: dict[str, Any] = {"poll_interval": 0.2, "heartbeat_interval": 0.5, "rescue_after": 3.0, "redispatch_after": 1.0,
        "shutdown_grace": 5.0}
#: Seconds a test worker's pop blocks (a deployed worker's: 1 s): stopping
#: the worker waits for the pop in flight, and tests stop workers often.
TEST_POP_TIMEOUT = 0.05


def run_inline(job_type: JobType, payload: Any = None, *, attempt: int = 1, max_attempts: int | None = None,
               settings: Settings | None = None, resources: Mapping[str, Any] | None = None,
               partition: str | None = None) -> Any:
    """Run ``job_type``'s handler once, in this thread, with a real job
    context (the payload checked and structured as the worker would), and
    return its result or raise its exception. No server is needed.
    ``settings`` and ``resources`` become ``job.settings`` and
    ``job.resources`` (a worker's come from its plugins'
    ``pmq_worker_resources``; here the caller gives them). ``partition``
    becomes ``job.partition``, as given (the job type's rule is not applied)."""
    text = payloads.to_json(payload or {}, queue=job_type.name, payload_class=job_type.payload, limit=1 << 30)
    import json

    raw = json.loads(text)
    now = datetime.now(UTC)
    ctx = JobContext(id=uuid.uuid4(), queue=job_type.name, payload=payloads.structure(raw, job_type.payload),
                     attempt=attempt, max_attempts=max_attempts or job_type.retry.max_attempts,
                     priority=job_type.priority, created_at=now, started_at=now, raw_payload=raw,
                     settings=settings, resources=resources or {}, partition=partition)
    result = job_type.handler(ctx)
    if inspect.isawaitable(result):
        return asyncio.run(_await(result))
    return result


async def _await(awaitable: Any) -> Any:
    return await awaitable


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


class Servers:
    """The servers a test session uses, and fresh databases on them."""

    def __init__(self, base: Settings) -> None:
        self.base = resolve_servers(base)
        assert self.base.database_url and self.base.redis_url
        self.database_url = self.base.database_url
        self.redis_url = self.base.redis_url
        self.template = f"pmq_template_{os.getpid()}"
        self._lock = threading.Lock()
        self._template_ready = False

    def _admin_conn(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.database_url, autocommit=True)

    def _ensure_template(self) -> None:
        with self._lock:
            if self._template_ready:
                return
            with self._admin_conn() as conn:
                store.drop_database(conn, self.template)
                store.create_database(conn, self.template)
            with psycopg.connect(_with_database(self.database_url, self.template), autocommit=True) as conn:
                schema.upgrade(conn)
            self._template_ready = True

    def create_database(self) -> str:
        """A new database with the core schema; its URL."""
        self._ensure_template()
        name = f"pmq_test_{uuid.uuid4().hex[:12]}"
        with self._admin_conn() as conn:
            store.create_database(conn, name, template=self.template)
        return _with_database(self.database_url, name)

    def drop_database(self, url: str) -> None:
        name = urlsplit(url).path.lstrip("/")
        with self._admin_conn() as conn:
            store.drop_database(conn, name)

    def drop_keys(self, prefix: str) -> None:
        rds = redis_client(self.redis_url)
        try:
            batch = list(rds.scan_iter(match=f"{prefix}*", count=1000))
            if batch:
                rds.delete(*batch)
        finally:
            rds.close()

    def close(self) -> None:
        if self._template_ready:
            with self._admin_conn() as conn:
                store.drop_database(conn, self.template)


@attrs.define
class Runtime:
    """A migrator and a worker running in the background, for tests.

    ``settings`` point at the test's own database and Redis key prefix;
    ``plugins`` are the plugins it runs; ``client`` enqueues; ``worker`` is
    the last worker started. ``retry_delay_scale`` multiplies the retry
    delays of the workers it starts (0: retry at once).
    """

    settings: Settings
    plugins: Plugins
    client: Client
    worker: Worker | None = None
    retry_delay_scale: float = 1.0
    _stoppers: list[Callable[[], None]] = attrs.field(factory=list)
    _threads: list[threading.Thread] = attrs.field(factory=list)
    _migrator_stop: threading.Event = attrs.field(factory=threading.Event)

    def enqueue(self, queue: str, payload: Any = None, **options: Any) -> uuid.UUID:
        """Enqueue one job (``Client.enqueue``'s options: ``priority``,
        ``delay``, ``run_at``, ``max_attempts``); its id."""
        return self.client.enqueue(queue, payload, **options)

    def job(self, job_id: uuid.UUID) -> Job:
        """The job's row now (a :class:`~pmq_core.models.Job`)."""
        return self.client.get_job(job_id)

    def logs(self, job_id: uuid.UUID) -> list[dict[str, Any]]:
        """The job's ``job_logs`` rows, oldest first: one per finished
        attempt, each a dict of ``status`` (``success``, ``retry`` or
        ``failed``), ``log_message`` (the error, or None),
        ``attempt_number``, ``started_at``, ``finished_at`` and ``duration``
        (seconds)."""
        with self.admin() as admin:
            return admin.job(job_id)[1]

    def wait(self, job_id: uuid.UUID, timeout: float = 15.0,
             statuses: Iterable[JobStatus] = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)) -> Job:
        """Poll until the job reaches one of ``statuses`` (by default, any
        finished state); AssertionError with its last state after ``timeout``."""
        wanted = set(statuses)
        job: Job = wait_until(lambda: self.job(job_id), lambda job: job.status in wanted, timeout,
                          f"job {job_id} did not reach {sorted(s.value for s in wanted)}")
        return job

    def wait_all(self, job_ids: Iterable[uuid.UUID], timeout: float = 30.0) -> list[Job]:
        ids = list(job_ids)
        return [self.wait(job_id, timeout=timeout) for job_id in ids]

    def admin(self) -> Admin:
        """An :class:`~pmq_core.admin.Admin` on the test's servers (use it
        in a ``with`` block, which closes its connections)."""
        return Admin(self.settings, plugins=self.plugins)

    def start_worker(self, queues: list[str] | None = None, concurrency: int | None = None) -> Worker:
        """Start a worker in a thread of its own (its own event loop)."""
        worker = Worker(self.settings, self.plugins, queues=queues, concurrency=concurrency,
                        retry_delay_scale=self.retry_delay_scale)
        worker.pop_timeout = TEST_POP_TIMEOUT
        ready = threading.Event()
        holder: dict[str, Any] = {}

        def serve() -> None:
            async def main() -> None:
                stop = asyncio.Event()
                holder["stop"] = lambda: asyncio.get_running_loop().call_soon_threadsafe(stop.set)
                holder["loop"] = asyncio.get_running_loop()
                task = asyncio.create_task(worker.run(stop))
                await worker.started.wait()
                ready.set()
                await task

            asyncio.run(main())

        thread = threading.Thread(target=serve, name="pmq-test-worker", daemon=True)
        thread.start()
        if not ready.wait(20):
            raise AssertionError("the test worker did not start within 20s")
        loop = holder["loop"]
        self.worker = worker
        self._stoppers.append(lambda: loop.call_soon_threadsafe(holder["stop"]))
        self._threads.append(thread)
        return worker

    def start_migrator(self) -> Migrator:
        migrator = Migrator(self.settings, self.plugins)
        thread = threading.Thread(target=migrator.run, args=(self._migrator_stop,), name="pmq-test-migrator",
                                  daemon=True)
        thread.start()
        if not migrator.is_leader.wait(20):
            raise AssertionError("the test migrator did not take the lead within 20s")
        self._threads.append(thread)
        return migrator

    def stop(self) -> None:
        """Stop what was started; calling it again does nothing."""
        while self._stoppers:
            self._stoppers.pop()()
        self._migrator_stop.set()
        for thread in self._threads:
            thread.join(timeout=self.settings.shutdown_grace + 10)
        self.client.close()


def wait_until(probe: Callable[[], Any], done: Callable[[Any], bool], timeout: float, message: str) -> Any:
    """Call ``probe`` until ``done(value)`` holds; return that value, or fail
    with ``message`` and the last value after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        value = probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} within {timeout}s; last seen: {value!r}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


# -- pytest fixtures ---------------------------------------------------------------


@pytest.fixture(scope="session")
def pmq_servers() -> Iterator[Servers]:
    """The PostgreSQL and Redis servers of this test session."""
    servers = Servers(Settings.load())
    yield servers
    servers.close()


@pytest.fixture
def pmq_settings(pmq_servers: Servers) -> Iterator[Settings]:
    """Settings for a fresh database and Redis key prefix, with fast timings."""
    url = pmq_servers.create_database()
    prefix = f"pmqtest:{uuid.uuid4().hex[:8]}:"
    settings = attrs.evolve(pmq_servers.base, database_url=url, redis_url=pmq_servers.redis_url,
                            key_prefix=prefix, plugins=None, **FAST)
    yield settings
    pmq_servers.drop_keys(prefix)
    pmq_servers.drop_database(url)


@pytest.fixture
def pmq_runtime(pmq_settings: Settings) -> Iterator[Callable[..., Runtime]]:
    """Start pmq for the given plugins: ``pmq_runtime(my_plugin_module)``.

    Plugins are registered directly (installed entry points are not loaded
    unless ``entry_points=True``). The schema (the plugins' migrations
    included) is applied and the job types' queues registered. By default a
    migrator and a worker start; pass ``worker=False`` or ``migrator=False``
    to start them yourself (``runtime.start_worker()``).
    ``retry_delay_scale=0`` makes the workers retry failed attempts at once
    (any number from 0 to 1 scales every retry delay); other keywords are
    settings.
    """
    started: list[Runtime] = []

    def start(*plugins: Any, entry_points: bool = False, worker: bool = True, migrator: bool = True,
              concurrency: int | None = None, retry_delay_scale: float = 1.0, **overrides: Any) -> Runtime:
        settings = attrs.evolve(pmq_settings, **overrides)
        host = Plugins(None, plugins, entry_points=entry_points)
        with Admin(settings) as admin:
            admin.upgrade(host)
            admin.register_job_types(host)
        runtime = Runtime(settings, host, Client(settings, plugins=host), retry_delay_scale=retry_delay_scale)
        started.append(runtime)
        if migrator:
            runtime.start_migrator()
        if worker:
            runtime.start_worker(concurrency=concurrency)
        return runtime

    yield start
    for runtime in started:
        runtime.stop()
