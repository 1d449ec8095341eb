"""The pmq-analytics plugin: a daily cron job type and its table.

Installed, it is the entry point ``analytics`` of the ``pmq`` group (the
module-level :data:`plugin`). It reads the core's ``jobs`` and ``job_logs``
tables through a connection pool to the worker's database, which each
worker process opens for it (``pmq_worker_resources``) and closes when it
stops; the handler finds it in ``job.resources[POOL]``.
"""

from __future__ import annotations

from typing import Any

from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from pmq_analytics import aggregate
from pmq_analytics.queries import migrations
from pmq_core import ConfigurationError, JobContext, JobType, Migration, RetryPolicy, Settings, hookimpl

#: Daily, five minutes after midnight UTC, when yesterday's jobs are in.
SCHEDULE = "5 0 * * *"
#: The name of the plugin's connection pool in ``job.resources``.
POOL = "pmq-analytics.pool"


class AnalyticsPlugin:
    """Daily job statistics per queue."""

    def daily_aggregate(self, job: JobContext) -> dict[str, Any]:
        pool: ConnectionPool = job.resources[POOL]
        pool.open(wait=True, timeout=10)  # the first job opens it; after that, nothing to do
        with pool.connection() as conn:
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
    def pmq_worker_resources(self, settings: Settings) -> dict[str, Any]:
        """A pool to the worker's database, opened by the first job that
        needs it (a worker that never runs one never connects) and closed
        by the worker when it stops."""
        if not settings.database_url:
            raise ConfigurationError("pmq-analytics needs settings with a database_url")
        return {POOL: ConnectionPool(settings.database_url, min_size=1, max_size=2, open=False,
                                     kwargs={"autocommit": True, "row_factory": dict_row,
                                             "application_name": "pmq-analytics"})}


#: The instance the ``pmq`` entry point loads.
plugin = AnalyticsPlugin()
