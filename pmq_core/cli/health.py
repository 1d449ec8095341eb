"""``pmq health`` and ``pmq stats``: the state of a deployment, as a verdict
with an exit status or as figures, with how each is drawn as text."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from pmq_core.admin import Admin
from pmq_core.cli.output import BAND_HEADERS, _bands, _emit_json, _seconds, _settings, _table, json_option
from pmq_core.health import EXIT_STATUS


@click.command()
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


@click.command()
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
