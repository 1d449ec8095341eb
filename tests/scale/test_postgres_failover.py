"""PostgreSQL fails over under load: a primary and a streaming replica with
synchronous replication, started by the test from PostgreSQL's binaries;
pmq reaches them by one multi-host URL (``target_session_attrs=read-write``).
The primary is SIGKILLed and the replica promoted (what an orchestrator
such as Patroni does); producers, workers and the migrator reconnect to the
new primary, and every job whose enqueue returned completes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from pmq_core import DatabaseUnavailableError, JobStatus
from pmq_core.testing import wait_until
from tests.plugin_samples import Recorder, make_plugin
from tests.scale.servers import PostgresPair, elapsed_since

pytestmark = [pytest.mark.scale, pytest.mark.timeout(240)]

#: Jobs enqueued, one by one, while the primary is killed.
LOAD = 1500


@pytest.fixture
def postgres_pair() -> Iterator[PostgresPair]:
    pair = PostgresPair(synchronous=True)
    try:
        pair.start()
        yield pair
    finally:
        pair.stop()


class Producer(threading.Thread):
    """Enqueues LOAD jobs; an enqueue refused while no primary answers
    (nothing written, or its fate unknown) is offered again."""

    def __init__(self, runtime) -> None:
        super().__init__(daemon=True)
        self.runtime = runtime
        self.accepted: list = []
        self.refusals = 0

    def run(self) -> None:
        for n in range(LOAD):
            while True:
                try:
                    self.accepted.append(self.runtime.enqueue("echo", {"n": n}))
                    break
                except DatabaseUnavailableError:
                    self.refusals += 1
                    time.sleep(0.05)


def test_a_promoted_replica_takes_over_and_no_committed_job_is_lost(pmq_runtime, postgres_pair):
    recorder = Recorder()
    rt = pmq_runtime(make_plugin(recorder), database_url=postgres_pair.url, concurrency=20)
    producer = Producer(rt)
    producer.start()
    wait_until(lambda: len(recorder.calls), lambda n: n >= 200, 30, "jobs did not flow")
    accepted_before = len(producer.accepted)
    ran_before = len(recorder.calls)
    killed = time.monotonic()
    postgres_pair.kill_primary()
    postgres_pair.promote()
    promoted = elapsed_since(killed)
    wait_until(lambda: len(producer.accepted), lambda n: n > accepted_before + 10, 60, "enqueues did not resume")
    enqueuing = elapsed_since(killed)
    wait_until(lambda: len(recorder.calls), lambda n: n > ran_before + 200, 90, "jobs did not run again")
    running = elapsed_since(killed)
    producer.join(120)
    assert len(producer.accepted) == LOAD
    jobs = rt.wait_all(producer.accepted, timeout=90)
    assert {job.status for job in jobs} == {JobStatus.COMPLETED}
    print(f"\npostgres failover under load: {LOAD} jobs, all completed; replica promoted {promoted}s after the "
          f"kill, enqueues went through again after {enqueuing}s ({producer.refusals} refusals), "
          f"jobs ran again after {running}s")
