"""The pmq-analytics plugin: a daily cron job type and its table.

Installed, it is the entry point ``analytics`` of the ``pmq`` group (the
module-level :data:`plugin`). It reads the core's ``jobs`` and ``job_logs``
tables on the database the worker gives it when it starts; code that runs
the handler outside a worker calls :meth:`AnalyticsPlugin.configure`.
"""

from __future__ import annotations

import threading
from typing import Any

from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from pmq_analytics import aggregate
from pmq_analytics.queries import migrations
from pmq_core import ConfigurationError, JobContext, JobType, Migration, RetryPolicy, Settings, hookimpl

#: Daily, five minutes after midnight UTC, when yesterday's jobs are in.
SCHEDULE = "5 0 * * *"


class AnalyticsPlugin:
    """Daily job statistics per queue."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool: ConnectionPool | None = None
        self._url: str | None = None

    def configure(self, settings: Settings) -> None:
        """Use the database of ``settings`` (replacing any earlier one)."""
        if not settings.database_url:
            raise ConfigurationError("pmq-analytics needs settings with a database_url")
        with self._lock:
            self._close()
            self._url = settings.database_url

    def close(self) -> None:
        with self._lock:
            self._close()
            self._url = None

    def _close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def _connections(self) -> ConnectionPool:
        with self._lock:
            if self._url is None:
                raise ConfigurationError("pmq-analytics has no database yet: it is given when a worker starts, "
                                         "or call configure(settings) first")
            if self._pool is None:
                pool = ConnectionPool(self._url, min_size=1, max_size=2, open=False,
                                      kwargs={"autocommit": True, "row_factory": dict_row,
                                              "application_name": "pmq-analytics"})
                pool.open(wait=True, timeout=10)
                self._pool = pool
            return self._pool

    def daily_aggregate(self, job: JobContext) -> dict[str, Any]:
        with self._connections().connection() as conn:
            return aggregate.run(job, conn)

    # -- hooks -----------------------------------------------------------------

    @hookimpl
    def pmq_register_job_types(self) -> list[JobType]:
        return [JobType(name=aggregate.QUEUE, handler=self.daily_aggregate, payload=aggregate.DailyAggregate,
                        priority=100, timeout=300, cron=SCHEDULE, unique_key=aggregate.unique_key,
                        retry=RetryPolicy(max_attempts=5, base_delay=5.0),
                        description="Aggregate a day's jobs per queue (default: yesterday, UTC).")]

    @hookimpl
    def pmq_register_migrations(self) -> list[Migration]:
        return migrations()

    @hookimpl
    def pmq_worker_started(self, settings: Settings) -> None:
        """Take the worker's database; the pool opens on first use."""
        with self._lock:
            if self._url != settings.database_url:
                self._close()
                self._url = settings.database_url

    @hookimpl
    def pmq_worker_stopped(self) -> None:
        """Close the pool once the worker's last job is done."""
        with self._lock:
            self._close()


#: The instance the ``pmq`` entry point loads.
plugin = AnalyticsPlugin()
