"""The store: every PostgreSQL operation pmq performs, and the only caller
of the queries in ``sql/queries.sql``.

The client, the operator's commands, the migrator, the worker, the schema
runner and the test kit call an operation here by name, with typed
arguments; none of them holds SQL or builds a query's parameters. Each
operation is written once, as a generator: it yields the statements it
needs (:class:`Query`, :class:`Count`, :class:`Copy`, :class:`Script`) and
reads what each sends back, so the parameters and the reading of the
results live in one place. The same operation runs on a sync connection
(``store.get_job(conn, job_id)``) or an async one
(``await store.get_job.run_async(aconn, job_id)``): the thin executors at
the bottom of this module differ only in ``await``, as psycopg's own sync
and async connections share their query text and parameters. The
statements and parameter shapes of the hot paths (the worker's round, the
bulk enqueue) are those the measurements in ``docs/performance.md`` were
taken with; running them through an operation adds a generator step per
statement, nothing per job.

Connections stay with the callers (pools, reconnects, transactions that
span a caller's own work); an operation marked :func:`atomic` runs in a
transaction of its own. Rows come back as dicts whatever the connection's
row factory.

The operations are grouped by who calls them, in this order (each group
under a ``# --`` heading): the statement types; enqueueing; reading and
managing jobs; dead letters; health and statistics; the schema; the
migrator; flow control (the migrator's limits and tickets); the worker;
databases (embedded servers and the test kit); and the executors.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import uuid
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, ParamSpec, Protocol, TypeVar

import attrs
import psycopg
from psycopg import sql
from psycopg.rows import DictRow, dict_row

from pmq_core import flow
from pmq_core.models import Job, JobContext, JobStatus
from pmq_core.queries import q

if TYPE_CHECKING:
    from pmq_core.jobtypes import JobType

#: Advisory lock held while migrating the schema ("pmq" + "schema").
SCHEMA_LOCK = 0x706D71_5343
#: Advisory lock of the leading migrator ("pmq" + "lead"), held on its
#: listening connection so that it goes with the connection.
LEADER_LOCK = 0x706D71_4C44
#: Fewest rows written by COPY rather than INSERT: below it INSERT is as fast.
COPY_MIN_ROWS = 64
_NOW = "now"  # COPY accepts the literal 'now' for a timestamptz.

P = ParamSpec("P")
T = TypeVar("T")


# -- statements -------------------------------------------------------------------


@attrs.frozen
class Query:
    """The query ``name`` of ``queries.sql`` with its parameters; sends back
    its rows (none for a statement that returns none). ``identifiers`` fill
    ``{name}`` placeholders with quoted names (databases, which a parameter
    cannot name)."""

    name: str
    params: Mapping[str, Any] | None = None
    identifiers: Mapping[str, str] | None = None

    def text(self) -> str | sql.Composed:
        if self.identifiers is None:
            return q(self.name)
        return sql.SQL(q(self.name)).format(**{k: sql.Identifier(v) for k, v in self.identifiers.items()})


@attrs.frozen
class Count(Query):
    """A query whose result is the number of rows it changed."""


@attrs.frozen
class Copy:
    """The ``COPY … FROM STDIN`` query ``name`` fed with ``rows``; sends back nothing."""

    name: str
    rows: Iterable[Sequence[Any]]


@attrs.frozen
class Script:
    """SQL text of several statements without parameters: a migration."""

    text: str


Statement = Query | Copy | Script
Steps = Generator[Statement, Any, T]


class Operation(Generic[P, T]):
    """One operation, runnable on a sync connection (call it) or an async
    one (:meth:`run_async`); see the module's docstring."""

    def __init__(self, steps: Callable[P, Steps[T]], *, atomic: bool) -> None:
        self._steps = steps
        self._atomic = atomic
        functools.update_wrapper(self, steps)

    def __call__(self, conn: psycopg.Connection[Any], /, *args: P.args, **kwargs: P.kwargs) -> T:
        steps = self._steps(*args, **kwargs)
        if not self._atomic:
            return _drive(conn, steps)
        with conn.transaction():
            return _drive(conn, steps)

    async def run_async(self, conn: psycopg.AsyncConnection[Any], /, *args: P.args, **kwargs: P.kwargs) -> T:
        steps = self._steps(*args, **kwargs)
        if not self._atomic:
            return await _drive_async(conn, steps)
        async with conn.transaction():
            return await _drive_async(conn, steps)


def operation(steps: Callable[P, Steps[T]]) -> Operation[P, T]:
    """An operation whose statements run as they come (each one atomic on
    an autocommit connection, or part of the caller's transaction)."""
    return Operation(steps, atomic=False)


def atomic(steps: Callable[P, Steps[T]]) -> Operation[P, T]:
    """An operation whose statements commit together or not at all."""
    return Operation(steps, atomic=True)


# -- enqueueing ---------------------------------------------------------------------


@attrs.frozen
class NewJobs:
    """The checked rows of one enqueue call (one queue), ready to write."""

    queue: str
    ids: list[uuid.UUID]
    payloads: list[str]
    priority: int | None
    max_attempts: int | None
    run_at: datetime | None
    unique_keys: list[str | None]
    partitions: list[str | None]
    #: The call's headers as JSON text (every job of the call gets the same), or None.
    headers: str | None = None

    def uses_copy(self) -> bool:
        """Whether the rows go in by COPY: many of them, none with a unique
        key (COPY cannot skip a row whose key is taken). COPY stores every
        job ``queued``: only jobs written by INSERT can be handed to Redis
        at enqueue."""
        return len(self.ids) >= COPY_MIN_ROWS and all(k is None for k in self.unique_keys)


class Inserted(NamedTuple):
    """What an enqueue wrote: the ids to return, in the caller's order (a
    live job's id in place of a job skipped for its unique key), and the
    rows inserted by INSERT (none after COPY), for the hand-over to Redis."""

    ids: list[uuid.UUID]
    rows: list[DictRow]


@operation
def insert_jobs(jobs: NewJobs, dispatch: bool) -> Steps[Inserted]:
    """Write the jobs in one statement (COPY for a large batch without
    unique keys). With ``dispatch``, due jobs in an active queue are stored
    as handed to Redis: the caller pushes their messages after the commit.
    A job whose unique key a live job holds is skipped, and that job's id
    returned in its place."""
    if jobs.uses_copy():
        yield Copy("copy_jobs", ((job_id, jobs.queue, jobs.priority, payload, jobs.max_attempts, jobs.run_at or _NOW,
                                  partition, jobs.headers)
                                 for job_id, payload, partition in zip(jobs.ids, jobs.payloads, jobs.partitions,
                                                                       strict=True)))
        return Inserted(jobs.ids, [])
    if len(jobs.ids) == 1:
        rows = yield Query("insert_job", {
            "id": jobs.ids[0], "queue": jobs.queue, "priority": jobs.priority, "payload": jobs.payloads[0],
            "max_attempts": jobs.max_attempts, "run_at": jobs.run_at, "unique_key": jobs.unique_keys[0],
            "partition": jobs.partitions[0], "headers": jobs.headers, "dispatch": dispatch})
    else:
        n = len(jobs.ids)
        rows = yield Query("insert_jobs", {
            "ids": jobs.ids, "queues": [jobs.queue] * n, "priorities": [jobs.priority] * n,
            "payloads": jobs.payloads, "max_attempts": [jobs.max_attempts] * n,
            "run_ats": [jobs.run_at] * n, "unique_keys": jobs.unique_keys, "partitions": jobs.partitions,
            "headers": jobs.headers,
            "dispatch": dispatch})
    if len(rows) == len(jobs.ids):
        return Inserted(jobs.ids, rows)
    live = yield Query("live_jobs_by_unique_key", {"queue": jobs.queue, "keys": [k for k in jobs.unique_keys if k]})
    inserted = {row["id"] for row in rows}
    by_key = {row["unique_key"]: row["id"] for row in live}
    return Inserted([i if i in inserted else by_key.get(k, i) for i, k in zip(jobs.ids, jobs.unique_keys, strict=True)],
                    rows)


@operation
def ensure_queue(name: str, job_type: JobType | None) -> Steps[set[str]]:
    """The queues known to exist once this returns: a job type's queue is
    created or given the job type's defaults (pausing is left alone);
    without a job type, nothing is written and every queue's name is read,
    for the caller to check ``name`` among them."""
    if job_type is not None:
        yield from _upsert_queues([job_type])
        return {name}
    return (yield from _queue_names())


@atomic
def upsert_queues(job_types: Iterable[JobType]) -> Steps[None]:
    """Create each job type's queue, or give it the job type's defaults."""
    yield from _upsert_queues(job_types)


def _rows(name: str, params: Mapping[str, Any] | None = None) -> Steps[list[DictRow]]:
    """The rows of the query ``name``."""
    rows: list[DictRow] = yield Query(name, params)
    return rows


def _upsert_queues(job_types: Iterable[JobType]) -> Steps[None]:
    for job_type in job_types:
        yield Query("upsert_queue", {"name": job_type.name, "priority": job_type.priority,
                                     "max_attempts": job_type.retry.max_attempts})
        declared = flow.declared_rows(job_type.name, job_type.limits)
        yield Query("forget_declared_limits", {"queue": job_type.name, "scopes": [r.scope for r in declared]})
        if declared:
            yield from _put_limits(declared)


def _queue_names() -> Steps[set[str]]:
    rows = yield Query("queue_defaults")
    return {row["name"] for row in rows}


# -- reading and managing jobs --------------------------------------------------------


@operation
def get_job(job_id: uuid.UUID) -> Steps[Job | None]:
    rows = yield Query("get_job", {"id": job_id})
    return Job.from_row(rows[0]) if rows else None


@operation
def job_logs(job_id: uuid.UUID) -> Steps[list[DictRow]]:
    """The job's attempts, oldest first (``job_logs`` rows, ``duration`` in seconds)."""
    return (yield from _rows("job_logs", {"id": job_id}))


@operation
def cancel_job(job_id: uuid.UUID) -> Steps[tuple[JobStatus, str] | None]:
    """Cancel the job if it has not finished; the status it had and its
    queue, or None when nothing was cancelled (finished, or no such job)."""
    rows = yield Query("cancel_job", {"id": job_id})
    return (JobStatus(rows[0]["previous_status"]), rows[0]["queue_name"]) if rows else None


class JobsQuery(NamedTuple):
    """What an operator's listing of jobs asks for (see :func:`job_page`)."""

    statuses: Sequence[JobStatus]
    queue: str | None = None
    error: str | None = None  # text the last error holds, any case
    since: datetime | None = None  # changed at or after
    until: datetime | None = None  # changed at or before


@operation
def job_page(query: JobsQuery, before: tuple[datetime, uuid.UUID] | None, limit: int) -> Steps[list[Job]]:
    """Up to ``limit`` jobs matching ``query``, newest change first, that
    come after ``before`` (the ``(updated_at, id)`` of the previous page's
    last job) in that order."""
    params = {"statuses": [s.value for s in query.statuses], "error": query.error, "since": query.since,
              "until": query.until, "limit": limit, "before_at": before[0] if before else None,
              "before_id": before[1] if before else None}
    if query.queue is None:
        rows = yield Query("job_page", params)
    else:
        rows = yield Query("queue_job_page", {**params, "queue": query.queue})
    return [Job.from_row(row) for row in rows]


@operation
def run_now(job_id: uuid.UUID) -> Steps[bool]:
    """Make a job waiting for a later time due now; False when it is not
    waiting for one (running, finished, already due, or no such job)."""
    rows = yield Query("run_now", {"id": job_id})
    return bool(rows)


@operation
def running_jobs(limit: int) -> Steps[list[DictRow]]:
    """Jobs held by workers (``worker_id`` says whose), oldest start first."""
    return (yield from _rows("running_jobs", {"limit": limit}))


@operation
def queue_names() -> Steps[set[str]]:
    return (yield from _queue_names())


@operation
def queue_overview() -> Steps[list[DictRow]]:
    """Each queue with its defaults and its jobs counted by state."""
    return (yield from _rows("queue_overview"))


@atomic
def set_queue_active(name: str, active: bool) -> Steps[bool]:
    """Pause or resume a queue; False when there is no such queue. Pausing
    takes back the jobs already handed to Redis (their messages there then
    claim nothing)."""
    found = yield Query("set_queue_active", {"name": name, "active": active})
    if found and not active:
        yield Query("requeue_paused", {"name": name})
    return bool(found)


# -- dead letters -----------------------------------------------------------------------


@operation
def list_dead(queue: str | None, limit: int) -> Steps[list[DictRow]]:
    return (yield from _rows("list_dead", {"queue": queue, "limit": limit}))


@operation
def replay_dead(ids: list[uuid.UUID] | None, queue: str | None) -> Steps[list[DictRow]]:
    """Queue dead jobs again, attempts reset: the given ids, a queue's, or
    all of them; the rows (``id``, ``queue_name``) of those replayed."""
    return (yield from _rows("replay_dead", {"ids": ids, "queue": queue}))


@operation
def purge_dead(ids: list[uuid.UUID] | None, queue: str | None) -> Steps[list[DictRow]]:
    """Delete dead jobs and their logs; selection and result as in :func:`replay_dead`."""
    return (yield from _rows("purge_dead", {"ids": ids, "queue": queue}))


@operation
def dead_counts() -> Steps[dict[str, int]]:
    """Dead jobs per queue (queues without any left out)."""
    rows = yield Query("dead_counts")
    return {row["queue_name"]: row["dead"] for row in rows}


@operation
def dead_ids(queue: str) -> Steps[list[str]]:
    """A queue's dead jobs, newest first: the order of its dead-letter list."""
    rows = yield Query("dead_ids", {"queue": queue})
    return [str(row["id"]) for row in rows]


# -- health and statistics ----------------------------------------------------------------


class HealthFacts(NamedTuple):
    """What `pmq health` reads from PostgreSQL once the schema is current."""

    queues: list[DictRow]  # queue_overview rows
    oldest: dict[str, float]  # queue -> age in seconds of its oldest due job
    workers: list[DictRow]  # live_workers rows
    migrator: DictRow | None  # the leading migrator, if any holds the lock


@operation
def health_facts(live_after: float) -> Steps[HealthFacts]:
    """The queues, their oldest due job, the workers that beat within
    ``live_after`` seconds, and the leading migrator."""
    queues = yield Query("queue_overview")
    oldest = yield Query("oldest_waiting")
    workers = yield from _live_workers(live_after)
    leader = yield Query("migrator_leader", {"key": LEADER_LOCK})
    return HealthFacts(queues, {r["queue_name"]: r["age"] for r in oldest}, workers, leader[0] if leader else None)


class Activity(NamedTuple):
    """Throughput and timings over a window, for `pmq stats`."""

    attempts: DictRow  # recent_activity's row: counts by outcome, avg/p50/p95 seconds
    created: int
    workers: list[DictRow]


@operation
def activity(minutes: int, live_after: float) -> Steps[Activity]:
    """Attempts and enqueues of the last ``minutes``, and the live workers."""
    attempts = yield Query("recent_activity", {"minutes": minutes})
    created = yield Query("recent_created", {"minutes": minutes})
    workers = yield from _live_workers(live_after)
    return Activity(attempts[0], created[0]["created"] or 0, workers)


@operation
def throughput(minutes: int) -> Steps[list[DictRow]]:
    """Attempts ended per minute over the last ``minutes`` (``minute``,
    ``succeeded``, ``retried``, ``failed``), oldest minute first, zeros included."""
    return (yield from _rows("throughput", {"minutes": minutes}))


@operation
def cron_ticks() -> Steps[dict[str, datetime]]:
    """The last tick enqueued per cron job type (queue name)."""
    rows = yield Query("cron_ticks")
    return {row["queue_name"]: row["last_tick"] for row in rows}


def _live_workers(after: float) -> Steps[list[DictRow]]:
    return (yield from _rows("live_workers", {"after": after}))


# -- the schema ---------------------------------------------------------------------------


@contextlib.contextmanager
def schema_lock(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """Hold the schema's advisory lock: two sessions upgrading at once wait
    for each other instead of colliding. ``conn`` must be in autocommit."""
    _lock_schema(conn)
    try:
        yield
    finally:
        _unlock_schema(conn)


@operation
def _lock_schema() -> Steps[None]:
    yield Query("lock_schema", {"key": SCHEMA_LOCK})


@operation
def _unlock_schema() -> Steps[None]:
    yield Query("unlock_schema", {"key": SCHEMA_LOCK})


@operation
def create_migrations_table() -> Steps[None]:
    yield Query("create_migrations_table")


@operation
def applied_migrations() -> Steps[set[tuple[str, int]]]:
    """The (component, version) of each migration applied; none before the
    first upgrade (no table yet)."""
    installed = yield Query("schema_installed")
    if not installed[0]["installed"]:
        return set()
    rows = yield Query("applied_migrations")
    return {(row["component"], row["version"]) for row in rows}


@atomic
def apply_migration(component: str, version: int, name: str, script: str) -> Steps[None]:
    """Run a migration's script and record it, in one transaction."""
    yield Script(script)
    yield Query("record_migration", {"component": component, "version": version, "name": name})


# -- the migrator ---------------------------------------------------------------------------


@operation
def try_lead() -> Steps[bool]:
    """Take the leader's lock if no one holds it (on the connection that
    will listen: the lock goes with it)."""
    rows = yield Query("try_lead", {"key": LEADER_LOCK})
    return bool(rows[0]["ok"])


@operation
def listen_for_jobs() -> Steps[None]:
    """Be told (:func:`wait_for_jobs`) when waiting jobs are inserted."""
    yield Query("listen_jobs")


def wait_for_jobs(conn: psycopg.Connection[Any], timeout: float) -> None:
    """Return at the first notification of new jobs, or after ``timeout`` seconds."""
    for _ in conn.notifies(timeout=timeout, stop_after=1):
        pass


@operation
def migrator_beat(backend_pid: int) -> Steps[None]:
    """Record that the leader (its lock connection's ``backend_pid``) is
    alive and got round."""
    yield Query("migrator_beat", {"backend_pid": backend_pid, "hostname": socket.gethostname(),
                                  "pid": os.getpid()})


@operation
def active_queues() -> Steps[list[str]]:
    rows = yield Query("active_queues")
    return [row["name"] for row in rows]


def _budget(budgets: Mapping[str, int]) -> dict[str, Any]:
    return {"queues": list(budgets), "limits": list(budgets.values())}


@operation
def migrate_due(budgets: Mapping[str, int]) -> Steps[list[DictRow]]:
    """Mark as handed to Redis the due jobs of each queue, at most its
    budget, in priority order; their rows, for the messages."""
    return (yield from _rows("migrate_due", _budget(budgets)))


@operation
def due_job_ids(budgets: Mapping[str, int]) -> Steps[list[uuid.UUID]]:
    """The jobs :func:`migrate_due` would take, by id only."""
    rows = yield Query("due_job_ids", _budget(budgets))
    return [row["id"] for row in rows]


@operation
def migrate_one(job_id: uuid.UUID) -> Steps[list[DictRow]]:
    """:func:`migrate_due` for one job: its row, if it was still due."""
    return (yield from _rows("migrate_one", {"id": job_id}))


@operation
def bury_job(job_id: uuid.UUID, worker_id: uuid.UUID | None, error: str) -> Steps[list[DictRow]]:
    """End dead a job that pmq could not move, claim or record; a running
    job only if ``worker_id`` holds it. Its row (``id``, ``queue_name``),
    if it was buried."""
    return (yield from _rows("bury_job", {"id": job_id, "worker_id": worker_id, "error": error}))


@operation
def next_due_at() -> Steps[datetime | None]:
    """When the next scheduled job is due (None: none is)."""
    rows = yield Query("next_due_at")
    return rows[0]["next_due_at"] if rows else None


@operation
def stale_migrated(after: float, limit: int) -> Steps[list[DictRow]]:
    """Jobs handed to Redis over ``after`` seconds ago and not claimed since."""
    return (yield from _rows("stale_migrated", {"after": after, "limit": limit}))


@operation
def requeue_migrated(ids: list[uuid.UUID]) -> Steps[int]:
    """Queue again jobs still waiting in Redis whose message is gone; how many."""
    rows = yield Query("requeue_migrated", {"ids": ids})
    return len(rows)


@atomic
def rescue(after: float, max_rescues: int) -> Steps[list[DictRow]]:
    """Take back the jobs of workers silent for ``after`` seconds (see the
    ``rescue_jobs`` query) and forget workers silent for twice as long.
    The rows of the jobs rescued; those that reached ``max_rescues`` are
    ``failed``."""
    rows = yield from _rows("rescue_jobs", {
        "after": after, "max_rescues": max_rescues,
        "message": f"worker lost: no heartbeat for {after:g}s; the attempt does not count",
        "dead_message": f"its worker died %s times while holding it (no heartbeat for {after:g}s)",
    })
    yield Query("forget_dead_workers", {"after": after * 2})
    return rows


@operation
def claim_cron_tick(queue: str, tick: datetime) -> Steps[bool]:
    """Whether this caller is the first to take the queue's cron ``tick``
    (call it in the transaction that enqueues the tick's job)."""
    rows = yield Query("claim_cron_tick", {"queue": queue, "tick": tick})
    return bool(rows)


@operation
def prune(plan: Sequence[tuple[JobStatus, int]], logs_days: int, batch: int) -> Steps[dict[str, int]]:
    """Delete jobs in each status older than its days, then job logs older
    than ``logs_days``, ``batch`` rows per statement so that no lock is held
    for long; the rows deleted, by status and ``job_logs``."""
    removed: dict[str, int] = {}
    for status, days in plan:
        removed.setdefault(status.value, 0)
        while True:
            count = yield Count("prune_jobs", {"status": status.value, "days": days, "batch": batch})
            removed[status.value] += count
            if count < batch:
                break
    removed["job_logs"] = 0
    while True:
        count = yield Count("prune_logs", {"days": logs_days, "batch": batch})
        removed["job_logs"] += count
        if count < batch:
            break
    return removed


# -- flow control -------------------------------------------------------------------


@operation
def limit_rows(queues: Sequence[str] | None = None) -> Steps[list[flow.LimitRow]]:
    """The stored limits (of ``queues``, or all), declared and operators'."""
    rows = yield Query("limit_rows", {"queues": list(queues) if queues is not None else None})
    return [flow.LimitRow.from_row(row) for row in rows]


def _put_limits(rows: Sequence[flow.LimitRow]) -> Steps[None]:
    yield Query("put_limits", {
        "queues": [r.queue for r in rows], "scopes": [r.scope for r in rows],
        "partitions": [r.partition for r in rows], "origins": [r.origin for r in rows],
        "concurrencies": [r.limit.concurrency for r in rows],
        "rates": [r.limit.rate.count if r.limit.rate else None for r in rows],
        "periods": [r.limit.rate.period if r.limit.rate else None for r in rows]})


@operation
def put_limits(rows: Sequence[flow.LimitRow]) -> Steps[None]:
    """Store limits, each replacing the row of its scope and origin."""
    yield from _put_limits(rows)


@operation
def delete_limits(queue: str, scope: str | None, partition: str, origin: str | None) -> Steps[list[DictRow]]:
    """Delete a queue's limits (of one scope and partition, or all; of one
    origin, or both); the rows deleted."""
    return (yield from _rows("delete_limits", {"queue": queue, "scope": scope, "partition": partition,
                                               "origin": origin}))


@operation
def waiting_partitions(queues: Sequence[str], limit: int) -> Steps[dict[str, list[str]]]:
    """The partitions with waiting jobs of each queue (at most ``limit``
    each; the default partition is not listed)."""
    rows = yield Query("waiting_partitions", {"queues": list(queues), "limit": limit})
    found: dict[str, list[str]] = {}
    for row in rows:
        found.setdefault(row["queue_name"], []).append(row["partition_key"])
    return found


@operation
def in_flight(queues: Sequence[str]) -> Steps[dict[tuple[str, str | None], int]]:
    """Jobs handed to Redis or running, per (queue, partition)."""
    rows = yield Query("in_flight", {"queues": list(queues)})
    return {(row["queue_name"], row["partition_key"]): row["n"] for row in rows}


@operation
def close_tickets() -> Steps[None]:
    """End the rate tickets of jobs no longer waiting in Redis."""
    yield Query("close_tickets")


class TicketUsage(NamedTuple):
    """A rate's tickets that count now: how many, how many are still open
    (their job not claimed yet), and when the first ended one stops counting."""

    counted: int
    open: int
    frees_at: datetime | None


@operation
def ticket_usage(scopes: Sequence[tuple[str, str]]) -> Steps[dict[tuple[str, str], TicketUsage]]:
    """The tickets counting against each (queue, ticket scope)'s rate."""
    rows = yield Query("ticket_usage", {"queues": [q for q, _ in scopes], "scopes": [k for _, k in scopes]})
    return {(row["queue_name"], row["scope_key"]): TicketUsage(row["n"], row["open"], row["frees_at"])
            for row in rows}


def _issue_tickets(tickets: Sequence[tuple[str, str, uuid.UUID, int]]) -> Steps[None]:
    """Record rate tickets: (queue, scope, job id, period)."""
    yield Query("issue_tickets", {"queues": [t[0] for t in tickets], "scopes": [t[1] for t in tickets],
                                  "job_ids": [t[2] for t in tickets], "periods": [t[3] for t in tickets]})


@operation
def prune_tickets() -> Steps[None]:
    """Delete tickets that no longer count against any rate."""
    yield Query("prune_tickets")


@operation
def fair_due_ids(picks: Sequence[tuple[str, str | None, int]],
                 budgets: Mapping[str, int]) -> Steps[list[DictRow]]:
    """The due jobs to hand over from flow-controlled queues: at most the
    limit of each (queue, partition) of ``picks``, at most the budget of
    each queue, taken in turns across partitions (id, queue, partition)."""
    return (yield from _rows("fair_due_ids", {
        "queues": [p[0] for p in picks], "partitions": [p[1] for p in picks], "limits": [p[2] for p in picks],
        "budget_queues": list(budgets), "budgets": list(budgets.values())}))


@atomic
def migrate_chosen(ids: Sequence[uuid.UUID], limits: Mapping[str, flow.QueueLimits]) -> Steps[list[DictRow]]:
    """Hand over the chosen jobs still waiting, marked limited, with the
    rate tickets they take under ``limits``, in one transaction; their rows."""
    rows = yield from _rows("migrate_chosen", {"ids": list(ids)})
    tickets = flow.tickets_for(limits, rows)
    if tickets:
        yield from _issue_tickets(tickets)
    return rows


@operation
def held_jobs(blocked: Sequence[tuple[str, str | None, bool]]) -> Steps[dict[str, int]]:
    """Due jobs held back per queue, given the (queue, partition, whole
    queue) keys a limit blocks."""
    rows = yield Query("held_jobs", {"queues": [b[0] for b in blocked], "partitions": [b[1] for b in blocked],
                                     "whole": [b[2] for b in blocked]})
    return {row["queue_name"]: row["n"] for row in rows}


# -- the worker ---------------------------------------------------------------------


@operation
def start_session() -> Steps[None]:
    """Set up a worker's connection (its statements planned once)."""
    yield Query("worker_session")


class Outcome(Protocol):
    """How an attempt ended, as the worker hands it to :func:`claim_and_record`."""

    @property
    def ctx(self) -> JobContext: ...  # its id, attempt and started_at
    @property
    def status(self) -> str: ...  # the job's new state
    @property
    def log_status(self) -> str: ...  # the job_logs row's status
    @property
    def run_at(self) -> datetime | None: ...  # a retry's due time
    @property
    def error(self) -> str | None: ...
    @property
    def finished_at(self) -> datetime: ...


class Round(NamedTuple):
    """What a worker's round did: the rows of the jobs it claimed (any
    order), and the ids of the outcomes recorded (an outcome is not when its
    job is no longer this attempt's: cancelled, or rescued)."""

    claimed: list[DictRow]
    recorded: set[uuid.UUID]


def array_literal(values: Iterable[Any]) -> str:
    """``values`` as the text of a PostgreSQL array (None as NULL, every
    other element quoted and escaped), for a parameter the statement casts
    (``%(ids)s::uuid[]``). A worker's round sends twelve arrays; psycopg's
    generic list dumper inspects and dumps each element in Python, about
    twice the cost of this (docs/performance.md)."""
    return "{" + ",".join("NULL" if v is None else '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'
                          for v in values) + "}"


@operation
def claim_and_record(claims: Sequence[tuple[uuid.UUID, int]], outcomes: Sequence[Outcome],
                     worker_id: uuid.UUID, queues: list[str],
                     starts: Sequence[tuple[uuid.UUID, datetime]] = ()) -> Steps[Round]:
    """A worker's round in one statement and one commit: record
    ``outcomes``, claim the jobs named by ``claims`` (popped messages: job
    id and attempt) in the served ``queues``, and end the rate tickets of
    the flow-controlled jobs in ``starts`` at their handler's start."""
    rows = yield Query("worker_round", {
        "start_ids": array_literal(s[0] for s in starts), "start_ats": array_literal(s[1] for s in starts),
        "ids": array_literal(o.ctx.id for o in outcomes), "attempts": array_literal(o.ctx.attempt for o in outcomes),
        "statuses": array_literal(o.status for o in outcomes),
        "log_statuses": array_literal(o.log_status for o in outcomes),
        "run_ats": array_literal(o.run_at for o in outcomes), "errors": array_literal(o.error for o in outcomes),
        "started": array_literal(o.ctx.started_at for o in outcomes),
        "finished": array_literal(o.finished_at for o in outcomes),
        "claim_ids": array_literal(c[0] for c in claims), "claim_attempts": array_literal(c[1] for c in claims),
        "worker_id": worker_id, "queues": array_literal(queues)})
    claimed, recorded = [], set()
    for row in rows:
        if row["kind"] == "claimed":
            claimed.append(row)
        elif row["kind"] == "finished":
            recorded.add(row["id"])
    return Round(claimed, recorded)


@operation
def mark_suspect_started(job_id: uuid.UUID, attempt: int, worker_id: uuid.UUID) -> Steps[bool]:
    """Record that the worker starts a suspect; False when the job is no
    longer this worker's attempt (cancelled, or rescued meanwhile)."""
    rows = yield Query("mark_suspect_started", {"id": job_id, "attempt": attempt, "worker_id": worker_id})
    return bool(rows)


@operation
def jobs_running_under(worker_id: uuid.UUID) -> Steps[list[uuid.UUID]]:
    rows = yield Query("jobs_running_under", {"worker_id": worker_id})
    return [row["id"] for row in rows]


@operation
def release_jobs(ids: list[uuid.UUID], worker_id: uuid.UUID, stuck: Sequence[uuid.UUID] = (),
                 delay: float = 0.0) -> Steps[None]:
    """Give back jobs this worker claimed and will not finish, the attempt
    not counted; those in ``stuck`` (their code still runs) are due only
    ``delay`` seconds later."""
    yield Query("release_jobs", {"ids": ids, "worker_id": worker_id, "stuck": list(stuck), "delay": delay})


@operation
def register_worker(worker_id: uuid.UUID, queues: list[str], concurrency: int) -> Steps[None]:
    yield Query("register_worker", {"id": worker_id, "hostname": socket.gethostname(), "pid": os.getpid(),
                                    "queues": queues, "concurrency": concurrency})


@operation
def heartbeat(worker_id: uuid.UUID, busy: int, claimed_ahead: int, redis_error_since: datetime | None,
              redis_error: str | None) -> Steps[bool]:
    """Prove the worker alive and report its slots and its link to Redis;
    False when it is not registered (forgotten as dead): register again."""
    rows = yield Query("heartbeat", {"id": worker_id, "busy": busy, "claimed_ahead": claimed_ahead,
                                     "redis_error_since": redis_error_since, "redis_error": redis_error})
    return bool(rows)


@operation
def unregister_worker(worker_id: uuid.UUID) -> Steps[None]:
    yield Query("unregister_worker", {"id": worker_id})


# -- databases (embedded servers and the test kit) ----------------------------------------


@operation
def data_directory() -> Steps[str]:
    """The server's data directory: tells an embedded server from another
    one on the same port."""
    rows = yield Query("data_directory")
    return str(rows[0]["data_directory"])


@operation
def database_exists(name: str) -> Steps[bool]:
    rows = yield Query("database_exists", {"name": name})
    return bool(rows)


@operation
def create_database(name: str, template: str | None = None) -> Steps[None]:
    """Create database ``name``, a copy of ``template`` if given (in autocommit)."""
    if template is None:
        yield Query("create_database", identifiers={"name": name})
    else:
        yield Query("create_database_from", identifiers={"name": name, "template": template})


@operation
def drop_database(name: str) -> Steps[None]:
    """Drop database ``name`` if it exists, closing its connections."""
    yield Query("drop_database", identifiers={"name": name})


# -- the executors ---------------------------------------------------------------------------


def _drive(conn: psycopg.Connection[Any], steps: Steps[T]) -> T:
    sent: Any = None
    try:
        while True:
            sent = _run(conn, steps.send(sent))
    except StopIteration as done:
        result: T = done.value
        return result


def _run(conn: psycopg.Connection[Any], statement: Statement) -> Any:
    if isinstance(statement, Query):
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(statement.text(), statement.params)
            if isinstance(statement, Count):
                return cur.rowcount
            return cur.fetchall() if cur.description else []
    if isinstance(statement, Copy):
        with conn.cursor() as cur, cur.copy(q(statement.name)) as copy:
            for row in statement.rows:
                copy.write_row(row)
        return None
    conn.execute(statement.text.encode())  # bytes: sent as is, several statements at once
    return None


async def _drive_async(conn: psycopg.AsyncConnection[Any], steps: Steps[T]) -> T:
    sent: Any = None
    try:
        while True:
            sent = await _run_async(conn, steps.send(sent))
    except StopIteration as done:
        result: T = done.value
        return result


async def _run_async(conn: psycopg.AsyncConnection[Any], statement: Statement) -> Any:
    if isinstance(statement, Query):
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(statement.text(), statement.params)
            if isinstance(statement, Count):
                return cur.rowcount
            return await cur.fetchall() if cur.description else []
    if isinstance(statement, Copy):
        async with conn.cursor() as cur, cur.copy(q(statement.name)) as copy:
            for row in statement.rows:
                await copy.write_row(row)
        return None
    await conn.execute(statement.text.encode())
    return None

