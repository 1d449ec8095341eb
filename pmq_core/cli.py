"""The ``pmq`` command: run the runtime, enqueue jobs, and operate a deployment.

Each command is a thin layer over :mod:`pmq_core.admin`, :mod:`pmq_core.client`
and :mod:`pmq_core.runner`, with settings from :meth:`Settings.load`. Every
listing takes ``--json``. Errors are printed as one line on stderr
(``pmq: error: ...``) by :func:`main`, never as a traceback: exit status 2
for a usage error, 1 for anything else. An action whose change PostgreSQL
committed but whose Redis part could not be done exits 0 and says so in a
``pmq: warning: ...`` line naming what makes up for it. Plugins add commands through the
``pmq_register_commands`` hook, loaded only when a command name is not a
built-in one (or for ``--help``), so a broken plugin never takes the
built-in commands down.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

import click
import psycopg
import redis

from pmq_core import flow, payloads, plugin_settings, redaction, scaffold
from pmq_core.admin import UNCHANGED, Admin
from pmq_core.client import Client
from pmq_core.config import Settings, configured_urls
from pmq_core.db import SCHEMA_MISSING, schema_error
from pmq_core.errors import PayloadError, PluginError, PmqError, UnknownQueueError, shown
from pmq_core.health import EXIT_STATUS
from pmq_core.jobtypes import band_of
from pmq_core.keys import BANDS
from pmq_core.models import Job, JobStatus
from pmq_core.plugins import Plugins
from pmq_core.redaction import redact_url

#: Jobs written per round trip by ``pmq enqueue --file`` (all in one transaction).
ENQUEUE_BATCH = 1000


# -- the top-level group -------------------------------------------------------------


class PmqGroup(click.Group):
    """The ``pmq`` group: built-in commands, plus those plugins add, loaded
    once and only when needed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._plugin_commands_loaded = False

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load_plugin_commands()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and not self._plugin_commands_loaded:
            self._load_plugin_commands()
            command = super().get_command(ctx, cmd_name)
        return command

    def _load_plugin_commands(self) -> None:
        """Call every plugin's ``pmq_register_commands``; a plugin that fails
        is reported in one line and skipped, and none may replace a built-in
        command."""
        if self._plugin_commands_loaded:
            return
        self._plugin_commands_loaded = True
        try:
            plugins = Plugins(Settings.load().plugins).load()
        except PmqError as exc:
            _warn(f"plugin commands are unavailable: {_one_line(exc)}")
            return
        for call in plugins.hooks.register_commands(cli=self):
            built_in = dict(self.commands)
            try:
                call()
            except Exception as exc:  # a plugin's bug: report it, keep the rest of pmq usable
                _warn(f"plugin {call.plugin!r} failed to add its commands: {type(exc).__name__}: {exc}")
            for name, command in built_in.items():
                if self.commands.get(name) is not command:
                    _warn(f"plugin {call.plugin!r} tried to replace the command {name!r}; ignored")
                    self.commands[name] = command


@click.group(cls=PmqGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pmq", prog_name="pmq")
def cli() -> None:
    """pmq: background jobs that never get lost.

    Settings come from PMQ_* environment variables, [tool.pmq] in
    pyproject.toml or pmq.toml. With no server URL set, pmq starts embedded
    servers.
    """


def main(args: Sequence[str] | None = None) -> NoReturn:
    """Run ``pmq``; every failure becomes one line on stderr and an exit
    status, and no configured password is ever printed: the passwords of
    every server URL configured anywhere are scrubbed from all output."""
    redaction.remember(configured_urls())
    # The connection pool logs its retries as warnings; with no logging set
    # up (every command but the serving ones), Python would print them on
    # stderr ahead of the command's own one-line error.
    logging.getLogger("psycopg.pool").addHandler(logging.NullHandler())
    with redaction.scrubbed_output():
        try:
            code = cli.main(args=list(args) if args is not None else None, prog_name="pmq", standalone_mode=False)
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.ctx.get_help() if exc.ctx else exc.format_message())
            sys.exit(0)
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
            _fail(f"{exc.format_message()}{hint}", exc.exit_code)
        except click.ClickException as exc:
            _fail(exc.format_message(), exc.exit_code)
        except click.Abort:
            _fail("interrupted", 130)
        except SCHEMA_MISSING as exc:  # a statement not behind pmq's translation met a missing table
            _fail(str(schema_error(exc)), 1)
        except (PmqError, psycopg.Error, redis.RedisError, OSError) as exc:
            _fail(_one_line(exc), 1)
        except Exception as exc:  # a bug (pmq's, a plugin's or a library's): still one scrubbed line
            _fail(f"unexpected {type(exc).__name__}: {_one_line(exc)}", 1)
        sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"pmq: error: {message}", err=True)
    sys.exit(code)


def _warn(message: str) -> None:
    click.echo(f"pmq: warning: {message}", err=True)


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return "; ".join(lines) or type(exc).__name__


# -- shared helpers ----------------------------------------------------------------


def _settings(**overrides: Any) -> Settings:
    return Settings.load(**overrides)


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, default=str, indent=2))


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    cells = [list(headers)] + [["-" if value is None else str(value) for value in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in cells)
    return "\n".join(line.rstrip() for line in lines)


def _when(value: datetime | None) -> str | None:
    return value.isoformat(sep=" ", timespec="seconds") if value else None


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}s"


def _names(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [name.strip() for name in value.split(",") if name.strip()]


def _check_queue(admin: Admin, name: str | None) -> None:
    if name is not None and name not in admin.queue_names():
        raise UnknownQueueError(f"unknown queue {shown(name)} (see `pmq queues list`)")


def _deferred(admin: Admin) -> None:
    """Say what an action left undone in Redis, and what makes up for it."""
    for sentence in admin.deferred:
        _warn(sentence)


#: The column headers of a queue's depth by band.
BAND_HEADERS = [band.upper() for band in BANDS]


def _bands(bands: dict[str, int]) -> list[int]:
    """A queue's depth by band, in the order of :data:`BAND_HEADERS`."""
    return [bands.get(band, 0) for band in BANDS]


json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
plugins_option = click.option("--plugins", metavar="A,B",
                              help="Entry-point names of the plugins to load (overrides PMQ_PLUGINS).")


# -- db --------------------------------------------------------------------------


@cli.group()
def db() -> None:
    """The database schema."""


@db.command("upgrade")
@plugins_option
def db_upgrade(plugins: str | None) -> None:
    """Apply pending schema migrations: the core's and the loaded plugins'."""
    settings = _settings(plugins=plugins)
    host = Plugins(settings.plugins).load()
    with Admin(settings) as admin:
        applied = admin.upgrade(host)
    if not applied:
        click.echo("schema is up to date")
    for migration in applied:
        click.echo(f"applied {migration.component} {migration.version:04d} {migration.name}")


# -- running the runtime --------------------------------------------------------------


def _serve_options(command: Any) -> Any:
    for option in reversed([
        plugins_option,
        click.option("--queues", metavar="Q1,Q2", help="Serve only these queues (default: every loaded job type)."),
        click.option("--concurrency", type=click.IntRange(min=1), help="Jobs one worker process runs at once."),
    ]):
        command = option(command)
    return command


def _start_logging(level: int = logging.INFO,
                   fmt: str = "%(asctime)s %(processName)s %(name)s %(levelname)s %(message)s") -> None:
    """Log to stderr, through the filter that hides passwords."""
    logging.basicConfig(level=level, stream=sys.stderr, format=fmt)
    redaction.guard_logging()


def _prepared(plugins: str | None, queues: list[str] | None) -> Settings:
    """Settings with servers resolved, after checking that there is work to
    serve and the schema is current, and registering the job types' queues."""
    from pmq_core import runner

    settings = _settings(plugins=plugins)
    host = Plugins(settings.plugins).load()
    if not host.job_types:
        raise PluginError("no job types to serve: install or select a plugin that declares some "
                          "(see `pmq plugins`)")
    unknown = [name for name in queues or [] if name not in host.job_types]
    if unknown:
        raise UnknownQueueError(f"no loaded plugin declares queue(s) {', '.join(unknown)}; "
                                f"loaded job types: {', '.join(sorted(host.job_types))}")
    return runner.prepare(settings, host)


@cli.command()
@_serve_options
@click.option("--processes", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes beside the migrator.")
def run(plugins: str | None, queues: str | None, concurrency: int | None, processes: int) -> None:
    """Run a migrator and workers until SIGTERM or Ctrl-C."""
    from pmq_core import runner

    _start_logging()
    queue_list = _names(queues)
    settings = _prepared(plugins, queue_list)
    runner.run(settings, queue_list, concurrency, processes)


@cli.command()
@_serve_options
def worker(plugins: str | None, queues: str | None, concurrency: int | None) -> None:
    """Run one worker (no migrator) until SIGTERM or Ctrl-C."""
    from pmq_core import runner

    _start_logging()
    queue_list = _names(queues)
    settings = _prepared(plugins, queue_list)
    runner.run_worker(settings, queue_list, concurrency)


@cli.command()
@plugins_option
def migrator(plugins: str | None) -> None:
    """Run a migrator (leader, or standby while another leads) until SIGTERM or Ctrl-C."""
    from pmq_core import runner

    _start_logging()
    settings = _settings(plugins=plugins)
    host = Plugins(settings.plugins)
    settings = runner.prepare(settings, host)
    runner.run_migrator(settings, host)


# -- enqueue -----------------------------------------------------------------------


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


@cli.command()
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


# -- jobs --------------------------------------------------------------------------


@cli.group()
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
    if as_json:
        _emit_json([job.to_dict() for job in found])
        return
    if not found:
        click.echo("no jobs")
        return
    click.echo(_table(
        ["ID", "QUEUE", "STATUS", "PRIORITY", "ATTEMPTS", "RUN AT", "LAST ERROR"],
        [(job.id, job.queue_name, job.status.value, job.priority, f"{job.attempt_count}/{job.max_attempts}",
          _when(job.run_at), _shorten(job.last_error_message)) for job in found]))


def _shorten(text: str | None, width: int = 60) -> str | None:
    if text is None:
        return None
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 1] + "…"


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


# -- queues ------------------------------------------------------------------------


@cli.group()
def queues() -> None:
    """List, pause, resume and limit queues."""


@queues.command("list")
@json_option
def queues_list(as_json: bool) -> None:
    """Every queue with its depth: waiting, in Redis by band, running, dead."""
    with Admin(_settings()) as admin:
        rows = admin.queues()
    if as_json:
        _emit_json(rows)
        return
    if not rows:
        click.echo("no queues (they appear when a plugin's job types are registered)")
        return
    click.echo(_table(
        ["QUEUE", "STATE", "PRIORITY", "WAITING", "HELD", *BAND_HEADERS, "RUNNING", "DEAD"],
        [(row["name"], "active" if row["is_active"] else "paused", row["default_priority"], row["waiting"],
          row["held"], *_bands(row["bands"]), row["running"], row["dead"]) for row in rows]))


@queues.command("pause")
@click.argument("queue")
def queues_pause(queue: str) -> None:
    """Stop starting QUEUE's jobs (running ones finish; waiting ones wait,
    those workers claimed ahead of a free slot included)."""
    with Admin(_settings()) as admin:
        admin.set_active(queue, False)
    click.echo(f"paused {queue}")
    _deferred(admin)


@queues.command("resume")
@click.argument("queue")
def queues_resume(queue: str) -> None:
    """Start QUEUE's jobs again."""
    with Admin(_settings()) as admin:
        admin.set_active(queue, True)
    click.echo(f"resumed {queue}")


@queues.command("limit")
@click.argument("queue")
@click.option("--concurrency", metavar="N|none", callback=lambda c, p, v: _limit_value(v, _count, p),
              help="At most N jobs running at once, across every worker ('none' lifts the cap).")
@click.option("--rate", metavar="N/PERIOD|none", callback=lambda c, p, v: _limit_value(v, flow.Rate.parse, p),
              help="At most N starts per PERIOD (s, m, h, d or the word, e.g. 100/s, 500/day; 'none' lifts it).")
@click.option("--per-partition", is_flag=True, help="Limit each partition of QUEUE, not the whole queue.")
@click.option("--partition", metavar="KEY", help="Limit this one partition (overrides --per-partition's limit).")
def queues_limit(queue: str, concurrency: Any, rate: Any, per_partition: bool, partition: str | None) -> None:
    """Limit QUEUE (or each of its partitions, or one): applied by every
    migrator within a pass, stored in PostgreSQL. A limit not given keeps
    its current setting."""
    if concurrency is UNCHANGED and rate is UNCHANGED:
        raise click.UsageError("give --concurrency and/or --rate")
    if per_partition and partition is not None:
        raise click.UsageError("give --per-partition or --partition, not both")
    with Admin(_settings()) as admin:
        try:
            row = admin.set_limit(queue, partition=partition, each_partition=per_partition,
                                  concurrency=concurrency, rate=rate)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="'--partition'") from None
    click.echo(f"{_scope_text(row)}: {row.limit.describe()}")


@queues.command("limits")
@click.argument("queue", required=False)
@json_option
def queues_limits(queue: str | None, as_json: bool) -> None:
    """The limits in force (of QUEUE, or every queue), and where each comes
    from: a job type's declaration or an operator."""
    with Admin(_settings()) as admin:
        rows = admin.limits(queue)
    in_force = flow.effective(rows)
    listed = [{"queue": r.queue, "scope": r.scope, "partition": r.partition or None, "origin": r.origin,
               "concurrency": r.limit.concurrency, "rate": str(r.limit.rate) if r.limit.rate else None,
               "in_force": in_force[(r.queue, r.scope, r.partition)] is r} for r in rows]
    if as_json:
        _emit_json(listed)
        return
    if not listed:
        click.echo("no limits")
        return
    click.echo(_table(["QUEUE", "SCOPE", "CONCURRENCY", "RATE", "ORIGIN"],
                      [(r["queue"], r["scope"] if r["partition"] is None else f"partition {r['partition']}",
                        r["concurrency"] or "-", r["rate"] or "-",
                        r["origin"] if r["in_force"] else f"{r['origin']} (overridden)") for r in listed]))


@queues.command("unlimit")
@click.argument("queue")
@click.option("--per-partition", is_flag=True, help="Only the limit of each partition.")
@click.option("--partition", metavar="KEY", help="Only this partition's limit.")
@click.option("--keep-declared", is_flag=True,
              help="Remove operators' limits only, back to the job type's declared ones.")
def queues_unlimit(queue: str, per_partition: bool, partition: str | None, keep_declared: bool) -> None:
    """Lift QUEUE's limits (declared ones too, unless --keep-declared)."""
    if per_partition and partition is not None:
        raise click.UsageError("give --per-partition or --partition, not both")
    with Admin(_settings()) as admin:
        try:
            lifted = admin.unlimit(queue, partition=partition, each_partition=per_partition,
                                   keep_declared=keep_declared)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="'--partition'") from None
    for row in lifted:
        click.echo(f"lifted {_scope_text(row)}: {row.limit.describe()} ({row.origin})")
    if not lifted:
        click.echo(f"{queue} had no limits in force")


def _count(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 2**31 - 1:
        raise ValueError(f"{shown(text)} is not a whole number from 1 to {2**31 - 1}")
    return int(text)


def _limit_value(text: str | None, parse: Callable[[str], Any], param: click.Parameter) -> Any:
    """An option of `pmq queues limit`: unchanged when absent, None for 'none'."""
    if text is None:
        return UNCHANGED
    if text.strip().lower() == "none":
        return None
    try:
        return parse(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param=param) from None


def _scope_text(row: flow.LimitRow) -> str:
    if row.scope == flow.QUEUE:
        return row.queue
    if row.scope == flow.EACH:
        return f"each partition of {row.queue}"
    return f"partition {row.partition} of {row.queue}"


# -- dead letters ------------------------------------------------------------------


@cli.group()
def dlq() -> None:
    """Dead letters: jobs that failed for good."""


@dlq.command("list")
@click.option("--queue", help="Only this queue's dead jobs.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@json_option
def dlq_list(queue: str | None, limit: int, as_json: bool) -> None:
    """Dead jobs, most recent failure first."""
    with Admin(_settings()) as admin:
        _check_queue(admin, queue)
        rows = admin.dead(queue=queue, limit=limit)
    if as_json:
        _emit_json(rows)
        return
    if not rows:
        click.echo("no dead jobs")
        return
    click.echo(_table(["ID", "QUEUE", "ATTEMPTS", "FAILED AT", "ERROR"],
                      [(row["id"], row["queue_name"], row["attempt_count"], _when(row["failed_at"]),
                        _shorten(row["last_error_message"])) for row in rows]))


def _dead_selection(ids: tuple[str, ...], queue: str | None, everything: bool) -> dict[str, Any]:
    if sum((bool(ids), queue is not None, everything)) != 1:
        raise click.UsageError("choose the dead jobs: give job ids, --queue QUEUE or --all (exactly one)")
    return {"ids": list(ids) if ids else None, "queue": queue}


def _dead_command(name: str, verb: str, summary: str) -> None:
    @dlq.command(name, help=summary)
    @click.argument("ids", nargs=-1, metavar="[ID]...")
    @click.option("--queue", help="Every dead job of this queue.")
    @click.option("--all", "everything", is_flag=True, help="Every dead job.")
    def action(ids: tuple[str, ...], queue: str | None, everything: bool) -> None:
        selection = _dead_selection(ids, queue, everything)
        with Admin(_settings()) as admin:
            _check_queue(admin, queue)
            done = getattr(admin, name)(**selection)
        click.echo(f"{verb} {len(done)} dead job(s)")
        _deferred(admin)


_dead_command("replay", "replayed", "Send dead jobs back to their queue, their attempts reset.")
_dead_command("purge", "purged", "Delete dead jobs and their logs for good.")


# -- health and statistics -------------------------------------------------------------


@cli.command()
@json_option
@click.pass_context
def health(ctx: click.Context, as_json: bool) -> None:
    """Servers, schema, migrator, queues, dead letters and workers, with a verdict.

    Exit status: 0 healthy, 1 warning, 2 critical (docs/reliability.md lists
    which finding gives which).
    """
    with Admin(_settings()) as admin:
        report = admin.health()
    if as_json:
        _emit_json(report)
    else:
        click.echo(_render_health(report))
    ctx.exit(EXIT_STATUS[report["status"]])


def _server_line(name: str, info: dict[str, Any]) -> str:
    state = "ok" if info["ok"] else f"UNREACHABLE ({info.get('error', 'no answer')})"
    return f"{name:<11}{info['url']}  {state}"


def _migrator_line(report: dict[str, Any]) -> str:
    leader = report["migrator"]
    if leader is None:
        return "migrator:  " + ("none leads" if report["postgres"]["ok"] else "unknown")
    if leader["hostname"] is None:
        return f"migrator:  PostgreSQL backend {leader['backend_pid']} leads (no liveness beat)"
    return (f"migrator:  {leader['hostname']} pid {leader['pid']} leads (for {_age(leader['leading_for'])}, "
            f"last round {_age(leader['beat_age'])} ago)")


def _worker_line(w: dict[str, Any]) -> str:
    line = (f"  {w['hostname']} pid {w['pid']}: {w['running']}/{w['concurrency']} running, "
            f"{w['claimed_ahead']} claimed ahead, serving {', '.join(w['queues'])}")
    if not w["redis_ok"]:
        line += f"; CANNOT REACH REDIS for {_age(w['redis_error_age'])} ({w['redis_error']})"
    return line


def _render_health(report: dict[str, Any]) -> str:
    lines = [_server_line("PostgreSQL", report["postgres"]), _server_line("Redis", report["redis"])]
    if report["schema"] is not None:
        pending = report["schema"]["pending"]
        lines.append("schema:    " + ("up to date" if not pending else f"{len(pending)} migration(s) not applied"))
    lines += [_migrator_line(report), ""]
    if report["queues"]:
        lines.append(_table(
            ["QUEUE", "STATE", "WAITING", *BAND_HEADERS, "RUNNING", "DEAD", "OLDEST", "SERVED"],
            [(q["name"], "active" if q["active"] else "paused", q["waiting"], *_bands(q["bands"]), q["running"],
              q["dead"], _age(q["oldest_age"]), "yes" if q["served"] else "no") for q in report["queues"]]))
    else:
        lines.append("no queues")
    lines += ["", f"dead letters: {report['dead_letters']}",
              f"oldest waiting job: {_age(report['oldest_job_age'])}",
              f"live workers: {len(report['workers'])}"]
    lines += [_worker_line(w) for w in report["workers"]]
    for title, items in (("problems", report["problems"]), ("warnings", report["warnings"])):
        if items:
            lines += ["", f"{title}:"] + [f"  - {item}" for item in items]
    lines += ["", f"overall: {report['status']}"]
    return "\n".join(lines)


@cli.command()
@click.option("--minutes", type=click.IntRange(min=1), default=1, show_default=True,
              help="Window for throughput, failures and timings.")
@click.option("--watch", is_flag=True, help="Redraw until Ctrl-C.")
@click.option("--interval", type=click.FloatRange(min=0.01), default=2.0, show_default=True,
              help="Seconds between redraws with --watch.")
@click.option("--iterations", type=click.IntRange(min=1), hidden=True, help="Stop --watch after this many redraws.")
@json_option
def stats(minutes: int, watch: bool, interval: float, iterations: int | None, as_json: bool) -> None:
    """Depth by queue and band, throughput, failures and processing times."""
    drawn = 0
    with Admin(_settings()) as admin:
        try:
            while True:
                data = admin.stats(minutes)
                if as_json:
                    click.echo(json.dumps(data, default=str))
                else:
                    if watch:
                        click.clear()
                    click.echo(_render_stats(data))
                drawn += 1
                if not watch or (iterations is not None and drawn >= iterations):
                    break
                if not as_json:
                    click.echo(f"\n(every {interval:g}s; Ctrl-C to stop)")
                time.sleep(interval)
        except KeyboardInterrupt:
            pass


def _render_stats(data: dict[str, Any]) -> str:
    window = data["window_minutes"]
    lines = [
        f"last {window} minute(s): processed {data['processed_per_minute']:.1f}/min, "
        f"created {data['created_per_minute']:.1f}/min",
        f"failed {data['failed']}, retried {data['retried']}, error rate {data['error_rate']:.1%}",
        f"processing time: avg {_seconds(data['avg_seconds'])}, p50 {_seconds(data['p50_seconds'])}, "
        f"p95 {_seconds(data['p95_seconds'])}",
        f"live workers: {data['active_workers']}, utilisation {data['utilisation']:.0%}, "
        f"{data['claimed_ahead']} job(s) claimed ahead of a free slot",
        "",
    ]
    if data["queues"]:
        lines.append(_table(
            ["QUEUE", "STATE", "WAITING", "HELD", "IN REDIS", *BAND_HEADERS, "RUNNING", "DEAD"],
            [(q["name"], "active" if q["active"] else "paused", q["waiting"], q["held"], q["in_redis"],
              *_bands(q["bands"]), q["running"], q["dead"]) for q in data["queues"]]))
    else:
        lines.append("no queues")
    return "\n".join(lines)


# -- plugins -----------------------------------------------------------------------


@cli.command("plugins")
@plugins_option
@json_option
def plugins_command(plugins: str | None, as_json: bool) -> None:
    """Installed plugins, the job types they declare and their settings,
    secrets masked (no server needed)."""
    host = Plugins(_settings(plugins=plugins).plugins).load()
    values = host.plugin_settings()
    described = [{**info.describe(), "settings": {section: plugin_settings.describe(section, values[section])
                                                  for section in info.settings}} for info in host.infos]
    if as_json:
        _emit_json(described)
        return
    if not described:
        click.echo("no plugins installed (plugins register under the 'pmq' entry-point group)")
        return
    blocks = []
    for info in described:
        origin = f"{info['distribution']} {info['version']}" if info["distribution"] else "not installed"
        lines = [f"{info['name']} ({origin})", f"  hooks: {', '.join(info['hooks']) or 'none'}"]
        for job_type in info["job_types"]:
            lines.append(f"  {_describe_job_type(job_type)}")
        for section, rows in info["settings"].items():
            lines.append(f"  settings [{section}]:")
            lines.extend(f"    {row['name']} = {_setting_value(row['value'])}  ({row['type']}; {row['env']})"
                         for row in rows)
        blocks.append("\n".join(lines))
    click.echo("\n\n".join(blocks))


def _setting_value(value: Any) -> str:
    return "(unset)" if value is None else json.dumps(value)


def _describe_job_type(d: dict[str, Any]) -> str:
    retry = d["retry"]
    timeout = "no timeout" if d["timeout"] is None else f"timeout {d['timeout']:g}s"
    parts = [
        f"job type {d['name']}: priority {d['priority']} ({d['band']} band)",
        "async" if d["async"] else "sync",
        timeout,
        f"retry up to {retry['max_attempts']} attempt(s) on {', '.join(retry['retry_on'])}, "
        f"backoff {retry['base_delay']:g}s x 2^n up to {retry['max_delay']:g}s, +/-{retry['jitter']:.0%}",
    ]
    if d["payload"]:
        parts.append(f"payload {d['payload']}")
    if d["cron"]:
        parts.append(f"cron {d['cron']}")
    if d["limits"]:
        parts.append(f"limits: queue {d['limits']['queue']}, each partition {d['limits']['each']}")
    return "; ".join(parts)


def _plugin_name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        return scaffold.check_name(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@cli.command("new-plugin")
@click.argument("name", callback=_plugin_name)
@click.option("--directory", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Where to create pmq-NAME/.")
def new_plugin(name: str, directory: Path) -> None:
    """Write a ready plugin package, pmq-NAME/: a typed job type with its own
    table, a test using pmq's testing kit, a README and a pyproject that
    ships sql/ in the wheel. Refuses a directory that exists (no server
    needed)."""
    target = scaffold.new_plugin(name, directory)
    click.echo(f"created {target}/: cd into it, then pip install -e '.[test]' && pytest")


# -- embedded servers --------------------------------------------------------------


@cli.group()
def embedded() -> None:
    """The embedded servers pmq starts when no server URL is set."""


@embedded.command("status")
@json_option
def embedded_status(as_json: bool) -> None:
    """Whether each embedded server runs, and where."""
    from pmq_core import embedded as servers

    report = servers.status(_settings().data_dir)
    if as_json:
        _emit_json(report)
        return
    click.echo(_table(["SERVER", "STATE", "PID", "URL", "DATA"],
                      [(name, "running" if s["running"] else "stopped", s["pid"],
                        redact_url(s["url"]) if s["url"] else None, s["data"]) for name, s in report.items()]))


@embedded.command("stop")
def embedded_stop() -> None:
    """Stop the embedded servers (their data is kept)."""
    from pmq_core import embedded as servers

    stopped = servers.stop(_settings().data_dir)
    click.echo(f"stopped {', '.join(stopped)}" if stopped else "no embedded server was running")


# -- demo --------------------------------------------------------------------------


@cli.command()
@plugins_option
@click.pass_context
def demo(ctx: click.Context, plugins: str | None) -> None:
    """Run a realistic mix of jobs on this machine and summarise what happened.

    With no server URL set, embedded servers are started first.
    """
    from pmq_core import demo as demo_run

    _start_logging(logging.WARNING, "%(levelname)s %(name)s: %(message)s")
    settings = _settings(plugins=plugins)
    summary = demo_run.run(settings)
    click.echo(summary.render())
    ctx.exit(0 if summary.finished else 1)


if __name__ == "__main__":
    main()
