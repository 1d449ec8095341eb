"""The Redis side of pmq: handing jobs to workers and mirroring their status.

Redis holds nothing PostgreSQL does not: losing it loses no job, only time
(the migrator notices and hands the jobs over again). Every write here is
one script call per batch of jobs: one round trip and one command.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import attrs
import redis

from pmq_core.jobtypes import band_of
from pmq_core.keys import FINISHED_JOB_TTL, Keys, message

# Both scripts take their keys in KEYS, as Redis asks, and do per batch of
# jobs in one command what would otherwise be several commands per job: the
# client-side cost of a command (packing it, parsing its reply) was most of
# pmq's Redis time.

#: KEYS: per job, its band list then its status hash. ARGV: the time, then
#: per job its message, queue, priority and attempt.
_PUSH = """
local now = ARGV[1]
for i = 1, #KEYS / 2 do
  local a = 2 + (i - 1) * 4
  redis.call('RPUSH', KEYS[2 * i - 1], ARGV[a])
  redis.call('HSET', KEYS[2 * i], 'status', 'migrated_to_redis', 'queue', ARGV[a + 1],
             'priority', ARGV[a + 2], 'attempt', ARGV[a + 3], 'updated_at', now)
end
return #KEYS / 2
"""

#: KEYS: status hashes. ARGV: the time, the seconds a finished job's hash is
#: kept, then per job its status, attempt, worker and error ('' leaves a
#: field as it is).
_MARK = """
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
"""

@attrs.frozen
class Scripts:
    """The dispatch scripts bound to one Redis client (sync or asyncio:
    calling one returns the result, or an awaitable of it)."""

    push: Any
    mark: Any

    @classmethod
    def on(cls, client: Any) -> Scripts:
        return cls(client.register_script(_PUSH), client.register_script(_MARK))


@attrs.frozen
class Mark:
    """A status-hash update for one job."""

    job_id: Any
    status: str
    attempt: int | None = None
    worker: str | None = None
    error: str | None = None


def push_args(keys: Keys, rows: Iterable[dict[str, Any]]) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV for :data:`_PUSH`: ``rows`` (id, queue_name, priority,
    attempt_count, created_at) in priority order within each band."""
    script_keys: list[str] = []
    args: list[Any] = [time.time()]
    for row in sorted(rows, key=lambda r: (r["priority"], r["created_at"])):
        job_id = str(row["id"])
        script_keys += (keys.band(row["queue_name"], band_of(row["priority"])), keys.job(job_id))
        args += (message(job_id, row["attempt_count"]), row["queue_name"], row["priority"], row["attempt_count"])
    return script_keys, args


def mark_args(keys: Keys, marks: Iterable[Mark]) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV for :data:`_MARK`."""
    script_keys: list[str] = []
    args: list[Any] = [time.time(), FINISHED_JOB_TTL]
    for mark in marks:
        script_keys.append(keys.job(mark.job_id))
        args += (mark.status, "" if mark.attempt is None else mark.attempt, mark.worker or "", mark.error or "")
    return script_keys, args


def queued_message_ids(client: redis.Redis, keys: Keys, queues: Iterable[str]) -> set[str]:
    """The ids of every job whose message waits in Redis for these queues.

    Used only on jobs suspected lost, over lists kept short by the
    migrator's depth limit, so reading them whole is cheap.
    """
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        for key in keys.bands(queue):
            pipe.lrange(key, 0, -1)
    found: set[str] = set()
    for items in pipe.execute():
        for raw in items:
            found.add(raw.decode("ascii", "replace").partition(":")[0])
    return found


def band_depths(client: redis.Redis, keys: Keys, queues: list[str]) -> dict[str, dict[str, int]]:
    """The length of each band of each queue."""
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        for key in keys.bands(queue):
            pipe.llen(key)
    lengths = iter(pipe.execute())
    return {queue: {band: next(lengths) for band in ("high", "normal", "low")} for queue in queues}
