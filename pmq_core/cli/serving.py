"""``pmq run``, ``pmq worker`` and ``pmq migrator``: the commands that serve
the runtime until stopped, with the options plugins' settings add to them
and the checks made before serving."""

from __future__ import annotations

import functools
import os
from typing import Any

import click

from pmq_core import plugin_settings
from pmq_core.cli.output import _settings, _start_logging, plugins_option
from pmq_core.config import Settings
from pmq_core.errors import PluginError, PmqError, UnknownQueueError
from pmq_core.plugins import Plugins


class ServeCommand(click.Command):
    """A serving command (``run``, ``worker``, ``migrator``): besides its
    own options, one for each plugin setting declared with
    ``metadata={"option": ...}``, whose value goes into the setting's
    environment variable, read by this process and inherited by the worker
    processes it starts. Serving needs the plugins anyway; if they cannot
    load, the command reports it when it loads them itself."""

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        params = super().get_params(ctx)
        taken = {name for param in params for name in getattr(param, "opts", [])}
        return params + [option for option in _setting_options() if option.opts[0] not in taken]


@functools.cache
def _setting_options() -> tuple[click.Option, ...]:
    try:
        declared = Plugins(Settings.load().plugins).load().settings_classes
    except PmqError:
        return ()

    def to_environment(env: str) -> Any:
        def callback(_ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
            if value is not None:
                os.environ[env] = value
        return callback

    return tuple(click.Option([found.option], metavar="VALUE", expose_value=False, help=found.help,
                              callback=to_environment(found.env))
                 for found in plugin_settings.options(declared))


def _serving_started(role: str, settings: Settings, host: Plugins) -> None:
    """Tell the plugins that this process serves (``pmq_serving_started``);
    the first that fails stops the command, named."""
    for call in host.hooks.serving_started(role=role, settings=settings, plugin_settings=host.plugin_settings()):
        try:
            call()
        except Exception as exc:
            raise PluginError(f"plugin {call.plugin!r} failed as the {role} started: "
                              f"{type(exc).__name__}: {exc}") from None


def _serve_options(command: Any) -> Any:
    for option in reversed([
        plugins_option,
        click.option("--queues", metavar="Q1,Q2", help="Serve only these queues (default: every loaded job type)."),
        click.option("--concurrency", type=click.IntRange(min=1), help="Jobs one worker process runs at once."),
    ]):
        command = option(command)
    return command


def _names(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [name.strip() for name in value.split(",") if name.strip()]


def _prepared(plugins: str | None, queues: list[str] | None) -> tuple[Settings, Plugins]:
    """Settings with servers resolved, after checking that there is work to
    serve and the schema is current, and registering the job types'
    queues; and the loaded plugins."""
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
    return runner.prepare(settings, host), host


@click.command(cls=ServeCommand)
@_serve_options
@click.option("--processes", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes beside the migrator.")
def run(plugins: str | None, queues: str | None, concurrency: int | None, processes: int) -> None:
    """Run a migrator and workers until SIGTERM or Ctrl-C."""
    from pmq_core import runner

    _start_logging()
    queue_list = _names(queues)
    settings, host = _prepared(plugins, queue_list)
    _serving_started("run", settings, host)
    runner.run(settings, queue_list, concurrency, processes)


@click.command(cls=ServeCommand)
@_serve_options
def worker(plugins: str | None, queues: str | None, concurrency: int | None) -> None:
    """Run one worker (no migrator) until SIGTERM or Ctrl-C."""
    from pmq_core import runner

    _start_logging()
    queue_list = _names(queues)
    settings, host = _prepared(plugins, queue_list)
    _serving_started("worker", settings, host)
    runner.run_worker(settings, queue_list, concurrency)


@click.command(cls=ServeCommand)
@plugins_option
def migrator(plugins: str | None) -> None:
    """Run a migrator (leader, or standby while another leads) until SIGTERM or Ctrl-C."""
    from pmq_core import runner

    _start_logging()
    settings = _settings(plugins=plugins)
    host = Plugins(settings.plugins)
    settings = runner.prepare(settings, host)
    _serving_started("migrator", settings, host)
    runner.run_migrator(settings, host)
