"""Enqueueing jobs and looking after them, from any Python program.

:class:`Client` is for threads and plain code, :class:`AsyncClient` for
asyncio. An enqueue that returns has been committed in PostgreSQL, and an
enqueue given the caller's own connection commits or rolls back with the
caller's transaction (the migrator then hands its jobs to Redis). A small
enqueue on the client's own connection hands its due jobs to Redis itself,
right after the commit, saving them a trip through the migrator.
Everything is checked before anything is written: a bad payload, priority or
time raises one error naming the problem, and no job of the call is stored.
"""

from __future__ import annotations

import contextlib
import math
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from pmq_core import headers as job_headers
from pmq_core import payloads, store
from pmq_core.config import Settings
from pmq_core.db import ADAPTERS, apg_connect, pg_connect, prepare_threshold, resolve_servers, translated
from pmq_core.errors import DatabaseUnavailableError, JobNotFoundError, PayloadError, UnknownQueueError, shown
from pmq_core.flow import check_partition
from pmq_core.handover import AsyncHandover, ThreadHandover
from pmq_core.jobtypes import JobType, check_queue_name
from pmq_core.limits import INT32, LATEST, check_time
from pmq_core.models import Job, new_job_ids, parse_job_id
from pmq_core.plugins import Plugins

#: Seconds an enqueue waits for a connection before reporting PostgreSQL
#: unavailable (the pool's default, 30 s, left producers hanging in an outage).
#: Also bounds opening the pool, after one plain connection has checked the
#: server (see Client.pool).
POOL_WAIT = 5.0
#: Longest uniqueness key, in UTF-8 bytes: it must fit in a btree index entry.
MAX_UNIQUE_KEY_BYTES = 1000


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PayloadError(f"{name} must be a whole number, got {type(value).__name__} {shown(value)}")
    if not low <= value <= INT32:
        raise PayloadError(f"{name} must be between {low} and {INT32}, got {shown(value)}")
    return value


def _due_time(run_at: datetime | None, delay: float | timedelta | None) -> datetime | None:
    """When the job is due, or PayloadError: ``run_at`` and the time ``delay``
    seconds from now must lie in the range the schema admits."""
    if run_at is not None and delay is not None:
        raise PayloadError("give run_at or delay, not both")
    if run_at is not None:
        if not isinstance(run_at, datetime):
            raise PayloadError(f"run_at must be a datetime, got {type(run_at).__name__}")
        if run_at.tzinfo is None or run_at.utcoffset() is None:
            raise PayloadError("run_at must be timezone-aware (a naive time is ambiguous); "
                               "use datetime.now(timezone.utc) or attach a tzinfo")
        return check_time("run_at", run_at)
    if delay is not None:
        seconds = delay.total_seconds() if isinstance(delay, timedelta) else delay
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise PayloadError(f"delay must be a number of seconds, got {shown(delay)}")
        if seconds < 0 or seconds != seconds:
            raise PayloadError(f"delay must be a non-negative number of seconds, got {shown(delay)}")
        now = datetime.now(UTC)
        if seconds >= (LATEST - now).total_seconds():
            raise PayloadError(f"delay of {_brief_number(seconds)} seconds is too far in the future: "
                               f"a job must be due before {LATEST.isoformat()}")
        return now + timedelta(seconds=seconds)
    return None


def _brief_number(value: float) -> str:
    """A number for an error message; a huge integer as its magnitude (its
    digits could run to pages, and str() refuses over 4,300 of them)."""
    if isinstance(value, int) and value.bit_length() > 64:
        return f"about 10^{int(value.bit_length() * math.log10(2))}"
    return repr(value)


@contextlib.contextmanager
def _unwritten() -> Iterator[None]:
    """A failed connection, said to have written nothing (the caller's
    enqueue has not started)."""
    try:
        yield
    except DatabaseUnavailableError as exc:
        raise DatabaseUnavailableError(f"{exc}; nothing was written") from None


def _check_partition(partition: Any) -> str | None:
    """``partition`` if it can be a job's partition key, else PayloadError."""
    try:
        return check_partition(partition)
    except ValueError as exc:
        raise PayloadError(str(exc)) from None


def _check_unique_key(key: str) -> str:
    """``key`` if PostgreSQL can store and index it, else PayloadError."""
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise PayloadError(f"unique_key {shown(key)} contains a lone surrogate, which is not valid unicode") from None
    if "\x00" in key:
        raise PayloadError(f"unique_key {shown(key)} contains a NUL character, which PostgreSQL cannot store")
    if size > MAX_UNIQUE_KEY_BYTES:
        raise PayloadError(f"unique_key is {size} bytes, over the limit of {MAX_UNIQUE_KEY_BYTES}: use a digest")
    return key


@attrs.define
class _EnqueueCall:
    """The headers the wrappers of one enqueue added, and its ids once written."""

    headers: dict[str, str] = attrs.Factory(dict)
    ids: list[uuid.UUID] | None = None


class _ClientBase:
    """What both clients share: settings, plugins and the checks."""

    def __init__(self, settings: Settings | None = None, *, plugins: Plugins | None = None) -> None:
        self.settings = settings or Settings.load()
        self.plugins = plugins if plugins is not None else Plugins(self.settings.plugins)
        self._queues: set[str] = set()

    def _resolved(self) -> Settings:
        self.settings = resolve_servers(self.settings)
        return self.settings

    @property
    def database_url(self) -> str:
        """The PostgreSQL URL this client writes to (the embedded server's,
        started if need be, when none is configured): connect with it to
        enqueue inside a transaction of your own (``enqueue(..., conn=conn)``)."""
        url = self._resolved().database_url
        assert url
        return url

    def _job_type(self, queue: str) -> JobType | None:
        return self.plugins.job_type(queue)

    def prepare(self, queue: str, items: Sequence[Any], *, priority: int | None, run_at: datetime | None,
                delay: float | timedelta | None, max_attempts: int | None,
                unique_key: str | None, partition: str | None = None,
                headers: Mapping[str, str] | None = None) -> store.NewJobs:
        """Check everything about one enqueue call; raise before any write."""
        try:
            check_queue_name(queue)
        except ValueError as exc:
            raise UnknownQueueError(str(exc)) from None
        job_type = self._job_type(queue)
        if priority is None and job_type is not None:
            priority = job_type.priority
        if priority is not None:
            _check_int("priority", priority, -INT32)
        if max_attempts is None and job_type is not None:
            max_attempts = job_type.retry.max_attempts
        if max_attempts is not None:
            _check_int("max_attempts", max_attempts, 1)
        due = _due_time(run_at, delay)
        payload_class = job_type.payload if job_type else None
        limit = self.settings.max_payload_bytes
        explicit = _check_partition(partition)
        texts = []
        keys: list[str | None] = []
        partitions: list[str | None] = []
        for index, item in enumerate(items):
            try:
                text = payloads.to_json({} if item is None else item, queue=queue,
                                        payload_class=payload_class, limit=limit)
                partitions.append(explicit if partition is not None else self._partition(job_type, item))
            except PayloadError as exc:
                raise PayloadError(f"job {index}: {exc}" if len(items) > 1 else str(exc)) from None
            texts.append(text)
            keys.append(self._unique_key(job_type, item, unique_key))
        if unique_key is not None and len(items) > 1:
            raise PayloadError("unique_key names one job; give unique keys through the job type for a bulk enqueue")
        return store.NewJobs(queue, new_job_ids(len(texts)), texts, priority, max_attempts, due, keys, partitions,
                             job_headers.to_json(headers or {}))

    @contextlib.contextmanager
    def _wrapped(self, queue: str) -> Iterator[_EnqueueCall]:
        """One enqueue call inside the plugins' ``pmq_wrap_enqueue``
        wrappers: they add their headers first, and learn its ids or error."""
        call = _EnqueueCall()
        wrappers = self.plugins.hooks.wrap_enqueue(queue=queue, headers=call.headers)
        try:
            yield call
        except BaseException as exc:
            wrappers.finish(None, exc)
            raise
        wrappers.finish(call.ids, None)

    @staticmethod
    def _partition(job_type: JobType | None, item: Any) -> str | None:
        """The partition the job type's rule gives a payload (None: the
        default partition, also without a rule)."""
        if job_type is None or job_type.partition is None:
            return None
        data = item if isinstance(item, dict) else payloads._converter.unstructure(item)
        return _check_partition(job_type.partition(data))

    @staticmethod
    def _unique_key(job_type: JobType | None, item: Any, explicit: str | None) -> str | None:
        if explicit is not None:
            if not isinstance(explicit, str) or not explicit:
                raise PayloadError(f"unique_key must be a non-empty string, got {shown(explicit)}")
            return _check_unique_key(explicit)
        if job_type is None or job_type.unique_key is None:
            return None
        data = item if isinstance(item, dict) else payloads._converter.unstructure(item)
        return _check_unique_key(str(job_type.unique_key(data)))

    def _known(self, queue: str, known: set[str]) -> None:
        """Remember the queues found to exist; UnknownQueueError unless ``queue`` is one."""
        self._queues |= known
        if queue not in known:
            raise self._unknown(queue)

    def _unknown(self, queue: str) -> UnknownQueueError:
        return UnknownQueueError(
            f"unknown queue {shown(queue)}: no job type declares it and job_queues has no such row; "
            "load the plugin that declares it (pmq plugins) or create the queue"
        )


class Client(_ClientBase):
    """Enqueue and manage jobs from synchronous code (thread-safe)."""

    def __init__(self, settings: Settings | None = None, *, plugins: Plugins | None = None) -> None:
        super().__init__(settings, plugins=plugins)
        self._pool: ConnectionPool | None = None
        self._handover: ThreadHandover | None = None

    @property
    def pool(self) -> ConnectionPool:
        """The client's pool, opened on first use. One plain connection
        comes first: a server that is down or refuses us is reported at once
        with its cause, instead of after the pool's silent retries."""
        if self._pool is None:
            settings = self._resolved()
            assert settings.database_url
            with _unwritten():
                pg_connect(settings.database_url, timeout=POOL_WAIT, pooled=settings.database_pooled).close()
            pool = ConnectionPool(settings.database_url, min_size=1, max_size=8, open=False, timeout=POOL_WAIT,
                                  kwargs={"autocommit": True, "row_factory": dict_row, "context": ADAPTERS,
                                          "application_name": "pmq-client",
                                          "prepare_threshold": prepare_threshold(settings)})
            with translated(settings.database_url):
                pool.open(wait=True, timeout=POOL_WAIT)
            self._pool = pool
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self._handover is not None:
            self._handover.close()
            self._handover = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- enqueue ---------------------------------------------------------------

    def enqueue(self, queue: str, payload: Any = None, *, priority: int | None = None,
                run_at: datetime | None = None, delay: float | timedelta | None = None,
                max_attempts: int | None = None, unique_key: str | None = None,
                partition: str | None = None, conn: psycopg.Connection[Any] | None = None) -> uuid.UUID:
        """Enqueue one job and return its id.

        ``priority`` (lower runs sooner) and ``max_attempts`` default to the
        job type's, then the queue's. ``partition`` (a mailbox, a customer)
        is the key the queue's per-partition limits and fair turns apply to;
        it defaults to the job type's partition rule, else the queue's
        default partition. ``run_at`` (timezone-aware) or ``delay``
        (seconds) schedule it. With ``unique_key`` (or the job type's uniqueness
        rule) and a live job holding that key, nothing is written and the live
        job's id is returned. With ``conn``, the job is written on the caller's
        connection and lives or dies with its transaction.
        """
        return self.enqueue_many(queue, [payload], priority=priority, run_at=run_at, delay=delay,
                                 max_attempts=max_attempts, unique_key=unique_key, partition=partition,
                                 conn=conn)[0]

    def enqueue_many(self, queue: str, payloads: Iterable[Any], *, priority: int | None = None,
                     run_at: datetime | None = None, delay: float | timedelta | None = None,
                     max_attempts: int | None = None, unique_key: str | None = None,
                     partition: str | None = None,
                     conn: psycopg.Connection[Any] | None = None) -> list[uuid.UUID]:
        """Enqueue many jobs of one queue in one round trip (COPY for large
        batches); all are written or none. Returns their ids in order."""
        items = list(payloads)
        if not items:
            return []
        with self._wrapped(queue) as call:
            prepared = self.prepare(queue, items, priority=priority, run_at=run_at, delay=delay,
                                    max_attempts=max_attempts, unique_key=unique_key, partition=partition,
                                    headers=call.headers)
            self._ensure_queue(queue)
            settings = self.settings
            with translated(settings.database_url):
                if conn is not None:
                    ids, _rows = self._write(conn, prepared, dispatch=False)
                else:
                    # One write statement (COPY or INSERT), atomic on its own in
                    # autocommit: no BEGIN and COMMIT round trips around it.
                    with self.pool.connection() as own:
                        handover = self._handover = self._handover or ThreadHandover(self.settings)
                        ids, rows = self._write(own, prepared, dispatch=handover.active())
                    handover.submit(rows)
            call.ids = ids
        self.plugins.hooks.jobs_enqueued(queue=queue, job_ids=ids)
        return ids

    def _write(self, conn: psycopg.Connection[Any], jobs: store.NewJobs, dispatch: bool) -> store.Inserted:
        try:
            return store.insert_jobs(conn, jobs, dispatch)
        except psycopg.errors.ForeignKeyViolation:
            raise self._unknown(jobs.queue) from None

    def _ensure_queue(self, queue: str) -> None:
        if queue in self._queues:
            return
        with translated(self.settings.database_url), self.pool.connection() as conn:
            self._known(queue, store.ensure_queue(conn, queue, self._job_type(queue)))

    # -- looking after jobs ------------------------------------------------------

    def get_job(self, job_id: uuid.UUID | str) -> Job:
        """The job's row; JobNotFoundError when there is none."""
        job_id = parse_job_id(job_id)
        with translated(self.settings.database_url), self.pool.connection() as conn:
            job = store.get_job(conn, job_id)
        if job is None:
            raise JobNotFoundError(f"no job with id {job_id}")
        return job


class AsyncClient(_ClientBase):
    """Enqueue and manage jobs from asyncio code."""

    def __init__(self, settings: Settings | None = None, *, plugins: Plugins | None = None) -> None:
        super().__init__(settings, plugins=plugins)
        self._pool: AsyncConnectionPool | None = None
        self._handover: AsyncHandover | None = None

    async def pool(self) -> AsyncConnectionPool:
        """The client's pool, opened on first use; see :attr:`Client.pool`."""
        if self._pool is None:
            settings = self._resolved()
            assert settings.database_url
            with _unwritten():
                await (await apg_connect(settings.database_url, timeout=POOL_WAIT,
                                         pooled=settings.database_pooled)).close()
            pool = AsyncConnectionPool(settings.database_url, min_size=1, max_size=8, open=False, timeout=POOL_WAIT,
                                       kwargs={"autocommit": True, "row_factory": dict_row, "context": ADAPTERS,
                                               "application_name": "pmq-client",
                                               "prepare_threshold": prepare_threshold(settings)})
            with translated(settings.database_url):
                await pool.open(wait=True, timeout=POOL_WAIT)
            self._pool = pool
        return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        if self._handover is not None:
            await self._handover.close()
            self._handover = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def enqueue(self, queue: str, payload: Any = None, *, priority: int | None = None,
                      run_at: datetime | None = None, delay: float | timedelta | None = None,
                      max_attempts: int | None = None, unique_key: str | None = None,
                      partition: str | None = None,
                      conn: psycopg.AsyncConnection[Any] | None = None) -> uuid.UUID:
        """Enqueue one job; see :meth:`Client.enqueue`."""
        ids = await self.enqueue_many(queue, [payload], priority=priority, run_at=run_at, delay=delay,
                                      max_attempts=max_attempts, unique_key=unique_key, partition=partition,
                                      conn=conn)
        return ids[0]

    async def enqueue_many(self, queue: str, payloads: Iterable[Any], *, priority: int | None = None,
                           run_at: datetime | None = None, delay: float | timedelta | None = None,
                           max_attempts: int | None = None, unique_key: str | None = None,
                           partition: str | None = None,
                           conn: psycopg.AsyncConnection[Any] | None = None) -> list[uuid.UUID]:
        """Enqueue many jobs in one round trip; see :meth:`Client.enqueue_many`."""
        items = list(payloads)
        if not items:
            return []
        with self._wrapped(queue) as call:
            prepared = self.prepare(queue, items, priority=priority, run_at=run_at, delay=delay,
                                    max_attempts=max_attempts, unique_key=unique_key, partition=partition,
                                    headers=call.headers)
            await self._ensure_queue(queue)
            with translated(self.settings.database_url):
                if conn is not None:
                    ids, _rows = await self._write(conn, prepared, dispatch=False)
                else:
                    # One write statement, atomic on its own (see Client.enqueue_many).
                    async with (await self.pool()).connection() as own:
                        handover = self._handover = self._handover or AsyncHandover(self.settings)
                        ids, rows = await self._write(own, prepared, dispatch=handover.active())
                    handover.submit(rows)
            call.ids = ids
        self.plugins.hooks.jobs_enqueued(queue=queue, job_ids=ids)
        return ids

    async def _write(self, conn: psycopg.AsyncConnection[Any], jobs: store.NewJobs,
                     dispatch: bool) -> store.Inserted:
        try:
            return await store.insert_jobs.run_async(conn, jobs, dispatch)
        except psycopg.errors.ForeignKeyViolation:
            raise self._unknown(jobs.queue) from None

    async def _ensure_queue(self, queue: str) -> None:
        if queue in self._queues:
            return
        pool = await self.pool()
        with translated(self.settings.database_url):
            async with pool.connection() as conn:
                self._known(queue, await store.ensure_queue.run_async(conn, queue, self._job_type(queue)))

    async def get_job(self, job_id: uuid.UUID | str) -> Job:
        job_id = parse_job_id(job_id)
        pool = await self.pool()
        with translated(self.settings.database_url):
            async with pool.connection() as conn:
                job = await store.get_job.run_async(conn, job_id)
        if job is None:
            raise JobNotFoundError(f"no job with id {job_id}")
        return job
