-- dead_push.lua: list a batch of dead jobs of one queue in its dead-letter
-- list, newest first, in one command.
--
-- Every key is of one queue, so in one Redis Cluster hash slot: the caller
-- makes one call per queue.
--
-- KEYS: per job: dead-letter list
-- ARGV: per job: job id
--
-- Returns the number of ids pushed.

for i, key in ipairs(KEYS) do
  redis.call('LPUSH', key, ARGV[i])
end
return #KEYS
