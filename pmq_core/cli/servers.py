"""``pmq embedded`` and ``pmq demo``: the embedded servers pmq starts when
no server URL is set, and the demo that runs a workload on them (or on the
configured servers)."""

from __future__ import annotations

import logging

import click

from pmq_core.cli.output import _emit_json, _settings, _start_logging, _table, json_option, plugins_option
from pmq_core.redaction import redact_url


@click.group()
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


@click.command()
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
