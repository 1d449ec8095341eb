"""Operating pmq: schema upgrades, queues, jobs, dead letters, health and
statistics. The ``pmq`` command is a thin layer over this module, and so can
an operator's own tooling be."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import attrs
import psycopg
import redis
from psycopg.rows import DictRow

from pmq_core import dispatch, flow, health, schema, store
from pmq_core.config import Settings
from pmq_core.db import PG_DOWN, REDIS_DOWN, pg_connect, reason, redis_client, resolve_servers, translated
from pmq_core.errors import DatabaseUnavailableError, JobNotFoundError, PageCursorError, UnknownQueueError, shown
from pmq_core.keys import Keys
from pmq_core.migrator import DEAD_LETTERS_EVERY
from pmq_core.models import Job, JobStatus, parse_job_id
from pmq_core.plugins import Plugins
from pmq_core.redaction import redact_url


class Unchanged:
    """The type of :data:`UNCHANGED`."""


#: A limit's value that :meth:`Admin.set_limit` leaves as it is.
UNCHANGED = Unchanged()

#: :func:`store.replay_dead` or :func:`store.purge_dead`.
DeadAction = Callable[[psycopg.Connection[Any], list[uuid.UUID] | None, str | None], list[DictRow]]

#: Seconds an operator's command waits for Redis to connect (TLS handshake
#: included) or to answer: a rediss:// URL pointing at a Redis without TLS
#: would otherwise wait for the handshake forever.
REDIS_TIMEOUT = 5.0
#: Most jobs one page of :meth:`Admin.job_page` holds.
MAX_PAGE = 500


@attrs.frozen
class JobPage:
    """One page of an operator's listing of jobs, newest change first.
    ``next`` is the cursor of the page after it (pass it back as
    ``after``), None on the last page."""

    jobs: list[Job]
    next: str | None


def _cursor(job: Job) -> str:
    return f"{job.updated_at.isoformat()}~{job.id}"


def _parse_cursor(text: str) -> tuple[datetime, uuid.UUID]:
    try:
        at, _, job_id = text.partition("~")
        when = datetime.fromisoformat(at)
        if when.tzinfo is None:
            raise ValueError("no time zone")
        return when, uuid.UUID(job_id)
    except ValueError:
        raise PageCursorError(f"{shown(text)} is not a page cursor pmq gave out; start from the first page") from None


class Admin:
    """Operator actions on one pmq deployment.

    An action changes PostgreSQL first, the record of truth; its Redis part
    (removing messages, the status mirror, telling a worker) comes after the
    commit. When Redis cannot be reached for that part, the action still
    succeeded: it does not raise, and adds to :attr:`deferred` a sentence
    saying what was left undone in Redis and what makes up for it.
    """

    def __init__(self, settings: Settings, plugins: Plugins | None = None) -> None:
        self.settings = resolve_servers(settings)
        #: The plugins whose job types :meth:`job_types` and :meth:`cron`
        #: describe; by default those the settings select.
        self.plugins = plugins if plugins is not None else Plugins(self.settings.plugins)
        assert self.settings.database_url and self.settings.redis_url
        self.keys = Keys(self.settings.key_prefix, status_hashes=self.settings.status_mirror)
        self._conn: psycopg.Connection[DictRow] | None = None
        self._redis: redis.Redis | None = None
        #: What actions left undone in Redis (unreachable), and who makes up for it.
        self.deferred: list[str] = []

    @property
    def conn(self) -> psycopg.Connection[DictRow]:
        if self._conn is None or self._conn.closed:
            assert self.settings.database_url
            self._conn = pg_connect(self.settings.database_url, pooled=self.settings.database_pooled)
        return self._conn

    @property
    def redis(self) -> redis.Redis:
        if self._redis is None:
            assert self.settings.redis_url
            self._redis = redis_client(self.settings.redis_url, timeout=REDIS_TIMEOUT, mode=self.settings.redis_mode)
        return self._redis

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._redis is not None:
            self._redis.close()

    def __enter__(self) -> Admin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _translated(self) -> Any:
        return translated(self.settings.database_url, self.settings.redis_url)

    def _redis_part(self, step: Callable[[], object], undone: str) -> None:
        """Run ``step`` (Redis work after a committed change); if Redis is
        unreachable, record ``undone`` in :attr:`deferred` instead of failing."""
        try:
            step()
        except REDIS_DOWN as exc:
            brief = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self.deferred.append(f"Redis is unreachable ({brief}): {undone}")

    # -- schema and job types ----------------------------------------------------

    def upgrade(self, plugins: Plugins | None = None) -> list[schema.Migration]:
        """Apply pending migrations, the plugins' included."""
        extra = plugins.hooks.register_migrations() if plugins is not None else []
        assert self.settings.session_database_url
        with self._translated(), pg_connect(self.settings.session_database_url) as conn:
            return schema.upgrade(conn, extra)  # its lock needs a session: the direct URL if the other is pooled

    def register_job_types(self, plugins: Plugins) -> list[str]:
        """Make each loaded job type's queue exist, with its defaults."""
        job_types = list(plugins.load().job_types.values())
        with self._translated():
            store.upsert_queues(self.conn, job_types)
        return [job_type.name for job_type in job_types]

    # -- queues ------------------------------------------------------------------

    def queue_names(self) -> set[str]:
        """Every queue's name (PostgreSQL only)."""
        with self._translated():
            return store.queue_names(self.conn)

    def queues(self) -> list[dict[str, Any]]:
        """Every queue with its counts. ``held`` are due jobs that a limit
        holds back (counted apart from ``waiting``): as the leading migrator
        last saw them, nothing when no migrator leads."""
        with self._translated():
            rows = store.queue_overview(self.conn)
            names = [row["name"] for row in rows]
            depths = dispatch.band_depths(self.redis, self.keys, names)
            held = self._held()
        return [{**row, "waiting": row["waiting"] - held.get(row["name"], 0), "held": held.get(row["name"], 0),
                 "bands": depths[row["name"]]} for row in rows]

    def _held(self) -> dict[str, int]:
        """Due jobs held back by a limit, per queue, from what the leading
        migrator published (a hostile or stale entry counts nothing)."""
        blocked: list[tuple[str, str | None, bool]] = []
        for raw_queue, raw_keys in self.redis.hgetall(self.keys.held).items():
            queue = raw_queue.decode("utf-8", "replace") if isinstance(raw_queue, bytes) else raw_queue
            try:
                keys = json.loads(raw_keys)
            except ValueError:
                continue
            if keys is None:
                blocked.append((queue, None, True))
            elif isinstance(keys, list):
                blocked += [(queue, key, False) for key in keys if key is None or isinstance(key, str)]
        return store.held_jobs(self.conn, blocked) if blocked else {}

    # -- flow control ------------------------------------------------------------

    def limits(self, queue: str | None = None) -> list[flow.LimitRow]:
        """The stored limits (of one queue, or all): declared ones and
        operators', each with its origin; :func:`flow.effective` tells which
        are in force."""
        if queue is not None:
            self._known_queue(queue)
        with self._translated():
            return store.limit_rows(self.conn, [queue] if queue is not None else None)

    def set_limit(self, queue: str, *, partition: str | None = None, each_partition: bool = False,
                  concurrency: int | None | Unchanged = UNCHANGED,
                  rate: flow.Rate | str | None | Unchanged = UNCHANGED) -> flow.LimitRow:
        """Set an operator's limit on ``queue`` (the whole queue; or
        ``each_partition``; or one ``partition``), starting from the limit in
        force for that scope: a value left unchanged keeps its current
        setting, None lifts it. Every migrator applies it at its next pass."""
        if partition is not None and each_partition:
            raise ValueError("give partition or each_partition, not both")
        scope = flow.PARTITION if partition is not None else flow.EACH if each_partition else flow.QUEUE
        key = flow.check_partition(partition) or ""
        current = flow.effective(self.limits(queue)).get((queue, scope, key))
        base = current.limit if current else flow.Limit()
        limit = flow.Limit(concurrency=base.concurrency if isinstance(concurrency, Unchanged) else concurrency,
                           rate=base.rate if isinstance(rate, Unchanged) else rate)
        row = flow.LimitRow(queue=queue, scope=scope, partition=key, origin=flow.OPERATOR, limit=limit)
        with self._translated():
            store.put_limits(self.conn, [row])
        return row

    def unlimit(self, queue: str, *, partition: str | None = None, each_partition: bool = False,
                keep_declared: bool = False) -> list[flow.LimitRow]:
        """Remove operators' limits on ``queue`` (of one scope, or all).
        Unless ``keep_declared``, the job type's declared limits are lifted
        too (an operator's row without limits stands in for each); returns
        the limits that were in force before."""
        scope = flow.PARTITION if partition is not None else flow.EACH if each_partition else None
        key = flow.check_partition(partition) or ""
        rows = [row for row in self.limits(queue) if scope is None or (row.scope, row.partition) == (scope, key)]
        with self._translated(), self.conn.transaction():
            store.delete_limits(self.conn, queue, scope, key, flow.OPERATOR)
            if not keep_declared:
                store.put_limits(self.conn, [attrs.evolve(row, origin=flow.OPERATOR, limit=flow.Limit())
                                             for row in rows if row.origin == flow.DECLARED])
        return [row for row in flow.effective(rows).values() if row.limit]

    def _known_queue(self, queue: str) -> None:
        if queue not in self.queue_names():
            raise UnknownQueueError(f"unknown queue {shown(queue)} (see `pmq queues list`)")

    def set_active(self, name: str, active: bool) -> None:
        """Pause (False) or resume (True) a queue. Pausing also takes back the
        jobs already handed to Redis, and tells the workers to give back the
        jobs they claimed ahead of a free slot, so nothing more of it starts
        (only jobs whose handler already runs go on). Redis being
        unreachable, the messages left there claim nothing, but workers are
        not told, and jobs they claimed ahead still start."""
        with self._translated():
            if not store.set_queue_active(self.conn, name, active):
                raise UnknownQueueError(f"unknown queue {shown(name)}")
        if not active:

            def stop_in_redis() -> None:
                self.redis.delete(*self.keys.bands(name))
                self.redis.publish(self.keys.pause_channel, name)

            self._redis_part(stop_in_redis,
                             f"the messages of {shown(name)} already in Redis may not have been removed; they claim "
                             "nothing (the queue is paused and its jobs are back in PostgreSQL), and workers drop "
                             "them as they pop them; workers were not told of the pause, so jobs they had already "
                             "claimed ahead of a free slot still start")

    # -- jobs --------------------------------------------------------------------

    def jobs(self, queue: str | None = None, status: str | None = None, limit: int = 50) -> list[Job]:
        """The most recently changed jobs (of one queue and/or state)."""
        statuses = [JobStatus(status)] if status is not None else list(JobStatus)
        with self._translated():
            return store.job_page(self.conn, store.JobsQuery(statuses, queue), None, limit)

    def job_page(self, *, queue: str | None = None, statuses: Sequence[JobStatus | str] = (),
                 error: str | None = None, since: datetime | None = None, until: datetime | None = None,
                 after: str | None = None, limit: int = 50) -> JobPage:
        """A page of jobs, newest change first: of one queue or all, in
        ``statuses`` (none given: any), whose last error holds ``error``
        (any case), last changed between ``since`` and ``until``. ``after``
        is the ``next`` of the page before. Every page is read from the
        (status, updated_at) index, however deep (docs/dashboard.md gives
        the cost at 1,000,000 jobs)."""
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"a page holds 1 to {MAX_PAGE} jobs, not {limit}")
        for bound in (since, until):
            if bound is not None and bound.tzinfo is None:
                raise ValueError("since and until need a time zone")
        wanted = [JobStatus(s) for s in statuses] or list(JobStatus)
        query = store.JobsQuery(statuses=wanted, queue=queue, error=error or None, since=since, until=until)
        before = _parse_cursor(after) if after else None
        with self._translated():
            jobs = store.job_page(self.conn, query, before, limit + 1)
        more = len(jobs) > limit
        return JobPage(jobs[:limit], _cursor(jobs[limit - 1]) if more else None)

    def job(self, job_id: uuid.UUID | str) -> tuple[Job, list[dict[str, Any]]]:
        """A job and its attempt log."""
        job_id = parse_job_id(job_id)
        with self._translated():
            job = store.get_job(self.conn, job_id)
            if job is None:
                raise JobNotFoundError(f"no job with id {job_id}")
            logs = store.job_logs(self.conn, job_id)
        return job, logs

    def cancel(self, job_id: uuid.UUID | str) -> str | None:
        """Cancel a job that has not finished; return the status it had, or
        None when it had already finished. A running job is told to stop
        (over Redis: if it is unreachable, the handler runs on, and what it
        returns is discarded)."""
        job_id = parse_job_id(job_id)
        with self._translated():
            cancelled = store.cancel_job(self.conn, job_id)
            if cancelled is None:
                if store.get_job(self.conn, job_id) is None:
                    raise JobNotFoundError(f"no job with id {job_id}")
                return None
        previous, queue = cancelled

        def tell() -> None:
            if previous == "running":
                self.redis.publish(self.keys.cancel_channel, str(job_id))
            for call in dispatch.mark_calls(self.keys, [dispatch.Mark(job_id, queue, "cancelled")]):
                dispatch.Scripts.on(self.redis).mark(*call)

        untold = ("the worker running it may not have been told to stop: its handler may run on until it "
                  "returns or times out, and its outcome is discarded; " if previous == "running" else "")
        self._redis_part(tell, untold + "its status hash in Redis (a view for dashboards) may still show its "
                         "former state")
        return previous

    def run_now(self, job_id: uuid.UUID | str) -> bool:
        """Make a job that waits for a later time (scheduled, or backing off
        before a retry) due now; the migrator hands it over at its next
        round. False when the job does not wait for a later time."""
        job_id = parse_job_id(job_id)
        with self._translated():
            if store.run_now(self.conn, job_id):
                return True
            if store.get_job(self.conn, job_id) is None:
                raise JobNotFoundError(f"no job with id {job_id}")
        return False

    def running(self, limit: int = 500) -> list[dict[str, Any]]:
        """Jobs workers hold (``id``, ``queue_name``, ``worker_id``,
        ``attempt_count``, ``max_attempts``, ``started_at``), oldest start first."""
        with self._translated():
            return store.running_jobs(self.conn, limit)

    # -- dead letters ------------------------------------------------------------

    def dead(self, queue: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        with self._translated():
            return store.list_dead(self.conn, queue, limit)

    def replay(self, ids: Iterable[uuid.UUID | str] | None = None, queue: str | None = None) -> list[uuid.UUID]:
        """Send dead jobs back to the queue with their attempts reset: the
        given ids, a queue's, or (neither given) all of them."""
        return self._dead_action(store.replay_dead, ids, queue)

    def purge(self, ids: Iterable[uuid.UUID | str] | None = None, queue: str | None = None) -> list[uuid.UUID]:
        """Delete dead jobs (and their logs) for good; selection as in :meth:`replay`."""
        return self._dead_action(store.purge_dead, ids, queue)

    def _dead_action(self, action: DeadAction, ids: Iterable[uuid.UUID | str] | None,
                     queue: str | None) -> list[uuid.UUID]:
        id_list = [parse_job_id(i) for i in ids] if ids is not None else None
        with self._translated():
            rows = action(self.conn, id_list, queue)

        def unlist() -> None:
            dead_remove = dispatch.Scripts.on(self.redis).dead_remove
            for call in dispatch.dead_calls(self.keys, [(row["queue_name"], row["id"]) for row in rows]):
                dead_remove(*call)

        if rows:
            self._redis_part(unlist, "the dead-letter lists in Redis may still name these jobs; the leading migrator "
                             "rebuilds them from PostgreSQL on reaching Redis again, and compares them every "
                             f"{DEAD_LETTERS_EVERY:g}s")
        if id_list and len(rows) < len(id_list):
            found = {row["id"] for row in rows}
            missing = [str(i) for i in id_list if i not in found]
            raise JobNotFoundError(f"not dead letters (no failed job with id): {', '.join(missing)}"
                                   + (f"; {len(rows)} other(s) done" if rows else ""))
        return [row["id"] for row in rows]

    # -- health and statistics ---------------------------------------------------

    def health(self) -> dict[str, Any]:
        """The facts `pmq health` reports: PostgreSQL, Redis, the schema, the
        leading migrator, depth by band, dead letters, oldest job age, and
        live workers with whether each reaches Redis; judged by
        :func:`pmq_core.health.judge` into problems, warnings and a verdict
        (``status``: healthy, warning or critical)."""
        report: dict[str, Any] = {
            "postgres": {"url": redact_url(self.settings.database_url), "ok": True},
            "redis": {"url": redact_url(self.settings.redis_url), "ok": True},
            "schema": None, "migrator": None, "redis_config": [],
        }
        overview: list[DictRow] = []
        oldest: dict[str, float] = {}
        workers: list[DictRow] = []
        try:
            pending = schema.pending(self.conn)
            report["schema"] = {"ok": not pending, "installed": len(pending) < len(schema.core_migrations()),
                                "pending": [f"{m.version:04d}_{m.name}" for m in pending]}
            if not pending:
                facts = store.health_facts(self.conn, self.settings.rescue_after)
                overview, oldest, workers, report["migrator"] = facts
        except (*PG_DOWN, DatabaseUnavailableError) as exc:
            report["postgres"].update(ok=False, error=reason(exc, self.settings.database_url))
        held: dict[str, int] = {}
        try:
            depths = dispatch.band_depths(self.redis, self.keys, [r["name"] for r in overview])
            report["redis_config"] = health.redis_warnings(self.redis)
            held = self._held() if overview else {}
        except REDIS_DOWN as exc:
            report["redis"].update(ok=False, error=reason(exc, self.settings.redis_url))
            depths = {r["name"]: {} for r in overview}
        except (*PG_DOWN, DatabaseUnavailableError):
            pass  # PostgreSQL went away since it answered above: no held count this time
        queues = []
        for row in overview:
            name = row["name"]
            serving = [w for w in workers if name in w["queues"]]
            queues.append({
                "name": name, "active": row["is_active"], "waiting": row["waiting"] + row["in_redis"],
                "in_redis": row["in_redis"], "scheduled": row["scheduled"], "running": row["running"],
                "dead": row["dead"], "bands": depths.get(name, {}), "oldest_age": oldest.get(name),
                "workers": len(serving), "served": any(w["redis_error_age"] is None for w in serving),
                "held": held.get(name, 0),  # of waiting: due, but held back by a limit (see queues())
            })
        report["queues"] = queues
        report["dead_letters"] = sum(e["dead"] for e in queues)
        ages = [a for a in oldest.values() if a is not None]
        report["oldest_job_age"] = max(ages) if ages else None
        # As of each worker's last heartbeat: handlers running, and jobs
        # claimed ahead that wait for a slot (``running`` in PostgreSQL).
        report["workers"] = [{
            "id": str(w["id"]), "hostname": w["hostname"], "pid": w["pid"], "queues": w["queues"],
            "concurrency": w["concurrency"], "running": w["busy"], "claimed_ahead": w["claimed_ahead"],
            "started_at": w["started_at"], "heartbeat_at": w["heartbeat_at"],
            "utilisation": w["busy"] / w["concurrency"],
            "redis_ok": w["redis_error_age"] is None, "redis_error": w["redis_error"],
            "redis_error_age": w["redis_error_age"],
        } for w in workers]
        found = health.judge(report, stale_after=self.settings.rescue_after)
        report.update(problems=found.problems, warnings=found.warnings, status=found.verdict)
        return report

    def throughput(self, minutes: int = 60) -> list[dict[str, Any]]:
        """Attempts ended in each of the last ``minutes`` minutes, oldest
        first: ``minute`` (its start), ``succeeded``, ``retried`` and
        ``failed`` (from ``job_logs``; a minute without any is zeros)."""
        if not 1 <= minutes <= 24 * 60:
            raise ValueError(f"throughput covers 1 to 1440 minutes, not {minutes}")
        with self._translated():
            return store.throughput(self.conn, minutes)

    def job_types(self) -> list[dict[str, Any]]:
        """The job types of the plugins these settings select, as declared
        (what `pmq plugins` lists for each: priority, band, timeout, retry,
        payload class, cron), with their ``description``."""
        declared = self.plugins.load().job_types.values()
        return [{**jt.describe(), "description": jt.description} for jt in sorted(declared, key=lambda j: j.name)]

    def cron(self) -> list[dict[str, Any]]:
        """Each cron job type of the selected plugins: ``name``, ``cron``
        (its expression), ``last_tick`` (the last tick enqueued, None before
        the first) and ``next_tick``, as the leading migrator enqueues them."""
        from croniter import croniter

        with self._translated():
            ticks = store.cron_ticks(self.conn)
        now = datetime.now(UTC)
        return [{"name": jt["name"], "cron": jt["cron"], "last_tick": ticks.get(jt["name"]),
                 "next_tick": croniter(jt["cron"], now).get_next(datetime)}
                for jt in self.job_types() if jt["cron"]]

    def stats(self, minutes: int = 1) -> dict[str, Any]:
        """Throughput, failures and processing times over the last minutes,
        with depth by queue and band. Processing times are the handlers' own
        runs (not their wait for a slot when claimed ahead); utilisation is
        handlers running over the live workers' concurrency."""
        with self._translated():
            activity, created, workers = store.activity(self.conn, minutes, self.settings.rescue_after)
            queues = self.queues()
        succeeded, retried, failed = (activity.get(k) or 0 for k in ("succeeded", "retried", "failed"))
        attempts = succeeded + retried + failed
        capacity = sum(w["concurrency"] for w in workers)
        busy = sum(w["busy"] for w in workers)  # handlers running, as of each worker's last heartbeat
        return {
            "window_minutes": minutes,
            "processed_per_minute": succeeded / minutes,
            "created_per_minute": created / minutes,
            "failed": failed,
            "retried": retried,
            "error_rate": (failed + retried) / attempts if attempts else 0.0,
            "avg_seconds": activity.get("avg_seconds"),
            "p50_seconds": activity.get("p50_seconds"),
            "p95_seconds": activity.get("p95_seconds"),
            "active_workers": len(workers),
            "utilisation": busy / capacity if capacity else 0.0,
            "claimed_ahead": sum(w["claimed_ahead"] for w in workers),
            "queues": [{"name": r["name"], "active": r["is_active"], "waiting": r["waiting"], "held": r["held"],
                        "scheduled": r["scheduled"], "in_redis": r["in_redis"], "running": r["running"],
                        "dead": r["dead"], "bands": r["bands"]} for r in queues],
        }
