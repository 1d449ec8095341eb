"""pmq behind a real PgBouncer in transaction pooling mode, which the test
starts in front of its PostgreSQL with three server connections: producers,
workers and the migrator's rounds go through it; the migrator's lock and
LISTEN, and schema upgrades, use ``database_direct_url``."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import psycopg
import pytest

from pmq_core import AsyncClient, JobStatus
from tests.plugin_samples import Recorder, make_plugin

pytestmark = [pytest.mark.scale, pytest.mark.timeout(120)]


def behind(pgbouncer, settings) -> dict[str, str]:
    database = urlsplit(settings.database_url).path.lstrip("/")
    return {"database_url": pgbouncer.url(database), "database_direct_url": settings.database_url}


def test_jobs_run_through_a_transaction_pooler_with_the_session_work_on_the_direct_url(
        pmq_runtime, pmq_settings, pgbouncer):
    recorder = Recorder()
    rt = pmq_runtime(make_plugin(recorder), retry_delay_scale=0, concurrency=8, **behind(pgbouncer, pmq_settings))
    # Enough statements per connection that psycopg would prepare them (5),
    # on three server connections shared by every client: a prepared
    # statement would be missing on the next server connection.
    ids = [rt.enqueue("echo", {"n": n}) for n in range(60)]
    ids += rt.client.enqueue_many("aecho", [{} for _ in range(200)])
    ids += [rt.enqueue("flaky", {"succeed_on": 2}) for _ in range(5)]
    ids.append(rt.enqueue("echo", {"n": 99}, delay=0.5))
    assert {job.status for job in rt.wait_all(ids, timeout=60)} == {JobStatus.COMPLETED}
    assert len(recorder.calls) == len(ids) + 5  # each flaky job ran twice
    with rt.admin() as admin:
        leader = admin.health()["migrator"]
    assert leader is not None  # the leader's lock is seen, on its direct connection
    # No worker's session parameter was left on a server connection, where
    # it would hold for every other client of the pooler.
    assert plan_cache_modes(rt.settings.database_url, pgbouncer.pool_size) == {"auto"}


def plan_cache_modes(pooled_url: str, server_connections: int) -> set[str]:
    """The plan_cache_mode of every server connection of the pool: as many
    open transactions as it has connections hold one each."""
    conns = [psycopg.connect(pooled_url) for _ in range(server_connections)]
    try:
        return {conn.execute("SHOW plan_cache_mode").fetchone()[0] for conn in conns}
    finally:
        for conn in conns:
            conn.close()


def test_the_async_client_enqueues_through_the_pooler(pmq_runtime, pmq_settings, pgbouncer):
    recorder = Recorder()
    rt = pmq_runtime(make_plugin(recorder), **behind(pgbouncer, pmq_settings))

    async def produce() -> list:
        async with AsyncClient(rt.settings, plugins=rt.plugins) as client:
            return [await client.enqueue("aecho", {"i": i}) for i in range(30)]

    ids = asyncio.run(produce())
    assert {job.status for job in rt.wait_all(ids)} == {JobStatus.COMPLETED}
