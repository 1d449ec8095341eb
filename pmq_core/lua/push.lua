-- push.lua: hand a batch of jobs to workers in one command.
--
-- For each job: its message goes to the tail of its band list (FIFO within a
-- band) and its status hash says migrated_to_redis. The caller orders the
-- jobs by priority, then age, within each band.
--
-- Every key is of one queue, so in one Redis Cluster hash slot: the caller
-- makes one call per queue.
--
-- KEYS: per job: band list, status hash
-- ARGV: time; per job: message, queue, priority, attempt
--
-- Returns the number of jobs pushed.

local now = ARGV[1]
for i = 1, #KEYS / 2 do
  local a = 2 + (i - 1) * 4
  redis.call('RPUSH', KEYS[2 * i - 1], ARGV[a])
  redis.call('HSET', KEYS[2 * i], 'status', 'migrated_to_redis', 'queue', ARGV[a + 1],
             'priority', ARGV[a + 2], 'attempt', ARGV[a + 3], 'updated_at', now)
end
return #KEYS / 2
