"""The counters and histograms a process records from pmq's lifecycle hooks.

Created on first need, never on import: `pmq run --processes N` puts
prometheus_client in multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``) before
anything records, so that the metrics of every worker process reach the one
endpoint (see :mod:`pmq_prometheus.endpoint`).
"""

from __future__ import annotations

import functools
from typing import Any

from prometheus_client import Counter, Histogram

#: Handler durations and queue waits, in seconds: from quick jobs (5 ms) to
#: the longest timeouts of the seed's job types (analytics: 300 s).
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, float("inf"))

#: The outcomes of ``pmq_jobs_finished_total``: each attempt ends in one.
OUTCOMES = ("completed", "retried", "dead", "cancelled")


class QueueMetrics:
    """One queue's labelled series, looked up once: a job then costs its
    observations only, not a label lookup each."""

    def __init__(self, recorder: Recorder, queue: str) -> None:
        self.enqueued = recorder.enqueued.labels(queue)
        self.outcome: dict[str, Any] = {outcome: recorder.finished.labels(queue, outcome) for outcome in OUTCOMES}
        self.timed_out = recorder.timed_out.labels(queue)
        self.duration = recorder.duration.labels(queue)
        self.wait = recorder.wait.labels(queue)


class Recorder:
    """This process's job metrics (one set per process: prometheus_client
    refuses a second metric of one name in a registry)."""

    def __init__(self) -> None:
        self.enqueued = Counter("pmq_jobs_enqueued", "Jobs enqueued through a pmq client, by queue.", ["queue"])
        self.finished = Counter(
            "pmq_jobs_finished", "Attempts that ended, by queue and outcome: completed, retried (failed, another "
            "attempt scheduled), dead (failed for good), cancelled (stopped by an operator while running).",
            ["queue", "outcome"])
        self.timed_out = Counter("pmq_jobs_timed_out", "Attempts stopped by their job type's timeout (each is also "
                                 "counted as retried or dead).", ["queue"])
        self.duration = Histogram("pmq_job_duration_seconds", "How long handlers ran (with the wrappers), by queue.",
                                  ["queue"], buckets=BUCKETS)
        self.wait = Histogram("pmq_job_wait_seconds", "How long jobs waited from due (enqueue, run_at or retry) to "
                              "their handler's start, by queue.", ["queue"], buckets=BUCKETS)
        self._queues: dict[str, QueueMetrics] = {}

    def queue(self, name: str) -> QueueMetrics:
        found = self._queues.get(name)
        if found is None:
            found = self._queues[name] = QueueMetrics(self, name)
        return found


@functools.cache
def recorder() -> Recorder:
    """The process's recorder, created once, when first needed."""
    return Recorder()
