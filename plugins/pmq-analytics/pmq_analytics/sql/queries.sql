-- Every query pmq-analytics runs, by name (pmq_analytics/queries.py loads them).

-- name: aggregate_day
-- The jobs created during [start, end) per queue: how many ended in each
-- state, how many attempts they took, and the median and 95th percentile of
-- their attempts' durations (from job_logs). Upserted, so that running it
-- again for one day replaces that day's rows instead of adding to them.
WITH day_jobs AS (
    SELECT id, queue_name, status, attempt_count
      FROM jobs
     WHERE created_at >= %(start)s AND created_at < %(end)s
), counts AS (
    SELECT queue_name,
           count(*)                                       AS jobs,
           count(*) FILTER (WHERE status = 'completed')   AS completed,
           count(*) FILTER (WHERE status = 'failed')      AS failed,
           count(*) FILTER (WHERE status = 'cancelled')   AS cancelled,
           count(*) FILTER (WHERE status NOT IN ('completed', 'failed', 'cancelled')) AS unfinished,
           coalesce(sum(attempt_count), 0)                AS attempts
      FROM day_jobs
     GROUP BY queue_name
), durations AS (
    SELECT j.queue_name,
           count(*) AS timed_attempts,
           percentile_cont(0.5)  WITHIN GROUP (ORDER BY extract(epoch FROM l.duration)) AS p50,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM l.duration)) AS p95
      FROM job_logs l
      JOIN day_jobs j ON j.id = l.job_id
     WHERE l.duration IS NOT NULL
     GROUP BY j.queue_name
)
INSERT INTO pmq_analytics_daily AS d (day, queue_name, jobs, completed, failed, cancelled, unfinished, attempts,
                                      timed_attempts, p50_seconds, p95_seconds)
SELECT %(day)s, c.queue_name, c.jobs, c.completed, c.failed, c.cancelled, c.unfinished, c.attempts,
       coalesce(t.timed_attempts, 0), t.p50, t.p95
  FROM counts c
  LEFT JOIN durations t USING (queue_name)
ON CONFLICT (day, queue_name) DO UPDATE
   SET jobs = EXCLUDED.jobs, completed = EXCLUDED.completed, failed = EXCLUDED.failed,
       cancelled = EXCLUDED.cancelled, unfinished = EXCLUDED.unfinished, attempts = EXCLUDED.attempts,
       timed_attempts = EXCLUDED.timed_attempts, p50_seconds = EXCLUDED.p50_seconds,
       p95_seconds = EXCLUDED.p95_seconds, computed_at = now()
RETURNING d.queue_name, d.jobs, d.completed, d.failed, d.cancelled, d.unfinished, d.attempts,
          d.timed_attempts, d.p50_seconds, d.p95_seconds;
