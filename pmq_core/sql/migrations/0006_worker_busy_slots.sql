-- pmq core schema, version 6.
--
-- What each worker's slots are doing, reported with its heartbeat (one
-- UPDATE per heartbeat_interval, none per job): `busy` counts the handlers
-- running (a sync handler's thread counts until it ends, even after its
-- timeout or cancel), `claimed_ahead` the jobs it claimed ahead of a free
-- slot, which are `running` in `jobs` but have not started. Utilisation is
-- busy / concurrency; counting every `running` row overstated it (280 % at
-- concurrency 10) because of the jobs claimed ahead.

ALTER TABLE pmq_workers
    ADD COLUMN busy          integer NOT NULL DEFAULT 0,
    ADD COLUMN claimed_ahead integer NOT NULL DEFAULT 0;
