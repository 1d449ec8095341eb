-- pmq core schema, version 1.
--
-- The names of tables, columns and status values are a contract: programs in
-- any language may insert into "jobs" directly with only queue_name and
-- payload, and must see their job run.

CREATE TABLE job_queues (
    name             varchar(100) PRIMARY KEY,
    default_priority integer      NOT NULL DEFAULT 100,
    max_attempts     integer      NOT NULL DEFAULT 5 CHECK (max_attempts >= 1),
    is_active        boolean      NOT NULL DEFAULT true,
    created_at       timestamptz  NOT NULL DEFAULT now()
);

CREATE TABLE pmq_workers (
    id           uuid        PRIMARY KEY,
    hostname     text        NOT NULL,
    pid          integer     NOT NULL,
    queues       text[]      NOT NULL,
    concurrency  integer     NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE jobs (
    id                 uuid         PRIMARY KEY DEFAULT gen_random_uuid(),
    queue_name         varchar(100) NOT NULL REFERENCES job_queues (name),
    status             varchar(20)  NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'migrated_to_redis', 'running', 'completed',
                          'failed', 'retry_scheduled', 'cancelled')),
    priority           integer,
    payload            jsonb        NOT NULL DEFAULT '{}'::jsonb
        CHECK (jsonb_typeof(payload) = 'object'),
    attempt_count      integer      NOT NULL DEFAULT 0,
    max_attempts       integer      NOT NULL CHECK (max_attempts >= 1),
    run_at             timestamptz  NOT NULL DEFAULT now(),
    started_at         timestamptz,
    completed_at       timestamptz,
    failed_at          timestamptz,
    last_error_message text,
    created_at         timestamptz  NOT NULL DEFAULT now(),
    updated_at         timestamptz  NOT NULL DEFAULT now(),
    -- pmq's own bookkeeping, beyond the contract:
    worker_id          uuid,
    unique_key         text
);

-- A job inserted without a priority or max_attempts takes its queue's
-- defaults (which are its job type's), so that the migrator orders by one
-- column and a job inserted by plain SQL retries like any other.
CREATE FUNCTION pmq_jobs_defaults_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.priority IS NULL OR NEW.max_attempts IS NULL THEN
        SELECT coalesce(NEW.priority, q.default_priority),
               coalesce(NEW.max_attempts, q.max_attempts)
          INTO NEW.priority, NEW.max_attempts
          FROM job_queues q WHERE q.name = NEW.queue_name;
        NEW.priority := coalesce(NEW.priority, 100);
        NEW.max_attempts := coalesce(NEW.max_attempts, 5);
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER pmq_jobs_defaults
    BEFORE INSERT ON jobs
    FOR EACH ROW EXECUTE FUNCTION pmq_jobs_defaults_v1();

-- Wake the migrator when jobs arrive, whoever inserted them. One NOTIFY per
-- statement, not per row, so that bulk inserts stay cheap.
CREATE FUNCTION pmq_notify_jobs_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('pmq_jobs_v1', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER pmq_jobs_notify_insert
    AFTER INSERT ON jobs
    FOR EACH STATEMENT EXECUTE FUNCTION pmq_notify_jobs_v1();

-- The migrator's query, as the design asks, and per queue in priority order.
CREATE INDEX jobs_queued_idx ON jobs (run_at, priority, created_at)
    WHERE status = 'queued';
CREATE INDEX jobs_retry_due_idx ON jobs (run_at)
    WHERE status = 'retry_scheduled';
CREATE INDEX jobs_due_by_queue_idx ON jobs (queue_name, priority, created_at)
    WHERE status IN ('queued', 'retry_scheduled');
CREATE INDEX jobs_status_updated_idx ON jobs (status, updated_at);
CREATE INDEX jobs_worker_idx ON jobs (worker_id) WHERE status = 'running';
-- One live job per uniqueness key.
CREATE UNIQUE INDEX jobs_unique_live_idx ON jobs (queue_name, unique_key)
    WHERE unique_key IS NOT NULL
      AND status IN ('queued', 'migrated_to_redis', 'running', 'retry_scheduled');

-- The last cron tick enqueued per job type, so that each tick is enqueued
-- once even when the leading migrator changes.
CREATE TABLE pmq_cron_ticks (
    queue_name varchar(100) PRIMARY KEY REFERENCES job_queues (name) ON DELETE CASCADE,
    last_tick  timestamptz  NOT NULL
);

CREATE TABLE job_logs (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id         uuid        NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    status         varchar(20) NOT NULL
        CHECK (status IN ('attempting', 'success', 'retry', 'failed')),
    log_message    text,
    attempt_number integer     NOT NULL,
    started_at     timestamptz NOT NULL,
    finished_at    timestamptz,
    duration       interval
);

CREATE INDEX job_logs_job_idx ON job_logs (job_id);
CREATE INDEX job_logs_started_idx ON job_logs (started_at);
