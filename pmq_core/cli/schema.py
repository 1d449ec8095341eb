"""``pmq db``: the database schema, kept apart as the one command that
changes it."""

from __future__ import annotations

import click

from pmq_core.admin import Admin
from pmq_core.cli.output import _settings, plugins_option
from pmq_core.plugins import Plugins


@click.group()
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
