-- pmq core schema, version 2.
--
-- Wake the migrator only when an insert leaves something for it to do: a
-- job a producer stored as already handed to Redis (status
-- migrated_to_redis, see the insert_job query) needs no migrator, and
-- waking it for every such enqueue cost it three queries per job.

CREATE OR REPLACE FUNCTION pmq_notify_jobs_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM pmq_inserted_jobs WHERE status <> 'migrated_to_redis') THEN
        PERFORM pg_notify('pmq_jobs_v1', '');
    END IF;
    RETURN NULL;
END;
$$;

DROP TRIGGER pmq_jobs_notify_insert ON jobs;

CREATE TRIGGER pmq_jobs_notify_insert
    AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS pmq_inserted_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION pmq_notify_jobs_v1();
