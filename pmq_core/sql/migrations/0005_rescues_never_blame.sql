-- pmq core schema, version 5.
--
-- A worker that dies (a handler's os._exit, a segfault, the OOM killer,
-- SIGKILL) takes every job it held with it: the one that killed it, the
-- ones running beside it, the ones it had claimed ahead. The rescue cannot
-- tell them apart, so it blames none of them: it gives the attempt back
-- and counts the rescue. A job with rescue_count > 0 is a suspect, and
-- workers run suspects alone, in a child process of their own, where a
-- crash names its culprit for certain.
--
-- suspect_started_at is set (one write per suspect, never for ordinary
-- jobs) when a worker starts a suspect's run, and cleared by the claim: a
-- suspect rescued with it set was running when its worker died, and that
-- rescue counts again; one rescued while it waited for its turn does not.

ALTER TABLE jobs
    ADD COLUMN rescue_count integer NOT NULL DEFAULT 0 CHECK (rescue_count >= 0),
    ADD COLUMN suspect_started_at timestamptz;
