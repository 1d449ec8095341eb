"""``pmq jobs``: list jobs, show one with its attempts, cancel one."""

from __future__ import annotations

import json

import click

from pmq_core.admin import Admin
from pmq_core.cli.output import (
    _check_queue,
    _deferred,
    _emit_json,
    _emit_listing,
    _seconds,
    _settings,
    _shorten,
    _table,
    _when,
    json_option,
)
from pmq_core.jobtypes import band_of
from pmq_core.models import Job, JobStatus


@click.group()
def jobs() -> None:
    """Look at and cancel jobs."""


@jobs.command("list")
@click.option("--queue", help="Only this queue's jobs.")
@click.option("--status", type=click.Choice([s.value for s in JobStatus]), help="Only jobs in this state.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@json_option
def jobs_list(queue: str | None, status: str | None, limit: int, as_json: bool) -> None:
    """The most recently changed jobs, latest first."""
    with Admin(_settings()) as admin:
        _check_queue(admin, queue)
        found = admin.jobs(queue=queue, status=status, limit=limit)
    _emit_listing(found, as_json, empty="no jobs", to_json=Job.to_dict,
                  headers=["ID", "QUEUE", "STATUS", "PRIORITY", "ATTEMPTS", "RUN AT", "LAST ERROR"],
                  row=lambda job: (job.id, job.queue_name, job.status.value, job.priority,
                                   f"{job.attempt_count}/{job.max_attempts}", _when(job.run_at),
                                   _shorten(job.last_error_message)))


@jobs.command("show")
@click.argument("job_id", metavar="ID")
@json_option
def jobs_show(job_id: str, as_json: bool) -> None:
    """One job and its attempts."""
    with Admin(_settings()) as admin:
        job, logs = admin.job(job_id)
    if as_json:
        _emit_json({"job": job.to_dict(), "logs": logs})
        return
    click.echo(_describe_job(job))
    click.echo("")
    if not logs:
        click.echo("no attempts yet")
        return
    click.echo(_table(["ATTEMPT", "STATUS", "STARTED", "DURATION", "MESSAGE"],
                      [(log["attempt_number"], log["status"], _when(log["started_at"]), _seconds(log["duration"]),
                        log["log_message"]) for log in logs]))


def _describe_job(job: Job) -> str:
    fields = [
        ("job", job.id), ("queue", job.queue_name), ("status", job.status.value),
        ("priority", f"{job.priority} ({band_of(job.priority)} band)"),
        ("attempts", f"{job.attempt_count} of {job.max_attempts}"),
        ("partition", job.partition_key or "(the queue's default)"),
        ("payload", json.dumps(job.payload, default=str)),
        ("run at", _when(job.run_at)), ("created at", _when(job.created_at)),
        ("started at", _when(job.started_at)), ("completed at", _when(job.completed_at)),
        ("failed at", _when(job.failed_at)), ("last error", job.last_error_message),
    ]
    return "\n".join(f"{name:<13}{'-' if value is None else value}" for name, value in fields)


@jobs.command("cancel")
@click.argument("job_id", metavar="ID")
def jobs_cancel(job_id: str) -> None:
    """Cancel a job that has not finished (a running one is told to stop)."""
    with Admin(_settings()) as admin:
        previous = admin.cancel(job_id)
        if previous is None:
            job, _logs = admin.job(job_id)
            click.echo(f"job {job.id} had already finished ({job.status.value}); nothing to cancel")
            return
    click.echo(f"cancelled job {job_id} (it was {previous})")
    _deferred(admin)
