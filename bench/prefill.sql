-- SQL of the benchmark's scaling runs (bench_pmq.setup), by name like
-- pmq_core/sql/queries.sql.

-- name: prefill_jobs
-- Jobs already in the table before a run: finished ones, as a busy
-- deployment accumulates within its retention, spread over the last day.
INSERT INTO jobs (queue_name, status, payload, attempt_count, max_attempts, run_at,
                  started_at, completed_at, created_at, updated_at)
SELECT %(queue)s, 'completed', jsonb_build_object('n', g), 1, 5, t, t, t, t, t
  FROM generate_series(1, %(count)s) AS g,
       LATERAL (SELECT now() - make_interval(secs => g %% 86400)) AS s(t);

-- name: analyze_jobs
ANALYZE jobs;
