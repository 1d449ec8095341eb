"""analytics:daily-aggregate: one day's jobs, summarised per queue.

"A day's jobs" are those created during that day in UTC, whatever became of
them later; their attempts' durations come from ``job_logs``. Running the
aggregate again for a day (a retry, or an operator's backfill) replaces
that day's rows: one row per day and queue, never more.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import attrs
import psycopg

from pmq_analytics.queries import q
from pmq_core import JobContext

log = logging.getLogger(__name__)

QUEUE = "analytics:daily-aggregate"


def _iso_day(instance: Any, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is None:
        return
    try:
        date.fromisoformat(value)
    except (TypeError, ValueError):
        raise ValueError(f"day must be a date like 2026-11-28, got {value!r}") from None


@attrs.frozen(kw_only=True)
class DailyAggregate:
    """The day to aggregate (``YYYY-MM-DD``, UTC); None means the day before
    the job was created, which is what the daily cron job wants."""

    day: str | None = attrs.field(default=None, validator=_iso_day)


def unique_key(payload: dict[str, Any]) -> str:
    """One live aggregate per day asked for."""
    return f"day:{payload.get('day') or 'previous'}"


def day_of(job: JobContext) -> date:
    payload: DailyAggregate = job.payload
    if payload.day is not None:
        return date.fromisoformat(payload.day)
    return job.created_at.astimezone(UTC).date() - timedelta(days=1)


def aggregate(conn: psycopg.Connection[Any], day: date) -> list[dict[str, Any]]:
    """Upsert ``day``'s rows; return them, sorted by queue."""
    start = datetime.combine(day, time.min, tzinfo=UTC)
    with conn.transaction():
        rows = conn.execute(q("aggregate_day"), {"day": day, "start": start, "end": start + timedelta(days=1)}
                            ).fetchall()
    return sorted(rows, key=lambda row: row["queue_name"])


def run(job: JobContext, conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """The analytics:daily-aggregate handler's work, on one connection."""
    day = day_of(job)
    rows = aggregate(conn, day)
    log.info("analytics:daily-aggregate %s: %s aggregated for %d queue(s)", job.id, day, len(rows))
    return {"day": day.isoformat(), "queues": [row["queue_name"] for row in rows]}
