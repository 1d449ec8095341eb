-- push.lua: hand a batch of jobs to workers in one command.
--
-- For each job: its message goes to the tail of its band list (FIFO within a
-- band) and, where the deployment keeps status hashes, its hash says
-- migrated_to_redis. The caller orders the jobs by priority, then age,
-- within each band.
--
-- Every key is of one queue, so in one Redis Cluster hash slot: the caller
-- makes one call per queue.
--
-- KEYS: per job: band list, then its status hash when keys per job is 2
-- ARGV: time, keys per job (1 or 2); per job: message, queue, priority, attempt
--
-- Returns the number of jobs pushed.

local now, stride = ARGV[1], tonumber(ARGV[2])
local jobs = #KEYS / stride
for i = 1, jobs do
  local a = 3 + (i - 1) * 4
  redis.call('RPUSH', KEYS[stride * (i - 1) + 1], ARGV[a])
  if stride == 2 then
    redis.call('HSET', KEYS[2 * i], 'status', 'migrated_to_redis', 'queue', ARGV[a + 1],
               'priority', ARGV[a + 2], 'attempt', ARGV[a + 3], 'updated_at', now)
  end
end
return jobs
