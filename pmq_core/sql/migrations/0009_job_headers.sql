-- pmq core schema, version 9.
--
-- Headers: a small JSON object of text entries carried beside a job's
-- payload, for plugins rather than for the handler (W3C trace context, so
-- that a trace started where the job was enqueued continues where it runs).
-- The payload stays the user's own. Plugins add entries at enqueue through
-- `pmq_wrap_enqueue` and read them as `job.headers`.
--
-- Optional: a program that inserts jobs by plain SQL leaves the column out
-- (NULL). The CHECK bounds what any writer may store, so that a claim never
-- carries a large value; a worker still reads the column defensively (an
-- entry that is not text is ignored, the job runs). NOT VALID: the existing
-- rows are all NULL, and validating them would scan the whole table while
-- holding its lock; the check applies to every row written from now on.
ALTER TABLE jobs ADD COLUMN headers jsonb;
ALTER TABLE jobs ADD CONSTRAINT jobs_headers_small
    CHECK (headers IS NULL OR (jsonb_typeof(headers) = 'object' AND octet_length(headers::text) <= 4096))
    NOT VALID;
