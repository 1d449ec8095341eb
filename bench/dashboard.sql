-- SQL of the dashboard's measurement at scale (bench/dashboard_pages.py),
-- by name like pmq_core/sql/queries.sql.

-- name: fill_queues
INSERT INTO job_queues (name)
SELECT 'queue-' || g FROM generate_series(0, 8) AS g
UNION ALL SELECT 'rare'
ON CONFLICT DO NOTHING;

-- name: fill_jobs
-- %(count)s jobs, as a busy deployment keeps them within retention: the
-- newest 60,000 over the last hour, the rest over the 90 days before it.
-- Of each 100: 93 completed, 4 dead, and one each queued, cancelled and
-- waiting for a retry (half of the waiting ones due a day ahead). Nine
-- queues share them; the queue 'rare' has one job in 10,000.
INSERT INTO jobs (queue_name, status, payload, attempt_count, max_attempts, run_at, started_at,
                  completed_at, failed_at, last_error_message, created_at, updated_at)
SELECT CASE WHEN g %% 10000 = 0 THEN 'rare' ELSE 'queue-' || (g %% 9) END,
       s.status, jsonb_build_object('n', g, 'to', 'user' || g || '@example.com'), 1, 5,
       CASE WHEN s.status IN ('queued', 'retry_scheduled') AND g %% 2 = 0 THEN now() + interval '1 day' ELSE t.at END,
       t.at, CASE WHEN s.status = 'completed' THEN t.at END, CASE WHEN s.status = 'failed' THEN t.at END,
       CASE WHEN s.status IN ('failed', 'retry_scheduled') THEN 'ConnectionError: upstream refused job ' || g END,
       t.at - interval '1 second', t.at
  FROM generate_series(1, %(count)s) AS g,
       LATERAL (SELECT CASE WHEN g <= 60000 THEN now() - make_interval(secs => g * 0.06)
                            ELSE now() - interval '1 hour' - make_interval(secs => (g - 60000) * 8.0) END) AS t(at),
       LATERAL (SELECT CASE WHEN g %% 100 < 93 THEN 'completed' WHEN g %% 100 < 97 THEN 'failed'
                            WHEN g %% 100 = 97 THEN 'queued' WHEN g %% 100 = 98 THEN 'cancelled'
                            ELSE 'retry_scheduled' END) AS s(status);

-- name: fill_logs
-- One attempt per finished job.
INSERT INTO job_logs (job_id, status, log_message, attempt_number, started_at, finished_at, duration)
SELECT id, CASE status WHEN 'completed' THEN 'success' ELSE 'failed' END, last_error_message, 1,
       updated_at - interval '1 second', updated_at, interval '1 second'
  FROM jobs WHERE status IN ('completed', 'failed');

-- name: analyze
ANALYZE jobs;
ANALYZE job_logs;

-- name: some_job
SELECT id FROM jobs WHERE status = 'failed' LIMIT 1;
