"""The migrator: moves due jobs from PostgreSQL into Redis, and keeps the
system healthy.

Exactly one migrator leads at a time: it holds a PostgreSQL advisory lock on
its listening connection, so the lock goes the moment its process or its
connection dies, and a standby, retrying every second, takes over. The
leader wakes on ``LISTEN/NOTIFY`` (new jobs), at the next scheduled job's due
time, or at the poll interval, whichever is first.

Besides migrating, the leader does the housekeeping that must happen once:
rescuing jobs of dead workers, handing over again jobs whose Redis message
was lost (Redis restarted or wiped), rebuilding dead-letter lists that no
longer match PostgreSQL, enqueueing cron ticks, and pruning old rows. Each
housekeeping round ends with a beat in ``pmq_migrator_leader``, so that
`pmq health` sees a leader that holds its lock but no longer gets round.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import psycopg
import redis
from psycopg.rows import DictRow

from pmq_core import dispatch, flow, store
from pmq_core.client import Client
from pmq_core.config import Settings
from pmq_core.db import PG_DATA, PG_DOWN, REDIS_DOWN, pg_connect, redis_client
from pmq_core.errors import DatabaseUnavailableError, Fail, WorkerLost
from pmq_core.health import redis_warnings
from pmq_core.keys import Keys
from pmq_core.limits import MAX_ERROR_LENGTH
from pmq_core.models import JobContext, JobStatus
from pmq_core.plugins import Plugins
from pmq_core.reconnect import Backoff

log = logging.getLogger(__name__)

#: Seconds between a standby's attempts to take the lead.
STANDBY_RETRY = 1.0
#: Seconds between housekeeping rounds (lost messages, cron).
HOUSEKEEPING_EVERY = 1.0
RETENTION_EVERY = 3600.0
#: Seconds between comparisons of the dead-letter lists in Redis with
#: PostgreSQL (one count of dead jobs per queue; also done on taking the lead).
DEAD_LETTERS_EVERY = 60.0
#: Dead job ids pushed per command when a dead-letter list is rebuilt.
DEAD_LETTERS_CHUNK = 5000
#: Seconds between looks at Redis while a queue's share there is full and
#: more of its jobs are due: workers empty a full share (2,000 jobs by
#: default) in about half a second at 4,000 jobs/s, so the longer waits of
#: an idle migrator would leave them without work. Each look that finds no
#: room doubles the next wait, up to the poll interval, so that a backlog
#: behind slow jobs is not polled fifty times a second.
REFILL_EVERY = 0.02
RETENTION_BATCH = 1000
#: Seconds between reads of the limits in force (see Migrator._limits).
LIMITS_EVERY = 1.0


class Migrator:
    """One migrator process (leader or standby)."""

    def __init__(self, settings: Settings, plugins: Plugins) -> None:
        self.settings = settings
        self.plugins = plugins
        self.keys = Keys(settings.key_prefix, status_hashes=settings.status_mirror)
        self.is_leader = threading.Event()
        self.migrated = 0
        self._next_housekeeping = 0.0
        self._next_rescue = 0.0
        self._next_retention = 0.0
        self._next_dead_letters = 0.0
        self._lock_pid: int | None = None  # the lock connection's backend pid, while leading
        self._redis_checked = False
        self._missing: set[uuid.UUID] = set()  # jobs in migrated_to_redis whose message was missing last time
        self._backlog: set[str] = set()  # queues whose last batch came back full: more are probably due
        self._refill_wait = REFILL_EVERY
        self._rate_wake: datetime | None = None  # when a rate ticket next stops counting
        self._open_tickets = False  # whether rate tickets wait for their claim
        self._limits_cache: dict[str, flow.QueueLimits] = {}
        self._limits_read_at = -LIMITS_EVERY
        self._held: dict[str, str] = {}  # what _publish_held last wrote
        self._held_rewrite = 0.0

    def run(self, stop: threading.Event) -> None:
        """Lead or stand by until ``stop`` is set, reconnecting after server
        failures with exponential backoff.

        One Redis client serves every session: it reconnects by itself, and
        a cluster client keeps the nodes it has discovered, so that it finds
        the cluster again when the node its URL names is the one down."""
        assert self.settings.redis_url
        backoff = Backoff()
        rds = redis_client(self.settings.redis_url, mode=self.settings.redis_mode)
        try:
            while not stop.is_set():
                try:
                    self._session(stop, backoff, rds)
                except (*PG_DOWN, *REDIS_DOWN, DatabaseUnavailableError) as exc:
                    self.is_leader.clear()
                    delay = backoff.next()
                    log.warning("migrator lost a server (%s); reconnecting in %.1fs", _brief(exc), delay)
                    stop.wait(delay)
        finally:
            rds.close()

    def _session(self, stop: threading.Event, backoff: Backoff, rds: redis.Redis) -> None:
        assert self.settings.database_url and self.settings.session_database_url
        # The lock and LISTEN need a session: the direct URL if the other is pooled.
        with (pg_connect(self.settings.session_database_url) as lock_conn,
              pg_connect(self.settings.database_url, pooled=self.settings.database_pooled) as conn):
            try:
                rds.ping()
                backoff.reset()
                if not self._redis_checked:
                    self._redis_checked = True
                    for warning in redis_warnings(rds):
                        log.warning("%s", warning)
                while not stop.is_set():
                    if store.try_lead(lock_conn):
                        break
                    stop.wait(STANDBY_RETRY)
                if stop.is_set():
                    return
                store.listen_for_jobs(lock_conn)
                self._lock_pid = lock_conn.info.backend_pid
                self.beat(conn)
                self.is_leader.set()
                log.info("migrator leads")
                self._next_housekeeping = self._next_retention = self._next_dead_letters = 0.0
                # Heartbeats could not be written while we were cut off (a
                # PostgreSQL restart): give live workers a full window to
                # beat again before taking their jobs.
                self._next_rescue = time.monotonic() + self.settings.rescue_after
                trouble = Backoff(maximum=self.settings.poll_interval)
                while not stop.is_set():
                    try:
                        wait = self.tick(conn, rds)
                        trouble.reset()
                    except PG_DATA as exc:
                        # A stored value broke a query the migrator cannot
                        # take apart by row: say so and go on, never exit.
                        wait = trouble.next()
                        log.error("migrator round failed on a stored value (%s); next round in %.1fs",
                                  _brief(exc), wait)
                    if wait > 0:
                        store.wait_for_jobs(lock_conn, wait)
            finally:
                self.is_leader.clear()
                self._lock_pid = None

    # -- one round -----------------------------------------------------------

    def tick(self, conn: psycopg.Connection[DictRow], rds: redis.Redis) -> float:
        """Migrate what is due and do any housekeeping that is due; return
        how long to wait before the next round."""
        queues = store.active_queues(conn)
        moved, full = self.migrate(conn, rds, queues)
        now = time.monotonic()
        housekeeping = now >= self._next_housekeeping
        if housekeeping:
            self._next_housekeeping = now + HOUSEKEEPING_EVERY
            self.redispatch_lost(conn, rds)
            self.enqueue_cron(conn)
        if now >= self._next_rescue:
            self._next_rescue = now + min(self.settings.heartbeat_interval, self.settings.rescue_after / 2)
            self.rescue(conn, rds)
        if now >= self._next_dead_letters:
            self._next_dead_letters = now + DEAD_LETTERS_EVERY
            self.sync_dead_letters(conn, rds)
            store.prune_tickets(conn)
        if now >= self._next_retention:
            self._next_retention = now + RETENTION_EVERY
            self.prune(conn)
        if housekeeping:  # the round got through: say so
            self.beat(conn)
        if moved:
            self._refill_wait = REFILL_EVERY
            return 0.0 if full else 0.005
        if self._backlog:
            wait, self._refill_wait = self._refill_wait, min(2 * self._refill_wait, self.settings.poll_interval)
            return self._until_a_rate_frees(wait)
        wait = min(self.settings.poll_interval, max(0.0, self._next_housekeeping - time.monotonic()))
        next_due = store.next_due_at(conn)
        if next_due is not None:
            wait = min(wait, max(0.001, (next_due - datetime.now(UTC)).total_seconds()))
        return self._until_a_rate_frees(wait)

    def _until_a_rate_frees(self, wait: float) -> float:
        """``wait``, shortened to the moment a rate ticket stops counting:
        a rate-limited queue's next job is handed over then, not at the
        next poll (which cost a rate of 50/s a tenth of its starts)."""
        if self._rate_wake is not None:
            wait = min(wait, max(0.001, (self._rate_wake - datetime.now(UTC)).total_seconds()))
        if self._held and self._open_tickets:
            # A rate holds jobs back while tickets it counts are open: their
            # handlers start within milliseconds, and only once a start is
            # recorded does the time its ticket stops counting become known.
            wait = min(wait, REFILL_EVERY)
        return wait

    def migrate(self, conn: psycopg.Connection[DictRow], rds: redis.Redis, queues: list[str]) -> tuple[int, bool]:
        """Move due jobs of ``queues`` into Redis, within each queue's room.

        Returns the number moved, and whether a batch came back full (more
        are probably due). A queue whose batch came back full stays in the
        backlog until one comes back short, so that the migrator keeps
        watching for room while its share in Redis is full. Redis is written
        after PostgreSQL commits: a crash in between leaves jobs in
        migrated_to_redis without a message, which :meth:`redispatch_lost`
        repairs.
        """
        self._backlog &= set(queues)  # a paused or deleted queue is nobody's backlog
        if not queues:
            return 0, False
        limits = {queue: found for queue, found in self._limits(conn).items() if queue in queues}
        depths = dispatch.band_depths(rds, self.keys, queues)
        budgets: dict[str, int] = {}
        for queue in queues:
            depth = sum(depths[queue].values())
            share = flow.REDIS_SHARE if queue in limits else self.settings.redis_depth
            room = min(self.settings.migrate_batch, share - depth)
            if room > 0:
                budgets[queue] = room
        controlled = {queue: room for queue, room in budgets.items() if queue in limits}
        budgets = {queue: room for queue, room in budgets.items() if queue not in limits}
        rows: list[DictRow] = []
        if budgets:
            try:
                # One statement, atomic in autocommit: no BEGIN and COMMIT round trips.
                rows = store.migrate_due(conn, budgets)
            except PG_DATA as exc:
                rows = self._migrate_one_by_one(conn, rds, store.due_job_ids(conn, budgets), store.migrate_one, exc)
        if limits:
            controlled_rows, budgets_used = self._migrate_controlled(conn, rds, limits, controlled)
            rows += controlled_rows
            budgets.update(budgets_used)
        else:
            self._rate_wake, self._open_tickets = None, False
            if self._held:  # the last limit was lifted: nothing is held any more
                self._publish_held(rds, {})
        counts: dict[str, int] = {}
        for row in rows:
            counts[row["queue_name"]] = counts.get(row["queue_name"], 0) + 1
        filled = {queue for queue, room in budgets.items() if counts.get(queue, 0) >= room}
        self._backlog = (self._backlog - set(budgets)) | filled
        if not rows:
            return 0, False
        push = dispatch.Scripts.on(rds).push
        for call in dispatch.push_calls(self.keys, rows):
            push(*call)
        self.migrated += len(rows)
        return len(rows), bool(filled)

    def _limits(self, conn: psycopg.Connection[DictRow]) -> dict[str, flow.QueueLimits]:
        """The limits in force, read again at most every second: an
        operator's change applies within a second, and a pass of a queue
        with a rate (which may come every few milliseconds) does not read
        the limits table each time."""
        now = time.monotonic()
        if now >= self._limits_read_at + LIMITS_EVERY:
            self._limits_cache = flow.by_queue(store.limit_rows(conn))
            self._limits_read_at = now
        return self._limits_cache

    def _migrate_controlled(self, conn: psycopg.Connection[DictRow], rds: redis.Redis,
                            limits: dict[str, flow.QueueLimits],
                            rooms: dict[str, int]) -> tuple[list[DictRow], dict[str, int]]:
        """Move due jobs of flow-controlled queues within their limits, in
        turns across partitions; return their rows and the budgets used.

        The counts that limits are checked against are read from
        PostgreSQL here, by the one leader, and the rate tickets are written
        in the transaction that hands the jobs over: no other process hands
        over these queues' jobs (the producers' hand-over skips them), so
        the counts cannot change under the leader except downwards.
        """
        rated = any(queue_limits.rated for queue_limits in limits.values())
        if rated:
            store.close_tickets(conn)
        partitions = store.waiting_partitions(conn, list(limits), flow.MAX_PARTITIONS)
        in_flight = store.in_flight(conn, list(limits))
        scopes = flow.ticket_scopes(limits, partitions)
        usage = store.ticket_usage(conn, scopes) if scopes else {}
        plan = flow.plan(limits, rooms, partitions, in_flight, {key: u.counted for key, u in usage.items()})
        frees = [u.frees_at for u in usage.values() if u.frees_at is not None]
        self._rate_wake = min(frees) if frees else None
        self._open_tickets = any(u.open for u in usage.values())
        self._publish_held(rds, plan.blocked)
        if not plan.picks:
            return [], {}
        chosen = [row["id"] for row in store.fair_due_ids(conn, plan.picks, plan.budgets)]
        if not chosen:
            return [], plan.budgets
        try:
            rows = store.migrate_chosen(conn, chosen, limits)
        except PG_DATA as exc:
            rows = self._migrate_one_by_one(conn, rds, chosen,
                                            lambda c, job_id: store.migrate_chosen(c, [job_id], limits), exc)
        return rows, plan.budgets

    def _publish_held(self, rds: redis.Redis, blocked: dict[str, list[str | None] | None]) -> None:
        """Tell `pmq stats` what limits hold back: written when it changes,
        and again every housekeeping round (a wiped Redis forgets it)."""
        encoded = {queue: json.dumps(keys) for queue, keys in blocked.items()}
        if encoded == self._held and time.monotonic() < self._held_rewrite:
            return
        pipe = rds.pipeline(transaction=False)  # one key: a reader sees it gone for a moment at most
        pipe.delete(self.keys.held)
        if encoded:
            pipe.hset(self.keys.held, mapping=encoded)  # type: ignore[arg-type]
        pipe.execute()
        self._held, self._held_rewrite = encoded, time.monotonic() + HOUSEKEEPING_EVERY

    def _migrate_one_by_one(self, conn: psycopg.Connection[DictRow], rds: redis.Redis, job_ids: list[uuid.UUID],
                            move: Callable[[psycopg.Connection[DictRow], uuid.UUID], list[DictRow]],
                            exc: Exception) -> list[DictRow]:
        """Move a batch that failed on a stored value one job at a time, so
        that only the job at fault fails: it ends dead with the error, and
        the rest of the batch moves on."""
        log.error("migrating a batch failed on a stored value (%s); moving its jobs one by one", _brief(exc))
        rows: list[DictRow] = []
        for job_id in job_ids:
            try:
                rows += move(conn, job_id)
            except PG_DATA as job_exc:
                error = f"pmq could not hand this job to Redis: {_brief(job_exc)}"[:MAX_ERROR_LENGTH]
                for buried in store.bury_job(conn, job_id, None, error):
                    log.error("job %s ended dead: %s", buried["id"], error)
                    rds.lpush(self.keys.dead(buried["queue_name"]), str(buried["id"]))
                    self.plugins.hooks.job_dead(job=self._context(buried), error=Fail(error))
        return rows

    # -- housekeeping --------------------------------------------------------

    def redispatch_lost(self, conn: psycopg.Connection[DictRow], rds: redis.Redis) -> int:
        """Hand over again jobs whose Redis message is gone (Redis restarted,
        wiped, or a worker died between popping and claiming).

        A message a worker has just popped is missing too, until its claim
        commits a moment later: a job counts as lost only when its message
        was missing at two checks in a row (a housekeeping round apart), so
        that such a job is not handed over twice and run out of turn.
        """
        stale = store.stale_migrated(conn, self.settings.redispatch_after, 5000)
        if not stale:
            self._missing = set()
            return 0
        present = dispatch.queued_message_ids(rds, self.keys, {row["queue_name"] for row in stale})
        missing = {row["id"] for row in stale if str(row["id"]) not in present}
        lost, self._missing = list(missing & self._missing), missing
        if not lost:
            return 0
        count = store.requeue_migrated(conn, lost)
        if count:
            log.warning("%d job(s) had lost their Redis message; handing them over again", count)
        return count

    def beat(self, conn: psycopg.Connection[DictRow]) -> None:
        """Record that the leader is alive and got round (nothing while not
        leading, e.g. when a test calls :meth:`tick` directly)."""
        if self._lock_pid is not None:
            store.migrator_beat(conn, self._lock_pid)

    def sync_dead_letters(self, conn: psycopg.Connection[DictRow], rds: redis.Redis) -> list[str]:
        """Rebuild from PostgreSQL each queue's dead-letter list whose length
        differs from its count of dead jobs; return those queues.

        The lists are a mirror that drifts: Redis wiped or restarted, a dead
        job's push lost with Redis down, a replay or purge made while Redis
        was unreachable. A job that dies during a rebuild may be pushed twice
        or not at all; the next comparison sees it and rebuilds again.
        """
        counts = store.dead_counts(conn)
        names = sorted(store.queue_names(conn) | set(counts))
        pipe = rds.pipeline(transaction=False)
        for name in names:
            pipe.llen(self.keys.dead(name))
        drifted = [name for name, length in zip(names, pipe.execute(), strict=True) if length != counts.get(name, 0)]
        for name in drifted:
            ids = store.dead_ids(conn, name)
            rebuild = rds.pipeline(transaction=True)  # readers see the old list or the new one, never a gap
            rebuild.delete(self.keys.dead(name))
            for start in range(0, len(ids), DEAD_LETTERS_CHUNK):
                rebuild.rpush(self.keys.dead(name), *ids[start:start + DEAD_LETTERS_CHUNK])
            rebuild.execute()
        if drifted:
            log.warning("rebuilt the dead-letter list of %s from PostgreSQL", ", ".join(map(repr, drifted)))
        return drifted

    def rescue(self, conn: psycopg.Connection[DictRow], rds: redis.Redis) -> int:
        """Take back jobs held by workers that stopped heartbeating: their
        attempt is given back and they become suspects, or, rescued
        ``max_rescues`` times, they end dead (``pmq_job_dead`` is told)."""
        rows = store.rescue(conn, self.settings.rescue_after, self.settings.max_rescues)
        if not rows:
            return 0
        log.warning("rescued %d job(s) from dead workers", len(rows))
        dead = [row for row in rows if row["status"] == "failed"]
        scripts = dispatch.Scripts.on(rds)
        marks = [dispatch.Mark(row["id"], row["queue_name"], row["status"], error=row["last_error_message"])
                 for row in rows]
        for call in dispatch.mark_calls(self.keys, marks):
            scripts.mark(*call)
        for call in dispatch.dead_calls(self.keys, [(row["queue_name"], row["id"]) for row in dead]):
            scripts.dead_push(*call)
        for row in dead:
            self.plugins.hooks.job_dead(job=self._context(row), error=WorkerLost(row["last_error_message"]))
        return len(rows)

    def _context(self, row: DictRow) -> JobContext:
        """A job this migrator ended dead, as ``pmq_job_dead`` sees it."""
        job_type = self.plugins.job_type(row["queue_name"])
        return JobContext.from_row(row, job_type.payload if job_type else None)

    def enqueue_cron(self, conn: psycopg.Connection[DictRow]) -> int:
        """Enqueue each cron job type's latest tick, once per tick across all
        migrators (the tick is claimed in PostgreSQL in the same transaction)."""
        from croniter import croniter

        scheduled = [jt for jt in self.plugins.load().job_types.values() if jt.cron]
        enqueued = 0
        if not scheduled:
            return 0
        client = Client(self.settings, plugins=self.plugins)
        now = datetime.now(UTC)
        for job_type in scheduled:
            tick = croniter(job_type.cron, now).get_prev(datetime)
            with conn.transaction():
                if store.claim_cron_tick(conn, job_type.name, tick):
                    client.enqueue(job_type.name, dict(job_type.cron_payload), conn=conn,
                                   unique_key=f"cron:{tick.isoformat()}")
                    enqueued += 1
        return enqueued

    def prune(self, conn: psycopg.Connection[DictRow]) -> dict[str, int]:
        """Delete rows past retention, a batch per transaction."""
        plan = [(JobStatus.COMPLETED, self.settings.retention_completed_days),
                (JobStatus.CANCELLED, self.settings.retention_completed_days),
                (JobStatus.FAILED, self.settings.retention_failed_days)]
        return store.prune(conn, plan, self.settings.retention_logs_days, RETENTION_BATCH)


def _brief(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"
