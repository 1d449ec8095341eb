"""Priority bands, pausing, and the migrator's leadership."""

from __future__ import annotations

import threading

import psycopg

from pmq_core import JobStatus
from pmq_core.db import pg_connect, redis_client
from pmq_core.jobtypes import band_of
from pmq_core.keys import Keys
from pmq_core.migrator import REFILL_EVERY, Migrator
from pmq_core.testing import wait_until
from tests.plugin_samples import Recorder, make_plugin


def status_counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return dict(conn.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall())


def test_thousand_jobs_start_in_band_order(pmq_runtime):
    recorder = Recorder()
    rt = pmq_runtime(make_plugin(recorder), worker=False)
    priorities = [(i * 37) % 300 for i in range(1000)]  # spread over all three bands
    for priority in sorted(set(priorities)):
        count = priorities.count(priority)
        rt.client.enqueue_many("echo", [{"n": priority}] * count, priority=priority)
    rds = redis_client(rt.settings.redis_url)
    band_keys = Keys(rt.settings.key_prefix).bands("echo")
    # every message in Redis (a producer pushes them just after its commit)
    wait_until(lambda: sum(rds.llen(key) for key in band_keys), lambda n: n == 1000, 20,
               "all jobs should be handed to Redis")
    assert status_counts(rt.settings.database_url) == {"migrated_to_redis": 1000}
    rt.start_worker(concurrency=1)
    wait_until(lambda: len(recorder.calls), lambda n: n == 1000, 60, "all jobs should run")
    bands = [band_of(payload.n) for _queue, payload, _attempt in recorder.calls]
    rank = {"high": 0, "normal": 1, "low": 2}
    assert [rank[b] for b in bands] == sorted(rank[b] for b in bands)
    assert {"high", "normal", "low"} == set(bands)


def test_a_migrator_keeps_watching_for_room_while_jobs_wait_behind_a_full_share(pmq_runtime):
    rt = pmq_runtime(make_plugin(Recorder()), worker=False, migrator=False, redis_depth=5,
                     dispatch_on_enqueue=False)
    rt.client.enqueue_many("echo", [{"n": i} for i in range(12)])
    band = Keys(rt.settings.key_prefix).band("echo", "normal")
    migrator = Migrator(rt.settings, rt.plugins)
    rds = redis_client(rt.settings.redis_url)
    with pg_connect(rt.settings.database_url) as conn:
        assert migrator.tick(conn, rds) == 0.0  # a full batch: more may be due, look again at once
        assert rds.llen(band) == 5
        assert migrator.tick(conn, rds) == REFILL_EVERY  # no room, 7 due: watch for room, not sleep
        assert migrator.tick(conn, rds) == 2 * REFILL_EVERY  # still no room: look less often
        rds.lpop(band, 5)  # as workers would
        assert migrator.tick(conn, rds) == 0.0
        assert migrator.tick(conn, rds) == REFILL_EVERY  # room was found: watch closely again
        rds.lpop(band, 5)
        assert migrator.tick(conn, rds) > 0.0  # the last 2: a short batch ends the backlog
        assert rds.llen(band) == 2
        # Room, and nothing due: the idle wait (bounded by the next housekeeping,
        # so its length varies), not the refill watch.
        assert migrator.tick(conn, rds) != REFILL_EVERY
    rds.close()
    assert status_counts(rt.settings.database_url) == {"migrated_to_redis": 12}


def test_paused_queue_waits_and_resumes(pmq_runtime):
    recorder = Recorder()
    rt = pmq_runtime(make_plugin(recorder))
    with rt.admin() as admin:
        admin.set_active("aecho", False)
        paused = [rt.enqueue("aecho", {"i": i}) for i in range(5)]
        control = rt.enqueue("echo", {"n": 1})
        rt.wait(control)  # other queues keep running meanwhile
        assert {rt.job(j).status for j in paused} == {JobStatus.QUEUED}
        admin.set_active("aecho", True)
    assert {j.status for j in rt.wait_all(paused)} == {JobStatus.COMPLETED}


def test_standby_migrator_takes_over_without_migrating_twice(pmq_runtime):
    recorder = Recorder()
    rt = pmq_runtime(make_plugin(recorder), migrator=False)
    first, second = Migrator(rt.settings, rt.plugins), Migrator(rt.settings, rt.plugins)
    stops = [threading.Event(), threading.Event()]
    threads = [threading.Thread(target=m.run, args=(s,), daemon=True)
               for m, s in zip((first, second), stops, strict=True)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: (first.is_leader.is_set(), second.is_leader.is_set()), lambda s: any(s), 10,
                   "one migrator should lead")
        leader, standby = (0, 1) if first.is_leader.is_set() else (1, 0)
        migrators = (first, second)
        assert not migrators[standby].is_leader.is_set()
        before = rt.client.enqueue_many("echo", [{"n": i} for i in range(200)])
        rt.wait_all(before)
        stops[leader].set()
        threads[leader].join(10)
        wait_until(lambda: migrators[standby].is_leader.is_set(), bool, 10, "the standby should take over")
        after = rt.client.enqueue_many("echo", [{"n": i} for i in range(200)])
        jobs = rt.wait_all(before + after)
    finally:
        for stop in stops:
            stop.set()
        for thread in threads:
            thread.join(10)
    assert {j.status for j in jobs} == {JobStatus.COMPLETED}
    assert {j.attempt_count for j in jobs} == {1}
    assert first.migrated + second.migrated == 400
    assert len(recorder.calls) == 400
