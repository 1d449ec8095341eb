"""The pmq-dashboard plugin: its settings and the ``pmq dashboard`` command.

Installed, it is the entry point ``dashboard`` of the ``pmq`` group (the
module-level :data:`plugin`). It declares no job type: it only reads and
operates the deployment the settings name, through :class:`pmq_core.Admin`.
"""

from __future__ import annotations

import sys
import threading

import attrs
import click
import uvicorn

from pmq_core import Admin, Settings, hookimpl, load_plugin_settings, run_demo
from pmq_dashboard import security
from pmq_dashboard.app import create_app

#: The settings section: ``[tool.pmq.dashboard]``, ``PMQ_DASHBOARD_*``.
SECTION = "dashboard"


@attrs.frozen(kw_only=True)
class DashboardSettings:
    """Where the dashboard listens and who may open it."""

    token: str | None = attrs.field(default=None, metadata={"secret": True})
    """The token a browser logs in with (or a script sends as ``Authorization:
    Bearer``); at least 16 characters. Required to listen on anything but
    loopback."""
    host: str = "127.0.0.1"
    """The address to listen on; loopback unless a token is set."""
    port: int = 8642
    """The TCP port to listen on."""
    refresh: float = 2.0
    """Seconds between two refreshes of a page's live parts."""


class DashboardPlugin:
    """``pmq dashboard``: see and operate a deployment from a browser."""

    @hookimpl
    def pmq_register_settings(self) -> dict[str, type]:
        return {SECTION: DashboardSettings}

    @hookimpl
    def pmq_register_commands(self, cli: click.Group) -> None:
        cli.add_command(dashboard)


@click.command("dashboard")
@click.option("--host", help="Address to listen on (default 127.0.0.1; any other needs a token).")
@click.option("--port", type=click.IntRange(0, 65535), help="TCP port (default 8642).")
@click.option("--read-only", is_flag=True, help="Show everything, change nothing: every action is hidden and refused.")
@click.option("--plugins", metavar="A,B", help="Entry-point names of the plugins whose job types the pages describe.")
@click.option("--demo", is_flag=True,
              help="Also run `pmq demo`'s workload here, and keep its worker and migrator serving.")
def dashboard(host: str | None, port: int | None, read_only: bool, plugins: str | None, demo: bool) -> None:
    """Serve the web dashboard: queues, jobs, dead letters, workers, cron.

    Settings come from [tool.pmq.dashboard] or PMQ_DASHBOARD_* (token, host,
    port, refresh); the options override them.
    """
    conf = load_plugin_settings(SECTION, DashboardSettings)
    host = host or conf.host
    port = conf.port if port is None else port
    problem = security.bind_problem(host, conf.token)
    if problem is not None:
        raise click.ClickException(problem)
    with Admin(Settings.load(plugins=plugins)) as admin:  # resolves the servers (starting embedded ones)
        settings = admin.settings
    app = create_app(lambda: Admin(settings), token=conf.token, read_only=read_only, refresh=conf.refresh)
    stop_demo = threading.Event()
    if demo:
        threading.Thread(target=_demo, args=(settings, stop_demo), name="pmq-dashboard-demo", daemon=True).start()
    shown_host = f"[{host}]" if ":" in host else host
    click.echo(f"pmq dashboard on http://{shown_host}:{port}/" + (" (read-only)" if read_only else "")
               + "; Ctrl-C stops it")
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", server_header=False)
    finally:
        stop_demo.set()


def _demo(settings: Settings, stop: threading.Event) -> None:
    """The demo's workload beside the dashboard; its summary once stopped."""
    try:
        summary = run_demo(settings, out=sys.stderr, linger=stop)
    except Exception as exc:  # shown, and the dashboard goes on serving
        click.echo(f"pmq: warning: the demo stopped: {type(exc).__name__}: {exc}", err=True)
        return
    click.echo(summary.render(), err=True)


#: The instance the ``pmq`` entry point loads.
plugin = DashboardPlugin()
