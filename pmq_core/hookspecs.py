"""Every hook a pmq plugin can implement, grouped by when it runs.

A plugin is a module (or object) with functions marked ``@pmq_core.hookimpl``
whose names are the hooks below. An implementation may take fewer arguments
than the spec: pmq only ever adds arguments, so plugins keep working.

Lifecycle hooks run in the worker, once per event, on the hot path: keep them
quick, and do slow work elsewhere. An exception raised by a lifecycle hook is
logged and does not affect the job.

Each hook's docstring is its section of the hook reference, which the docs
site renders from here: Markdown, an `Args:` entry per argument, a closing
"Since X.Y." line (tests/test_docs.py checks both).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import uuid

    import click

    from pmq_core.config import Settings
    from pmq_core.jobtypes import JobType
    from pmq_core.models import JobContext
    from pmq_core.schema import Migration

PROJECT = "pmq"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

# --------------------------------------------------------------------------
# Declaring things (called once, when the runtime loads its plugins)
# --------------------------------------------------------------------------


@hookspec
def pmq_register_job_types() -> list[JobType]:
    """Return the job types this plugin provides.

    **When:** once per process, when the plugins load: lazily, on the first
    need (a client's first enqueue, a worker's start, `pmq plugins`), never
    on `import pmq_core`.

    Each job type's `name` is its queue. The fields of `pmq_core.JobType`,
    with their defaults: `handler` (a `def` or `async def` taking the
    running job), `priority=100` (lower runs sooner; ≤ 50 is the high band,
    > 150 the low band), `retry=RetryPolicy()` (5 attempts, backoff
    `base_delay × 2^attempt` capped at `max_delay`, ±25 % jitter, `retry_on`
    exception classes), `timeout=60.0` seconds (None: none), `payload=None`
    (an attrs class validating payloads at enqueue), `unique_key=None`
    (payload → key: at most one live job per key), `cron=None` (a cron
    schedule enqueueing `cron_payload`), `description=""`.

    **Errors**, each naming the plugin and its distribution, stop loading:
    two plugins declaring the same name (select one with `--plugins` or
    `PMQ_PLUGINS`); an item that is not a `JobType`; an exception raised
    while building the list (for instance `JobType`'s own check that
    `handler` is callable).

    ```python
    @hookimpl
    def pmq_register_job_types():
        return [JobType(name="thumbnails", handler=make_thumbnail, payload=Image,
                        priority=120, timeout=30, retry=RetryPolicy(max_attempts=3))]
    ```

    Returns:
        A list of `pmq_core.JobType`, collected from every plugin.

    Since 0.1.
    """


@hookspec
def pmq_register_migrations() -> list[Migration]:
    """Return the schema migrations this plugin owns: its own tables, indexes
    and functions.

    **When:** the schema is upgraded: `pmq db upgrade`, `Admin.upgrade()`,
    the test kit's `pmq_runtime` (and the runtime itself on embedded
    servers).

    pmq applies the core's migrations first, then the plugins', sorted by
    component and version; each is applied once (recorded in
    `pmq_schema_migrations`), in its own transaction, under an advisory lock
    so that two upgrades never collide.

    Use one `component` name per plugin (its distribution name is a good
    choice), never change a migration that was released (add the next
    version), and never alter the core's tables: other programs rely on
    them. Keep the plugin's SQL in `.sql` files of the plugin's package.

    ```python
    from importlib import resources
    from pmq_core import Migration, hookimpl

    @hookimpl
    def pmq_register_migrations():
        sql = resources.files("pmq_thumbs").joinpath("sql/0001_create.sql").read_text()
        return [Migration(component="pmq-thumbs", version=1, name="create", sql=sql)]
    ```

    Returns:
        A list of `pmq_core.Migration(component=..., version=..., name=..., sql=...)`.

    Since 0.1.
    """


@hookspec
def pmq_register_settings() -> dict[str, type]:
    """Return the settings this plugin reads, as `{section: attrs class}`.

    **When:** once per process, when the plugins load. The values are read
    later, when a worker or a `pmq run`/`worker`/`migrator` command starts
    (and by `pmq plugins`), never by a producer.

    Each field of the class is one setting: its type, its default and its
    docstring say what it takes. pmq reads it, lowest precedence first, from
    the default, `[tool.pmq.<section>]` in `pyproject.toml`, `[<section>]` in
    `pmq.toml` and the environment variable `PMQ_<SECTION>_<FIELD>` (in
    capitals), with the strict conversions of pmq's own settings (an `int`
    refuses `"2.5"`, a `bool` takes `true`/`false`/`1`/`0`/`yes`/`no`, an
    empty value of an optional field means unset). A worker checks every
    section before it starts: each bad value is named (`expected a number,
    got 'soon' @ webhook.timeout`), all in one line, and the worker does not
    start. Mark a password or a key `metadata={"secret": True}`: `pmq plugins`
    shows it as `***` and pmq scrubs it from its output and logs. Give a
    setting `metadata={"option": "--name"}` (and optionally `"help"`) to make
    it an option of `pmq run`, `pmq worker` and `pmq migrator` as well
    (`--metrics HOST:PORT`, say): a value given there overrides every other
    source, for that process and the worker processes it starts. Read the
    values in [`pmq_worker_started`][pmq_core.hookspecs.pmq_worker_started]
    (`plugin_settings["<section>"]`), or, outside a worker (a script, a
    test), with `pmq_core.load_plugin_settings("<section>", TheClass)`.

    Name the section after the plugin's entry point: 1-32 lowercase letters,
    digits and `_`. **Errors**, each naming the plugin, stop loading: a
    section name that is malformed or is one of pmq's own settings, a value
    that is not an attrs class, a section declared by two plugins, or two
    settings that would read the same environment variable.

    ```python
    import attrs
    from pmq_core import hookimpl

    @attrs.frozen(kw_only=True)
    class ThumbnailSettings:
        size: int = 256  # longest side, in pixels: PMQ_THUMBS_SIZE
        api_key: str | None = attrs.field(default=None, metadata={"secret": True})

    @hookimpl
    def pmq_register_settings():
        return {"thumbs": ThumbnailSettings}
    ```

    Returns:
        A dict mapping each section name to an attrs class.

    Since 0.2.
    """


@hookspec
def pmq_register_commands(cli: click.Group) -> None:
    """Add commands to the `pmq` command line with `cli.add_command(...)`.

    **When:** the `pmq` command starts and needs the plugin commands: a
    command name that is not built in, or the top-level `--help`. Built-in
    commands never load plugins, so a broken plugin cannot take them down.

    A plugin may not replace a built-in command (the attempt is reported and
    ignored); an exception is reported in one line, and the other plugins'
    commands still load.

    ```python
    import click

    @hookimpl
    def pmq_register_commands(cli):
        @cli.command("thumbs-purge")
        @click.option("--older-than", type=int, default=30)
        def purge(older_than):
            "Delete thumbnails older than N days."
    ```

    Args:
        cli: the top-level `click.Group` of `pmq`.

    Since 0.1.
    """


@hookspec
def pmq_serving_started(role: str, settings: Settings, plugin_settings: dict[str, Any]) -> None:
    """Called when a `pmq run`, `pmq worker` or `pmq migrator` process is
    about to serve: the place to start what belongs to the process rather
    than to one worker, such as a metrics endpoint.

    **When:** once per command, in its main process, after the plugins'
    settings were checked, the servers resolved and the schema found
    current, before the migrator or any worker starts. With
    `pmq run --processes N`, that is the process that runs the migrator,
    before it starts the worker processes: what it puts in `os.environ`
    then, they inherit. Worker processes do not call it (they call
    [`pmq_worker_started`][pmq_core.hookspecs.pmq_worker_started]), nor do
    embedded workers of the testing kit.

    Unlike the lifecycle hooks, an exception stops the command before it
    serves, with one line naming the plugin: an operator who asked for an
    endpoint must learn that it could not be opened.

    Args:
        role: `"run"` (migrator and workers), `"worker"` or `"migrator"`.
        settings: the `pmq_core.Settings` the process serves with.
        plugin_settings: every plugin's settings, by section.

    Since 0.2.
    """


# --------------------------------------------------------------------------
# Producer side
# --------------------------------------------------------------------------


@hookspec
def pmq_jobs_enqueued(queue: str, job_ids: list[uuid.UUID]) -> None:
    """Called after jobs were enqueued through `Client` or `AsyncClient`.

    **When:** in the producer's process, once per call and queue: `enqueue`
    calls it with one id, `enqueue_many` once with all of them. It is called
    after the write is sent: with a connection of the caller's (`conn=`),
    the caller's transaction may still roll back, so do not treat the ids as
    committed. Jobs inserted by plain SQL (from another program) do not call
    it.

    Called synchronously, also from `AsyncClient` (on its event loop): keep
    it quick.

    Args:
        queue: the queue name.
        job_ids: the new jobs' ids, in the order given.

    Since 0.1.
    """


@hookspec
def pmq_wrap_enqueue(queue: str, headers: dict[str, str]) -> Generator[None, Any, None]:
    """Wrap an enqueue call through `Client` or `AsyncClient`: a generator
    function that yields once. Use it to add headers to the jobs (trace
    context), or to time or trace the enqueue.

    **When:** in the producer's process, once per `enqueue` or
    `enqueue_many` call, around everything the call does: checking the
    payloads, then writing the jobs.

    - code before `yield` may add entries to `headers`: text names and text
      values, stored with every job of the call (schema migration 0009's
      `jobs.headers`, 4,096 bytes of JSON at most) and read by the worker as
      `job.headers`. Keep them small: headers over the
      limit, or not text, fail the enqueue with a `pmq_core.PayloadError`
      naming them, before anything is written;
    - `yield` gives back the new jobs' ids, or raises the enqueue's error
      (re-raise it, or let it pass through);
    - what the generator returns is ignored: the caller gets the ids.

    Like the lifecycle hooks, it cannot hurt an enqueue: an exception raised
    before `yield` is logged and that wrapper is left out (its headers
    too); one raised after is logged, and the caller still gets its ids.
    Wrappers nest in pluggy's order (the first called is the outermost).
    With a connection of the caller's (`conn=`), the ids are those of rows
    the caller's transaction may still roll back. Jobs inserted by plain
    SQL do not call it, and have no headers.

    ```python
    @hookimpl
    def pmq_wrap_enqueue(queue, headers):
        headers["tenant"] = current_tenant()
        try:
            ids = yield
        except Exception:
            enqueue_errors.inc()
            raise
        log.debug("enqueued %d job(s) on %s", len(ids), queue)
    ```

    Args:
        queue: the queue name.
        headers: the call's headers, empty when no wrapper added any:
            add to it before `yield`.

    Since 0.2.
    """


# --------------------------------------------------------------------------
# Worker side: the life of one attempt
# --------------------------------------------------------------------------


@hookspec
def pmq_worker_resources(settings: Settings, worker_id: uuid.UUID) -> dict[str, Any]:
    """Return the objects this plugin's handlers share in one worker
    process, by name: a connection pool, an HTTP or SMTP client.

    **When:** once per worker process, as it starts, before
    [`pmq_worker_started`][pmq_core.hookspecs.pmq_worker_started]; and once
    in its isolation child, which runs suspects.

    A handler reads them as `job.resources["<name>"]`, and `job.settings`
    is the worker's `pmq_core.Settings` (its `database_url`, say): no module
    globals set from a hook. When the worker has stopped (after
    `pmq_worker_stopped`), each value with an `aclose()` or `close()` method
    is closed. Make them lazy, so that a worker that never runs your
    handlers never connects: a `psycopg_pool.ConnectionPool(..., open=False)`
    opened on first use, say.

    Prefix the names with your plugin's name: two plugins returning one
    name stop the worker with an error naming both. A hook that raises is
    logged, and its handlers then fail on the missing name. Outside a
    worker (a test, a script), give a handler its resources yourself:
    `run_inline(job_type, payload, resources=plugin.pmq_worker_resources(settings))`.

    ```python
    from psycopg_pool import ConnectionPool

    @hookimpl
    def pmq_worker_resources(settings):
        return {"thumbs.db": ConnectionPool(settings.database_url, open=False)}

    def make_thumbnail(job):
        pool = job.resources["thumbs.db"]
        pool.open()  # does nothing once open
        with pool.connection() as conn:
            ...
    ```

    Args:
        settings: the `pmq_core.Settings` the worker runs with.
        worker_id: the worker's id.

    Returns:
        A dict of resource names to objects, merged with the other plugins'.

    Since 0.2.
    """


@hookspec
def pmq_worker_started(worker_id: uuid.UUID, queues: list[str], settings: Settings,
                       plugin_settings: dict[str, Any]) -> None:
    """Called when a worker has registered and is about to take jobs.

    **When:** once per worker, after it has registered itself (its heartbeat
    row exists) and just before it takes its first job. A worker's isolation
    child, which runs suspects, calls it too (with its worker's id) once it
    has loaded the plugins, and `pmq_worker_stopped` when it stops
    gracefully; it is killed outright after a suspect's timeout,
    cancellation or crash, without either call.

    Use it to check configuration and log what is missing (the webhook
    plugin logs an error here when its signing secret is not set). Objects
    handlers share (a connection pool, a client) come from
    [`pmq_worker_resources`][pmq_core.hookspecs.pmq_worker_resources]
    instead, which pmq closes for you. It cannot stop the worker: an
    exception is logged.

    Args:
        worker_id: the worker's id, as in the `pmq_workers` table and in
            `jobs.worker_id`.
        queues: the queues it serves.
        settings: the `pmq_core.Settings` it runs with.
        plugin_settings: every plugin's settings, by section
            ([`pmq_register_settings`][pmq_core.hookspecs.pmq_register_settings]),
            checked before the worker started (since 0.2).

    Since 0.1.
    """


@hookspec
def pmq_worker_stopping(worker_id: uuid.UUID) -> None:
    """Called when a worker stops taking jobs; it may still finish some.

    **When:** once per worker, on SIGTERM, Ctrl-C, or the stop event of an
    embedded worker. Jobs still running may finish after it, within the
    grace period (`shutdown_grace`, 30 s by default); those still running
    then are told to stop and given back to the queue (a job whose sync
    handler ignores that is given back for later, and the process ends
    without waiting for it, after `pmq_worker_stopped`).

    Flush buffers here; the last jobs may still need the worker's resources,
    which are closed only once it has stopped.

    Args:
        worker_id: the worker's id.

    Since 0.1.
    """


@hookspec
def pmq_worker_stopped(worker_id: uuid.UUID) -> None:
    """Called when a worker has stopped: every job it held has finished or
    been given back to the queue, and every outcome is recorded.

    **When:** once per worker, as its last act.

    The resources of
    [`pmq_worker_resources`][pmq_core.hookspecs.pmq_worker_resources] are
    still open here, and closed right after.

    Args:
        worker_id: the worker's id.

    Since 0.1.
    """


@hookspec
def pmq_job_started(job: JobContext) -> None:
    """Called when an attempt has been claimed, just before its handler runs.

    **When:** each attempt, after the worker has claimed the job in
    PostgreSQL and the stored payload has been structured into the job
    type's payload class, just before the wrappers and the handler run. (A
    stored payload that no longer fits its class fails the job without
    calling this hook.)

    Args:
        job: the running job.

    Since 0.1.
    """


@hookspec
def pmq_wrap_job(job: JobContext) -> Generator[None, Any, Any]:
    """Wrap a handler's execution: a generator function that yields once.

    **When:** each attempt, around the handler, sync or async alike:

    - code before `yield` runs just before the handler;
    - `yield` gives back the handler's result, or raises the handler's
      exception (including `TimeoutError` when the job's timeout passed, and
      `asyncio.CancelledError` when it is cancelled or a shutdown stops it:
      re-raise that one);
    - whatever the generator **returns** becomes the result, and whatever it
      **raises** becomes the attempt's error.

    So a wrapper that does not change anything must `return` what it
    received; a wrapper that ends without `return` makes the result `None`.

    **Nesting:** wrappers nest in the order every hook's implementations are
    called (pluggy's, stated in the rules at the top of the hook reference):
    the first called is the outermost. Each sees what the next inner one
    returned or raised.

    **Where it runs:** on the worker's event-loop thread, also for sync
    handlers (which run in a thread pool); context variables set before
    `yield` are visible to the handler. An exception raised before `yield`
    fails the attempt like a handler's exception. Use it for timing, tracing
    or context.

    ```python
    import time
    from pmq_core import hookimpl

    @hookimpl
    def pmq_wrap_job(job):
        started = time.perf_counter()
        try:
            result = yield
        except Exception as exc:
            metrics.failed(job.queue, type(exc).__name__)
            raise
        metrics.observe(job.queue, time.perf_counter() - started)
        return result
    ```

    Args:
        job: the running job.

    Since 0.1.
    """


@hookspec
def pmq_job_succeeded(job: JobContext, result: Any, duration: float) -> None:
    """Called after an attempt succeeded.

    **When:** each successful attempt, after the handler and the wrappers
    returned, before the outcome is written to PostgreSQL (so the job may not
    yet read as `completed` there).

    The result is not stored by pmq: a plugin that needs to keep it keeps it
    here.

    Args:
        job: the running job.
        result: what the handler returned, as the wrappers left it.
        duration: the seconds the handler and its wrappers took.

    Since 0.1.
    """


@hookspec
def pmq_job_failed(job: JobContext, error: BaseException, will_retry: bool, retry_in: float | None) -> None:
    """Called after an attempt failed.

    **When:** each failed attempt, before the outcome is written to
    PostgreSQL. An attempt fails when the handler (or a wrapper) raises, when
    the job's timeout passes (`error` is a `TimeoutError`), or when the
    stored payload no longer fits the payload class (`error` is
    `pmq_core.Fail`). For the last attempt it is called before
    [`pmq_job_dead`][pmq_core.hookspecs.pmq_job_dead].

    Args:
        job: the running job.
        error: the exception.
        will_retry: whether another attempt is scheduled: true when the
            retry policy retries this error (`pmq_core.Retry` always,
            `pmq_core.Fail` never, else the policy's `retry_on`) and attempts
            remain.
        retry_in: the seconds until that attempt (the `delay` of a `Retry`,
            else the policy's backoff); None when `will_retry` is false.

    Since 0.1.
    """


@hookspec
def pmq_job_dead(job: JobContext, error: BaseException) -> None:
    """Called when a job has failed for good and entered the dead-letter queue.

    **When:** whenever pmq ends a job dead, after the `failed` status has
    been written to PostgreSQL and the job pushed onto its queue's
    dead-letter list, from which an operator can replay it
    (`pmq dlq replay`):

    - in the worker, when its last attempt failed or it failed with no retry
      allowed (a suspect's attempt in the isolation child included), or its
      stored payload cannot be read;
    - in the worker or the leading migrator, when PostgreSQL refused to
      claim, record or move the job because of a value stored in it
      (`error` is a `pmq_core.Fail` saying so);
    - in the leading migrator, when its rescue ends the job dead because its
      workers died `max_rescues` times while holding it.

    Not for a job a program sets to `failed` by plain SQL, nor for those
    that schema migration 0004 ended dead (rows holding values pmq cannot
    read, found when upgrading from an older schema).

    Alerting belongs here, not in
    [`pmq_job_failed`][pmq_core.hookspecs.pmq_job_failed], which also fires
    for failures that will be retried.

    Args:
        job: the job as its last attempt saw it (outside an attempt: as
            stored, its payload structured when it fits its class).
        error: that attempt's exception (`pmq_core.WorkerLost` for a job
            the rescue ended dead, `pmq_core.Fail` for one pmq could not
            claim, record or move).

    Since 0.1.
    """
