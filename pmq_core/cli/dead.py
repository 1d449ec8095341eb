"""``pmq dlq``: list dead letters, replay them or purge them."""

from __future__ import annotations

from typing import Any

import click

from pmq_core.admin import Admin
from pmq_core.cli.output import _check_queue, _deferred, _emit_listing, _settings, _shorten, _when, json_option


@click.group()
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
    _emit_listing(rows, as_json, empty="no dead jobs", headers=["ID", "QUEUE", "ATTEMPTS", "FAILED AT", "ERROR"],
                  row=lambda row: (row["id"], row["queue_name"], row["attempt_count"], _when(row["failed_at"]),
                                   _shorten(row["last_error_message"])))


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
