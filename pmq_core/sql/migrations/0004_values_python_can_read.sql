-- pmq core schema, version 4.
--
-- Nothing Python cannot represent is ever stored, whoever writes the row.
-- A run_at of 'infinity' or in year 10000 made every migrator fail its
-- next-due query ("timestamp too large") and exit, and `pmq jobs list` with
-- it; an attempt_count of 2147483647 made the claim's attempt_count + 1
-- overflow and fail a worker's whole round. The rules:
--
-- - every timestamptz is finite and from 0001-01-02 00:00 UTC up to (not
--   including) 9999-12-31 00:00 UTC: Python's datetime holds years 1 to
--   9999, and a day's margin at each end keeps the value inside them in any
--   session time zone (offsets are at most a day);
-- - a job waiting to run (queued, migrated_to_redis, retry_scheduled) has
--   an attempt_count from 0 to 2147483646, so that its claim can always add
--   one; a job in any other state, from 0 up;
-- - every job has a priority (the defaults trigger fills it in on insert).
--
-- Each rule holds for every value pmq's own statements write (they write
-- now(), a retry time the worker keeps inside the range, and attempt counts
-- that only grow from a waiting job below its max_attempts), so no batch of
-- pmq's can ever fail on them. Rows already breaking a rule are repaired
-- first: the bad value is replaced (a missing time by now(), an optional
-- one by NULL, a negative count by 0, a missing priority by 100), the row's
-- last_error_message says which value it was, and a job that had not
-- finished ends dead (failed), since nothing it holds can be trusted.

CREATE FUNCTION pmq_time_ok_v1(t timestamptz) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT t IS NULL OR (t >= '0001-01-02 00:00:00+00' AND t < '9999-12-31 00:00:00+00')
$$;

CREATE FUNCTION pmq_attempts_ok_v1(status varchar, attempt_count integer) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT attempt_count >= 0
       AND (attempt_count < 2147483647
            OR status NOT IN ('queued', 'migrated_to_redis', 'retry_scheduled'))
$$;

WITH bad AS (
    SELECT id, concat_ws(', ',
        CASE WHEN NOT pmq_time_ok_v1(run_at) THEN 'run_at ' || run_at END,
        CASE WHEN NOT pmq_time_ok_v1(started_at) THEN 'started_at ' || started_at END,
        CASE WHEN NOT pmq_time_ok_v1(completed_at) THEN 'completed_at ' || completed_at END,
        CASE WHEN NOT pmq_time_ok_v1(failed_at) THEN 'failed_at ' || failed_at END,
        CASE WHEN NOT pmq_time_ok_v1(created_at) THEN 'created_at ' || created_at END,
        CASE WHEN NOT pmq_time_ok_v1(updated_at) THEN 'updated_at ' || updated_at END,
        CASE WHEN NOT pmq_attempts_ok_v1(status, attempt_count) THEN 'attempt_count ' || attempt_count END,
        CASE WHEN priority IS NULL THEN 'priority NULL' END) AS what
      FROM jobs
     WHERE NOT (pmq_time_ok_v1(run_at) AND pmq_time_ok_v1(started_at) AND pmq_time_ok_v1(completed_at)
                AND pmq_time_ok_v1(failed_at) AND pmq_time_ok_v1(created_at) AND pmq_time_ok_v1(updated_at)
                AND pmq_attempts_ok_v1(status, attempt_count) AND priority IS NOT NULL)
)
UPDATE jobs j
   SET status = CASE WHEN j.status IN ('completed', 'failed', 'cancelled') THEN j.status ELSE 'failed' END,
       failed_at = CASE WHEN j.status IN ('completed', 'failed', 'cancelled')
                        THEN CASE WHEN pmq_time_ok_v1(j.failed_at) THEN j.failed_at END
                        ELSE now() END,
       run_at = CASE WHEN pmq_time_ok_v1(j.run_at) THEN j.run_at ELSE now() END,
       started_at = CASE WHEN pmq_time_ok_v1(j.started_at) THEN j.started_at END,
       completed_at = CASE WHEN pmq_time_ok_v1(j.completed_at) THEN j.completed_at END,
       created_at = CASE WHEN pmq_time_ok_v1(j.created_at) THEN j.created_at ELSE now() END,
       updated_at = now(),
       attempt_count = CASE WHEN pmq_attempts_ok_v1(j.status, j.attempt_count) THEN j.attempt_count
                            WHEN j.attempt_count < 0 THEN 0
                            ELSE j.attempt_count END,
       priority = coalesce(j.priority, 100),
       worker_id = CASE WHEN j.status IN ('completed', 'failed', 'cancelled') THEN j.worker_id END,
       last_error_message = left(concat_ws('; ', j.last_error_message,
           'stored value(s) pmq cannot read or use: ' || bad.what), 2000)
  FROM bad
 WHERE j.id = bad.id;

ALTER TABLE jobs
    ALTER COLUMN priority SET NOT NULL,
    ADD CONSTRAINT jobs_times_readable CHECK (
        pmq_time_ok_v1(run_at) AND pmq_time_ok_v1(started_at) AND pmq_time_ok_v1(completed_at)
        AND pmq_time_ok_v1(failed_at) AND pmq_time_ok_v1(created_at) AND pmq_time_ok_v1(updated_at)),
    ADD CONSTRAINT jobs_attempts_claimable CHECK (pmq_attempts_ok_v1(status, attempt_count));

-- The other tables pmq reads back, by the same time rule. Their bad rows
-- carry nothing to keep: a log row's bad time is replaced, a worker row is
-- dropped (a live worker registers again at its next heartbeat), a cron
-- tick is dropped (the latest tick is enqueued once more).
UPDATE job_logs
   SET started_at = CASE WHEN pmq_time_ok_v1(started_at) THEN started_at ELSE now() END,
       finished_at = CASE WHEN pmq_time_ok_v1(finished_at) THEN finished_at END
 WHERE NOT (pmq_time_ok_v1(started_at) AND pmq_time_ok_v1(finished_at));
ALTER TABLE job_logs ADD CONSTRAINT job_logs_times_readable
    CHECK (pmq_time_ok_v1(started_at) AND pmq_time_ok_v1(finished_at));

UPDATE job_queues SET created_at = now() WHERE NOT pmq_time_ok_v1(created_at);
ALTER TABLE job_queues ADD CONSTRAINT job_queues_times_readable CHECK (pmq_time_ok_v1(created_at));

DELETE FROM pmq_workers WHERE NOT (pmq_time_ok_v1(started_at) AND pmq_time_ok_v1(heartbeat_at));
ALTER TABLE pmq_workers ADD CONSTRAINT pmq_workers_times_readable
    CHECK (pmq_time_ok_v1(started_at) AND pmq_time_ok_v1(heartbeat_at));

DELETE FROM pmq_cron_ticks WHERE NOT pmq_time_ok_v1(last_tick);
ALTER TABLE pmq_cron_ticks ADD CONSTRAINT pmq_cron_ticks_times_readable CHECK (pmq_time_ok_v1(last_tick));
