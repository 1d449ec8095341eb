"""The typed hook facade (``pmq_core.hooks``), without servers: one method
per hook with the hook's own arguments, implementations called with the
arguments they name, lifecycle failures logged, ``register`` failures
raised, idle hooks skipped, and wrappers nested in pluggy's order."""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import uuid
from pathlib import Path
from typing import Any

import pluggy
import pytest

from pmq_core import hookimpl, hookspecs
from pmq_core import hooks as hooks_module
from pmq_core.hooks import HOOK_NAMES, Hooks
from pmq_core.plugins import Plugins


def hooks_of(*plugins: Any) -> Hooks:
    return Plugins(None, plugins, entry_points=False).hooks


def test_each_hook_has_one_method_taking_the_hooks_arguments_by_keyword():
    methods = {name for name, _ in inspect.getmembers(Hooks, inspect.isfunction) if not name.startswith("_")}
    assert methods == {name.removeprefix("pmq_") for name in HOOK_NAMES}
    for name in HOOK_NAMES:
        spec = list(inspect.signature(getattr(hookspecs, name)).parameters)
        method = inspect.signature(getattr(Hooks, name.removeprefix("pmq_")))
        taken = [p.name for p in method.parameters.values() if p.name != "self"]
        extra = ["handler"] if name == "pmq_wrap_job" else []  # what the wrappers wrap
        assert taken == spec + extra, name
        assert all(p.kind is p.KEYWORD_ONLY for p in method.parameters.values() if p.name != "self"), name


def test_only_the_facade_calls_hooks_so_no_call_site_names_a_hook_by_a_string():
    """Elsewhere, a hook is a method of the facade, which mypy checks: a
    misspelt one (``hooks.job_sarted``) fails the type check, not a job."""
    package = Path(hooks_module.__file__).parent
    callers = sorted(path.relative_to(package).as_posix() for path in package.rglob("*.py")  # cli/ too
                     if path != package / "hooks.py"
                     and re.search(r"\.hook\b|\.function\(|safe_call", path.read_text()))
    assert callers == []


class Old:
    """A plugin written before the hooks had all their arguments: each
    implementation names a subset of them, some none at all."""

    def __init__(self) -> None:
        self.seen: list[tuple[Any, ...]] = []

    @hookimpl
    def pmq_register_job_types(self) -> list[Any]:
        self.seen.append(("register_job_types",))
        return []

    @hookimpl
    def pmq_register_migrations(self) -> list[Any]:
        return []

    @hookimpl
    def pmq_register_commands(self) -> None:
        self.seen.append(("register_commands",))

    @hookimpl
    def pmq_jobs_enqueued(self, job_ids: list[Any]) -> None:
        self.seen.append(("jobs_enqueued", job_ids))

    @hookimpl
    def pmq_worker_started(self, settings: Any) -> None:
        self.seen.append(("worker_started", settings))

    @hookimpl
    def pmq_worker_stopping(self) -> None:
        self.seen.append(("worker_stopping",))

    @hookimpl
    def pmq_worker_stopped(self, worker_id: Any) -> None:
        self.seen.append(("worker_stopped", worker_id))

    @hookimpl
    def pmq_job_started(self) -> None:
        self.seen.append(("job_started",))

    @hookimpl
    def pmq_wrap_job(self) -> Any:
        result = yield
        self.seen.append(("wrap_job", result))
        return result

    @hookimpl
    def pmq_job_succeeded(self, result: Any) -> None:
        self.seen.append(("job_succeeded", result))

    @hookimpl
    def pmq_job_failed(self, error: BaseException) -> None:
        self.seen.append(("job_failed", error))

    @hookimpl
    def pmq_job_dead(self, job: Any) -> None:
        self.seen.append(("job_dead", job))


def test_an_implementation_taking_a_subset_of_the_arguments_gets_just_those_for_every_hook():
    """How a plugin survives pmq adding an argument to a hook: it is called
    with the arguments it names, by name, whatever else the hook passes."""
    old = Old()
    hooks = hooks_of(old)
    worker_id, boom = uuid.uuid4(), ValueError("boom")
    hooks.jobs_enqueued(queue="q", job_ids=[worker_id])
    hooks.worker_started(worker_id=worker_id, queues=["q"], settings="the settings", plugin_settings={})
    assert [call() for call in hooks.register_settings()] == []
    hooks.worker_stopping(worker_id=worker_id)
    hooks.worker_stopped(worker_id=worker_id)
    hooks.job_started(job="the job")
    assert asyncio.run(hooks.wrap_job(job="the job", handler=_returning(42))) == 42
    hooks.job_succeeded(job="the job", result=42, duration=0.1)
    hooks.job_failed(job="the job", error=boom, will_retry=False, retry_in=None)
    hooks.job_dead(job="the job", error=boom)
    for call in hooks.register_commands(cli="the cli"):
        call()
    assert hooks.register_migrations() == []
    assert old.seen == [
        ("register_job_types",), ("jobs_enqueued", [worker_id]), ("worker_started", "the settings"),
        ("worker_stopping",), ("worker_stopped", worker_id), ("job_started",), ("wrap_job", 42),
        ("job_succeeded", 42), ("job_failed", boom), ("job_dead", "the job"), ("register_commands",),
    ]


def test_pluggy_registers_an_implementation_written_before_an_argument_was_added():
    """The same promise at pluggy's level: a spec that gained ``reason``
    still accepts, and calls, the implementation that predates it."""
    project = hookspecs.PROJECT

    class Grown:
        @pluggy.HookspecMarker(project)
        def pmq_job_dead(self, job: Any, error: BaseException, reason: str) -> None:
            """The hook, one argument later."""

    seen = []

    class Before:
        @hookimpl
        def pmq_job_dead(self, job: Any, error: BaseException) -> None:
            seen.append((job, error))

    pm = pluggy.PluginManager(project)
    pm.add_hookspecs(Grown)
    pm.register(Before())
    pm.hook.pmq_job_dead(job="the job", error="the error", reason="why")
    assert seen == [("the job", "the error")]


class Exploding:
    @hookimpl
    def pmq_job_dead(self) -> None:
        raise RuntimeError("alerting is down")

    @hookimpl
    def pmq_register_migrations(self) -> list[Any]:
        raise RuntimeError("no migrations today")


def test_pmq_job_dead_failing_is_logged_while_a_register_hook_failing_is_raised(caplog):
    hooks = hooks_of(Exploding())
    with caplog.at_level(logging.ERROR, logger="pmq_core.plugins"):
        hooks.job_dead(job="the job", error=ValueError("boom"))
    assert [r.getMessage() for r in caplog.records] == ["a plugin's pmq_job_dead hook failed; the job is not affected"]
    assert "alerting is down" in caplog.text
    with pytest.raises(RuntimeError, match="no migrations today"):
        hooks.register_migrations()


def test_pmq_register_commands_gives_one_call_per_plugin_naming_it():
    class One:
        @hookimpl
        def pmq_register_commands(self, cli: Any) -> None:
            cli.append("one")

    class Two:
        @hookimpl
        def pmq_register_commands(self, cli: Any) -> None:
            raise RuntimeError("two is broken")

    cli: list[str] = []
    calls = hooks_of(One(), Two()).register_commands(cli=cli)
    assert [call.plugin for call in calls] == ["Two", "One"]  # pluggy's order: the last registered first
    with pytest.raises(RuntimeError, match="two is broken"):
        calls[0]()
    calls[1]()
    assert cli == ["one"]


def test_a_hook_nobody_implements_is_skipped_before_its_arguments_are_used():
    class Counting:
        calls = 0

        @hookimpl
        def pmq_job_started(self, job: Any) -> None:
            Counting.calls += 1

    hooks = hooks_of(Counting())
    hooks.job_started(job="the job")
    hooks.job_succeeded(job="the job", result=None, duration=0.0)  # idle: nothing to call
    assert Counting.calls == 1
    assert asyncio.run(hooks.wrap_job(job="the job", handler=_returning("as is"))) == "as is"


# -- wrappers -----------------------------------------------------------------------


class Labelled:
    def __init__(self, label: str, trail: list[str]) -> None:
        self.label = label
        self.trail = trail
        self.__name__ = label

    def around(self) -> Any:
        self.trail.append(f"{self.label}:in")
        try:
            result = yield
        except Exception as exc:
            self.trail.append(f"{self.label}:saw {exc}")
            raise
        self.trail.append(f"{self.label}:out")
        return [self.label, result]


class Plain(Labelled):
    @hookimpl
    def pmq_wrap_job(self) -> Any:
        return (yield from self.around())


class First(Labelled):
    @hookimpl(tryfirst=True)
    def pmq_wrap_job(self) -> Any:
        return (yield from self.around())


class Last(Labelled):
    @hookimpl(trylast=True)
    def pmq_wrap_job(self) -> Any:
        return (yield from self.around())


def test_pmq_wrap_job_wrappers_nest_in_pluggys_order_tryfirst_outermost():
    trail: list[str] = []
    hooks = hooks_of(First("first", trail), Plain("older", trail), Plain("newer", trail), Last("last", trail))
    result = asyncio.run(hooks.wrap_job(job="the job", handler=_returning("r")))
    assert trail == ["first:in", "newer:in", "older:in", "last:in", "last:out", "older:out", "newer:out", "first:out"]
    assert result == ["first", ["newer", ["older", ["last", "r"]]]]


def test_pmq_wrap_job_a_wrapper_failing_before_its_yield_unwinds_those_started():
    class Broken:
        @hookimpl
        def pmq_wrap_job(self) -> Any:
            raise RuntimeError("broken before yield")
            yield  # a generator function all the same

    trail: list[str] = []
    ran = []

    async def handler() -> str:
        ran.append(True)
        return "never"

    hooks = hooks_of(Plain("inner", trail), Broken(), Plain("outer", trail))
    with pytest.raises(RuntimeError, match="broken before yield"):
        asyncio.run(hooks.wrap_job(job="the job", handler=handler))
    assert trail == ["outer:in", "outer:saw broken before yield"]
    assert ran == []


def _returning(value: Any) -> Any:
    async def handler() -> Any:
        return value

    return handler
