-- pmq core schema, version 8: flow control (see docs/flow-control.md).
--
-- Partitions, limits and the rate tickets the leading migrator issues. A
-- queue without a row in pmq_limits pays for none of this: its jobs are
-- handed over and selected exactly as before.

-- A job's partition (a mailbox, a customer): NULL is the queue's default
-- partition. Plain-SQL producers may set it.
ALTER TABLE jobs
    ADD COLUMN partition_key text
        CONSTRAINT jobs_partition_key_size CHECK (octet_length(partition_key) BETWEEN 1 AND 200),
    -- Set by the migrator on a job of a flow-controlled queue that it hands
    -- to Redis: the worker that records its outcome wakes the migrator, so
    -- that a cap's freed slot is filled at once.
    ADD COLUMN limited boolean NOT NULL DEFAULT false;

-- The fair scheduler's walk over a queue's partitions with waiting jobs.
-- Only jobs that carry a partition are in it: other queues' jobs cost it
-- nothing.
CREATE INDEX jobs_waiting_partition_idx ON jobs (queue_name, partition_key, priority, created_at)
    WHERE status IN ('queued', 'retry_scheduled') AND partition_key IS NOT NULL;

-- Limits: for the whole queue, for each partition, or for one partition
-- (an override of the per-partition limit). A job type's declared limits
-- are stored with origin 'declared' by every process that loads it; an
-- operator's with origin 'operator', which wins for the same scope. A row
-- with neither a cap nor a rate lifts the limits of its scope (and keeps
-- the queue fair).
CREATE TABLE pmq_limits (
    queue_name    varchar(100) NOT NULL REFERENCES job_queues (name) ON DELETE CASCADE,
    scope         text         NOT NULL CHECK (scope IN ('queue', 'each', 'partition')),
    partition_key text         NOT NULL DEFAULT '' CHECK (octet_length(partition_key) <= 200),
    origin        text         NOT NULL CHECK (origin IN ('declared', 'operator')),
    concurrency   integer      CHECK (concurrency >= 1),
    rate          integer      CHECK (rate >= 1),
    period        integer      CHECK (period BETWEEN 1 AND 31622400),
    updated_at    timestamptz  NOT NULL DEFAULT now(),
    PRIMARY KEY (queue_name, scope, partition_key, origin),
    CHECK ((rate IS NULL) = (period IS NULL)),
    CHECK ((scope = 'partition') = (partition_key <> ''))
);

-- One ticket per rate-limited scope of each job the migrator hands over.
-- A ticket counts against its scope's rate from its issue until `period`
-- seconds after it ended; it ends when its job is claimed (at the claim's
-- time) or taken back unclaimed. scope_key is 'queue' for the queue-wide
-- rate, 'default' for the default partition's, and 'p ' followed by the
-- key for any other partition's.
CREATE TABLE pmq_rate_tickets (
    id         bigserial    PRIMARY KEY,
    queue_name varchar(100) NOT NULL,
    scope_key  text         NOT NULL,
    job_id     uuid         NOT NULL,
    period     integer      NOT NULL,
    issued_at  timestamptz  NOT NULL DEFAULT now(),
    ended_at   timestamptz
);
CREATE INDEX pmq_rate_tickets_scope_idx ON pmq_rate_tickets (queue_name, scope_key, ended_at);
CREATE INDEX pmq_rate_tickets_open_idx ON pmq_rate_tickets (job_id) WHERE ended_at IS NULL;
