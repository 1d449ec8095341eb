"""What a process counts from pmq's lifecycle hooks, and how the counts of
every process of a run reach one endpoint.

A worker records a job with a few additions to plain dicts under a lock
(about a microsecond), not with prometheus_client's metric objects: in the
library's multiprocess mode each observation is a locked write to a mapped
file, several times an in-memory one, and a job needs four (the figures are
in docs/observability.md). Instead each process writes its totals, as one small JSON file named
after its pid, to a directory the run shares (every second, and when its
worker stops), and the serving process sums the files when scraped
(:class:`SnapshotCollector`). The totals of a worker process that exited
stay in its file. The exposition is still prometheus_client's own
(``CounterMetricFamily``, ``HistogramMetricFamily``).
"""

from __future__ import annotations

import bisect
import json
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

#: Handler durations and queue waits, in seconds: from quick jobs (5 ms) to
#: the longest timeouts of the seed's job types (analytics: 300 s).
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
#: The outcomes of ``pmq_jobs_finished_total``: each attempt ends in one.
OUTCOMES = ("completed", "retried", "dead", "cancelled")
#: Seconds between two writes of a process's totals.
WRITE_EVERY = 1.0

#: Each counter: its name (without ``_total``), help, and label names.
COUNTERS = {
    "pmq_jobs_enqueued": ("Jobs enqueued through a pmq client, by queue.", ("queue",)),
    "pmq_jobs_finished": ("Attempts that ended, by queue and outcome: completed, retried (failed, another attempt "
                          "scheduled), dead (failed for good), cancelled (stopped by an operator while running).",
                          ("queue", "outcome")),
    "pmq_jobs_timed_out": ("Attempts stopped by their job type's timeout (each is also counted as retried or dead).",
                           ("queue",)),
}
#: Each histogram (by queue): its name and help.
HISTOGRAMS = {
    "pmq_job_duration_seconds": "How long handlers ran (with the wrappers), by queue.",
    "pmq_job_wait_seconds": "How long jobs waited from due (enqueue, run_at or retry) to their handler's start, "
                            "by queue.",
}


class Tally:
    """One process's counts: counters by name and label values, histograms
    by name and queue (bucket counts, then the sum)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # the worker's loop and the migrator's thread both count
        self._counters: dict[tuple[str, ...], float] = {}
        self._histograms: dict[tuple[str, str], list[float]] = {}

    def inc(self, name: str, *labels: str, amount: float = 1.0) -> None:
        key = (name, *labels)
        with self._lock:
            self._counters[key] = self._counters.get(key, 0.0) + amount

    def observe(self, name: str, queue: str, value: float) -> None:
        index = bisect.bisect_left(BUCKETS, value)  # the first bucket whose bound is >= value; len: +Inf
        key = (name, queue)
        with self._lock:
            counts = self._histograms.get(key)
            if counts is None:
                counts = self._histograms[key] = [0.0] * (len(BUCKETS) + 2)
            counts[index] += 1
            counts[-1] += value

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"counters": [[*key, value] for key, value in self._counters.items()],
                    "histograms": [[*key, list(counts)] for key, counts in self._histograms.items()]}


def metric_families(snapshots: list[dict[str, Any]]) -> Iterator[Metric]:
    """The sum of ``snapshots`` as Prometheus counters and histograms."""
    counters: dict[tuple[str, ...], float] = {}
    histograms: dict[tuple[str, str], list[float]] = {}
    for snapshot in snapshots:
        for *key, value in snapshot.get("counters", []):
            counters[tuple(key)] = counters.get(tuple(key), 0.0) + value
        for name, queue, counts in snapshot.get("histograms", []):
            total = histograms.setdefault((name, queue), [0.0] * len(counts))
            for index, count in enumerate(counts):
                total[index] += count
    for name, (text, labels) in COUNTERS.items():
        family = CounterMetricFamily(name, text, labels=list(labels))
        for key, value in sorted(counters.items()):
            if key[0] == name:
                family.add_metric(list(key[1:]), value)
        yield family
    for name, text in HISTOGRAMS.items():
        histogram = HistogramMetricFamily(name, text, labels=["queue"])
        for (found, queue), counts in sorted(histograms.items()):
            if found == name:
                running, buckets = 0.0, []
                for bound, count in zip([*map(str, BUCKETS), "+Inf"], counts[:-1], strict=True):
                    running += count
                    buckets.append((bound, running))
                histogram.add_metric([queue], buckets, sum_value=counts[-1])
        yield histogram


class TallyCollector(Collector):
    """One process's own counts (a producer's enqueues, in its default registry)."""

    def __init__(self, tally: Tally) -> None:
        self._tally = tally

    def collect(self) -> Iterator[Metric]:
        return metric_families([self._tally.snapshot()])


class SnapshotCollector(Collector):
    """The counts of every process of a run: the sum of the files in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory

    def collect(self) -> Iterator[Metric]:
        snapshots = []
        for path in self._directory.glob("*.json"):
            try:
                snapshots.append(json.loads(path.read_text()))
            except (OSError, ValueError):  # a file being replaced, or not ours: the next scrape reads it
                continue
        return metric_families(snapshots)


class SnapshotWriter:
    """Writes a process's totals to ``<directory>/<pid>.json`` every
    WRITE_EVERY seconds from a daemon thread, and on :meth:`write_now`."""

    def __init__(self, tally: Tally, directory: Path) -> None:
        self._tally = tally
        self._path = directory / f"{os.getpid()}.json"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pmq-metrics-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(WRITE_EVERY):
            self.write_now()

    def write_now(self) -> None:
        """Replace the file atomically, so that a scrape never reads half of it."""
        temporary = self._path.with_suffix(".tmp")
        try:
            temporary.write_text(json.dumps(self._tally.snapshot()))
            temporary.replace(self._path)
        except OSError:
            log.exception("pmq-prometheus could not write this process's counts to %s", self._path)
