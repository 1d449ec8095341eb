"""Security: no pickle, no code chosen by data, no password printed, and no
Redis key outside the configured prefix."""

from __future__ import annotations

import ast
import json
import logging
import threading
import uuid
from pathlib import Path
from typing import Any

import attrs
import pytest

from pmq_core import DatabaseUnavailableError, JobStatus, JobType, RetryPolicy, hookimpl
from pmq_core.admin import Admin
from pmq_core.config import Settings
from pmq_core.keys import message
from pmq_core.testing import wait_until
from tests import reliability_support
from tests.reliability_support import background_worker, keys_of, redis_of, sql

own_valkey = reliability_support.own_valkey
ROOT = Path(__file__).resolve().parents[1]
SERIALISERS_OF_CODE = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "jsonpickle", "marshal", "shelve"}


def test_no_pickle_or_other_code_deserialiser_anywhere():
    found = []
    files = [*(ROOT / "pmq_core").rglob("*.py"), *(ROOT / "plugins").rglob("*.py")]
    assert len(files) > 10
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("__import__",):
                names = [getattr(node.args[0], "value", "")] if node.args else []
            found += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names
                      if n.split(".")[0] in SERIALISERS_OF_CODE]
    assert found == []


class TwoQueues:
    def __init__(self) -> None:
        self.ran: list[tuple[str, str]] = []

    def public(self, job: Any) -> None:
        self.ran.append(("public", str(job.id)))

    def secret(self, job: Any) -> None:
        self.ran.append(("secret", str(job.id)))

    @hookimpl
    def pmq_register_job_types(self) -> list[JobType]:
        return [JobType(name="public", handler=self.public), JobType(name="secret", handler=self.secret)]


def test_a_forged_message_cannot_run_a_job_of_another_queue(pmq_runtime):
    plugin = TwoQueues()
    rt = pmq_runtime(plugin, worker=False)
    sql(rt.settings.database_url, "INSERT INTO job_queues (name) VALUES ('unloaded')")
    secret = rt.enqueue("secret", {})
    unloaded = rt.client.enqueue("unloaded", {})
    for job_id in (secret, unloaded):
        rt.wait(job_id, statuses=[JobStatus.MIGRATED_TO_REDIS])
    with redis_of(rt.settings) as rds:
        rds.rpush(keys_of(rt.settings).band("public", "normal"), message(secret, 0), message(unloaded, 0))
    with background_worker(rt.settings, rt.plugins, queues=["public"]):
        sentinel = rt.wait(rt.enqueue("public", {}))
        assert sentinel.status is JobStatus.COMPLETED
        with redis_of(rt.settings) as rds:
            assert rds.llen(keys_of(rt.settings).band("public", "normal")) == 0  # the forged ones were popped
        assert plugin.ran == [("public", str(sentinel.id))]
        # Neither job was taken by a worker that cannot run it.
        assert rt.job(secret).status is JobStatus.MIGRATED_TO_REDIS
        assert rt.job(unloaded).status is JobStatus.MIGRATED_TO_REDIS
    with background_worker(rt.settings, rt.plugins, queues=["secret"]):
        assert rt.wait(secret).status is JobStatus.COMPLETED
    assert plugin.ran[-1] == ("secret", str(secret))  # run by its own queue's handler, once
    assert rt.job(unloaded).status is JobStatus.MIGRATED_TO_REDIS


def test_forged_messages_with_odd_attempts_are_dropped_and_cost_no_one_anything(pmq_runtime):
    plugin = TwoQueues()
    rt = pmq_runtime(plugin, worker=False)
    victim = rt.enqueue("public", {})
    rt.wait(victim, statuses=[JobStatus.MIGRATED_TO_REDIS])
    forged = [f"{victim}:{2**31}", f"{victim}:{10**40}", f"{victim}:-1", f"{victim}:1e3", f"{uuid.uuid4()}:{2**63}"]
    with redis_of(rt.settings) as rds:
        rds.lpush(keys_of(rt.settings).band("public", "high"), *forged)
    with background_worker(rt.settings, rt.plugins, queues=["public"]):
        # Popped in one batch with the genuine message, the forged ones once
        # failed the whole claim ("integer out of range") and the worker with it.
        assert rt.wait(victim).status is JobStatus.COMPLETED
        assert rt.wait(rt.enqueue("public", {})).status is JobStatus.COMPLETED
    assert [queue for queue, _ in plugin.ran] == ["public", "public"]


PASSWORD = "s3cr3t-Pa55"


def test_passwords_in_urls_are_never_printed(caplog):
    settings = Settings.load(database_url=f"postgresql://pmq:{PASSWORD}@127.0.0.1:1/pmq",
                             redis_url=f"redis://:{PASSWORD}@127.0.0.1:1/0")
    assert PASSWORD not in repr(settings)
    caplog.set_level(logging.DEBUG)
    with Admin(settings) as admin:
        with pytest.raises(DatabaseUnavailableError) as info:
            admin.job(uuid.uuid4())
        assert "127.0.0.1:1" in str(info.value) and PASSWORD not in str(info.value)
        report = admin.health()
    text = json.dumps(report, default=str)
    assert report["status"] == "critical" and not report["postgres"]["ok"] and not report["redis"]["ok"]
    assert "***" in report["postgres"]["url"] and PASSWORD not in text
    assert PASSWORD not in caplog.text


class Everything:
    """Job types that complete, retry, die, and wait to be cancelled."""

    def __init__(self) -> None:
        self.started = threading.Event()

    def ok(self, job: Any) -> None:
        pass

    def flaky(self, job: Any) -> None:
        if job.attempt == 1:
            raise ConnectionResetError("again")

    def dies(self, job: Any) -> None:
        raise ConnectionResetError("always")

    async def waits(self, job: Any) -> None:
        import asyncio

        self.started.set()
        await asyncio.sleep(60)

    @hookimpl
    def pmq_register_job_types(self) -> list[JobType]:
        quick = RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.02)
        return [JobType(name="ok", handler=self.ok, priority=10),
                JobType(name="flaky", handler=self.flaky, retry=quick),
                JobType(name="dies", handler=self.dies, retry=quick, priority=500),
                JobType(name="waits", handler=self.waits)]


def test_every_redis_key_and_channel_is_under_the_prefix(pmq_runtime, own_valkey):
    plugin = Everything()
    rt = pmq_runtime(plugin, redis_url=own_valkey.url, key_prefix="tenant-a:")
    ids = [rt.enqueue("ok", {}), rt.enqueue("flaky", {}), rt.enqueue("dies", {})]
    waiting = rt.enqueue("waits", {})
    scheduled = rt.enqueue("ok", {}, delay=3600)
    assert plugin.started.wait(10)
    with redis_of(rt.settings) as rds:
        channels = [c.decode() for c in rds.pubsub_channels()]
    with rt.admin() as admin:
        admin.cancel(waiting)
        admin.cancel(scheduled)
        statuses = [job.status for job in rt.wait_all(ids)]
        assert statuses == [JobStatus.COMPLETED, JobStatus.COMPLETED, JobStatus.FAILED]
        admin.health()
        admin.stats()
        admin.replay(queue="dies")
        rt.wait(ids[2], timeout=10)
    wait_until(lambda: rt.job(waiting).status, lambda s: s is JobStatus.CANCELLED, 10, "not cancelled")
    with redis_of(rt.settings) as rds:
        keys = [k.decode() for k in rds.scan_iter(count=1000)]
    assert keys and any(k.endswith(":dead") for k in keys)
    assert [k for k in keys if not k.startswith("tenant-a:")] == []
    assert channels and [c for c in channels if not c.startswith("tenant-a:")] == []


def test_settings_repr_hides_passwords_but_keeps_the_url_usable():
    settings = Settings.load(database_url=f"postgresql://u:{PASSWORD}@db/pmq", redis_url=f"redis://:{PASSWORD}@r/0")
    assert settings.database_url.endswith(f"{PASSWORD}@db/pmq")
    assert PASSWORD not in repr(attrs.evolve(settings, key_prefix="x:"))
