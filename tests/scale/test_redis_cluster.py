"""pmq on a Redis Cluster of three primaries (each with a replica) started
by the test: the core flow, retries and dead letters, a wiped cluster, and
a primary killed under load, after which its replica takes over and every
job completes."""

from __future__ import annotations

import threading
import time

import attrs
import pytest
import redis
from redis.crc import key_slot

from pmq_core import JobStatus
from pmq_core.admin import Admin
from pmq_core.keys import Keys
from pmq_core.testing import wait_until
from tests.plugin_samples import Recorder, make_plugin
from tests.scale.servers import Cluster, elapsed_since

pytestmark = [pytest.mark.scale, pytest.mark.timeout(180)]

#: The queues the tests spread jobs over: hashed to different primaries.
QUEUES = ("echo", "aecho")
#: Jobs per queue enqueued while a primary is killed.
LOAD = 1000


def on_cluster(pmq_runtime, cluster: Cluster, plugin, **options):
    return pmq_runtime(plugin, redis_url=cluster.url, redis_mode="cluster", **options)


def cluster_client(cluster: Cluster) -> redis.RedisCluster:
    return redis.RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port)


def test_the_queues_used_here_live_on_different_primaries(cluster):
    keys = Keys("p:")
    assert len({key_slot(keys.band(queue, "normal").encode()) for queue in QUEUES}) == 2
    assert cluster.primary_of(keys.band("echo", "normal")) is not cluster.primary_of(keys.band("aecho", "normal"))


def test_jobs_of_queues_in_different_slots_complete_in_priority_order_within_a_queue(pmq_runtime, cluster):
    recorder = Recorder()
    rt = on_cluster(pmq_runtime, cluster, make_plugin(recorder), worker=False)
    low = [rt.enqueue("echo", {"n": i}, priority=200) for i in range(3)]
    high = [rt.enqueue("echo", {"n": 10 + i}, priority=10) for i in range(3)]
    other = [rt.enqueue("aecho", {"x": i}) for i in range(5)]
    wait_until(lambda: {rt.job(j).status for j in low + high + other}, lambda s: s == {JobStatus.MIGRATED_TO_REDIS},
               10, "jobs not handed to the cluster")
    rt.start_worker(concurrency=1)
    assert {job.status for job in rt.wait_all(low + high + other)} == {JobStatus.COMPLETED}
    echoed = [payload.n for queue, payload, _attempt in recorder.calls if queue == "echo"]
    assert echoed == [10, 11, 12, 0, 1, 2]  # the urgent band first, FIFO within each band
    status_hash = Keys(rt.settings.key_prefix).job("aecho", other[0])
    with cluster_client(cluster) as client:  # the mirror follows the commit, in the background
        wait_until(lambda: client.hget(status_hash, "status"), lambda s: s == b"completed", 10, "status not mirrored")


def test_retries_dead_letters_and_replay_on_a_cluster(pmq_runtime, cluster):
    recorder = Recorder()
    rt = on_cluster(pmq_runtime, cluster, make_plugin(recorder), retry_delay_scale=0)
    flaky = rt.enqueue("flaky", {"succeed_on": 2})
    doomed = [rt.enqueue("doomed", {}) for _ in range(3)]
    assert rt.wait(flaky).status is JobStatus.COMPLETED
    assert rt.job(flaky).attempt_count == 2
    assert {job.status for job in rt.wait_all(doomed)} == {JobStatus.FAILED}
    dead_key = Keys(rt.settings.key_prefix).dead("doomed")
    with cluster_client(cluster) as client:
        wait_until(lambda: {i.decode() for i in client.lrange(dead_key, 0, -1)},
                   lambda ids: ids == set(map(str, doomed)), 10, "dead letters not listed")
        with rt.admin() as admin:
            assert set(admin.replay(queue="doomed")) == set(doomed)
        assert client.llen(dead_key) == 0  # replay took them off the list
    assert {job.status for job in rt.wait_all(doomed)} == {JobStatus.FAILED}  # and they died again


def test_jobs_whose_messages_a_wiped_cluster_lost_are_handed_over_again(pmq_runtime, cluster):
    recorder = Recorder()
    rt = on_cluster(pmq_runtime, cluster, make_plugin(recorder), worker=False)
    ids = [rt.enqueue(queue, {"n": i} if queue == "echo" else {}) for i in range(20) for queue in QUEUES]
    wait_until(lambda: {rt.job(j).status for j in ids}, lambda s: s == {JobStatus.MIGRATED_TO_REDIS}, 10,
               "jobs not handed to the cluster")
    for node in cluster.nodes[:cluster.primaries]:
        with node.client() as client:
            client.flushall()
    rt.start_worker()
    assert {job.status for job in rt.wait_all(ids, timeout=30)} == {JobStatus.COMPLETED}
    assert len(recorder.calls) == len(ids)


def test_a_primary_killed_under_load_fails_over_and_every_job_completes(pmq_runtime, cluster):
    recorder = Recorder()
    rt = on_cluster(pmq_runtime, cluster, make_plugin(recorder), concurrency=20)
    ids: list = []
    producer = threading.Thread(target=lambda: ids.extend(
        rt.enqueue(queue, {"n": n} if queue == "echo" else {}) for n in range(LOAD) for queue in QUEUES), daemon=True)
    producer.start()
    wait_until(lambda: len(recorder.calls), lambda n: n >= 300, 30, "jobs did not flow")
    band = Keys(rt.settings.key_prefix).band("echo", "normal")
    victim = cluster.primary_of(band)
    echoed_before = echoed(recorder)
    killed = time.monotonic()
    victim.kill()
    assert cluster.wait_promoted(band, victim).alive
    failed_over = elapsed_since(killed)
    # A process started now finds the cluster though the first node its URL names is dead.
    with Admin(attrs.evolve(rt.settings, redis_url=cluster.url_starting_with(victim))) as admin:
        assert admin.health()["redis"]["ok"]
    wait_until(lambda: echoed(recorder), lambda n: n > echoed_before + 50, 60,
               "jobs of the killed primary's queue did not flow again")
    flowing = elapsed_since(killed)
    producer.join(60)
    assert len(ids) == 2 * LOAD
    assert {job.status for job in rt.wait_all(ids, timeout=60)} == {JobStatus.COMPLETED}
    print(f"\ncluster failover under load: {len(ids)} jobs all completed; its replica took over "
          f"{failed_over}s after the primary was killed, its queue's jobs ran again after {flowing}s")


def echoed(recorder: Recorder) -> int:
    return sum(1 for queue, *_ in recorder.calls if queue == "echo")
