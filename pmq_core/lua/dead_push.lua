-- dead_push.lua: list a batch of dead jobs in their queues' dead-letter
-- lists, newest first, in one command.
--
-- KEYS: per job: dead-letter list
-- ARGV: per job: job id
--
-- Returns the number of ids pushed.

for i, key in ipairs(KEYS) do
  redis.call('LPUSH', key, ARGV[i])
end
return #KEYS
