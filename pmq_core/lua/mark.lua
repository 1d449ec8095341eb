-- mark.lua: update the status hashes of a batch of jobs in one command.
--
-- An empty attempt, worker or error leaves that field as it is. The hash of
-- a job that has finished (completed, failed or cancelled) expires after
-- the given number of seconds.
--
-- Every key is of one queue, so in one Redis Cluster hash slot: the caller
-- makes one call per queue.
--
-- KEYS: per job: status hash
-- ARGV: time, finished ttl; per job: status, attempt, worker, error
--
-- Returns the number of hashes updated.

local now, ttl = ARGV[1], ARGV[2]
local fields = {'attempt', 'worker', 'error'}
for i, key in ipairs(KEYS) do
  local a = 3 + (i - 1) * 4
  local status = ARGV[a]
  redis.call('HSET', key, 'status', status, 'updated_at', now)
  for f = 1, 3 do
    if ARGV[a + f] ~= '' then redis.call('HSET', key, fields[f], ARGV[a + f]) end
  end
  if status == 'completed' or status == 'failed' or status == 'cancelled' then
    redis.call('EXPIRE', key, ttl)
  end
end
return #KEYS
