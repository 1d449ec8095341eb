-- pmq core schema, version 7.
--
-- What `pmq health` needs to see a process that is alive but useless: a
-- worker whose heartbeat reaches PostgreSQL while its pops cannot reach
-- Redis, and a leading migrator that holds its lock but no longer completes
-- a housekeeping round.

-- Written by each heartbeat: NULL while the worker's last pop (or its
-- cancel subscription) reached Redis; else since when it has failed, and how.
ALTER TABLE pmq_workers
    ADD COLUMN redis_error_since timestamptz,
    ADD COLUMN redis_error       text;

-- One row: the latest leading migrator and its last housekeeping round.
-- Leadership itself is the advisory lock (pg_locks shows its holder, even
-- one that never wrote here); backend_pid ties this row to that holder, so
-- a beat left by a former leader is never taken for the current one's.
CREATE TABLE pmq_migrator_leader (
    singleton   boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    backend_pid integer     NOT NULL,
    hostname    text        NOT NULL,
    pid         integer     NOT NULL,
    elected_at  timestamptz NOT NULL DEFAULT now(),
    beat_at     timestamptz NOT NULL DEFAULT now()
);
