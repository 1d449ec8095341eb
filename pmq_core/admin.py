"""Operating pmq: schema upgrades, queues, jobs, dead letters, health and
statistics. The ``pmq`` command is a thin layer over this module, and so can
an operator's own tooling be."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from typing import Any

import psycopg
import redis
from psycopg.rows import DictRow

from pmq_core import dispatch, health, schema, store
from pmq_core.config import Settings
from pmq_core.db import PG_DOWN, REDIS_DOWN, pg_connect, reason, redis_client, resolve_servers, translated
from pmq_core.errors import DatabaseUnavailableError, JobNotFoundError, UnknownQueueError, shown
from pmq_core.keys import Keys
from pmq_core.migrator import DEAD_LETTERS_EVERY
from pmq_core.models import Job, JobStatus, parse_job_id
from pmq_core.plugins import Plugins
from pmq_core.redaction import redact_url

#: :func:`store.replay_dead` or :func:`store.purge_dead`.
DeadAction = Callable[[psycopg.Connection[Any], list[uuid.UUID] | None, str | None], list[DictRow]]

#: Seconds an operator's command waits for Redis to connect (TLS handshake
#: included) or to answer: a rediss:// URL pointing at a Redis without TLS
#: would otherwise wait for the handshake forever.
REDIS_TIMEOUT = 5.0


class Admin:
    """Operator actions on one pmq deployment.

    An action changes PostgreSQL first, the record of truth; its Redis part
    (removing messages, the status mirror, telling a worker) comes after the
    commit. When Redis cannot be reached for that part, the action still
    succeeded: it does not raise, and adds to :attr:`deferred` a sentence
    saying what was left undone in Redis and what makes up for it.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = resolve_servers(settings)
        assert self.settings.database_url and self.settings.redis_url
        self.keys = Keys(self.settings.key_prefix)
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
        with self._translated():
            rows = store.queue_overview(self.conn)
            names = [row["name"] for row in rows]
            depths = dispatch.band_depths(self.redis, self.keys, names)
        return [{**row, "bands": depths[row["name"]]} for row in rows]

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
            return store.list_jobs(self.conn, queue, statuses, limit)

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
            (call,) = dispatch.mark_calls(self.keys, [dispatch.Mark(job_id, queue, "cancelled")])
            dispatch.Scripts.on(self.redis).mark(*call)

        untold = ("the worker running it may not have been told to stop: its handler may run on until it "
                  "returns or times out, and its outcome is discarded; " if previous == "running" else "")
        self._redis_part(tell, untold + "its status hash in Redis (a view for dashboards) may still show its "
                         "former state")
        return previous

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
        try:
            depths = dispatch.band_depths(self.redis, self.keys, [r["name"] for r in overview])
            report["redis_config"] = health.redis_warnings(self.redis)
        except REDIS_DOWN as exc:
            report["redis"].update(ok=False, error=reason(exc, self.settings.redis_url))
            depths = {r["name"]: {} for r in overview}
        queues = []
        for row in overview:
            name = row["name"]
            serving = [w for w in workers if name in w["queues"]]
            queues.append({
                "name": name, "active": row["is_active"], "waiting": row["waiting"] + row["in_redis"],
                "in_redis": row["in_redis"], "scheduled": row["scheduled"], "running": row["running"],
                "dead": row["dead"], "bands": depths.get(name, {}), "oldest_age": oldest.get(name),
                "workers": len(serving), "served": any(w["redis_error_age"] is None for w in serving),
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
            "utilisation": w["busy"] / w["concurrency"],
            "redis_ok": w["redis_error_age"] is None, "redis_error": w["redis_error"],
            "redis_error_age": w["redis_error_age"],
        } for w in workers]
        found = health.judge(report, stale_after=self.settings.rescue_after)
        report.update(problems=found.problems, warnings=found.warnings, status=found.verdict)
        return report

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
            "queues": [{"name": r["name"], "active": r["is_active"], "waiting": r["waiting"],
                        "scheduled": r["scheduled"], "in_redis": r["in_redis"], "running": r["running"],
                        "dead": r["dead"], "bands": r["bands"]} for r in queues],
        }
