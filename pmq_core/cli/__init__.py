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

The commands live in one module each by subject, their shared helpers in
:mod:`pmq_core.cli.output`; this module holds the root group and
:func:`main`, and attaches the commands to the group.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import click
import psycopg
import redis

from pmq_core import redaction
from pmq_core.cli import dead, enqueue, health, jobs, plugins, queues, schema, servers, serving
from pmq_core.cli.output import _warn
from pmq_core.config import Settings, configured_urls
from pmq_core.db import SCHEMA_MISSING, schema_error
from pmq_core.errors import PmqError
from pmq_core.plugins import Plugins


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


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return "; ".join(lines) or type(exc).__name__


cli.add_command(schema.db)
cli.add_command(serving.run)
cli.add_command(serving.worker)
cli.add_command(serving.migrator)
cli.add_command(enqueue.enqueue)
cli.add_command(jobs.jobs)
cli.add_command(queues.queues)
cli.add_command(dead.dlq)
cli.add_command(health.health)
cli.add_command(health.stats)
cli.add_command(plugins.plugins_command)
cli.add_command(plugins.new_plugin)
cli.add_command(servers.embedded)
cli.add_command(servers.demo)
