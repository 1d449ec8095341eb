-- dead_remove.lua: take a batch of jobs (replayed or purged) of one queue
-- out of its dead-letter list, every copy of each id, in one command.
--
-- Every key is of one queue, so in one Redis Cluster hash slot: the caller
-- makes one call per queue.
--
-- KEYS: per job: dead-letter list
-- ARGV: per job: job id
--
-- Returns the number of entries removed.

local removed = 0
for i, key in ipairs(KEYS) do
  removed = removed + redis.call('LREM', key, 0, ARGV[i])
end
return removed
