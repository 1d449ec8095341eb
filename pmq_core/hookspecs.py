"""Every hook a pmq plugin can implement, grouped by when it runs.

A plugin is a module (or object) with functions marked ``@pmq_core.hookimpl``
whose names are the hooks below. An implementation may take fewer arguments
than the spec: pmq only ever adds arguments, so plugins keep working.

Lifecycle hooks run in the worker, once per event, on the hot path: keep them
quick, and do slow work elsewhere. An exception raised by a lifecycle hook is
logged and does not affect the job.
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

    Called once per process when plugins load. Each job type's ``name`` is
    its queue; two plugins declaring the same name stop start-up with an
    error naming both. Since 0.1.
    """


@hookspec
def pmq_register_migrations() -> list[Migration]:
    """Return the schema migrations this plugin owns (its own tables).

    ``pmq db upgrade`` applies them after the core's, in version order, each
    once, in its own transaction. Never alter the core's tables. Since 0.1.
    """


@hookspec
def pmq_register_commands(cli: click.Group) -> None:
    """Add commands to the ``pmq`` command line: ``cli.add_command(...)``.

    Called when the ``pmq`` command starts, with its top-level group. Since 0.1.
    """


# --------------------------------------------------------------------------
# Producer side
# --------------------------------------------------------------------------


@hookspec
def pmq_jobs_enqueued(queue: str, job_ids: list[uuid.UUID]) -> None:
    """Called after jobs were enqueued through pmq's client, once per call
    and queue (a bulk enqueue calls it once), after the write is sent.

    With a caller-supplied connection the caller's transaction may still
    roll back. Since 0.1.
    """


# --------------------------------------------------------------------------
# Worker side: the life of one attempt
# --------------------------------------------------------------------------


@hookspec
def pmq_worker_started(worker_id: uuid.UUID, queues: list[str], settings: Settings) -> None:
    """Called when a worker has registered and is about to take jobs. Since 0.1."""


@hookspec
def pmq_worker_stopping(worker_id: uuid.UUID) -> None:
    """Called when a worker stops taking jobs (it may still finish some). Since 0.1."""


@hookspec
def pmq_worker_stopped(worker_id: uuid.UUID) -> None:
    """Called when a worker has stopped: every job it held has finished or
    been given back, and every outcome is recorded. Close here what
    :func:`pmq_worker_started` opened. Since 0.1."""


@hookspec
def pmq_job_started(job: JobContext) -> None:
    """Called when an attempt has been claimed, just before its handler runs. Since 0.1."""


@hookspec
def pmq_wrap_job(job: JobContext) -> Generator[None, Any, Any]:
    """Wrap a handler's execution: a generator function that yields once.

    Code before ``yield`` runs just before the handler; ``yield`` gives back
    the handler's result or raises its exception; whatever the generator
    returns becomes the result. Wrappers nest in registration order (the
    first registered is outermost), around both sync and async handlers.
    Use it for timing, tracing or context. Since 0.1.
    """


@hookspec
def pmq_job_succeeded(job: JobContext, result: Any, duration: float) -> None:
    """Called after an attempt succeeded, with the handler's result and the
    seconds it took. Since 0.1."""


@hookspec
def pmq_job_failed(job: JobContext, error: BaseException, will_retry: bool, retry_in: float | None) -> None:
    """Called after an attempt failed (an exception or a timeout).

    ``will_retry`` says whether another attempt is scheduled, ``retry_in``
    in how many seconds. Called before :func:`pmq_job_dead` for the last
    attempt. Since 0.1.
    """


@hookspec
def pmq_job_dead(job: JobContext, error: BaseException) -> None:
    """Called when a job has failed for good and entered the dead-letter
    queue. Since 0.1."""
