"""Enqueueing: defaults, bulk, uniqueness, the caller's transaction, asyncio."""

from __future__ import annotations

import asyncio
import uuid

import attrs
import psycopg
import pytest

from pmq_core import AsyncClient, Client, JobStatus, PayloadError, UnknownQueueError, store
from pmq_core.db import redis_client
from pmq_core.keys import Keys
from pmq_core.models import new_job_ids
from pmq_core.plugins import Plugins
from pmq_core.testing import wait_until
from tests.plugin_samples import Recorder, make_plugin


def count_jobs(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM jobs").fetchone()[0]


def test_priority_and_attempts_default_to_the_job_type(pmq_runtime):
    rt = pmq_runtime(make_plugin(Recorder(), priority=30), worker=False, migrator=False)
    job = rt.job(rt.enqueue("echo", {"n": 1}))
    assert (job.priority, job.max_attempts) == (30, 5)
    job = rt.job(rt.enqueue("echo", {"n": 1}, priority=200, max_attempts=2))
    assert (job.priority, job.max_attempts) == (200, 2)


def test_bad_payload_names_every_bad_field_and_writes_nothing(pmq_runtime):
    rt = pmq_runtime(make_plugin(Recorder()), worker=False, migrator=False)
    with pytest.raises(PayloadError) as info:
        rt.enqueue("echo", {"n": "not a number", "extra": 1})
    assert "n" in str(info.value) and "extra" in str(info.value)
    with pytest.raises(PayloadError, match="job 2"):
        rt.client.enqueue_many("echo", [{"n": 1}, {"n": 2}, {"n": "x"}])
    with pytest.raises(UnknownQueueError, match="nope"):
        rt.enqueue("nope", {})
    assert count_jobs(rt.settings.database_url) == 0


def test_bulk_enqueue_uses_one_transaction(pmq_runtime):
    rt = pmq_runtime(make_plugin(Recorder()), worker=False, migrator=False)
    ids = rt.client.enqueue_many("echo", [{"n": i} for i in range(500)])
    assert len(set(ids)) == 500
    assert count_jobs(rt.settings.database_url) == 500
    assert rt.job(ids[-1]).payload == {"n": 499}


def test_unique_key_returns_the_live_job(pmq_runtime):
    rt = pmq_runtime(make_plugin(Recorder()), worker=False, migrator=False)
    first = rt.enqueue("aecho", {"a": 1}, unique_key="report-2026-11-28")
    again = rt.enqueue("aecho", {"a": 2}, unique_key="report-2026-11-28")
    other = rt.enqueue("aecho", {"a": 3}, unique_key="report-2026-11-29")
    assert first == again != other
    assert count_jobs(rt.settings.database_url) == 2


def test_rolled_back_transaction_leaves_no_job_and_no_redis_entry(pmq_runtime):
    recorder = Recorder()
    rt = pmq_runtime(make_plugin(recorder))
    with psycopg.connect(rt.settings.database_url) as conn, conn.transaction(force_rollback=True):
        job_id = rt.client.enqueue("aecho", {"in": "tx"}, conn=conn)
        assert conn.execute("SELECT count(*) FROM jobs WHERE id = %s", (job_id,)).fetchone()[0] == 1
    committed = rt.enqueue("aecho", {"after": "rollback"})
    rt.wait(committed)
    assert count_jobs(rt.settings.database_url) == 1
    rds = redis_client(rt.settings.redis_url)
    keys = Keys(rt.settings.key_prefix)
    assert not rds.exists(keys.job("aecho", job_id))
    assert [c[1] for c in recorder.calls] == [{"after": "rollback"}]


def test_committed_transaction_runs_the_job(pmq_runtime):
    rt = pmq_runtime(make_plugin(Recorder()))
    with psycopg.connect(rt.settings.database_url) as conn, conn.transaction():
        job_id = rt.client.enqueue("aecho", {"in": "tx"}, conn=conn)
        conn.execute("SELECT 1")
    assert rt.wait(job_id).status is JobStatus.COMPLETED


def test_async_client_enqueues_and_runs(pmq_runtime):
    rt = pmq_runtime(make_plugin(Recorder()))

    async def produce():
        async with AsyncClient(rt.settings, plugins=rt.plugins) as client:
            one = await client.enqueue("echo", {"n": 7})
            many = await client.enqueue_many("echo", [{"n": i} for i in range(100)])
            return [one, *many]

    ids = asyncio.run(produce())
    assert {j.status for j in rt.wait_all(ids)} == {JobStatus.COMPLETED}


def test_delayed_job_waits_for_its_time(pmq_runtime):
    rt = pmq_runtime(make_plugin(Recorder()))
    job_id = rt.enqueue("aecho", {}, delay=0.5)
    job = rt.job(job_id)
    assert job.status is JobStatus.QUEUED and job.run_at > job.created_at
    done = rt.wait(job_id)
    assert done.started_at >= job.run_at


# -- handing jobs to Redis at enqueue time ------------------------------------------


def band_messages(rt, queue: str, band: str = "normal") -> list[str]:
    rds = redis_client(rt.settings.redis_url)
    return [m.decode().partition(":")[0] for m in rds.lrange(Keys(rt.settings.key_prefix).band(queue, band), 0, -1)]


def test_a_due_job_is_handed_to_redis_without_the_migrator(pmq_runtime):
    rt = pmq_runtime(make_plugin(Recorder()), worker=False, migrator=False)
    urgent = rt.enqueue("echo", {"n": 1}, priority=10)
    many = rt.client.enqueue_many("echo", [{"n": i} for i in range(5)])
    assert rt.job(urgent).status is JobStatus.MIGRATED_TO_REDIS
    wait_until(lambda: band_messages(rt, "echo", "high"), lambda ids: ids == [str(urgent)], 5, "no message")
    wait_until(lambda: band_messages(rt, "echo"), lambda ids: ids == [str(i) for i in many], 5, "no messages")
    rds = redis_client(rt.settings.redis_url)
    assert rds.hget(Keys(rt.settings.key_prefix).job("echo", urgent), "status") == b"migrated_to_redis"
    rt.start_worker()
    assert {j.status for j in rt.wait_all([urgent, *many])} == {JobStatus.COMPLETED}


def test_a_batch_written_by_copy_waits_for_the_migrator_and_one_with_unique_keys_is_handed_over(pmq_runtime):
    rt = pmq_runtime(make_plugin(Recorder()), worker=False, migrator=False)
    copied = rt.client.enqueue_many("echo", [{"n": i} for i in range(store.COPY_MIN_ROWS)])
    below = rt.client.enqueue_many("echo", [{"n": i} for i in range(store.COPY_MIN_ROWS - 1)])
    with rt.admin() as admin:
        statuses = {job.id: job.status for job in admin.jobs(queue="echo", limit=1000)}
    assert {statuses[i] for i in copied} == {JobStatus.QUEUED}
    assert {statuses[i] for i in below} == {JobStatus.MIGRATED_TO_REDIS}
    keyed = Plugins(None, [make_plugin(Recorder(), unique_key=lambda payload: str(payload["n"]))],
                    entry_points=False)
    with Client(rt.settings, plugins=keyed) as client:
        many = client.enqueue_many("echo", [{"n": i} for i in range(1000, 1000 + store.COPY_MIN_ROWS)])
    assert {rt.job(i).status for i in many} == {JobStatus.MIGRATED_TO_REDIS}


def test_scheduled_paused_transactional_and_opted_out_jobs_wait_for_the_migrator(pmq_runtime):
    rt = pmq_runtime(make_plugin(Recorder()), worker=False, migrator=False)
    later = rt.enqueue("echo", {"n": 1}, delay=60)
    with psycopg.connect(rt.settings.database_url, autocommit=True) as conn:
        in_tx = rt.client.enqueue("echo", {"n": 2}, conn=conn)
    with rt.admin() as admin:
        admin.set_active("aecho", False)
    paused = rt.enqueue("aecho", {"n": 3})
    opted_out = pmq_runtime(make_plugin(Recorder()), worker=False, migrator=False, dispatch_on_enqueue=False)
    plain = opted_out.enqueue("echo", {"n": 4})
    assert {rt.job(j).status for j in (later, in_tx, paused)} == {JobStatus.QUEUED}
    assert opted_out.job(plain).status is JobStatus.QUEUED
    assert band_messages(rt, "echo") == [] and band_messages(opted_out, "echo") == []


def test_jobs_enqueued_while_redis_is_down_still_run(pmq_runtime):
    rt = pmq_runtime(make_plugin(Recorder()), worker=False, migrator=False, redispatch_after=0.5)
    cut_off = Client(attrs.evolve(rt.settings, redis_url="redis://127.0.0.1:1/0"), plugins=rt.plugins)
    with cut_off:
        first = cut_off.enqueue("echo", {"n": 1})  # stored as handed over; its push fails
        handover = cut_off._handover
        assert handover is not None
        wait_until(handover.active, lambda active: not active, 10, "the failed push was not noticed")
        second = cut_off.enqueue("echo", {"n": 2})  # left to the migrator at once
    assert rt.job(first).status is JobStatus.MIGRATED_TO_REDIS
    assert rt.job(second).status is JobStatus.QUEUED
    rt.start_migrator()
    rt.start_worker()
    assert {j.status for j in rt.wait_all([first, second])} == {JobStatus.COMPLETED}


@pytest.mark.parametrize("mirror", [True, False], ids=["status_mirror", "no_status_mirror"])
def test_status_hashes_are_kept_only_with_the_status_mirror_on(pmq_runtime, mirror):
    """Jobs run alike either way; with the mirror on each job's hash ends in
    its final state with an expiry, with it off no hash is ever written
    (handed over at enqueue, by the migrator, or cancelled)."""
    rt = pmq_runtime(make_plugin(Recorder()), status_mirror=mirror)
    handed_over = rt.enqueue("echo", {"n": 1})
    migrated = rt.client.enqueue_many("echo", [{"n": i} for i in range(store.COPY_MIN_ROWS)])
    cancelled = rt.enqueue("echo", {"n": 2}, delay=60)
    with rt.admin() as admin:
        admin.cancel(cancelled)
    assert {j.status for j in rt.wait_all([handed_over, *migrated])} == {JobStatus.COMPLETED}
    rds = redis_client(rt.settings.redis_url)
    hashes = {key.decode().rpartition(":")[2]: key for key in rds.scan_iter(f"{rt.settings.key_prefix}*:job:*")}
    if not mirror:
        assert hashes == {}
        return
    assert set(hashes) == {str(job_id) for job_id in (handed_over, *migrated, cancelled)}
    for job_id in (handed_over, *migrated):
        assert rds.hget(hashes[str(job_id)], "status") == b"completed" and rds.ttl(hashes[str(job_id)]) > 0
    assert rds.hget(hashes[str(cancelled)], "status") == b"cancelled"


def test_job_ids_are_time_ordered_uuid7():
    first = new_job_ids(1000)
    assert len(set(first)) == 1000
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in first)
    later = wait_until(lambda: new_job_ids(1)[0], lambda i: i.bytes[:6] > first[-1].bytes[:6], 5, "clock stood still")
    assert later > max(first)  # a later millisecond sorts after
