-- Every query pmq runs, by name. pmq_core/queries.py loads the blocks; a
-- block starts with "-- name: <name>" and runs to the next one.
-- Parameters use psycopg's %(name)s placeholders.

-- name: insert_jobs
-- Enqueue many jobs in one statement. A job whose uniqueness key is already
-- held by a live job is skipped; RETURNING lists those inserted. With
-- %(dispatch)s, a job that is due now in an active queue is stored as
-- already handed to Redis: the producer pushes its message right after the
-- commit, and the migrator's check for lost messages covers a producer that
-- dies in between. A flow-controlled queue's jobs (pmq_limits has a row
-- for the queue) always go through the migrator, which enforces the limits.
INSERT INTO jobs (id, queue_name, priority, payload, max_attempts, run_at, unique_key, partition_key, headers,
                  status)
SELECT i.id, i.queue_name, i.priority, i.payload, i.max_attempts,
       coalesce(i.run_at, now()), i.unique_key, i.partition_key, %(headers)s::jsonb,
       CASE WHEN %(dispatch)s AND coalesce(i.run_at, now()) <= now()
                 AND (SELECT is_active FROM job_queues WHERE name = i.queue_name)
                 AND NOT EXISTS (SELECT 1 FROM pmq_limits WHERE queue_name = i.queue_name)
            THEN 'migrated_to_redis' ELSE 'queued' END
  FROM unnest(%(ids)s::uuid[], %(queues)s::varchar[], %(priorities)s::int[],
              %(payloads)s::jsonb[], %(max_attempts)s::int[],
              %(run_ats)s::timestamptz[], %(unique_keys)s::text[], %(partitions)s::text[])
       AS i(id, queue_name, priority, payload, max_attempts, run_at, unique_key, partition_key)
ON CONFLICT (queue_name, unique_key)
   WHERE unique_key IS NOT NULL
     AND status IN ('queued', 'migrated_to_redis', 'running', 'retry_scheduled')
   DO NOTHING
RETURNING id, queue_name, status, priority, attempt_count, created_at;

-- name: insert_job
-- The same for one job, with plain parameters: the common case, and
-- cheaper to send than arrays.
INSERT INTO jobs (id, queue_name, priority, payload, max_attempts, run_at, unique_key, partition_key, headers,
                  status)
VALUES (%(id)s::uuid, %(queue)s::varchar, %(priority)s::int, %(payload)s::jsonb, %(max_attempts)s::int,
        coalesce(%(run_at)s::timestamptz, now()), %(unique_key)s::text, %(partition)s::text,
        %(headers)s::jsonb,
        CASE WHEN %(dispatch)s::boolean AND coalesce(%(run_at)s::timestamptz, now()) <= now()
                  AND (SELECT is_active FROM job_queues WHERE name = %(queue)s::varchar)
                  AND NOT EXISTS (SELECT 1 FROM pmq_limits WHERE queue_name = %(queue)s::varchar)
             THEN 'migrated_to_redis' ELSE 'queued' END)
ON CONFLICT (queue_name, unique_key)
   WHERE unique_key IS NOT NULL
     AND status IN ('queued', 'migrated_to_redis', 'running', 'retry_scheduled')
   DO NOTHING
RETURNING id, queue_name, status, priority, attempt_count, created_at;

-- name: live_jobs_by_unique_key
SELECT unique_key, id FROM jobs
 WHERE queue_name = %(queue)s AND unique_key = ANY(%(keys)s::text[])
   AND status IN ('queued', 'migrated_to_redis', 'running', 'retry_scheduled');

-- name: copy_jobs
COPY jobs (id, queue_name, priority, payload, max_attempts, run_at, partition_key, headers) FROM STDIN;

-- name: queue_defaults
SELECT name, default_priority, max_attempts, is_active FROM job_queues;

-- name: upsert_queue
-- A job type's defaults become its queue's defaults; pausing is left alone.
INSERT INTO job_queues (name, default_priority, max_attempts)
VALUES (%(name)s, %(priority)s, %(max_attempts)s)
ON CONFLICT (name) DO UPDATE
   SET default_priority = EXCLUDED.default_priority,
       max_attempts = EXCLUDED.max_attempts;

-- name: set_queue_active
UPDATE job_queues SET is_active = %(active)s WHERE name = %(name)s RETURNING name;

-- name: requeue_paused
-- Pausing a queue takes back what the migrator already handed to Redis; the
-- messages left there fail their claim and are dropped.
UPDATE jobs SET status = 'queued', updated_at = now()
 WHERE queue_name = %(name)s AND status = 'migrated_to_redis';

-- name: active_queues
SELECT name FROM job_queues WHERE is_active ORDER BY name;

-- name: migrate_due
-- Hand due jobs to Redis: per active queue, at most its budget, in priority
-- order. SKIP LOCKED keeps a second migrator (or a slow one) harmless.
WITH budget AS (
    SELECT * FROM unnest(%(queues)s::varchar[], %(limits)s::int[]) AS b(queue_name, lim)
), due AS (
    SELECT d.id
      FROM budget b
     CROSS JOIN LATERAL (
        SELECT j.id FROM jobs j
         WHERE j.queue_name = b.queue_name
           AND j.status IN ('queued', 'retry_scheduled')
           AND j.run_at <= now()
         ORDER BY j.priority, j.created_at
         LIMIT b.lim
           FOR UPDATE SKIP LOCKED) d
)
UPDATE jobs SET status = 'migrated_to_redis', updated_at = now()
  FROM due
 WHERE jobs.id = due.id
RETURNING jobs.id, jobs.queue_name, jobs.priority, jobs.attempt_count, jobs.created_at;

-- name: due_job_ids
-- The jobs migrate_due would take, by id only (an id can always be read):
-- when a batch fails on a stored value, the migrator moves them one at a
-- time with migrate_one, so that only the culprit fails.
SELECT d.id
  FROM unnest(%(queues)s::varchar[], %(limits)s::int[]) AS b(queue_name, lim)
 CROSS JOIN LATERAL (
    SELECT j.id FROM jobs j
     WHERE j.queue_name = b.queue_name
       AND j.status IN ('queued', 'retry_scheduled')
       AND j.run_at <= now()
     ORDER BY j.priority, j.created_at
     LIMIT b.lim) d;

-- name: migrate_one
UPDATE jobs SET status = 'migrated_to_redis', updated_at = now()
 WHERE id = %(id)s AND status IN ('queued', 'retry_scheduled') AND run_at <= now()
RETURNING id, queue_name, priority, attempt_count, created_at;

-- name: migrate_chosen
-- Hand to Redis the jobs of flow-controlled queues that fair_due_ids
-- chose, those still waiting: marked limited, so that the worker that
-- records their outcome wakes the migrator (a freed slot).
UPDATE jobs SET status = 'migrated_to_redis', limited = true, updated_at = now()
 WHERE id = ANY(%(ids)s::uuid[]) AND status IN ('queued', 'retry_scheduled') AND run_at <= now()
RETURNING id, queue_name, partition_key, priority, attempt_count, created_at;

-- name: bury_job
-- End dead a job that pmq could not move, claim or record because of a
-- value stored in or computed for it: a retry would fail the same way, and
-- the rest of its batch must go on. A running job is taken only from the
-- worker that holds it. Returns the job as pmq_job_dead is told of it.
WITH buried AS (
    UPDATE jobs
       SET status = 'failed', failed_at = now(), last_error_message = %(error)s,
           worker_id = NULL, updated_at = now()
     WHERE id = %(id)s
       AND (status IN ('queued', 'migrated_to_redis', 'retry_scheduled')
            OR (status = 'running' AND worker_id = %(worker_id)s))
    RETURNING id, queue_name, payload, attempt_count, max_attempts, priority, created_at, started_at
), logged AS (
    INSERT INTO job_logs (job_id, status, log_message, attempt_number, started_at, finished_at, duration)
    SELECT id, 'failed', %(error)s, attempt_count, coalesce(started_at, now()), now(),
           now() - coalesce(started_at, now())
      FROM buried
)
SELECT id, queue_name, payload, attempt_count, max_attempts, priority, created_at, started_at FROM buried;

-- name: next_due_at
SELECT least(
    (SELECT min(run_at) FROM jobs WHERE status = 'queued' AND run_at > now()),
    (SELECT min(run_at) FROM jobs WHERE status = 'retry_scheduled' AND run_at > now())
) AS next_due_at;

-- name: worker_round
-- A worker's round: record the outcomes that piled up and claim the jobs
-- whose messages it popped, in one statement and so one commit (the commit's
-- wait for the disk was most of a round; two statements paid it twice).
-- The two UPDATEs never meet on a row: one takes running jobs, the other
-- jobs waiting in Redis.
--
-- Outcomes: each sets the job's new state and adds one job_logs row. An
-- outcome is dropped when the job is no longer this attempt's (cancelled,
-- or rescued from a worker thought dead: a rescue gives the attempt back,
-- so the attempt number alone cannot tell the runs apart, the worker can).
-- Its started_at is when the handler started, which for a job claimed
-- ahead is later than the claim (the claim's started_at = now() stands
-- until then): the attempt's started_at, completed_at and logged duration
-- measure the handler's run, not its wait for a slot.
--
-- Claims: a Redis message is only a hint. A job runs only if it is still
-- waiting in Redis at the attempt the message names, its queue is not
-- paused, and the worker serves its queue (a message forged into another
-- queue's list claims nothing).
--
-- Both status tests are written so that no index can serve them, which
-- keeps the planner on the primary key. Statistics taken while few jobs
-- were in Redis made it scan every such job by the status index and compare
-- it with every message (8 ms for 20 messages and 1,000 jobs in Redis,
-- against 1.5 ms by primary key); the outcomes' write read the running-jobs
-- index, thousands of entries not yet vacuumed.
--
-- Rows: one per claimed job (kind 'claimed'), then one per recorded
-- outcome (kind 'finished', only id set), and one 'woke' row when the
-- migrator was woken.
WITH r AS (
    SELECT * FROM unnest(%(ids)s::uuid[], %(attempts)s::int[], %(statuses)s::varchar[],
                         %(log_statuses)s::varchar[], %(run_ats)s::timestamptz[],
                         %(errors)s::text[], %(started)s::timestamptz[],
                         %(finished)s::timestamptz[])
           AS r(id, attempt, status, log_status, run_at, error, started_at, finished_at)
), done AS (
    UPDATE jobs j
       SET status = r.status, started_at = r.started_at,
           completed_at = CASE WHEN r.status = 'completed' THEN r.finished_at ELSE j.completed_at END,
           failed_at = CASE WHEN r.status = 'failed' THEN r.finished_at ELSE j.failed_at END,
           run_at = coalesce(r.run_at, j.run_at),
           last_error_message = coalesce(r.error, j.last_error_message),
           updated_at = now(), worker_id = NULL
      FROM r
     WHERE j.id = r.id AND (j.status || '') = 'running' AND j.attempt_count = r.attempt
       AND j.worker_id = %(worker_id)s
    RETURNING j.id, j.limited
), woke AS (
    -- A flow-controlled job ended: its slot is free, so wake the migrator
    -- (delivered at this round's commit). Other queues' rounds send nothing.
    SELECT pg_notify('pmq_jobs_v1', '') FROM (SELECT 1 FROM done WHERE done.limited LIMIT 1) ended
), logged AS (
    INSERT INTO job_logs (job_id, status, log_message, attempt_number, started_at, finished_at, duration)
    SELECT r.id, r.log_status, r.error, r.attempt, r.started_at, r.finished_at,
           r.finished_at - r.started_at
      FROM r JOIN done ON done.id = r.id
    RETURNING job_id
), msg AS (
    SELECT * FROM unnest(%(claim_ids)s::uuid[], %(claim_attempts)s::int[]) AS m(id, attempt)
), claimed AS (
    UPDATE jobs j
       SET status = 'running', attempt_count = j.attempt_count + 1,
           started_at = now(), updated_at = now(), worker_id = %(worker_id)s,
           suspect_started_at = NULL
      FROM msg, job_queues q
     WHERE j.id = msg.id AND j.attempt_count = msg.attempt
       AND (j.status || '') = 'migrated_to_redis'
       AND j.queue_name = ANY(%(queues)s::varchar[])
       AND q.name = j.queue_name AND q.is_active
    RETURNING j.id, j.queue_name, j.payload, j.attempt_count, j.max_attempts,
              j.priority, j.run_at, j.created_at, j.started_at, j.rescue_count, j.limited, j.headers,
              j.partition_key
), ticketed AS (
    -- Flow-controlled jobs whose handler started since the last round: their
    -- rate tickets end at that start (a ticket issued later belongs to a
    -- newer hand-over of the job, and is left alone). Other rounds pass none.
    UPDATE pmq_rate_tickets t SET ended_at = s.started_at
      FROM unnest(%(start_ids)s::uuid[], %(start_ats)s::timestamptz[]) AS s(id, started_at)
     WHERE t.job_id = s.id AND t.ended_at IS NULL AND t.issued_at <= s.started_at
)
SELECT 'claimed' AS kind, id, queue_name, payload, attempt_count, max_attempts,
       priority, run_at, created_at, started_at, rescue_count, limited, headers, partition_key
  FROM claimed
UNION ALL
SELECT 'finished', job_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
  FROM logged
UNION ALL
SELECT 'woke', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
  FROM woke;

-- name: worker_session
-- The worker's connection plans its statements once. PostgreSQL kept
-- re-planning worker_round for every call (a custom plan looked cheaper
-- to it, knowing the arrays' lengths), which cost about 0.4 ms a round;
-- the generic plan is the same plan, primary-key probes, since no index can
-- serve the status tests.
SET plan_cache_mode = force_generic_plan;

-- name: jobs_running_under
-- The jobs PostgreSQL says a worker runs: few (its slots and claims ahead),
-- read from the status index.
SELECT id FROM jobs WHERE status = 'running' AND worker_id = %(worker_id)s;

-- name: release_jobs
-- Give back jobs a stopping worker did not finish; the attempt does not count.
-- Those whose sync handler still runs (%(stuck)s) are due only %(delay)s
-- seconds later: their process ends first, and their thread with it.
UPDATE jobs
   SET status = 'queued', attempt_count = greatest(attempt_count - 1, 0),
       started_at = NULL, worker_id = NULL, updated_at = now(),
       run_at = CASE WHEN id = ANY(%(stuck)s::uuid[]) THEN now() + make_interval(secs => %(delay)s)
                     ELSE now() END
 WHERE id = ANY(%(ids)s::uuid[]) AND status = 'running' AND worker_id = %(worker_id)s;

-- name: register_worker
INSERT INTO pmq_workers (id, hostname, pid, queues, concurrency)
VALUES (%(id)s, %(hostname)s, %(pid)s, %(queues)s, %(concurrency)s)
ON CONFLICT (id) DO UPDATE SET heartbeat_at = now();

-- name: heartbeat
-- Proves the worker alive, says what its slots are doing (see migration
-- 0006) and whether it reaches Redis (a worker that cannot pop is alive but
-- deaf: `pmq health` names it).
UPDATE pmq_workers
   SET heartbeat_at = now(), busy = %(busy)s, claimed_ahead = %(claimed_ahead)s,
       redis_error_since = %(redis_error_since)s, redis_error = %(redis_error)s
 WHERE id = %(id)s
RETURNING id;

-- name: unregister_worker
DELETE FROM pmq_workers WHERE id = %(id)s;

-- name: rescue_jobs
-- Jobs held by a worker that stopped heartbeating. The rescue cannot tell
-- the job that killed its worker from those running beside it or claimed
-- ahead, so it blames none: the attempt is given back and the rescue
-- counted, which makes the job a suspect (workers run suspects alone, in a
-- child process, where a crash names its culprit). A suspect that was
-- still waiting for its turn (suspect_started_at unset) is not counted
-- again. A job whose count reaches %(max_rescues)s ends dead: what kills
-- even the worker that isolates it cannot loop forever.
WITH lost AS (
    SELECT j.id,
           j.rescue_count + CASE WHEN j.rescue_count = 0 OR j.suspect_started_at IS NOT NULL
                                 THEN 1 ELSE 0 END AS rescues
      FROM jobs j
      LEFT JOIN pmq_workers w ON w.id = j.worker_id
     WHERE j.status = 'running'
       AND (w.id IS NULL OR w.heartbeat_at < now() - make_interval(secs => %(after)s))
       FOR UPDATE OF j SKIP LOCKED
), moved AS (
    UPDATE jobs j
       SET status = CASE WHEN lost.rescues >= %(max_rescues)s THEN 'failed' ELSE 'queued' END,
           attempt_count = CASE WHEN lost.rescues >= %(max_rescues)s THEN j.attempt_count
                                ELSE greatest(j.attempt_count - 1, 0) END,
           failed_at = CASE WHEN lost.rescues >= %(max_rescues)s THEN now() ELSE j.failed_at END,
           last_error_message = CASE WHEN lost.rescues >= %(max_rescues)s
                                     THEN format(%(dead_message)s, lost.rescues) ELSE %(message)s END,
           rescue_count = lost.rescues, suspect_started_at = NULL, worker_id = NULL,
           run_at = now(), updated_at = now()
      FROM lost
     WHERE j.id = lost.id
    RETURNING j.id, j.queue_name, j.status, j.payload, j.attempt_count, j.max_attempts,
              j.priority, j.created_at, j.started_at, j.last_error_message
), logged AS (
    INSERT INTO job_logs (job_id, status, log_message, attempt_number, started_at, finished_at, duration)
    SELECT id, CASE WHEN status = 'failed' THEN 'failed' ELSE 'retry' END, last_error_message,
           attempt_count + CASE WHEN status = 'failed' THEN 0 ELSE 1 END,
           coalesce(started_at, now()), now(), now() - coalesce(started_at, now())
      FROM moved
)
SELECT id, queue_name, status, payload, attempt_count, max_attempts, priority, created_at,
       started_at, last_error_message
  FROM moved;

-- name: mark_suspect_started
-- A worker is about to run a suspect (alone, in its isolation child): if
-- the worker dies now, this job was running, and its rescue counts.
UPDATE jobs SET suspect_started_at = now()
 WHERE id = %(id)s AND status = 'running' AND attempt_count = %(attempt)s
   AND worker_id = %(worker_id)s
RETURNING id;

-- name: migrator_beat
-- The leading migrator's liveness, written when it takes the lead and at
-- every housekeeping round; a new leader (another lock connection) restarts
-- elected_at.
INSERT INTO pmq_migrator_leader (backend_pid, hostname, pid)
VALUES (%(backend_pid)s, %(hostname)s, %(pid)s)
ON CONFLICT (singleton) DO UPDATE
   SET beat_at = now(),
       elected_at = CASE WHEN pmq_migrator_leader.backend_pid = EXCLUDED.backend_pid
                         THEN pmq_migrator_leader.elected_at ELSE now() END,
       backend_pid = EXCLUDED.backend_pid, hostname = EXCLUDED.hostname, pid = EXCLUDED.pid;

-- name: migrator_leader
-- Who holds the leader's advisory lock in this database, from pg_locks (so
-- a leader is seen whatever it wrote), with the beat it last wrote, if any.
-- A bigint lock key shows as its high half in classid, its low half in
-- objid, and objsubid 1.
SELECT l.pid AS backend_pid, m.hostname, m.pid,
       extract(epoch FROM now() - m.elected_at)::float8 AS leading_for,
       extract(epoch FROM now() - m.beat_at)::float8 AS beat_age
  FROM pg_locks l
  LEFT JOIN pmq_migrator_leader m ON m.backend_pid = l.pid
 WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
   AND l.classid::bigint = %(key)s::bigint >> 32
   AND l.objid::bigint = %(key)s::bigint & 4294967295;

-- name: forget_dead_workers
DELETE FROM pmq_workers WHERE heartbeat_at < now() - make_interval(secs => %(after)s);

-- name: stale_migrated
-- Jobs handed to Redis a while ago and not claimed since: candidates for a
-- check that their message is still there.
SELECT id, queue_name, attempt_count FROM jobs
 WHERE status = 'migrated_to_redis'
   AND updated_at < now() - make_interval(secs => %(after)s)
 ORDER BY updated_at
 LIMIT %(limit)s;

-- name: requeue_migrated
UPDATE jobs SET status = 'queued', updated_at = now()
 WHERE id = ANY(%(ids)s::uuid[]) AND status = 'migrated_to_redis'
RETURNING id;

-- name: get_job
SELECT id, queue_name, status, priority, payload, attempt_count, max_attempts,
       run_at, started_at, completed_at, failed_at, last_error_message,
       created_at, updated_at, worker_id, unique_key, partition_key
  FROM jobs WHERE id = %(id)s;

-- name: job_logs
SELECT status, log_message, attempt_number, started_at, finished_at,
       extract(epoch FROM duration)::float8 AS duration
  FROM job_logs WHERE job_id = %(id)s ORDER BY id;

-- name: cancel_job
WITH old AS (
    SELECT id, status FROM jobs WHERE id = %(id)s FOR UPDATE
)
UPDATE jobs j SET status = 'cancelled', updated_at = now(), worker_id = NULL
  FROM old
 WHERE j.id = old.id
   AND old.status IN ('queued', 'retry_scheduled', 'migrated_to_redis', 'running')
RETURNING old.status AS previous_status, j.queue_name;

-- name: replay_dead
UPDATE jobs
   SET status = 'queued', attempt_count = 0, run_at = now(), failed_at = NULL,
       started_at = NULL, completed_at = NULL, updated_at = now(),
       rescue_count = least(rescue_count, 1)  -- still a suspect, with its bound afresh
 WHERE status = 'failed'
   AND (%(ids)s::uuid[] IS NULL OR id = ANY(%(ids)s::uuid[]))
   AND (%(queue)s::text IS NULL OR queue_name = %(queue)s)
RETURNING id, queue_name;

-- name: purge_dead
DELETE FROM jobs
 WHERE status = 'failed'
   AND (%(ids)s::uuid[] IS NULL OR id = ANY(%(ids)s::uuid[]))
   AND (%(queue)s::text IS NULL OR queue_name = %(queue)s)
RETURNING id, queue_name;

-- name: dead_counts
-- Dead jobs per queue: the migrator compares them with the lengths of the
-- dead-letter lists in Redis.
SELECT queue_name, count(*) AS dead FROM jobs WHERE status = 'failed' GROUP BY queue_name;

-- name: dead_ids
-- A queue's dead jobs, newest first: the order of its dead-letter list.
SELECT id FROM jobs
 WHERE status = 'failed' AND queue_name = %(queue)s
 ORDER BY failed_at DESC NULLS LAST, id;

-- name: list_dead
SELECT id, queue_name, attempt_count, failed_at, last_error_message, payload
  FROM jobs
 WHERE status = 'failed' AND (%(queue)s::text IS NULL OR queue_name = %(queue)s)
 ORDER BY failed_at DESC
 LIMIT %(limit)s;

-- name: prune_jobs
-- Retention, one batch at a time so that no lock is held for long.
DELETE FROM jobs WHERE id IN (
    SELECT id FROM jobs
     WHERE status = %(status)s AND updated_at < now() - make_interval(days => %(days)s)
     LIMIT %(batch)s);

-- name: prune_logs
DELETE FROM job_logs WHERE id IN (
    SELECT id FROM job_logs
     WHERE started_at < now() - make_interval(days => %(days)s)
     LIMIT %(batch)s);

-- name: queue_overview
SELECT q.name, q.default_priority, q.max_attempts, q.is_active, q.created_at,
       count(j.id) FILTER (WHERE j.status IN ('queued', 'retry_scheduled') AND j.run_at <= now()) AS waiting,
       count(j.id) FILTER (WHERE j.status IN ('queued', 'retry_scheduled') AND j.run_at > now()) AS scheduled,
       count(j.id) FILTER (WHERE j.status = 'migrated_to_redis') AS in_redis,
       count(j.id) FILTER (WHERE j.status = 'running') AS running,
       count(j.id) FILTER (WHERE j.status = 'failed') AS dead
  FROM job_queues q
  LEFT JOIN jobs j ON j.queue_name = q.name
       AND j.status IN ('queued', 'retry_scheduled', 'migrated_to_redis', 'running', 'failed')
 GROUP BY q.name
 ORDER BY q.name;

-- name: oldest_waiting
SELECT queue_name, extract(epoch FROM now() - min(run_at))::float8 AS age
  FROM jobs
 WHERE status IN ('queued', 'retry_scheduled', 'migrated_to_redis') AND run_at <= now()
 GROUP BY queue_name;

-- name: live_workers
SELECT id, hostname, pid, queues, concurrency, started_at, heartbeat_at, busy, claimed_ahead, redis_error,
       extract(epoch FROM now() - redis_error_since)::float8 AS redis_error_age
  FROM pmq_workers
 WHERE heartbeat_at > now() - make_interval(secs => %(after)s)
 ORDER BY started_at;

-- name: recent_activity
-- Throughput and timings over the last %(minutes)s minutes, from job_logs.
SELECT count(*) FILTER (WHERE status = 'success') AS succeeded,
       count(*) FILTER (WHERE status = 'retry') AS retried,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       avg(extract(epoch FROM duration))::float8 AS avg_seconds,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM duration))::float8 AS p50_seconds,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM duration))::float8 AS p95_seconds
  FROM job_logs
 WHERE started_at > now() - make_interval(mins => %(minutes)s);

-- name: recent_created
SELECT count(*) AS created FROM jobs
 WHERE created_at > now() - make_interval(mins => %(minutes)s);

-- name: claim_cron_tick
-- Take a cron tick for a queue; returns a row only for the first taker.
INSERT INTO pmq_cron_ticks (queue_name, last_tick) VALUES (%(queue)s, %(tick)s)
ON CONFLICT (queue_name) DO UPDATE SET last_tick = EXCLUDED.last_tick
 WHERE pmq_cron_ticks.last_tick < EXCLUDED.last_tick
RETURNING queue_name;

-- name: schema_installed
-- Whether any migration was ever applied here (`pmq db upgrade` creates
-- the table).
SELECT to_regclass('pmq_schema_migrations') IS NOT NULL AS installed;

-- name: applied_migrations
SELECT component, version FROM pmq_schema_migrations;

-- name: lock_schema
-- Held while migrating: two sessions upgrading at once wait for each other.
SELECT pg_advisory_lock(%(key)s);

-- name: unlock_schema
SELECT pg_advisory_unlock(%(key)s);

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS pmq_schema_migrations (
    component  text        NOT NULL,
    version    integer     NOT NULL,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (component, version));

-- name: record_migration
INSERT INTO pmq_schema_migrations (component, version, name)
VALUES (%(component)s, %(version)s, %(name)s);

-- name: try_lead
-- The leading migrator's lock, on the connection it listens on: the lock
-- goes the moment that connection or its process dies.
SELECT pg_try_advisory_lock(%(key)s) AS ok;

-- name: listen_jobs
-- Waiting jobs inserted (by anyone: a trigger notifies, see migration 0002).
LISTEN pmq_jobs_v1;

-- name: data_directory
SHOW data_directory;

-- name: database_exists
SELECT 1 FROM pg_database WHERE datname = %(name)s;

-- name: create_database
-- The name is filled in as a quoted identifier: a parameter cannot name a database.
CREATE DATABASE {name};

-- name: create_database_from
-- A copy of a template database by file copy: much faster than WAL logging
-- for the test kit's many small databases.
CREATE DATABASE {name} TEMPLATE {template} STRATEGY FILE_COPY;

-- name: drop_database
DROP DATABASE IF EXISTS {name} WITH (FORCE);

-- name: job_page
-- One page of jobs for an operator's listing (and `pmq jobs list`), newest
-- change first: a backward scan of the (status, updated_at) index per
-- status asked for, each stopping after %(limit)s rows, then a sort of at
-- most 7 x %(limit)s rows: never a read of the whole table. The time bounds
-- and the page's cursor (the last row of the page before, as
-- (updated_at, id)) are one range on updated_at, written so that the index
-- serves it whichever are given; text in the error is a filter on the rows
-- each scan reads, so a rare match makes that scan read further.
-- docs/dashboard.md gives the cost of each page at 1,000,000 jobs.
SELECT j.* FROM unnest(%(statuses)s::varchar[]) AS s(status)
 CROSS JOIN LATERAL (
    SELECT id, queue_name, status, priority, payload, attempt_count, max_attempts,
           run_at, started_at, completed_at, failed_at, last_error_message,
           created_at, updated_at, worker_id, unique_key, partition_key
      FROM jobs
     WHERE jobs.status = s.status
       AND updated_at >= coalesce(%(since)s::timestamptz, '-infinity')
       AND updated_at <= least(coalesce(%(until)s::timestamptz, 'infinity'),
                               coalesce(%(before_at)s::timestamptz, 'infinity'))
       AND (%(before_at)s::timestamptz IS NULL OR (updated_at, id) < (%(before_at)s, %(before_id)s::uuid))
       AND (%(error)s::text IS NULL OR strpos(lower(last_error_message), lower(%(error)s)) > 0)
     ORDER BY updated_at DESC, id DESC
     LIMIT %(limit)s) j
 ORDER BY j.updated_at DESC, j.id DESC
 LIMIT %(limit)s;

-- name: queue_job_page
-- job_page for one queue. The states a queue holds by the million
-- (waiting and finished) are read from the partial (queue_name, status,
-- updated_at) index of migration 0011: the branch names its states as
-- constants, which is what lets PostgreSQL prove the index's predicate,
-- and the queue is an index condition (a condition "queue IS NULL OR ..."
-- would keep a generic plan off that index). The two states it leaves out
-- (migrated_to_redis, running) are read from the (status, updated_at)
-- index, past other queues' jobs in them: few, bounded by redis_depth per
-- queue and by the workers' slots. Each branch runs only for its own
-- states (its condition on s.status is checked once, before the scan).
SELECT j.* FROM unnest(%(statuses)s::varchar[]) AS s(status)
 CROSS JOIN LATERAL (
   (SELECT id, queue_name, status, priority, payload, attempt_count, max_attempts,
           run_at, started_at, completed_at, failed_at, last_error_message,
           created_at, updated_at, worker_id, unique_key, partition_key
      FROM jobs
     WHERE s.status IN ('queued', 'retry_scheduled', 'completed', 'failed', 'cancelled')
       AND jobs.status IN ('queued', 'retry_scheduled', 'completed', 'failed', 'cancelled')
       AND jobs.queue_name = %(queue)s AND jobs.status = s.status
       AND updated_at >= coalesce(%(since)s::timestamptz, '-infinity')
       AND updated_at <= least(coalesce(%(until)s::timestamptz, 'infinity'),
                               coalesce(%(before_at)s::timestamptz, 'infinity'))
       AND (%(before_at)s::timestamptz IS NULL OR (updated_at, id) < (%(before_at)s, %(before_id)s::uuid))
       AND (%(error)s::text IS NULL OR strpos(lower(last_error_message), lower(%(error)s)) > 0)
     ORDER BY updated_at DESC, id DESC
     LIMIT %(limit)s)
   UNION ALL
   (SELECT id, queue_name, status, priority, payload, attempt_count, max_attempts,
           run_at, started_at, completed_at, failed_at, last_error_message,
           created_at, updated_at, worker_id, unique_key, partition_key
      FROM jobs
     WHERE s.status NOT IN ('queued', 'retry_scheduled', 'completed', 'failed', 'cancelled')
       AND jobs.status = s.status AND jobs.queue_name = %(queue)s
       AND updated_at >= coalesce(%(since)s::timestamptz, '-infinity')
       AND updated_at <= least(coalesce(%(until)s::timestamptz, 'infinity'),
                               coalesce(%(before_at)s::timestamptz, 'infinity'))
       AND (%(before_at)s::timestamptz IS NULL OR (updated_at, id) < (%(before_at)s, %(before_id)s::uuid))
       AND (%(error)s::text IS NULL OR strpos(lower(last_error_message), lower(%(error)s)) > 0)
     ORDER BY updated_at DESC, id DESC
     LIMIT %(limit)s)) j
 ORDER BY j.updated_at DESC, j.id DESC
 LIMIT %(limit)s;

-- name: run_now
-- Make a job that waits for a later time (scheduled, or a retry's backoff)
-- due now; the migrator hands it over at its next round.
UPDATE jobs SET run_at = now(), updated_at = now()
 WHERE id = %(id)s AND status IN ('queued', 'retry_scheduled') AND run_at > now()
RETURNING id;

-- name: running_jobs
-- Jobs held by workers, oldest start first (the running-jobs index).
SELECT id, queue_name, worker_id, attempt_count, max_attempts, started_at
  FROM jobs WHERE status = 'running'
 ORDER BY started_at
 LIMIT %(limit)s;

-- name: throughput
-- Attempts that ended in each of the last %(minutes)s minutes, by outcome,
-- a row per minute (zeros included). The job_logs index on started_at
-- bounds the read; an attempt is counted in the minute it finished, and one
-- that ran longer than the window plus an hour before finishing in it is
-- left out (timeouts end attempts long before that).
WITH window_start AS (
    SELECT date_trunc('minute', now()) - make_interval(mins => %(minutes)s - 1) AS at
), ended AS (
    SELECT date_trunc('minute', l.finished_at) AS minute,
           count(*) FILTER (WHERE l.status = 'success') AS succeeded,
           count(*) FILTER (WHERE l.status = 'retry') AS retried,
           count(*) FILTER (WHERE l.status = 'failed') AS failed
      FROM job_logs l, window_start w
     WHERE l.started_at >= w.at - interval '1 hour' AND l.finished_at >= w.at
     GROUP BY 1
)
SELECT m.minute, coalesce(e.succeeded, 0) AS succeeded, coalesce(e.retried, 0) AS retried,
       coalesce(e.failed, 0) AS failed
  FROM window_start w
 CROSS JOIN generate_series(w.at, date_trunc('minute', now()), interval '1 minute') AS m(minute)
  LEFT JOIN ended e ON e.minute = m.minute
 ORDER BY m.minute;

-- name: cron_ticks
-- The last tick enqueued for each cron job type.
SELECT queue_name, last_tick FROM pmq_cron_ticks;

-- Flow control (see docs/flow-control.md and migration 0008) ---------------

-- name: limit_rows
SELECT queue_name, scope, partition_key, origin, concurrency, rate, period, updated_at
  FROM pmq_limits
 WHERE %(queues)s::varchar[] IS NULL OR queue_name = ANY(%(queues)s::varchar[])
 ORDER BY queue_name, scope, partition_key, origin;

-- name: forget_declared_limits
-- A job type's declaration changed: drop the declared rows it no longer has.
DELETE FROM pmq_limits
 WHERE queue_name = %(queue)s AND origin = 'declared' AND NOT (scope = ANY(%(scopes)s::text[]));

-- name: put_limits
-- Store limits (a job type's declaration, or an operator's), replacing the
-- row of the same scope and origin.
INSERT INTO pmq_limits (queue_name, scope, partition_key, origin, concurrency, rate, period)
SELECT * FROM unnest(%(queues)s::varchar[], %(scopes)s::text[], %(partitions)s::text[], %(origins)s::text[],
                     %(concurrencies)s::int[], %(rates)s::int[], %(periods)s::int[])
ON CONFLICT (queue_name, scope, partition_key, origin) DO UPDATE
   SET concurrency = EXCLUDED.concurrency, rate = EXCLUDED.rate, period = EXCLUDED.period,
       updated_at = now()
 WHERE (pmq_limits.concurrency, pmq_limits.rate, pmq_limits.period)
       IS DISTINCT FROM (EXCLUDED.concurrency, EXCLUDED.rate, EXCLUDED.period);

-- name: delete_limits
-- An operator's unlimit: the rows of one queue, of one scope and partition
-- or all, of one origin or both.
DELETE FROM pmq_limits
 WHERE queue_name = %(queue)s
   AND (%(scope)s::text IS NULL OR (scope = %(scope)s AND partition_key = %(partition)s))
   AND (%(origin)s::text IS NULL OR origin = %(origin)s)
RETURNING scope, partition_key, origin;

-- name: waiting_partitions
-- The partitions of each queue with waiting jobs, walked on
-- jobs_waiting_partition_idx one key after the other (a loose index scan:
-- one probe per partition, however many jobs each holds), at most
-- %(limit)s per queue.
WITH RECURSIVE walk AS (
    SELECT q.queue_name, 1 AS n,
           (SELECT min(j.partition_key) FROM jobs j
             WHERE j.queue_name = q.queue_name AND j.status IN ('queued', 'retry_scheduled')
               AND j.partition_key IS NOT NULL) AS partition_key
      FROM unnest(%(queues)s::varchar[]) AS q(queue_name)
    UNION ALL
    SELECT w.queue_name, w.n + 1,
           (SELECT min(j.partition_key) FROM jobs j
             WHERE j.queue_name = w.queue_name AND j.status IN ('queued', 'retry_scheduled')
               AND j.partition_key IS NOT NULL AND j.partition_key > w.partition_key)
      FROM walk w
     WHERE w.partition_key IS NOT NULL AND w.n < %(limit)s
)
SELECT queue_name, partition_key FROM walk WHERE partition_key IS NOT NULL;

-- name: in_flight
-- Jobs handed to Redis or running, per queue and partition: what counts
-- against a concurrency cap. Read on the status index: at most the
-- deployment's in-flight jobs.
SELECT queue_name, partition_key, count(*) AS n
  FROM jobs
 WHERE status IN ('migrated_to_redis', 'running') AND queue_name = ANY(%(queues)s::varchar[])
 GROUP BY queue_name, partition_key;

-- name: close_tickets
-- End the rate tickets whose job is neither waiting in Redis nor running:
-- at its handler's start for a job whose attempt ended (the worker usually
-- ended the ticket at that start already), else now (taken back unclaimed
-- or from a lost worker, cancelled, deleted). A running job's ticket is
-- ended by its worker when the handler starts.
UPDATE pmq_rate_tickets t
   SET ended_at = CASE WHEN j.started_at >= t.issued_at THEN least(j.started_at, now()) ELSE now() END
  FROM pmq_rate_tickets o
  LEFT JOIN jobs j ON j.id = o.job_id
 WHERE t.id = o.id AND o.ended_at IS NULL AND t.ended_at IS NULL
   AND (j.status IS NULL OR j.status NOT IN ('migrated_to_redis', 'running'));

-- name: ticket_usage
-- Tickets that count against each scope's rate now (open, or ended less
-- than a period ago), how many are open, and when the first of the ended
-- ones stops counting.
SELECT t.queue_name, t.scope_key, count(*) AS n, count(*) FILTER (WHERE t.ended_at IS NULL) AS open,
       min(t.ended_at + make_interval(secs => t.period)) AS frees_at
  FROM unnest(%(queues)s::varchar[], %(scopes)s::text[]) AS s(queue_name, scope_key)
  JOIN pmq_rate_tickets t ON t.queue_name = s.queue_name AND t.scope_key = s.scope_key
 WHERE t.ended_at IS NULL OR t.ended_at > now() - make_interval(secs => t.period)
 GROUP BY t.queue_name, t.scope_key;

-- name: issue_tickets
INSERT INTO pmq_rate_tickets (queue_name, scope_key, job_id, period)
SELECT * FROM unnest(%(queues)s::varchar[], %(scopes)s::text[], %(job_ids)s::uuid[], %(periods)s::int[]);

-- name: prune_tickets
DELETE FROM pmq_rate_tickets WHERE ended_at < now() - make_interval(secs => period);

-- name: fair_due_ids
-- The due jobs of flow-controlled queues to hand over now: at most
-- %(limits)s from each (queue, partition) asked (a NULL partition is the
-- default one), then at most %(budgets)s per queue, taken in turns: within
-- a band, every partition's first job, then every partition's second...
WITH p AS (
    SELECT * FROM unnest(%(queues)s::varchar[], %(partitions)s::text[], %(limits)s::int[])
           AS p(queue_name, partition_key, lim)
), b AS (
    SELECT * FROM unnest(%(budget_queues)s::varchar[], %(budgets)s::int[]) AS b(queue_name, lim)
), picked AS (
    SELECT d.*, row_number() OVER (PARTITION BY d.queue_name, d.partition_key, d.band
                                   ORDER BY d.priority, d.created_at) AS turn
      FROM p CROSS JOIN LATERAL (
        (SELECT j.id, j.queue_name, j.partition_key, j.priority, j.created_at,
                CASE WHEN j.priority <= 50 THEN 0 WHEN j.priority <= 150 THEN 1 ELSE 2 END AS band
           FROM jobs j
          WHERE p.partition_key IS NOT NULL
            AND j.queue_name = p.queue_name AND j.partition_key = p.partition_key
            AND j.status IN ('queued', 'retry_scheduled') AND j.run_at <= now()
          ORDER BY j.priority, j.created_at
          LIMIT p.lim)
        UNION ALL
        (SELECT j.id, j.queue_name, j.partition_key, j.priority, j.created_at,
                CASE WHEN j.priority <= 50 THEN 0 WHEN j.priority <= 150 THEN 1 ELSE 2 END AS band
           FROM jobs j
          WHERE p.partition_key IS NULL
            AND j.queue_name = p.queue_name AND j.partition_key IS NULL
            AND j.status IN ('queued', 'retry_scheduled') AND j.run_at <= now()
          ORDER BY j.priority, j.created_at
          LIMIT p.lim)) d
)
SELECT x.id, x.queue_name, x.partition_key
  FROM (SELECT picked.*, row_number() OVER (PARTITION BY picked.queue_name
                                            ORDER BY band, turn, priority, created_at) AS pos
          FROM picked) x
  JOIN b ON b.queue_name = x.queue_name
 WHERE x.pos <= b.lim
 ORDER BY x.queue_name, x.pos;

-- name: held_jobs
-- Due jobs waiting in PostgreSQL because a limit holds them back, per
-- queue: of the whole queue where its own limit is reached, else of the
-- partitions whose limit is (%(partitions)s NULL: the default one).
SELECT h.queue_name, count(j.id) AS n
  FROM unnest(%(queues)s::varchar[], %(partitions)s::text[], %(whole)s::boolean[])
       AS h(queue_name, partition_key, whole)
  JOIN jobs j ON j.queue_name = h.queue_name
             AND (h.whole OR j.partition_key IS NOT DISTINCT FROM h.partition_key)
 WHERE j.status IN ('queued', 'retry_scheduled') AND j.run_at <= now()
 GROUP BY h.queue_name;
