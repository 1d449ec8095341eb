"""``pmq plugins`` and ``pmq new-plugin``: the installed plugins described,
and a new one written from the template; neither needs a server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from pmq_core import plugin_settings, scaffold
from pmq_core.cli.output import _emit_json, _settings, json_option, plugins_option
from pmq_core.plugins import Plugins


@click.command("plugins")
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


@click.command("new-plugin")
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
