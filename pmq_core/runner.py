"""Running pmq: the migrator and workers as processes, with signals handled.

``pmq run`` uses :func:`run` (migrator and workers together), ``pmq worker``
and ``pmq migrator`` the single-role functions. On SIGTERM or SIGINT workers
stop taking jobs, let running ones finish within the grace period, give back
the rest, and the process exits 0 — at once, with ``os._exit``, if a sync
handler is still running after being told to stop: a thread cannot be
stopped, and a normal exit would wait for it without bound.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import sys
import threading
from typing import Any

from pmq_core import redaction, schema
from pmq_core.admin import Admin
from pmq_core.config import Settings
from pmq_core.db import resolve_servers
from pmq_core.errors import ConfigurationError
from pmq_core.migrator import Migrator
from pmq_core.plugins import Plugins
from pmq_core.worker import Worker

log = logging.getLogger(__name__)


def prepare(settings: Settings, plugins: Plugins) -> Settings:
    """Resolve servers, check the schema, and register the job types' queues.

    With embedded servers (development) the schema is upgraded on the spot;
    against configured servers a stale schema is refused, since upgrading is
    an operator's decision (``pmq db upgrade``).
    """
    plugins.plugin_settings()  # every plugin's settings are valid before any server is touched
    embedded = settings.embedded
    settings = resolve_servers(settings)
    with Admin(settings) as admin:
        if schema.pending(admin.conn, plugins.hooks.register_migrations()):
            if not embedded:
                raise ConfigurationError("the database schema is not up to date: run `pmq db upgrade` first")
            admin.upgrade(plugins)
        admin.register_job_types(plugins)
    return settings


def run_worker(settings: Settings, queues: list[str] | None = None, concurrency: int | None = None,
               plugins: Plugins | None = None, migrator: bool = False) -> None:
    """Run one worker (and, with ``migrator``, a migrator thread beside it)
    in this process until SIGTERM or SIGINT.

    This function owns the process: when the worker gave back jobs whose
    handlers still run (:attr:`Worker.abandoned`), it ends the process
    at once, threads and all, before those jobs are due again."""
    plugins = plugins or Plugins(settings.plugins)
    worker = Worker(settings, plugins, queues=queues, concurrency=concurrency)
    thread_stop = threading.Event()
    migrator_thread = None
    if migrator:
        migrator_thread = threading.Thread(target=Migrator(settings, plugins).run, args=(thread_stop,),
                                           name="pmq-migrator", daemon=True)
        migrator_thread.start()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, _stop_both, stop, thread_stop)
        await worker.run(stop)
        if worker.abandoned:  # now, not after asyncio.run, which would wait for the stuck handlers' tasks
            _stop_migrator(thread_stop, migrator_thread)
            _end_now()

    try:
        asyncio.run(main())
    finally:
        _stop_migrator(thread_stop, migrator_thread)


def _stop_migrator(thread_stop: threading.Event, migrator_thread: threading.Thread | None) -> None:
    thread_stop.set()
    if migrator_thread is not None:
        migrator_thread.join(timeout=10)


def _end_now() -> None:
    """Exit 0 without waiting for the handlers that outlived the shutdown:
    interpreter exit would join their threads, and asyncio.run's teardown
    await their tasks, however long they run."""
    log.warning("exiting now: handler(s) that ignored the stop cannot be waited for")
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _stop_both(stop: asyncio.Event, thread_stop: threading.Event) -> None:
    """Stop the worker and the migrator beside it together: jobs the worker
    gives back then wait in PostgreSQL for whichever migrator leads next."""
    stop.set()
    thread_stop.set()


def run_migrator(settings: Settings, plugins: Plugins | None = None) -> None:
    """Run a migrator (leader or standby) in this process until SIGTERM or SIGINT."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    Migrator(settings, plugins or Plugins(settings.plugins)).run(stop)


def _worker_process(settings: Settings, queues: list[str] | None, concurrency: int | None) -> None:
    """A worker process of :func:`run`. It starts afresh (spawned), so it
    sets up its own logging and hides the servers' passwords itself."""
    redaction.remember([settings.database_url, settings.database_direct_url, settings.redis_url])
    with redaction.scrubbed_output():
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(processName)s %(levelname)s %(message)s")
        redaction.guard_logging()
        try:
            run_worker(settings, queues, concurrency)
        except Exception:  # printed here, scrubbed: multiprocessing would print it as it is
            log.exception("worker process failed")
            sys.exit(1)


def run(settings: Settings, queues: list[str] | None = None, concurrency: int | None = None,
        processes: int = 1) -> None:
    """Migrator and workers together: one process with both, or a migrator
    here and ``processes`` worker processes beside it."""
    if processes <= 1:
        run_worker(settings, queues, concurrency, migrator=True)
        return
    context = multiprocessing.get_context("spawn")
    children: list[Any] = [
        context.Process(target=_worker_process, args=(settings, queues, concurrency), name=f"pmq-worker-{i}")
        for i in range(processes)
    ]
    for child in children:
        child.start()
    stop = threading.Event()

    def forward(signum: int, _frame: Any) -> None:
        stop.set()
        for child in children:
            if child.is_alive() and child.pid:
                child.terminate()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    Migrator(settings, Plugins(settings.plugins)).run(stop)
    for child in children:
        child.join(timeout=settings.shutdown_grace + 10)
