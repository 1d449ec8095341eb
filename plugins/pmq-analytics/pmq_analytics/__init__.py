"""pmq-analytics: ``analytics:daily-aggregate``, a daily cron job type that
summarises each queue's jobs of the previous day (UTC) into
``pmq_analytics_daily``. See README.md."""

from pmq_analytics.aggregate import DailyAggregate
from pmq_analytics.plugin import AnalyticsPlugin, plugin

__all__ = ["AnalyticsPlugin", "DailyAggregate", "plugin"]
