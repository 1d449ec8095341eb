"""pmq on a Sentinel-managed Redis: a primary, one replica and three
Sentinels started by the test, the servers and the Sentinels each with a
password of their own, as in production. The primary is killed under load; the
Sentinels promote the replica, pmq's clients follow them, and every job
completes. The time to recover is printed (docs/deployment.md quotes it)."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from pmq_core import JobStatus
from pmq_core.testing import wait_until
from tests.plugin_samples import Recorder, make_plugin
from tests.scale.servers import SentinelGroup, elapsed_since

pytestmark = [pytest.mark.scale, pytest.mark.timeout(180)]

#: Jobs enqueued while the primary is killed.
LOAD = 2000


def test_the_primary_killed_under_load_is_replaced_and_every_job_completes(pmq_runtime, sentinels: SentinelGroup):
    with redis.Redis(port=sentinels.sentinels[0].port, socket_timeout=5) as anonymous, \
            pytest.raises(redis.AuthenticationError):  # the Sentinels' own password is required
        anonymous.sentinel_get_master_addr_by_name(sentinels.SERVICE)
    recorder = Recorder()
    rt = pmq_runtime(make_plugin(recorder), redis_url=sentinels.url, redis_mode="sentinel", concurrency=20)
    ids: list = []
    producer = threading.Thread(target=lambda: ids.extend(rt.enqueue("echo", {"n": n}) for n in range(LOAD)),
                                daemon=True)
    producer.start()
    wait_until(lambda: len(recorder.calls), lambda n: n >= 300, 30, "jobs did not flow")
    before = len(recorder.calls)
    killed = time.monotonic()
    sentinels.primary.kill()
    wait_until(sentinels.current_primary_port, lambda port: port == sentinels.replica.port, 30,
               "the Sentinels did not promote the replica")
    promoted = elapsed_since(killed)
    wait_until(lambda: len(recorder.calls), lambda n: n > before + 100, 60, "jobs did not flow again")
    flowing = elapsed_since(killed)
    producer.join(60)
    assert len(ids) == LOAD
    assert {job.status for job in rt.wait_all(ids, timeout=60)} == {JobStatus.COMPLETED}
    print(f"\nsentinel failover under load: {len(ids)} jobs all completed; the replica was promoted "
          f"{promoted}s after the primary was killed, jobs ran again after {flowing}s")
