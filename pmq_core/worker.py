"""The worker: pops job messages from Redis, claims the jobs in PostgreSQL,
runs their handlers, and records the outcomes.

One worker process runs one asyncio event loop. ``async def`` handlers run on
it; ``def`` handlers run in a thread pool. Three things keep the hot path
short:

- messages are popped in batches (as many as there are free slots) with one
  ``BLMPOP`` across all served bands, most urgent first (on a Redis Cluster,
  one per hash slot: see :mod:`pmq_core.popping`);
- one task talks to PostgreSQL for the worker. Each round it records every
  outcome that has piled up (the jobs' new state and their log rows) and
  claims every message popped meanwhile (a message is only a hint, and a
  duplicate, stale or forged one claims nothing), both in one statement:
  one round trip, one commit. While a round is in flight, popping and
  handlers go on, so rounds batch themselves under load, the commit's wait is
  not paid once per job, and an idle worker pays nothing extra.

A heartbeat thread with its own connection proves the worker alive, however
busy its handlers keep the event loop. If the worker dies, the leading
migrator rescues its jobs, and they come back as suspects: a worker runs
those one at a time in its isolation child (``isolation.py``), so that the
next crash names its culprit and costs nobody else anything.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any, TypeVar

import attrs
import psycopg

from pmq_core import dispatch, payloads, store
from pmq_core.config import Settings
from pmq_core.db import PG_DATA, PG_DOWN, REDIS_DOWN, apg_connect, aredis_client
from pmq_core.errors import DatabaseUnavailableError, Fail, JobCancelled, PluginError, Retry
from pmq_core.heartbeat import Heartbeat, RedisLink
from pmq_core.isolation import Isolation
from pmq_core.jobtypes import JobType
from pmq_core.keys import Keys, parse_message
from pmq_core.limits import error_text, later
from pmq_core.models import JobContext, JobStatus, LogStatus, Resources
from pmq_core.payloads import UnreadablePayload
from pmq_core.plugins import Plugins
from pmq_core.popping import Popper, pop_groups
from pmq_core.prefetch import Prefetch
from pmq_core.reconnect import Backoff
from pmq_core.resources import close_resources, open_resources
from pmq_core.slots import Claim, SlotBook

log = logging.getLogger(__name__)

T = TypeVar("T")
#: Seconds one BLMPOP blocks; bounds how long a stop request waits for it.
POP_TIMEOUT = 1.0
#: Seconds that handlers still running after the shutdown grace get to end
#: once told to stop (an async one is cancelled, a sync one sees
#: ``job.cancelled``): the jobs whose code has ended by then are given back.
STOP_MARGIN = 2.0
#: How long a job whose sync handler still runs after STOP_MARGIN waits,
#: once given back, before it may run again. The thread cannot be stopped;
#: the process that runs it ends right after the shutdown (see
#: :attr:`Worker.abandoned`), within seconds, long before the job is due.
ABANDONED_DELAY = 60.0


@attrs.frozen(kw_only=True)
class _Outcome:
    """How an attempt ended, for the next database round to record."""

    ctx: JobContext
    status: JobStatus
    log_status: LogStatus
    finished_at: datetime
    run_at: datetime | None = None
    error: str | None = None
    exc: BaseException | None = None


class Worker:
    """One worker process's job runner.

    ``queues`` restricts it to some of the loaded job types (default: all);
    a queue no loaded plugin declares is refused, since its jobs could not run.

    ``retry_delay_scale`` multiplies every retry's delay (the policy's
    backoff and a ``Retry``'s own) before the job is scheduled again. It is
    for tests (the testing kit's ``pmq_runtime(..., retry_delay_scale=0)``
    retries at once); no setting, variable or command-line option reaches
    it, so a deployment cannot shrink its backoff by accident.
    """

    def __init__(self, settings: Settings, plugins: Plugins, *, queues: list[str] | None = None,
                 concurrency: int | None = None, retry_delay_scale: float = 1.0) -> None:
        if not 0 <= retry_delay_scale <= 1:
            raise ValueError(f"retry_delay_scale must be between 0 and 1, not {retry_delay_scale!r}")
        self.retry_delay_scale = retry_delay_scale
        #: Seconds one BLMPOP blocks: how long a stop request may wait for it.
        self.pop_timeout = POP_TIMEOUT
        self.settings = settings
        self.plugins = plugins.load()
        self.plugin_settings = self.plugins.plugin_settings()  # every bad value refused before anything starts
        known = self.plugins.job_types
        if queues:
            missing = [name for name in queues if name not in known]
            if missing:
                raise PluginError(
                    f"no loaded plugin declares queue(s) {', '.join(missing)}; loaded job types: "
                    f"{', '.join(sorted(known)) or 'none'}"
                )
        self.job_types = {name: known[name] for name in (queues or sorted(known))}
        self._queues = list(self.job_types)
        self.concurrency = concurrency or settings.concurrency
        self.prefetch = Prefetch(self.concurrency, settings.prefetch)
        self.slots = SlotBook(self.concurrency, self.prefetch)
        self.id = uuid.uuid4()
        self._worker_name = str(self.id)
        self.keys = Keys(settings.key_prefix, status_hashes=settings.status_mirror)
        self.pop_groups = pop_groups(self.keys, list(self.job_types), settings.redis_mode == "cluster")
        self.started = asyncio.Event()
        self._outcomes: list[_Outcome] = []
        self._to_claim: list[tuple[uuid.UUID, int]] = []
        self._limited: set[uuid.UUID] = set()  # claimed flow-controlled jobs whose handler has not started
        self._starts: list[tuple[uuid.UUID, datetime]] = []  # their starts, for the next round (rate tickets)
        self._db_wanted = asyncio.Event()  # outcomes or messages are waiting for the database task
        self._round_done = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()
        self._mirror_order = asyncio.Lock()
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._backoff = Backoff()
        #: The connection was replaced: a statement's reply may have been
        #: lost with the old one after its commit (see :meth:`_reconcile`).
        self._reconnected = False
        self._connected_before = False
        self.redis_link = RedisLink(POP_TIMEOUT)
        #: Jobs given back at shutdown whose sync handler still ran: nonzero
        #: means the process must end now (``os._exit``; its threads cannot be
        #: stopped or joined), before ABANDONED_DELAY lets the jobs run again.
        self.abandoned = 0
        self.hooks = self.plugins.hooks
        self._isolation = Isolation(self.plugins, settings, self.id, self._queues)
        self.resources = Resources()

    # -- the main loop ---------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, then shut down gracefully."""
        if not self.job_types:
            raise PluginError("no job types to serve: install or select a plugin that declares some")
        assert self.settings.database_url and self.settings.redis_url
        self.resources = open_resources(self.plugins, self.settings, self.id)
        self.redis = aredis_client(self.settings.redis_url, mode=self.settings.redis_mode)
        try:
            await self.redis.initialize()  # a cluster client learns the slots before concurrent use
        except REDIS_DOWN:
            pass  # then at its first command; the fetch loop waits for Redis
        self.scripts = dispatch.Scripts.on(self.redis)
        self.popper = Popper.open(self.settings, self.redis, self.pop_groups, self.pop_timeout)
        # One thread per slot is enough: a sync handler's thread holds its
        # slot until it ends, however long it outlives its job.
        self.executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="pmq-job")
        heartbeat = Heartbeat(self.settings, self.id, list(self.job_types), self.concurrency, self.redis_link,
                               self.slots.counts)
        await asyncio.get_running_loop().run_in_executor(None, heartbeat.register)
        heartbeat.start()
        self.hooks.worker_started(worker_id=self.id, queues=list(self.job_types), settings=self.settings,
                                  plugin_settings=self.plugin_settings)
        database = asyncio.create_task(self._database_loop(stop), name="pmq-database")
        database.add_done_callback(self._database_ended)
        canceller = asyncio.create_task(self._control_listener(), name="pmq-control-listener")
        self.started.set()
        log.info("worker %s serves %s with concurrency %d", self.id, ", ".join(self.job_types), self.concurrency)
        try:
            await self._fetch_loop(stop, database)
        finally:
            self._popped(await self.popper.close())
            while self.slots.unclaimed and not database.done():  # start what was popped before stopping
                self._round_done.clear()
                self._db_wanted.set()
                await self._round_done.wait()
            self.slots.stop()
            self.hooks.worker_stopping(worker_id=self.id)
            canceller.cancel()
            await self._drain()
            self._db_wanted.set()
            await asyncio.gather(database, return_exceptions=True)
            await asyncio.gather(*self._background, return_exceptions=True)
            await self._isolation.close()
            self.hooks.worker_stopped(worker_id=self.id)
            await close_resources(self.resources)
            heartbeat.stop()
            if not self.abandoned:  # else a job the release missed is rescued only once the process is gone
                await asyncio.get_running_loop().run_in_executor(None, heartbeat.unregister)
            if self._conn is not None:
                await self._conn.close()
            await self.redis.aclose()
            self.executor.shutdown(wait=False, cancel_futures=True)
            log.info("worker %s stopped after %d job(s)", self.id, self.slots.processed)

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run Redis-side work (the status mirror, dead letters) beside the
        database task rather than in its way: a round need not wait for it."""
        task = asyncio.create_task(work)
        self._background.add(task)  # a reference, so the task is not collected mid-way
        task.add_done_callback(self._background.discard)

    def _database_ended(self, _task: asyncio.Task[None]) -> None:
        """Wake whoever waits on the database task, so that they see it ended."""
        self._slot_freed.set()
        self._round_done.set()

    async def _fetch_loop(self, stop: asyncio.Event, database: asyncio.Task[None]) -> None:
        backoff = Backoff()
        while not stop.is_set():
            if database.done():
                database.result()  # the database task failed: fail the worker with its error
                return
            free = self.slots.free()
            if free <= 0:
                self._slot_freed.clear()
                stop_wait = asyncio.ensure_future(stop.wait())
                slot_wait = asyncio.ensure_future(self._slot_freed.wait())
                await asyncio.wait([stop_wait, slot_wait], return_when=asyncio.FIRST_COMPLETED)
                stop_wait.cancel()
                slot_wait.cancel()
                continue
            self.redis_link.pop_started()
            try:
                raws = await self.popper.pop(free)
                backoff.reset()
                self.redis_link.reached()
            except REDIS_DOWN as exc:
                self.redis_link.failed(exc)
                delay = backoff.next()
                log.warning("worker lost Redis (%s); retrying in %.1fs", exc, delay)
                await _sleep_unless(stop, delay)
                continue
            finally:
                self.redis_link.pop_ended()
            self._popped(raws)

    def _popped(self, raws: list[bytes]) -> None:
        """Hand popped messages to the database task to claim (a malformed
        one claims nothing: it is dropped here)."""
        messages = [m for m in map(parse_message, raws) if m is not None]
        if not messages:
            return
        self._to_claim.extend(messages)
        self.slots.popped(len(messages))
        self._db_wanted.set()

    async def _database_loop(self, stop: asyncio.Event) -> None:
        """Record outcomes and claim popped messages, all that are waiting
        per round, until the worker has stopped and nothing is left."""
        while True:
            if not self._to_claim and not self._outcomes and not self._starts:
                if self.slots.stopping and not self.slots.held:
                    return
                self._db_wanted.clear()
                await self._db_wanted.wait()
                continue
            messages, self._to_claim = self._to_claim, []
            outcomes, self._outcomes = self._outcomes, []
            starts, self._starts = self._starts, []
            sent = time.monotonic()
            try:
                # While stopping, popped messages may be dropped (the migrator
                # hands them over again); outcomes are never dropped. Starts
                # left unrecorded only keep rate tickets open a while longer.
                result = await self._db(functools.partial(self._round, messages=messages, outcomes=outcomes,
                                                          starts=starts),
                                        give_up=functools.partial(_dropping_claims, stop, bool(outcomes)))
            except PG_DATA as exc:
                result = await self._one_by_one(stop, messages, outcomes, exc)
            finally:
                self.slots.answered(len(messages))
                self._round_done.set()
            self.prefetch.round_took(time.monotonic() - sent)
            rows, applied = result or ([], set())
            if rows:
                self._start(rows, messages, sent)
            if len(rows) < len(messages):
                self._slot_freed.set()  # messages that claimed nothing give their slots back
            if outcomes:
                self._in_background(self._finished(outcomes, applied))
            if self._reconnected:
                await self._reconcile(stop)

    async def _reconcile(self, stop: asyncio.Event) -> None:
        """Give back the jobs PostgreSQL says this worker runs but it does
        not know of. A round whose commit happened but whose reply was lost
        with the connection (a failover, a restart) is sent again, and its
        claims then match nothing: without this, those jobs would stay
        running under a live worker, which no rescue takes from it. Their
        attempt does not count; the migrator hands them over again."""
        self._reconnected = False

        async def orphans(conn: psycopg.AsyncConnection[Any]) -> list[uuid.UUID]:
            running = await store.jobs_running_under.run_async(conn, self.id)
            recording = {outcome.ctx.id for outcome in self._outcomes}
            return [job_id for job_id in running if self.slots.get(job_id) is None and job_id not in recording]

        found = await self._db(orphans, give_up=stop.is_set)
        if found:
            log.warning("worker gives back %d job(s) whose claim committed while its reply was lost", len(found))
            await self._give_back(found)

    async def _round(self, conn: psycopg.AsyncConnection[Any], messages: list[tuple[uuid.UUID, int]],
                     outcomes: list[_Outcome], starts: Sequence[tuple[uuid.UUID, datetime]] = ()
                     ) -> tuple[list[Any], set[uuid.UUID]]:
        """One statement, one round trip and one commit: the outcomes' write
        and the messages' claim (and the starts of flow-controlled jobs).
        Returns the claimed rows and the ids of the outcomes applied."""
        return await store.claim_and_record.run_async(conn, messages, outcomes, self.id, self._queues, starts)

    async def _one_by_one(self, stop: asyncio.Event, messages: list[tuple[uuid.UUID, int]], outcomes: list[_Outcome],
                       exc: Exception) -> tuple[list[Any], set[uuid.UUID]]:
        """Redo a round that failed on a stored or computed value one item
        at a time, so that only the job at fault fails: it ends dead with the
        error, and the rest of the round goes through."""
        log.error("a worker round failed on a job's data (%s); recording its %d item(s) one by one",
                  error_text(exc), len(messages) + len(outcomes))
        claimed: list[Any] = []
        applied: set[uuid.UUID] = set()
        items: list[tuple[list[tuple[uuid.UUID, int]], list[_Outcome]]] = [([], [o]) for o in outcomes]
        items += [([m], []) for m in messages]
        for item_messages, item_outcomes in items:
            job_id = item_outcomes[0].ctx.id if item_outcomes else item_messages[0][0]
            try:
                result = await self._db(
                    functools.partial(self._round, messages=item_messages, outcomes=item_outcomes),
                    give_up=functools.partial(_dropping_claims, stop, bool(item_outcomes)))
            except PG_DATA as item_exc:
                await self._bury(job_id, item_exc)
                continue
            rows, done = result or ([], set())
            claimed += rows
            applied |= done
        return claimed, applied

    async def _bury(self, job_id: uuid.UUID, exc: Exception) -> None:
        """End dead a job whose claim or outcome PostgreSQL refused."""
        failure = Fail(f"pmq could not claim or record this job: {error_text(exc)}")
        error = error_text(failure)

        async def bury(conn: psycopg.AsyncConnection[Any]) -> list[Any]:
            return await store.bury_job.run_async(conn, job_id, self.id, error)

        try:
            rows = await self._db(bury, give_up=lambda: False) or []
        except PG_DATA as bury_exc:
            log.error("job %s could not be ended dead either (%s)", job_id, error_text(bury_exc))
            return
        log.error("job %s ended dead: %s", job_id, error)
        dead: list[tuple[JobContext, BaseException]] = []
        for row in rows:
            job_type = self.job_types.get(row["queue_name"])
            dead.append((JobContext.from_row(row, job_type.payload if job_type else None), failure))
        self._in_background(self._died(dead))

    async def _dead_letters(self, dead: list[tuple[str, uuid.UUID]]) -> None:
        """Push dead jobs onto their queues' dead-letter lists; Redis being
        down costs only the lists, which the leading migrator rebuilds."""
        try:
            for call in dispatch.dead_calls(self.keys, dead):
                await self.scripts.dead_push(*call)
        except REDIS_DOWN:
            pass

    def _start(self, rows: list[Any], messages: list[tuple[uuid.UUID, int]], sent: float) -> None:
        """Run (or keep ready) the claimed jobs in the order their messages
        were popped, which is priority order: the claim's rows come back in
        any order. Jobs of a queue paused while the claim was in flight are
        given back instead."""
        popped = {job_id: index for index, (job_id, _attempt) in enumerate(messages)}
        marks, paused = [], []
        for row in sorted(rows, key=lambda row: popped[row["id"]]):
            job_type = self.job_types.get(row["queue_name"])
            if job_type is None:  # the claim only takes jobs of served queues
                continue
            ctx = JobContext(id=row["id"], queue=row["queue_name"], payload=None, attempt=row["attempt_count"],
                             max_attempts=row["max_attempts"], priority=row["priority"],
                             created_at=row["created_at"], started_at=row["started_at"],
                             raw_payload=row["payload"], settings=self.settings, resources=self.resources,
                             headers=row["headers"], run_at=row["run_at"], partition=row["partition_key"])
            if not self.slots.claimed(Claim(ctx, job_type, suspect=row["rescue_count"] > 0), sent):
                paused.append(ctx.id)  # its queue was paused while the claim was in flight
                continue
            if row["limited"]:
                self._limited.add(ctx.id)
            if self.keys.status_hashes:
                marks.append(dispatch.Mark(ctx.id, ctx.queue, JobStatus.RUNNING, ctx.attempt, self._worker_name))
        self._launch()
        if marks:
            self._in_background(self._mirror(marks))
        if paused:
            self._in_background(self._give_back(paused))
            self._slot_freed.set()

    def _launch(self) -> None:
        """Start claimed jobs while slots are free (none once stopping: the
        jobs still waiting are given back)."""
        while (claim := self.slots.start_next()) is not None:
            claim.task = asyncio.create_task(self._execute(claim))

    async def _mirror(self, marks: list[dispatch.Mark]) -> None:
        """Send status-hash updates, in the order they were made (a quick
        job's ``running`` sent after its ``completed`` would stay, with no
        expiry); Redis being down costs only the mirror."""
        async with self._mirror_order:  # taken before any await: FIFO, in the order the tasks were created
            try:
                for call in dispatch.mark_calls(self.keys, marks):
                    await self.scripts.mark(*call)
            except REDIS_DOWN:
                pass

    # -- running one job ---------------------------------------------------------

    async def _execute(self, running: Claim) -> None:
        ctx, job_type = running.ctx, running.job_type
        clock = time.monotonic()
        # The claim dated the attempt when it was claimed; a job claimed
        # ahead starts later. From here on (the handler's view, the outcome,
        # the job's log) it is dated from this start, on PostgreSQL's clock.
        ctx.started_at += timedelta(seconds=clock - running.claimed)
        if ctx.id in self._limited:  # a rate counts this start: say when it was
            self._limited.discard(ctx.id)
            self._starts.append((ctx.id, ctx.started_at))
            self._db_wanted.set()
        result: Any = None
        error: BaseException | None = None
        if isinstance(ctx.raw_payload, UnreadablePayload):  # it can never run: no retry
            error = Fail(f"the stored payload cannot be read ({ctx.raw_payload.reason}); "
                         f"it starts {ctx.raw_payload.prefix}")
        else:
            try:
                ctx.payload = payloads.structure(ctx.raw_payload, job_type.payload)
            except Exception as exc:
                error = Fail(f"stored payload does not fit {job_type.payload!r}: {exc}")
        if error is None:
            self.hooks.job_started(job=ctx)
            try:
                result = await self._call(running)
            except asyncio.CancelledError:
                if running.stop_reason is None:
                    raise
                self._forget(running)
                return
            except TimeoutError:
                ctx.cancel("timeout")
                error = TimeoutError(f"job exceeded its {job_type.timeout:g}s timeout")
            except BaseException as exc:  # a handler's failure is data, whatever it is
                error = exc
        duration = time.monotonic() - clock
        self.prefetch.job_took(duration)
        finished = ctx.started_at + timedelta(seconds=duration)
        if error is None:
            outcome = _Outcome(ctx=ctx, status=JobStatus.COMPLETED, log_status=LogStatus.SUCCESS, finished_at=finished)
            self.hooks.job_succeeded(job=ctx, result=result, duration=duration)
        else:
            outcome = self._failure(job_type, ctx, error, finished)
        self._outcomes.append(outcome)
        self._db_wanted.set()
        self._forget(running)

    def _failure(self, job_type: JobType, ctx: JobContext, error: BaseException, finished: datetime) -> _Outcome:
        will_retry = job_type.retry.retries(error) and ctx.attempt < ctx.max_attempts
        retry_in: float | None = None
        if will_retry:
            explicit = error.delay if isinstance(error, Retry) else None
            retry_in = explicit if explicit is not None else job_type.retry.delay(ctx.attempt)
            if self.retry_delay_scale != 1:  # in tests only (see __init__)
                retry_in = _scaled(retry_in, self.retry_delay_scale)
        self.hooks.job_failed(job=ctx, error=error, will_retry=will_retry, retry_in=retry_in)
        message = error_text(error)
        if retry_in is not None:
            return _Outcome(ctx=ctx, status=JobStatus.RETRY_SCHEDULED, log_status=LogStatus.RETRY,
                            finished_at=finished, run_at=later(finished, retry_in), error=message, exc=error)
        return _Outcome(ctx=ctx, status=JobStatus.FAILED, log_status=LogStatus.FAILED, finished_at=finished,
                        error=message, exc=error)

    def _forget(self, running: Claim) -> None:
        """Free the job's slot once its code has ended. A sync handler's
        thread may outlive its task (cancelled, or stopped at shutdown): the
        slot, and the job's place in the slot book, wait for the thread, so
        that this worker never runs more handlers than it has slots."""
        if running.thread is not None and running.thread_runs():
            running.thread.add_done_callback(lambda _thread: self._forget(running))
            return
        self.slots.finished(running)
        self._launch()
        self._slot_freed.set()

    async def _call(self, running: Claim) -> Any:
        """Run the handler inside the plugins' wrappers, within its timeout."""
        call = self._call_suspect if running.suspect else self._call_here
        return await self.hooks.wrap_job(job=running.ctx, handler=functools.partial(call, running))

    async def _call_here(self, running: Claim) -> Any:
        """Run the handler in this process: an async one in this task within
        its timeout, a sync one in a thread (see :meth:`_in_thread`)."""
        ctx, job_type = running.ctx, running.job_type
        if job_type.is_async:
            # asyncio.timeout, not wait_for: the handler runs in this task
            # rather than in a second one created per job.
            async with asyncio.timeout(job_type.timeout):
                return await job_type.handler(ctx)
        return await self._in_thread(running)

    async def _call_suspect(self, running: Claim) -> Any:
        """A suspect runs after this worker's other suspects, in the
        isolation child (in this process only when no child can take it),
        its start recorded first: should this worker die while it runs, its
        rescue counts towards ``max_rescues``. Its timeout starts with the
        run, not with the wait for its turn."""
        ctx, job_type = running.ctx, running.job_type
        async with self._isolation.turn:
            isolated = await self._isolation.can_run(ctx.queue)

            async def mark(conn: psycopg.AsyncConnection[Any]) -> bool:
                return await store.mark_suspect_started.run_async(conn, ctx.id, ctx.attempt, self.id)

            if not await self._db(mark, give_up=lambda: False):
                raise JobCancelled("the job was taken from this worker before its turn came")
            if not isolated:
                return await self._call_here(running)
            async with asyncio.timeout(job_type.timeout):
                return await self._isolation.run(ctx)

    async def _in_thread(self, running: Claim) -> Any:
        """Run a sync handler in the pool, within its timeout.

        A thread cannot be stopped, so a timeout only tells the handler
        (``job.cancelled``) and then waits for its thread to end: until then
        the job stays ``running`` on this worker (whose heartbeat keeps it
        from being rescued) and holds its slot, so no other attempt of it
        can start while this one's code still runs. The timeout's outcome,
        and a retry's ``run_at``, date from the thread's real end."""
        ctx, job_type = running.ctx, running.job_type
        call = functools.partial(contextvars.copy_context().run, job_type.handler, ctx)
        thread = running.thread = asyncio.get_running_loop().run_in_executor(self.executor, call)
        # asyncio.wait, unlike awaiting the future, never cancels the
        # thread's future when this task is cancelled (cancel or shutdown).
        await asyncio.wait([thread], timeout=job_type.timeout)
        if not thread.done():
            ctx.cancel("timeout")
            log.warning("job %s: its sync handler outlived its %gs timeout; the job keeps its slot until the "
                        "handler returns", ctx.id, job_type.timeout)
            await asyncio.wait([thread])
            raise TimeoutError
        return thread.result()

    # -- recording outcomes ------------------------------------------------------

    async def _finished(self, batch: list[_Outcome], applied: set[uuid.UUID]) -> None:
        """Mirror recorded outcomes to Redis and tell the plugins of deaths.
        An outcome not applied belonged to an attempt that is no longer this
        worker's (the job was cancelled, or rescued from a worker thought dead)."""
        done = [o for o in batch if o.ctx.id in applied]
        if self.keys.status_hashes:
            await self._mirror([dispatch.Mark(o.ctx.id, o.ctx.queue, o.status, error=o.error) for o in done])
        await self._died([(o.ctx, o.exc) for o in done if o.status is JobStatus.FAILED and o.exc is not None])

    async def _died(self, dead: list[tuple[JobContext, BaseException]]) -> None:
        """Push jobs that ended dead onto their queues' dead-letter lists,
        then tell the plugins (``pmq_job_dead``)."""
        if not dead:
            return
        await self._dead_letters([(ctx.queue, ctx.id) for ctx, _error in dead])
        for ctx, error in dead:
            self.hooks.job_dead(job=ctx, error=error)

    # -- stopping ----------------------------------------------------------------

    async def _drain(self) -> None:
        """Let running jobs finish within the grace period, then stop the
        rest and give them back to the queue (their attempt does not count).

        A job is given back only once its code has ended, or else for
        later: a sync handler that ignores ``job.cancelled`` for
        STOP_MARGIN seconds cannot be stopped, so its job is given back
        with a ``run_at`` ABANDONED_DELAY seconds ahead and counted in
        :attr:`abandoned`, and the process must end at once (the runner
        does so), ending the thread long before the job is due."""
        started = self.slots.started()
        if started:
            log.info("waiting up to %gs for %d running job(s)", self.settings.shutdown_grace, len(started))
            await _settled(started, self.settings.shutdown_grace)
        leftovers = self.slots.leftovers()  # those claimed ahead, never started, are given back too
        for running in leftovers:
            running.stop_reason = "shutdown"
            running.ctx.cancel("shutdown")
            if running.task:
                running.task.cancel()
        if not leftovers:
            return
        await _settled(leftovers, STOP_MARGIN)
        # A sync thread still running, or (rarer) an async handler that
        # swallowed its cancellation: either way the job's code still runs.
        stuck = [r.ctx.id for r in leftovers if r.thread_runs() or (r.task and not r.task.done())]
        self.slots.let_go(leftovers)  # the database task ends once nothing is held
        ids = [r.ctx.id for r in leftovers]

        async def release(conn: psycopg.AsyncConnection[Any]) -> None:
            await store.release_jobs.run_async(conn, ids, self.id, stuck, ABANDONED_DELAY)

        await self._db(release, give_up=lambda: True)
        log.warning("gave back %d unfinished job(s) to the queue", len(ids))
        if stuck:
            self.abandoned = len(stuck)
            log.warning("%d sync handler(s) still run after being told to stop; their jobs wait %gs before "
                        "they may run again, and this process must end before then", len(stuck), ABANDONED_DELAY)

    async def _control_listener(self) -> None:
        """Stop running jobs an operator cancels, and give back the jobs
        claimed ahead of a queue an operator pauses (both published on Redis)."""
        backoff = Backoff()
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.keys.cancel_channel, self.keys.pause_channel)
                self.redis_link.reached()
                async for item in pubsub.listen():
                    backoff.reset()
                    if item.get("channel") == self.keys.pause_channel.encode():
                        self._pause(item.get("data"))
                    else:
                        self._cancel(item.get("data"))
            except REDIS_DOWN as exc:
                self.redis_link.failed(exc)
                await asyncio.sleep(backoff.next())
            finally:
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _pause(self, data: Any) -> None:
        """Give back this queue's jobs claimed ahead (not started; their
        attempt does not count), and those of a claim still in flight."""
        queue = data.decode(errors="replace") if isinstance(data, bytes) else str(data)
        if queue not in self.job_types:
            return
        held = self.slots.give_back(queue, time.monotonic())
        if not held:
            return
        log.info("queue %s paused: giving back %d job(s) claimed ahead", queue, len(held))
        self._in_background(self._give_back([r.ctx.id for r in held]))
        self._slot_freed.set()

    async def _give_back(self, ids: list[uuid.UUID]) -> None:
        """Queue again jobs claimed here that will not start (their queue was
        paused); their attempt does not count."""
        self._limited.difference_update(ids)

        async def release(conn: psycopg.AsyncConnection[Any]) -> None:
            await store.release_jobs.run_async(conn, ids, self.id)

        await self._db(release, give_up=lambda: self.slots.stopping)

    def _cancel(self, data: Any) -> None:
        try:
            job_id = uuid.UUID(data.decode() if isinstance(data, bytes) else str(data))
        except ValueError:
            return
        running = self.slots.get(job_id)
        if running is None:
            return
        if self.slots.withdraw(running):  # claimed ahead, not started: just drop it
            self._slot_freed.set()
            return
        log.info("job %s cancelled while running", job_id)
        running.stop_reason = "cancelled"
        running.ctx.cancel("cancelled")
        if running.task:
            running.task.cancel()

    # -- PostgreSQL with reconnects -------------------------------------------

    async def _db(self, op: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]],
                  give_up: Callable[[], bool]) -> T | None:
        """Run ``op`` on the worker's connection, reconnecting with backoff
        while PostgreSQL is down; None if ``give_up()`` says to stop trying."""
        assert self.settings.database_url
        while True:
            conn = self._conn
            try:
                if conn is None or conn.closed:
                    conn = self._conn = await apg_connect(self.settings.database_url,
                                                          pooled=self.settings.database_pooled)
                    if not self.settings.database_pooled:  # a session parameter would leak to other clients
                        await store.start_session.run_async(conn)
                    self._reconnected = self._reconnected or self._connected_before
                    self._connected_before = True
                result = await op(conn)
                self._backoff.reset()
                return result
            except (*PG_DOWN, DatabaseUnavailableError) as exc:
                if conn is not None:
                    await _close_quietly(conn)
                self._conn = None
                if give_up():
                    return None
                delay = self._backoff.next()
                log.warning("worker lost PostgreSQL (%s); retrying in %.1fs", str(exc).splitlines()[0], delay)
                await asyncio.sleep(delay)


async def _settled(runnings: list[Claim], timeout: float) -> None:
    """Wait up to ``timeout`` for these jobs' code to end: their tasks and
    their sync handlers' threads."""
    pending: list[asyncio.Future[Any]] = [
        f for r in runnings for f in (r.task, r.thread) if f is not None and not f.done()]
    if pending:
        await asyncio.wait(pending, timeout=timeout)


def _scaled(delay: float, scale: float) -> float:
    """``delay × scale``; a delay beyond a float's range (``Retry(delay=10**400)``) stays as it is."""
    try:
        return delay * scale
    except OverflowError:
        return delay


def _dropping_claims(stop: asyncio.Event, has_outcomes: bool) -> bool:
    """Whether a round may be abandoned while PostgreSQL is down: only when
    stopping, and only if it carries no outcome."""
    return stop.is_set() and not has_outcomes




async def _sleep_unless(stop: asyncio.Event, delay: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), delay)
    except TimeoutError:
        pass


async def _close_quietly(conn: psycopg.AsyncConnection[Any]) -> None:
    try:
        await conn.close()
    except Exception:
        pass
