"""``pmq enqueue``: one job from a JSON argument, or a JSON-lines file of
them written all or none, read a batch at a time."""

from __future__ import annotations

import itertools
import json
import os
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import click

from pmq_core import payloads
from pmq_core.admin import Admin
from pmq_core.cli.output import _check_queue, _settings, plugins_option
from pmq_core.client import Client
from pmq_core.errors import PayloadError, shown

#: Jobs written per round trip by ``pmq enqueue --file`` (all in one transaction).
ENQUEUE_BATCH = 1000


class AwareDateTime(click.ParamType):  # type: ignore[type-arg]  # generic only in recent click
    """An ISO 8601 time with a time zone (a naive time is ambiguous)."""

    name = "time"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            self.fail(f"{shown(value)} is not an ISO 8601 time, e.g. 2030-01-31T09:00:00+00:00", param, ctx)
        if parsed.tzinfo is None or parsed.utcoffset() is None:
            self.fail(f"{shown(value)} has no time zone; add one, e.g. +00:00 or Z at its end", param, ctx)
        return parsed


def _json_object(text: str) -> dict[str, Any]:
    """A JSON object from ``text``, or ValueError saying what is wrong."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"malformed JSON: {exc.msg} at column {exc.colno}") from None
    except RecursionError:  # the decoder's own limit, far beyond a payload's
        raise ValueError(f"a payload may be nested at most {payloads.MAX_DEPTH} levels deep") from None
    if not isinstance(value, dict):
        raise ValueError(f"a payload must be a JSON object, not {type(value).__name__}")
    return value


def _read_jobs(handle: BinaryIO, name: str, max_line: int) -> Iterator[tuple[int, dict[str, Any]]]:
    """Each payload of a JSON-lines file with its line number (blank lines
    skipped), or PayloadError naming the first bad line. No line is read
    beyond ``max_line`` bytes, so a file with no line break (``/dev/zero``)
    cannot fill memory."""
    for number in itertools.count(1):
        raw = handle.readline(max_line + 1)
        if not raw:
            return
        if len(raw) > max_line and not raw.endswith(b"\n"):
            raise PayloadError(f"{name} line {number}: longer than {max_line} bytes (twice max_payload_bytes); "
                               "nothing was enqueued")
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PayloadError(f"{name} is not UTF-8 text ({exc.reason} on line {number}); "
                               "nothing was enqueued") from None
        if not line.strip():
            continue
        try:
            yield number, _json_object(line)
        except ValueError as exc:
            raise PayloadError(f"{name} line {number}: {exc}; nothing was enqueued") from None


@click.command()
@click.argument("queue")
@click.argument("payload", required=False, metavar="[JSON]")
@click.option("--file", "jobs_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Enqueue one job per line of this JSON-lines file (all or none; "
                   "lines of at most twice max_payload_bytes).")
@click.option("--priority", type=int, help="Lower runs sooner (default: the job type's).")
@click.option("--delay", type=click.FloatRange(min=0), metavar="SECONDS", help="Run no sooner than this.")
@click.option("--at", "run_at", type=AwareDateTime(), help="Run at this ISO 8601 time (with a time zone).")
@click.option("--max-attempts", type=click.IntRange(min=1), help="Attempts before the job is dead.")
@click.option("--partition", metavar="KEY",
              help="The job's partition, for per-partition limits and fair turns (default: the job type's rule).")
@plugins_option
def enqueue(queue: str, payload: str | None, jobs_file: Path | None, priority: int | None, delay: float | None,
            run_at: datetime | None, max_attempts: int | None, partition: str | None, plugins: str | None) -> None:
    """Enqueue a job on QUEUE with a JSON payload and print its id, or
    enqueue a file of them with --file and print how many."""
    if (payload is None) == (jobs_file is None):
        raise click.UsageError("give a JSON payload or --file, not both and not neither")
    if delay is not None and run_at is not None:
        raise click.UsageError("give --delay or --at, not both")
    options: dict[str, Any] = {"priority": priority, "delay": delay, "run_at": run_at, "max_attempts": max_attempts,
                               "partition": partition}
    with Client(_settings(plugins=plugins)) as client:
        if payload is not None:
            try:
                data = _json_object(payload)
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint="'JSON'") from None
            click.echo(client.enqueue(queue, data, **options))
            return
        assert jobs_file is not None
        count = _enqueue_file(client, queue, jobs_file, options)
    click.echo(f"enqueued {count} job(s) on {queue}")


def _checked(client: Client, queue: str, name: str, batch: list[tuple[int, dict[str, Any]]],
             options: dict[str, Any]) -> list[dict[str, Any]]:
    """The batch's payloads, each checked alone so that an error names its line."""
    for number, item in batch:
        try:
            client.prepare(queue, [item], unique_key=None, **options)
        except PayloadError as exc:
            raise PayloadError(f"{name} line {number}: {exc}; nothing was enqueued") from None
    return [item for _number, item in batch]


def _enqueue_file(client: Client, queue: str, path: Path, options: dict[str, Any]) -> int:
    """Read, check and write the file a batch at a time, in one transaction:
    a bad line anywhere rolls everything back, and memory holds one batch
    whatever the file's size. The first batch is checked before connecting."""
    count = 0
    with path.open("rb") as handle:
        lines = _read_jobs(handle, path.name, 2 * client.settings.max_payload_bytes)
        batch = _checked(client, queue, path.name, list(itertools.islice(lines, ENQUEUE_BATCH)), options)
        if not batch:
            return 0
        if client.plugins.job_type(queue) is None:
            with Admin(client.settings) as admin:
                _check_queue(admin, queue)
        size = os.fstat(handle.fileno()).st_size
        with client.pool.connection() as conn, conn.transaction(), click.progressbar(
                length=size, label="enqueueing", file=sys.stderr) as bar:
            while batch:
                client.enqueue_many(queue, batch, conn=conn, **options)
                count += len(batch)
                bar.update(handle.tell() - bar.pos)
                batch = _checked(client, queue, path.name, list(itertools.islice(lines, ENQUEUE_BATCH)), options)
    return count
