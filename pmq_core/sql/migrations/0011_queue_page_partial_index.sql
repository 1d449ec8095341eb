-- pmq core schema, version 11.
--
-- The index of version 10 served a queue's jobs page (and `pmq jobs list
-- --queue`) but took a write at every state change of every job: a state
-- change rewrites the row (the (status, updated_at) index keeps it from
-- being a HOT update), and a full index gets an entry for each new row
-- version: on the benchmark's drain, 1,944 bytes of WAL per job against
-- 1,670 without it. This one brings it to 1,762 (docs/performance.md).
--
-- This index holds only the states a queue can hold by the million:
-- waiting (queued, retry_scheduled) and finished (completed, failed,
-- cancelled). PostgreSQL adds an entry only for a row version that matches,
-- so a job is written into it when it is enqueued and when it ends, not
-- when it is handed to Redis or claimed. A queue's page reads the two
-- states left out (migrated_to_redis, running) from the (status,
-- updated_at) index, past other queues' jobs in those states, which
-- redis_depth and the workers' slots keep few (see the queue_job_page
-- query).
--
-- Building it takes a write lock on jobs for as long as the build, as the
-- index it replaces did.
DROP INDEX IF EXISTS jobs_queue_status_updated_idx;
CREATE INDEX IF NOT EXISTS jobs_queue_backlog_idx ON jobs (queue_name, status, updated_at)
 WHERE status IN ('queued', 'retry_scheduled', 'completed', 'failed', 'cancelled');
