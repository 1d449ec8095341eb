"""Running suspects alone: one child process per worker, where a crash names
its culprit.

A job rescued from a dead worker is a *suspect*: it may be the one that
killed its worker, or an innocent that happened to be beside it. A worker
runs its suspects one at a time in a child process of its own, started
lazily (``spawn``: a fresh interpreter, no threads or connections inherited),
which loads the same plugins by name, opens their resources
(``pmq_worker_resources``) and calls ``pmq_worker_started`` there.
If that child dies while it runs a suspect, the suspect killed it: the
attempt fails with :class:`~pmq_core.errors.HandlerCrashed` and goes the
way of any failure. A timeout, a cancellation or a shutdown kills the child
outright (no code of the attempt can outlive it); the next suspect starts a
new one.

What crosses the pipe is the job's row (its JSON payload, never a pickle
from the outside world) one way, and the handler's result or exception the
other way, pickled by :mod:`multiprocessing` between this worker and the
child it started. A result that cannot be pickled comes back as None; an
exception that cannot comes back as a RuntimeError with its text.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import types
import uuid
from typing import Any, cast

import attrs

from pmq_core import payloads
from pmq_core.config import Settings
from pmq_core.errors import HandlerCrashed
from pmq_core.models import JobContext, Resources
from pmq_core.plugins import Plugins
from pmq_core.resources import close_resources, open_resources

log = logging.getLogger(__name__)

#: Seconds a new child may take to import and load its plugins.
START_TIMEOUT = 60.0
#: Seconds a stopping child may take to call ``pmq_worker_stopped`` and close
#: its resources.
STOP_TIMEOUT = 5.0


class IsolationUnavailable(Exception):
    """No child process can run this job (the plugins cannot be loaded
    again in a fresh process, or do not declare its queue there)."""


@attrs.frozen
class _Module:
    """A plugin registered as a module, sent by name (modules do not pickle)."""

    name: str


@attrs.frozen
class PluginRecipe:
    """How to load a worker's plugins again in a fresh process: installed
    ones by entry-point name, those registered in code as themselves
    (sent to the child, so they must be picklable) or, for modules, by
    module name."""

    selection: tuple[str, ...] | None
    extras: tuple[Any, ...]
    entry_points: bool

    @classmethod
    def of(cls, plugins: Plugins) -> PluginRecipe:
        extras = tuple(_Module(p.__name__) if isinstance(p, types.ModuleType) else p for p in plugins.extra)
        return cls(plugins.selection, extras, plugins.entry_points)

    def load(self) -> Plugins:
        extras = [importlib.import_module(p.name) if isinstance(p, _Module) else p for p in self.extras]
        return Plugins(self.selection, extras, entry_points=self.entry_points).load()


class Isolation:
    """A worker's isolation child: started on first need, reused, replaced
    after it dies or is killed. ``turn`` makes suspects take turns."""

    def __init__(self, plugins: Plugins, settings: Settings, worker_id: uuid.UUID, queues: list[str]) -> None:
        self._recipe = PluginRecipe.of(plugins)
        self._settings = settings
        self._worker_id = worker_id
        self._queues = queues
        self.turn = asyncio.Lock()
        self._process: Any = None
        self._conn: multiprocessing.connection.Connection | None = None
        self._serves: frozenset[str] = frozenset()
        self._unavailable: str | None = None  # why no child can be started, once found out

    async def can_run(self, queue: str) -> bool:
        """Whether a child can run jobs of ``queue``, starting one if none
        is alive (outside the job's timeout: starting takes a moment)."""
        try:
            await asyncio.get_running_loop().run_in_executor(None, self._ready_for, queue)
        except IsolationUnavailable:
            return False
        return True

    async def run(self, ctx: JobContext) -> Any:
        """Run ``ctx``'s handler in the child and return its result, raise
        its exception, or raise HandlerCrashed if the child dies meanwhile.
        Cancelling this (a timeout, a cancellation, a shutdown) kills the
        child. Call :meth:`can_run` first."""
        loop = asyncio.get_running_loop()
        try:
            conn = await self._connected(ctx.queue)
            conn.send(_fields(ctx))
        except OSError:  # a child that died while idle is replaced, not blamed on this job
            self._kill()
            conn = await self._connected(ctx.queue)
            conn.send(_fields(ctx))
        try:
            kind, value = await loop.run_in_executor(None, _receive, self._process, conn)
        except BaseException:
            self._kill()
            raise
        if kind == "crashed":
            self._forget()
            raise HandlerCrashed(f"the handler crashed its process (exit code {value})")
        if kind == "error":
            raise value
        return value

    async def _connected(self, queue: str) -> multiprocessing.connection.Connection:
        await asyncio.get_running_loop().run_in_executor(None, self._ready_for, queue)
        assert self._conn is not None
        return self._conn

    def _ready_for(self, queue: str) -> None:
        """Start the child unless one is alive, and check that it serves ``queue``."""
        if self._unavailable is None and (self._process is None or not self._process.is_alive()):
            self._forget()
            self._start()
        if self._unavailable is not None:
            raise IsolationUnavailable(self._unavailable)
        if queue not in self._serves:
            raise IsolationUnavailable(f"the isolation child's plugins do not declare queue {queue!r}")

    def _start(self) -> None:
        context = multiprocessing.get_context("spawn")
        parent_end, child_end = context.Pipe()
        process = context.Process(target=_child_main, name="pmq-isolation",
                                  args=(self._recipe, self._settings, self._worker_id, self._queues, child_end))
        try:
            process.start()
        except Exception as exc:  # the plugins registered in code could not be sent
            parent_end.close()
            self._give_up(f"its plugins cannot be sent to a child process ({type(exc).__name__}: {exc})")
            return
        finally:
            child_end.close()
        ready = multiprocessing.connection.wait([parent_end, process.sentinel], timeout=START_TIMEOUT)
        try:
            kind, value = parent_end.recv() if parent_end in ready else ("", None)
        except (EOFError, OSError):
            kind, value = "", None
        if kind != "ready":
            process.kill()
            process.join()
            parent_end.close()
            self._give_up(f"its isolation child did not start (exit code {process.exitcode}; see its log)"
                          if kind != "failed" else f"its isolation child cannot load the plugins: {value}")
            return
        self._process, self._conn, self._serves = process, parent_end, frozenset(cast(list[str], value))

    def _give_up(self, reason: str) -> None:
        self._unavailable = reason
        log.warning("this worker runs suspects in its own process, one at a time, since %s", reason)

    def _kill(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.join(timeout=STOP_TIMEOUT)
        self._forget()

    def _forget(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._process, self._conn = None, None

    async def close(self) -> None:
        """Stop the child: it calls ``pmq_worker_stopped`` and exits, or is
        killed after a few seconds."""
        process, conn = self._process, self._conn
        if process is None or conn is None:
            return
        try:
            conn.send(None)
        except OSError:
            pass
        await asyncio.get_running_loop().run_in_executor(None, process.join, STOP_TIMEOUT)
        self._kill()


def _fields(ctx: JobContext) -> dict[str, Any]:
    return {"id": ctx.id, "queue": ctx.queue, "attempt": ctx.attempt, "max_attempts": ctx.max_attempts,
            "priority": ctx.priority, "created_at": ctx.created_at, "started_at": ctx.started_at,
            "raw_payload": ctx.raw_payload, "headers": dict(ctx.headers), "run_at": ctx.run_at,
            "partition": ctx.partition}


def _receive(process: Any, conn: multiprocessing.connection.Connection) -> tuple[str, Any]:
    """The child's answer: ("ok", result), ("error", exception), or
    ("crashed", exit code) when it died first."""
    multiprocessing.connection.wait([conn, process.sentinel])
    try:
        if conn.poll():
            answer: tuple[str, Any] = conn.recv()
            return answer
    except (EOFError, OSError):
        pass
    except Exception as exc:  # pickled in the child, but cannot be rebuilt here
        return "error", RuntimeError(f"the handler's outcome could not be read back from its process: {exc}")
    process.join()
    return "crashed", process.exitcode


# -- in the child ---------------------------------------------------------------


def _child_main(recipe: PluginRecipe, settings: Settings, worker_id: uuid.UUID, queues: list[str],
                conn: multiprocessing.connection.Connection) -> None:
    """The isolation child: load the plugins, then run one job per request
    until told to stop (None) or its worker is gone."""
    # A Ctrl-C or a SIGTERM sent to the whole process group is the worker's
    # to handle: it stops this child itself, after its grace period.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, name="pmq-isolation-watch", daemon=True).start()
    try:
        plugins = recipe.load()
        plugin_settings = plugins.plugin_settings()
        resources = open_resources(plugins, settings, worker_id)
    except Exception as exc:
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    job_types = {name: plugins.job_types[name] for name in queues if name in plugins.job_types}
    plugins.hooks.worker_started(worker_id=worker_id, queues=list(job_types), settings=settings,
                                 plugin_settings=plugin_settings)
    conn.send(("ready", list(job_types)))
    loop = asyncio.new_event_loop()
    while True:
        try:
            fields = conn.recv()
        except EOFError:
            break
        if fields is None:
            break
        _answer(conn, _run_one(loop, job_types, fields, settings, resources))
    plugins.hooks.worker_stopped(worker_id=worker_id)
    loop.run_until_complete(close_resources(resources))
    loop.close()


def _run_one(loop: asyncio.AbstractEventLoop, job_types: dict[str, Any], fields: dict[str, Any],
             settings: Settings, resources: Resources) -> tuple[str, Any]:
    job_type = job_types[fields["queue"]]
    try:
        ctx = JobContext(payload=payloads.structure(fields["raw_payload"], job_type.payload), settings=settings,
                         resources=resources, **fields)
        if job_type.is_async:
            return "ok", loop.run_until_complete(job_type.handler(ctx))
        return "ok", job_type.handler(ctx)
    except BaseException as exc:  # a handler's failure is data, whatever it is
        return "error", exc


def _answer(conn: multiprocessing.connection.Connection, answer: tuple[str, Any]) -> None:
    """Send the answer; what cannot be pickled is replaced (a result by
    None, an exception by a RuntimeError with its text)."""
    try:
        conn.send(answer)
        return
    except Exception:
        pass
    kind, value = answer
    if kind == "ok":
        conn.send(("ok", None))
    else:
        text = f"{type(value).__name__}: {value}" if str(value) else type(value).__name__
        conn.send(("error", RuntimeError(f"{text} (the exception could not be sent back from its process)")))


def _exit_with_parent() -> None:
    """Exit the moment the worker process is gone (SIGKILLed, say), so that
    no attempt of a rescued job overlaps one still running here."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)
