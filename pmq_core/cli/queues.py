"""``pmq queues``: list, pause and resume queues, and set, list and lift
their flow-control limits."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from pmq_core import flow
from pmq_core.admin import UNCHANGED, Admin
from pmq_core.cli.output import BAND_HEADERS, _bands, _deferred, _emit_listing, _settings, json_option
from pmq_core.errors import shown


@click.group()
def queues() -> None:
    """List, pause, resume and limit queues."""


@queues.command("list")
@json_option
def queues_list(as_json: bool) -> None:
    """Every queue with its depth: waiting, in Redis by band, running, dead."""
    with Admin(_settings()) as admin:
        rows = admin.queues()
    _emit_listing(rows, as_json, empty="no queues (they appear when a plugin's job types are registered)",
                  headers=["QUEUE", "STATE", "PRIORITY", "WAITING", "HELD", *BAND_HEADERS, "RUNNING", "DEAD"],
                  row=lambda row: (row["name"], "active" if row["is_active"] else "paused", row["default_priority"],
                                   row["waiting"], row["held"], *_bands(row["bands"]), row["running"], row["dead"]))


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
    _emit_listing(listed, as_json, empty="no limits", headers=["QUEUE", "SCOPE", "CONCURRENCY", "RATE", "ORIGIN"],
                  row=lambda r: (r["queue"], r["scope"] if r["partition"] is None else f"partition {r['partition']}",
                                 r["concurrency"] or "-", r["rate"] or "-",
                                 r["origin"] if r["in_force"] else f"{r['origin']} (overridden)"))


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
