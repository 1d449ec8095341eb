"""Per-worker resources without a server: how plugins' dicts merge, what a
missing name says, and that closing closes every one."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import pytest

from pmq_core import PluginError, Settings, hookimpl
from pmq_core.models import Resources
from pmq_core.plugins import Plugins
from pmq_core.resources import close_resources, open_resources
from pmq_core.testing import run_inline


class Closable:
    def __init__(self) -> None:
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


class AsyncClosable:
    def __init__(self) -> None:
        self.closed = 0

    async def aclose(self) -> None:
        self.closed += 1


class Provider:
    def __init__(self, name: str, provided: Any) -> None:
        self.__name__ = name
        self.provided = provided

    @hookimpl
    def pmq_worker_resources(self, settings: Settings) -> Any:
        if isinstance(self.provided, Exception):
            raise self.provided
        return self.provided


def opened(*providers: Provider) -> Resources:
    return open_resources(Plugins(None, providers, entry_points=False).load(), Settings(), uuid.uuid4())


def test_resources_of_every_plugin_are_merged():
    pool, client = Closable(), AsyncClosable()
    resources = opened(Provider("a", {"a.pool": pool}), Provider("b", {"b.client": client}), Provider("c", None))
    assert dict(resources) == {"a.pool": pool, "b.client": client}


def test_two_plugins_providing_one_name_is_an_error_naming_both():
    with pytest.raises(PluginError, match=r"job resource 'db' is provided by two plugins, '(a|b)' and '(a|b)'"):
        opened(Provider("a", {"db": 1}), Provider("b", {"db": 2}))


@pytest.mark.parametrize("bad", [RuntimeError("no pool today"), ["not", "a", "dict"], {1: "key not a str"}])
def test_a_failing_provider_is_logged_and_the_others_still_provide(bad, caplog):
    with caplog.at_level(logging.ERROR, logger="pmq_core.resources"):
        resources = opened(Provider("broken", bad), Provider("fine", {"fine.x": 1}))
    assert dict(resources) == {"fine.x": 1}
    assert "plugin 'broken': its pmq_worker_resources hook failed" in caplog.text


def test_a_missing_name_says_what_there_is():
    with pytest.raises(KeyError, match=r"no job resource 'b\.db' \(this process has: 'a\.db'\)"):
        Resources({"a.db": 1})["b.db"]


def test_closing_closes_each_once_even_when_one_fails(caplog):
    class Broken:
        def close(self) -> None:
            raise OSError("already gone")

    sync, async_, plain = Closable(), AsyncClosable(), object()
    with caplog.at_level(logging.ERROR, logger="pmq_core.resources"):
        asyncio.run(close_resources(Resources({"broken": Broken(), "sync": sync, "async": async_, "plain": plain})))
    assert (sync.closed, async_.closed) == (1, 1)
    assert "closing job resource 'broken' failed" in caplog.text


def test_run_inline_hands_the_handler_its_settings_resources_and_partition():
    from pmq_core import JobType

    def handler(job: Any) -> Any:
        return job.resources["x.pool"], job.settings.key_prefix, job.partition

    settings = Settings(key_prefix="inline:")
    kind = JobType(name="x:inline", handler=handler)
    assert run_inline(kind, {}, settings=settings, resources={"x.pool": 7}, partition="m:1") == (7, "inline:", "m:1")
    with pytest.raises(KeyError, match="no job resource 'x.pool'"):
        run_inline(kind, {})
