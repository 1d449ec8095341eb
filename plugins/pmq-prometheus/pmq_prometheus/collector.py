"""The deployment's gauges, read on scrape: queue depths by state and band,
the oldest due job, live workers and their slots, the migrator's leader.

They come from PostgreSQL and Redis through ``Admin.health()`` (the facts
`pmq health` reports) and ``Admin.queues()`` (waiting apart from held back
by a flow-control limit), so any one process reports the whole deployment,
whichever workers run where. One read serves the scrapes of
``cache_seconds``: several scrapers, or a dashboard's refresh, cost the
servers one read.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from pmq_core import Admin, Settings

log = logging.getLogger(__name__)

#: The per-queue gauges: name, help, and how to read it from a queue of the
#: health report, with ``waiting`` and ``held`` from ``Admin.queues()``.
QUEUE_GAUGES: tuple[tuple[str, str, Callable[[dict[str, Any]], float | None]], ...] = (
    ("pmq_queue_waiting_jobs", "Jobs due and waiting in PostgreSQL (not yet handed to Redis), not held back.",
     lambda q: q["waiting"]),
    ("pmq_queue_held_jobs", "Due jobs a flow-control limit holds back (concurrency, rate, fair turns), as the "
     "leading migrator last saw them.", lambda q: q["held"]),
    ("pmq_queue_scheduled_jobs", "Jobs due later: delayed, or scheduled for a retry.", lambda q: q["scheduled"]),
    ("pmq_queue_running_jobs", "Jobs claimed by a worker (running, or claimed ahead of a free slot).",
     lambda q: q["running"]),
    ("pmq_queue_dead_jobs", "Dead letters: jobs that failed for good, waiting for a replay or a purge.",
     lambda q: q["dead"]),
    ("pmq_queue_oldest_job_age_seconds", "Age of the oldest due job not yet started (0 when none waits).",
     lambda q: q["oldest_age"] or 0.0),
    ("pmq_queue_active", "1 while the queue is active, 0 while it is paused.", lambda q: 1.0 if q["active"] else 0.0),
    ("pmq_queue_workers", "Live workers serving the queue.", lambda q: q["workers"]),
)


class DeploymentCollector(Collector):
    """A custom collector: every gauge from one cached health report."""

    def __init__(self, settings: Settings, cache_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._lock = threading.Lock()  # one read at a time; the scrapes that wait reuse it
        self._admin: Admin | None = None
        self._report: dict[str, Any] | None = None
        self._read_at = float("-inf")

    def report(self) -> dict[str, Any] | None:
        """The latest health report, read again once ``cache_seconds`` old;
        None when it cannot be read at all."""
        with self._lock:
            if self._clock() - self._read_at >= self._cache_seconds:
                self._report = self._read()
                self._read_at = self._clock()
            return self._report

    def _read(self) -> dict[str, Any] | None:
        try:
            if self._admin is None:
                self._admin = Admin(self._settings)
            report = self._admin.health()
            return {**report, "queues": self._with_flow(self._admin, report["queues"])}
        except Exception:  # a scrape must answer whatever happened to the servers
            log.exception("pmq-prometheus could not read the deployment's state")
            if self._admin is not None:
                self._admin.close()
                self._admin = None
            return None

    @staticmethod
    def _with_flow(admin: Admin, queues: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each queue of the health report with ``waiting`` in PostgreSQL
        apart from ``held`` (those a limit holds back); while Redis cannot
        be read, waiting counts them, and held is 0."""
        try:
            flow = {queue["name"]: queue for queue in admin.queues()}
        except Exception:
            flow = {}
        return [{**queue, "waiting": flow[queue["name"]]["waiting"] if queue["name"] in flow
                 else queue["waiting"] - queue["in_redis"],
                 "held": flow[queue["name"]]["held"] if queue["name"] in flow else 0} for queue in queues]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        report = self.report()
        up = GaugeMetricFamily("pmq_up", "Whether PostgreSQL and Redis could be read for the gauges below "
                               "(1 each); the gauges are absent while PostgreSQL cannot.", labels=["server"])
        up.add_metric(["postgres"], 1.0 if report and report["postgres"]["ok"] else 0.0)
        up.add_metric(["redis"], 1.0 if report and report["redis"]["ok"] else 0.0)
        yield up
        if not report or not report["postgres"]["ok"]:
            return
        queues = report["queues"]
        for name, text, read in QUEUE_GAUGES:
            family = GaugeMetricFamily(name, text, labels=["queue"])
            for queue in queues:
                family.add_metric([queue["name"]], float(read(queue) or 0.0))
            yield family
        bands = GaugeMetricFamily("pmq_queue_redis_jobs", "Job messages waiting in Redis, by queue and priority "
                                  "band (absent while Redis cannot be read).", labels=["queue", "band"])
        for queue in queues:
            for band, depth in queue["bands"].items():
                bands.add_metric([queue["name"], band], float(depth))
        yield bands
        yield from self._workers(report)

    @staticmethod
    def _workers(report: dict[str, Any]) -> Iterator[GaugeMetricFamily]:
        workers = report["workers"]
        live = GaugeMetricFamily("pmq_workers_live", "Worker processes whose heartbeat is recent.")
        live.add_metric([], float(len(workers)))
        yield live
        labels = ["worker", "hostname", "pid"]
        slots = GaugeMetricFamily("pmq_worker_slots", "A live worker's concurrency: handlers it may run at once.",
                                  labels=labels)
        busy = GaugeMetricFamily("pmq_worker_busy_slots", "A live worker's handlers running, as of its last "
                                 "heartbeat.", labels=labels)
        for worker in workers:
            names = [worker["id"], worker["hostname"], str(worker["pid"])]
            slots.add_metric(names, float(worker["concurrency"]))
            busy.add_metric(names, float(worker["running"]))
        yield slots
        yield busy
        leader = GaugeMetricFamily("pmq_migrator_leader", "1 while a migrator holds the leader's lock, else 0.")
        leader.add_metric([], 1.0 if report["migrator"] else 0.0)
        yield leader
