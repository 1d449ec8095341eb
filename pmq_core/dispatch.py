"""The Redis side of pmq: handing jobs to workers and mirroring their status.

Redis holds nothing PostgreSQL does not: losing it loses no job, only time
(the migrator notices and hands the jobs over again). Every write here goes
through a pipeline, so a batch of jobs costs one round trip.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import redis

from pmq_core.jobtypes import band_of
from pmq_core.keys import FINISHED_JOB_TTL, Keys, message


def push_jobs(pipe: Any, keys: Keys, rows: Iterable[dict[str, Any]]) -> None:
    """Queue pushes of ``rows`` (from the migrate_due query) on ``pipe``, in
    priority order within each band, and their status hashes."""
    now = time.time()
    for row in sorted(rows, key=lambda r: (r["priority"], r["created_at"])):
        job_id = str(row["id"])
        pipe.rpush(keys.band(row["queue_name"], band_of(row["priority"])), message(job_id, row["attempt_count"]))
        pipe.hset(keys.job(job_id), mapping={
            "status": "migrated_to_redis", "queue": row["queue_name"],
            "priority": row["priority"], "attempt": row["attempt_count"], "updated_at": now,
        })


def mark_status(pipe: Any, keys: Keys, job_id: Any, status: str, **fields: Any) -> None:
    """Queue an update of a job's status hash; finished jobs' hashes expire."""
    mapping: dict[str, Any] = {"status": status, "updated_at": time.time()}
    mapping.update({k: v for k, v in fields.items() if v is not None})
    key = keys.job(job_id)
    pipe.hset(key, mapping=mapping)
    if status in ("completed", "failed", "cancelled"):
        pipe.expire(key, FINISHED_JOB_TTL)


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
