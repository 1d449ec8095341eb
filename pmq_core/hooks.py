"""Calling the plugins' hooks: one typed method per hook.

pmq's own code never names a hook by a string. It calls
``plugins.hooks.job_started(job=ctx)``: a misspelt hook is an attribute
error that mypy reports before anything runs, and each hook's arguments are
typed at the call site. The rules that hold for every call live here, once:

- **By name.** Each implementation gets only the arguments it names
  (pluggy's rule, kept where pmq calls implementations one by one), so pmq
  can add an argument to a hook without breaking a plugin written before.
- **Lifecycle hooks never hurt a job.** Their exceptions are logged and
  swallowed. The ``register`` hooks' exceptions reach the caller, which
  names the plugin: a plugin that cannot say what it provides must not
  half-run.
- **Idle hooks cost a set lookup.** Which hooks have implementations is read
  once, when the facade is built from the loaded plugins (plugins are never
  added later).
- **Pluggy's order.** Implementations are called in pluggy's order:
  ``tryfirst`` ones first, then the most recently registered first,
  ``trylast`` ones last. Wrappers nest in that order: the first called is
  the outermost.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Generator
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

import attrs
import pluggy

from pmq_core import hookspecs

if TYPE_CHECKING:
    import uuid

    import click

    from pmq_core.config import Settings
    from pmq_core.jobtypes import JobType
    from pmq_core.models import JobContext
    from pmq_core.schema import Migration

#: The logger of a lifecycle hook's failure: the one the docs name since
#: hooks were first called, kept so that logging set up for it still works.
log = logging.getLogger("pmq_core.plugins")

T = TypeVar("T")

#: Every hook pmq has, by its name in ``hookspecs``.
HOOK_NAMES = frozenset(name for name, func in inspect.getmembers(hookspecs, inspect.isfunction)
                       if hasattr(func, f"{hookspecs.PROJECT}_spec"))


@attrs.frozen
class PluginCall(Generic[T]):
    """One plugin's implementation of a ``register`` hook, ready to call
    with the arguments it names. Returned one per plugin so that the caller
    can name the plugin whose call fails."""

    plugin: str
    _function: Callable[..., T]
    _kwargs: dict[str, Any]

    def __call__(self) -> T:
        return self._function(**self._kwargs)


class Hooks:
    """The hooks of loaded plugins, one method per hook (the hook's name
    without its ``pmq_`` prefix), with the hook's arguments by keyword."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self._hook = pm.hook
        self._implemented = frozenset(name for name in HOOK_NAMES if getattr(pm.hook, name).get_hookimpls())
        self._wrappers = _in_call_order(pm.hook.pmq_wrap_job)
        self._enqueue_wrappers = _in_call_order(pm.hook.pmq_wrap_enqueue)

    # -- declaring things: exceptions reach the caller ----------------------------

    def register_job_types(self) -> list[PluginCall[list[JobType]]]:
        """One call per implementing plugin (see :class:`PluginCall`)."""
        return _calls(self._hook.pmq_register_job_types, {})

    def register_migrations(self) -> list[Migration]:
        """Every plugin's migrations, in one list."""
        found: list[Migration] = []
        for result in self._hook.pmq_register_migrations():
            found.extend(result or [])
        return found

    def register_settings(self) -> list[PluginCall[dict[str, type]]]:
        """One call per implementing plugin (see :class:`PluginCall`)."""
        return _calls(self._hook.pmq_register_settings, {})

    def register_commands(self, *, cli: click.Group) -> list[PluginCall[None]]:
        """One call per implementing plugin (see :class:`PluginCall`)."""
        return _calls(self._hook.pmq_register_commands, {"cli": cli})

    def worker_resources(self, *, settings: Settings, worker_id: uuid.UUID) -> list[PluginCall[dict[str, Any]]]:
        """One call per implementing plugin (see :class:`PluginCall`): the
        caller logs a plugin's failure and leaves its resources out."""
        return _calls(self._hook.pmq_worker_resources, {"settings": settings, "worker_id": worker_id})

    def serving_started(self, *, role: str, settings: Settings,
                        plugin_settings: dict[str, Any]) -> list[PluginCall[None]]:
        """One call per implementing plugin (see :class:`PluginCall`): the
        command stops, naming the plugin, when one fails."""
        return _calls(self._hook.pmq_serving_started, {"role": role, "settings": settings,
                                                        "plugin_settings": plugin_settings})

    # -- lifecycle: exceptions are logged ------------------------------------------

    def wrap_enqueue(self, *, queue: str, headers: dict[str, str]) -> EnqueueWrappers:
        """Run every ``pmq_wrap_enqueue`` implementation up to its ``yield``
        (the first called outermost; one that raises is logged and left out,
        its headers with it) and return them, for the client to finish with
        the enqueue's ids or error."""
        if not self._enqueue_wrappers:
            return NO_ENQUEUE_WRAPPERS
        started: list[Generator[None, Any, None]] = []
        for impl in self._enqueue_wrappers:
            before = dict(headers)
            try:
                gen = cast(Generator[None, Any, None], impl.function(**_named(impl, {"queue": queue,
                                                                                      "headers": headers})))
                next(gen)
            except StopIteration:
                continue
            except Exception:
                headers.clear()
                headers.update(before)
                log.exception("a plugin's pmq_wrap_enqueue failed before its yield; the enqueue goes on without it")
                continue
            started.append(gen)
        return EnqueueWrappers(started)

    def jobs_enqueued(self, *, queue: str, job_ids: list[uuid.UUID]) -> None:
        self._notify(self._hook.pmq_jobs_enqueued, queue=queue, job_ids=job_ids)

    def worker_started(self, *, worker_id: uuid.UUID, queues: list[str], settings: Settings,
                       plugin_settings: dict[str, Any]) -> None:
        self._notify(self._hook.pmq_worker_started, worker_id=worker_id, queues=queues, settings=settings,
                     plugin_settings=plugin_settings)

    def worker_stopping(self, *, worker_id: uuid.UUID) -> None:
        self._notify(self._hook.pmq_worker_stopping, worker_id=worker_id)

    def worker_stopped(self, *, worker_id: uuid.UUID) -> None:
        self._notify(self._hook.pmq_worker_stopped, worker_id=worker_id)

    def job_started(self, *, job: JobContext) -> None:
        self._notify(self._hook.pmq_job_started, job=job)

    async def wrap_job(self, *, job: JobContext, handler: Callable[[], Awaitable[Any]]) -> Any:
        """Await ``handler()`` inside every ``pmq_wrap_job`` implementation,
        the first called outermost, and return what the outermost returns.
        Not a lifecycle hook: what a wrapper raises is the attempt's error,
        also before its ``yield`` (the wrappers already started see it)."""
        if not self._wrappers:
            return await handler()
        started: list[Generator[None, Any, Any]] = []
        try:
            for impl in self._wrappers:
                gen = cast(Generator[None, Any, Any], impl.function(**_named(impl, {"job": job})))
                next(gen)
                started.append(gen)
            result = await handler()
        except BaseException as exc:  # the handler's failure, or a wrapper's: the wrappers see it
            return _unwind(started, None, exc)
        return _unwind(started, result, None)

    def job_succeeded(self, *, job: JobContext, result: Any, duration: float) -> None:
        self._notify(self._hook.pmq_job_succeeded, job=job, result=result, duration=duration)

    def job_failed(self, *, job: JobContext, error: BaseException, will_retry: bool, retry_in: float | None) -> None:
        self._notify(self._hook.pmq_job_failed, job=job, error=error, will_retry=will_retry, retry_in=retry_in)

    def job_dead(self, *, job: JobContext, error: BaseException) -> None:
        self._notify(self._hook.pmq_job_dead, job=job, error=error)

    def _notify(self, caller: pluggy.HookCaller, **kwargs: Any) -> None:
        if caller.name not in self._implemented:
            return
        try:
            caller(**kwargs)
        except Exception:
            log.exception("a plugin's %s hook failed; the job is not affected", caller.name)


@attrs.frozen
class EnqueueWrappers:
    """The ``pmq_wrap_enqueue`` wrappers of one enqueue, started: told how
    it ended, innermost first, with nothing they raise reaching the caller
    (see the hook's reference)."""

    _started: list[Generator[None, Any, None]]

    def finish(self, ids: list[uuid.UUID] | None, error: BaseException | None) -> None:
        for gen in reversed(self._started):
            try:
                if error is None:
                    gen.send(ids)
                else:
                    gen.throw(error)
            except StopIteration:
                continue
            except BaseException as exc:
                if exc is not error:
                    log.exception("a plugin's pmq_wrap_enqueue failed after its yield; the enqueue is not affected")
                continue
            gen.close()
            log.error("pmq_wrap_enqueue implementation %r yielded more than once", gen)


#: What :meth:`Hooks.wrap_enqueue` returns when no plugin wraps enqueues.
NO_ENQUEUE_WRAPPERS = EnqueueWrappers([])


def _in_call_order(caller: pluggy.HookCaller) -> tuple[pluggy.HookImpl, ...]:
    """The implementations in the order pluggy calls them (it lists them the
    other way round: the last listed is called first)."""
    return tuple(reversed(caller.get_hookimpls()))


def _named(impl: pluggy.HookImpl, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The arguments ``impl`` names, as pluggy passes them."""
    return {name: kwargs[name] for name in impl.argnames}


def _calls(caller: pluggy.HookCaller, kwargs: dict[str, Any]) -> list[PluginCall[Any]]:
    return [PluginCall(impl.plugin_name, impl.function, _named(impl, kwargs)) for impl in _in_call_order(caller)]


def _unwind(wrappers: list[Generator[None, Any, Any]], result: Any, error: BaseException | None) -> Any:
    """Hand the handler's result or exception to each wrapper, innermost
    first; what a wrapper returns or raises is what the next one sees."""
    for gen in reversed(wrappers):
        try:
            if error is None:
                gen.send(result)
            else:
                gen.throw(error)
        except StopIteration as stop:
            result, error = stop.value, None
        except BaseException as exc:
            error = exc
        else:
            error = RuntimeError(f"pmq_wrap_job implementation {gen!r} yielded more than once")
    if error is not None:
        raise error
    return result
