-- dead_remove.lua: take a batch of jobs (replayed or purged) out of their
-- queues' dead-letter lists, every copy of each id, in one command.
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
